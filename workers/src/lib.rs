//! Admit's background workers: the relay that publishes the log to Kafka,
//! the mailer, the expiry enforcer and the analytics consumer.
//!
//! Not built yet: they arrive with the issue "Kafka relay and workers".

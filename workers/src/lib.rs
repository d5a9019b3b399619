//! Admit's background workers: the mailer and the expiry enforcer, fed by
//! the event log. In embedded mode (`admit serve` with no Kafka) they tail
//! the log directly through [`feed::LogFeed`]; the Kafka relay and the
//! analytics consumer arrive with the rest of the workers issue.

pub mod error;
pub mod expiry;
pub mod feed;
pub mod mail;
pub mod mailer;
pub mod relay;

pub use error::WorkerError;

/// Result alias for this crate.
pub type Result<T, E = WorkerError> = std::result::Result<T, E>;

/// Runs the mailer and the expiry worker in this process until `shutdown`
/// turns true (embedded mode).
pub async fn run_embedded(
    admit: admit_api::Admit,
    mailer: mailer::MailerConfig,
    expiry: expiry::ExpiryConfig,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let m = mailer::Mailer::new(admit.clone(), mailer)?;
    let e = expiry::Expiry::new(admit, expiry);
    let (a, b) = tokio::join!(m.run(shutdown.clone()), e.run(shutdown));
    a.and(b)
}

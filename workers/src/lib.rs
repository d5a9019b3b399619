//! Admit's background workers: the relay (log to Kafka), the mailer, the
//! expiry enforcer (and reminders) and the analytics counter. Each consumer
//! takes a [`feed::Feed`]: the log itself in embedded mode (`admit serve`
//! with no Kafka), or the topic the relay fills, in a consumer group.

pub mod analytics;
pub mod error;
pub mod expiry;
pub mod feed;
pub mod mail;
pub mod mailer;
pub mod relay;
pub mod topic;

pub use error::WorkerError;

/// Result alias for this crate.
pub type Result<T, E = WorkerError> = std::result::Result<T, E>;

/// The consumers of one deployment, each with its feed.
#[derive(Debug)]
pub struct Consumers {
    /// Sends the emails.
    pub mailer: mailer::Mailer,
    /// Expires and reminds.
    pub expiry: expiry::Expiry,
    /// Counts the funnel.
    pub analytics: analytics::Analytics,
}

impl Consumers {
    /// Every consumer fed by the log of `admit`'s database (embedded mode).
    pub fn on_log(
        admit: admit_api::Admit,
        mailer: mailer::MailerConfig,
        expiry: expiry::ExpiryConfig,
    ) -> Result<Consumers> {
        let poll = mailer.poll;
        Ok(Consumers {
            analytics: analytics::Analytics::new(admit.db.clone(), poll),
            mailer: mailer::Mailer::new(admit.clone(), mailer)?,
            expiry: expiry::Expiry::new(admit, expiry),
        })
    }

    /// Every consumer fed by the topic, each in its own consumer group.
    pub fn on_topic(
        admit: admit_api::Admit,
        mailer: mailer::MailerConfig,
        expiry: expiry::ExpiryConfig,
        topic: &topic::TopicConfig,
    ) -> Result<Consumers> {
        let db = admit.db.clone();
        let feed = |worker: &str| -> Result<feed::Feed> {
            let config = topic::TopicConfig { group: format!("admit-{worker}"), ..topic.clone() };
            Ok(feed::Feed::Topic(topic::TopicFeed::new(db.clone(), config)?))
        };
        let poll = mailer.poll;
        Ok(Consumers {
            analytics: analytics::Analytics::with_feed(db.clone(), feed("analytics")?, poll),
            mailer: mailer::Mailer::with_feed(admit.clone(), mailer, feed("mailer")?),
            expiry: expiry::Expiry::with_feed(admit, expiry, feed("expiry")?),
        })
    }

    /// Runs them all in this process until `shutdown` turns true.
    pub async fn run(self, shutdown: tokio::sync::watch::Receiver<bool>) -> Result<()> {
        let (a, b, c) = tokio::join!(
            self.mailer.run(shutdown.clone()),
            self.expiry.run(shutdown.clone()),
            self.analytics.run(shutdown)
        );
        a.and(b).and(c)
    }
}

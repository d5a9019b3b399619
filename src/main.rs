//! `admit`: the one binary of Admit. Serves the API, runs workers and the
//! operator commands (migrate, replay, verify, erase, account create).

use std::path::PathBuf;

use admit_api::commands::OpenAccount;
use admit_api::http::{ApiContext, HttpConfig};
use admit_api::{Admit, RequestContext, Secrets};
use admit_domain::ids::AccountId;
use admit_domain::password::PasswordPolicy;
use admit_domain::values::{AccountName, CustomerNumber, EmailAddress, PersonName};
use admit_ledger::Database;
use admit_projections::as_of::{accounts_as_of, Moment};
use admit_workers::expiry::{ExpiryConfig, ReminderPolicy};
use admit_workers::mail::{Sender, Transport};
use admit_workers::mailer::MailerConfig;
use admit_workers::relay::{Relay, RelayConfig};
use admit_workers::topic::TopicConfig;
use admit_workers::Consumers;
use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::time::Duration;

/// Admit: an event-sourced invitation ledger.
#[derive(Parser, Debug)]
#[command(name = "admit", version, about)]
struct Cli {
    /// Database: `sqlite://path` (embedded default) or `postgres://...`.
    #[arg(long, env = "ADMIT_DATABASE_URL", default_value = "sqlite://data/admit.db", global = true)]
    database_url: String,
    /// Longest wait for a PostgreSQL connection, in milliseconds: while the
    /// database is down, requests fail with 503 after this, never hang.
    #[arg(long, env = "ADMIT_DATABASE_TIMEOUT_MS", default_value_t = 5000, global = true)]
    database_timeout_ms: u64,
    /// Folder for local state (the generated secret key, mail in embedded mode).
    #[arg(long, env = "ADMIT_DATA_DIR", default_value = "data", global = true)]
    data_dir: PathBuf,
    /// Master secret (64 hex characters); when unset, `<data dir>/secret.key`
    /// is generated once and reused.
    #[arg(long, env = "ADMIT_SECRET_KEY", hide_env_values = true, global = true)]
    secret_key: Option<String>,
    /// Password policy for registrations: `nist` (default) or `legacy`.
    #[arg(long, env = "ADMIT_PASSWORD_POLICY", default_value = "nist", global = true)]
    password_policy: PasswordPolicy,
    /// Base URL for links in emails and CLI output (never the Host header).
    #[arg(long, env = "ADMIT_PUBLIC_URL", default_value = "http://127.0.0.1:8080", global = true)]
    public_url: String,
    /// Where invitees go after accepting when the invitation names no redirect.
    #[arg(long, env = "ADMIT_APP_URL", global = true)]
    app_url: Option<String>,
    /// Bearer secret of the operator API (`POST /v1/accounts`); unset disables it.
    #[arg(long, env = "ADMIT_OPERATOR_TOKEN", hide_env_values = true, global = true)]
    operator_token: Option<String>,
    /// SMTP server for outgoing mail, e.g. `smtp://user:pass@host:587?tls=required`,
    /// `smtps://host:465`, or `smtp://127.0.0.1:2525` (plain). Unset: mail goes
    /// to `.eml` files in the mail folder.
    #[arg(long, env = "ADMIT_SMTP_URL", hide_env_values = true, global = true)]
    smtp_url: Option<String>,
    /// Folder for `.eml` files when no SMTP server is configured (default: `<data dir>/mail`).
    #[arg(long, env = "ADMIT_MAIL_DIR", global = true)]
    mail_dir: Option<PathBuf>,
    /// Sender of every email.
    #[arg(long, env = "ADMIT_MAIL_FROM", default_value = "Admit <no-reply@localhost>", global = true)]
    mail_from: String,
    /// Reply-To of every email.
    #[arg(long, env = "ADMIT_MAIL_REPLY_TO", global = true)]
    mail_reply_to: Option<String>,
    /// Longest time one SMTP attempt may take (connecting, each command, the
    /// message and the server's answer), in milliseconds; a server that
    /// stalls longer counts as a failed attempt and is retried.
    #[arg(long, env = "ADMIT_SMTP_TIMEOUT_MS", default_value_t = 30_000, global = true)]
    smtp_timeout_ms: u64,
    /// Attempts per email before it is recorded as failed.
    #[arg(long, env = "ADMIT_MAIL_ATTEMPTS", default_value_t = 5, global = true)]
    mail_attempts: u32,
    /// First wait between attempts in milliseconds (doubles, at most 60 s).
    #[arg(long, env = "ADMIT_MAIL_BACKOFF_MS", default_value_t = 1000, global = true)]
    mail_backoff_ms: u64,
    /// Emails one mailer sends at the same time (1: one by one, which keeps
    /// a crash's resends to one email).
    #[arg(long, env = "ADMIT_MAIL_AT_ONCE", default_value_t = admit_workers::mailer::SENDING_AT_ONCE, global = true)]
    mail_at_once: usize,
    /// How often the expiry worker checks deadlines, in milliseconds.
    #[arg(long, env = "ADMIT_EXPIRY_TICK_MS", default_value_t = 1000, global = true)]
    expiry_tick_ms: u64,
    /// Kafka bootstrap servers for `admit worker relay`, e.g. `127.0.0.1:9092`.
    #[arg(long, env = "ADMIT_KAFKA_BROKERS", global = true)]
    kafka_brokers: Option<String>,
    /// Topic the relay publishes to.
    #[arg(long, env = "ADMIT_KAFKA_TOPIC", default_value = "admit.events", global = true)]
    kafka_topic: String,
    /// Seconds a silent consumer stays in its Kafka consumer group.
    #[arg(long, env = "ADMIT_KAFKA_SESSION_TIMEOUT_MS", default_value_t = 10_000, global = true)]
    kafka_session_timeout_ms: u64,
    /// Hours before the deadline a pending invitee is reminded (0: never).
    #[arg(long, env = "ADMIT_REMINDER_BEFORE_HOURS", default_value_t = 24, global = true)]
    reminder_before_hours: u32,
    /// Only links living longer than this many hours get a reminder.
    #[arg(long, env = "ADMIT_REMINDER_MIN_LIFETIME_HOURS", default_value_t = 48, global = true)]
    reminder_min_lifetime_hours: u32,
    /// Run the workers inside `serve` when no Kafka is configured (embedded mode).
    #[arg(long, env = "ADMIT_EMBEDDED_WORKERS", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    embedded_workers: bool,
    #[command(subcommand)]
    command: Command,
}

impl Cli {
    fn mailer_config(&self) -> Result<MailerConfig> {
        let transport = match &self.smtp_url {
            Some(url) => Transport::smtp(url, Duration::from_millis(self.smtp_timeout_ms))?,
            None => Transport::folder(&self.mail_dir.clone().unwrap_or_else(|| self.data_dir.join("mail")))?,
        };
        Ok(MailerConfig {
            transport,
            sender: Sender::parse(&self.mail_from, self.mail_reply_to.as_deref())?,
            public_url: self.public_url.clone(),
            app_url: self.app_url.clone(),
            attempts: self.mail_attempts,
            backoff: Duration::from_millis(self.mail_backoff_ms),
            max_backoff: Duration::from_secs(60),
            poll: Duration::from_millis(500),
            at_once: self.mail_at_once.max(1),
        })
    }

    fn expiry_config(&self) -> ExpiryConfig {
        let reminders = (self.reminder_before_hours > 0).then(|| ReminderPolicy {
            before_deadline: chrono::Duration::hours(self.reminder_before_hours.into()),
            longer_than: chrono::Duration::hours(self.reminder_min_lifetime_hours.into()),
        });
        ExpiryConfig { tick: Duration::from_millis(self.expiry_tick_ms), reminders }
    }

    /// The consumer settings of the topic, when Kafka is configured.
    fn topic_config(&self) -> Option<TopicConfig> {
        let brokers = self.kafka_brokers.as_deref().filter(|b| !b.is_empty())?;
        let mut config = TopicConfig::new(brokers, &self.kafka_topic, "all");
        config.session_timeout = Duration::from_millis(self.kafka_session_timeout_ms);
        Some(config)
    }

    fn relay_config(&self) -> Result<RelayConfig> {
        let Some(brokers) = self.kafka_brokers.clone().filter(|b| !b.is_empty()) else {
            bail!("set ADMIT_KAFKA_BROKERS for the relay")
        };
        Ok(RelayConfig {
            brokers,
            topic: self.kafka_topic.clone(),
            source: self.public_url.clone(),
            delivery_timeout: Duration::from_secs(30),
            poll: Duration::from_millis(50),
        })
    }

    /// The consumers: on the topic when Kafka is configured, on the log otherwise.
    fn consumers(&self, admit: &Admit) -> Result<Consumers> {
        Ok(match self.topic_config() {
            Some(topic) => Consumers::on_topic(admit.clone(), self.mailer_config()?, self.expiry_config(), &topic)?,
            None => Consumers::on_log(admit.clone(), self.mailer_config()?, self.expiry_config())?,
        })
    }
}

#[derive(Subcommand, Debug, Clone)]
enum Command {
    /// Apply migrations, then serve HTTP.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "ADMIT_BIND", default_value = "127.0.0.1:8080")]
        bind: String,
    },
    /// Apply the embedded migrations and create the read-model tables.
    Migrate,
    /// Run a background worker.
    Worker {
        /// `mailer`, `expiry`, `analytics`, `relay` (log to Kafka) or `all`.
        /// With ADMIT_KAFKA_BROKERS set, the consumers read the topic (each
        /// kind in its own consumer group) and `all` includes the relay;
        /// without, they tail the log.
        which: String,
    },
    /// Rebuild every read model from the log, or print accounts as of a past moment.
    Replay {
        /// An RFC 3339 time or a log position: print members and invitations as they stood then.
        #[arg(long)]
        as_of: Option<Moment>,
        /// Output format for --as-of.
        #[arg(long, default_value = "json")]
        format: String,
        /// Rows per read model kept in memory while rebuilding: bounds the
        /// replay's memory (about 1.3 KiB a row at most); beyond it rows
        /// are written out and read back when needed.
        #[arg(long, env = "ADMIT_REPLAY_ROWS_IN_MEMORY", default_value_t = admit_projections::rebuild::RebuildOptions::default().resident_rows)]
        rows_in_memory: usize,
    },
    /// Recompute the hash chain of every stream; exit 1 on the first mismatch.
    Verify,
    /// Erase a person: destroy their key, scrub read models.
    Erase {
        /// The person's email.
        #[arg(long)]
        email: String,
    },
    /// Accounts.
    Account {
        #[command(subcommand)]
        command: AccountCommand,
    },
}

#[derive(Subcommand, Debug, Clone)]
enum AccountCommand {
    /// Open an account and invite its owner; prints the accept link.
    Create {
        /// Account name.
        #[arg(long)]
        name: String,
        /// Customer number.
        #[arg(long)]
        customer_number: String,
        /// Owner's email.
        #[arg(long)]
        owner_email: String,
        /// Owner's name.
        #[arg(long)]
        owner_name: Option<String>,
        /// Seat limit.
        #[arg(long, default_value_t = 10)]
        seats: u32,
    },
    /// Deactivate an account: nobody can be invited or join until reactivated.
    Deactivate {
        /// The account id.
        account: uuid::Uuid,
    },
    /// Reactivate a deactivated account.
    Reactivate {
        /// The account id.
        account: uuid::Uuid,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ADMIT_LOG").unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // ADMIT_LOG_FORMAT=json gives one JSON object per line for log shippers.
    if std::env::var("ADMIT_LOG_FORMAT").is_ok_and(|f| f == "json") {
        logs.json().init();
    } else {
        use std::io::IsTerminal;
        logs.with_ansi(std::io::stderr().is_terminal()).init();
    }
    let cli = Cli::parse();
    // A replay allocates and frees its batches (several MiB each) all the
    // time and hashes no passwords: served from mappings, each batch's
    // memory would be mapped, zeroed by the kernel and unmapped again (a
    // tenth of a replay's CPU), so it keeps what it freed instead.
    if matches!(cli.command, Command::Replay { .. }) {
        keep_freed_memory();
    } else {
        return_large_blocks_to_the_system();
    }
    let db = Database::connect_with_timeout(&cli.database_url, Duration::from_millis(cli.database_timeout_ms))
        .await
        .with_context(|| format!("connecting to {}", cli.database_url))?;
    let secrets = Secrets::load(cli.secret_key.as_deref(), &cli.data_dir)?;
    let admit = Admit::new(db.clone(), secrets.clone(), cli.password_policy);
    match cli.command.clone() {
        Command::Migrate => {
            admit.prepare().await?;
            println!("migrations applied");
        }
        Command::Serve { bind } => {
            admit.prepare().await?;
            let listener = tokio::net::TcpListener::bind(&bind).await.with_context(|| format!("binding {bind}"))?;
            tracing::info!(%bind, "admit serving");
            let config = HttpConfig {
                public_url: cli.public_url.clone(),
                app_url: cli.app_url.clone(),
                operator_token: cli.operator_token.clone().filter(|t| !t.is_empty()),
            };
            let (stop, stopped) = tokio::sync::watch::channel(false);
            // With Kafka configured the workers run as `admit worker ...`.
            let workers = if cli.embedded_workers && cli.topic_config().is_none() {
                Some(tokio::spawn(cli.consumers(&admit)?.run(stopped)))
            } else {
                None
            };
            let app = admit_api::http::router(ApiContext::new(admit, config));
            axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
                .with_graceful_shutdown(shutdown_signal())
                .await?;
            let _ = stop.send(true);
            if let Some(w) = workers {
                w.await??;
            }
            tracing::info!("admit stopped");
        }
        Command::Worker { which } => {
            admit.prepare().await?;
            let (stop, stopped) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                shutdown_signal().await;
                let _ = stop.send(true);
            });
            if which == "relay" {
                return Ok(Relay::new(admit.db.clone(), cli.relay_config()?)?.run(stopped).await?);
            }
            if !["mailer", "expiry", "analytics", "all"].contains(&which.as_str()) {
                bail!("unknown worker `{which}` (mailer, expiry, analytics, relay, all)");
            }
            let consumers = cli.consumers(&admit)?;
            match which.as_str() {
                "mailer" => consumers.mailer.run(stopped).await?,
                "expiry" => consumers.expiry.run(stopped).await?,
                "analytics" => consumers.analytics.run(stopped).await?,
                _ => {
                    if cli.topic_config().is_some() {
                        let relay = Relay::new(admit.db.clone(), cli.relay_config()?)?;
                        let (a, b) = tokio::join!(relay.run(stopped.clone()), consumers.run(stopped));
                        a.and(b)?
                    } else {
                        consumers.run(stopped).await?
                    }
                }
            }
        }
        Command::Replay { as_of: Some(moment), format, .. } => {
            if format != "json" {
                bail!("only --format json is supported");
            }
            let accounts = accounts_as_of(&db, moment).await?;
            println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "accounts": accounts }))?);
        }
        Command::Replay { as_of: None, rows_in_memory, .. } => {
            admit.prepare().await?;
            let started = std::time::Instant::now();
            let options =
                admit_projections::rebuild::RebuildOptions { resident_rows: rows_in_memory, ..Default::default() };
            let rebuilt = admit_projections::rebuild::replay_with(&db, &secrets.lookup, options).await?;
            let secs = started.elapsed().as_secs_f64();
            println!(
                "replayed {} events in {:.2}s ({:.0} events/s)",
                rebuilt.events,
                secs,
                rebuilt.events as f64 / secs.max(1e-9)
            );
        }
        Command::Verify => {
            let report = db.verify().await?;
            match report.first_mismatch() {
                None => println!("OK: {} events in {} streams verified", report.events, report.streams),
                Some(m) => {
                    println!(
                        "TAMPERED: event {} (stream {} version {}, position {}): {}",
                        m.event_id, m.stream_id, m.stream_version, m.position, m.problem
                    );
                    std::process::exit(1);
                }
            }
        }
        Command::Erase { email } => {
            let email = EmailAddress::parse(&email)?;
            match admit.erase(&email).await? {
                Some(person) => println!("erased person {person}"),
                None => println!("nobody with that email"),
            }
        }
        Command::Account {
            command: AccountCommand::Create { name, customer_number, owner_email, owner_name, seats },
        } => {
            admit.prepare().await?;
            let req = OpenAccount {
                name: AccountName::parse(&name)?,
                customer_number: CustomerNumber::parse(&customer_number)?,
                seats,
                owner_email: EmailAddress::parse(&owner_email)?,
                owner_name: owner_name.as_deref().map(PersonName::parse).transpose()?,
            };
            let opened = admit.open_account(&RequestContext::cli(), req).await?;
            println!("account {}", opened.account_id);
            println!(
                "owner invitation {} (expires {}): {}/invite/{}",
                opened.owner_invitation.invitation_id,
                opened.owner_invitation.expires_at.to_rfc3339(),
                cli.public_url.trim_end_matches('/'),
                opened.owner_invitation.token.as_str()
            );
        }
        Command::Account { command: AccountCommand::Deactivate { account } } => {
            admit.set_account_active(&RequestContext::cli(), AccountId(account), false).await?;
            println!("account {account} deactivated");
        }
        Command::Account { command: AccountCommand::Reactivate { account } } => {
            admit.set_account_active(&RequestContext::cli(), AccountId(account), true).await?;
            println!("account {account} reactivated");
        }
    }
    // Closing checkpoints SQLite's WAL into the file and truncates it (see
    // `Database::close`): left open at exit, a replay's WAL (110-120 MB for
    // a million events) stayed on disk, and the next start read it all
    // through to recover it.
    db.close().await;
    Ok(())
}

/// Makes glibc serve every allocation of 1 MiB or more (each argon2 hash
/// takes 19 MiB) with its own mapping, returned to the system on free.
/// Left to itself glibc raises that threshold after the first such free,
/// and every thread's arena then keeps its 19 MiB: hundreds of MiB of
/// resident memory after a burst of sign-ins.
fn return_large_blocks_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator (it takes glibc's own locks),
    // and the value is in range.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// For a replay: makes glibc serve allocations below 64 MiB from its heap
/// and never give the heap's top back to the system, so memory a batch
/// freed is reused by the next instead of being unmapped and faulted in
/// again. Peak memory stays what the replay holds at once (bounded by
/// `--rows-in-memory`).
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator (it takes glibc's own locks),
    // and the values are in range.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// Resolves on Ctrl-C or SIGTERM, so in-flight requests finish before exit.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

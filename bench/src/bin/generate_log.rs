//! `generate_log`: writes the replay benchmark's simulated event log (see
//! `admit_bench::replay_log`) into a database, so `admit replay` and
//! `admit verify` can be timed on a log of production shape and size.
//!
//! ```sh
//! generate_log --database-url sqlite:///tmp/replay.db --events 1000000
//! ```

use std::time::Instant;

use admit_api::Secrets;
use admit_bench::replay_log::{self, LogShape};
use admit_domain::password::PasswordPolicy;
use admit_ledger::Database;
use anyhow::{Context, Result};
use clap::Parser;

/// Command line of the log generator.
#[derive(Debug, Parser)]
#[command(about = "Writes a realistic Admit event log for the replay benchmark")]
struct Args {
    /// Database to write into: `sqlite://path` or `postgres://user@host/db`
    /// (migrated here; meant to be fresh).
    #[arg(long, env = "ADMIT_DATABASE_URL")]
    database_url: String,
    /// Master secret (64 hex characters); `admit replay` must run with the
    /// same one. The default matches the tests' `Secrets::from_master([42; 32])`.
    #[arg(
        long,
        env = "ADMIT_SECRET_KEY",
        hide_env_values = true,
        default_value = "2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a"
    )]
    secret_key: String,
    /// Events to write (the last step may add one or two more).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Accounts in the log.
    #[arg(long, default_value_t = 10_000)]
    accounts: usize,
    /// Events appended per transaction.
    #[arg(long, default_value_t = 5_000)]
    events_per_transaction: u64,
    /// Seed of the simulation.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let secrets =
        Secrets::load(Some(&args.secret_key), std::path::Path::new(".")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let db =
        Database::connect(&args.database_url).await.with_context(|| format!("connecting to {}", args.database_url))?;
    // Migrations and empty read-model tables, exactly as `admit migrate`.
    let admit = admit_api::Admit::new(db.clone(), secrets.clone(), PasswordPolicy::Nist);
    admit.prepare().await.map_err(|e| anyhow::anyhow!("preparing the database: {e}"))?;
    // One real argon2id hash, shared by every generated user.
    let password_hash = admit_api::passwords::hash("violet kettle under seventeen clouds".into())
        .await
        .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))?;
    let shape = LogShape {
        events: args.events,
        accounts: args.accounts,
        events_per_transaction: args.events_per_transaction,
        seed: args.seed,
    };
    let started = Instant::now();
    let mut next_report = 100_000;
    let log = replay_log::generate(&db, &secrets.lookup, password_hash, &shape, |written| {
        if written >= next_report {
            eprintln!("  {written} events written ({:.0}s)", started.elapsed().as_secs_f64());
            next_report = (written / 100_000 + 1) * 100_000;
        }
    })
    .await?;
    db.close().await;
    let secs = log.elapsed.as_secs_f64();
    println!(
        "wrote {} events ({} accounts, {} invitations, {} users) in {} transactions in {:.1}s ({:.0} events/s)",
        log.events,
        log.accounts,
        log.invitations,
        log.users,
        log.transactions,
        secs,
        log.events as f64 / secs.max(1e-9)
    );
    for (event_type, n) in &log.by_type {
        println!("  {event_type:<28} {n:>9}");
    }
    Ok(())
}

//! `replay_per_event`: the rebuild loop as it was before bulk projection —
//! one `Projector::apply` (one to three statements) per event, 5,000 events
//! per transaction — into scratch tables (`perevent_*`, dropped after), so
//! the replay benchmark can show what bulk projection gains on the same log.
//!
//! ```sh
//! replay_per_event --database-url sqlite:///tmp/replay.db --limit 200000
//! ```

use std::time::Instant;

use admit_api::Secrets;
use admit_ledger::{Database, GlobalCursor};
use admit_projections::{Codec, Projector};
use anyhow::{Context, Result};
use clap::Parser;

/// Command line of the per-event replay baseline.
#[derive(Debug, Parser)]
struct Args {
    /// Database holding the log: `sqlite://path` or `postgres://...`.
    #[arg(long, env = "ADMIT_DATABASE_URL")]
    database_url: String,
    /// Master secret (64 hex characters) the log was written with.
    #[arg(
        long,
        env = "ADMIT_SECRET_KEY",
        hide_env_values = true,
        default_value = "2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a"
    )]
    secret_key: String,
    /// Stop after this many events (the per-event loop is slow).
    #[arg(long)]
    limit: Option<u64>,
}

const PREFIX: &str = "perevent_";

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let secrets =
        Secrets::load(Some(&args.secret_key), std::path::Path::new(".")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let db =
        Database::connect(&args.database_url).await.with_context(|| format!("connecting to {}", args.database_url))?;
    let mut tx = db.begin().await?;
    admit_projections::schema::drop(&mut tx, PREFIX).await?;
    admit_projections::schema::create(&mut tx, PREFIX).await?;
    tx.commit().await?;

    let projector = Projector::with_prefix(PREFIX, secrets.lookup.clone());
    let limit = args.limit.unwrap_or(u64::MAX);
    let started = Instant::now();
    let (mut cursor, mut events) = (GlobalCursor::START, 0u64);
    while events < limit {
        let batch = db.read_all(cursor, 5_000.min((limit - events) as i64)).await?;
        let Some(last) = batch.last() else { break };
        cursor = GlobalCursor::after(last);
        let decoded = Codec::decode_all(&db, &batch).await?;
        let mut tx = db.begin().await?;
        for env in &decoded {
            projector.apply(&mut tx, env).await?;
        }
        tx.commit().await?;
        events += decoded.len() as u64;
    }
    let secs = started.elapsed().as_secs_f64();
    admit_projections::rebuild::discard(&db, PREFIX).await?;
    println!("per-event replay: {events} events in {secs:.2}s ({:.0} events/s)", events as f64 / secs.max(1e-9));
    Ok(())
}

//! Keeps the pgbench ceiling scripts working: `bench/pgbench.sh` runs them
//! prepared (`-M prepared`), where a colon inside a literal would be taken
//! for a parameter and abort the run, so each script runs a few
//! transactions here against a database Admit prepared, and the rows it
//! wrote must be the rows of one invitation each, with the event's JSON
//! intact.

use std::path::Path;
use std::process::Command;

use admit_api::{Admit, Secrets};
use admit_domain::password::PasswordPolicy;
use admit_ledger::{on_db, Database};

const TRANSACTIONS: i64 = 3;

async fn count(db: &Database, sql: &str) -> i64 {
    on_db!(db, p => sqlx::query_scalar::<_, i64>(sql).fetch_one(p).await.unwrap())
}

async fn run(script: &str) {
    let url = admit_ledger::testing::fresh_postgres_url().await;
    let db = Database::connect(&url).await.unwrap();
    Admit::new(db.clone(), Secrets::from_master([42; 32]), PasswordPolicy::Nist).prepare().await.unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(script);
    let out = Command::new("pgbench")
        .args(["-n", "-M", "prepared", "-c", "1", "-t", &TRANSACTIONS.to_string(), "-D", "accounts=2", "-f"])
        .arg(&script)
        .arg(&url)
        .output()
        .expect("pgbench (PostgreSQL's client tools, which scripts/test installs with the server)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}\n{}", script.display(), String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("actually processed: {TRANSACTIONS}/")), "{stdout}");

    for table in ["invitations", "person_keys", "reservations", "invitation_sends", "account_streams"] {
        assert_eq!(count(&db, &format!("SELECT COUNT(*) FROM {table}")).await, TRANSACTIONS, "{table}");
    }
    let events = "SELECT COUNT(*) FROM events WHERE event_type = 'InvitationSent' \
                  AND payload::jsonb ->> 'invited_by' = 'user:bench' \
                  AND payload::jsonb ->> 'invitation_id' = substr(stream_id, 12) \
                  AND metadata::jsonb ->> 'actor' = 'user:bench'";
    assert_eq!(count(&db, events).await, TRANSACTIONS);
    let invited = "SELECT COUNT(*) FROM invitations WHERE invited_by = 'user:bench' AND roles = 'viewer'";
    assert_eq!(count(&db, invited).await, TRANSACTIONS);
}

#[tokio::test]
async fn the_ceiling_script_writes_one_invitations_rows_per_transaction() {
    run("invite.pgbench").await;
}

#[tokio::test]
async fn the_one_statement_script_writes_the_same_rows() {
    run("invite_one_statement.pgbench").await;
}

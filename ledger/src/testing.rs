//! Fresh databases for tests, one of each backend, so every ledger and
//! projection test runs against both SQLite and PostgreSQL.
//!
//! PostgreSQL is reached through `ADMIT_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); each call creates a new,
//! uniquely named database there. A test never skips PostgreSQL: when it is
//! unreachable the test fails with the reason.

use uuid::Uuid;

use crate::Database;

/// URL of the PostgreSQL server used to create test databases.
pub fn postgres_admin_url() -> String {
    std::env::var("ADMIT_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// Creates an empty PostgreSQL database and returns its URL.
pub async fn fresh_postgres_url() -> String {
    let admin_url = postgres_admin_url();
    let admin = sqlx::PgPool::connect(&admin_url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {admin_url} is needed by the tests: {e}"));
    let name = format!("admit_test_{}", Uuid::new_v4().simple());
    // Concurrent CREATE DATABASE calls can collide on the template; retry.
    let mut attempt = 0;
    while let Err(e) = sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await {
        attempt += 1;
        assert!(attempt < 10, "create test database {name}: {e}");
        tokio::time::sleep(std::time::Duration::from_millis(50 * attempt)).await;
    }
    admin.close().await;
    match admin_url.rfind('/') {
        Some(i) if admin_url[..i].contains("://") && !admin_url[..i].ends_with('/') => {
            let rest = &admin_url[i + 1..];
            let query = rest.find('?').map(|q| &rest[q..]).unwrap_or("");
            format!("{}/{name}{query}", &admin_url[..i])
        }
        _ => format!("{}/{name}", admin_url.trim_end_matches('/')),
    }
}

/// Creates an empty SQLite database file in the temp folder and returns its URL.
pub fn fresh_sqlite_url() -> String {
    let path = std::env::temp_dir().join(format!("admit-test-{}.db", Uuid::new_v4().simple()));
    format!("sqlite://{}", path.display())
}

/// A migrated, empty database of each backend: SQLite first, then PostgreSQL.
pub async fn fresh_databases() -> Vec<(String, Database)> {
    let mut out = Vec::new();
    for url in [fresh_sqlite_url(), fresh_postgres_url().await] {
        let db = Database::connect(&url).await.expect("connect test database");
        db.migrate().await.expect("migrate test database");
        out.push((url, db));
    }
    out
}

/// A migrated, empty PostgreSQL database.
pub async fn fresh_postgres() -> (String, Database) {
    let url = fresh_postgres_url().await;
    let db = Database::connect(&url).await.expect("connect test database");
    db.migrate().await.expect("migrate test database");
    (url, db)
}

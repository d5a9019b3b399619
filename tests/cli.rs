//! The operator commands from the shell, on SQLite and PostgreSQL:
//! migrate, account create, verify, replay, replay --as-of, erase.

use std::process::{Command, Output};

struct Shell {
    url: String,
    data_dir: std::path::PathBuf,
}

impl Shell {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_admit"))
            .args(args)
            .env("ADMIT_DATABASE_URL", &self.url)
            .env("ADMIT_DATA_DIR", &self.data_dir)
            .env_remove("ADMIT_SECRET_KEY")
            .env("ADMIT_LOG", "warn")
            .output()
            .expect("run admit")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "admit {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }
}

async fn tamper(url: &str) -> uuid::Uuid {
    let db = admit_ledger::Database::connect(url).await.unwrap();
    let mut tx = db.begin().await.unwrap();
    let id = match &mut tx.conn {
        admit_ledger::Conn::Postgres(t) => {
            sqlx::query("ALTER TABLE events DISABLE TRIGGER events_refuse_update_delete")
                .execute(&mut **t)
                .await
                .unwrap();
            sqlx::query_scalar(
                "UPDATE events SET payload = replace(payload, '\"owner\"', '\"viewer\"') \
                 WHERE event_type = 'InvitationSent' RETURNING event_id",
            )
            .fetch_one(&mut **t)
            .await
            .unwrap()
        }
        admit_ledger::Conn::Sqlite(t) => {
            sqlx::query("DROP TRIGGER events_refuse_update").execute(&mut **t).await.unwrap();
            sqlx::query_scalar(
                "UPDATE events SET payload = replace(payload, '\"owner\"', '\"viewer\"') \
                 WHERE event_type = 'InvitationSent' RETURNING event_id",
            )
            .fetch_one(&mut **t)
            .await
            .unwrap()
        }
    };
    tx.commit().await.unwrap();
    id
}

#[tokio::test]
async fn operator_commands_work_from_the_shell_on_both_backends() {
    for url in [admit_ledger::testing::fresh_sqlite_url(), admit_ledger::testing::fresh_postgres_url().await] {
        let shell = Shell {
            url: url.clone(),
            data_dir: std::env::temp_dir().join(format!("admit-cli-{}", uuid::Uuid::new_v4())),
        };
        assert!(shell.ok(&["migrate"]).contains("migrations applied"), "{url}");
        let created = shell.ok(&[
            "account",
            "create",
            "--name",
            "Acme",
            "--customer-number",
            "C-7",
            "--owner-email",
            "boss@example.com",
        ]);
        assert!(created.contains("/invite/"), "{url}: {created}");
        let account_id = created.lines().next().unwrap().strip_prefix("account ").unwrap().to_string();
        assert!(shell.data_dir.join("secret.key").exists(), "{url}: the secret key is generated once");

        assert!(shell.ok(&["account", "deactivate", &account_id]).contains("deactivated"), "{url}");
        assert!(shell.ok(&["account", "reactivate", &account_id]).contains("reactivated"), "{url}");
        let verified = shell.ok(&["verify"]);
        assert!(verified.starts_with("OK: 4 events in 2 streams"), "{url}: {verified}");
        let replayed = shell.ok(&["replay"]);
        assert!(replayed.starts_with("replayed 4 events"), "{url}: {replayed}");
        if let Some(file) = url.strip_prefix("sqlite://") {
            // Every command closes the database on its way out, so SQLite
            // folds its WAL into the file and truncates or removes it.
            let wal = format!("{file}-wal");
            let left = std::fs::metadata(&wal).map_or(0, |m| m.len());
            assert_eq!(left, 0, "{url}: {wal} left behind by the replay");
        }

        let now = chrono::Utc::now().to_rfc3339();
        let json: serde_json::Value =
            serde_json::from_str(&shell.ok(&["replay", "--as-of", &now, "--format", "json"])).unwrap();
        let account = &json["accounts"][0];
        assert_eq!(account["customer_number"], "C-7", "{url}");
        assert_eq!(account["invitations"][0]["status"], "pending", "{url}");
        assert_eq!(account["invitations"][0]["email"], "boss@example.com", "{url}");
        let before: serde_json::Value =
            serde_json::from_str(&shell.ok(&["replay", "--as-of", "0", "--format", "json"])).unwrap();
        assert_eq!(before["accounts"].as_array().unwrap().len(), 0, "{url}: nothing at position 0");

        assert!(shell.ok(&["erase", "--email", "BOSS@example.com"]).starts_with("erased person"), "{url}");
        let json: serde_json::Value =
            serde_json::from_str(&shell.ok(&["replay", "--as-of", &chrono::Utc::now().to_rfc3339()])).unwrap();
        assert_eq!(json["accounts"][0]["invitations"][0]["email"], serde_json::Value::Null, "{url}");
        assert!(shell.ok(&["verify"]).starts_with("OK"), "{url}: erasure keeps the chain valid");

        let tampered = tamper(&url).await;
        let out = shell.run(&["verify"]);
        assert_eq!(out.status.code(), Some(1), "{url}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&tampered.to_string()), "{url}: verify must name the edited event: {text}");
    }
}

//! The embedded default from the shell: `admit serve` with nothing
//! configured but a data folder writes the invitation email to the mail
//! folder, and the link in it works.

use std::time::{Duration, Instant};

use serde_json::json;

struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn serve_mails_to_the_folder_and_the_link_works() {
    let data = std::env::temp_dir().join(format!("admit-serve-{}", uuid::Uuid::new_v4().simple()));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let _server = Server(
        std::process::Command::new(env!("CARGO_BIN_EXE_admit"))
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("ADMIT_DATA_DIR", &data)
            .env("ADMIT_DATABASE_URL", format!("sqlite://{}/admit.db", data.display()))
            .env("ADMIT_BIND", format!("127.0.0.1:{port}"))
            .env("ADMIT_PUBLIC_URL", "http://admit.test")
            .env("ADMIT_OPERATOR_TOKEN", "op")
            .env("ADMIT_LOG", "warn")
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while http.get(format!("{base}/readyz")).send().await.map(|r| r.status().as_u16()).unwrap_or(0) != 200 {
        assert!(Instant::now() < deadline, "admit serve did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let opened: serde_json::Value = http
        .post(format!("{base}/v1/accounts"))
        .bearer_auth("op")
        .json(&json!({ "name": "Folder Ltd", "customer_number": "F-1", "owner_email": "owner@folder.example.com" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(opened["account_id"].is_string(), "{opened}");

    // The in-process mailer writes the owner's invitation into data/mail.
    let mail = data.join("mail");
    let email = loop {
        let found = std::fs::read_dir(&mail).into_iter().flatten().flatten().find_map(|e| {
            let text = std::fs::read_to_string(e.path()).ok()?;
            let text = text.replace("=\r\n", "");
            text.contains("owner@folder.example.com").then_some(text)
        });
        if let Some(text) = found {
            break text;
        }
        assert!(Instant::now() < deadline, "no invitation email in {}", mail.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(email.contains("Folder Ltd"), "{email}");
    let start = email.find("http://admit.test/invite/").unwrap() + "http://admit.test/invite/".len();
    let token = &email[start..start + 64];

    let accepted = http
        .post(format!("{base}/v1/invitations/accept"))
        .json(&json!({ "token": token, "name": "Fiona Folder", "password": "violet kettle under seventeen clouds" }))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status().as_u16(), 200, "{:?}", accepted.text().await);
    assert!(data.join("secret.key").exists(), "the secret was generated into the data folder");
}

//! Password hashing with argon2id, off the async runtime's threads.

use admit_domain::user::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use crate::Error;

/// A valid argon2id hash of a random password, verified against when the
/// email is unknown so that unknown and known emails cost the same time.
const DECOY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$3yFgqVnLlTG8wNdYV9mbAqNM3r9b1bykXw8pjRQ3RzY";

/// Hashes a password (argon2id, OWASP parameters m=19 MiB, t=2, p=1).
pub async fn hash(password: String) -> Result<PasswordHash, Error> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        let phc = Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map_err(|e| Error::Internal(format!("argon2: {e}")))?
            .to_string();
        PasswordHash::parse(&phc).map_err(Error::from)
    })
    .await
    .map_err(|e| Error::Internal(format!("hashing task: {e}")))?
}

/// Checks a password against a hash; with `None`, checks against a decoy
/// and fails, taking the same time.
pub async fn verify(password: String, hash: Option<PasswordHash>) -> bool {
    let known = hash.is_some();
    let phc = hash.map(|h| h.as_str().to_string()).unwrap_or_else(|| DECOY.to_string());
    let ok = tokio::task::spawn_blocking(move || {
        argon2::password_hash::PasswordHash::new(&phc)
            .map(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false);
    ok && known
}

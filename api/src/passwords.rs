//! Password hashing with argon2id, off the async runtime's threads, at
//! most a few at a time: each hash takes 19 MiB and a core for tens of
//! milliseconds, so unbounded concurrency under load (or a sign-in flood)
//! would grow memory by 19 MiB per request in flight and starve the rest of
//! the service. Excess hashes queue for a permit instead.

use admit_domain::user::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use crate::Error;

/// A valid argon2id hash of a random password, verified against when the
/// email is unknown so that unknown and known emails cost the same time.
const DECOY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$3yFgqVnLlTG8wNdYV9mbAqNM3r9b1bykXw8pjRQ3RzY";

/// Hashes running at once: one per core (at least 2).
fn permits() -> &'static tokio::sync::Semaphore {
    static PERMITS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    PERMITS.get_or_init(|| {
        tokio::sync::Semaphore::new(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).max(2))
    })
}

/// Hashes a password (argon2id, OWASP parameters m=19 MiB, t=2, p=1).
pub async fn hash(password: String) -> Result<PasswordHash, Error> {
    let _permit = permits().acquire().await.map_err(|e| Error::Internal(format!("hashing permits: {e}")))?;
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
    let Ok(_permit) = permits().acquire().await else { return false };
    let ok = tokio::task::spawn_blocking(move || {
        argon2::password_hash::PasswordHash::new(&phc)
            .map(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false);
    ok && known
}

//! Counting failed attempts: the sign-in throttle (per email and per client
//! address) and the link throttle (failed link tokens per client address,
//! shared by the preview, accept, decline and the accept page).
//!
//! Only failures count, so an office of invitees behind one address that
//! opens its links is never slowed down; a guesser is stopped long before a
//! 128-bit link could be found. Counts live in memory: a restart forgets
//! them, which an attacker cannot trigger and which costs a guesser nothing
//! it could use.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::Error;

/// Failures per key over a sliding window; a key that reached its limit is
/// refused until its oldest failure ages out.
#[derive(Debug)]
pub struct FailureWindow {
    window: Duration,
    limit: usize,
    failures: Mutex<HashMap<String, Vec<Instant>>>,
}

impl FailureWindow {
    /// At most `limit` failures per key within `window`.
    pub fn new(limit: usize, window: Duration) -> FailureWindow {
        FailureWindow { window, limit, failures: Mutex::default() }
    }

    /// Whether `key` has used up its failures.
    pub fn is_blocked(&self, key: &str) -> bool {
        let mut map = self.failures.lock().expect("failure window lock");
        let now = Instant::now();
        let Some(entry) = map.get_mut(key) else { return false };
        entry.retain(|t| now.duration_since(*t) < self.window);
        let n = entry.len();
        if n == 0 {
            // Forget keys whose failures all aged out, so the map stays small.
            map.remove(key);
        }
        n >= self.limit
    }

    /// Counts one failure against `key`.
    pub fn record(&self, key: &str) {
        self.failures.lock().expect("failure window lock").entry(key.to_string()).or_default().push(Instant::now());
    }
}

/// The throttle on failed sign-ins (`POST /v1/sessions` and the accept
/// page's sign-in form): 5 failures per email and 20 per client address in
/// 15 minutes.
#[derive(Debug)]
pub struct Throttle {
    per_email: FailureWindow,
    per_address: FailureWindow,
}

impl Default for Throttle {
    fn default() -> Self {
        let window = Duration::from_secs(900);
        Throttle { per_email: FailureWindow::new(5, window), per_address: FailureWindow::new(20, window) }
    }
}

impl Throttle {
    /// Refuses (`too_many_attempts`) when either key is over its limit.
    pub fn check(&self, email_key: &str, address_key: &str) -> Result<(), Error> {
        if self.per_email.is_blocked(email_key) || self.per_address.is_blocked(address_key) {
            return Err(Error::TooManyAttempts);
        }
        Ok(())
    }

    /// Records a failure against both keys.
    pub fn fail(&self, email_key: &str, address_key: &str) {
        self.per_email.record(email_key);
        self.per_address.record(address_key);
    }
}

/// The throttle on link tokens that are not valid: 20 per client address in
/// 15 minutes, across the preview, accept and decline routes and the accept
/// page. A blocked address gets `too_many_attempts` for every link, valid or
/// not, so the answer tells a guesser nothing.
#[derive(Debug)]
pub struct LinkThrottle(FailureWindow);

impl Default for LinkThrottle {
    fn default() -> Self {
        LinkThrottle(FailureWindow::new(20, Duration::from_secs(900)))
    }
}

impl LinkThrottle {
    /// Refuses (`too_many_attempts`) an address that used up its failures.
    pub fn check(&self, address: IpAddr) -> Result<(), Error> {
        if self.0.is_blocked(&address.to_string()) {
            return Err(Error::TooManyAttempts);
        }
        Ok(())
    }

    /// Counts a link that is not one Admit issued (or was replaced) against
    /// `address`.
    pub fn fail(&self, address: IpAddr) {
        self.0.record(&address.to_string());
    }

    /// Checks `address`, runs `attempt`, and counts its outcome when it is
    /// `invalid_token`; for the JSON invitee routes.
    pub async fn guard<T>(
        &self,
        address: IpAddr,
        attempt: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        self.check(address)?;
        let outcome = attempt.await;
        if outcome.as_ref().is_err_and(|e| e.code() == "invalid_token") {
            self.fail(address);
        }
        outcome
    }
}

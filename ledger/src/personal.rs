//! Personal data in an immutable log: per-person keys and sealed fields.
//!
//! Emails and names inside event payloads are encrypted (XChaCha20-Poly1305)
//! with a key that belongs to one person and lives in `person_keys`, outside
//! the log. Erasing the person deletes the key (crypto-shredding): the sealed
//! bytes stay in the log, so its hashes still verify, but nobody can read
//! them any more. Lookups by email go through a keyed hash of the normalised
//! address, never the clear text.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use uuid::Uuid;

use crate::{on_tx, Database, Result, Tx};

/// One person's data key. Never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct PersonKey([u8; 32]);

impl std::fmt::Debug for PersonKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PersonKey(..)")
    }
}

impl PersonKey {
    /// A fresh random key.
    pub fn generate() -> PersonKey {
        let mut k = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut k);
        PersonKey(k)
    }

    /// The key as stored in `person_keys`.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub(crate) fn from_slice(bytes: &[u8]) -> Option<PersonKey> {
        bytes.try_into().ok().map(PersonKey)
    }

    /// Encrypts `plaintext`, bound to `person` (as associated data), into a
    /// URL-safe base64 string `nonce || ciphertext`.
    pub fn seal(&self, person: Uuid, plaintext: &[u8]) -> String {
        let cipher = XChaCha20Poly1305::new((&self.0).into());
        let mut nonce = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut nonce);
        let ciphertext = cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad: person.as_bytes() })
            .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory buffers");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ciphertext);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// Decrypts what [`PersonKey::seal`] produced for the same person; None
    /// when the text was altered or belongs to someone else.
    pub fn open(&self, person: Uuid, sealed: &str) -> Option<Vec<u8>> {
        let bytes = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        if bytes.len() < 24 {
            return None;
        }
        let (nonce, ciphertext) = bytes.split_at(24);
        XChaCha20Poly1305::new((&self.0).into())
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ciphertext, aad: person.as_bytes() })
            .ok()
    }
}

/// Server secret for the keyed email hash used by every lookup by email.
#[derive(Clone)]
pub struct LookupKey([u8; 32]);

impl std::fmt::Debug for LookupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LookupKey(..)")
    }
}

impl LookupKey {
    /// Wraps 32 secret bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> LookupKey {
        LookupKey(bytes)
    }

    /// HMAC-SHA256 of an already normalised email address, hex-encoded.
    pub fn email_hash(&self, normalised_email: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(b"admit-email-lookup-v1:");
        mac.update(normalised_email.as_bytes());
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(64);
        for b in mac.finalize().into_bytes() {
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 0xf) as usize] as char);
        }
        out
    }
}

impl Tx {
    /// The person holding this email hash, creating them (with a new key)
    /// when unknown. Concurrent calls for one email agree on one person.
    ///
    /// Most invitations go to people Admit has not seen, so the insert comes
    /// first and says whether it made the person: one statement for a new
    /// person, two for a known one (a lookup first took three for a new one).
    pub async fn person_for_email(&mut self, email_hash: &str, now: DateTime<Utc>) -> Result<(Uuid, PersonKey)> {
        let id = Uuid::now_v7();
        let key = PersonKey::generate();
        let made = on_tx!(self, c => sqlx::query(
            "INSERT INTO person_keys (person_id, email_hash, key, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (email_hash) DO NOTHING",
        )
        .bind(id)
        .bind(email_hash)
        .bind(key.0.to_vec())
        .bind(now)
        .execute(&mut *c)
        .await?
        .rows_affected());
        if made == 1 {
            return Ok((id, key));
        }
        match self.person_by_email(email_hash).await? {
            Some(found) => Ok(found),
            None => Err(crate::LedgerError::Corrupt("person key vanished while created".into())),
        }
    }

    /// The person holding this email hash, if any.
    pub async fn person_by_email(&mut self, email_hash: &str) -> Result<Option<(Uuid, PersonKey)>> {
        let row: Option<(Uuid, Vec<u8>)> = on_tx!(self, c => sqlx::query_as(
            "SELECT person_id, key FROM person_keys WHERE email_hash = $1",
        )
        .bind(email_hash)
        .fetch_optional(&mut *c)
        .await?);
        Ok(row.and_then(|(id, k)| PersonKey::from_slice(&k).map(|k| (id, k))))
    }

    /// The keys of `people` that still exist (erased people are absent).
    pub async fn person_keys(&mut self, people: &[Uuid]) -> Result<HashMap<Uuid, PersonKey>> {
        if people.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = match &mut self.conn {
            crate::Conn::Postgres(t) => sqlx::query_as(KEYS_OF_PEOPLE).bind(people).fetch_all(&mut **t).await?,
            crate::Conn::Sqlite(t) => keys_of_people_sqlite(people).build_query_as().fetch_all(&mut **t).await?,
        };
        Ok(keys_by_person(rows))
    }

    /// Destroys the key of the person with this email hash. Returns the
    /// person's id, or None when nobody had that email.
    pub async fn erase_person(&mut self, email_hash: &str) -> Result<Option<Uuid>> {
        let row: Option<(Uuid,)> = on_tx!(self, c => sqlx::query_as(
            "DELETE FROM person_keys WHERE email_hash = $1 RETURNING person_id",
        )
        .bind(email_hash)
        .fetch_optional(&mut *c)
        .await?);
        Ok(row.map(|(id,)| id))
    }
}

impl Database {
    /// The keys of `people` that still exist (erased people are absent).
    pub async fn person_keys(&self, people: &[Uuid]) -> Result<HashMap<Uuid, PersonKey>> {
        if people.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = match self {
            Database::Postgres(pool) => sqlx::query_as(KEYS_OF_PEOPLE).bind(people).fetch_all(pool).await?,
            Database::Sqlite { reader, .. } => keys_of_people_sqlite(people).build_query_as().fetch_all(reader).await?,
        };
        Ok(keys_by_person(rows))
    }
}

/// PostgreSQL: the keys of a list of people, bound as one array, so that
/// it is one prepared statement whatever their number. A rebuild asks for
/// the people of every batch (hundreds): a list of that many parameters
/// was parsed and planned afresh for each.
const KEYS_OF_PEOPLE: &str = "SELECT person_id, key FROM person_keys WHERE person_id = ANY($1)";

/// SQLite, which has no arrays: the keys of `people`, one parameter each.
fn keys_of_people_sqlite(people: &[Uuid]) -> sqlx::QueryBuilder<'static, sqlx::Sqlite> {
    crate::database::ids_in("SELECT person_id, key FROM person_keys WHERE person_id IN", people.iter().copied())
}

/// Stored keys by person; a stored key of the wrong length is left out
/// (it opens nothing).
fn keys_by_person(rows: Vec<(Uuid, Vec<u8>)>) -> HashMap<Uuid, PersonKey> {
    rows.into_iter().filter_map(|(id, k)| PersonKey::from_slice(&k).map(|k| (id, k))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_text_opens_only_for_its_person_and_key() {
        let key = PersonKey::generate();
        let person = Uuid::now_v7();
        let sealed = key.seal(person, b"alice@example.com");
        assert!(!sealed.contains("alice"));
        assert_eq!(key.open(person, &sealed).as_deref(), Some(&b"alice@example.com"[..]));
        assert_eq!(key.open(Uuid::now_v7(), &sealed), None);
        assert_eq!(PersonKey::generate().open(person, &sealed), None);
        assert_eq!(key.open(person, "not base64!"), None);
    }

    #[test]
    fn email_hash_is_keyed() {
        let a = LookupKey::from_bytes([1; 32]);
        let b = LookupKey::from_bytes([2; 32]);
        assert_eq!(a.email_hash("x@y.z"), a.email_hash("x@y.z"));
        assert_ne!(a.email_hash("x@y.z"), b.email_hash("x@y.z"));
        assert_eq!(a.email_hash("x@y.z").len(), 64);
        // Stored hashes stay valid: lower-case hex of the HMAC, as ever.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&[1; 32]).unwrap();
        mac.update(b"admit-email-lookup-v1:x@y.z");
        let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(a.email_hash("x@y.z"), expected);
    }
}

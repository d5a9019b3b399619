//! The SHA-256 chain that makes tampering with stored events evident.
//!
//! Each event's hash covers the previous hash of its stream and every stored
//! byte that matters (ids, type, version, payload and metadata text, time),
//! each field length-prefixed so that no two different events encode alike.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The "previous hash" of a stream's first event.
pub const GENESIS: [u8; 32] = [0; 32];

/// The stored fields of one event that its hash covers.
#[derive(Debug, Clone, Copy)]
pub struct HashedFields<'a> {
    /// Stream the event belongs to.
    pub stream_id: &'a str,
    /// Version of the event in its stream (1 for the first).
    pub stream_version: i64,
    /// The event's id.
    pub event_id: Uuid,
    /// The event's type name.
    pub event_type: &'a str,
    /// The payload's schema version.
    pub schema_version: i32,
    /// The payload exactly as stored.
    pub payload: &'a str,
    /// The metadata exactly as stored.
    pub metadata: &'a str,
    /// When the event was recorded (microsecond precision).
    pub recorded_at: DateTime<Utc>,
}

/// Hash of an event given the hash of the previous event of its stream.
pub fn chain(previous: &[u8], fields: &HashedFields<'_>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"admit-event-v1");
    put(&mut h, previous);
    put(&mut h, fields.stream_id.as_bytes());
    h.update(fields.stream_version.to_be_bytes());
    h.update(fields.event_id.as_bytes());
    put(&mut h, fields.event_type.as_bytes());
    h.update(fields.schema_version.to_be_bytes());
    put(&mut h, fields.payload.as_bytes());
    put(&mut h, fields.metadata.as_bytes());
    h.update(fields.recorded_at.timestamp_micros().to_be_bytes());
    h.finalize().into()
}

fn put(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(payload: &str) -> HashedFields<'_> {
        HashedFields {
            stream_id: "s",
            stream_version: 1,
            event_id: Uuid::nil(),
            event_type: "T",
            schema_version: 1,
            payload,
            metadata: "{}",
            recorded_at: DateTime::from_timestamp_micros(1).unwrap(),
        }
    }

    #[test]
    fn any_changed_byte_changes_the_hash() {
        let a = chain(&GENESIS, &fields("{\"a\":1}"));
        assert_ne!(a, chain(&GENESIS, &fields("{\"a\":2}")));
        assert_ne!(a, chain(&[1; 32], &fields("{\"a\":1}")));
        assert_eq!(a, chain(&GENESIS, &fields("{\"a\":1}")));
    }

    #[test]
    fn fields_are_length_prefixed() {
        let mut x = fields("ab");
        x.metadata = "c";
        let mut y = fields("a");
        y.metadata = "bc";
        assert_ne!(chain(&GENESIS, &x), chain(&GENESIS, &y));
    }
}

//! Domain events to stored rows and back, sealing personal data on the way
//! in and opening it (or reading it as erased) on the way out.

use std::collections::HashMap;

use admit_domain::event::{current_schema_version, PERSONAL_FIELD};
use admit_domain::ids::{AccountId, InvitationId, UserId};
use admit_domain::personal::Personal;
use admit_domain::Event;
use admit_ledger::personal::PersonKey;
use admit_ledger::{NewEvent, RecordedEvent};
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::{ProjectionError, Result};

/// A decoded event with what the log recorded around it.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// Event id.
    pub event_id: Uuid,
    /// Version in its stream.
    pub stream_version: i64,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
    /// Who caused it, as recorded in the metadata.
    pub actor: Option<String>,
    /// The event itself.
    pub event: Event,
}

/// Encodes and decodes events. Stateless: keys are passed in.
#[derive(Debug, Clone, Copy, Default)]
pub struct Codec;

impl Codec {
    /// The stored form of `event`; its personal data sealed with `key`.
    pub fn encode(event: &Event, event_id: Uuid, key: Option<&PersonKey>) -> NewEvent {
        let mut payload = event.payload();
        if let (Some(person), Some(key), Value::Object(map)) = (event.person(), key, &mut payload) {
            if let Some(personal) = map.get(PERSONAL_FIELD) {
                let clear = serde_json::to_vec(personal).unwrap_or_default();
                map.insert(PERSONAL_FIELD.into(), serde_json::json!({ "sealed": key.seal(person.0, &clear) }));
            }
        }
        NewEvent {
            event_id,
            event_type: event.event_type().to_string(),
            schema_version: current_schema_version(event.event_type()),
            payload: payload.to_string(),
        }
    }

    /// The people whose keys are needed to open these events.
    pub fn people(events: &[RecordedEvent]) -> Vec<Uuid> {
        Sealed::locate(events).people()
    }

    /// Decodes a stored event; personal data whose key is gone reads as
    /// [`Personal::Erased`].
    pub fn decode(event: &RecordedEvent, keys: &HashMap<Uuid, PersonKey>) -> Result<Envelope> {
        Codec::decode_located(event, &Located::of(event), keys)
    }

    /// [`Codec::decode`] of an event whose sealed data was located before.
    fn decode_located(
        event: &RecordedEvent,
        located: &Located<'_>,
        keys: &HashMap<Uuid, PersonKey>,
    ) -> Result<Envelope> {
        let fast = match located {
            Located::Plain => Codec::decode_plain(event),
            Located::Part(part) => Codec::decode_sealed(event, part, keys),
            Located::Other(_) => None,
        };
        if let Some(decoded) = fast {
            return Ok(Envelope {
                event_id: event.event_id,
                stream_version: event.stream_version,
                recorded_at: event.recorded_at,
                actor: event.metadata.actor.clone(),
                event: decoded,
            });
        }
        let fail = |reason: String| ProjectionError::Decode { event_id: event.event_id, reason };
        let mut payload: Value = serde_json::from_str(&event.payload).map_err(|e| fail(e.to_string()))?;
        if let Value::Object(map) = &mut payload {
            let sealed = map.get(PERSONAL_FIELD).and_then(|p| p.get("sealed")).and_then(Value::as_str);
            if let Some(sealed) = sealed {
                let person = map.get("person_id").and_then(Value::as_str).and_then(|s| s.parse::<Uuid>().ok());
                let opened = person
                    .and_then(|p| keys.get(&p).and_then(|k| k.open(p, sealed)))
                    .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
                    .unwrap_or_else(|| serde_json::to_value(Personal::Erased).unwrap_or(Value::Null));
                map.insert(PERSONAL_FIELD.into(), opened);
            }
        }
        let decoded = Event::decode(&event.stream_id, &event.event_type, event.schema_version, payload)
            .map_err(|e| fail(e.to_string()))?;
        Ok(Envelope {
            event_id: event.event_id,
            stream_version: event.stream_version,
            recorded_at: event.recorded_at,
            actor: event.metadata.actor.clone(),
            event: decoded,
        })
    }

    /// The fast path of [`Codec::decode`] for the common case (no sealed
    /// data, as [`Located::Plain`] says; current schema version): the
    /// payload text is deserialised straight into the event type, without
    /// a JSON tree in between. None when the event needs the general path
    /// (which also reports errors).
    fn decode_plain(event: &RecordedEvent) -> Option<Event> {
        if event.schema_version != current_schema_version(&event.event_type) {
            return None;
        }
        Codec::decode_text(&event.stream_id, &event.event_type, &event.payload)
    }

    /// A current-version payload without sealed data, deserialised straight
    /// into the event type of its stream.
    fn decode_text(stream_id: &str, event_type: &str, payload: &str) -> Option<Event> {
        let (kind, id) = stream_id.split_once('-')?;
        let id = Uuid::parse_str(id).ok()?;
        Some(match kind {
            "account" => Event::Account(AccountId(id), tagged(event_type, payload)?),
            "invitation" => Event::Invitation(InvitationId(id), tagged(event_type, payload)?),
            "user" => Event::User(UserId(id), tagged(event_type, payload)?),
            _ => return None,
        })
    }

    /// The fast path of [`Codec::decode`] for sealed events of the current
    /// schema version: the sealed text, found by [`Sealed::locate`] with a
    /// borrowing parse that builds no JSON tree, is opened, and the clear
    /// personal data put in its place in the payload text, which is then
    /// deserialised like a plain one. None when the event needs the
    /// general path.
    fn decode_sealed(event: &RecordedEvent, part: &SealedPart<'_>, keys: &HashMap<Uuid, PersonKey>) -> Option<Event> {
        if event.schema_version != current_schema_version(&event.event_type) {
            return None;
        }
        let clear = match keys.get(&part.person_id).and_then(|k| k.open(part.person_id, part.personal.sealed)) {
            Some(bytes) => String::from_utf8(bytes).ok()?,
            None => serde_json::to_string(&Personal::Erased).ok()?,
        };
        // `{"sealed":"<url-safe base64>"}` exactly as `encode` wrote it,
        // around the sealed text the borrowing parse found in the payload.
        let text = part.personal.sealed;
        let inner = (text.as_ptr() as usize).checked_sub(event.payload.as_ptr() as usize)?;
        let (open, close) = ("{\"sealed\":\"", "\"}");
        let at = inner.checked_sub(open.len())?;
        let end = inner + text.len() + close.len();
        if event.payload.get(at..inner)? != open || event.payload.get(inner + text.len()..end)? != close {
            return None;
        }
        let mut payload = String::with_capacity(event.payload.len() + clear.len());
        payload.push_str(&event.payload[..at]);
        payload.push_str(&clear);
        payload.push_str(&event.payload[end..]);
        Codec::decode_text(&event.stream_id, &event.event_type, &payload)
    }

    /// Decodes a batch, fetching the keys it needs from `db`.
    pub async fn decode_all(db: &admit_ledger::Database, events: &[RecordedEvent]) -> Result<Vec<Envelope>> {
        let sealed = Sealed::locate(events);
        let keys = db.person_keys(&sealed.people()).await?;
        Codec::decode_located_batch(events, &sealed, &keys)
    }

    /// Decodes a batch inside a transaction.
    pub async fn decode_all_in(tx: &mut admit_ledger::Tx, events: &[RecordedEvent]) -> Result<Vec<Envelope>> {
        let sealed = Sealed::locate(events);
        let keys = tx.person_keys(&sealed.people()).await?;
        Codec::decode_located_batch(events, &sealed, &keys)
    }

    /// Decodes a batch with the keys already fetched for it. The output is
    /// sized up front: collecting through `Result` would grow the vector
    /// (and copy every envelope) a dozen times per batch.
    pub fn decode_batch(events: &[RecordedEvent], keys: &HashMap<Uuid, PersonKey>) -> Result<Vec<Envelope>> {
        Codec::decode_located_batch(events, &Sealed::locate(events), keys)
    }

    /// [`Codec::decode_batch`] with the batch's sealed data located before
    /// (by the caller that found the keys with it).
    pub fn decode_located_batch(
        events: &[RecordedEvent],
        sealed: &Sealed<'_>,
        keys: &HashMap<Uuid, PersonKey>,
    ) -> Result<Vec<Envelope>> {
        let mut out = Vec::with_capacity(events.len());
        for (event, located) in events.iter().zip(&sealed.events) {
            out.push(Codec::decode_located(event, located, keys)?);
        }
        Ok(out)
    }
}

/// A batch's sealed personal data, located once: which events carry it,
/// whose it is and where its sealed text sits. Finding the keys a batch
/// needs and opening its events both use it, so a sealed payload is
/// searched for its sealed text once, not once for each.
#[derive(Debug)]
pub struct Sealed<'a> {
    /// Per event of the batch, in order.
    events: Vec<Located<'a>>,
}

impl<'a> Sealed<'a> {
    /// Locates the sealed data of every event of `events`.
    pub fn locate(events: &'a [RecordedEvent]) -> Sealed<'a> {
        Sealed { events: events.iter().map(Located::of).collect() }
    }

    /// The people whose keys are needed to open the batch, sorted.
    pub fn people(&self) -> Vec<Uuid> {
        let mut out: Vec<Uuid> = self
            .events
            .iter()
            .filter_map(|l| match l {
                Located::Plain => None,
                Located::Part(part) => Some(part.person_id),
                Located::Other(person) => *person,
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// Where one event's sealed data is.
#[derive(Debug)]
enum Located<'a> {
    /// No sealed data in the payload.
    Plain,
    /// Sealed data in the shape `encode` writes, found without a JSON tree.
    Part(SealedPart<'a>),
    /// Sealed data in another shape (an older schema version, or a payload
    /// the fast parse refused), and whose it is if the payload says: the
    /// general path of [`Codec::decode`] opens it.
    Other(Option<Uuid>),
}

impl<'a> Located<'a> {
    fn of(event: &'a RecordedEvent) -> Located<'a> {
        if !event.payload.contains("\"sealed\"") {
            return Located::Plain;
        }
        match sealed_part(&event.payload) {
            Some(part) => Located::Part(part),
            None => Located::Other(
                serde_json::from_str::<Value>(&event.payload)
                    .ok()
                    .and_then(|v| v.get("person_id")?.as_str()?.parse().ok()),
            ),
        }
    }
}

/// An event of an adjacently tagged enum (`{"type": .., "data": ..}`, as
/// the domain's event enums are) from its type and its payload's text,
/// without writing that wrapper out: serde is handed a map whose `type`
/// is `event_type` and whose `data` is read straight from `payload`.
fn tagged<T: serde::de::DeserializeOwned>(event_type: &str, payload: &str) -> Option<T> {
    use serde::de::value::{MapAccessDeserializer, StrDeserializer};
    use serde::de::{DeserializeSeed, MapAccess};

    struct Tagged<'a, 'p> {
        event_type: &'a str,
        payload: &'a mut serde_json::Deserializer<serde_json::de::StrRead<'p>>,
        /// Entries handed out so far (0: none, 1: the type, 2: both).
        given: u8,
    }

    impl<'de> MapAccess<'de> for Tagged<'_, 'de> {
        type Error = serde_json::Error;

        fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> serde_json::Result<Option<K::Value>> {
            let key = match self.given {
                0 => "type",
                1 => "data",
                _ => return Ok(None),
            };
            seed.deserialize(StrDeserializer::<serde_json::Error>::new(key)).map(Some)
        }

        fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> serde_json::Result<V::Value> {
            self.given += 1;
            match self.given {
                1 => seed.deserialize(StrDeserializer::<serde_json::Error>::new(self.event_type)),
                _ => seed.deserialize(&mut *self.payload),
            }
        }
    }

    let mut de = serde_json::Deserializer::from_str(payload);
    let event = T::deserialize(MapAccessDeserializer::new(Tagged { event_type, payload: &mut de, given: 0 })).ok()?;
    de.end().ok()?;
    Some(event)
}

/// The sealed personal data of a payload and whose it is, read without
/// building a JSON tree (every other field is skipped).
#[derive(Debug, serde::Deserialize)]
struct SealedPart<'a> {
    person_id: Uuid,
    #[serde(borrow)]
    personal: SealedText<'a>,
}

#[derive(Debug, serde::Deserialize)]
struct SealedText<'a> {
    sealed: &'a str,
}

fn sealed_part(payload: &str) -> Option<SealedPart<'_>> {
    serde_json::from_str(payload).ok()
}

//! Property-based fuzzing of stored events on their way out of the log:
//! rows whose payload text, type, schema version, stream or sealed personal
//! data were damaged never panic the decoder; they decode (to an event that
//! re-encodes consistently) or fail with a decode error naming the event.
//! `PROPTEST_CASES=100000 cargo nextest run -p admit-projections -E
//! 'binary(fuzz)'` is the long run (README "Fuzzing").

use std::collections::HashMap;

use admit_domain::event::{Event, EVENT_TYPES};
use admit_domain::personal::Personal;
use admit_ledger::log::Metadata;
use admit_ledger::personal::PersonKey;
use admit_ledger::RecordedEvent;
use admit_projections::{Codec, ProjectionError};
use proptest::prelude::*;
use uuid::Uuid;

/// `ci_cases` cases, unless `PROPTEST_CASES` asks for another number.
fn config(ci_cases: u32) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = ci_cases;
    }
    config
}

/// Every documented event (docs/events.md examples), decoded.
fn documented_events() -> Vec<Event> {
    let doc = include_str!("../../docs/events.md");
    doc.split("\n### ")
        .skip(1)
        .map(|section| {
            let name = section.lines().next().unwrap().trim();
            let kind = section.split("Stream: `").nth(1).and_then(|s| s.split('-').next()).unwrap();
            let json = section.split("```json").nth(1).and_then(|r| r.split("```").next()).unwrap();
            let stream = format!("{kind}-{}", Uuid::from_u128(7));
            Event::decode(&stream, name, 1, serde_json::from_str(json).unwrap()).unwrap()
        })
        .collect()
}

/// The stored row of `event`, its personal data sealed with `key`.
fn stored(event: &Event, key: &PersonKey) -> RecordedEvent {
    let new = Codec::encode(event, Uuid::from_u128(1), Some(key));
    RecordedEvent {
        position: 1,
        transaction_id: 0,
        event_id: new.event_id,
        stream_id: event.stream(),
        stream_version: 1,
        event_type: new.event_type,
        schema_version: new.schema_version,
        payload: new.payload,
        metadata: Metadata::default(),
        metadata_text: "{}".into(),
        recorded_at: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        hash: vec![0; 32],
    }
}

fn keys_of(event: &Event, key: &PersonKey) -> HashMap<Uuid, PersonKey> {
    event.person().map(|p| (p.0, key.clone())).into_iter().collect()
}

/// One change to a stored row.
#[derive(Debug, Clone)]
enum Damage {
    /// A character inserted into the payload text.
    Insert(prop::sample::Index, char),
    /// A character of the payload text deleted.
    Delete(prop::sample::Index),
    /// A character of the payload text replaced.
    Replace(prop::sample::Index, char),
    /// The payload text cut short.
    Truncate(prop::sample::Index),
    /// Another (maybe unknown) type name.
    Type(String),
    /// Another schema version.
    Version(i32),
    /// Another stream.
    Stream(String),
}

fn damage() -> impl Strategy<Value = Damage> {
    let c =
        prop_oneof![prop::sample::select(vec!['"', '{', '}', '[', ']', ',', ':', '0', 'a', '\\', ' ']), any::<char>()];
    let type_name = prop_oneof![prop::sample::select(EVENT_TYPES.to_vec()).prop_map(String::from), "[A-Za-z]{0,20}"];
    let stream = prop_oneof![
        (prop::sample::select(vec!["account", "invitation", "user", "other"]), any::<u128>())
            .prop_map(|(k, id)| format!("{k}-{}", Uuid::from_u128(id))),
        ".{0,40}",
    ];
    prop_oneof![
        4 => (any::<prop::sample::Index>(), c.clone()).prop_map(|(i, c)| Damage::Insert(i, c)),
        4 => any::<prop::sample::Index>().prop_map(Damage::Delete),
        4 => (any::<prop::sample::Index>(), c).prop_map(|(i, c)| Damage::Replace(i, c)),
        1 => any::<prop::sample::Index>().prop_map(Damage::Truncate),
        1 => type_name.prop_map(Damage::Type),
        1 => prop_oneof![Just(0), Just(2), any::<i32>()].prop_map(Damage::Version),
        1 => stream.prop_map(Damage::Stream),
    ]
}

fn apply(row: &mut RecordedEvent, damage: &Damage) {
    let mut chars: Vec<char> = row.payload.chars().collect();
    match damage {
        Damage::Insert(i, c) => chars.insert(i.index(chars.len() + 1), *c),
        Damage::Delete(i) if !chars.is_empty() => {
            chars.remove(i.index(chars.len()));
        }
        Damage::Replace(i, c) if !chars.is_empty() => {
            let at = i.index(chars.len());
            chars[at] = *c;
        }
        Damage::Truncate(i) if !chars.is_empty() => chars.truncate(i.index(chars.len())),
        Damage::Delete(_) | Damage::Replace(..) | Damage::Truncate(_) => {}
        Damage::Type(t) => row.event_type = t.clone(),
        Damage::Version(v) => row.schema_version = *v,
        Damage::Stream(s) => row.stream_id = s.clone(),
    }
    row.payload = chars.into_iter().collect();
}

#[test]
fn undamaged_rows_decode_to_the_event_and_erased_without_the_key() {
    let key = PersonKey::generate();
    for event in documented_events() {
        let row = stored(&event, &key);
        let decoded = Codec::decode(&row, &keys_of(&event, &key)).unwrap();
        assert_eq!(decoded.event, event);
        let erased = Codec::decode(&row, &HashMap::new()).unwrap();
        if event.person().is_some() {
            assert!(erased.event.payload()["personal"] == serde_json::json!(Personal::Erased), "{erased:?}");
        } else {
            assert_eq!(erased.event, event);
        }
    }
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn damaged_stored_events_never_panic(
        which in any::<prop::sample::Index>(),
        damages in prop::collection::vec(damage(), 1..4),
        with_key in any::<bool>(),
    ) {
        let events = documented_events();
        let event = &events[which.index(events.len())];
        let key = PersonKey::generate();
        let mut row = stored(event, &key);
        for d in &damages {
            apply(&mut row, d);
        }
        let keys = if with_key { keys_of(event, &key) } else { HashMap::new() };
        match Codec::decode(&row, &keys) {
            Ok(decoded) => {
                // What decoded is an event of the row's type and stream, and
                // its payload decodes to it again.
                prop_assert_eq!(decoded.event.event_type(), row.event_type.as_str());
                prop_assert_eq!(decoded.event.stream(), row.stream_id.clone());
                let again = Event::decode(&row.stream_id, &row.event_type, 1, decoded.event.payload());
                prop_assert_eq!(again, Ok(decoded.event));
            }
            Err(ProjectionError::Decode { event_id, .. }) => prop_assert_eq!(event_id, row.event_id),
            Err(other) => prop_assert!(false, "unexpected {other:?}"),
        }
    }

    #[test]
    fn truncated_payloads_are_refused(
        which in any::<prop::sample::Index>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let events = documented_events();
        let event = &events[which.index(events.len())];
        let key = PersonKey::generate();
        let mut row = stored(event, &key);
        let chars: Vec<char> = row.payload.chars().collect();
        row.payload = chars[..cut.index(chars.len())].iter().collect();
        let decoded = Codec::decode(&row, &keys_of(event, &key));
        prop_assert!(matches!(decoded, Err(ProjectionError::Decode { .. })), "{:?} decoded from {}", decoded, row.payload);
    }
}

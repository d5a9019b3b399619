//! Stored events: any payload text under any event type and schema version
//! decodes or fails with `invalid_event` / `unknown_schema_version`, and what
//! decodes re-encodes to itself.
#![no_main]

use admit_domain::event::{Event, EVENT_TYPES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u8, u8, i32, &str)| {
    let (which, kind, version, payload) = input;
    let event_type = EVENT_TYPES[usize::from(which) % EVENT_TYPES.len()];
    let kind = ["account", "invitation", "user"][usize::from(kind) % 3];
    let stream = format!("{kind}-{}", uuid::Uuid::from_u128(7));
    let Ok(payload) = serde_json::from_str(payload) else { return };
    match Event::decode(&stream, event_type, version, payload) {
        Ok(event) => assert_eq!(Event::decode(&stream, event_type, version, event.payload()), Ok(event)),
        Err(e) => assert!(matches!(e.code(), "invalid_event" | "unknown_schema_version"), "{e:?}"),
    }
});

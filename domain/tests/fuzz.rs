//! Property-based fuzzing of the domain's parsers: email addresses, link
//! tokens and stored events (decoding and upcasting). Each property runs a
//! modest number of cases in CI; `PROPTEST_CASES=100000 cargo nextest run
//! -p admit-domain -E 'binary(fuzz)'` is the long run (README "Fuzzing").

use admit_domain::event::{Event, EVENT_TYPES};
use admit_domain::token::{InvitationToken, LinkKey, LinkNonce};
use admit_domain::values::EmailAddress;
use admit_domain::DomainError;
use proptest::prelude::*;
use serde_json::Value;

/// `ci_cases` cases, unless `PROPTEST_CASES` asks for another number.
fn config(ci_cases: u32) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = ci_cases;
    }
    config
}

// ---------------------------------------------------------------------------
// Email addresses
// ---------------------------------------------------------------------------

/// Near-valid addresses: ASCII and non-ASCII local parts and domains, mixed
/// case, stray dots, hyphens, digits, surrounding whitespace.
fn near_valid_email() -> impl Strategy<Value = String> {
    let local = "[A-Za-z0-9._%+'=~-]{0,70}|[a-zA-ZäöüßÉİıΣσçğ.ñ0-9]{1,20}|\"[a-z ]{1,8}\"";
    let label = "[A-Za-z0-9-]{0,65}|[a-zäöüéİΣ0-9-]{1,12}|xn--[a-z0-9-]{1,12}|[0-9]{1,3}";
    let domain = prop::collection::vec(proptest::string::string_regex(label).unwrap(), 1..5).prop_map(|l| l.join("."));
    let space = "[ \t]{0,2}";
    (space, proptest::string::string_regex(local).unwrap(), "@{1,2}", domain, space)
        .prop_map(|(a, l, at, d, b)| format!("{a}{l}{at}{d}{b}"))
}

/// A character that must never end up inside an accepted address.
fn line_break_or_nul() -> impl Strategy<Value = char> {
    prop::sample::select(vec!['\r', '\n', '\0', '\u{2028}', '\u{2029}', '\u{85}'])
}

fn accepted_is_normal(input: &str) -> Result<(), TestCaseError> {
    if let Ok(email) = EmailAddress::parse(input) {
        let normal = email.as_str();
        prop_assert!(!normal.contains(['\r', '\n', '\0']), "{input:?} -> {normal:?}");
        prop_assert_eq!(normal.trim(), normal);
        prop_assert!(normal.len() <= EmailAddress::MAX_LEN);
        prop_assert_eq!(normal.matches('@').count(), 1);
        let again = EmailAddress::parse(normal);
        prop_assert_eq!(again.as_ref().map(EmailAddress::as_str), Ok(normal), "parsing {:?} again", normal);
        prop_assert!(email.domain().is_ascii(), "domain in IDNA ASCII form: {normal:?}");
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn email_parse_never_panics_and_normalises_idempotently(input in any::<String>()) {
        accepted_is_normal(&input)?;
    }

    #[test]
    fn near_valid_emails_normalise_idempotently(input in near_valid_email()) {
        accepted_is_normal(&input)?;
    }

    #[test]
    fn emails_with_a_line_break_or_nul_inside_are_refused(
        input in near_valid_email(),
        bad in line_break_or_nul(),
        at in any::<prop::sample::Index>(),
    ) {
        let trimmed = input.trim();
        let cuts: Vec<usize> = trimmed.char_indices().map(|(i, _)| i).filter(|&i| i > 0).collect();
        prop_assume!(!cuts.is_empty());
        let cut = cuts[at.index(cuts.len())];
        let poisoned = format!("{}{bad}{}", &trimmed[..cut], &trimmed[cut..]);
        let refused = EmailAddress::parse(&poisoned);
        prop_assert!(
            matches!(refused, Err(DomainError::Invalid { code: "invalid_email", .. })),
            "{poisoned:?} was accepted as {refused:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Link tokens
// ---------------------------------------------------------------------------

fn key() -> LinkKey {
    LinkKey::from_bytes([42; 32])
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn arbitrary_strings_never_verify(input in any::<String>()) {
        if let Ok(parsed) = InvitationToken::parse(&input) {
            prop_assert!(!parsed.verify(&key()));
        }
    }

    #[test]
    fn token_shaped_strings_never_verify(input in "[ ]{0,1}[A-Za-z0-9_-]{62,66}[ \n]{0,1}") {
        match InvitationToken::parse(&input) {
            Ok(parsed) => prop_assert!(!parsed.verify(&key()) && !parsed.matches(&key(), &parsed.nonce)),
            Err(e) => prop_assert_eq!(e.code(), "invalid_token"),
        }
    }

    #[test]
    fn a_one_character_mutation_of_a_real_token_never_verifies(
        id in any::<[u8; 16]>(),
        nonce in any::<[u8; 16]>(),
        at in 0..admit_domain::token::TOKEN_CHARS,
        replacement in any::<char>(),
    ) {
        let nonce = LinkNonce::from_bytes(nonce);
        let token = InvitationToken::issue(&key(), uuid::Uuid::from_bytes(id), &nonce);
        let original: Vec<char> = token.as_str().chars().collect();
        prop_assume!(original[at] != replacement);
        let mut mutated = original.clone();
        mutated[at] = replacement;
        let mutated: String = mutated.into_iter().collect();
        match InvitationToken::parse(&mutated) {
            Ok(parsed) => {
                prop_assert!(!parsed.verify(&key()), "{mutated} verifies");
                prop_assert!(!parsed.matches(&key(), &nonce), "{mutated} matches");
            }
            Err(e) => prop_assert_eq!(e.code(), "invalid_token"),
        }
        // The genuine token still verifies.
        prop_assert!(InvitationToken::parse(token.as_str()).unwrap().matches(&key(), &nonce));
    }
}

// ---------------------------------------------------------------------------
// Stored events: decoding and upcasting
// ---------------------------------------------------------------------------

/// The example payload of every event type in docs/events.md, with a
/// stream of its kind.
fn documented_events() -> Vec<(String, String, Value)> {
    let doc = include_str!("../../docs/events.md");
    doc.split("\n### ")
        .skip(1)
        .map(|section| {
            let name = section.lines().next().unwrap().trim().to_string();
            let kind = section.split("Stream: `").nth(1).and_then(|s| s.split('-').next()).unwrap();
            let json = section.split("```json").nth(1).and_then(|r| r.split("```").next()).unwrap();
            (format!("{kind}-{}", uuid::Uuid::from_u128(7)), name, serde_json::from_str(json).unwrap())
        })
        .collect()
}

/// Arbitrary JSON, a few levels deep.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        Just(Value::String("erased".into())),
        Just(Value::String(uuid::Uuid::from_u128(9).to_string())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// One change to a documented payload: a field removed, replaced by
/// arbitrary JSON, or added.
#[derive(Debug, Clone)]
enum Mutation {
    Remove(prop::sample::Index),
    Replace(prop::sample::Index, Value),
    Add(String, Value),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<prop::sample::Index>().prop_map(Mutation::Remove),
        (any::<prop::sample::Index>(), json()).prop_map(|(i, v)| Mutation::Replace(i, v)),
        ("[a-z_]{1,12}", json()).prop_map(|(k, v)| Mutation::Add(k, v)),
    ]
}

/// Every object of a JSON tree, as JSON pointers.
fn object_pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            out.push(at.clone());
            for (k, v) in map {
                object_pointers(v, format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                object_pointers(v, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn apply(payload: &mut Value, mutation: &Mutation, target: prop::sample::Index) {
    let mut objects = Vec::new();
    object_pointers(payload, String::new(), &mut objects);
    let Some(pointer) = (!objects.is_empty()).then(|| objects[target.index(objects.len())].clone()) else {
        return;
    };
    let Some(Value::Object(map)) = payload.pointer_mut(&pointer) else { return };
    let keys: Vec<String> = map.keys().cloned().collect();
    match mutation {
        Mutation::Remove(i) if !keys.is_empty() => {
            map.remove(&keys[i.index(keys.len())]);
        }
        Mutation::Replace(i, v) if !keys.is_empty() => {
            map.insert(keys[i.index(keys.len())].clone(), v.clone());
        }
        Mutation::Add(k, v) => {
            map.insert(k.clone(), v.clone());
        }
        _ => {}
    }
}

/// What a decode may answer: an event, or the stable decode errors.
fn decoded_or_refused(result: &Result<Event, DomainError>) -> Result<(), TestCaseError> {
    if let Err(e) = result {
        prop_assert!(matches!(e.code(), "invalid_event" | "unknown_schema_version"), "{e:?}");
    }
    Ok(())
}

#[test]
fn every_documented_example_decodes() {
    for (stream, event_type, payload) in documented_events() {
        let event = Event::decode(&stream, &event_type, 1, payload.clone());
        let event = event.unwrap_or_else(|e| panic!("{event_type}: {e}"));
        assert_eq!(event.event_type(), event_type);
    }
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn arbitrary_json_never_panics_and_decodes_consistently(
        which in any::<prop::sample::Index>(),
        payload in json(),
        version in prop_oneof![Just(1), any::<i32>()],
    ) {
        let (stream, event_type, _) = documented_events().swap_remove(which.index(EVENT_TYPES.len()));
        let result = Event::decode(&stream, &event_type, version, payload);
        decoded_or_refused(&result)?;
        if version != 1 {
            prop_assert_eq!(result.unwrap_err().code(), "unknown_schema_version");
        } else if let Ok(event) = result {
            // Whatever decoded, re-encodes to a payload that decodes to it.
            prop_assert_eq!(Event::decode(&stream, &event_type, 1, event.payload()), Ok(event));
        }
    }

    #[test]
    fn mutated_stored_events_never_panic(
        which in any::<prop::sample::Index>(),
        mutations in prop::collection::vec((mutation(), any::<prop::sample::Index>()), 1..4),
    ) {
        let (stream, event_type, mut payload) = documented_events().swap_remove(which.index(EVENT_TYPES.len()));
        for (m, target) in &mutations {
            apply(&mut payload, m, *target);
        }
        let result = Event::decode(&stream, &event_type, 1, payload);
        decoded_or_refused(&result)?;
        if let Ok(event) = result {
            prop_assert_eq!(Event::decode(&stream, &event_type, 1, event.payload()), Ok(event));
        }
    }

    #[test]
    fn unknown_types_streams_and_versions_are_refused(
        which in any::<prop::sample::Index>(),
        event_type in "[A-Za-z]{0,24}",
        stream in ".{0,50}",
        version in any::<i32>(),
    ) {
        let (good_stream, good_type, payload) = documented_events().swap_remove(which.index(EVENT_TYPES.len()));
        prop_assume!(!EVENT_TYPES.contains(&event_type.as_str()));
        let result = Event::decode(&good_stream, &event_type, 1, payload.clone());
        prop_assert_eq!(result.unwrap_err().code(), "invalid_event");
        if version != 1 {
            let result = Event::decode(&good_stream, &good_type, version, payload.clone());
            prop_assert_eq!(result.unwrap_err().code(), "unknown_schema_version");
        }
        let kind_matches = stream.split_once('-').is_some_and(|(k, id)| {
            good_stream.starts_with(k) && ["account", "invitation", "user"].contains(&k) && uuid::Uuid::parse_str(id).is_ok()
        });
        let result = Event::decode(&stream, &good_type, 1, payload);
        if !kind_matches {
            prop_assert!(result.is_err(), "{stream:?} decoded");
        }
    }
}

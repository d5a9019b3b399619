//! `docs/events.md` documents every event type, each with a JSON example
//! and its schema version.

#[test]
fn the_event_document_covers_every_event_type() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/events.md")).unwrap();
    let sections: Vec<&str> = doc.split("\n### ").skip(1).collect();
    let documented: std::collections::BTreeSet<&str> =
        sections.iter().map(|s| s.lines().next().unwrap().trim()).collect();
    let types: std::collections::BTreeSet<&str> = admit_domain::event::EVENT_TYPES.iter().copied().collect();
    assert_eq!(documented, types, "docs/events.md and the event types differ");
    for section in sections {
        let name = section.lines().next().unwrap();
        assert!(section.contains("schema version 1"), "{name}: no schema version");
        let json = section
            .split("```json")
            .nth(1)
            .and_then(|r| r.split("```").next())
            .unwrap_or_else(|| panic!("{name}: no example"));
        serde_json::from_str::<serde_json::Value>(json).unwrap_or_else(|e| panic!("{name}: example is not JSON: {e}"));
    }
}

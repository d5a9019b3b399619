//! The CSV reader of bulk uploads: never panics, errors name a line of the
//! text, records come in line order and are never blank.
#![no_main]

use admit_api::http::csv;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let lines = text.matches(['\n', '\r']).count() + 1;
    match csv::read(text, 100) {
        Err(e) => assert!(e.line >= 1 && e.line <= lines, "{e}"),
        Ok(Some((_, records))) => {
            for r in &records {
                assert!(r.line >= 1 && r.line <= lines);
                assert!(r.fields.iter().any(|f| !f.trim().is_empty()));
            }
        }
        Ok(None) => {}
    }
});

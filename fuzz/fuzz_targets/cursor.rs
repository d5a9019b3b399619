//! List cursors: any text decodes to a time the databases store (years 1 to
//! 9999) or is refused as 400 `invalid_cursor`, never panics.
#![no_main]

use admit_api::http::audit::decode_position_cursor;
use admit_api::http::invitations::decode_cursor;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|cursor: &str| {
    match decode_cursor(cursor) {
        Ok((at, _)) => assert!((1..=9999).contains(&chrono::Datelike::year(&at))),
        Err(e) => assert_eq!((e.code(), e.status().as_u16()), ("invalid_cursor", 400)),
    }
    match decode_position_cursor(cursor) {
        Ok(position) => assert!(position >= 0),
        Err(e) => assert_eq!((e.code(), e.status().as_u16()), ("invalid_cursor", 400)),
    }
});

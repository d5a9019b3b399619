//! Link tokens: any text parses or is `invalid_token`, never panics, and
//! never verifies under the server key (forging needs the key).
#![no_main]

use admit_domain::token::{InvitationToken, LinkKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &str| {
    match InvitationToken::parse(input) {
        Ok(parsed) => assert!(!parsed.verify(&LinkKey::from_bytes([42; 32]))),
        Err(e) => assert_eq!(e.code(), "invalid_token"),
    }
});

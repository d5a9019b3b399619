//! Email parsing: never panics; an accepted address is normalised (no
//! line break or NUL) and parses to itself.
#![no_main]

use admit_domain::values::EmailAddress;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &str| {
    if let Ok(email) = EmailAddress::parse(input) {
        assert!(!email.as_str().contains(['\r', '\n', '\0']));
        assert_eq!(EmailAddress::parse(email.as_str()).as_ref(), Ok(&email));
    }
});

//! The configurable password policy.
//!
//! The product brief makes the policy configurable: the default follows
//! NIST SP 800-63B-4 for password-only login (length, not composition; a
//! blocklist of common passwords; strength feedback), and a legacy mode
//! reproduces the seed products' "6+ characters with upper, lower, digit and
//! symbol" rule for operators who must keep it.
//!
//! This module only judges a candidate; hashing is the caller's job. Callers
//! should hash [`normalize`]`(candidate)` so that the same password typed on
//! keyboards producing different Unicode forms verifies.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;
use zxcvbn::matching::patterns::{DictionaryPattern, MatchPattern};

use crate::error::DomainError;

/// The error field every password error points at.
const FIELD: &str = "password";

/// Shortest password the NIST policy accepts (SP 800-63B-4: 15 for
/// single-factor passwords).
pub const NIST_MIN_CHARS: usize = 15;
/// Longest password either policy accepts. NIST requires allowing at least
/// 64; the cap bounds hashing cost and the work done here.
pub const MAX_CHARS: usize = 128;
/// Shortest password the legacy policy accepts.
pub const LEGACY_MIN_CHARS: usize = 6;
/// Shortest personal-data input (name, email local part, ...) that is looked
/// for inside a password; shorter ones match by accident too often.
pub const MIN_PERSONAL_INPUT_CHARS: usize = 4;

/// Well-known common passwords of 15 characters or more, refused by the NIST
/// policy in addition to zxcvbn's bundled dictionary (which mostly holds
/// shorter ones, and whose long entries are not always reported as a single
/// match). Compared after NFC and lower-casing. Passwords made of one
/// repeated character are refused by rule, not listed here.
pub const COMMON_LONG_PASSWORDS: &[&str] = &[
    "passwordpassword",
    "password12345678",
    "password123456789",
    "password1234567890",
    "passwordpassword123",
    "p@ssw0rdp@ssw0rd",
    "passw0rdpassw0rd",
    "mypasswordispassword",
    "changemechangeme",
    "administrator123",
    "welcome123456789",
    "iloveyouiloveyou",
    "iloveyou12345678",
    "iloveyou123456789",
    "trustno1trustno1",
    "princessprincess",
    "sunshinesunshine",
    "baseballbaseball",
    "footballfootball",
    "testtesttesttest",
    "adminadminadmin",
    "letmeinletmeinletmein",
    "qwertyqwertyqwerty",
    "thequickbrownfox",
    "thequickbrownfoxjumpsoverthelazydog",
    "correcthorsebatterystaple",
    "supercalifragilisticexpialidocious",
    "123456789012345",
    "1234567890123456",
    "12345678901234567890",
    "1234567812345678",
    "1234567887654321",
    "123456789987654321",
    "12345678987654321",
    "1234567890987654321",
    "12345678900987654321",
    "111222333444555",
    "abcdefghijklmno",
    "abcdefghijklmnop",
    "abcdefghijklmnopqrstuvwxyz",
    "abcd1234abcd1234",
    "a1b2c3d4e5f6g7h8",
    "asdfasdfasdfasdf",
    "qwerqwerqwerqwer",
    "qwertyuiopasdfgh",
    "qwertyuiopasdfghjkl",
    "qwertyuiopasdfghjklzxcvbnm",
    "qwertyuiop123456",
    "qwertyuiop12345",
    "qwertyuiop1234567890",
    "qwerty123456789",
    "123456789qwerty",
    "1234567890qwerty",
    "zxcvbnm123456789",
    "qwertasdfgzxcvb",
    "1234qwerasdfzxcv",
    "1q2w3e4r5t6y7u8i",
    "1q2w3e4r5t6y7u8i9o0p",
    "q1w2e3r4t5y6u7i8",
    "q1w2e3r4t5y6u7i8o9p0",
    "1qaz2wsx3edc4rfv",
    "1qaz2wsx3edc4rfv5tgb",
    "!qaz@wsx#edc$rfv",
    "!qaz2wsx#edc4rfv",
    "zaq12wsxcde34rfv",
    "zaq1xsw2cde3vfr4",
    "1qazxsw23edcvfr4",
    "qazwsxedcrfvtgb",
    "qazwsxedcrfvtgbyhn",
];

/// The Unicode form passwords are judged and should be hashed in (NFC).
///
/// Exists so that the policy's length count and the stored hash agree on one
/// form: the same password typed as precomposed `é` or as `e` + combining
/// accent must count the same and verify the same.
pub fn normalize(candidate: &str) -> String {
    candidate.nfc().collect()
}

/// Which password rules an installation enforces.
///
/// Exists because the product must offer both the modern NIST rule (the
/// default) and the seed products' composition rule for operators who are
/// contractually stuck with it. Configured as `"nist"` or `"legacy"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PasswordPolicy {
    /// NIST SP 800-63B-4 for password-only login: 15..=128 characters, any
    /// printable Unicode including spaces, no composition rules, common
    /// passwords and passwords made mostly of the user's own data refused.
    #[default]
    Nist,
    /// The seed products' rule: 6..=128 characters with at least one
    /// upper-case letter, one lower-case letter, one digit and one symbol.
    Legacy,
}

/// Feedback on a password that the policy accepted.
///
/// Exists so the accept page can show how strong the chosen password is (the
/// NIST guidance asks for strength feedback) without the UI depending on
/// zxcvbn itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordStrength {
    /// zxcvbn's score, 0 (trivially guessable) ..= 4 (very unguessable).
    pub score: u8,
    /// What makes the password weak, if zxcvbn found something (only for
    /// scores <= 2).
    pub warning: Option<String>,
    /// How to make it stronger (only for scores <= 2).
    pub suggestions: Vec<String>,
}

impl PasswordPolicy {
    /// Checks `candidate` against this policy.
    ///
    /// `user_inputs` are facts about the user (name, email, email local
    /// part, account name, ...): the NIST policy refuses a password that
    /// consists mostly of them, and both policies feed them to zxcvbn for the
    /// strength score. The candidate is not trimmed: spaces are legitimate
    /// password characters.
    ///
    /// Errors have field `password` and one of the codes
    /// `password_too_short`, `password_too_long`, `password_common`,
    /// `password_contains_personal_data` (NIST) or `password_composition`,
    /// `password_too_long` (legacy).
    pub fn check(&self, candidate: &str, user_inputs: &[&str]) -> Result<PasswordStrength, DomainError> {
        // Refuse absurd inputs before normalising them (NFC can grow a string
        // by a small factor only; 4 bytes per char is the UTF-8 maximum).
        if candidate.len() > MAX_CHARS * 4 * 4 {
            return Err(too_long());
        }
        let password = normalize(candidate);
        let chars = password.chars().count();
        if chars > MAX_CHARS {
            return Err(too_long());
        }
        match self {
            PasswordPolicy::Nist => {
                if chars < NIST_MIN_CHARS {
                    return Err(DomainError::invalid(
                        FIELD,
                        "password_too_short",
                        format!("must be at least {NIST_MIN_CHARS} characters long"),
                    ));
                }
                if is_common(&password) {
                    return Err(DomainError::invalid(
                        FIELD,
                        "password_common",
                        "is a commonly used password; choose a less predictable one",
                    ));
                }
                if is_mostly_personal_data(&password, user_inputs) {
                    return Err(DomainError::invalid(
                        FIELD,
                        "password_contains_personal_data",
                        "consists mostly of your name or email address",
                    ));
                }
            }
            PasswordPolicy::Legacy => {
                if chars < LEGACY_MIN_CHARS || !has_legacy_composition(&password) {
                    return Err(DomainError::invalid(
                        FIELD,
                        "password_composition",
                        format!(
                            "must be at least {LEGACY_MIN_CHARS} characters long and contain \
                             an upper-case letter, a lower-case letter, a digit and a symbol"
                        ),
                    ));
                }
            }
        }
        Ok(strength(&password, user_inputs))
    }

    /// A one-sentence, human statement of the policy, shown on the accept
    /// page next to the password field.
    pub fn describe(&self) -> &'static str {
        match self {
            PasswordPolicy::Nist => {
                "Use at least 15 characters (up to 128); any characters, including spaces, \
                 are allowed, but common passwords and passwords made from your name or \
                 email address are refused."
            }
            PasswordPolicy::Legacy => {
                "Use 6 to 128 characters, including at least one upper-case letter, \
                 one lower-case letter, one digit and one symbol."
            }
        }
    }

    /// The configuration spelling of the policy (`nist` / `legacy`).
    pub fn as_str(&self) -> &'static str {
        match self {
            PasswordPolicy::Nist => "nist",
            PasswordPolicy::Legacy => "legacy",
        }
    }
}

impl fmt::Display for PasswordPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PasswordPolicy {
    type Err = DomainError;

    /// Parses `nist` or `legacy` (trimmed, ASCII case-insensitive), e.g. from
    /// an environment variable.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "nist" => Ok(PasswordPolicy::Nist),
            "legacy" => Ok(PasswordPolicy::Legacy),
            _ => Err(DomainError::invalid(
                "password_policy",
                "invalid_password_policy",
                "must be \"nist\" or \"legacy\"",
            )),
        }
    }
}

fn too_long() -> DomainError {
    DomainError::invalid(FIELD, "password_too_long", format!("must be at most {MAX_CHARS} characters long"))
}

/// Whether the (NFC) password is on a blocklist: one repeated character, a
/// shipped long common password, or — per zxcvbn — exactly one entry of its
/// bundled common-passwords dictionary (possibly reversed or with l33t
/// substitutions, which are just as predictable) covering the whole password.
///
/// zxcvbn reports its *cheapest* match sequence, so a dictionary entry that is
/// also a concatenation of cheaper entries (`qwertyuiop12345`) shows up as
/// several matches; such long entries are repeated in
/// [`COMMON_LONG_PASSWORDS`] (a test pins all of them).
fn is_common(password: &str) -> bool {
    let lower = password.to_lowercase();
    let mut chars = lower.chars();
    if let Some(first) = chars.next() {
        if chars.all(|c| c == first) {
            return true;
        }
    }
    if COMMON_LONG_PASSWORDS.contains(&lower.as_str()) {
        return true;
    }
    // `DictionaryType` is not nameable outside zxcvbn, but its default is the
    // `Passwords` dictionary (pinned by a test below).
    let passwords_dictionary = DictionaryPattern::default().dictionary_name;
    let entropy = zxcvbn::zxcvbn(&lower, &[]);
    match entropy.sequence() {
        [single] => {
            single.i == 0
                && single.token == lower
                && matches!(
                    &single.pattern,
                    MatchPattern::Dictionary(d) if d.dictionary_name == passwords_dictionary
                )
        }
        _ => false,
    }
}

/// Whether occurrences of the user's own data cover more than half of the
/// password's characters. Each input is used whole and split into its
/// alphanumeric words (so `alice.smith` contributes `alice` and `smith`);
/// only pieces of at least [`MIN_PERSONAL_INPUT_CHARS`] characters count.
/// Case-insensitive; overlapping and repeated occurrences all count.
fn is_mostly_personal_data(password: &str, user_inputs: &[&str]) -> bool {
    let hay: Vec<char> = password.to_lowercase().chars().collect();
    if hay.is_empty() {
        return false;
    }
    let mut needles: Vec<Vec<char>> = Vec::new();
    for input in user_inputs {
        let lowered: String = input.trim().nfc().collect::<String>().to_lowercase();
        let whole = lowered.as_str();
        for piece in std::iter::once(whole).chain(whole.split(|c: char| !c.is_alphanumeric())) {
            let piece: Vec<char> = piece.chars().collect();
            if piece.len() >= MIN_PERSONAL_INPUT_CHARS && !needles.contains(&piece) {
                needles.push(piece);
            }
        }
    }
    let mut covered = vec![false; hay.len()];
    for needle in &needles {
        if needle.len() > hay.len() {
            continue;
        }
        for start in 0..=hay.len() - needle.len() {
            if hay[start..start + needle.len()] == needle[..] {
                covered[start..start + needle.len()].iter_mut().for_each(|c| *c = true);
            }
        }
    }
    let covered = covered.iter().filter(|&&c| c).count();
    covered * 2 > hay.len()
}

/// The seed products' composition rule.
fn has_legacy_composition(password: &str) -> bool {
    let upper = password.chars().any(char::is_uppercase);
    let lower = password.chars().any(char::is_lowercase);
    let digit = password.chars().any(char::is_numeric);
    let symbol = password.chars().any(|c| !c.is_alphanumeric() && !c.is_whitespace() && !c.is_control());
    upper && lower && digit && symbol
}

fn strength(password: &str, user_inputs: &[&str]) -> PasswordStrength {
    let entropy = zxcvbn::zxcvbn(password, user_inputs);
    let (warning, suggestions) = match entropy.feedback() {
        Some(feedback) => {
            (feedback.warning().map(|w| w.to_string()), feedback.suggestions().iter().map(|s| s.to_string()).collect())
        }
        None => (None, Vec::new()),
    };
    PasswordStrength { score: u8::from(entropy.score()), warning, suggestions }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(r: Result<PasswordStrength, DomainError>) -> &'static str {
        match r {
            Err(DomainError::Invalid { field, code, .. }) => {
                assert_eq!(field, "password");
                code
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn nist(p: &str) -> Result<PasswordStrength, DomainError> {
        PasswordPolicy::Nist.check(p, &[])
    }

    fn legacy(p: &str) -> Result<PasswordStrength, DomainError> {
        PasswordPolicy::Legacy.check(p, &[])
    }

    const GOOD: &str = "violet ferry under marble skies";

    #[test]
    fn default_is_nist() {
        assert_eq!(PasswordPolicy::default(), PasswordPolicy::Nist);
    }

    #[test]
    fn policy_parses_and_serialises_lower_case() {
        assert_eq!("nist".parse::<PasswordPolicy>().unwrap(), PasswordPolicy::Nist);
        assert_eq!(" Legacy ".parse::<PasswordPolicy>().unwrap(), PasswordPolicy::Legacy);
        let err = "strict".parse::<PasswordPolicy>().unwrap_err();
        assert_eq!(err.code(), "invalid_password_policy");
        assert_eq!(serde_json::to_string(&PasswordPolicy::Legacy).unwrap(), "\"legacy\"");
        assert_eq!(serde_json::from_str::<PasswordPolicy>("\"nist\"").unwrap(), PasswordPolicy::Nist);
        assert!(serde_json::from_str::<PasswordPolicy>("\"NIST\"").is_err());
        for p in [PasswordPolicy::Nist, PasswordPolicy::Legacy] {
            assert_eq!(p.to_string().parse::<PasswordPolicy>().unwrap(), p);
        }
    }

    #[test]
    fn describe_is_one_sentence_that_states_the_limits() {
        let n = PasswordPolicy::Nist.describe();
        let l = PasswordPolicy::Legacy.describe();
        assert!(n.contains("15") && n.contains("128"), "{n}");
        assert!(l.contains('6') && l.contains("symbol"), "{l}");
        for d in [n, l] {
            assert!(d.ends_with('.'));
            assert_eq!(d.matches(". ").count(), 0, "one sentence: {d}");
            assert!(!d.contains("  "), "no doubled spaces from line continuations: {d}");
        }
    }

    // --- NIST: length -----------------------------------------------------

    #[test]
    fn nist_length_bounds() {
        assert_eq!(code(nist("kx7-Qm2!pz9Lw4")), "password_too_short"); // 14
        assert!(nist("kx7-Qm2!pz9Lw4v").is_ok()); // 15
        assert_eq!(code(nist("")), "password_too_short");
        let long_ok: String = GOOD.chars().cycle().take(128).collect();
        assert!(nist(&long_ok).is_ok());
        let sixty_four: String = GOOD.chars().cycle().take(64).collect();
        assert!(nist(&sixty_four).is_ok(), "NIST requires at least 64 to be allowed");
        let too_long: String = GOOD.chars().cycle().take(129).collect();
        assert_eq!(code(nist(&too_long)), "password_too_long");
        assert_eq!(code(nist(&"ab".repeat(100_000))), "password_too_long");
    }

    #[test]
    fn nist_counts_characters_not_bytes_after_nfc() {
        // 15 precomposed characters = 30 bytes: accepted.
        let nfc = "éñøüßåçłžæœðþ¿¡";
        assert_eq!(nfc.chars().count(), 15);
        assert!(nist(nfc).is_ok());
        // 14 characters typed decomposed (28 code points): still too short.
        let nfd: String = "éñüåçéñüåçéñüå".nfd().collect();
        assert!(nfd.chars().count() > 15);
        assert_eq!(code(nist(&nfd)), "password_too_short");
        // 128 characters typed decomposed (256 code points) are allowed.
        let nfd_128: String = "é".repeat(64).chars().chain("ü".repeat(64).chars()).collect::<String>().nfd().collect();
        assert_eq!(nfd_128.chars().count(), 256);
        assert!(nist(&nfd_128).is_ok());
    }

    #[test]
    fn nist_has_no_composition_rules_and_allows_spaces_and_unicode() {
        assert!(nist("correct zebra staple lantern").is_ok()); // lower-case + spaces only
        assert!(nist("Ünïcödé pässwörd ✓ 日本語").is_ok());
        assert!(nist("  leading and trailing  ").is_ok());
        assert!(nist("8395027461937284").is_ok()); // digits only, not a known pattern
    }

    #[test]
    fn spaces_are_part_of_the_password() {
        // Not trimmed: 13 visible characters plus two spaces is 15.
        assert!(nist(" kx7Qm2pz9Lw4v ").is_ok());
        assert_eq!(code(nist(" kx7Qm2pz9Lw ")), "password_too_short");
    }

    // --- NIST: common passwords -------------------------------------------

    #[test]
    fn nist_refuses_shipped_common_long_passwords_case_insensitively() {
        for p in [
            "passwordpassword",
            "123456789012345",
            "qwertyuiopasdfghjkl",
            "iloveyouiloveyou",
            "1q2w3e4r5t6y7u8i",
            "PasswordPassword",
            "IloveyouILOVEYOU",
        ] {
            assert_eq!(code(nist(p)), "password_common", "{p}");
        }
    }

    #[test]
    fn every_shipped_common_password_is_refused() {
        for p in COMMON_LONG_PASSWORDS {
            assert!(p.chars().count() >= NIST_MIN_CHARS, "{p} is shorter than the minimum");
            assert_eq!(p.to_lowercase(), *p, "{p} must be stored lower-case");
            assert_eq!(code(nist(p)), "password_common", "{p}");
        }
    }

    #[test]
    fn nist_refuses_repeated_single_characters_of_any_length() {
        for n in [15, 16, 40, 128] {
            assert_eq!(code(nist(&"a".repeat(n))), "password_common");
            assert_eq!(code(nist(&"7".repeat(n))), "password_common");
            assert_eq!(code(nist(&" ".repeat(n))), "password_common");
            assert_eq!(code(nist(&"ß".repeat(n))), "password_common");
        }
        assert_eq!(code(nist("aaaaaaaaaaaaaaa")), "password_common");
        assert_eq!(code(nist("AaAaAaAaAaAaAaA")), "password_common");
        assert_eq!(code(nist(&"a".repeat(129))), "password_too_long");
    }

    #[test]
    fn nist_refuses_long_entries_of_the_zxcvbn_dictionary() {
        // Long entries of zxcvbn's bundled password list that are not in
        // COMMON_LONG_PASSWORDS.
        for p in ["passwordstandard", "122333444455555", "1qa2ws3ed4rf5tg", "mailcreated5240"] {
            assert!(!COMMON_LONG_PASSWORDS.contains(&p), "{p}");
            assert_eq!(code(nist(p)), "password_common", "{p}");
            assert_eq!(code(nist(&p.to_uppercase())), "password_common", "{p}");
        }
    }

    #[test]
    fn every_long_entry_of_the_zxcvbn_dictionary_is_refused() {
        // The entries of zxcvbn 3.1's bundled password list with 15+
        // characters. zxcvbn's cheapest match sequence splits some of them
        // (e.g. `qwertyuiop` + `12345`), which is why COMMON_LONG_PASSWORDS
        // repeats those.
        for p in [
            "mailcreated5240",
            "123456789987654321",
            "1qaz2wsx3edc4rfv",
            "hd764nw5d7e1vb1",
            "qazwsxedcrfvtgb",
            "23176djivanfros",
            "123456789qwerty",
            "12345678900987654321",
            "qwerty123456789",
            "12345678987654321",
            "q1w2e3r4t5y6u7i8",
            "zqjphsyf6ctifgu",
            "lhbjkjubz2957704",
            "1qazxsw23edcvfr4",
            "nemvxyheqdd5oqxyxyzi",
            "1234qwerasdfzxcv",
            "q1w2e3r4t5y6u7i8o9p0",
            "passwordstandard",
            "1234567890qwerty",
            "1234567890987654321",
            "bpgjldsgjldthnf",
            "1qa2ws3ed4rf5tg",
            "qwertyuiop12345",
            "1234567887654321",
            "111222333444555",
            "122333444455555",
            "zxcvbnm123456789",
            "qwertasdfgzxcvb",
        ] {
            assert_eq!(code(nist(p)), "password_common", "{p}");
        }
    }

    #[test]
    fn the_default_dictionary_pattern_is_the_passwords_dictionary() {
        // `is_common` relies on this to name zxcvbn's private enum.
        let entropy = zxcvbn::zxcvbn("password", &[]);
        let [m] = entropy.sequence() else { panic!("one match expected") };
        match &m.pattern {
            MatchPattern::Dictionary(d) => {
                assert_eq!(d.dictionary_name, DictionaryPattern::default().dictionary_name);
                assert_eq!(format!("{:?}", d.dictionary_name), "Passwords");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn nist_does_not_refuse_common_passwords_as_parts_of_longer_ones() {
        // Contains "password" but is not itself common.
        assert!(nist("password for the lighthouse 42").is_ok());
        // An English phrase whose single words are dictionary entries.
        assert!(nist("tangerine submarine orchestra").is_ok());
    }

    // --- NIST: personal data ------------------------------------------------

    #[test]
    fn nist_refuses_password_mostly_made_of_user_inputs() {
        let inputs = ["Alexandra Whitfield", "alexandra.whitfield@example.com"];
        let r = PasswordPolicy::Nist.check("AlexandraWhitfield1", &inputs);
        assert_eq!(code(r), "password_contains_personal_data");
        // Repeated short input covering the whole password.
        let r = PasswordPolicy::Nist.check("whitfieldwhitfield", &["whitfield"]);
        assert_eq!(code(r), "password_contains_personal_data");
        // The local part split into words.
        let r = PasswordPolicy::Nist.check("alexandra!whitfield", &["alexandra.whitfield"]);
        assert_eq!(code(r), "password_contains_personal_data");
    }

    #[test]
    fn nist_allows_personal_data_as_a_minority_of_the_password() {
        let inputs = ["Alexandra", "alexandra@example.com"];
        assert!(PasswordPolicy::Nist.check("alexandra likes quiet harbours", &inputs).is_ok());
    }

    #[test]
    fn nist_ignores_short_user_inputs() {
        // "bob" (3 chars) would cover 12 of 16 chars but is ignored.
        let r = PasswordPolicy::Nist.check("bobbobbobbob.K9z", &["bob", "", "   "]);
        assert!(r.is_ok(), "{r:?}");
        // "bobb" has 4 characters and does count.
        let r = PasswordPolicy::Nist.check("bobbbobbbobbK9z!", &["bobb"]);
        assert_eq!(code(r), "password_contains_personal_data");
    }

    #[test]
    fn personal_data_majority_is_strict() {
        // Exactly half covered is not a majority.
        assert!(!is_mostly_personal_data("abcdefghijklmnop", &["abcdefgh"]));
        assert!(is_mostly_personal_data("abcdefghijklmnop", &["abcdefghi"]));
        assert!(is_mostly_personal_data("ABCDEFGHIJKLMNOP", &["abcdefghi"]));
        assert!(is_mostly_personal_data("abcdefghijklmnop", &["ABCDEFGHI"]));
        assert!(!is_mostly_personal_data("", &["abcd"]));
    }

    // --- Legacy -------------------------------------------------------------

    #[test]
    fn legacy_requires_all_four_classes() {
        assert!(legacy("Ab1!xy").is_ok());
        assert_eq!(code(legacy("Ab1!x")), "password_composition"); // 5 chars
        assert_eq!(code(legacy("ab1!xy")), "password_composition"); // no upper
        assert_eq!(code(legacy("AB1!XY")), "password_composition"); // no lower
        assert_eq!(code(legacy("Abc!xy")), "password_composition"); // no digit
        assert_eq!(code(legacy("Ab1cxy")), "password_composition"); // no symbol
        assert_eq!(code(legacy("Ab1 xy")), "password_composition"); // space is not a symbol
        assert_eq!(code(legacy("")), "password_composition");
    }

    #[test]
    fn legacy_does_not_apply_nist_rules() {
        // Short and common-ish, but legal under the seed products' rule.
        assert!(legacy("P@ssw0rd").is_ok());
        assert!(PasswordPolicy::Legacy.check("Alice1!", &["alice"]).is_ok());
    }

    #[test]
    fn legacy_max_length() {
        let ok = format!("Ab1!{}", "x".repeat(124));
        assert!(legacy(&ok).is_ok());
        let long = format!("Ab1!{}", "x".repeat(125));
        assert_eq!(code(legacy(&long)), "password_too_long");
    }

    // --- strength feedback ----------------------------------------------------

    #[test]
    fn strength_is_reported_on_success() {
        let strong = nist(GOOD).unwrap();
        assert_eq!(strong.score, 4);
        assert!(strong.warning.is_none());
        assert!(strong.suggestions.is_empty());

        let weak = legacy("Ab1!xy").unwrap();
        assert!(weak.score <= 2, "{weak:?}");
        assert!(!weak.suggestions.is_empty() || weak.warning.is_some(), "{weak:?}");
    }

    #[test]
    fn strength_takes_user_inputs_into_account() {
        let without = PasswordPolicy::Legacy.check("Gwendolyn#1", &[]).unwrap();
        let with = PasswordPolicy::Legacy.check("Gwendolyn#1", &["gwendolyn"]).unwrap();
        assert!(with.score <= without.score, "{with:?} vs {without:?}");
    }

    #[test]
    fn strength_serialises_with_stable_field_names() {
        let s = PasswordStrength { score: 1, warning: Some("w".into()), suggestions: vec!["s".into()] };
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json, serde_json::json!({"score": 1, "warning": "w", "suggestions": ["s"]}));
    }

    #[test]
    fn normalize_is_nfc() {
        assert_eq!(normalize("e\u{301}"), "\u{e9}");
        assert_eq!(normalize("  keep spaces "), "  keep spaces ");
    }
}

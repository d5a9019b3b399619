//! Value types that can only hold valid data ("parse, don't validate").
//!
//! Every input that crosses the edge of the system (HTTP body, CSV row, CLI
//! argument, stored event) is turned into one of these types by `parse`.
//! Once a value exists it is known to be well formed and normalised, so the
//! rest of the domain never re-checks it, and two values that mean the same
//! thing (`Alice@Example.COM` and `alice@example.com`) compare equal.
//!
//! All types serialise as a plain JSON string and deserialise through the same
//! `parse`, so a stored event or a request body can never smuggle in a value
//! that `parse` would have refused.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

use crate::error::DomainError;

/// Implements the boilerplate every value type shares: `as_str`, `Display`,
/// `FromStr`, `TryFrom<String>` / `TryFrom<&str>` (used by serde) and
/// `From<Self> for String`.
macro_rules! string_value {
    ($ty:ident) => {
        impl $ty {
            /// The normalised string form (what is stored and compared).
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Consumes the value and returns its normalised string form.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $ty {
            type Err = DomainError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $ty {
            type Error = DomainError;

            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::parse(&s)
            }
        }

        impl TryFrom<&str> for $ty {
            type Error = DomainError;

            fn try_from(s: &str) -> Result<Self, Self::Error> {
                Self::parse(s)
            }
        }

        impl From<$ty> for String {
            fn from(v: $ty) -> String {
                v.0
            }
        }
    };
}

/// Unicode characters that are not `char::is_control` but still break lines
/// or reorder text when displayed: line/paragraph separators (a line break
/// in a mail header or a log line) and the bidirectional embedding, override
/// and isolate controls (used to make `evil.com` render as something else).
fn is_dangerous_format_char(c: char) -> bool {
    matches!(
        c,
        '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

/// Invisible characters that have no business in an email address: the
/// dangerous format characters above plus zero-width spaces/joiners, the
/// left-to-right/right-to-left marks, word joiners and the byte-order mark.
/// Two addresses differing only by one of these would look identical.
fn is_invisible_char(c: char) -> bool {
    is_dangerous_format_char(c) || matches!(c, '\u{200B}'..='\u{200F}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}')
}

// ---------------------------------------------------------------------------
// EmailAddress
// ---------------------------------------------------------------------------

/// A normalised email address.
///
/// Exists because email addresses are the identity of invitees and users and
/// the product rules say they are unique "compared case-insensitively after
/// trimming": normalising once at the edge (trim, Unicode NFC, lower-case,
/// domain in IDNA ASCII form) makes plain string equality the right
/// comparison everywhere else (uniqueness indexes, "already a member" checks).
///
/// Deliberately simpler than RFC 5322: no quoted local parts, no comments, no
/// IP-literal domains. The local part is a dot-atom (RFC 5322 `atext` plus
/// any non-ASCII letter, RFC 6532), which also keeps characters such as `<`,
/// `>`, `,`, `;`, `"` and line breaks out of mail headers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EmailAddress(String);

string_value!(EmailAddress);

impl EmailAddress {
    /// Longest address accepted, in octets of the normalised form (RFC 5321
    /// path limit minus the angle brackets).
    pub const MAX_LEN: usize = 254;
    /// Longest local part accepted, in octets (RFC 5321).
    pub const MAX_LOCAL_LEN: usize = 64;

    /// Parses and normalises an email address; see the type docs for the
    /// accepted shape. Fails with field `email`, code `invalid_email`.
    pub fn parse(input: &str) -> Result<Self, DomainError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(email_err("must not be empty"));
        }
        // Cheap bound before any allocation-heavy normalisation.
        if trimmed.len() > 4 * Self::MAX_LEN {
            return Err(email_err("is too long"));
        }
        if trimmed.chars().any(|c| c.is_whitespace() || c.is_control() || is_invisible_char(c)) {
            return Err(email_err("must not contain spaces, line breaks, control or invisible characters"));
        }

        // NFC, lower-case, NFC again: lower-casing can produce sequences
        // (e.g. `İ` -> `i̇`) whose composition differs from the input's.
        // ASCII (nearly every address) is its own NFC form.
        let normalised: String = if trimmed.is_ascii() {
            trimmed.to_ascii_lowercase()
        } else {
            trimmed.nfc().collect::<String>().to_lowercase().nfc().collect()
        };

        let mut parts = normalised.split('@');
        let (local, domain) = match (parts.next(), parts.next(), parts.next()) {
            (Some(local), Some(domain), None) => (local, domain),
            _ => return Err(email_err("must contain exactly one '@'")),
        };

        if local.is_empty() {
            return Err(email_err("the part before '@' must not be empty"));
        }
        if local.len() > Self::MAX_LOCAL_LEN {
            return Err(email_err("the part before '@' is longer than 64 characters"));
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(email_err("the part before '@' must not start or end with a dot or contain two dots in a row"));
        }
        if let Some(bad) = local.chars().find(|&c| !is_local_part_char(c)) {
            return Err(email_err(format!("the part before '@' must not contain {bad:?}")));
        }

        let mapped = match parse_mail_domain(domain)? {
            Cow::Borrowed(_) => None,
            Cow::Owned(ascii) => Some(ascii),
        };
        let address = match mapped {
            // The domain is as given: the normalised text is the address.
            None => normalised,
            Some(ascii) => format!("{local}@{ascii}"),
        };
        if address.len() > Self::MAX_LEN {
            return Err(email_err("is longer than 254 characters"));
        }
        Ok(EmailAddress(address))
    }

    /// The part after `@`, in IDNA ASCII form (e.g. `xn--bcher-kva.de`).
    /// Used for per-domain rules and reporting.
    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map(|(_, d)| d).unwrap_or_default()
    }

    /// The part before `@`, lower-cased. Used e.g. as a "personal data" input
    /// for the password policy.
    pub fn local_part(&self) -> &str {
        self.0.rsplit_once('@').map(|(l, _)| l).unwrap_or_default()
    }
}

fn email_err(reason: impl Into<String>) -> DomainError {
    DomainError::invalid("email", "invalid_email", reason)
}

/// RFC 5322 `atext` plus `.` plus any non-ASCII character (RFC 6532). The
/// caller has already refused whitespace, control and invisible characters.
fn is_local_part_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c) || !c.is_ascii()
}

/// Converts a mail domain to its IDNA ASCII form and checks it is a plausible
/// host name: at least two labels, each 1..=63 of `[a-z0-9-]`, not starting
/// or ending with `-`, and a top-level label that is not all digits (so no
/// dotted IPv4 addresses).
///
/// A domain of lower-case ASCII letters, digits, `-` and `.` with no
/// Punycode label (`xn--`) is its own IDNA ASCII form, so it is returned
/// borrowed, without the IDNA mapping (nearly every address: a replay
/// parses every address in the log again).
fn parse_mail_domain(domain: &str) -> Result<Cow<'_, str>, DomainError> {
    if domain.is_empty() {
        return Err(email_err("the part after '@' must not be empty"));
    }
    let ascii = match is_plain_ascii_domain(domain) {
        true => Cow::Borrowed(domain),
        false => Cow::Owned(
            idna::domain_to_ascii(domain).map_err(|_| email_err("the part after '@' is not a valid domain name"))?,
        ),
    };
    if !ascii.contains('.') {
        return Err(email_err("the part after '@' must contain a dot"));
    }
    for label in ascii.split('.') {
        if label.is_empty() {
            return Err(email_err("the part after '@' has an empty label"));
        }
        if label.len() > 63 {
            return Err(email_err("the part after '@' has a label longer than 63 characters"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(email_err("labels of the part after '@' must not start or end with '-'"));
        }
        if !label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return Err(email_err("the part after '@' may only contain letters, digits, '-' and '.'"));
        }
    }
    let tld = ascii.rsplit('.').next().unwrap_or_default();
    if tld.bytes().all(|b| b.is_ascii_digit()) {
        return Err(email_err("the part after '@' must be a domain name, not an IP address"));
    }
    Ok(ascii)
}

/// Letters, digits, `-` and `.` only, lower case, and no label in
/// Punycode: what IDNA's mapping leaves as it is.
fn is_plain_ascii_domain(domain: &str) -> bool {
    domain.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !domain.split('.').any(|label| label.starts_with("xn--"))
}

// ---------------------------------------------------------------------------
// Human-readable names
// ---------------------------------------------------------------------------

/// Shared rules of [`PersonName`] and [`AccountName`]: trimmed, NFC, 1..=200
/// characters, no control characters, line separators or bidi overrides.
fn parse_display_name(input: &str, field: &'static str, code: &'static str) -> Result<String, DomainError> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(DomainError::invalid(field, code, "must not be empty"));
    }
    if trimmed.chars().any(|c| c.is_control() || is_dangerous_format_char(c)) {
        return Err(DomainError::invalid(
            field,
            code,
            "must not contain line breaks, tabs, control or text-direction characters",
        ));
    }
    // `take` bounds the work on huge inputs: one character too many is enough
    // to know the answer.
    // ASCII is its own NFC form.
    let normalised: String = if trimmed.is_ascii() {
        trimmed.chars().take(NAME_MAX_CHARS + 1).collect()
    } else {
        trimmed.nfc().take(NAME_MAX_CHARS + 1).collect()
    };
    if normalised.chars().count() > NAME_MAX_CHARS {
        return Err(DomainError::invalid(field, code, "must be at most 200 characters"));
    }
    Ok(normalised)
}

const NAME_MAX_CHARS: usize = 200;

/// A person's display name (invitee, user).
///
/// Exists so that names shown in the UI and written into emails are never
/// empty, bounded in length, and cannot carry line breaks (header injection)
/// or text-direction overrides (spoofing). Stored trimmed and in Unicode NFC;
/// case and inner spacing are kept as the person typed them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PersonName(String);

string_value!(PersonName);

impl PersonName {
    /// Parses a person's name. Fails with field `name`, code `invalid_name`.
    pub fn parse(input: &str) -> Result<Self, DomainError> {
        parse_display_name(input, "name", "invalid_name").map(PersonName)
    }
}

/// The display name of a customer account (organisation).
///
/// Same rules as [`PersonName`], but its own type so an account name can
/// never be passed where a person's name is expected, and errors point at the
/// `account_name` field.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AccountName(String);

string_value!(AccountName);

impl AccountName {
    /// Parses an account name. Fails with field `account_name`, code
    /// `invalid_account_name`.
    pub fn parse(input: &str) -> Result<Self, DomainError> {
        parse_display_name(input, "account_name", "invalid_account_name").map(AccountName)
    }
}

// ---------------------------------------------------------------------------
// Identifiers
// ---------------------------------------------------------------------------

/// The customer number an account carries in the operator's billing/CRM
/// system.
///
/// Exists so the external reference is bounded and safe to put in URLs, CSV
/// exports and log lines: 1..=32 ASCII letters, digits, `-`, `_`, `.`.
/// Stored exactly as given (after trimming): case is preserved because the
/// external system may be case-sensitive.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CustomerNumber(String);

string_value!(CustomerNumber);

impl CustomerNumber {
    /// Parses a customer number. Fails with field `customer_number`, code
    /// `invalid_customer_number`.
    pub fn parse(input: &str) -> Result<Self, DomainError> {
        parse_identifier(
            input,
            32,
            |c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'),
            "customer_number",
            "invalid_customer_number",
            "ASCII letters, digits, '-', '_' and '.'",
        )
        .map(CustomerNumber)
    }
}

/// Shared shape check for ASCII identifiers: trimmed, 1..=`max` characters,
/// each satisfying `allowed`.
fn parse_identifier(
    input: &str,
    max: usize,
    allowed: impl Fn(char) -> bool,
    field: &'static str,
    code: &'static str,
    alphabet: &str,
) -> Result<String, DomainError> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(DomainError::invalid(field, code, "must not be empty"));
    }
    if let Some(bad) = trimmed.chars().find(|&c| !allowed(c)) {
        return Err(DomainError::invalid(field, code, format!("must only contain {alphabet}, found {bad:?}")));
    }
    // Only ASCII remains, so bytes == characters.
    if trimmed.len() > max {
        return Err(DomainError::invalid(field, code, format!("must be at most {max} characters")));
    }
    Ok(trimmed.to_owned())
}

/// The name of a role (built-in or custom) that members and invitations carry.
///
/// Exists because role names are keys: they are compared, stored in events
/// and shown in URLs, so they are normalised to a small lower-case alphabet
/// (`[a-z][a-z0-9_-]{0,63}`). Input is trimmed and lower-cased first, so
/// `" Admin "` parses to `admin`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RoleName(String);

string_value!(RoleName);

impl RoleName {
    /// The names of the built-in roles, which exist in every account and
    /// cannot be edited or deleted.
    pub const BUILT_IN: [&'static str; 5] = ["owner", "admin", "editor", "viewer", "auditor"];

    /// Parses a role name. Fails with field `role`, code `invalid_role_name`.
    pub fn parse(input: &str) -> Result<Self, DomainError> {
        // ASCII-only lower-casing: Unicode lower-casing would turn e.g. the
        // Kelvin sign `K` into `k` and let look-alikes alias real roles.
        let lowered = input.trim().to_ascii_lowercase();
        let name = parse_identifier(
            &lowered,
            64,
            |c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_'),
            "role",
            "invalid_role_name",
            "lower-case ASCII letters, digits, '-' and '_'",
        )?;
        if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err(DomainError::invalid("role", "invalid_role_name", "must start with a letter"));
        }
        Ok(RoleName(name))
    }

    /// The built-in `owner` role: holds every permission of the account.
    pub fn owner() -> Self {
        RoleName("owner".to_owned())
    }

    /// The built-in `admin` role: manages members and invitations.
    pub fn admin() -> Self {
        RoleName("admin".to_owned())
    }

    /// The built-in `editor` role.
    pub fn editor() -> Self {
        RoleName("editor".to_owned())
    }

    /// The built-in `viewer` role.
    pub fn viewer() -> Self {
        RoleName("viewer".to_owned())
    }

    /// The built-in `auditor` role (read access to the audit trail).
    pub fn auditor() -> Self {
        RoleName("auditor".to_owned())
    }

    /// Whether this is one of the built-in roles ([`RoleName::BUILT_IN`]),
    /// as opposed to a custom role defined by an account.
    pub fn is_built_in(&self) -> bool {
        Self::BUILT_IN.contains(&self.0.as_str())
    }
}

/// Characters allowed in [`FeatureName`], [`SiteId`] and [`SourceId`].
fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')
}

const KEY_ALPHABET: &str = "ASCII letters, digits, '-', '_', '.' and ':'";

/// The name of a feature (entitlement) an invitation or role can grant.
///
/// Exists so feature keys are bounded and safe to use as map keys, in URLs
/// and in logs: 1..=64 ASCII letters, digits, `-`, `_`, `.`, `:` (e.g.
/// `reports:export`). Case is preserved.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FeatureName(String);

string_value!(FeatureName);

impl FeatureName {
    /// Parses a feature name. Fails with field `feature`, code
    /// `invalid_feature`.
    pub fn parse(input: &str) -> Result<Self, DomainError> {
        parse_identifier(input, 64, is_key_char, "feature", "invalid_feature", KEY_ALPHABET).map(FeatureName)
    }
}

/// The identifier of a site (one of the products/tenants that sends
/// invitations through Admit).
///
/// Same alphabet as [`FeatureName`]; a separate type so a site can never be
/// confused with a feature or a source. Errors point at field `site`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SiteId(String);

string_value!(SiteId);

impl SiteId {
    /// Parses a site id. Fails with field `site`, code `invalid_site`.
    pub fn parse(input: &str) -> Result<Self, DomainError> {
        parse_identifier(input, 64, is_key_char, "site", "invalid_site", KEY_ALPHABET).map(SiteId)
    }
}

/// The identifier of the source an invitation came from (a UI, an API
/// client, a bulk import, ...), kept for attribution and auditing.
///
/// Same alphabet as [`FeatureName`]; errors point at field `source`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SourceId(String);

string_value!(SourceId);

impl SourceId {
    /// Parses a source id. Fails with field `source`, code `invalid_source`.
    pub fn parse(input: &str) -> Result<Self, DomainError> {
        parse_identifier(input, 64, is_key_char, "source", "invalid_source", KEY_ALPHABET).map(SourceId)
    }
}

/// How long an invitation link works: from one second to 30 days. The API
/// takes it in whole hours (`expires_in_hours`) or, like Auth0's `ttl_sec`,
/// in seconds (`expires_in_seconds`); the inside only sees this type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LinkLifetime(u32);

impl LinkLifetime {
    /// The longest lifetime, 30 days, in seconds.
    pub const MAX_SECONDS: u32 = 720 * 3600;

    /// A lifetime in seconds (`invalid_expiry` outside 1..=30 days).
    pub fn from_seconds(seconds: u64) -> Result<LinkLifetime, DomainError> {
        Self::bounded(seconds, "expires_in_seconds")
    }

    /// A lifetime in whole hours (`invalid_expiry` outside 1..=720).
    pub fn from_hours(hours: u64) -> Result<LinkLifetime, DomainError> {
        Self::bounded(hours.saturating_mul(3600), "expires_in_hours")
    }

    fn bounded(seconds: u64, field: &'static str) -> Result<LinkLifetime, DomainError> {
        match u32::try_from(seconds) {
            Ok(s) if (1..=Self::MAX_SECONDS).contains(&s) => Ok(LinkLifetime(s)),
            _ => Err(DomainError::invalid(
                field,
                "invalid_expiry",
                "an invitation lives between 1 second and 30 days (720 hours)",
            )),
        }
    }

    /// The lifetime as a duration.
    pub fn duration(&self) -> chrono::Duration {
        chrono::Duration::seconds(i64::from(self.0))
    }

    /// The lifetime in seconds.
    pub fn seconds(&self) -> u32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_of<T: fmt::Debug>(r: Result<T, DomainError>) -> (&'static str, &'static str) {
        match r {
            Err(DomainError::Invalid { field, code, .. }) => (field, code),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn email(s: &str) -> EmailAddress {
        EmailAddress::parse(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    fn email_rejected(s: &str) {
        assert_eq!(err_of(EmailAddress::parse(s)), ("email", "invalid_email"), "{s:?} should be rejected");
    }

    // --- EmailAddress -----------------------------------------------------

    #[test]
    fn email_is_trimmed_and_lower_cased() {
        assert_eq!(email("  Alice@Example.COM ").as_str(), "alice@example.com");
        assert_eq!(email("  Alice@Example.COM "), email("alice@example.com"));
    }

    #[test]
    fn email_domain_is_converted_to_punycode_and_local_part_to_lower_case() {
        let e = email("ÅSA@Bücher.de");
        assert_eq!(e.as_str(), "åsa@xn--bcher-kva.de");
        assert_eq!(e.domain(), "xn--bcher-kva.de");
        assert_eq!(e.local_part(), "åsa");
    }

    #[test]
    fn email_already_in_punycode_equals_unicode_form() {
        assert_eq!(email("asa@xn--bcher-kva.de"), email("asa@BÜCHER.de"));
    }

    #[test]
    fn email_nfd_and_nfc_forms_compare_equal() {
        let nfc = "j\u{00F6}rg@example.com"; // ö precomposed
        let nfd = "jo\u{0308}rg@example.com"; // o + combining diaeresis
        assert_ne!(nfc, nfd);
        assert_eq!(email(nfc), email(nfd));
        assert_eq!(email(nfd).as_str(), nfc);
    }

    #[test]
    fn email_accessors_split_at_the_at_sign() {
        let e = email("first.last+tag@mail.example.org");
        assert_eq!(e.local_part(), "first.last+tag");
        assert_eq!(e.domain(), "mail.example.org");
    }

    #[test]
    fn email_rejects_empty_and_blank() {
        email_rejected("");
        email_rejected("   ");
    }

    #[test]
    fn email_rejects_wrong_number_of_at_signs() {
        email_rejected("alice.example.com");
        email_rejected("alice@@example.com");
        email_rejected("a@b@example.com");
        email_rejected("\"a@b\"@example.com");
    }

    #[test]
    fn email_rejects_empty_parts() {
        email_rejected("@example.com");
        email_rejected("alice@");
    }

    #[test]
    fn email_rejects_header_injection_and_control_characters() {
        email_rejected("alice@example.com\r\nBcc: eve@evil.com");
        email_rejected("alice\r\n@example.com");
        email_rejected("alice@exam\nple.com");
        email_rejected("alice\0@example.com");
        email_rejected("ali ce@example.com");
        email_rejected("alice@example .com");
        email_rejected("ali\tce@example.com");
        email_rejected("alice\u{7F}@example.com");
        email_rejected("alice\u{2028}@example.com");
    }

    #[test]
    fn email_trims_outer_whitespace_but_not_inner_newlines() {
        assert_eq!(email("\r\n alice@example.com \t\n").as_str(), "alice@example.com");
    }

    #[test]
    fn email_rejects_invisible_characters() {
        email_rejected("al\u{200B}ice@example.com");
        email_rejected("alice@exa\u{202E}mple.com");
        email_rejected("\u{FEFF}alice@example.com");
    }

    #[test]
    fn email_rejects_header_special_characters_in_local_part() {
        for s in [
            "a<b@example.com",
            "a>b@example.com",
            "a,b@example.com",
            "a;b@example.com",
            "a\"b@example.com",
            "a(b)@example.com",
            "a\\b@example.com",
            "a:b@example.com",
            "a[b]@example.com",
        ] {
            email_rejected(s);
        }
    }

    #[test]
    fn email_accepts_rfc_atext_in_local_part() {
        assert_eq!(email("o'brien+x_y-z!#$%&*=?^`{|}~@example.com").local_part(), "o'brien+x_y-z!#$%&*=?^`{|}~");
    }

    #[test]
    fn email_rejects_misplaced_dots_in_local_part() {
        email_rejected(".alice@example.com");
        email_rejected("alice.@example.com");
        email_rejected("al..ice@example.com");
    }

    #[test]
    fn email_length_limits() {
        let local64 = "a".repeat(64);
        assert!(EmailAddress::parse(&format!("{local64}@example.com")).is_ok());
        email_rejected(&format!("{}@example.com", "a".repeat(65)));
        // Local part limit is in octets: 33 two-byte characters = 66 octets.
        email_rejected(&format!("{}@example.com", "é".repeat(33)));

        // Build an address of exactly 254 octets, then one of 255.
        let label = "b".repeat(63);
        let domain = format!("{label}.{label}.{label}.{}", "c".repeat(57)); // 63*3+3+57 = 249
        assert_eq!(domain.len(), 249);
        let ok = format!("abcd@{domain}"); // 4 + 1 + 249 = 254
        assert_eq!(ok.len(), 254);
        assert!(EmailAddress::parse(&ok).is_ok());
        email_rejected(&format!("abcde@{domain}"));
        email_rejected(&"x".repeat(10_000));
    }

    #[test]
    fn email_rejects_bad_domains() {
        email_rejected("alice@localhost");
        email_rejected("alice@example..com");
        email_rejected("alice@.example.com");
        email_rejected("alice@example.com.");
        email_rejected("alice@-example.com");
        email_rejected("alice@example-.com");
        email_rejected("alice@exa_mple.com");
        email_rejected("alice@exa!mple.com");
        email_rejected("alice@[127.0.0.1]");
        email_rejected("alice@127.0.0.1");
        email_rejected(&format!("alice@{}.com", "d".repeat(64)));
        // Invalid punycode / IDNA failures.
        email_rejected("alice@xn--.com");
        email_rejected("alice@xn--a-ecp.ru-");
    }

    #[test]
    fn email_accepts_hyphen_inside_labels_and_digits() {
        assert_eq!(email("x@my-host1.example.co.uk").domain(), "my-host1.example.co.uk");
        assert_eq!(email("x@123.example.com").domain(), "123.example.com");
    }

    #[test]
    fn email_serde_round_trips_as_plain_string() {
        let e = email("Bob@Example.com");
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(json, "\"bob@example.com\"");
        let back: EmailAddress = serde_json::from_str("\" BOB@example.COM\"").unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn email_deserialisation_goes_through_parse() {
        assert!(serde_json::from_str::<EmailAddress>("\"not-an-email\"").is_err());
        assert!(serde_json::from_str::<EmailAddress>("\"a@b.com\\r\\nBcc: x@y.z\"").is_err());
        assert!(serde_json::from_str::<EmailAddress>("42").is_err());
    }

    #[test]
    fn email_display_fromstr_and_conversions_agree() {
        let e: EmailAddress = "Carol@Example.com".parse().unwrap();
        assert_eq!(e.to_string(), "carol@example.com");
        assert_eq!(String::from(e.clone()), "carol@example.com");
        assert_eq!(EmailAddress::try_from("carol@example.com".to_owned()).unwrap(), e);
    }

    #[test]
    fn email_ordering_follows_normalised_string() {
        assert!(email("B@example.com") > email("a@example.com"));
    }

    // --- names ------------------------------------------------------------

    #[test]
    fn person_name_is_trimmed_and_keeps_case() {
        assert_eq!(PersonName::parse("  Ada Lovelace ").unwrap().as_str(), "Ada Lovelace");
    }

    #[test]
    fn person_name_is_nfc_normalised() {
        let nfd = PersonName::parse("Jo\u{0308}rg").unwrap();
        let nfc = PersonName::parse("J\u{00F6}rg").unwrap();
        assert_eq!(nfd, nfc);
    }

    #[test]
    fn person_name_length_limits_count_characters() {
        assert_eq!(err_of(PersonName::parse("")), ("name", "invalid_name"));
        assert_eq!(err_of(PersonName::parse(" \t ")), ("name", "invalid_name"));
        assert!(PersonName::parse(&"é".repeat(200)).is_ok());
        assert_eq!(err_of(PersonName::parse(&"a".repeat(201))), ("name", "invalid_name"));
        assert!(PersonName::parse("X").is_ok());
        assert!(PersonName::parse(&"x".repeat(100_000)).is_err());
    }

    #[test]
    fn person_name_rejects_control_and_direction_characters() {
        for bad in [
            "Ada\r\nBcc: x",
            "Ada\nLovelace",
            "Ada\0",
            "Ada\tLovelace",
            "Ada\u{1B}[31m",
            "Ada\u{85}Lovelace",
            "Ada\u{2028}Lovelace",
            "Ada\u{202E}ecalevol",
        ] {
            assert_eq!(err_of(PersonName::parse(bad)), ("name", "invalid_name"), "{bad:?}");
        }
    }

    #[test]
    fn person_name_accepts_international_names() {
        for ok in ["李小龍", "Zoë O'Brien-Łukasiewicz", "محمد", "👩‍💻 Dev"] {
            assert_eq!(PersonName::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn account_name_has_its_own_field_and_code() {
        assert_eq!(AccountName::parse(" Acme Ltd ").unwrap().as_str(), "Acme Ltd");
        assert_eq!(err_of(AccountName::parse("Acme\nLtd")), ("account_name", "invalid_account_name"));
        assert_eq!(err_of(AccountName::parse("")), ("account_name", "invalid_account_name"));
        assert!(AccountName::parse(&"a".repeat(200)).is_ok());
        assert!(AccountName::parse(&"a".repeat(201)).is_err());
    }

    #[test]
    fn names_serde_through_parse() {
        let n: PersonName = serde_json::from_str("\"  Grace \"").unwrap();
        assert_eq!(n.as_str(), "Grace");
        assert_eq!(serde_json::to_string(&n).unwrap(), "\"Grace\"");
        assert!(serde_json::from_str::<PersonName>("\"\"").is_err());
        assert!(serde_json::from_str::<AccountName>("\"a\\nb\"").is_err());
    }

    // --- CustomerNumber ---------------------------------------------------

    #[test]
    fn customer_number_preserves_case_and_trims() {
        let c = CustomerNumber::parse(" Cust-0042_a.B ").unwrap();
        assert_eq!(c.as_str(), "Cust-0042_a.B");
        assert_ne!(c, CustomerNumber::parse("cust-0042_a.b").unwrap());
    }

    #[test]
    fn customer_number_limits() {
        let code = ("customer_number", "invalid_customer_number");
        assert!(CustomerNumber::parse(&"9".repeat(32)).is_ok());
        assert_eq!(err_of(CustomerNumber::parse(&"9".repeat(33))), code);
        assert_eq!(err_of(CustomerNumber::parse("")), code);
        assert_eq!(err_of(CustomerNumber::parse("12 34")), code);
        assert_eq!(err_of(CustomerNumber::parse("12/34")), code);
        assert_eq!(err_of(CustomerNumber::parse("12:34")), code);
        assert_eq!(err_of(CustomerNumber::parse("１２３")), code); // full-width digits
    }

    // --- RoleName ---------------------------------------------------------

    #[test]
    fn role_name_is_trimmed_and_lower_cased() {
        assert_eq!(RoleName::parse("  Billing_Admin-2 ").unwrap().as_str(), "billing_admin-2");
        assert_eq!(RoleName::parse("ADMIN").unwrap(), RoleName::admin());
    }

    #[test]
    fn role_name_must_start_with_letter() {
        let code = ("role", "invalid_role_name");
        assert_eq!(err_of(RoleName::parse("1admin")), code);
        assert_eq!(err_of(RoleName::parse("-admin")), code);
        assert_eq!(err_of(RoleName::parse("_admin")), code);
    }

    #[test]
    fn role_name_rejects_bad_characters_and_lengths() {
        let code = ("role", "invalid_role_name");
        assert_eq!(err_of(RoleName::parse("")), code);
        assert_eq!(err_of(RoleName::parse("read only")), code);
        assert_eq!(err_of(RoleName::parse("read.only")), code);
        assert_eq!(err_of(RoleName::parse("rôle")), code);
        // `K` (Kelvin sign) lower-cases to ASCII `k` in Unicode but must not sneak in.
        assert_eq!(err_of(RoleName::parse("\u{212A}ing")), code);
        assert!(RoleName::parse(&"r".repeat(64)).is_ok());
        assert_eq!(err_of(RoleName::parse(&"r".repeat(65))), code);
    }

    #[test]
    fn role_name_built_ins() {
        let built_ins =
            [RoleName::owner(), RoleName::admin(), RoleName::editor(), RoleName::viewer(), RoleName::auditor()];
        for (role, name) in built_ins.iter().zip(RoleName::BUILT_IN) {
            assert_eq!(role.as_str(), name);
            assert!(role.is_built_in());
            // The constructors agree with parse.
            assert_eq!(&RoleName::parse(name).unwrap(), role);
        }
        assert!(RoleName::parse(" Owner ").unwrap().is_built_in());
        assert!(!RoleName::parse("billing").unwrap().is_built_in());
        assert!(!RoleName::parse("owners").unwrap().is_built_in());
    }

    #[test]
    fn role_name_serde() {
        let r: RoleName = serde_json::from_str("\"Editor\"").unwrap();
        assert_eq!(r, RoleName::editor());
        assert_eq!(serde_json::to_string(&r).unwrap(), "\"editor\"");
        assert!(serde_json::from_str::<RoleName>("\"9lives\"").is_err());
    }

    // --- FeatureName / SiteId / SourceId ----------------------------------

    #[test]
    fn key_like_identifiers_accept_their_alphabet() {
        assert_eq!(FeatureName::parse(" reports:Export.v2_beta-1 ").unwrap().as_str(), "reports:Export.v2_beta-1");
        assert_eq!(SiteId::parse("eu-west:shop.example").unwrap().as_str(), "eu-west:shop.example");
        assert_eq!(SourceId::parse("api:client_42").unwrap().as_str(), "api:client_42");
    }

    #[test]
    fn key_like_identifiers_have_their_own_field_and_code() {
        let long = "k".repeat(65);
        for bad in ["", "a b", "a/b", "a@b", "ключ", long.as_str()] {
            assert_eq!(err_of(FeatureName::parse(bad)), ("feature", "invalid_feature"), "{bad:?}");
            assert_eq!(err_of(SiteId::parse(bad)), ("site", "invalid_site"), "{bad:?}");
            assert_eq!(err_of(SourceId::parse(bad)), ("source", "invalid_source"), "{bad:?}");
        }
        assert!(FeatureName::parse(&"k".repeat(64)).is_ok());
        assert!(SiteId::parse(&"k".repeat(64)).is_ok());
        assert!(SourceId::parse(&"k".repeat(64)).is_ok());
    }

    #[test]
    fn key_like_identifiers_serde_through_parse() {
        let f: FeatureName = serde_json::from_str("\"sso\"").unwrap();
        assert_eq!(serde_json::to_string(&f).unwrap(), "\"sso\"");
        assert!(serde_json::from_str::<SiteId>("\"a b\"").is_err());
        assert!(serde_json::from_str::<SourceId>("\"\"").is_err());
    }

    #[test]
    fn values_work_as_map_keys_and_sort() {
        let mut set = std::collections::BTreeSet::new();
        set.insert(email("b@example.com"));
        set.insert(email("B@EXAMPLE.com"));
        set.insert(email("a@example.com"));
        assert_eq!(set.len(), 2);
        assert_eq!(set.iter().next().unwrap().as_str(), "a@example.com");
    }

    proptest::proptest! {
        /// The domains taken as they are are exactly those IDNA maps to
        /// themselves: skipping the mapping for them changes no address.
        #[test]
        fn a_plain_ascii_domain_is_its_own_idna_form(domain in "((xn--)?[a-z0-9-]{0,6}\\.){0,3}[a-z0-9-]{0,6}") {
            if is_plain_ascii_domain(&domain) {
                proptest::prop_assert_eq!(idna::domain_to_ascii(&domain).ok(), Some(domain.clone()));
            }
        }
    }

    #[test]
    fn domains_that_need_mapping_are_mapped() {
        assert_eq!(email("a@xn--bcher-kva.de").as_str(), "a@xn--bcher-kva.de");
        assert_eq!(email("a@Bücher.de").as_str(), "a@xn--bcher-kva.de");
        assert_eq!(email("A@EXAMPLE.COM").as_str(), "a@example.com");
        assert!(EmailAddress::parse("a@xn--a.de").is_err(), "bad Punycode is still refused");
        assert!(!is_plain_ascii_domain("xn--bcher-kva.de"));
        assert!(is_plain_ascii_domain("mail.example.com"));
    }
}

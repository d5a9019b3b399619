//! Invitation link tokens.
//!
//! The secret in an invitation link is an HMAC, not a stored random value:
//!
//! ```text
//! token = base64url_nopad( invitation_id (16) || nonce (16) || mac (16) )   // 64 chars
//! mac   = HMAC-SHA256(link_key, "admit-invitation-link-v1" || invitation_id || nonce)[..16]
//! ```
//!
//! The ledger stores only the invitation id and the nonce of the current
//! link (both harmless if leaked); the server key never leaves the server.
//! Resending picks a new nonce, which kills the old link because
//! [`ParsedToken::matches`] requires the nonce to be the current one. A
//! database dump therefore contains no usable link, and rotating the key
//! invalidates every outstanding link at once.
//!
//! The crate is pure: callers pass the key and fresh random nonce bytes in.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};
use uuid::Uuid;

use crate::error::DomainError;

type HmacSha256 = Hmac<Sha256>;

/// Domain-separation prefix of the MAC input; bump the version to change the
/// token format without old tokens verifying under the new one.
const MAC_CONTEXT: &[u8] = b"admit-invitation-link-v1";
/// Bytes of the truncated MAC (128 bits: far beyond online guessing).
const MAC_LEN: usize = 16;
/// Raw token length: id + nonce + mac.
const TOKEN_BYTES: usize = 16 + 16 + MAC_LEN;
/// Encoded token length (48 bytes in unpadded base64 is exactly 64 chars).
pub const TOKEN_CHARS: usize = 64;

/// The server's secret key for invitation links.
///
/// Exists as its own type so the key can only be used to issue and verify
/// links, and so it never shows up in logs: `Debug` prints `LinkKey(..)`.
#[derive(Clone)]
pub struct LinkKey([u8; 32]);

impl LinkKey {
    /// Wraps 32 secret bytes (from configuration or a key store).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        LinkKey(bytes)
    }

    /// Parses a key written as unpadded base64url (43 characters), the form
    /// used in configuration. Fails with field `link_key`, code
    /// `invalid_link_key`; the error never echoes the input.
    pub fn from_base64url(s: &str) -> Result<Self, DomainError> {
        let err = || {
            DomainError::invalid(
                "link_key",
                "invalid_link_key",
                "must be 32 bytes written as unpadded base64url (43 characters)",
            )
        };
        let bytes = URL_SAFE_NO_PAD.decode(s.trim().as_bytes()).map_err(|_| err())?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| err())?;
        Ok(LinkKey(bytes))
    }

    fn mac(&self, invitation_id: &Uuid, nonce: &LinkNonce) -> HmacSha256 {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.0).expect("HMAC accepts keys of any length");
        mac.update(MAC_CONTEXT);
        mac.update(invitation_id.as_bytes());
        mac.update(&nonce.0);
        mac
    }

    fn tag(&self, invitation_id: &Uuid, nonce: &LinkNonce) -> [u8; MAC_LEN] {
        let full = self.mac(invitation_id, nonce).finalize().into_bytes();
        let mut tag = [0u8; MAC_LEN];
        tag.copy_from_slice(&full[..MAC_LEN]);
        tag
    }
}

impl fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LinkKey(..)")
    }
}

/// The per-issue random part of an invitation link.
///
/// Exists so each issue of a link (first send, every resend) yields a
/// different token for the same invitation, and so the ledger can kill old
/// links by remembering only the current nonce. Not secret on its own (the
/// MAC is), so it may be stored in events; it serialises as unpadded
/// base64url (22 characters).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LinkNonce([u8; 16]);

impl LinkNonce {
    /// Wraps 16 bytes; the caller must take them from a CSPRNG.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        LinkNonce(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Parses the unpadded base64url form. Fails with field `nonce`, code
    /// `invalid_nonce`.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let err = || {
            DomainError::invalid(
                "nonce",
                "invalid_nonce",
                "must be 16 bytes written as unpadded base64url (22 characters)",
            )
        };
        let bytes = URL_SAFE_NO_PAD.decode(s.trim().as_bytes()).map_err(|_| err())?;
        let bytes: [u8; 16] = bytes.try_into().map_err(|_| err())?;
        Ok(LinkNonce(bytes))
    }

    /// Constant-time equality, for use on the verification path.
    fn ct_eq(&self, other: &LinkNonce) -> Choice {
        self.0[..].ct_eq(&other.0[..])
    }
}

impl fmt::Display for LinkNonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for LinkNonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LinkNonce({self})")
    }
}

impl TryFrom<String> for LinkNonce {
    type Error = DomainError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        LinkNonce::parse(&s)
    }
}

impl From<LinkNonce> for String {
    fn from(n: LinkNonce) -> String {
        n.to_string()
    }
}

/// The secret token handed to an invitee (the last segment of the link).
///
/// Exists to keep the secret contained: it has no `Serialize` (so it cannot
/// end up in an event or a JSON log by accident), its `Debug` prints
/// `InvitationToken(..)`, and the only way to read it is
/// [`as_str`](InvitationToken::as_str), when building the email.
#[derive(Clone)]
pub struct InvitationToken(String);

impl InvitationToken {
    /// Issues the token for `invitation_id` with a fresh `nonce`.
    /// Deterministic: the same key, id and nonce always give the same token.
    pub fn issue(key: &LinkKey, invitation_id: Uuid, nonce: &LinkNonce) -> InvitationToken {
        let mut raw = [0u8; TOKEN_BYTES];
        raw[..16].copy_from_slice(invitation_id.as_bytes());
        raw[16..32].copy_from_slice(&nonce.0);
        raw[32..].copy_from_slice(&key.tag(&invitation_id, nonce));
        InvitationToken(URL_SAFE_NO_PAD.encode(raw))
    }

    /// The token text to put into the link (64 base64url characters).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Splits a token received from a link into its parts, without checking
    /// the MAC (see [`ParsedToken::verify`] / [`ParsedToken::matches`]).
    ///
    /// Leading/trailing whitespace is ignored (copy-paste). Anything that is
    /// not exactly 64 base64url characters fails with field `token`, code
    /// `invalid_token`. Never panics, whatever the input.
    pub fn parse(s: &str) -> Result<ParsedToken, DomainError> {
        let err = || DomainError::invalid("token", "invalid_token", "is not a valid invitation link");
        let s = s.trim();
        // Byte length first: bounds the work and rejects multi-byte input.
        if s.len() != TOKEN_CHARS {
            return Err(err());
        }
        let raw = URL_SAFE_NO_PAD.decode(s.as_bytes()).map_err(|_| err())?;
        let raw: [u8; TOKEN_BYTES] = raw.try_into().map_err(|_| err())?;

        let mut id = [0u8; 16];
        id.copy_from_slice(&raw[..16]);
        let mut nonce = [0u8; 16];
        nonce.copy_from_slice(&raw[16..32]);
        let mut mac = [0u8; MAC_LEN];
        mac.copy_from_slice(&raw[32..]);
        Ok(ParsedToken { invitation_id: Uuid::from_bytes(id), nonce: LinkNonce(nonce), mac })
    }
}

impl fmt::Debug for InvitationToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InvitationToken(..)")
    }
}

/// A syntactically valid token, split into its parts but not yet trusted.
///
/// Exists so the caller can look the invitation up by `invitation_id`, then
/// check authenticity with [`verify`](ParsedToken::verify) and liveness with
/// [`matches`](ParsedToken::matches) against the invitation's current nonce.
#[derive(Clone)]
pub struct ParsedToken {
    /// The invitation the token claims to open (unauthenticated until verified).
    pub invitation_id: Uuid,
    /// The nonce of the issue the token claims to come from.
    pub nonce: LinkNonce,
    /// The truncated HMAC carried by the token.
    pub mac: [u8; MAC_LEN],
}

impl ParsedToken {
    /// Whether the MAC is genuine under `key` (the token was issued by this
    /// server for this id and nonce). Constant time in the MAC comparison.
    pub fn verify(&self, key: &LinkKey) -> bool {
        self.verify_choice(key).into()
    }

    /// Whether the token is genuine AND was issued with `current_nonce`, the
    /// nonce of the invitation's live link (an older, resent-over link fails).
    /// Both comparisons are constant time and always both evaluated.
    pub fn matches(&self, key: &LinkKey, current_nonce: &LinkNonce) -> bool {
        (self.verify_choice(key) & self.nonce.ct_eq(current_nonce)).into()
    }

    fn verify_choice(&self, key: &LinkKey) -> Choice {
        key.tag(&self.invitation_id, &self.nonce)[..].ct_eq(&self.mac[..])
    }
}

impl fmt::Debug for ParsedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedToken")
            .field("invitation_id", &self.invitation_id)
            .field("nonce", &self.nonce)
            .field("mac", &"..")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(b: u8) -> LinkKey {
        LinkKey::from_bytes([b; 32])
    }

    fn nonce(b: u8) -> LinkNonce {
        LinkNonce::from_bytes([b; 16])
    }

    fn id() -> Uuid {
        Uuid::parse_str("0190f2a4-7b3c-7d4e-8f60-123456789abc").unwrap()
    }

    fn invalid_token(s: &str) {
        match InvitationToken::parse(s) {
            Err(DomainError::Invalid { field: "token", code: "invalid_token", .. }) => {}
            other => panic!("{s:?}: expected invalid_token, got {other:?}"),
        }
    }

    #[test]
    fn issued_token_has_the_documented_shape() {
        let t = InvitationToken::issue(&key(1), id(), &nonce(2));
        assert_eq!(t.as_str().len(), 64);
        assert!(t.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        let raw = URL_SAFE_NO_PAD.decode(t.as_str()).unwrap();
        assert_eq!(&raw[..16], id().as_bytes());
        assert_eq!(&raw[16..32], &[2u8; 16]);
    }

    #[test]
    fn mac_is_truncated_hmac_sha256_over_context_id_and_nonce() {
        let k = key(7);
        let n = nonce(9);
        let t = InvitationToken::issue(&k, id(), &n);
        let raw = URL_SAFE_NO_PAD.decode(t.as_str()).unwrap();

        let mut expected = HmacSha256::new_from_slice(&[7u8; 32]).unwrap();
        let mut msg = b"admit-invitation-link-v1".to_vec();
        msg.extend_from_slice(id().as_bytes());
        msg.extend_from_slice(&[9u8; 16]);
        expected.update(&msg);
        let full = expected.finalize().into_bytes();
        assert_eq!(&raw[32..], &full[..16]);
    }

    #[test]
    fn issue_is_deterministic_and_nonce_dependent() {
        let a = InvitationToken::issue(&key(1), id(), &nonce(2));
        let b = InvitationToken::issue(&key(1), id(), &nonce(2));
        let c = InvitationToken::issue(&key(1), id(), &nonce(3));
        assert_eq!(a.as_str(), b.as_str());
        assert_ne!(a.as_str(), c.as_str());
    }

    #[test]
    fn round_trip_parses_and_verifies() {
        let k = key(1);
        let n = nonce(2);
        let t = InvitationToken::issue(&k, id(), &n);
        let p = InvitationToken::parse(t.as_str()).unwrap();
        assert_eq!(p.invitation_id, id());
        assert_eq!(p.nonce, n);
        assert!(p.verify(&k));
        assert!(p.matches(&k, &n));
    }

    #[test]
    fn surrounding_whitespace_is_ignored() {
        let k = key(1);
        let t = InvitationToken::issue(&k, id(), &nonce(2));
        let p = InvitationToken::parse(&format!("  {}\r\n", t.as_str())).unwrap();
        assert!(p.verify(&k));
    }

    #[test]
    fn tampering_with_any_character_fails_verification() {
        let k = key(1);
        let t = InvitationToken::issue(&k, id(), &nonce(2));
        let s = t.as_str();
        for i in 0..s.len() {
            let mut bytes = s.as_bytes().to_vec();
            // Flip to a different character of the alphabet.
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).unwrap();
            // The last character carries only whole bits here (48 bytes = 64
            // chars exactly), so every position changes the decoded bytes.
            let p = InvitationToken::parse(&tampered).unwrap();
            assert!(!p.verify(&k), "tampered at {i} still verifies");
            assert!(!p.matches(&k, &nonce(2)), "tampered at {i} still matches");
        }
    }

    #[test]
    fn other_key_fails() {
        let t = InvitationToken::issue(&key(1), id(), &nonce(2));
        let p = InvitationToken::parse(t.as_str()).unwrap();
        assert!(!p.verify(&key(3)));
        assert!(!p.matches(&key(3), &nonce(2)));
    }

    #[test]
    fn other_current_nonce_fails_matches_but_not_verify() {
        let k = key(1);
        let old = InvitationToken::issue(&k, id(), &nonce(2));
        let p = InvitationToken::parse(old.as_str()).unwrap();
        assert!(p.verify(&k), "the old link is still genuine");
        assert!(!p.matches(&k, &nonce(3)), "but it is no longer the live link");
    }

    #[test]
    fn swapping_the_invitation_id_fails() {
        let k = key(1);
        let t = InvitationToken::issue(&k, id(), &nonce(2));
        let mut p = InvitationToken::parse(t.as_str()).unwrap();
        p.invitation_id = Uuid::nil();
        assert!(!p.verify(&k));
    }

    #[test]
    fn garbage_is_invalid_token() {
        let t = InvitationToken::issue(&key(1), id(), &nonce(2));
        let s = t.as_str();
        invalid_token("");
        invalid_token("   ");
        invalid_token(&s[..63]);
        invalid_token(&format!("{s}A"));
        invalid_token(&"!".repeat(64));
        invalid_token(&"+".repeat(64)); // standard, not url-safe, alphabet
        invalid_token(&"/".repeat(64));
        invalid_token(&format!("{}==", &s[..62]));
        invalid_token(&format!("{}é", &s[..62])); // 64 bytes, not 64 chars
        invalid_token(&"é".repeat(32));
        invalid_token(&"🙂".repeat(16));
        invalid_token(&format!("{} {}", &s[..32], &s[33..]));
        invalid_token(&"A".repeat(100_000));
    }

    #[test]
    fn debug_never_prints_secrets() {
        let k = LinkKey::from_bytes([0xAB; 32]);
        assert_eq!(format!("{k:?}"), "LinkKey(..)");
        let t = InvitationToken::issue(&k, id(), &nonce(2));
        assert_eq!(format!("{t:?}"), "InvitationToken(..)");
        let p = InvitationToken::parse(t.as_str()).unwrap();
        let dbg = format!("{p:?}");
        assert!(dbg.contains(&id().to_string()));
        assert!(!dbg.contains(&format!("{:?}", p.mac)), "{dbg}");
        assert!(!dbg.contains(&t.as_str()[43..]), "{dbg}");
    }

    #[test]
    fn nonce_serialises_as_base64url() {
        let n = LinkNonce::from_bytes([0xFF; 16]);
        let json = serde_json::to_string(&n).unwrap();
        assert_eq!(json, "\"_____________________w\"");
        let back: LinkNonce = serde_json::from_str(&json).unwrap();
        assert_eq!(back, n);
        assert_eq!(back.as_bytes(), &[0xFF; 16]);
        assert_eq!(LinkNonce::parse(&n.to_string()).unwrap(), n);
    }

    #[test]
    fn nonce_rejects_malformed_input() {
        for bad in ["", "AAAA", "_____________________w==", "______________________", "+++++++++++++++++++++w"] {
            assert!(serde_json::from_str::<LinkNonce>(&format!("\"{bad}\"")).is_err(), "{bad}");
            assert_eq!(LinkNonce::parse(bad).unwrap_err().code(), "invalid_nonce", "{bad}");
        }
        // Non-canonical trailing bits are refused, so each nonce has one spelling.
        assert!(LinkNonce::parse("_____________________x").is_err());
    }

    #[test]
    fn link_key_from_base64url() {
        let encoded = URL_SAFE_NO_PAD.encode([5u8; 32]);
        assert_eq!(encoded.len(), 43);
        let k = LinkKey::from_base64url(&format!(" {encoded}\n")).unwrap();
        let t = InvitationToken::issue(&k, id(), &nonce(1));
        let p = InvitationToken::parse(t.as_str()).unwrap();
        assert!(p.verify(&key(5)));

        let short = URL_SAFE_NO_PAD.encode([5u8; 31]);
        let e = LinkKey::from_base64url(&short).unwrap_err();
        assert_eq!(e.code(), "invalid_link_key");
        assert!(!e.to_string().contains(&short), "error must not echo the key");
        assert!(LinkKey::from_base64url("not base64!").is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in any::<String>()) {
            let _ = InvitationToken::parse(&s);
        }

        #[test]
        fn parse_never_panics_on_alphabet_strings(s in "[A-Za-z0-9_=+/ -]{0,70}") {
            let _ = InvitationToken::parse(&s);
        }

        #[test]
        fn round_trip_for_any_id_nonce_and_key(
            id_bytes in any::<[u8; 16]>(),
            nonce_bytes in any::<[u8; 16]>(),
            key_bytes in any::<[u8; 32]>(),
        ) {
            let k = LinkKey::from_bytes(key_bytes);
            let n = LinkNonce::from_bytes(nonce_bytes);
            let id = Uuid::from_bytes(id_bytes);
            let t = InvitationToken::issue(&k, id, &n);
            prop_assert_eq!(t.as_str().len(), TOKEN_CHARS);
            let p = InvitationToken::parse(t.as_str()).unwrap();
            prop_assert_eq!(p.invitation_id, id);
            prop_assert_eq!(p.nonce, n);
            prop_assert!(p.matches(&k, &n));
        }
    }
}

//! The server's secrets: the key behind invitation links and the key behind
//! email lookup hashes, both derived from one master key.
//!
//! The master key comes from `ADMIT_SECRET_KEY` (64 hex characters) or, when
//! unset, from `<data dir>/secret.key`, generated once on first use. Every
//! process using one database (server, workers, command line) must share it.

use std::path::Path;

use admit_domain::token::LinkKey;
use admit_ledger::personal::LookupKey;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::Error;

/// Keys derived from the master key.
#[derive(Clone, Debug)]
pub struct Secrets {
    /// Signs invitation links.
    pub link: LinkKey,
    /// Keys the email lookup hash.
    pub lookup: LookupKey,
}

fn derive(master: &[u8; 32], label: &str) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(master).expect("HMAC takes any key length");
    mac.update(label.as_bytes());
    mac.finalize().into_bytes().into()
}

fn parse_hex(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
    }
    Some(out)
}

impl Secrets {
    /// Derives the keys from a master key.
    pub fn from_master(master: [u8; 32]) -> Secrets {
        Secrets {
            link: LinkKey::from_bytes(derive(&master, "admit/link-key/v1")),
            lookup: LookupKey::from_bytes(derive(&master, "admit/email-lookup/v1")),
        }
    }

    /// Loads the master key from `hex` (when given) or from
    /// `data_dir/secret.key`, creating that file with a random key once.
    pub fn load(hex: Option<&str>, data_dir: &Path) -> Result<Secrets, Error> {
        if let Some(hex) = hex.filter(|h| !h.trim().is_empty()) {
            let master =
                parse_hex(hex).ok_or_else(|| Error::Internal("ADMIT_SECRET_KEY must be 64 hex characters".into()))?;
            return Ok(Secrets::from_master(master));
        }
        let path = data_dir.join("secret.key");
        if let Ok(text) = std::fs::read_to_string(&path) {
            let master = parse_hex(&text)
                .ok_or_else(|| Error::Internal(format!("{} does not hold 64 hex characters", path.display())))?;
            return Ok(Secrets::from_master(master));
        }
        std::fs::create_dir_all(data_dir).map_err(|e| Error::Internal(format!("{}: {e}", data_dir.display())))?;
        let mut master = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut master);
        let hex: String = master.iter().map(|b| format!("{b:02x}")).collect();
        write_private(&path, &hex).map_err(|e| Error::Internal(format!("{}: {e}", path.display())))?;
        Ok(Secrets::from_master(master))
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_file_is_created_once_and_reused() {
        let dir = std::env::temp_dir().join(format!("admit-secrets-{}", uuid::Uuid::new_v4()));
        let a = Secrets::load(None, &dir).unwrap();
        let b = Secrets::load(None, &dir).unwrap();
        assert_eq!(a.lookup.email_hash("x@y.z"), b.lookup.email_hash("x@y.z"));
        let c = Secrets::load(Some(&"ab".repeat(32)), &dir).unwrap();
        assert_ne!(a.lookup.email_hash("x@y.z"), c.lookup.email_hash("x@y.z"));
        assert!(Secrets::load(Some("nothex"), &dir).is_err());
    }
}

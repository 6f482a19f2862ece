//! Row authentication: HMAC-SHA-256 tags over what a database row *means*, under a key that
//! lives only sealed in the database (under the master key) and opened in the process.
//!
//! Someone who can write the database but lacks the master key cannot compute a tag, so a row
//! they edit or insert fails [`RowAuthKey::verify`]. The input is built by the store from the
//! row's parsed fields (see `crates/store/src/rowtag.rs`); this module only keys and compares.
//!
//! A tag is one version byte followed by the 32-byte HMAC, so a later key or algorithm can be
//! told apart from this one.

use std::fmt;

use aws_lc_rs::hmac;

use crate::{CryptoError, SecretBytes};

/// The version byte of tags made by [`RowAuthKey`].
pub const TAG_VERSION: u8 = 1;
/// Length of a tag: the version byte and the HMAC.
pub const TAG_LEN: usize = 33;

/// The row-authentication key, ready to tag and verify.
pub struct RowAuthKey {
    key: hmac::Key,
}

impl fmt::Debug for RowAuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RowAuthKey([REDACTED])")
    }
}

impl RowAuthKey {
    /// A key over 32 secret bytes.
    pub fn from_secret(key: &SecretBytes) -> Result<Self, CryptoError> {
        if key.len() != 32 {
            return Err(CryptoError::Invalid);
        }
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, key.expose()),
        })
    }

    /// The tag of `input` (the row's canonical encoding).
    pub fn tag(&self, input: &[u8]) -> Vec<u8> {
        let t = hmac::sign(&self.key, input);
        let mut out = Vec::with_capacity(TAG_LEN);
        out.push(TAG_VERSION);
        out.extend_from_slice(t.as_ref());
        out
    }

    /// Whether `tag` is this key's tag of `input`, compared in constant time.
    pub fn verify(&self, input: &[u8], tag: &[u8]) -> bool {
        match tag.split_first() {
            Some((&TAG_VERSION, mac)) if mac.len() == TAG_LEN - 1 => {
                hmac::verify(&self.key, input, mac).is_ok()
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> RowAuthKey {
        match RowAuthKey::from_secret(&SecretBytes::from_vec(vec![b; 32])) {
            Ok(k) => k,
            Err(e) => unreachable!("{e}"),
        }
    }

    #[test]
    fn tags_verify_and_detect_changes() {
        let k = key(7);
        let t = k.tag(b"row");
        assert_eq!(t.len(), TAG_LEN);
        assert!(k.verify(b"row", &t));
        assert!(!k.verify(b"roW", &t));
        assert!(!key(8).verify(b"row", &t), "another key");
        let mut flipped = t.clone();
        flipped[5] ^= 1;
        assert!(!k.verify(b"row", &flipped));
        let mut other_version = t.clone();
        other_version[0] = 2;
        assert!(!k.verify(b"row", &other_version));
        assert!(!k.verify(b"row", &t[..TAG_LEN - 1]), "truncated");
        assert!(!k.verify(b"row", &[]), "empty");
    }

    #[test]
    fn debug_is_redacted_and_short_keys_refused() {
        assert_eq!(format!("{:?}", key(1)), "RowAuthKey([REDACTED])");
        assert!(RowAuthKey::from_secret(&SecretBytes::from_vec(vec![1; 31])).is_err());
    }
}

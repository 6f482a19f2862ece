//! Keyward's cryptography, and the only crate that names `aws_lc_rs`.
//!
//! What it owns:
//! - [`SecretBytes`]: key material in zeroizing buffers with a redacted `Debug` and no `Clone`.
//! - [`master`]: the master key providers and sealing of every secret row (AES-256-GCM, with an
//!   AAD that binds the row's identity so a row copied onto another fails to open).
//! - [`import`]: RSA-4096 import-token keypairs and the secure-import verification
//!   (RSA-OAEP → AES-GCM nonce open), plus the client-side half used by the CLI and tests.
//! - [`dek`]: wrapping data encryption keys under a root key version (AES-GCM).
//! - [`stream`]: chunked streaming AEAD (STREAM over AES-256-GCM) for files such as backups.
//! - small primitives: randomness, SHA-256, HMAC-SHA-256, constant-time comparison.
//!
//! What must hold:
//! - Plaintext key material only ever lives in [`SecretBytes`] (zeroized on drop).
//! - Every RSA-OAEP failure, whatever its cause, is the same [`ImportError::Oaep`] value.
//! - Errors never say why an AEAD open failed.

pub mod dek;
pub mod import;
pub mod master;
pub mod pkcs11;
pub mod pq;
pub mod rowauth;
mod secret;
pub mod stream;

pub use secret::SecretBytes;

use aws_lc_rs::{constant_time, digest, hmac, rand as lc_rand};

/// Failures of the primitives. Deliberately uninformative: callers map them to one wire error.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum CryptoError {
    /// An AEAD open failed (wrong key, AAD, IV, or tampered bytes). Never more detail.
    #[error("authentication failed")]
    Open,
    /// The system random source or a primitive failed.
    #[error("cryptographic primitive failed")]
    Primitive,
    /// Input of an impossible length or shape (for example a key of 20 bytes).
    #[error("invalid length or encoding")]
    Invalid,
}

/// Fills a fresh buffer with `n` bytes from the system CSPRNG.
pub fn random_bytes(n: usize) -> Result<Vec<u8>, CryptoError> {
    let mut v = vec![0u8; n];
    lc_rand::fill(&mut v).map_err(|_| CryptoError::Primitive)?;
    Ok(v)
}

/// A random secret of `n` bytes, born in a zeroizing buffer.
pub fn random_secret(n: usize) -> Result<SecretBytes, CryptoError> {
    let mut s = SecretBytes::zeroed(n);
    lc_rand::fill(s.expose_mut()).map_err(|_| CryptoError::Primitive)?;
    Ok(s)
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// HMAC-SHA-256 of `data` under `key`.
pub fn hmac_sha256(key: &SecretBytes, data: &[u8]) -> [u8; 32] {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key.expose());
    let tag = hmac::sign(&k, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Verifies an HMAC-SHA-256 tag in constant time.
pub fn hmac_sha256_verify(key: &SecretBytes, data: &[u8], tag: &[u8]) -> bool {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key.expose());
    hmac::verify(&k, data, tag).is_ok()
}

/// Constant-time equality of two byte strings (length is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    constant_time::verify_slices_are_equal(a, b).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ct_eq_basics() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }

    #[test]
    fn hmac_round_trip() {
        let k = SecretBytes::from_vec(vec![7u8; 32]);
        let t = hmac_sha256(&k, b"hello");
        assert!(hmac_sha256_verify(&k, b"hello", &t));
        assert!(!hmac_sha256_verify(&k, b"hellO", &t));
    }

    #[test]
    fn random_is_random() -> Result<(), CryptoError> {
        assert_ne!(random_bytes(32)?, random_bytes(32)?);
        Ok(())
    }
}

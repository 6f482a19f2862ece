//! AES-GCM with a key of 16, 24 or 32 bytes: wrapping DEKs under a root key version, and the
//! nonce step of secure import. The caller builds the AAD; see [`dek_aad`].
//!
//! Wrapping uses [`seal_derived`]: every wrap derives its own AES-256 key from the version's
//! material and a fresh random 256-bit salt (HKDF-SHA-256), so no AES key ever sees more than
//! one message, and the 2^32-messages bound on random 96-bit IVs under one key (NIST SP
//! 800-38D, section 8.3) does not limit how often a key version may wrap. The bound becomes the
//! chance that two wraps draw the same salt: about n^2 / 2^257 after n wraps.

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, NONCE_LEN};
use aws_lc_rs::hkdf;

use crate::{random_bytes, CryptoError, SecretBytes};

/// AES-GCM IV length (96 bits).
pub const IV_LEN: usize = NONCE_LEN;

fn gcm_key(material: &SecretBytes) -> Result<LessSafeKey, CryptoError> {
    let alg = match material.len() {
        16 => &aead::AES_128_GCM,
        24 => &aead::AES_192_GCM,
        32 => &aead::AES_256_GCM,
        _ => return Err(CryptoError::Invalid),
    };
    let k = UnboundKey::new(alg, material.expose()).map_err(|_| CryptoError::Invalid)?;
    Ok(LessSafeKey::new(k))
}

/// Encrypts `plaintext` under `material` (AES-128/192/256-GCM by its length) with a fresh random
/// 12-byte IV. Returns `(iv, ciphertext || tag)`.
pub fn seal(
    material: &SecretBytes,
    aad: &[u8],
    plaintext: &[u8],
) -> Result<([u8; IV_LEN], Vec<u8>), CryptoError> {
    let key = gcm_key(material)?;
    let mut iv = [0u8; IV_LEN];
    iv.copy_from_slice(&random_bytes(IV_LEN)?);
    let mut buf = plaintext.to_vec();
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(iv), Aad::from(aad), &mut buf)
        .map_err(|_| CryptoError::Primitive)?;
    Ok((iv, buf))
}

/// Opens `ciphertext || tag` under `material`. Any failure is [`CryptoError::Open`] (or
/// [`CryptoError::Invalid`] for an IV or key of impossible length).
pub fn open(
    material: &SecretBytes,
    iv: &[u8],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<SecretBytes, CryptoError> {
    let key = gcm_key(material)?;
    let nonce = Nonce::try_assume_unique_for_key(iv).map_err(|_| CryptoError::Invalid)?;
    let mut buf = SecretBytes::copy_from(ciphertext);
    let n = key
        .open_in_place(nonce, Aad::from(aad), buf.expose_mut())
        .map_err(|_| CryptoError::Open)?
        .len();
    Ok(SecretBytes::copy_from(
        buf.expose().get(..n).unwrap_or_default(),
    ))
}

/// Length of the per-wrap salt of [`seal_derived`].
pub const SALT_LEN: usize = 32;

const WRAP_KDF_INFO: &[u8] = b"keyward-wrap-key-v1";

/// The single-use AES-256-GCM key of one wrap: HKDF-SHA-256 of the version's material with
/// the wrap's salt.
fn derived_key(material: &SecretBytes, salt: &[u8]) -> Result<LessSafeKey, CryptoError> {
    if !matches!(material.len(), 16 | 24 | 32) || salt.len() != SALT_LEN {
        return Err(CryptoError::Invalid);
    }
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(material.expose());
    let info = [WRAP_KDF_INFO];
    let okm = prk
        .expand(&info, &aead::AES_256_GCM)
        .map_err(|_| CryptoError::Primitive)?;
    Ok(LessSafeKey::new(UnboundKey::from(okm)))
}

/// Encrypts `plaintext` under a key derived from `material` and a fresh random salt (see the
/// module docs), with a random IV. Returns `(salt, iv, ciphertext || tag)`.
#[allow(clippy::type_complexity)]
pub fn seal_derived(
    material: &SecretBytes,
    aad: &[u8],
    plaintext: &[u8],
) -> Result<([u8; SALT_LEN], [u8; IV_LEN], Vec<u8>), CryptoError> {
    // One draw from the random source for both (each draw costs far more than its bytes).
    let fresh = random_bytes(SALT_LEN + IV_LEN)?;
    let (s, i) = fresh.split_at(SALT_LEN);
    let mut salt = [0u8; SALT_LEN];
    salt.copy_from_slice(s);
    let mut iv = [0u8; IV_LEN];
    iv.copy_from_slice(i);
    let key = derived_key(material, &salt)?;
    let mut buf = plaintext.to_vec();
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(iv), Aad::from(aad), &mut buf)
        .map_err(|_| CryptoError::Primitive)?;
    Ok((salt, iv, buf))
}

/// Opens what [`seal_derived`] sealed. Any failure is [`CryptoError::Open`] (or
/// [`CryptoError::Invalid`] for a salt, IV or key of impossible length).
pub fn open_derived(
    material: &SecretBytes,
    salt: &[u8],
    iv: &[u8],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<SecretBytes, CryptoError> {
    let key = derived_key(material, salt)?;
    let nonce = Nonce::try_assume_unique_for_key(iv).map_err(|_| CryptoError::Invalid)?;
    let mut buf = SecretBytes::copy_from(ciphertext);
    let n = key
        .open_in_place(nonce, Aad::from(aad), buf.expose_mut())
        .map_err(|_| CryptoError::Open)?
        .len();
    Ok(SecretBytes::copy_from(
        buf.expose().get(..n).unwrap_or_default(),
    ))
}

/// The AAD that binds a wrapped DEK to its key, key version and the caller's `aad` list:
/// a domain tag, then each part length-prefixed (u32 big-endian), so that no two different
/// lists encode the same way and order matters.
pub fn dek_aad(key_id: &str, version_id: &str, caller_aad: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 + caller_aad.iter().map(|s| s.len() + 4).sum::<usize>());
    out.extend_from_slice(b"keyward-dek-v1");
    for part in [key_id, version_id] {
        push_lp(&mut out, part.as_bytes());
    }
    out.extend_from_slice(&(caller_aad.len() as u32).to_be_bytes());
    for s in caller_aad {
        push_lp(&mut out, s.as_bytes());
    }
    out
}

pub(crate) fn push_lp(out: &mut Vec<u8>, part: &[u8]) {
    out.extend_from_slice(&(part.len() as u32).to_be_bytes());
    out.extend_from_slice(part);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_all_sizes() -> Result<(), CryptoError> {
        for n in [16, 24, 32] {
            let k = crate::random_secret(n)?;
            let (iv, ct) = seal(&k, b"aad", b"dek bytes")?;
            assert_eq!(open(&k, &iv, b"aad", &ct)?.expose(), b"dek bytes");
            assert_eq!(open(&k, &iv, b"aaD", &ct).err(), Some(CryptoError::Open));
        }
        let bad = SecretBytes::from_vec(vec![0; 20]);
        assert_eq!(seal(&bad, b"", b"x").err(), Some(CryptoError::Invalid));
        Ok(())
    }

    #[test]
    fn derived_wraps_round_trip_and_use_a_key_per_wrap() -> Result<(), CryptoError> {
        for n in [16, 24, 32] {
            let k = crate::random_secret(n)?;
            let (salt, iv, ct) = seal_derived(&k, b"aad", b"dek bytes")?;
            assert_eq!(
                open_derived(&k, &salt, &iv, b"aad", &ct)?.expose(),
                b"dek bytes"
            );
            assert_eq!(
                open_derived(&k, &salt, &iv, b"aaD", &ct).err(),
                Some(CryptoError::Open)
            );
            let mut other = salt;
            other[0] ^= 1;
            assert_eq!(
                open_derived(&k, &other, &iv, b"aad", &ct).err(),
                Some(CryptoError::Open),
                "the salt selects the key"
            );
            // Not the version's own key: the plain scheme cannot open it.
            assert_eq!(open(&k, &iv, b"aad", &ct).err(), Some(CryptoError::Open));
            let (salt2, _, _) = seal_derived(&k, b"aad", b"dek bytes")?;
            assert_ne!(salt, salt2);
            assert_eq!(
                open_derived(&k, &salt[..31], &iv, b"aad", &ct).err(),
                Some(CryptoError::Invalid)
            );
        }
        Ok(())
    }

    #[test]
    fn aad_is_unambiguous_and_ordered() {
        let a = dek_aad("k", "v", &["ab".into(), "c".into()]);
        let b = dek_aad("k", "v", &["a".into(), "bc".into()]);
        let c = dek_aad("k", "v", &["c".into(), "ab".into()]);
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_ne!(dek_aad("k", "v", &[]), dek_aad("k", "v", &["".into()]));
    }
}

//! AES-GCM with a key of 16, 24 or 32 bytes: wrapping DEKs under a root key version, and the
//! nonce step of secure import. The caller builds the AAD; see [`dek_aad`].

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, NONCE_LEN};

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
    fn aad_is_unambiguous_and_ordered() {
        let a = dek_aad("k", "v", &["ab".into(), "c".into()]);
        let b = dek_aad("k", "v", &["a".into(), "bc".into()]);
        let c = dek_aad("k", "v", &["c".into(), "ab".into()]);
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_ne!(dek_aad("k", "v", &[]), dek_aad("k", "v", &["".into()]));
    }
}

//! Hybrid post-quantum import tokens: X-Wing (ML-KEM-768 + X25519), HKDF-SHA-256, AES-256-GCM.
//!
//! An X-Wing import token replaces the RSA-4096 public key of a classic token with an X-Wing
//! encapsulation key (1216 bytes). The client encapsulates to it, expands the 32-byte shared
//! secret with HKDF-SHA-256 into an AES-256 key and a 12-byte IV, bound to the token id, the
//! instance id and the token's nonce ([`Binding`]), and seals the key material with AES-256-GCM.
//! Everything else about a secure import is unchanged: the nonce is still encrypted under the
//! material with AES-GCM, and the token's lifetime, retrievals and failure limit still hold.
//!
//! Wire format of `payload` (base64 of): `X-Wing ciphertext (1120 bytes) || AES-256-GCM(material) || tag (16)`.
//! Every failure to open it (wrong length, wrong token, tampered byte, material of a length
//! other than 16, 24 or 32) is the one [`ImportError::Oaep`], as for RSA.
//!
//! Specifications: X-Wing is draft-connolly-cfrg-xwing-kem-06 (its combiner is SHA3-256 over
//! both shared secrets, the X25519 ciphertext and public key, and a label); ML-KEM-768 is FIPS
//! 203; X25519 is RFC 7748; HKDF is RFC 5869. `docs/import-tokens.md` documents the construction
//! and the crates.

use std::fmt;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::hkdf::{KeyType, Salt, HKDF_SHA256};
use x_wing::{Decapsulate, KeyExport};

use crate::import::{pem_decode, pem_encode, ImportError};
use crate::{random_bytes, CryptoError, SecretBytes};

/// The token algorithm's wire name (`algorithm` of `POST /api/v2/import_token`).
pub const TOKEN_ALGORITHM: &str = "XWING_MLKEM768_X25519";
/// The import's wire name (`encryptionAlgorithm` of a secure import).
pub const ENCRYPTION_ALGORITHM: &str = "XWING_HKDF_SHA256_AES_256_GCM";
/// The PEM label the public key is kept under (the row's public key column).
pub const PUBLIC_LABEL: &str = "XWING PUBLIC KEY";
/// The HKDF `info` prefix; the binding follows it.
const INFO_LABEL: &[u8] = b"keyward import-token x-wing v1";
/// The sealed private form: this tag, then the 32-byte X-Wing seed.
const SEALED_TAG: &[u8] = b"keyward-xwing-v1:";

pub const PUBLIC_KEY_LEN: usize = x_wing::ENCAPSULATION_KEY_SIZE;
pub const KEM_CIPHERTEXT_LEN: usize = x_wing::CIPHERTEXT_SIZE;
const TAG_LEN: usize = 16;
const IV_LEN: usize = 12;

/// What the derived key is bound to: the token, its instance and its nonce.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    pub token_id: &'a str,
    pub instance_id: &'a str,
    pub nonce: &'a [u8],
}

impl Binding<'_> {
    /// `INFO_LABEL || len16(token) || token || len16(instance) || instance || len16(nonce) || nonce`.
    fn info(&self) -> Vec<u8> {
        let mut info = INFO_LABEL.to_vec();
        for part in [
            self.token_id.as_bytes(),
            self.instance_id.as_bytes(),
            self.nonce,
        ] {
            let len = u16::try_from(part.len()).unwrap_or(u16::MAX);
            info.extend_from_slice(&len.to_be_bytes());
            info.extend_from_slice(part);
        }
        info
    }
}

struct Okm;

impl KeyType for Okm {
    fn len(&self) -> usize {
        32 + IV_LEN
    }
}

/// HKDF-SHA-256 (empty salt) of the X-Wing shared secret into an AES-256 key and an IV.
fn derive(
    shared: &[u8],
    binding: &Binding<'_>,
) -> Result<(SecretBytes, [u8; IV_LEN]), CryptoError> {
    let prk = Salt::new(HKDF_SHA256, &[]).extract(shared);
    let info = binding.info();
    let parts = [info.as_slice()];
    let okm = prk
        .expand(&parts, Okm)
        .map_err(|_| CryptoError::Primitive)?;
    let mut out = SecretBytes::zeroed(32 + IV_LEN);
    okm.fill(out.expose_mut())
        .map_err(|_| CryptoError::Primitive)?;
    let mut iv = [0u8; IV_LEN];
    iv.copy_from_slice(out.expose().get(32..).unwrap_or_default());
    Ok((
        SecretBytes::copy_from(out.expose().get(..32).unwrap_or_default()),
        iv,
    ))
}

fn aead(key: &SecretBytes) -> Result<LessSafeKey, CryptoError> {
    UnboundKey::new(&AES_256_GCM, key.expose())
        .map(LessSafeKey::new)
        .map_err(|_| CryptoError::Primitive)
}

/// An X-Wing import-token keypair. The private half (a 32-byte seed) leaves only sealed.
pub struct XWingKeyPair {
    dk: x_wing::DecapsulationKey,
    public_pem: String,
}

impl fmt::Debug for XWingKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XWingKeyPair").finish_non_exhaustive()
    }
}

impl XWingKeyPair {
    /// A fresh keypair from 32 random bytes (microseconds, unlike RSA-4096).
    pub fn generate() -> Result<Self, CryptoError> {
        let seed = crate::random_secret(32)?;
        Self::from_seed(seed.expose())
    }

    fn from_seed(seed: &[u8]) -> Result<Self, CryptoError> {
        let mut sk = [0u8; x_wing::DECAPSULATION_KEY_SIZE];
        if seed.len() != sk.len() {
            return Err(CryptoError::Invalid);
        }
        sk.copy_from_slice(seed);
        let dk = x_wing::DecapsulationKey::from(sk);
        zeroize::Zeroize::zeroize(&mut sk);
        let public = dk.encapsulation_key_bytes();
        Ok(Self {
            dk,
            public_pem: pem_encode(PUBLIC_LABEL, &public),
        })
    }

    /// Whether `sealed_form` (an opened sealed private key) is an X-Wing key.
    pub fn is_sealed_form(opened: &[u8]) -> bool {
        opened.starts_with(SEALED_TAG)
    }

    /// Loads a keypair from its opened sealed form.
    pub fn from_sealed_form(opened: &SecretBytes) -> Result<Self, CryptoError> {
        let seed = opened
            .expose()
            .strip_prefix(SEALED_TAG)
            .ok_or(CryptoError::Invalid)?;
        Self::from_seed(seed)
    }

    /// The private key (tag and seed) in a zeroizing buffer, to be sealed under the master key.
    pub fn sealed_form(&self) -> SecretBytes {
        let mut v = SecretBytes::zeroed(SEALED_TAG.len() + x_wing::DECAPSULATION_KEY_SIZE);
        let buf = v.expose_mut();
        buf[..SEALED_TAG.len()].copy_from_slice(SEALED_TAG);
        buf[SEALED_TAG.len()..].copy_from_slice(self.dk.as_bytes());
        v
    }

    /// The encapsulation key in PEM armour (`XWING PUBLIC KEY`), as the row keeps it.
    pub fn public_pem(&self) -> &str {
        &self.public_pem
    }

    /// Decrypts imported key material. Every failure is [`ImportError::Oaep`].
    pub fn decrypt_material(
        &self,
        binding: &Binding<'_>,
        payload: &[u8],
    ) -> Result<SecretBytes, ImportError> {
        let (kem_ct, sealed) = payload
            .split_at_checked(KEM_CIPHERTEXT_LEN)
            .ok_or(ImportError::Oaep)?;
        if !matches!(sealed.len().checked_sub(TAG_LEN), Some(16 | 24 | 32)) {
            return Err(ImportError::Oaep);
        }
        let ct = x_wing::Ciphertext::try_from(kem_ct).map_err(|_| ImportError::Oaep)?;
        let shared = SecretBytes::copy_from(self.dk.decapsulate(&ct).as_slice());
        let (key, iv) = derive(shared.expose(), binding).map_err(|_| ImportError::Oaep)?;
        let mut buf = SecretBytes::copy_from(sealed);
        let n = aead(&key)
            .map_err(|_| ImportError::Oaep)?
            .open_in_place(
                Nonce::assume_unique_for_key(iv),
                Aad::from(kem_ct),
                buf.expose_mut(),
            )
            .map_err(|_| ImportError::Oaep)?
            .len();
        Ok(SecretBytes::copy_from(
            buf.expose().get(..n).unwrap_or_default(),
        ))
    }
}

trait EncapsulationKeyBytes {
    fn encapsulation_key_bytes(&self) -> Vec<u8>;
}

impl EncapsulationKeyBytes for x_wing::DecapsulationKey {
    fn encapsulation_key_bytes(&self) -> Vec<u8> {
        use x_wing::Decapsulator;
        self.encapsulation_key().to_bytes().to_vec()
    }
}

/// The raw encapsulation key of a token's public key as its row keeps it (PEM armour), or
/// `None` when `public_pem` is not an X-Wing key (an RSA token).
pub fn public_key_from_pem(public_pem: &str) -> Option<Vec<u8>> {
    if !public_pem.starts_with(&format!("-----BEGIN {PUBLIC_LABEL}-----")) {
        return None;
    }
    pem_decode(public_pem).filter(|k| k.len() == PUBLIC_KEY_LEN)
}

/// Client side: encrypts `material` (16, 24 or 32 bytes) to the token's raw encapsulation key.
/// Returns the `payload` bytes (base64 them for the wire).
pub fn encrypt_material(
    public_key: &[u8],
    binding: &Binding<'_>,
    material: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let randomness = random_bytes(x_wing::ENCAPSULATION_RANDOMNESS_SIZE)?;
    encrypt_material_with(public_key, binding, material, &randomness)
}

/// [`encrypt_material`] with the encapsulation's 64 random bytes given (known-answer tests).
pub fn encrypt_material_with(
    public_key: &[u8],
    binding: &Binding<'_>,
    material: &[u8],
    randomness: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    if !matches!(material.len(), 16 | 24 | 32) {
        return Err(CryptoError::Invalid);
    }
    let ek = x_wing::EncapsulationKey::try_from(public_key).map_err(|_| CryptoError::Invalid)?;
    let mut r = [0u8; x_wing::ENCAPSULATION_RANDOMNESS_SIZE];
    if randomness.len() != r.len() {
        return Err(CryptoError::Invalid);
    }
    r.copy_from_slice(randomness);
    let (ct, shared) = ek.encapsulate_deterministic(&r.into());
    zeroize::Zeroize::zeroize(&mut r);
    let shared = SecretBytes::copy_from(shared.as_slice());
    let (key, iv) = derive(shared.expose(), binding)?;
    let mut sealed = material.to_vec();
    aead(&key)?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(iv),
            Aad::from(ct.as_slice()),
            &mut sealed,
        )
        .map_err(|_| CryptoError::Primitive)?;
    let mut out = ct.to_vec();
    out.extend_from_slice(&sealed);
    zeroize::Zeroize::zeroize(&mut sealed);
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn binding() -> Binding<'static> {
        Binding {
            token_id: "0193a1b2-0000-7000-8000-000000000001",
            instance_id: "instance-a",
            nonce: b"0123456789ab",
        }
    }

    #[test]
    fn round_trip_for_every_material_length() {
        let kp = XWingKeyPair::generate().unwrap();
        let pk = public_key_from_pem(kp.public_pem()).unwrap();
        for n in [16, 24, 32] {
            let m = vec![7u8; n];
            let payload = encrypt_material(&pk, &binding(), &m).unwrap();
            assert_eq!(payload.len(), KEM_CIPHERTEXT_LEN + n + TAG_LEN);
            let out = kp.decrypt_material(&binding(), &payload).unwrap();
            assert_eq!(out.expose(), m.as_slice());
        }
    }

    #[test]
    fn sealed_form_reopens_the_same_key() {
        let kp = XWingKeyPair::generate().unwrap();
        let sealed = kp.sealed_form();
        assert!(XWingKeyPair::is_sealed_form(sealed.expose()));
        let again = XWingKeyPair::from_sealed_form(&sealed).unwrap();
        assert_eq!(again.public_pem(), kp.public_pem());
        assert!(!XWingKeyPair::is_sealed_form(b"\x30\x82"));
    }

    #[test]
    fn every_tampering_is_the_one_uniform_failure() {
        let kp = XWingKeyPair::generate().unwrap();
        let pk = public_key_from_pem(kp.public_pem()).unwrap();
        let payload = encrypt_material(&pk, &binding(), &[9u8; 32]).unwrap();
        // A flipped bit anywhere: in the ML-KEM part, the X25519 part, the sealed material, the tag.
        for at in [0, 1087, 1088, 1119, 1120, 1151, payload.len() - 1] {
            let mut p = payload.clone();
            p[at] ^= 1;
            assert_eq!(
                kp.decrypt_material(&binding(), &p).unwrap_err(),
                ImportError::Oaep,
                "byte {at}"
            );
        }
        // Truncated, extended, empty.
        for p in [
            &payload[..payload.len() - 1],
            &payload[..KEM_CIPHERTEXT_LEN],
            &[][..],
        ] {
            assert_eq!(
                kp.decrypt_material(&binding(), p).unwrap_err(),
                ImportError::Oaep
            );
        }
        let mut longer = payload.clone();
        longer.push(0);
        assert_eq!(
            kp.decrypt_material(&binding(), &longer).unwrap_err(),
            ImportError::Oaep
        );
        // Another token's key.
        let other = XWingKeyPair::generate().unwrap();
        assert_eq!(
            other.decrypt_material(&binding(), &payload).unwrap_err(),
            ImportError::Oaep
        );
    }

    #[test]
    fn the_key_is_bound_to_token_instance_and_nonce() {
        let kp = XWingKeyPair::generate().unwrap();
        let pk = public_key_from_pem(kp.public_pem()).unwrap();
        let payload = encrypt_material(&pk, &binding(), &[1u8; 16]).unwrap();
        let b = binding();
        for wrong in [
            Binding {
                token_id: "0193a1b2-0000-7000-8000-000000000002",
                ..b
            },
            Binding {
                instance_id: "instance-b",
                ..b
            },
            Binding {
                nonce: b"0123456789ac",
                ..b
            },
        ] {
            assert_eq!(
                kp.decrypt_material(&wrong, &payload).unwrap_err(),
                ImportError::Oaep
            );
        }
    }

    #[test]
    fn bad_client_inputs_are_refused() {
        let kp = XWingKeyPair::generate().unwrap();
        let pk = public_key_from_pem(kp.public_pem()).unwrap();
        assert!(encrypt_material(&pk, &binding(), &[0u8; 20]).is_err());
        assert!(encrypt_material(&pk[..100], &binding(), &[0u8; 32]).is_err());
        assert!(public_key_from_pem(
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
        )
        .is_none());
        assert!(
            format!("{kp:?}").len() < 40,
            "Debug shows nothing of the key"
        );
    }
}

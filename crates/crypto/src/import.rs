//! Import tokens: RSA-4096 keypairs, and verification of a secure import.
//!
//! Server side, [`verify_secure_import`] runs the Key Protect checks in order:
//! RSA-OAEP decrypt of the material (any failure, including a material length other than
//! 16/24/32, is the one [`ImportError::Oaep`]) → AES-GCM open of the encrypted nonce under the
//! material ([`ImportError::NonceIv`]) → constant-time compare with the token's nonce
//! ([`ImportError::NonceMismatch`]).
//!
//! Client side, [`encrypt_material`] and [`encrypt_nonce`] do what IBM's clients do: OAEP with
//! SHA-256 and MGF1-SHA-256 and an empty label; AES-GCM with a random 12-byte IV and no AAD.

use std::fmt;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{
    KeySize, OaepAlgorithm, OaepPrivateDecryptingKey, OaepPublicEncryptingKey,
    PrivateDecryptingKey, PublicEncryptingKey, OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256,
};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use crate::{ct_eq, dek, CryptoError, SecretBytes};

/// The OAEP variants Key Protect clients use. PKCS#1 v1.5 is deliberately absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OaepHash {
    /// `RSAES_OAEP_SHA_256`: SHA-256 with MGF1-SHA-256 (the default).
    Sha256,
    /// `RSAES_OAEP_SHA_1`: SHA-1 with MGF1-SHA-1.
    Sha1,
}

impl OaepHash {
    /// Parses the wire name exactly (case-sensitive).
    pub fn from_wire(s: &str) -> Option<Self> {
        match s {
            "RSAES_OAEP_SHA_256" => Some(Self::Sha256),
            "RSAES_OAEP_SHA_1" => Some(Self::Sha1),
            _ => None,
        }
    }

    pub fn wire_name(self) -> &'static str {
        match self {
            Self::Sha256 => "RSAES_OAEP_SHA_256",
            Self::Sha1 => "RSAES_OAEP_SHA_1",
        }
    }

    fn alg(self) -> &'static OaepAlgorithm {
        match self {
            Self::Sha256 => &OAEP_SHA256_MGF1SHA256,
            Self::Sha1 => &OAEP_SHA1_MGF1SHA1,
        }
    }
}

/// Why a secure import was refused. The variants are the only distinctions a client may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// Any RSA-OAEP failure, or material of a length other than 16/24/32 bytes.
    #[error("the encrypted key material could not be decrypted")]
    Oaep,
    /// The encrypted nonce does not authenticate under the material and IV.
    #[error("the encrypted nonce could not be opened with the key material and iv")]
    NonceIv,
    /// The nonce opened but is not the token's nonce.
    #[error("the nonce does not match the import token's nonce")]
    NonceMismatch,
}

/// An RSA-4096 import-token keypair. The private half never leaves this type except sealed
/// (see [`ImportKeyPair::pkcs8`]).
pub struct ImportKeyPair {
    oaep: OaepPrivateDecryptingKey,
    key: PrivateDecryptingKey,
    public_pem: String,
}

impl fmt::Debug for ImportKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportKeyPair").finish_non_exhaustive()
    }
}

impl ImportKeyPair {
    /// Generates a fresh RSA-4096 keypair (about a second of CPU: call it off the async runtime).
    pub fn generate() -> Result<Self, CryptoError> {
        let key =
            PrivateDecryptingKey::generate(KeySize::Rsa4096).map_err(|_| CryptoError::Primitive)?;
        Self::from_key(key)
    }

    /// Loads a keypair from PKCS#8 DER (as opened from its sealed row).
    pub fn from_pkcs8(der: &SecretBytes) -> Result<Self, CryptoError> {
        let key =
            PrivateDecryptingKey::from_pkcs8(der.expose()).map_err(|_| CryptoError::Invalid)?;
        Self::from_key(key)
    }

    fn from_key(key: PrivateDecryptingKey) -> Result<Self, CryptoError> {
        let spki = key
            .public_key()
            .as_der()
            .map_err(|_| CryptoError::Primitive)?;
        let public_pem = pem_encode("PUBLIC KEY", spki.as_ref());
        let oaep =
            OaepPrivateDecryptingKey::new(key.clone()).map_err(|_| CryptoError::Primitive)?;
        Ok(Self {
            oaep,
            key,
            public_pem,
        })
    }

    /// The private key as PKCS#8 DER, in a zeroizing buffer, to be sealed under the master key.
    pub fn pkcs8(&self) -> Result<SecretBytes, CryptoError> {
        let der = self.key.as_der().map_err(|_| CryptoError::Primitive)?;
        Ok(SecretBytes::copy_from(der.as_ref()))
    }

    /// The public key as PEM SubjectPublicKeyInfo text with a trailing newline.
    pub fn public_pem(&self) -> &str {
        &self.public_pem
    }

    /// Modulus size in bytes (512 for RSA-4096): the only valid ciphertext length.
    pub fn modulus_len(&self) -> usize {
        self.oaep.key_size_bytes()
    }

    /// Raw RSA-OAEP decryption with an optional label. Every failure is [`ImportError::Oaep`].
    pub fn oaep_decrypt(
        &self,
        hash: OaepHash,
        label: Option<&[u8]>,
        ciphertext: &[u8],
    ) -> Result<SecretBytes, ImportError> {
        let mut out = SecretBytes::zeroed(self.oaep.min_output_size());
        // A wrong-length ciphertext goes through the same call and fails inside it, so that
        // every failure takes the same path.
        let n = self
            .oaep
            .decrypt(hash.alg(), ciphertext, out.expose_mut(), label)
            .map_err(|_| ImportError::Oaep)?
            .len();
        Ok(SecretBytes::copy_from(
            out.expose().get(..n).unwrap_or_default(),
        ))
    }

    /// Decrypts imported root key material: OAEP with an empty label, and a length of 16, 24
    /// or 32 bytes. Every failure is [`ImportError::Oaep`].
    pub fn decrypt_material(
        &self,
        hash: OaepHash,
        ciphertext: &[u8],
    ) -> Result<SecretBytes, ImportError> {
        let m = self.oaep_decrypt(hash, None, ciphertext)?;
        if matches!(m.len(), 16 | 24 | 32) {
            Ok(m)
        } else {
            Err(ImportError::Oaep)
        }
    }
}

/// The server-side check of a secure import, in Key Protect's order. On success returns the
/// key material.
pub fn verify_secure_import(
    keypair: &ImportKeyPair,
    hash: OaepHash,
    payload: &[u8],
    encrypted_nonce: &[u8],
    iv: &[u8],
    expected_nonce: &[u8],
) -> Result<SecretBytes, ImportError> {
    let material = keypair.decrypt_material(hash, payload)?;
    check_nonce(material, encrypted_nonce, iv, expected_nonce)
}

/// How the key material of a secure import is encrypted (`encryptionAlgorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaterialEncryption {
    /// RSA-OAEP to an RSA-4096 token (Key Protect's only form).
    Oaep(OaepHash),
    /// X-Wing, HKDF-SHA-256 and AES-256-GCM to an X-Wing token ([`crate::pq`]).
    XWing,
}

impl MaterialEncryption {
    /// Parses the wire name exactly (case-sensitive).
    pub fn from_wire(s: &str) -> Option<Self> {
        if s == crate::pq::ENCRYPTION_ALGORITHM {
            return Some(Self::XWing);
        }
        OaepHash::from_wire(s).map(Self::Oaep)
    }
}

/// An import token's keypair: RSA-4096, or X-Wing.
#[derive(Debug)]
pub enum TokenKeyPair {
    Rsa(ImportKeyPair),
    // Boxed: an X-Wing keypair holds its expanded keys (a few KiB).
    XWing(Box<crate::pq::XWingKeyPair>),
}

impl TokenKeyPair {
    /// Loads a keypair from its opened sealed form (PKCS#8 DER for RSA, the tagged seed for
    /// X-Wing).
    pub fn from_sealed_form(opened: &SecretBytes) -> Result<Self, CryptoError> {
        if crate::pq::XWingKeyPair::is_sealed_form(opened.expose()) {
            crate::pq::XWingKeyPair::from_sealed_form(opened).map(|k| Self::XWing(Box::new(k)))
        } else {
            ImportKeyPair::from_pkcs8(opened).map(Self::Rsa)
        }
    }

    /// The private key to seal under the master key.
    pub fn sealed_form(&self) -> Result<SecretBytes, CryptoError> {
        match self {
            Self::Rsa(k) => k.pkcs8(),
            Self::XWing(k) => Ok(k.sealed_form()),
        }
    }

    /// The public key as the token's row keeps it (PEM).
    pub fn public_pem(&self) -> &str {
        match self {
            Self::Rsa(k) => k.public_pem(),
            Self::XWing(k) => k.public_pem(),
        }
    }

    /// Decrypts the material. A request whose `encryptionAlgorithm` does not fit the token
    /// fails like any other undecryptable payload ([`ImportError::Oaep`]).
    pub fn decrypt_material(
        &self,
        enc: MaterialEncryption,
        binding: &crate::pq::Binding<'_>,
        payload: &[u8],
    ) -> Result<SecretBytes, ImportError> {
        match (self, enc) {
            (Self::Rsa(k), MaterialEncryption::Oaep(h)) => k.decrypt_material(h, payload),
            (Self::XWing(k), MaterialEncryption::XWing) => k.decrypt_material(binding, payload),
            _ => Err(ImportError::Oaep),
        }
    }
}

/// The server-side check of a secure import with either kind of token, in Key Protect's order
/// (material, then the nonce under it, then the constant-time nonce compare). The binding's
/// nonce is the token's nonce.
pub fn verify_token_import(
    keypair: &TokenKeyPair,
    enc: MaterialEncryption,
    binding: &crate::pq::Binding<'_>,
    payload: &[u8],
    encrypted_nonce: &[u8],
    iv: &[u8],
) -> Result<SecretBytes, ImportError> {
    let material = keypair.decrypt_material(enc, binding, payload)?;
    check_nonce(material, encrypted_nonce, iv, binding.nonce)
}

fn check_nonce(
    material: SecretBytes,
    encrypted_nonce: &[u8],
    iv: &[u8],
    expected_nonce: &[u8],
) -> Result<SecretBytes, ImportError> {
    let nonce = dek::open(&material, iv, &[], encrypted_nonce).map_err(|_| ImportError::NonceIv)?;
    if ct_eq(nonce.expose(), expected_nonce) {
        Ok(material)
    } else {
        Err(ImportError::NonceMismatch)
    }
}

/// Client side: encrypts key material for the token whose public key is `public_pem`.
pub fn encrypt_material(
    public_pem: &str,
    hash: OaepHash,
    material: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let der = pem_decode(public_pem).ok_or(CryptoError::Invalid)?;
    let pk = PublicEncryptingKey::from_der(&der).map_err(|_| CryptoError::Invalid)?;
    let oaep = OaepPublicEncryptingKey::new(pk).map_err(|_| CryptoError::Invalid)?;
    let mut out = vec![0u8; oaep.ciphertext_size()];
    let n = oaep
        .encrypt(hash.alg(), material, &mut out, None)
        .map_err(|_| CryptoError::Invalid)?
        .len();
    out.truncate(n);
    Ok(out)
}

/// Client side: encrypts the token's nonce under the key material with a random 12-byte IV
/// and no AAD. Returns `(iv, ciphertext || tag)`.
pub fn encrypt_nonce(
    material: &SecretBytes,
    nonce: &[u8],
) -> Result<([u8; dek::IV_LEN], Vec<u8>), CryptoError> {
    dek::seal(material, &[], nonce)
}

/// PEM-encodes `der` with 64-character lines and a trailing newline.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = B64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Decodes the first PEM block of `pem` to DER.
pub fn pem_decode(pem: &str) -> Option<Vec<u8>> {
    let mut body = String::new();
    let mut inside = false;
    for line in pem.lines() {
        let line = line.trim();
        if line.starts_with("-----BEGIN ") {
            inside = true;
        } else if line.starts_with("-----END ") {
            return B64.decode(body.as_bytes()).ok();
        } else if inside {
            body.push_str(line);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random_secret;
    use std::sync::OnceLock;

    fn kp() -> &'static ImportKeyPair {
        static KP: OnceLock<ImportKeyPair> = OnceLock::new();
        KP.get_or_init(|| match ImportKeyPair::generate() {
            Ok(k) => k,
            Err(e) => unreachable!("keygen failed: {e}"),
        })
    }

    #[test]
    fn pem_is_spki_4096_with_trailing_newline() {
        let pem = kp().public_pem();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert!(pem.ends_with("-----END PUBLIC KEY-----\n"));
        assert_eq!(pem.len(), 800);
        assert_eq!(kp().modulus_len(), 512);
    }

    #[test]
    fn full_secure_import_round_trip_all_sizes_and_hashes() -> Result<(), CryptoError> {
        let nonce = crate::random_bytes(12)?;
        for n in [16, 24, 32] {
            for h in [OaepHash::Sha256, OaepHash::Sha1] {
                let m = random_secret(n)?;
                let ct = encrypt_material(kp().public_pem(), h, m.expose())?;
                let (iv, en) = encrypt_nonce(&m, &nonce)?;
                let got = verify_secure_import(kp(), h, &ct, &en, &iv, &nonce);
                assert_eq!(
                    got.map(|g| g.expose().to_vec()).ok(),
                    Some(m.expose().to_vec())
                );
                // wrong declared hash: the uniform OAEP error
                let other = if h == OaepHash::Sha1 {
                    OaepHash::Sha256
                } else {
                    OaepHash::Sha1
                };
                assert_eq!(
                    verify_secure_import(kp(), other, &ct, &en, &iv, &nonce).err(),
                    Some(ImportError::Oaep)
                );
            }
        }
        Ok(())
    }

    #[test]
    fn failures_are_classified() -> Result<(), CryptoError> {
        let nonce = crate::random_bytes(12)?;
        let m = random_secret(32)?;
        let ct = encrypt_material(kp().public_pem(), OaepHash::Sha256, m.expose())?;
        let (iv, en) = encrypt_nonce(&m, &nonce)?;
        let v = |p: &[u8], e: &[u8], i: &[u8], n: &[u8]| {
            verify_secure_import(kp(), OaepHash::Sha256, p, e, i, n).err()
        };
        let mut flipped = ct.clone();
        flipped[100] ^= 1;
        assert_eq!(v(&flipped, &en, &iv, &nonce), Some(ImportError::Oaep));
        assert_eq!(v(&ct[..511], &en, &iv, &nonce), Some(ImportError::Oaep));
        assert_eq!(
            v(&[ct.clone(), vec![0]].concat(), &en, &iv, &nonce),
            Some(ImportError::Oaep)
        );
        for bad_len in [0usize, 15, 17, 33] {
            let mat = vec![1u8; bad_len];
            let c = encrypt_material(kp().public_pem(), OaepHash::Sha256, &mat)?;
            assert_eq!(v(&c, &en, &iv, &nonce), Some(ImportError::Oaep));
        }
        let mut en2 = en.clone();
        en2[0] ^= 1;
        assert_eq!(v(&ct, &en2, &iv, &nonce), Some(ImportError::NonceIv));
        let mut iv2 = iv;
        iv2[0] ^= 1;
        assert_eq!(v(&ct, &en, &iv2, &nonce), Some(ImportError::NonceIv));
        assert_eq!(v(&ct, &en, &iv[..11], &nonce), Some(ImportError::NonceIv));
        assert_eq!(
            v(&ct, &en, &iv, &[0u8; 12]),
            Some(ImportError::NonceMismatch)
        );
        Ok(())
    }

    #[test]
    fn pkcs8_round_trip_keeps_public_key() -> Result<(), CryptoError> {
        let der = kp().pkcs8()?;
        let again = ImportKeyPair::from_pkcs8(&der)?;
        assert_eq!(again.public_pem(), kp().public_pem());
        assert_eq!(format!("{again:?}"), "ImportKeyPair { .. }");
        Ok(())
    }

    #[test]
    fn algorithm_names_are_exact() {
        assert_eq!(
            OaepHash::from_wire("RSAES_OAEP_SHA_256"),
            Some(OaepHash::Sha256)
        );
        assert_eq!(
            OaepHash::from_wire("RSAES_OAEP_SHA_1"),
            Some(OaepHash::Sha1)
        );
        for bad in [
            "",
            "rsaes_oaep_sha_256",
            "RSAES_OAEP_SHA_512",
            "RSAES_PKCS1_V1_5",
        ] {
            assert_eq!(OaepHash::from_wire(bad), None);
        }
    }
}

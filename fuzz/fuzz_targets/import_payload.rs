//! Secure import (`crates/crypto/src/import.rs`): `verify_secure_import` with a fixed RSA-4096
//! import-token key (generated once per process), a fixed nonce, and fuzzed payload,
//! encryptedNonce and IV. The first byte picks the mode, the second the OAEP hash; the rest is
//! split in three by the next two bytes (lengths):
//! - 0: all three fuzzed;
//! - 1: a genuine payload (32 bytes of material, encrypted at start), fuzzed nonce and IV, so
//!   the AES-GCM step sees arbitrary input;
//! - 2: genuine payload, IV and encrypted nonce, each XORed with the fuzz bytes;
//! - 3: the raw OAEP decryption of the fuzzed payload with a fuzzed label.
//!
//! Oracle: every failure is one of the three uniform `ImportError`s, in Key Protect's order:
//! any payload other than the genuine one (under its hash) is `Oaep`; a genuine payload with any
//! other nonce/IV is `NonceIv`; success only for the genuine triple. No panic.
#![no_main]

use std::sync::OnceLock;

use keyward_crypto::import::{
    encrypt_material, encrypt_nonce, verify_secure_import, ImportError, ImportKeyPair, OaepHash,
};
use keyward_crypto::SecretBytes;
use libfuzzer_sys::fuzz_target;

const NONCE: &[u8] = b"fuzz-nonce12";

struct Fixed {
    kp: ImportKeyPair,
    material: Vec<u8>,
    /// Genuine (payload, iv, encrypted nonce) per hash: [Sha256, Sha1].
    genuine: [(Vec<u8>, Vec<u8>, Vec<u8>); 2],
}

fn fixed() -> &'static Fixed {
    static F: OnceLock<Fixed> = OnceLock::new();
    F.get_or_init(|| {
        let kp = ImportKeyPair::generate().unwrap_or_else(|e| panic!("keygen: {e}"));
        let material = vec![0x5a; 32];
        let mk = |h: OaepHash| {
            let payload = encrypt_material(kp.public_pem(), h, &material)
                .unwrap_or_else(|e| panic!("encrypt: {e}"));
            let (iv, enc) = encrypt_nonce(&SecretBytes::copy_from(&material), NONCE)
                .unwrap_or_else(|e| panic!("nonce: {e}"));
            (payload, iv.to_vec(), enc)
        };
        let genuine = [mk(OaepHash::Sha256), mk(OaepHash::Sha1)];
        Fixed {
            kp,
            material,
            genuine,
        }
    })
}

fn xor(base: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = base.to_vec();
    for (i, x) in with.iter().enumerate() {
        if let Some(t) = out.get_mut(i) {
            *t ^= x;
        }
    }
    out
}

fuzz_target!(init: { let _ = fixed(); }, |data: &[u8]| {
    let [mode, hash_sel, l1, l2, rest @ ..] = data else {
        return;
    };
    let f = fixed();
    let (hash, hi) = if hash_sel % 2 == 0 {
        (OaepHash::Sha256, 0)
    } else {
        (OaepHash::Sha1, 1)
    };
    let (a, rest) = rest.split_at(rest.len().min(*l1 as usize * 4));
    let (b, c) = rest.split_at(rest.len().min(*l2 as usize));
    let (gp, giv, gnonce) = &f.genuine[hi];
    let (payload, enc_nonce, iv) = match mode % 4 {
        0 => (a.to_vec(), b.to_vec(), c.to_vec()),
        1 => (gp.clone(), b.to_vec(), c.to_vec()),
        2 => (xor(gp, a), xor(gnonce, b), xor(giv, c)),
        _ => {
            let label = (!b.is_empty()).then_some(b);
            match f.kp.oaep_decrypt(hash, label, a) {
                Err(ImportError::Oaep) => {}
                Ok(m) => assert!(
                    a == gp.as_slice() && label.is_none() && m.expose() == f.material.as_slice(),
                    "OAEP accepted a ciphertext that was never made"
                ),
                Err(e) => panic!("raw OAEP failed with {e:?}, not the uniform Oaep"),
            }
            return;
        }
    };
    let r = verify_secure_import(&f.kp, hash, &payload, &enc_nonce, &iv, NONCE);
    let payload_ok = payload == *gp;
    let nonce_ok = enc_nonce == *gnonce && iv == *giv;
    match r {
        Ok(m) => assert!(
            payload_ok && nonce_ok && m.expose() == f.material.as_slice(),
            "a secure import was accepted with forged input"
        ),
        Err(ImportError::Oaep) => assert!(!payload_ok, "the genuine payload was refused"),
        Err(ImportError::NonceIv) => assert!(
            payload_ok && !nonce_ok,
            "NonceIv for a forged payload or the genuine nonce"
        ),
        Err(ImportError::NonceMismatch) => panic!(
            "NonceMismatch: an encrypted nonce other than the genuine one opened under the material"
        ),
    }
});

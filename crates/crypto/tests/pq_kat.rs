//! Known-answer tests for the post-quantum import token's parts (`src/pq.rs`,
//! `docs/import-tokens.md`): ML-KEM-768 (FIPS 203, NIST ACVP vectors), X25519 (RFC 7748 §5.2 and
//! §6.1), X-Wing (draft-connolly-cfrg-xwing-kem-06 vectors, which check the SHA3-256 combiner),
//! and Keyward's HKDF-SHA-256 / AES-256-GCM layer (a fixed vector of this repository: any change
//! to the payload format fails it). Vectors: `tests/vectors/pq-kat.json` (sources inside).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use keyward_crypto::pq::{self, Binding};
use ml_kem::array::ArrayN;
#[allow(deprecated)]
use ml_kem::{ExpandedKeyEncoding, FromSeed, KeyExport, MlKem768, TryKeyInit};
use serde_json::Value;
use x_wing::{Decapsulate, Decapsulator};

fn vectors() -> Value {
    serde_json::from_str(include_str!("vectors/pq-kat.json")).unwrap()
}

fn hex(v: &Value) -> Vec<u8> {
    let s = v.as_str().unwrap();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn cases<'a>(v: &'a Value, name: &str) -> &'a Vec<Value> {
    let c = v[name].as_array().unwrap();
    assert!(c.len() >= 3, "{name}: at least three vectors");
    c
}

#[test]
#[allow(deprecated)]
fn ml_kem_768_key_generation() {
    let v = vectors();
    for tc in cases(&v, "mlkem768_keygen") {
        let mut seed = hex(&tc["d"]);
        seed.extend(hex(&tc["z"]));
        let seed = ArrayN::<u8, 64>::try_from(seed.as_slice()).unwrap();
        let (dk, ek) = MlKem768::from_seed(&seed);
        assert_eq!(ek.to_bytes().as_slice(), hex(&tc["ek"]).as_slice());
        assert_eq!(dk.to_expanded_bytes().as_slice(), hex(&tc["dk"]).as_slice());
    }
}

#[test]
fn ml_kem_768_encapsulation() {
    let v = vectors();
    for tc in cases(&v, "mlkem768_encap") {
        let ek = ml_kem::EncapsulationKey768::new_from_slice(&hex(&tc["ek"])).unwrap();
        let m = ArrayN::<u8, 32>::try_from(hex(&tc["m"]).as_slice()).unwrap();
        let (c, k) = ek.encapsulate_deterministic(&m);
        assert_eq!(c.as_slice(), hex(&tc["c"]).as_slice());
        assert_eq!(k.as_slice(), hex(&tc["k"]).as_slice());
    }
}

#[test]
#[allow(deprecated)]
fn ml_kem_768_decapsulation_including_implicit_rejection() {
    let v = vectors();
    for tc in cases(&v, "mlkem768_decap") {
        let dk_bytes = hex(&tc["dk"]);
        let dk = ml_kem::DecapsulationKey768::from_expanded_bytes(
            dk_bytes.as_slice().try_into().unwrap(),
        )
        .unwrap();
        let c = ml_kem::ml_kem_768::Ciphertext::try_from(hex(&tc["c"]).as_slice()).unwrap();
        assert_eq!(dk.decapsulate(&c).as_slice(), hex(&tc["k"]).as_slice());
    }
}

fn arr32(s: &str) -> [u8; 32] {
    hex(&Value::String(s.into())).try_into().unwrap()
}

#[test]
fn x25519_rfc7748() {
    // RFC 7748 §5.2: two single scalar multiplications.
    for (k, u, out) in [
        (
            "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
            "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
            "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552",
        ),
        (
            "4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
            "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
            "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957",
        ),
    ] {
        assert_eq!(x25519_dalek::x25519(arr32(k), arr32(u)), arr32(out));
    }
    // RFC 7748 §6.1: Alice and Bob.
    let alice = arr32("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
    let bob = arr32("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
    let alice_pub = arr32("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
    let bob_pub = arr32("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
    let shared = arr32("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
    assert_eq!(
        x25519_dalek::x25519(alice, x25519_dalek::X25519_BASEPOINT_BYTES),
        alice_pub
    );
    assert_eq!(
        x25519_dalek::x25519(bob, x25519_dalek::X25519_BASEPOINT_BYTES),
        bob_pub
    );
    assert_eq!(x25519_dalek::x25519(alice, bob_pub), shared);
    assert_eq!(x25519_dalek::x25519(bob, alice_pub), shared);
}

#[test]
fn x_wing_draft_06_vectors() {
    let v = vectors();
    for tc in cases(&v, "xwing") {
        let sk: [u8; 32] = hex(&tc["sk"]).try_into().unwrap();
        assert_eq!(
            hex(&tc["seed"]),
            sk.to_vec(),
            "the draft's secret key is its seed"
        );
        let dk = x_wing::DecapsulationKey::from(sk);
        let ek = dk.encapsulation_key();
        assert_eq!(ek.to_bytes().as_slice(), hex(&tc["pk"]).as_slice());
        let eseed: [u8; 64] = hex(&tc["eseed"]).try_into().unwrap();
        let (ct, ss) = ek.encapsulate_deterministic(&eseed.into());
        assert_eq!(ct.as_slice(), hex(&tc["ct"]).as_slice());
        assert_eq!(ss.as_slice(), hex(&tc["ss"]).as_slice());
        assert_eq!(dk.decapsulate(&ct).as_slice(), hex(&tc["ss"]).as_slice());
    }
}

/// The payload format, frozen: the first X-Wing vector's key and encapsulation seed, a fixed
/// binding and material. Decrypting it through the server's code must give the material back.
#[test]
fn keyward_payload_fixed_vector() {
    let v = vectors();
    let tc = &cases(&v, "xwing")[0];
    let binding = Binding {
        token_id: "01939a5e-7c00-7000-8000-000000000001",
        instance_id: "9f1c2d3e-0000-4000-8000-000000000001",
        nonce: b"fixed-nonce!",
    };
    let material = [0x42u8; 32];
    let payload =
        pq::encrypt_material_with(&hex(&tc["pk"]), &binding, &material, &hex(&tc["eseed"]))
            .unwrap();
    assert_eq!(
        &payload[..pq::KEM_CIPHERTEXT_LEN],
        hex(&tc["ct"]).as_slice()
    );
    let expected = hex(&v["keyward_payload_tail"]);
    assert_eq!(&payload[pq::KEM_CIPHERTEXT_LEN..], expected.as_slice());
}

//! Secure import (docs/import-tokens.md): successes with SHA-256 and SHA-1,
//! every bad input with its exact error, the uniform OAEP failure (same status, code and
//! body bytes), and secure rotation. Every refusal leaves keys and the token row unchanged.

use base64::engine::general_purpose::{STANDARD as B64, STANDARD_NO_PAD, URL_SAFE};
use base64::Engine;
use keyward_crypto::import::{encrypt_material, OaepHash};
use serde_json::{json, Value};

use crate::common::*;

#[tokio::test]
async fn secure_import_succeeds_for_16_24_32_with_sha256_and_sha1() {
    let s = shared();
    let c = s.tenant().await;
    let t = c.fresh_token(3600, 2).await;
    for hash in [OaepHash::Sha256, OaepHash::Sha1] {
        for n in [16usize, 24, 32] {
            let m = random(n);
            let k = c
                .create(t.secure_fields(&m, hash).resource())
                .await
                .resource(201);
            assert_eq!(k["imported"], true);
            assert_eq!(k["extractable"], false);
            assert_eq!(k["state"], 1);
            assert_eq!(k["algorithmBitSize"], (n * 8) as u64);
            assert!(k.get("payload").is_none(), "{k}");
            let id = id_of(&k);
            let dek = random(48);
            let ct = c.wrap_bytes(&id, &dek, Some(&["si"])).await;
            assert_eq!(c.unwrap_bytes(&id, &ct, Some(&["si"])).await, dek);
            // The stored material is the imported one.
            assert_eq!(open_blob_with(&m, &id, &ct, &["si".into()]), dek);
            let g = c.get(&format!("/api/v2/keys/{id}")).await.resource(200);
            assert!(g.get("payload").is_none());
        }
    }
    // `encryptionAlgorithm` absent: SHA-256 by default.
    let m = random(32);
    let f = t.secure_fields(&m, OaepHash::Sha256);
    let mut r = f.resource();
    r.as_object_mut().unwrap().remove("encryptionAlgorithm");
    c.create(r).await.resource(201);
    // Field names are case-insensitive (Go client quirks).
    let f = t.secure_fields(&random(24), OaepHash::Sha1);
    let r = json!({
        "Type": KEY_TYPE, "Name": "case", "Extractable": false,
        "Payload": B64.encode(&f.payload), "EncryptedNonce": B64.encode(&f.encrypted_nonce),
        "IV": B64.encode(&f.iv), "EncryptionAlgorithm": f.algorithm,
    });
    c.create(r).await.resource(201);
    // Imports do not consume retrievals.
    assert_eq!(s.snapshot(c.instance_id).await.token.unwrap().remaining, 1);
}

/// One bad resource per case: the same request with one field changed.
fn with(f: &SecureFields, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    let mut r = f.resource();
    edit(r.as_object_mut().unwrap());
    r
}

#[tokio::test]
async fn secure_import_bad_inputs() {
    // Dozens of failures against one token: this server lifts the per-token failure cap
    // (`failed_imports_per_token_are_capped` shows the cap).
    let s = &TestServer::start_with(1, |a| a.import_failure_limit = Some(0));
    let c = s.tenant().await;
    let t = c.fresh_token(3600, 1).await;
    let m = random(32);
    let good = t.secure_fields(&m, OaepHash::Sha256);
    let before = s.snapshot(c.instance_id).await;
    let unchanged = || async { assert_eq!(s.snapshot(c.instance_id).await, before) };

    // ---- The uniform OAEP failure: one status, one code, one body (items 7, 8, 9, 15). ----
    let mut oaep_cases: Vec<(&str, Value)> = Vec::new();
    oaep_cases.push((
        "not base64",
        with(&good, |r| {
            r.insert("payload".into(), json!("this is not base64!"));
        }),
    ));
    let url_safe = loop {
        let f = t.secure_fields(&m, OaepHash::Sha256);
        let u = URL_SAFE.encode(&f.payload);
        if u.contains('-') || u.contains('_') {
            break (f, u);
        }
    };
    oaep_cases.push((
        "url-safe base64",
        with(&url_safe.0, |r| {
            r.insert("payload".into(), json!(url_safe.1));
        }),
    ));
    oaep_cases.push((
        "missing padding",
        with(&good, |r| {
            r.insert(
                "payload".into(),
                json!(STANDARD_NO_PAD.encode(&good.payload)),
            );
        }),
    ));
    oaep_cases.push((
        "extra padding",
        with(&good, |r| {
            r.insert(
                "payload".into(),
                json!(format!("{}=", B64.encode(&good.payload))),
            );
        }),
    ));
    oaep_cases.push((
        "empty payload",
        with(&good, |r| {
            r.insert("payload".into(), json!(""));
        }),
    ));
    for n in [255usize, 511, 513, 1024] {
        let p = random(n);
        oaep_cases.push((
            "wrong length",
            with(&good, |r| {
                r.insert("payload".into(), json!(B64.encode(&p)));
            }),
        ));
    }
    oaep_cases.push((
        "all ones (>= n)",
        with(&good, |r| {
            r.insert("payload".into(), json!(B64.encode(vec![0xffu8; 512])));
        }),
    ));
    oaep_cases.push((
        "zeros",
        with(&good, |r| {
            r.insert("payload".into(), json!(B64.encode(vec![0u8; 512])));
        }),
    ));
    for n in [0usize, 1, 15, 17, 31, 33, 64] {
        // Valid OAEP for the token's key, but material of a wrong length (the nonce is
        // encrypted under the 32-byte material so only the length is wrong).
        let p = encrypt_material(&t.pem, OaepHash::Sha256, &random(n)).unwrap();
        oaep_cases.push((
            "material length",
            with(&good, |r| {
                r.insert("payload".into(), json!(B64.encode(&p)));
            }),
        ));
    }
    for bit in [0usize, 7, 8 * 256 + 3, 8 * 511 + 7] {
        let mut p = good.payload.clone();
        p[bit / 8] ^= 1 << (bit % 8);
        oaep_cases.push((
            "bit flip",
            with(&good, |r| {
                r.insert("payload".into(), json!(B64.encode(&p)));
            }),
        ));
    }
    oaep_cases.push((
        "declared SHA-1, encrypted SHA-256",
        with(&good, |r| {
            r.insert("encryptionAlgorithm".into(), json!("RSAES_OAEP_SHA_1"));
        }),
    ));
    let sha1 = t.secure_fields(&m, OaepHash::Sha1);
    oaep_cases.push((
        "declared SHA-256, encrypted SHA-1",
        with(&sha1, |r| {
            r.insert("encryptionAlgorithm".into(), json!("RSAES_OAEP_SHA_256"));
        }),
    ));
    oaep_cases.push((
        "SHA-1 ciphertext, algorithm absent",
        with(&sha1, |r| {
            r.remove("encryptionAlgorithm");
        }),
    ));
    let other_key = keyward_crypto::import::ImportKeyPair::generate().unwrap();
    let p = encrypt_material(other_key.public_pem(), OaepHash::Sha256, &m).unwrap();
    oaep_cases.push((
        "another public key",
        with(&good, |r| {
            r.insert("payload".into(), json!(B64.encode(&p)));
        }),
    ));
    let mut first: Option<Vec<u8>> = None;
    for (name, res) in &oaep_cases {
        let r = c.create(res.clone()).await;
        assert_eq!(r.status, 400, "{name}: {}", r.text());
        assert_field_error(&r, 400, "INVALID_FIELD_ERR", "payload");
        match &first {
            None => first = Some(r.body.clone()),
            Some(b) => assert_eq!(&r.body, b, "{name}: OAEP failure body differs"),
        }
    }
    unchanged().await;

    // ---- Nonce and IV (items 11, 12). ----
    let wrong_nonce = ImportToken {
        pem: t.pem.clone(),
        nonce: random(12),
    };
    let r = c
        .create(wrong_nonce.secure_fields(&m, OaepHash::Sha256).resource())
        .await;
    assert_field_error(&r, 400, "INCORRECT_NONCE_ERR", "encryptedNonce");
    let longer_nonce = ImportToken {
        pem: t.pem.clone(),
        nonce: [t.nonce.clone(), vec![0]].concat(),
    };
    let r = c
        .create(longer_nonce.secure_fields(&m, OaepHash::Sha256).resource())
        .await;
    assert_field_error(&r, 400, "INCORRECT_NONCE_ERR", "encryptedNonce");
    let mut nonce_iv_cases = Vec::new();
    for bit in [0usize, 13, 8 * 12 + 1, 8 * 27 + 7] {
        let mut en = good.encrypted_nonce.clone();
        en[bit / 8] ^= 1 << (bit % 8);
        nonce_iv_cases.push(with(&good, |r| {
            r.insert("encryptedNonce".into(), json!(B64.encode(&en)));
        }));
    }
    let mut iv = good.iv.clone();
    iv[5] ^= 0x10;
    nonce_iv_cases.push(with(&good, |r| {
        r.insert("iv".into(), json!(B64.encode(&iv)));
    }));
    nonce_iv_cases.push(with(&good, |r| {
        r.insert("iv".into(), json!(B64.encode(random(12))));
    }));
    nonce_iv_cases.push(with(&good, |r| {
        r.insert(
            "encryptedNonce".into(),
            json!(B64.encode(&good.encrypted_nonce[..16])),
        );
    }));
    // The nonce encrypted under other material.
    let other = t.secure_fields(&random(32), OaepHash::Sha256);
    nonce_iv_cases.push(with(&good, |r| {
        r.insert(
            "encryptedNonce".into(),
            json!(B64.encode(&other.encrypted_nonce)),
        );
        r.insert("iv".into(), json!(B64.encode(&other.iv)));
    }));
    for res in nonce_iv_cases {
        let r = c.create(res).await;
        assert_field_error(&r, 400, "INCORRECT_NONCE_IV_ERR", "encryptedNonce");
    }
    unchanged().await;

    // ---- Field shapes: 400 INVALID_FIELD_ERR naming the field (items 12, 14, 15). ----
    let mut field_cases: Vec<(Value, &str)> = Vec::new();
    for n in [0usize, 11, 13, 16, 32] {
        let iv = random(n);
        field_cases.push((
            with(&good, |r| {
                r.insert("iv".into(), json!(B64.encode(&iv)));
            }),
            "iv",
        ));
    }
    field_cases.push((
        with(&good, |r| {
            r.insert("iv".into(), json!("@@not base64@@"));
        }),
        "iv",
    ));
    field_cases.push((
        with(&good, |r| {
            r.insert("iv".into(), json!(URL_SAFE.encode([0xfbu8; 12])));
        }),
        "iv",
    ));
    field_cases.push((
        with(&good, |r| {
            r.insert("iv".into(), json!(12));
        }),
        "iv",
    ));
    field_cases.push((
        with(&good, |r| {
            r.insert("encryptedNonce".into(), json!("@@"));
        }),
        "encryptedNonce",
    ));
    field_cases.push((
        with(&good, |r| {
            r.insert("encryptedNonce".into(), json!(""));
        }),
        "encryptedNonce",
    ));
    field_cases.push((
        with(&good, |r| {
            r.insert("encryptedNonce".into(), json!(B64.encode(random(2000))));
        }),
        "encryptedNonce",
    ));
    field_cases.push((
        with(&good, |r| {
            r.insert("encryptedNonce".into(), json!(["x"]));
        }),
        "encryptedNonce",
    ));
    // Only one of encryptedNonce / iv.
    field_cases.push((
        with(&good, |r| {
            r.remove("iv");
        }),
        "iv",
    ));
    field_cases.push((
        with(&good, |r| {
            r.remove("encryptedNonce");
        }),
        "encryptedNonce",
    ));
    field_cases.push((
        with(&good, |r| {
            r.insert("iv".into(), Value::Null);
        }),
        "iv",
    ));
    // An algorithm without the token fields.
    field_cases.push((
        with(&good, |r| {
            r.remove("iv");
            r.remove("encryptedNonce");
        }),
        "encryptedNonce",
    ));
    for alg in [
        "RSAES_OAEP_SHA_512",
        "RSAES_PKCS1_V1_5",
        "rsaes_oaep_sha_256",
        "RSAES_OAEP_SHA_256 ",
        "",
        "RSAES_OAEP_SHA256",
        "SHA-256",
    ] {
        field_cases.push((
            with(&good, |r| {
                r.insert("encryptionAlgorithm".into(), json!(alg));
            }),
            "encryptionAlgorithm",
        ));
    }
    field_cases.push((
        with(&good, |r| {
            r.insert("encryptionAlgorithm".into(), json!(256));
        }),
        "encryptionAlgorithm",
    ));
    field_cases.push((
        with(&good, |r| {
            r.insert("payload".into(), json!(5));
        }),
        "payload",
    ));
    // Item 18: a token import is never a standard key (also when `extractable` defaults).
    field_cases.push((
        with(&good, |r| {
            r.insert("extractable".into(), json!(true));
        }),
        "extractable",
    ));
    field_cases.push((
        with(&good, |r| {
            r.remove("extractable");
        }),
        "extractable",
    ));
    field_cases.push((
        with(&good, |r| {
            r.insert("extractable".into(), json!("false"));
        }),
        "extractable",
    ));
    // Envelope fields of the resource (item 19).
    field_cases.push((
        with(&good, |r| {
            r.insert("name".into(), json!("a"));
        }),
        "name",
    ));
    field_cases.push((
        with(&good, |r| {
            r.insert("name".into(), json!("a".repeat(91)));
        }),
        "name",
    ));
    field_cases.push((
        with(&good, |r| {
            r.remove("name");
        }),
        "name",
    ));
    field_cases.push((
        with(&good, |r| {
            r.insert("name".into(), json!("ab\ncd"));
        }),
        "name",
    ));
    field_cases.push((
        with(&good, |r| {
            r.insert("name".into(), json!(["ab"]));
        }),
        "name",
    ));
    field_cases.push((
        with(&good, |r| {
            r.insert("type".into(), json!("application/json"));
        }),
        "type",
    ));
    for (res, field) in field_cases {
        let r = c.create(res.clone()).await;
        assert_field_error(&r, 400, "INVALID_FIELD_ERR", field);
    }
    unchanged().await;

    // Payload present with encryptedNonce+iv but no payload: the payload is required.
    let r = c
        .create(with(&good, |r| {
            r.remove("payload");
        }))
        .await;
    assert_field_error(&r, 400, "INVALID_FIELD_ERR", "payload");

    // ---- The collection envelope (item 19). ----
    let res = good.resource();
    let env_cases: Vec<(Value, &str)> = vec![
        (
            json!({"metadata": {"collectionType": KEY_TYPE, "collectionTotal": 2}, "resources": [res]}),
            "COLLECTION_TOTAL_MISMATCH_ERR",
        ),
        (
            json!({"metadata": {"collectionType": KEY_TYPE, "collectionTotal": 0}, "resources": [res]}),
            "COLLECTION_TOTAL_MISMATCH_ERR",
        ),
        (
            json!({"metadata": {"collectionType": KEY_TYPE}, "resources": [res]}),
            "COLLECTION_TOTAL_MISMATCH_ERR",
        ),
        (
            json!({"metadata": {"collectionType": KEY_TYPE, "collectionTotal": "1"}, "resources": [res]}),
            "COLLECTION_TOTAL_MISMATCH_ERR",
        ),
        (
            json!({"metadata": {"collectionType": KEY_TYPE, "collectionTotal": 0}, "resources": []}),
            "BAD_BODY_ERR",
        ),
        (
            json!({"metadata": {"collectionType": KEY_TYPE, "collectionTotal": 2}, "resources": [res, res]}),
            "BAD_BODY_ERR",
        ),
        (
            json!({"metadata": {"collectionType": "application/vnd.ibm.kms.error+json", "collectionTotal": 1}, "resources": [res]}),
            "BAD_BODY_ERR",
        ),
        (
            json!({"metadata": {"collectionType": "application/json", "collectionTotal": 1}, "resources": [res]}),
            "BAD_BODY_ERR",
        ),
        (
            json!({"metadata": {"collectionTotal": 1}, "resources": [res]}),
            "BAD_BODY_ERR",
        ),
        (json!({"resources": [res]}), "BAD_BODY_ERR"),
        (json!({"metadata": {}, "resources": [res]}), "BAD_BODY_ERR"),
        (
            json!({"metadata": {"collectionType": KEY_TYPE, "collectionTotal": 1}}),
            "BAD_BODY_ERR",
        ),
        (
            json!({"metadata": {"collectionType": KEY_TYPE, "collectionTotal": 1}, "resources": res}),
            "BAD_BODY_ERR",
        ),
        (
            json!({"metadata": {"collectionType": KEY_TYPE, "collectionTotal": 1}, "resources": ["x"]}),
            "BAD_BODY_ERR",
        ),
        (json!({"metadata": "x", "resources": [res]}), "BAD_BODY_ERR"),
        (res.clone(), "BAD_BODY_ERR"),
    ];
    for (body, code) in env_cases {
        let r = c.post("/api/v2/keys", &body).await;
        assert_error(&r, 400, code);
    }
    // A body that is JSON but not an object: 400 (code BAD_BODY_ERR or NO_BODY_ERR).
    for body in [json!([res]), json!("x"), json!(1)] {
        let r = c.post("/api/v2/keys", &body).await;
        assert_eq!(r.status, 400, "{}", r.text());
        let code = r.json()["resources"][0]["reasons"][0]["code"]
            .as_str()
            .unwrap()
            .to_string();
        assert_error(&r, 400, &code);
        assert!(code == "BAD_BODY_ERR" || code == "NO_BODY_ERR", "{code}");
    }
    // No body / null body.
    for body in [&b""[..], b"null", b"  "] {
        let r = c
            .post_raw("/api/v2/keys", body.to_vec(), Some("application/json"))
            .await;
        assert_error(&r, 400, "NO_BODY_ERR");
    }
    unchanged().await;

    // Finally the good request works, once per request (no replay protection needed: the
    // token may import any number of keys until it expires).
    c.create(good.resource()).await.resource(201);
    c.create(good.resource()).await.resource(201);
    let after = s.snapshot(c.instance_id).await;
    assert_eq!(after.keys.len(), before.keys.len() + 2);
    assert_eq!(after.token, before.token);
}

/// After 10 failed secure imports against one import token (the default
/// `--import-failure-limit`), every failure kind counting alike, the token is locked: any
/// further secure import with it, even a correct one, answers 409 `IMPORT_TOKEN_EXPIRED_ERR`
/// before any RSA work and changes nothing, until a new token is created. Each failure before
/// the cap keeps its usual answer (the OAEP one uniform); successes are not counted.
#[tokio::test]
async fn failed_imports_per_token_are_capped() {
    let s = shared();
    let c = s.tenant().await;
    let t = c.fresh_token(3600, 3).await;
    let m = random(32);
    let good = t.secure_fields(&m, OaepHash::Sha256);
    let imported = id_of(&c.create(good.resource()).await.resource(201));

    // Three failure kinds, alternating.
    let mut flipped = good.payload.clone();
    flipped[100] ^= 4;
    let oaep = with(&good, |r| {
        r.insert("payload".into(), json!(B64.encode(&flipped)));
    });
    let mut iv = good.iv.clone();
    iv[0] ^= 1;
    let nonce_iv = with(&good, |r| {
        r.insert("iv".into(), json!(B64.encode(&iv)));
    });
    let wrong_nonce = ImportToken {
        pem: t.pem.clone(),
        nonce: random(12),
    }
    .secure_fields(&m, OaepHash::Sha256)
    .resource();
    let mut oaep_body: Option<Vec<u8>> = None;
    for i in 0..10 {
        match i % 3 {
            0 => {
                let r = c.create(oaep.clone()).await;
                assert_field_error(&r, 400, "INVALID_FIELD_ERR", "payload");
                let first = oaep_body.get_or_insert_with(|| r.body.clone());
                assert_eq!(&r.body, first, "failure {i}: the OAEP answer is uniform");
            }
            1 => {
                let r = c.create(nonce_iv.clone()).await;
                assert_field_error(&r, 400, "INCORRECT_NONCE_IV_ERR", "encryptedNonce");
            }
            _ => {
                let r = c.create(wrong_nonce.clone()).await;
                assert_field_error(&r, 400, "INCORRECT_NONCE_ERR", "encryptedNonce");
            }
        }
        if i == 4 {
            // Successes in between neither count nor reset the count.
            c.create(t.secure_fields(&random(16), OaepHash::Sha256).resource())
                .await
                .resource(201);
        }
    }

    let before = s.snapshot(c.instance_id).await;
    let fresh = t.secure_fields(&random(24), OaepHash::Sha1);
    for (name, r) in [
        ("correct import", c.create(fresh.resource()).await),
        ("OAEP failure", c.create(oaep.clone()).await),
        ("nonce/IV failure", c.create(nonce_iv.clone()).await),
        (
            "correct rotation",
            c.rotate(&imported, &fresh.rotate_body()).await,
        ),
    ] {
        let v = assert_error(&r, 409, "IMPORT_TOKEN_EXPIRED_ERR");
        let msg = v["resources"][0]["reasons"][0]["message"].as_str().unwrap();
        assert!(msg.contains("locked"), "{name}: {msg}");
    }
    assert_eq!(
        s.snapshot(c.instance_id).await,
        before,
        "a locked token changes nothing"
    );
    // Keys without the token are unaffected, and the token can still be retrieved.
    c.create_root_key().await;
    c.get_token().await.expect(200);

    // A new token starts from zero.
    let t2 = c.fresh_token(3600, 1).await;
    c.create(t2.secure_fields(&random(32), OaepHash::Sha256).resource())
        .await
        .resource(201);
    let r = c
        .create(t.secure_fields(&m, OaepHash::Sha256).resource())
        .await;
    assert_field_error(&r, 400, "INVALID_FIELD_ERR", "payload");
}

/// Secure rotation of an imported key with a fresh token; ciphertexts of the old version still
/// unwrap (and come back rewrapped under the new material). Bad secure rotations change nothing.
#[tokio::test]
async fn secure_rotate_of_imported_key() {
    let s = shared();
    let c = s.tenant().await;
    let t1 = c.fresh_token(3600, 1).await;
    let m1 = random(32);
    let k = c
        .create(t1.secure_fields(&m1, OaepHash::Sha256).resource())
        .await
        .resource(201);
    let id = id_of(&k);
    let v1 = k["keyVersion"]["id"].as_str().unwrap().to_string();
    let dek = random(32);
    let ct1 = c.wrap_bytes(&id, &dek, Some(&["rot"])).await;

    // A fresh token; the old token's fields are now refused for rotation.
    let t2 = c.fresh_token(3600, 1).await;
    let m2 = random(24);
    let before = s.snapshot(c.instance_id).await;
    let r = c
        .rotate(&id, &t1.secure_fields(&m2, OaepHash::Sha256).rotate_body())
        .await;
    assert_field_error(&r, 400, "INVALID_FIELD_ERR", "payload");
    let mixed = ImportToken {
        pem: t2.pem.clone(),
        nonce: t1.nonce.clone(),
    };
    let r = c
        .rotate(
            &id,
            &mixed.secure_fields(&m2, OaepHash::Sha256).rotate_body(),
        )
        .await;
    assert_field_error(&r, 400, "INCORRECT_NONCE_ERR", "encryptedNonce");
    let mut bad = t2.secure_fields(&m2, OaepHash::Sha256);
    bad.iv = random(11);
    let r = c.rotate(&id, &bad.rotate_body()).await;
    assert_field_error(&r, 400, "INVALID_FIELD_ERR", "iv");
    let mut bad = t2.secure_fields(&m2, OaepHash::Sha256);
    bad.encrypted_nonce[0] ^= 1;
    let r = c.rotate(&id, &bad.rotate_body()).await;
    assert_field_error(&r, 400, "INCORRECT_NONCE_IV_ERR", "encryptedNonce");
    let r = c.rotate(&id, &json!({})).await;
    assert_field_error(&r, 400, "KEY_PAYLOAD_REQ_ERR", "payload");
    assert_eq!(s.snapshot(c.instance_id).await, before);

    let r = c
        .rotate(&id, &t2.secure_fields(&m2, OaepHash::Sha1).rotate_body())
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let meta = c
        .get(&format!("/api/v2/keys/{id}/metadata"))
        .await
        .resource(200);
    let v2 = meta["keyVersion"]["id"].as_str().unwrap().to_string();
    assert_ne!(v1, v2);
    assert_eq!(meta["imported"], true);
    assert_eq!(meta["algorithmBitSize"], 192);

    let u = c.unwrap(&id, &ct1, Some(&["rot"])).await.expect(200);
    assert_eq!(unb64(u["plaintext"].as_str().unwrap()), dek);
    assert_eq!(u["keyVersion"]["id"], v1.as_str());
    assert_eq!(u["rewrappedKeyVersion"]["id"], v2.as_str());
    assert_eq!(
        open_blob_with(&m2, &id, u["ciphertext"].as_str().unwrap(), &["rot".into()]),
        dek
    );
    let ct2 = c.wrap_bytes(&id, &dek, None).await;
    assert_eq!(open_blob_with(&m2, &id, &ct2, &[]), dek);

    // A second secure rotation within the hour is refused before the token is consulted.
    let before = s.snapshot(c.instance_id).await;
    let r = c
        .rotate(
            &id,
            &t2.secure_fields(&random(32), OaepHash::Sha256)
                .rotate_body(),
        )
        .await;
    assert_error(&r, 409, "KEY_ROTATION_NOT_PERMITTED");
    assert_eq!(s.snapshot(c.instance_id).await, before);
}

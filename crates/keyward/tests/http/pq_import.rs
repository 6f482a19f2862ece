//! Hybrid post-quantum import tokens (docs/import-tokens.md, "X-Wing tokens"): an X-Wing token
//! through the API, secure import and secure rotation with it, the material proven to be the
//! one sent, failures identical to the RSA path's (status, code and body bytes), expiry and
//! exhaustion, and RSA tokens unchanged for clients that do not ask.

use keyward_crypto::import::{encrypt_nonce, OaepHash};
use keyward_crypto::pq::{self, Binding};
use keyward_crypto::SecretBytes;
use serde_json::{json, Value};

use crate::common::*;

const XWING: &str = "XWING_MLKEM768_X25519";
const XWING_ENC: &str = "XWING_HKDF_SHA256_AES_256_GCM";

/// The public half of a retrieved X-Wing token.
struct PqToken {
    public_key: Vec<u8>,
    nonce: Vec<u8>,
    id: String,
    instance: String,
}

impl PqToken {
    fn from_get(v: &Value, instance: &str) -> PqToken {
        assert_eq!(v["algorithm"], XWING, "{v}");
        PqToken {
            public_key: unb64(v["payload"].as_str().unwrap()),
            nonce: unb64(v["nonce"].as_str().unwrap()),
            id: v["id"].as_str().unwrap().to_string(),
            instance: instance.to_string(),
        }
    }

    fn fields(&self, material: &[u8]) -> SecureFields {
        let binding = Binding {
            token_id: &self.id,
            instance_id: &self.instance,
            nonce: &self.nonce,
        };
        let payload = pq::encrypt_material(&self.public_key, &binding, material).unwrap();
        let (iv, en) = encrypt_nonce(&SecretBytes::copy_from(material), &self.nonce).unwrap();
        SecureFields {
            payload,
            encrypted_nonce: en,
            iv: iv.to_vec(),
            algorithm: XWING_ENC.to_string(),
        }
    }
}

async fn pq_token(c: &Client, expiration: i64, max: i64) -> PqToken {
    let created = c
        .create_token(
            &json!({"expiration": expiration, "maxAllowedRetrievals": max, "algorithm": XWING}),
        )
        .await
        .expect(200);
    assert_eq!(created["algorithm"], XWING);
    assert!(created.get("payload").is_none() && created.get("nonce").is_none());
    let got = c.get_token().await.expect(200);
    assert_eq!(got["id"], created["id"]);
    let t = PqToken::from_get(&got, &c.instance_id.to_string());
    assert_eq!(t.public_key.len(), pq::PUBLIC_KEY_LEN);
    assert_eq!(t.nonce.len(), 12);
    t
}

#[tokio::test]
async fn pq_secure_import_and_rotation() {
    let s = shared();
    let c = s.tenant().await;
    let t = pq_token(&c, 3600, 2).await;
    for n in [16usize, 24, 32] {
        let m = random(n);
        let k = c.create(t.fields(&m).resource()).await.resource(201);
        assert_eq!(k["imported"], true);
        assert_eq!(k["algorithmBitSize"], (n * 8) as u64);
        let id = id_of(&k);
        let dek = random(32);
        let ct = c.wrap_bytes(&id, &dek, Some(&["pq"])).await;
        assert_eq!(c.unwrap_bytes(&id, &ct, Some(&["pq"])).await, dek);
        // The stored material is the imported one.
        assert_eq!(open_blob_with(&m, &id, &ct, &["pq".into()]), dek);
    }
    // Secure rotation of an imported key with the same token.
    let m1 = random(32);
    let k = c.create(t.fields(&m1).resource()).await.resource(201);
    let id = id_of(&k);
    let m2 = random(32);
    let r = c.rotate(&id, &t.fields(&m2).rotate_body()).await;
    assert_eq!(r.status, 204, "{}", r.text());
    let ct = c.wrap_bytes(&id, &random(32), None).await;
    let dek = c.unwrap_bytes(&id, &ct, None).await;
    assert_eq!(open_blob_with(&m2, &id, &ct, &[]), dek);
    // Imports do not consume retrievals.
    assert_eq!(s.snapshot(c.instance_id).await.token.unwrap().remaining, 1);
}

#[tokio::test]
async fn rsa_tokens_are_unchanged_for_clients_that_do_not_ask() {
    let s = shared();
    let c = s.tenant().await;
    for body in [
        json!({"expiration": 600, "maxAllowedRetrievals": 1}),
        json!({"expiration": 600, "maxAllowedRetrievals": 1, "algorithm": "RSA_4096"}),
    ] {
        let created = c.create_token(&body).await.expect(200);
        let mut keys: Vec<&str> = created
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "creationDate",
                "expiration",
                "expirationDate",
                "maxAllowedRetrievals",
                "remainingRetrievals"
            ]
        );
        let got = c.get_token().await.expect(200);
        assert!(
            got.get("algorithm").is_none() && got.get("id").is_none(),
            "{got}"
        );
        let t = ImportToken::from_get(&got);
        assert!(t.pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        c.create(t.secure_fields(&random(32), OaepHash::Sha256).resource())
            .await
            .resource(201);
    }
    // An unknown algorithm is refused and the current token is left as it was.
    let before = s.snapshot(c.instance_id).await;
    for a in [
        json!("xwing_mlkem768_x25519"),
        json!("RSA_2048"),
        json!(""),
        json!(7),
    ] {
        let r = c.create_token(&json!({"algorithm": a})).await;
        assert_eq!(r.status, 400, "{a}: {}", r.text());
        assert_eq!(s.snapshot(c.instance_id).await, before, "{a}");
    }
}

/// Every failure of the X-Wing path answers exactly what the RSA path answers for the same
/// fault: same status, same code, same body (request ids aside).
#[tokio::test]
async fn pq_failures_are_the_rsa_failures() {
    let s = &TestServer::start_with(1, |a| a.import_failure_limit = Some(0));
    let rsa = s.tenant().await;
    let pqc = s.tenant().await;
    let rt = rsa.fresh_token(3600, 1).await;
    let pt = pq_token(&pqc, 3600, 1).await;
    let m = random(32);
    let before = s.snapshot(pqc.instance_id).await;

    let body = |r: &Resp| -> Value {
        let mut v: Value = serde_json::from_str(&r.text()).unwrap();
        v["metadata"] = Value::Null;
        v
    };
    let same = |what: &str, a: &Resp, b: &Resp| {
        assert_eq!(a.status, b.status, "{what}: {} vs {}", a.text(), b.text());
        assert_eq!(body(a), body(b), "{what}");
    };

    // A flipped byte in the payload (RSA: the OAEP failure).
    let mut rf = rt.secure_fields(&m, OaepHash::Sha256);
    rf.payload[10] ^= 1;
    let rsa_oaep = rsa.create(rf.resource()).await;
    assert_field_error(&rsa_oaep, 400, "INVALID_FIELD_ERR", "payload");
    for at in [0usize, 1100, 1125, 1150] {
        let mut pf = pt.fields(&m);
        pf.payload[at] ^= 1;
        same("tampered", &rsa_oaep, &pqc.create(pf.resource()).await);
    }
    // Truncated, not base64, empty.
    let mut pf = pt.fields(&m);
    pf.payload.truncate(1130);
    same("truncated", &rsa_oaep, &pqc.create(pf.resource()).await);
    let mut r = pt.fields(&m).resource();
    r["payload"] = json!("not base64!");
    same("not base64", &rsa_oaep, &pqc.create(r).await);
    // The RSA algorithm against an X-Wing token, and X-Wing against an RSA token.
    let mut pf = pt.fields(&m);
    pf.algorithm = "RSAES_OAEP_SHA_256".into();
    same(
        "rsa alg on pq token",
        &rsa_oaep,
        &pqc.create(pf.resource()).await,
    );
    let rf = rt.secure_fields(&m, OaepHash::Sha256);
    let mut r = rf.resource();
    r["encryptionAlgorithm"] = json!(XWING_ENC);
    same("pq alg on rsa token", &rsa_oaep, &rsa.create(r).await);
    // Encrypted to another token's binding (the right key, the wrong token id).
    let other = PqToken {
        id: random_uuid(),
        public_key: pt.public_key.clone(),
        nonce: pt.nonce.clone(),
        instance: pt.instance.clone(),
    };
    same(
        "wrong binding",
        &rsa_oaep,
        &pqc.create(other.fields(&m).resource()).await,
    );

    // A wrong nonce, and a tampered encrypted nonce.
    let mut rf = rt.secure_fields(&m, OaepHash::Sha256);
    let (iv, en) = encrypt_nonce(&SecretBytes::copy_from(&m), &random(12)).unwrap();
    (rf.iv, rf.encrypted_nonce) = (iv.to_vec(), en.clone());
    let rsa_nonce = rsa.create(rf.resource()).await;
    assert_field_error(&rsa_nonce, 400, "INCORRECT_NONCE_ERR", "encryptedNonce");
    let mut pf = pt.fields(&m);
    (pf.iv, pf.encrypted_nonce) = (iv.to_vec(), en);
    same("wrong nonce", &rsa_nonce, &pqc.create(pf.resource()).await);
    let mut rf = rt.secure_fields(&m, OaepHash::Sha256);
    rf.encrypted_nonce[0] ^= 1;
    let rsa_iv = rsa.create(rf.resource()).await;
    assert_field_error(&rsa_iv, 400, "INCORRECT_NONCE_IV_ERR", "encryptedNonce");
    let mut pf = pt.fields(&m);
    pf.encrypted_nonce[0] ^= 1;
    same("tampered nonce", &rsa_iv, &pqc.create(pf.resource()).await);

    assert_eq!(s.snapshot(pqc.instance_id).await, before, "nothing stored");
    // The token still works after all that.
    pqc.create(pt.fields(&m).resource()).await.resource(201);
}

#[tokio::test]
async fn pq_tokens_expire_and_exhaust_like_rsa_tokens() {
    let s = TestServer::start(0);
    let c = s.tenant().await;
    let t = pq_token(&c, 300, 1).await;
    // Exhausted retrievals: the same refusal as an RSA token's.
    assert_error(
        &c.get_token().await,
        409,
        "IMPORT_TOKEN_RETRIEVALS_EXHAUSTED_ERR",
    );
    s.clock.advance(300);
    let before = s.snapshot(c.instance_id).await;
    assert_error(
        &c.create(t.fields(&random(32)).resource()).await,
        409,
        "IMPORT_TOKEN_EXPIRED_ERR",
    );
    assert_error(&c.get_token().await, 409, "IMPORT_TOKEN_EXPIRED_ERR");
    assert_eq!(s.snapshot(c.instance_id).await, before);
    // A new X-Wing token has a new key, id and nonce.
    let mut c = c;
    c.refresh().await;
    let t2 = pq_token(&c, 300, 1).await;
    assert_ne!(t2.public_key, t.public_key);
    assert_ne!(t2.id, t.id);
    c.create(t2.fields(&random(16)).resource())
        .await
        .resource(201);
}

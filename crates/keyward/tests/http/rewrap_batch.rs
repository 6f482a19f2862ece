//! Cross-key rewrap (`POST /keys/{id}/actions/rewrapTo`) and the batch of key actions
//! (`POST /api/v2/x-keyward/batch`), Keyward extensions (docs/design.md, "Extensions"): the DEK
//! moves from one root key to another without leaving the server, with its AAD; keys the caller
//! cannot use are refused with nothing changed; a batch answers each operation exactly as its
//! single request.

use keyward_domain::Role;
use serde_json::{json, Value};

use crate::common::*;

fn rewrap_to(ct: &str, aad: &[&str], target: &str) -> Value {
    json!({"ciphertext": ct, "aad": aad, "targetKeyId": target})
}

#[tokio::test]
async fn rewrap_to_moves_the_dek_between_root_keys() {
    let s = shared();
    let c = s.tenant().await;
    let a = id_of(&c.create_root_key().await);
    let b = id_of(&c.create_root_key().await);
    let dek = random(32);
    let ct = c.wrap_bytes(&a, &dek, Some(&["t1", "t2"])).await;
    let r = c
        .action(&a, "rewrapTo", &rewrap_to(&ct, &["t1", "t2"], &b))
        .await
        .expect(200);
    // No plaintext in the answer: exactly the rewrap fields.
    let mut fields: Vec<&str> = r.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    fields.sort_unstable();
    assert_eq!(fields, ["ciphertext", "keyVersion", "rewrappedKeyVersion"]);
    assert!(!r.to_string().contains(&b64(&dek)));
    let new_ct = r["ciphertext"].as_str().unwrap();
    let meta_b = c
        .get(&format!("/api/v2/keys/{b}/metadata"))
        .await
        .resource(200);
    assert_eq!(r["rewrappedKeyVersion"]["id"], meta_b["keyVersion"]["id"]);
    let meta_a = c
        .get(&format!("/api/v2/keys/{a}/metadata"))
        .await
        .resource(200);
    assert_eq!(r["keyVersion"]["id"], meta_a["keyVersion"]["id"]);
    // The new ciphertext opens under B with the same AAD, and only with it.
    assert_eq!(c.unwrap_bytes(&b, new_ct, Some(&["t1", "t2"])).await, dek);
    assert_error(
        &c.unwrap(&b, new_ct, Some(&["t1"])).await,
        422,
        "UNPROCESSABLE_CIPHERTEXT_ERR",
    );
    assert_error(
        &c.unwrap(&a, new_ct, Some(&["t1", "t2"])).await,
        422,
        "UNPROCESSABLE_CIPHERTEXT_ERR",
    );
    // The wrong AAD for the source is the source's unwrap failure.
    assert_error(
        &c.action(&a, "rewrapTo", &rewrap_to(&ct, &["t2", "t1"], &b))
            .await,
        422,
        "UNPROCESSABLE_CIPHERTEXT_ERR",
    );
    // Aliases name the target too.
    c.post(&format!("/api/v2/keys/{b}/aliases/rw-target"), &json!({}))
        .await
        .expect(201);
    let r = c
        .action(&a, "rewrapTo", &rewrap_to(&ct, &["t1", "t2"], "rw-target"))
        .await
        .expect(200);
    assert_eq!(
        c.unwrap_bytes(&b, r["ciphertext"].as_str().unwrap(), Some(&["t1", "t2"]))
            .await,
        dek
    );
}

#[tokio::test]
async fn rewrap_to_refuses_keys_the_caller_cannot_use() {
    let s = shared();
    let c = s.tenant().await;
    let other = s.tenant().await;
    let a = id_of(&c.create_root_key().await);
    let dek = random(32);
    let ct = c.wrap_bytes(&a, &dek, None).await;
    let foreign = id_of(&other.create_root_key().await);
    let standard = id_of(&c.create_standard_key().await);
    let disabled = id_of(&c.create_root_key().await);
    assert_eq!(c.action(&disabled, "disable", &json!({})).await.status, 204);
    let before = s.snapshot(c.instance_id).await;
    let before_other = s.snapshot(other.instance_id).await;

    // A key of another instance does not exist for this caller.
    let r = c
        .action(&a, "rewrapTo", &rewrap_to(&ct, &[], &foreign))
        .await;
    assert_error(&r, 404, "KEY_NOT_FOUND_ERR");
    // Nor the other way round: a caller of the other instance cannot use A as the source.
    let r = other
        .action(&a, "rewrapTo", &rewrap_to(&ct, &[], &foreign))
        .await;
    assert_error(&r, 404, "KEY_NOT_FOUND_ERR");
    // A standard key is no wrapping key.
    let r = c
        .action(&a, "rewrapTo", &rewrap_to(&ct, &[], &standard))
        .await;
    assert_error(&r, 400, "KEY_ROOT_REQ_ERR");
    // A disabled target cannot wrap.
    let r = c
        .action(&a, "rewrapTo", &rewrap_to(&ct, &[], &disabled))
        .await;
    assert_eq!(r.status, 409, "{}", r.text());
    // A principal without a role in the instance.
    let (apikey, iam) = s.create_api_key(other.instance_id, Role::Reader).await;
    let stranger = Client::login(&s.base, c.instance_id, &apikey, &iam).await;
    let r = stranger
        .action(&a, "rewrapTo", &rewrap_to(&ct, &[], &a))
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    // Missing fields.
    let r = c.action(&a, "rewrapTo", &json!({"ciphertext": ct})).await;
    assert_field_error(&r, 400, "INVALID_FIELD_ERR", "targetKeyId");
    let r = c.action(&a, "rewrapTo", &json!({"targetKeyId": a})).await;
    assert_field_error(&r, 400, "INVALID_FIELD_ERR", "ciphertext");
    assert_eq!(s.snapshot(c.instance_id).await, before);
    assert_eq!(s.snapshot(other.instance_id).await, before_other);
}

#[tokio::test]
async fn a_batch_answers_each_operation_as_its_single_request() {
    let s = shared();
    let c = s.tenant().await;
    let a = id_of(&c.create_root_key().await);
    let b = id_of(&c.create_root_key().await);
    let dek = random(32);
    let ct = c.wrap_bytes(&a, &dek, Some(&["x"])).await;
    let missing = random_uuid();
    let batch = json!({"requests": [
        {"action": "wrap", "keyId": a, "plaintext": b64(&dek), "aad": ["y"]},
        {"action": "unwrap", "keyId": a, "ciphertext": ct, "aad": ["x"]},
        {"action": "rewrap", "keyId": a, "ciphertext": ct, "aad": ["x"]},
        {"action": "rewrapTo", "keyId": a, "ciphertext": ct, "aad": ["x"], "targetKeyId": b},
        {"action": "unwrap", "keyId": a, "ciphertext": ct, "aad": ["wrong"]},
        {"action": "wrap", "keyId": missing},
        {"action": "wrap", "keyId": a},
    ]});
    let r = c.post("/api/v2/x-keyward/batch", &batch).await.expect(200);
    assert_eq!(r["metadata"]["collectionTotal"], 7);
    let res = r["results"].as_array().unwrap();
    assert_eq!(res.len(), 7);
    // wrap
    assert_eq!(res[0]["status"], 200);
    let w = res[0]["body"]["ciphertext"].as_str().unwrap();
    assert_eq!(c.unwrap_bytes(&a, w, Some(&["y"])).await, dek);
    // unwrap
    assert_eq!(res[1]["status"], 200);
    assert_eq!(unb64(res[1]["body"]["plaintext"].as_str().unwrap()), dek);
    // rewrap
    assert_eq!(res[2]["status"], 200);
    let rw = res[2]["body"]["ciphertext"].as_str().unwrap();
    assert_eq!(c.unwrap_bytes(&a, rw, Some(&["x"])).await, dek);
    // rewrapTo
    assert_eq!(res[3]["status"], 200);
    let rt = res[3]["body"]["ciphertext"].as_str().unwrap();
    assert_eq!(c.unwrap_bytes(&b, rt, Some(&["x"])).await, dek);
    assert!(res[3]["body"].get("plaintext").is_none());
    // The failures carry exactly the single requests' status and body (request ids aside).
    let strip = |mut v: Value| {
        v["metadata"] = Value::Null;
        v
    };
    let single = c.unwrap(&a, &ct, Some(&["wrong"])).await;
    assert_eq!(res[4]["status"], single.status);
    assert_eq!(
        strip(res[4]["body"].clone()),
        strip(serde_json::from_str(&single.text()).unwrap())
    );
    let single = c.wrap(&missing, &json!({})).await;
    assert_eq!(res[5]["status"], 404);
    assert_eq!(
        strip(res[5]["body"].clone()),
        strip(serde_json::from_str(&single.text()).unwrap())
    );
    // A generated DEK comes back, as from a single wrap.
    assert_eq!(res[6]["status"], 200);
    assert_eq!(
        unb64(res[6]["body"]["plaintext"].as_str().unwrap()).len(),
        32
    );
}

#[tokio::test]
async fn malformed_batches_are_refused_whole() {
    let s = shared();
    let c = s.tenant().await;
    let a = id_of(&c.create_root_key().await);
    let wrap = json!({"action": "wrap", "keyId": a});
    let before = s.snapshot(c.instance_id).await;
    for (body, field) in [
        (json!({"requests": []}), "requests"),
        (json!({}), "requests"),
        (json!({"requests": vec![wrap.clone(); 101]}), "requests"),
        (
            json!({"requests": [wrap.clone(), {"action": "rotate", "keyId": a}]}),
            "requests",
        ),
        (
            json!({"requests": [wrap.clone(), {"keyId": a}]}),
            "requests",
        ),
        (
            json!({"requests": [wrap.clone(), {"action": "wrap"}]}),
            "requests",
        ),
    ] {
        let r = c.post("/api/v2/x-keyward/batch", &body).await;
        assert_field_error(&r, 400, "INVALID_FIELD_ERR", field);
    }
    let r = c
        .post("/api/v2/x-keyward/batch", &json!({"requests": "wrap"}))
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(s.snapshot(c.instance_id).await, before);
}

/// A batch counts one request per operation against the crypto rate limit.
#[tokio::test]
async fn a_batch_counts_each_operation_against_the_rate_limit() {
    let s = TestServer::start_with(1, |a| a.rate_limit_crypto = Some("1/20".into()));
    let c = s.tenant().await;
    let a = id_of(&c.create_root_key().await);
    let wrap = json!({"action": "wrap", "keyId": a});
    let r = c
        .post(
            "/api/v2/x-keyward/batch",
            &json!({"requests": vec![wrap.clone(); 15]}),
        )
        .await
        .expect(200);
    assert_eq!(r["results"].as_array().unwrap().len(), 15);
    // 15 of the 20 are spent: a batch of 10 does not fit.
    let r = c
        .post(
            "/api/v2/x-keyward/batch",
            &json!({"requests": vec![wrap.clone(); 10]}),
        )
        .await;
    assert_error(&r, 429, "TOO_MANY_REQUESTS_ERR");
}

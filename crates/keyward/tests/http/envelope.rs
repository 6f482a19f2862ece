//! The error envelope of every error Keyward produces on these endpoints: Key Protect's shape
//! (spec §1.5), `Content-Type: application/json` exactly, an `errorMsg` of the documented
//! pattern ending in the code, one reason with code/status/message/moreInfo, and no internal
//! detail in any message.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use reqwest::Method;
use serde_json::json;

use crate::common::*;

fn check_envelope(name: &str, r: &Resp, status: u16, code: &str) {
    let v = assert_error(r, status, code);
    let res = &v["resources"][0];
    let msg = res["errorMsg"].as_str().unwrap();
    let phrase = reqwest::StatusCode::from_u16(status)
        .unwrap()
        .canonical_reason()
        .unwrap();
    assert!(msg.starts_with(&format!("{phrase}: ")), "{name}: {msg}");
    assert!(msg.contains(" could not be "), "{name}: {msg}");
    assert!(
        msg.ends_with(&format!(": Please see `reasons` for more details ({code})")),
        "{name}: {msg}"
    );
    let reason = &res["reasons"][0];
    assert_eq!(
        reason["moreInfo"], "https://cloud.ibm.com/apidocs/key-protect",
        "{name}"
    );
    let message = reason["message"].as_str().unwrap();
    assert!(!message.is_empty(), "{name}");
    for leak in [
        "sqlx", "sqlite", "panicked", "thread '", "src/", ".rs:", "Error {", "aws-lc", "ring::",
    ] {
        assert!(
            !message.contains(leak),
            "{name}: message leaks internals: {message}"
        );
    }
    if let Some(t) = reason.get("target") {
        assert!(
            t["type"].is_string() && t["name"].is_string(),
            "{name}: {t}"
        );
    }
    // Only the documented keys.
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys, vec!["metadata", "resources"], "{name}");
}

#[tokio::test]
async fn every_error_has_the_key_protect_envelope() {
    let s = shared();
    let c = s.tenant().await;
    let reader = s.client(c.instance_id, keyward_domain::Role::Reader).await;
    let root = id_of(&c.create_root_key().await);
    let std = id_of(&c.create_standard_key().await);
    let imported = id_of(&c.import_root_key(&random(16)).await);
    let deleted = id_of(&c.create_root_key().await);
    c.delete(&format!("/api/v2/keys/{deleted}"))
        .await
        .expect(204);
    let rotated = id_of(&c.create_root_key().await);
    c.rotate(&rotated, &json!({})).await;
    let ct = c.wrap_bytes(&root, &random(32), None).await;
    let http = http_client();

    let cases: Vec<(&str, Resp, u16, &str)> = vec![
        ("bad json", c.post_raw("/api/v2/keys", b"{".to_vec(), Some("application/json")).await, 400, "BAD_BODY_ERR"),
        ("two resources", c.post("/api/v2/keys", &json!({"metadata": {"collectionType": KEY_TYPE, "collectionTotal": 2}, "resources": [{"name": "ab"}, {"name": "cd"}]})).await, 400, "BAD_BODY_ERR"),
        ("total mismatch", c.post("/api/v2/keys", &json!({"metadata": {"collectionType": KEY_TYPE, "collectionTotal": 3}, "resources": [{"name": "ab"}]})).await, 400, "COLLECTION_TOTAL_MISMATCH_ERR"),
        ("no body", c.post_raw("/api/v2/keys", Vec::new(), None).await, 400, "NO_BODY_ERR"),
        ("invalid field", c.wrap(&root, &json!({"plaintext": "@"})).await, 400, "INVALID_FIELD_ERR"),
        ("query param", c.get("/api/v2/keys?limit=0").await, 400, "INVALID_QUERY_PARAM_ERR"),
        ("no instance", send(http.get(c.url("/api/v2/keys")).header("authorization", format!("Bearer {}", c.token))).await, 400, "INSTANCE_ID_REQUIRED_ERR"),
        ("bad instance", c.with_instance("nope").get("/api/v2/keys").await, 400, "INVALID_INSTANCE_ID_ERR"),
        ("root required", c.wrap(&std, &json!({})).await, 400, "KEY_ROOT_REQ_ERR"),
        ("payload required", c.rotate(&imported, &json!({})).await, 400, "KEY_PAYLOAD_REQ_ERR"),
        ("no token", send(http.get(c.url("/api/v2/keys")).header("bluemix-instance", &c.instance)).await, 401, "UNAUTHORIZED_ERR"),
        ("forbidden", reader.delete(&format!("/api/v2/keys/{root}")).await, 403, "UNAUTHORIZED_ERR"),
        ("key not found", c.get(&format!("/api/v2/keys/{}", random_uuid())).await, 404, "KEY_NOT_FOUND_ERR"),
        ("token not found", c.get_token().await, 404, "IMPORT_TOKEN_NOT_FOUND_ERR"),
        ("route", c.get("/api/v2/no_such_collection").await, 404, "NOT_FOUND_ERR"),
        ("method", send(c.req(Method::PUT, &format!("/api/v2/keys/{root}"))).await, 405, "METHOD_NOT_ALLOWED_ERR"),
        ("invalid state", c.wrap(&deleted, &json!({})).await, 409, "KEY_ACTION_INVALID_STATE_ERR"),
        ("rotation", c.rotate(&rotated, &json!({})).await, 409, "KEY_ROTATION_NOT_PERMITTED"),
        ("deleted", c.delete(&format!("/api/v2/keys/{deleted}")).await, 410, "KEY_DELETED_ERR"),
        ("too large", c.post_raw("/api/v2/keys", vec![b' '; 70_000], Some("application/json")).await, 413, "REQUEST_TOO_LARGE_ERR"),
        ("media type", c.post_raw("/api/v2/keys", b"{}".to_vec(), Some("text/plain")).await, 415, "UNSUPPORTED_MEDIA_TYPE_ERR"),
        ("ciphertext", c.unwrap(&root, &B64.encode(b"{}"), None).await, 422, "UNPROCESSABLE_CIPHERTEXT_ERR"),
    ];
    for (name, r, status, code) in &cases {
        check_envelope(name, r, *status, code);
    }
    let _ = ct;
}

/// Success bodies are JSON with exactly `application/json` too; 204s have no body.
#[tokio::test]
async fn success_content_types() {
    let s = shared();
    let c = s.tenant().await;
    let k = c
        .create(json!({"type": KEY_TYPE, "name": "ct", "extractable": false}))
        .await;
    assert_eq!(k.content_type(), Some("application/json"));
    let id = id_of(&k.resource(201));
    for r in [
        c.get("/api/v2/keys").await,
        c.get(&format!("/api/v2/keys/{id}")).await,
        c.get(&format!("/api/v2/keys/{id}/metadata")).await,
        c.wrap(&id, &json!({})).await,
    ] {
        assert_eq!(r.status, 200);
        assert_eq!(r.content_type(), Some("application/json"));
    }
    let r = c.rotate(&id, &json!({})).await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
}

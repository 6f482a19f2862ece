//! `Prefer: return=minimal | return=representation` on every operation where Key Protect
//! honours it (create, create with policy overrides, import, delete, purge, restore, rotate),
//! and without the header: the status and body of each form (the table in
//! `crates/api/src/routes/keys.rs`, `Prefer`). Root key material is in none of them.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use keyward_domain::Role;
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::*;

const MINIMAL: &[(&str, &str)] = &[("prefer", "return=minimal")];
const REPR: &[(&str, &str)] = &[("prefer", "return=representation")];

/// A `return=minimal` create: 201 and the new key's identifier only.
fn assert_minimal_create(r: &Resp) -> String {
    let v = r.expect(201);
    assert_eq!(v["metadata"]["collectionType"], KEY_TYPE, "{v}");
    assert_eq!(v["metadata"]["collectionTotal"], 1, "{v}");
    let res = v["resources"][0].as_object().unwrap();
    let mut fields: Vec<&str> = res.keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(fields, vec!["id", "type"], "{v}");
    res["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn prefer_on_create_import_and_overrides() {
    let s = TestServer::start();
    let c = s.tenant().await;
    let root = json!({"type": KEY_TYPE, "name": "p-root", "extractable": false});
    let env = key_envelope(root.clone());

    // no header and representation: the whole key
    for h in [&[][..], REPR] {
        let k = c
            .send_json(Method::POST, "/api/v2/keys", &env, h)
            .await
            .resource(201);
        assert_eq!(k["name"], "p-root");
        assert!(k["crn"].is_string() && k.get("payload").is_none(), "{k}");
    }
    // minimal: the identifier only, and the key exists
    let id = assert_minimal_create(
        &c.send_json(Method::POST, "/api/v2/keys", &env, MINIMAL)
            .await,
    );
    assert_eq!(c.meta(&id).await["name"], "p-root");

    // a plain import (root key material is never echoed in any form)
    let material = B64.encode([3u8; 32]);
    let imp = key_envelope(
        json!({"type": KEY_TYPE, "name": "p-imp", "extractable": false,
                                  "payload": material}),
    );
    let id = assert_minimal_create(
        &c.send_json(Method::POST, "/api/v2/keys", &imp, MINIMAL)
            .await,
    );
    assert_eq!(c.meta(&id).await["imported"], true);
    let r = c.send_json(Method::POST, "/api/v2/keys", &imp, REPR).await;
    assert!(!r.text().contains(&material));
    r.resource(201);

    // a standard key with representation carries its payload; minimal does not
    let std = key_envelope(
        json!({"type": KEY_TYPE, "name": "p-std", "extractable": true,
                                  "payload": material}),
    );
    let k = c
        .send_json(Method::POST, "/api/v2/keys", &std, REPR)
        .await
        .resource(201);
    assert_eq!(k["name"], "p-std");
    let r = c
        .send_json(Method::POST, "/api/v2/keys", &std, MINIMAL)
        .await;
    assert!(!r.text().contains(&material));
    assert_minimal_create(&r);

    // with policy overrides
    let ov = key_envelope(
        json!({"type": KEY_TYPE, "name": "p-ov", "extractable": false,
                                 "rotation": {"enabled": true, "interval_month": 2}}),
    );
    let id = assert_minimal_create(
        &c.send_json(
            Method::POST,
            "/api/v2/keys_with_policy_overrides",
            &ov,
            MINIMAL,
        )
        .await,
    );
    let pol = c
        .get(&format!("/api/v2/keys/{id}/policies"))
        .await
        .expect(200);
    assert_eq!(
        pol["resources"][0]["rotation"]["interval_month"], 2,
        "{pol}"
    );
    for h in [&[][..], REPR] {
        let k = c
            .send_json(Method::POST, "/api/v2/keys_with_policy_overrides", &ov, h)
            .await
            .resource(201);
        assert_eq!(k["name"], "p-ov");
    }
    // preferences are read case- and space-insensitively, from a list
    let r = c
        .send_json(
            Method::POST,
            "/api/v2/keys",
            &env,
            &[("prefer", "respond-async, RETURN = minimal")],
        )
        .await;
    assert_minimal_create(&r);
}

#[tokio::test]
async fn prefer_on_rotate_delete_restore_purge() {
    let s = TestServer::start();
    let c = s.tenant().await;
    let (pk, iam) = s.create_api_key(c.instance_id, Role::KeyPurge).await;
    let purger = Client::login(&s.base, s.clock.clone(), c.instance_id, &pk, &iam).await;
    let id = id_of(&c.import_root("p-life", &[5u8; 32]).await);

    // rotate: 204 unset and minimal, 200 + key with representation
    let material = B64.encode([6u8; 32]);
    for h in [&[][..], MINIMAL] {
        s.advance(2 * HOUR);
        let r = c
            .send_json(
                Method::POST,
                &format!("/api/v2/keys/{id}/actions/rotate"),
                &json!({"payload": material}),
                h,
            )
            .await;
        assert_eq!(r.status, 204, "{}", r.text());
        assert!(r.body.is_empty());
    }
    s.advance(2 * HOUR);
    let r = c
        .send_json(
            Method::POST,
            &format!("/api/v2/keys/{id}/actions/rotate"),
            &json!({"payload": material}),
            REPR,
        )
        .await;
    let k = r.resource(200);
    assert_eq!(k["id"], id.as_str());
    assert!(k["lastRotateDate"].is_string(), "{k}");
    assert!(!r.text().contains(&material));

    // delete: 204 unset and minimal; 200 + the deleted key with representation
    let path = format!("/api/v2/keys/{id}");
    let del = |h| c.delete_h(&path, h);
    s.advance(MIN);
    let r = del(MINIMAL).await;
    assert_eq!((r.status, r.body.len()), (204, 0), "{}", r.text());
    // restore: 204 minimal, 201 + key unset and with representation
    s.advance(MIN);
    let r = c
        .send_json(
            Method::POST,
            &format!("/api/v2/keys/{id}/restore"),
            &Value::Null,
            MINIMAL,
        )
        .await;
    assert_eq!((r.status, r.body.len()), (204, 0), "{}", r.text());
    assert_eq!(c.meta(&id).await["state"], 1);
    s.advance(MIN);
    let r = del(REPR).await;
    let k = r.resource(200);
    assert_eq!(
        (k["state"].clone(), k["deleted"].clone()),
        (json!(5), json!(true))
    );
    s.advance(MIN);
    let k = c
        .send_json(
            Method::POST,
            &format!("/api/v2/keys/{id}/restore"),
            &Value::Null,
            REPR,
        )
        .await
        .resource(201);
    assert_eq!(k["state"], 1);
    s.advance(MIN);
    let r = del(&[]).await;
    assert_eq!((r.status, r.body.len()), (204, 0));
    s.advance(MIN);
    c.restore(&id).await.resource(201);
    // the deprecated ?action=restore form honours it too
    s.advance(MIN);
    del(&[]).await.expect(204);
    s.advance(MIN);
    let r = c
        .send_json(
            Method::POST,
            &format!("/api/v2/keys/{id}?action=restore"),
            &Value::Null,
            MINIMAL,
        )
        .await;
    assert_eq!((r.status, r.body.len()), (204, 0), "{}", r.text());

    // purge (4 h after the delete): 200 + key unset and with representation, 204 minimal
    let mut purged = Vec::new();
    for (i, h) in [&[][..], REPR, MINIMAL].into_iter().enumerate() {
        let k = id_of(&c.create_root(&format!("p-purge-{i}")).await);
        c.delete_key(&k).await.expect(204);
        purged.push((k, h));
    }
    s.advance(4 * HOUR + MIN);
    for (k, h) in purged {
        let r = purger.delete_h(&format!("/api/v2/keys/{k}/purge"), h).await;
        if h == MINIMAL {
            assert_eq!((r.status, r.body.len()), (204, 0), "{}", r.text());
        } else {
            let v = r.resource(200);
            assert_eq!(v["id"], k.as_str());
        }
        assert_error(&c.metadata(&k).await, 404, "KEY_NOT_FOUND_ERR");
    }
}

//! Every reason code of spec §1.6 that the lifecycle endpoints produce, each at least once,
//! with its HTTP status and the error envelope.
//! (Dual-auth codes are also exercised at length in `dual_auth`, rotation codes in `rotation`.)

use keyward_domain::Role;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn key_action_invalid_state_err() {
    let s = TestServer::start();
    let c = s.tenant().await;
    let id = id_of(&c.create_root("active-key").await);
    let e = assert_error(
        &c.act(&id, "enable").await,
        409,
        "KEY_ACTION_INVALID_STATE_ERR",
    );
    assert!(
        e["resources"][0]["errorMsg"]
            .as_str()
            .unwrap()
            .starts_with("Conflict: Key could not be enabled"),
        "{e}"
    );
    c.act(&id, "disable").await.expect(204);
    assert_error(
        &c.act(&id, "disable").await,
        409,
        "KEY_ACTION_INVALID_STATE_ERR",
    );
    assert_error(
        &c.wrap(&id, &random(32)).await,
        409,
        "KEY_ACTION_INVALID_STATE_ERR",
    );
    assert_error(&c.restore(&id).await, 409, "KEY_ACTION_INVALID_STATE_ERR");
}

#[tokio::test]
async fn req_too_early_err_for_enable_restore_and_purge() {
    let s = TestServer::start();
    let c = s.tenant().await;
    let (pk, pk_iam) = s.create_api_key(c.instance_id, Role::KeyPurge).await;
    let purger = Client::login(&s.base, s.clock.clone(), c.instance_id, &pk, &pk_iam).await;

    // enable < 30 s after disable
    let id = id_of(&c.create_root("too-early").await);
    c.act(&id, "disable").await.expect(204);
    s.advance(29);
    assert_error(&c.act(&id, "enable").await, 409, "REQ_TOO_EARLY_ERR");
    s.advance(1);
    c.act(&id, "enable").await.expect(204);

    // restore < 30 s after delete
    c.delete_key(&id).await.expect(204);
    assert_error(&c.restore(&id).await, 409, "REQ_TOO_EARLY_ERR");
    s.advance(29);
    assert_error(&c.restore(&id).await, 409, "REQ_TOO_EARLY_ERR");
    s.advance(1);
    c.restore(&id).await.resource(201);

    // purge < 4 h after delete
    c.delete_key(&id).await.expect(204);
    let e = assert_error(&purger.purge(&id).await, 409, "REQ_TOO_EARLY_ERR");
    assert!(
        e["resources"][0]["reasons"][0]["message"]
            .as_str()
            .unwrap()
            .contains("4h"),
        "{e}"
    );
    s.advance(4 * HOUR - 1);
    assert_error(&purger.purge(&id).await, 409, "REQ_TOO_EARLY_ERR");
    s.advance(1);
    purger.purge(&id).await.resource(200);
}

#[tokio::test]
async fn key_rotation_not_permitted() {
    let s = TestServer::start();
    let c = s.tenant().await;
    let id = id_of(&c.create_root("rot").await);
    c.rotate(&id, &json!({})).await.expect(204);
    assert_error(
        &c.rotate(&id, &json!({})).await,
        409,
        "KEY_ROTATION_NOT_PERMITTED",
    );
}

#[tokio::test]
async fn key_restore_expired_and_key_expired_err() {
    let s = TestServer::start();
    let c = s.tenant().await;
    let id = id_of(&c.create_root("old-deleted").await);
    c.delete_key(&id).await.expect(204);
    s.advance(30 * DAY + 1);
    assert_error(&c.restore(&id).await, 400, "KEY_RESTORE_EXPIRED");

    // Restore of a key whose expirationDate has passed while it was deleted.
    let exp = s.now() + HOUR;
    let k = c
        .create(json!({"type": KEY_TYPE, "name": "expiring", "extractable": false, "expirationDate": time_str(exp)}))
        .await
        .resource(201);
    let k = id_of(&k);
    c.delete_key(&k).await.expect(204);
    s.advance(HOUR);
    assert_error(&c.restore(&k).await, 400, "KEY_EXPIRED_ERR");
    assert_eq!(c.meta(&k).await["state"], 5);
}

#[tokio::test]
async fn key_root_req_err() {
    let s = TestServer::start();
    let c = s.tenant().await;
    let id = id_of(&c.create_standard("standard").await);
    assert_error(&c.act(&id, "disable").await, 400, "KEY_ROOT_REQ_ERR");
    assert_error(&c.act(&id, "enable").await, 400, "KEY_ROOT_REQ_ERR");
    assert_error(&c.wrap(&id, &random(32)).await, 400, "KEY_ROOT_REQ_ERR");
    assert_error(&c.rotate(&id, &json!({})).await, 400, "KEY_ROOT_REQ_ERR");
}

#[tokio::test]
async fn key_payload_req_err() {
    let s = TestServer::start();
    let c = s.tenant().await;
    let id = id_of(&c.import_root("imported", &random(32)).await);
    assert_field_error(
        &c.rotate(&id, &json!({})).await,
        400,
        "KEY_PAYLOAD_REQ_ERR",
        "payload",
    );
}

#[tokio::test]
async fn protected_resource_err_and_prev_key_del_err() {
    let s = TestServer::start();
    let c = s.tenant().await;
    let crn = "crn:v1:bluemix:public:cloud-object-storage:global:a/acc:bucket:b1";

    let id = id_of(&c.create_root("registered").await);
    s.add_registration(c.instance_id, &id, crn, false).await;
    let regs = c
        .get(&format!("/api/v2/keys/{id}/registrations"))
        .await
        .expect(200);
    assert_eq!(regs["metadata"]["collectionTotal"], 1, "{regs}");
    assert_eq!(regs["resources"][0]["resourceCrn"], crn, "{regs}");
    assert_eq!(regs["resources"][0]["keyId"], id.as_str(), "{regs}");
    let all = c.get("/api/v2/keys/registrations").await.expect(200);
    assert_eq!(all["metadata"]["collectionTotal"], 1, "{all}");

    assert_error(&c.delete_key(&id).await, 409, "PROTECTED_RESOURCE_ERR");
    assert_error(
        &c.delete_key(&format!("{id}?force=false")).await,
        409,
        "PROTECTED_RESOURCE_ERR",
    );
    assert_eq!(c.meta(&id).await["state"], 1);
    c.delete_key(&format!("{id}?force=true")).await.expect(204);
    assert_eq!(c.meta(&id).await["state"], 5);

    let held = id_of(&c.create_root("retention").await);
    s.add_registration(
        c.instance_id,
        &held,
        "crn:v1:bluemix:public:cloud-object-storage:global:a/acc:bucket:worm",
        true,
    )
    .await;
    assert_error(&c.delete_key(&held).await, 409, "PREV_KEY_DEL_ERR");
    assert_error(
        &c.delete_key(&format!("{held}?force=true")).await,
        409,
        "PREV_KEY_DEL_ERR",
    );
    assert_eq!(c.meta(&held).await["state"], 1);

    // A key without registrations answers an empty collection.
    let free = id_of(&c.create_root("free").await);
    let r = c
        .get(&format!("/api/v2/keys/{free}/registrations"))
        .await
        .expect(200);
    assert_eq!(r["metadata"]["collectionTotal"], 0, "{r}");
}

#[tokio::test]
async fn authorizations_not_met_and_not_dual_auth_err() {
    let s = TestServer::start();
    let c = s.tenant().await;
    let plain = id_of(&c.create_root("plain").await);
    assert_error(
        &c.act(&plain, "setKeyForDeletion").await,
        409,
        "NOT_DUAL_AUTH_ERR",
    );
    let dual = id_of(&c.create_root("dual").await);
    c.put_key_policy(&dual, "", dual_auth_policy(true))
        .await
        .expect(200);
    c.act(&dual, "setKeyForDeletion").await.expect(204);
    assert_error(&c.delete_key(&dual).await, 409, "AUTHORIZATIONS_NOT_MET");
}

#[tokio::test]
async fn key_create_import_access_err() {
    let s = TestServer::start();
    let c = s.tenant().await;
    let imported = id_of(&c.import_root("imported-before", &random(16)).await);

    c.put_instance_policy(
        "keyCreateImportAccess",
        true,
        Some(json!({"create_root_key": false})),
    )
    .await
    .expect(204);
    assert_error(
        &c.create(json!({"type": KEY_TYPE, "name": "root", "extractable": false}))
            .await,
        409,
        "KEY_CREATE_IMPORT_ACCESS_ERR",
    );
    // What the policy does not forbid still works.
    c.create_standard("std-ok").await;
    c.import_root("import-ok", &random(32)).await;

    c.put_instance_policy(
        "keyCreateImportAccess",
        true,
        Some(json!({"enforce_token": true})),
    )
    .await
    .expect(204);
    let plain_root = json!({"type": KEY_TYPE, "name": "plain", "extractable": false, "payload": b64(&random(32))});
    assert_error(
        &c.create(plain_root).await,
        409,
        "KEY_CREATE_IMPORT_ACCESS_ERR",
    );
    let plain_std = json!({"type": KEY_TYPE, "name": "plain-std", "extractable": true, "payload": b64(&random(32))});
    assert_error(
        &c.create(plain_std).await,
        409,
        "KEY_CREATE_IMPORT_ACCESS_ERR",
    );
    assert_error(
        &c.rotate(&imported, &json!({"payload": b64(&random(16))}))
            .await,
        409,
        "KEY_CREATE_IMPORT_ACCESS_ERR",
    );
    c.create_root("generated-ok").await;

    let p = c
        .get("/api/v2/instance/policies?policy=keyCreateImportAccess")
        .await
        .resources(200);
    assert_eq!(p.len(), 1);
    assert_eq!(
        p[0]["policy_data"]["attributes"]["enforce_token"], true,
        "{p:?}"
    );
    // Disabled: everything allowed again.
    c.put_instance_policy("keyCreateImportAccess", false, None)
        .await
        .expect(204);
    c.import_root("import-again", &random(24)).await;
}

#[tokio::test]
async fn body_query_param_mismatch_num_collection_and_total_mismatch() {
    let s = TestServer::start();
    let c = s.tenant().await;
    let dual = json!({"policy_type": "dualAuthDelete", "policy_data": {"enabled": true}});
    let metrics = json!({"policy_type": "metrics", "policy_data": {"enabled": true}});

    let r = c
        .put(
            "/api/v2/instance/policies?policy=rotation",
            &policy_envelope(vec![dual.clone()]),
        )
        .await;
    assert_error(&r, 400, "BODY_QUERY_PARAM_MISMATCH_ERR");
    let id = id_of(&c.create_root("mismatch-key").await);
    let r = c
        .put_key_policy(&id, "?policy=rotation", dual_auth_policy(true))
        .await;
    assert_error(&r, 400, "BODY_QUERY_PARAM_MISMATCH_ERR");

    let r = c
        .put(
            "/api/v2/instance/policies?policy=dualAuthDelete",
            &policy_envelope(vec![dual.clone(), metrics.clone()]),
        )
        .await;
    assert_error(&r, 400, "NUM_COLLECTION_RESOURCE_ERR");

    let mut body = policy_envelope(vec![dual.clone()]);
    body["metadata"]["collectionTotal"] = json!(2);
    assert_error(
        &c.put("/api/v2/instance/policies", &body).await,
        400,
        "COLLECTION_TOTAL_MISMATCH_ERR",
    );
    let mut key = key_envelope(json!({"type": KEY_TYPE, "name": "kk", "extractable": false}));
    key["metadata"]["collectionTotal"] = json!(3);
    assert_error(
        &c.post("/api/v2/keys", &key).await,
        400,
        "COLLECTION_TOTAL_MISMATCH_ERR",
    );

    // Nothing was stored by the refused requests; several types at once without ?policy.
    assert_eq!(
        c.get("/api/v2/instance/policies")
            .await
            .resources(200)
            .len(),
        0
    );
    c.put(
        "/api/v2/instance/policies",
        &policy_envelope(vec![dual, metrics]),
    )
    .await
    .expect(204);
    assert_eq!(
        c.get("/api/v2/instance/policies")
            .await
            .resources(200)
            .len(),
        2
    );
}

#[tokio::test]
async fn bad_body_err() {
    let s = TestServer::start();
    let c = s.tenant().await;
    let unknown_attr = json!({"policy_type": "rotation", "policy_data": {"enabled": true, "attributes": {"interval_month": 3, "bogus": 1}}});
    let e = assert_error(
        &c.put(
            "/api/v2/instance/policies?policy=rotation",
            &policy_envelope(vec![unknown_attr]),
        )
        .await,
        400,
        "BAD_BODY_ERR",
    );
    assert!(
        e["resources"][0]["reasons"][0]["message"]
            .as_str()
            .unwrap()
            .contains("unknown field"),
        "{e}"
    );
    let unknown_data =
        json!({"policy_type": "dualAuthDelete", "policy_data": {"enabled": true, "extra": true}});
    assert_error(
        &c.put(
            "/api/v2/instance/policies",
            &policy_envelope(vec![unknown_data]),
        )
        .await,
        400,
        "BAD_BODY_ERR",
    );
    let unknown_top =
        json!({"policy_type": "dualAuthDelete", "policy_data": {"enabled": true}, "surprise": 1});
    assert_error(
        &c.put(
            "/api/v2/instance/policies",
            &policy_envelope(vec![unknown_top]),
        )
        .await,
        400,
        "BAD_BODY_ERR",
    );
    let r = send(
        c.req(reqwest::Method::PUT, "/api/v2/instance/policies")
            .await
            .header("content-type", "application/json")
            .body("{\"metadata\": "),
    )
    .await;
    assert_error(&r, 400, "BAD_BODY_ERR");
    assert_eq!(
        c.get("/api/v2/instance/policies")
            .await
            .resources(200)
            .len(),
        0
    );
}

#[tokio::test]
async fn key_deleted_err() {
    let s = TestServer::start();
    let c = s.tenant().await;
    let id = id_of(&c.create_root("gone").await);
    c.delete_key(&id).await.expect(204);
    let e = assert_error(&c.delete_key(&id).await, 410, "KEY_DELETED_ERR");
    assert!(
        e["resources"][0]["errorMsg"]
            .as_str()
            .unwrap()
            .starts_with("Gone:"),
        "{e}"
    );
}

#[tokio::test]
async fn invalid_query_param_err() {
    let s = TestServer::start();
    let c = s.tenant().await;
    for q in [
        "sort=bogus",
        "sort=-nope",
        "limit=0",
        "limit=5001",
        "limit=x",
        "offset=-1",
        "state=4",
        "extractable=maybe",
    ] {
        let r = c.get(&format!("/api/v2/keys?{q}")).await;
        assert_error(&r, 400, "INVALID_QUERY_PARAM_ERR");
    }
    let v = assert_error(
        &c.get("/api/v2/keys?sort=bogus").await,
        400,
        "INVALID_QUERY_PARAM_ERR",
    );
    assert_eq!(
        v["resources"][0]["reasons"][0]["target"]["name"], "sort",
        "{v}"
    );
    assert_eq!(c.head("/api/v2/keys?limit=0").await.status, 400);
    assert_error(
        &c.get("/api/v2/key_rings?limit=0").await,
        400,
        "INVALID_QUERY_PARAM_ERR",
    );
    let id = id_of(&c.create_root("k1").await);
    assert_error(
        &c.get(&format!("/api/v2/keys/{id}/versions?limit=0")).await,
        400,
        "INVALID_QUERY_PARAM_ERR",
    );
}

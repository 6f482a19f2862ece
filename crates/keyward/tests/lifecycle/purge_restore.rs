//! Delete, restore and purge (spec §6.5): the KeyPurge role, the 4-hour rule, the automatic
//! purge after 90 days by the scheduler, the 30-day restore window, and what a deleted key
//! looks like.

use keyward_domain::Role;
use serde_json::json;

use crate::common::*;

async fn purger(s: &TestServer, c: &Client) -> Client {
    let (pk, iam) = s.create_api_key(c.instance_id, Role::KeyPurge).await;
    Client::login(&s.base, s.clock.clone(), c.instance_id, &pk, &iam).await
}

#[tokio::test]
async fn purge_needs_the_key_purge_role_and_four_hours() {
    let s = TestServer::start();
    let c = s.tenant().await;
    let p = purger(&s, &c).await;
    let id = id_of(&c.create_root("to-purge").await);
    c.action(&id, "wrap", &json!({})).await.expect(200);
    c.rotate(&id, &json!({})).await.expect(204);

    // Not deleted yet.
    assert_error(&p.purge(&id).await, 409, "KEY_ACTION_INVALID_STATE_ERR");
    // KeyPurge is part of no other role, and grants nothing else.
    assert_error(&p.metadata(&id).await, 403, "UNAUTHORIZED_ERR");
    assert_error(&p.delete_key(&id).await, 403, "UNAUTHORIZED_ERR");

    c.delete_key(&id).await.expect(204);
    let deleted_at = s.now();
    let meta = c.meta(&id).await;
    assert_eq!(meta["state"], 5);
    assert_eq!(meta["deleted"], true);
    assert_eq!(meta["deletedBy"], c.iam_id.as_str());
    assert_eq!(meta["deletionDate"], time_str(deleted_at));
    assert_eq!(meta["purgeAllowedFrom"], time_str(deleted_at + 4 * HOUR));
    assert_eq!(meta["purgeScheduledOn"], time_str(deleted_at + 90 * DAY));
    assert_eq!(
        meta["restoreExpirationDate"],
        time_str(deleted_at + 30 * DAY)
    );

    s.advance(4 * HOUR);
    // A Manager is not enough.
    assert_error(&c.purge(&id).await, 403, "UNAUTHORIZED_ERR");
    let v = p.purge(&id).await.resource(200);
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["state"], 5);

    // Gone for good: metadata, get, restore, purge all 404; the sealed versions are removed.
    assert_error(&c.metadata(&id).await, 404, "KEY_NOT_FOUND_ERR");
    assert_error(
        &c.get(&format!("/api/v2/keys/{id}")).await,
        404,
        "KEY_NOT_FOUND_ERR",
    );
    assert_error(&c.restore(&id).await, 404, "KEY_NOT_FOUND_ERR");
    assert_error(&p.purge(&id).await, 404, "KEY_NOT_FOUND_ERR");
    assert_error(&c.delete_key(&id).await, 404, "KEY_NOT_FOUND_ERR");
    assert_eq!(s.stored_versions(c.instance_id, &id).await, 0);
    assert!(!c.list_ids("?state=5").await.contains(&id));
}

#[tokio::test]
async fn scheduler_purges_ninety_days_after_deletion() {
    let s = TestServer::start();
    let c = s.tenant().await;
    let id = id_of(&c.create_root("auto-purge").await);
    let alias = "auto-purge-alias";
    c.post_empty(&format!("/api/v2/keys/{id}/aliases/{alias}"))
        .await
        .expect(201);
    let keep = id_of(&c.create_root("kept").await);
    c.delete_key(&id).await.expect(204);

    s.advance(90 * DAY);
    assert_eq!(
        s.scheduler().await,
        (0, 0),
        "not before 90 days have passed"
    );
    assert_eq!(c.meta(&id).await["state"], 5);
    s.advance(1);
    assert_eq!(s.scheduler().await, (0, 1));
    assert_eq!(s.scheduler().await, (0, 0), "a second pass finds nothing");
    assert_error(&c.metadata(&id).await, 404, "KEY_NOT_FOUND_ERR");
    assert_error(&c.metadata(alias).await, 404, "KEY_NOT_FOUND_ERR");
    assert_eq!(s.stored_versions(c.instance_id, &id).await, 0);
    assert_eq!(
        c.meta(&keep).await["state"],
        1,
        "live keys are never purged"
    );
}

#[tokio::test]
async fn restore_within_thirty_days_brings_the_key_back() {
    let s = TestServer::start();
    let c = s.tenant().await;
    c.post_empty("/api/v2/key_rings/ring-r").await.expect(201);
    let k = c
        .create_in(
            json!({"type": KEY_TYPE, "name": "restorable", "description": "keep me", "tags": ["t1"], "extractable": false}),
            Some("ring-r"),
        )
        .await
        .resource(201);
    let id = id_of(&k);
    c.put_key_policy(&id, "?policy=rotation", rotation_policy(2))
        .await
        .expect(200);
    c.post_empty(&format!("/api/v2/keys/{id}/aliases/restorable-alias"))
        .await
        .expect(201);
    let dek = random(32);
    let (ct, _) = c.wrap_ok(&id, &dek).await;

    // While deleted: data under the key is unusable at once.
    c.delete_key(&id).await.expect(204);
    assert_error(
        &c.unwrap(&id, &ct).await,
        409,
        "KEY_ACTION_INVALID_STATE_ERR",
    );
    assert_error(
        &c.wrap(&id, &dek).await,
        409,
        "KEY_ACTION_INVALID_STATE_ERR",
    );
    assert_error(
        &c.act(&id, "disable").await,
        409,
        "KEY_ACTION_INVALID_STATE_ERR",
    );

    // Exactly 30 days later is still inside the window.
    s.advance(30 * DAY);
    let r = c.restore(&id).await.resource(201);
    assert_eq!(r["state"], 1);
    assert_eq!(r["deleted"], false);
    assert!(r.get("deletionDate").is_none(), "{r}");
    assert_eq!(r["name"], "restorable");
    assert_eq!(r["description"], "keep me");
    assert_eq!(r["tags"], json!(["t1"]));
    assert_eq!(r["keyRingID"], "ring-r");
    assert_eq!(r["rotation"]["interval_month"], 2, "{r}");
    assert_eq!(r["aliases"], json!(["restorable-alias"]), "{r}");
    assert_eq!(r["keyVersion"]["id"], k["keyVersion"]["id"]);
    let v = c.unwrap(&id, &ct).await.expect(200);
    assert_eq!(unb64(v["plaintext"].as_str().unwrap()), dek);
    // The same material: a standard key restores its payload too.
    let std = c.create_standard("std-restore").await;
    let sid = id_of(&std);
    c.delete_key(&sid).await.expect(204);
    s.advance(30);
    c.restore(&sid).await.resource(201);
    let got = c.get(&format!("/api/v2/keys/{sid}")).await.resource(200);
    assert_eq!(got["payload"], std["payload"]);

    // One second past 30 days: too late, and the key stays deleted.
    c.delete_key(&id).await.expect(204);
    s.advance(30 * DAY + 1);
    assert_error(&c.restore(&id).await, 400, "KEY_RESTORE_EXPIRED");
    assert_eq!(c.meta(&id).await["state"], 5);
}

#[tokio::test]
async fn restore_of_a_disabled_key_and_the_restore_body_forms() {
    let s = TestServer::start();
    let c = s.tenant().await;
    let id = id_of(&c.create_root("was-disabled").await);
    c.act(&id, "disable").await.expect(204);
    c.delete_key(&id).await.expect(204);
    s.advance(30);
    // Legacy restore body (original payload) is accepted and ignored.
    let legacy = key_envelope(json!({"payload": b64(&random(32))}));
    let r = c
        .post(&format!("/api/v2/keys/{id}/restore"), &legacy)
        .await
        .resource(201);
    // Keyward restores to Active (spec §6.1: restore 5 → 1).
    assert_eq!(r["state"], 1);
    c.wrap_ok(&id, &random(8)).await;
    // Restoring an Active key is a state error.
    assert_error(&c.restore(&id).await, 409, "KEY_ACTION_INVALID_STATE_ERR");
    // Readers and Writers cannot restore.
    let w = s.client(c.instance_id, Role::Writer).await;
    c.delete_key(&id).await.expect(204);
    s.advance(30);
    assert_error(&w.restore(&id).await, 403, "UNAUTHORIZED_ERR");
    c.restore(&id).await.resource(201);
}

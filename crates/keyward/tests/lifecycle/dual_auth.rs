//! Dual-authorised deletion (spec §6.5): `setKeyForDeletion` by one principal, `DELETE` by a
//! different one within 7 days, `unsetKeyForDeletion` cancels, `AUTHORIZATIONS_NOT_MET`,
//! `NOT_DUAL_AUTH_ERR`, and a dual-auth policy that cannot be switched off.

use crate::common::*;
use keyward_domain::Role;

/// A root key with a dual-auth policy set through `PUT /keys/{id}/policies`.
async fn dual_key(c: &Client, name: &str) -> String {
    let id = id_of(&c.create_root(name).await);
    let v = c
        .put_key_policy(&id, "?policy=dualAuthDelete", dual_auth_policy(true))
        .await
        .expect(200);
    assert_eq!(v["metadata"]["collectionType"], POLICY_TYPE, "{v}");
    assert_eq!(v["resources"][0]["dualAuthDelete"]["enabled"], true, "{v}");
    assert_eq!(v["resources"][0]["id"], id.as_str(), "{v}");
    id
}

#[tokio::test]
async fn second_principal_deletes_within_seven_days() {
    let s = TestServer::start();
    let a = s.tenant().await;
    let b = s.client(a.instance_id, Role::Manager).await;
    let id = dual_key(&a, "dual-1").await;
    let meta = a.meta(&id).await;
    assert_eq!(meta["dualAuthDelete"]["enabled"], true, "{meta}");
    assert_eq!(meta["dualAuthDelete"]["keySetForDeletion"], false, "{meta}");

    // Nobody can delete without a prior authorisation.
    let e = assert_error(&a.delete_key(&id).await, 409, "AUTHORIZATIONS_NOT_MET");
    assert!(
        e["resources"][0]["reasons"][0]["message"]
            .as_str()
            .unwrap()
            .contains("1 prior authorization"),
        "{e}"
    );
    assert_error(&b.delete_key(&id).await, 409, "AUTHORIZATIONS_NOT_MET");

    // A authorises; the key stays Active and usable meanwhile.
    a.act(&id, "setKeyForDeletion").await.expect(204);
    let set_at = s.now();
    let meta = a.meta(&id).await;
    assert_eq!(meta["state"], 1);
    assert_eq!(meta["dualAuthDelete"]["keySetForDeletion"], true, "{meta}");
    assert_eq!(
        meta["dualAuthDelete"]["authExpiration"],
        time_str(set_at + 7 * DAY),
        "{meta}"
    );
    a.wrap_ok(&id, &random(32)).await;

    // The same principal cannot complete its own authorisation.
    assert_error(&a.delete_key(&id).await, 409, "AUTHORIZATIONS_NOT_MET");
    // Setting it again (same principal) does not help either.
    a.act(&id, "setKeyForDeletion").await.expect(204);
    assert_error(&a.delete_key(&id).await, 409, "AUTHORIZATIONS_NOT_MET");

    // A different Manager, one second before the window closes.
    s.advance(7 * DAY - 1);
    let v = b
        .delete_h(
            &format!("/api/v2/keys/{id}"),
            &[("prefer", "return=representation")],
        )
        .await
        .resource(200);
    assert_eq!(v["state"], 5);
    assert_eq!(v["deleted"], true);
    assert_eq!(v["deletedBy"], b.iam_id.as_str());
    assert_error(&b.delete_key(&id).await, 410, "KEY_DELETED_ERR");

    // Restored, the key keeps its policy and needs a fresh authorisation.
    s.advance(30);
    let r = a.restore(&id).await.resource(201);
    assert_eq!(r["dualAuthDelete"]["enabled"], true, "{r}");
    assert_eq!(r["dualAuthDelete"]["keySetForDeletion"], false, "{r}");
    assert_error(&b.delete_key(&id).await, 409, "AUTHORIZATIONS_NOT_MET");
}

#[tokio::test]
async fn authorisation_expires_after_seven_days() {
    let s = TestServer::start();
    let a = s.tenant().await;
    let b = s.client(a.instance_id, Role::Manager).await;
    let id = dual_key(&a, "dual-2").await;
    a.act(&id, "setKeyForDeletion").await.expect(204);
    s.advance(7 * DAY);
    assert_error(&b.delete_key(&id).await, 409, "AUTHORIZATIONS_NOT_MET");
    s.advance(DAY);
    assert_error(&b.delete_key(&id).await, 409, "AUTHORIZATIONS_NOT_MET");
    assert_eq!(a.meta(&id).await["state"], 1);
    // A fresh authorisation opens a new window.
    a.act(&id, "setKeyForDeletion").await.expect(204);
    b.delete_key(&id).await.expect(204);
}

/// After the window the key should no longer show as set for deletion.
#[tokio::test]
async fn expired_authorisation_is_not_shown_as_set() {
    let s = TestServer::start();
    let a = s.tenant().await;
    let id = dual_key(&a, "dual-3").await;
    a.act(&id, "setKeyForDeletion").await.expect(204);
    s.advance(7 * DAY + 1);
    let meta = a.meta(&id).await;
    assert_eq!(meta["dualAuthDelete"]["keySetForDeletion"], false, "{meta}");
}

#[tokio::test]
async fn unset_cancels_and_writers_may_authorise() {
    let s = TestServer::start();
    let a = s.tenant().await;
    let b = s.client(a.instance_id, Role::Manager).await;
    let w = s.client(a.instance_id, Role::Writer).await;
    let reader = s.client(a.instance_id, Role::Reader).await;
    let id = dual_key(&a, "dual-4").await;

    a.act(&id, "setKeyForDeletion").await.expect(204);
    b.act(&id, "unsetKeyForDeletion").await.expect(204);
    let meta = a.meta(&id).await;
    assert_eq!(meta["dualAuthDelete"]["keySetForDeletion"], false, "{meta}");
    assert!(
        meta["dualAuthDelete"].get("authExpiration").is_none(),
        "{meta}"
    );
    assert_error(&b.delete_key(&id).await, 409, "AUTHORIZATIONS_NOT_MET");
    // Unset with nothing set is harmless.
    a.act(&id, "unsetKeyForDeletion").await.expect(204);

    // Readers can do neither; a Writer can authorise (but not delete).
    assert_error(
        &reader.act(&id, "setKeyForDeletion").await,
        403,
        "UNAUTHORIZED_ERR",
    );
    w.act(&id, "setKeyForDeletion").await.expect(204);
    assert_error(&w.delete_key(&id).await, 403, "UNAUTHORIZED_ERR");
    a.delete_key(&id).await.expect(204);
    // Set/unset on a deleted key.
    assert_error(
        &a.act(&id, "setKeyForDeletion").await,
        409,
        "KEY_ACTION_INVALID_STATE_ERR",
    );
}

#[tokio::test]
async fn not_dual_auth_keys_and_the_policy_cannot_be_disabled() {
    let s = TestServer::start();
    let a = s.tenant().await;
    let plain = id_of(&a.create_root("plain").await);
    assert_error(
        &a.act(&plain, "setKeyForDeletion").await,
        409,
        "NOT_DUAL_AUTH_ERR",
    );
    assert_error(
        &a.act(&plain, "unsetKeyForDeletion").await,
        409,
        "NOT_DUAL_AUTH_ERR",
    );
    // Explicitly disabled is the same as none; and a disabled policy may be turned on.
    a.put_key_policy(&plain, "?policy=dualAuthDelete", dual_auth_policy(false))
        .await
        .expect(200);
    assert_error(
        &a.act(&plain, "setKeyForDeletion").await,
        409,
        "NOT_DUAL_AUTH_ERR",
    );
    a.delete_key(&plain).await.expect(204);

    let id = dual_key(&a, "dual-5").await;
    assert_field_error(
        &a.put_key_policy(&id, "?policy=dualAuthDelete", dual_auth_policy(false))
            .await,
        400,
        "INVALID_FIELD_ERR",
        "dualAuthDelete",
    );
    assert_field_error(
        &a.put_key_policy(&id, "", dual_auth_policy(false)).await,
        400,
        "INVALID_FIELD_ERR",
        "dualAuthDelete",
    );
    let p = a
        .get(&format!("/api/v2/keys/{id}/policies?policy=dualAuthDelete"))
        .await
        .resources(200);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0]["dualAuthDelete"]["enabled"], true, "{p:?}");
    // Turning it on again is fine.
    a.put_key_policy(&id, "?policy=dualAuthDelete", dual_auth_policy(true))
        .await
        .expect(200);
    // Standard keys can carry the policy too.
    let std = id_of(&a.create_standard("std-dual").await);
    a.put_key_policy(&std, "?policy=dualAuthDelete", dual_auth_policy(true))
        .await
        .expect(200);
    assert_error(&a.delete_key(&std).await, 409, "AUTHORIZATIONS_NOT_MET");
}

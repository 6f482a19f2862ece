//! Key and instance policies (spec §7): rotation policies executed by the scheduler exactly
//! once when due, interval validation, instance defaults for keys created afterwards,
//! `keys_with_policy_overrides`, `allowedIP`, and `metrics`.

use keyward_domain::Role;
use serde_json::json;

use crate::common::*;

const MONTH: i64 = 30 * DAY;

#[tokio::test]
async fn rotation_policy_rotates_once_when_due() {
    let s = TestServer::start();
    let c = s.tenant().await;
    let a = id_of(&c.create_root("monthly").await);
    let d = id_of(&c.create_root("bimonthly").await);
    let none = id_of(&c.create_root("no-policy").await);
    let off = id_of(&c.create_root("policy-off").await);
    let suspended = id_of(&c.create_root("suspended").await);

    let v = c
        .put_key_policy(&a, "?policy=rotation", rotation_policy(1))
        .await
        .expect(200);
    assert_eq!(v["metadata"]["collectionType"], POLICY_TYPE);
    let res = &v["resources"][0];
    assert_eq!(res["id"], a.as_str(), "{v}");
    assert_eq!(
        res["rotation"],
        json!({"enabled": true, "interval_month": 1}),
        "{v}"
    );
    assert_eq!(res["createdBy"], c.iam_id.as_str(), "{v}");
    assert!(res["crn"].as_str().unwrap().ends_with(&a), "{v}");
    c.put_key_policy(&d, "", rotation_policy(2))
        .await
        .expect(200);
    c.put_key_policy(&off, "", rotation_policy(1))
        .await
        .expect(200);
    c.put_key_policy(
        &off,
        "",
        json!({"type": POLICY_TYPE, "rotation": {"enabled": false}}),
    )
    .await
    .expect(200);
    c.put_key_policy(&suspended, "", rotation_policy(1))
        .await
        .expect(200);
    c.act(&suspended, "disable").await.expect(204);

    let got = c
        .get(&format!("/api/v2/keys/{a}/policies?policy=rotation"))
        .await
        .resources(200);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["rotation"]["interval_month"], 1);
    let meta = c.meta(&a).await;
    assert_eq!(
        meta["rotation"],
        json!({"enabled": true, "interval_month": 1}),
        "{meta}"
    );
    let off_meta = c.meta(&off).await;
    assert_eq!(off_meta["rotation"]["enabled"], false, "{off_meta}");
    assert_eq!(
        off_meta["rotation"]["interval_month"], 1,
        "interval kept when only `enabled` changes"
    );

    s.advance(MONTH - 1);
    assert_eq!(s.scheduler().await, (0, 0), "not due yet");
    s.advance(1);
    assert_eq!(s.scheduler().await, (1, 0), "exactly one key is due");
    assert_eq!(s.scheduler().await, (0, 0), "and it is rotated once");
    assert_eq!(c.versions(&a).await.1, 2);
    assert_eq!(c.meta(&a).await["lastRotateDate"], time_str(s.now()));
    for k in [&d, &none, &off, &suspended] {
        assert_eq!(c.versions(k).await.1, 1, "{k}");
    }

    // A month later: the monthly key again, and the two-monthly key for the first time.
    s.advance(MONTH);
    assert_eq!(s.scheduler().await, (2, 0));
    assert_eq!(s.scheduler().await, (0, 0));
    assert_eq!(c.versions(&a).await.1, 3);
    assert_eq!(c.versions(&d).await.1, 2);
    assert_eq!(
        c.versions(&suspended).await.1,
        1,
        "suspended keys are not rotated"
    );

    // A manual rotation restarts the interval.
    s.advance(MONTH - HOUR);
    c.rotate(&a, &json!({})).await.expect(204);
    s.advance(HOUR);
    assert_eq!(s.scheduler().await, (0, 0));
    assert_eq!(c.versions(&a).await.1, 4);
}

#[tokio::test]
async fn rotation_policy_validation() {
    let s = TestServer::start();
    let c = s.tenant().await;
    let id = id_of(&c.create_root("validate").await);
    for bad in [json!(0), json!(13), json!(-1), json!("3"), json!(2.5)] {
        let r = c
            .put_key_policy(
                &id,
                "?policy=rotation",
                json!({"type": POLICY_TYPE, "rotation": {"enabled": true, "interval_month": bad}}),
            )
            .await;
        assert_field_error(&r, 400, "INVALID_FIELD_ERR", "interval_month");
    }
    assert!(c
        .get(&format!("/api/v2/keys/{id}/policies"))
        .await
        .resources(200)
        .is_empty());
    for good in [1, 12] {
        let v = c
            .put_key_policy(&id, "?policy=rotation", rotation_policy(good))
            .await
            .expect(200);
        assert_eq!(v["resources"][0]["rotation"]["interval_month"], good);
    }
    // UNCONFIRMED in the spec (§7.1): `rotation: {enabled: true}` without an interval keeps
    // the existing interval, or takes 1 month when there is none (Keyward's choice).
    let fresh = id_of(&c.create_root("no-interval").await);
    let v = c
        .put_key_policy(
            &fresh,
            "",
            json!({"type": POLICY_TYPE, "rotation": {"enabled": true}}),
        )
        .await
        .expect(200);
    assert_eq!(v["resources"][0]["rotation"]["interval_month"], 1, "{v}");
    let v = c
        .put_key_policy(
            &id,
            "",
            json!({"type": POLICY_TYPE, "rotation": {"enabled": true}}),
        )
        .await
        .expect(200);
    assert_eq!(v["resources"][0]["rotation"]["interval_month"], 12, "{v}");
    // Only for generated root keys.
    let imported = id_of(&c.import_root("imported", &random(32)).await);
    assert_field_error(
        &c.put_key_policy(&imported, "", rotation_policy(3)).await,
        400,
        "INVALID_FIELD_ERR",
        "rotation",
    );
    let std = id_of(&c.create_standard("standard").await);
    assert_field_error(
        &c.put_key_policy(&std, "", rotation_policy(3)).await,
        400,
        "INVALID_FIELD_ERR",
        "rotation",
    );
    // Both policies in one resource; GET without ?policy lists both.
    let both = json!({"type": POLICY_TYPE, "rotation": {"enabled": true, "interval_month": 4}, "dualAuthDelete": {"enabled": true}});
    let v = c.put_key_policy(&id, "", both).await.expect(200);
    assert_eq!(v["metadata"]["collectionTotal"], 2, "{v}");
    let got = c
        .get(&format!("/api/v2/keys/{id}/policies"))
        .await
        .resources(200);
    assert_eq!(got.len(), 2);
    // Key policies are Manager-only.
    let w = s.client(c.instance_id, Role::Writer).await;
    assert_error(
        &w.put_key_policy(&id, "", rotation_policy(3)).await,
        403,
        "UNAUTHORIZED_ERR",
    );
    assert_error(
        &w.get(&format!("/api/v2/keys/{id}/policies")).await,
        403,
        "UNAUTHORIZED_ERR",
    );
    // Instance rotation policy validation.
    for bad in [json!(0), json!(13)] {
        let r = c
            .put_instance_policy("rotation", true, Some(json!({"interval_month": bad})))
            .await;
        assert_field_error(&r, 400, "INVALID_FIELD_ERR", "interval_month");
    }
    assert_field_error(
        &c.put_instance_policy("rotation", true, None).await,
        400,
        "INVALID_FIELD_ERR",
        "attributes",
    );
    assert_field_error(
        &c.put_instance_policy("rotation", false, Some(json!({"interval_month": 3})))
            .await,
        400,
        "INVALID_FIELD_ERR",
        "attributes",
    );
}

#[tokio::test]
async fn instance_policies_apply_to_keys_created_afterwards() {
    let s = TestServer::start();
    let c = s.tenant().await;
    let before = id_of(&c.create_root("before").await);

    c.put_instance_policy("dualAuthDelete", true, None)
        .await
        .expect(204);
    c.put_instance_policy("rotation", true, Some(json!({"interval_month": 3})))
        .await
        .expect(204);
    let got = c.get("/api/v2/instance/policies").await.resources(200);
    assert_eq!(got.len(), 2, "{got:?}");
    let rot = c
        .get("/api/v2/instance/policies?policy=rotation")
        .await
        .resources(200);
    assert_eq!(rot.len(), 1);
    assert_eq!(rot[0]["policy_type"], "rotation");
    assert_eq!(
        rot[0]["policy_data"],
        json!({"enabled": true, "attributes": {"interval_month": 3}})
    );
    assert_eq!(rot[0]["createdBy"], c.iam_id.as_str());

    let root = c.create_root("after-root").await;
    assert_eq!(root["dualAuthDelete"]["enabled"], true, "{root}");
    assert_eq!(
        root["rotation"],
        json!({"enabled": true, "interval_month": 3}),
        "{root}"
    );
    let imported = c.import_root("after-imported", &random(32)).await;
    assert_eq!(imported["dualAuthDelete"]["enabled"], true, "{imported}");
    assert!(
        imported.get("rotation").is_none(),
        "no automatic rotation for imported keys: {imported}"
    );
    let std = c.create_standard("after-std").await;
    assert_eq!(std["dualAuthDelete"]["enabled"], true, "{std}");
    assert!(std.get("rotation").is_none(), "{std}");

    let old = c.meta(&before).await;
    assert_eq!(
        old["dualAuthDelete"]["enabled"], false,
        "existing keys unchanged: {old}"
    );
    assert!(old.get("rotation").is_none(), "{old}");
    c.delete_key(&before).await.expect(204);
    assert_error(
        &c.delete_key(&id_of(&root)).await,
        409,
        "AUTHORIZATIONS_NOT_MET",
    );

    // The instance rotation default is executed by the scheduler like a key policy.
    s.advance(3 * MONTH);
    assert_eq!(s.scheduler().await, (1, 0));
    assert_eq!(c.versions(&id_of(&root)).await.1, 2);

    // Disabling the instance policies affects new keys only.
    c.put_instance_policy("dualAuthDelete", false, None)
        .await
        .expect(204);
    c.put_instance_policy("rotation", false, None)
        .await
        .expect(204);
    let later = c.create_root("later").await;
    assert_eq!(later["dualAuthDelete"]["enabled"], false, "{later}");
    assert!(later.get("rotation").is_none(), "{later}");
    assert_eq!(
        c.meta(&id_of(&root)).await["dualAuthDelete"]["enabled"],
        true
    );
    assert_eq!(
        c.get("/api/v2/instance/policies?policy=rotation")
            .await
            .resources(200)[0]["policy_data"],
        json!({"enabled": false})
    );

    // metrics: accepted and stored.
    c.put_instance_policy("metrics", true, None)
        .await
        .expect(204);
    let m = c
        .get("/api/v2/instance/policies?policy=metrics")
        .await
        .resources(200);
    assert_eq!(m[0]["policy_data"]["enabled"], true);
    // Unknown policy type.
    assert_field_error(
        &c.put_instance_policy("bogusPolicy", true, None).await,
        400,
        "INVALID_FIELD_ERR",
        "policy_type",
    );
    // Instance policies are Manager-only.
    let w = s.client(c.instance_id, Role::Writer).await;
    assert_error(
        &w.put_instance_policy("metrics", false, None).await,
        403,
        "UNAUTHORIZED_ERR",
    );
}

#[tokio::test]
async fn keys_with_policy_overrides_set_the_key_policies() {
    let s = TestServer::start();
    let c = s.tenant().await;
    c.put_instance_policy("rotation", true, Some(json!({"interval_month": 3})))
        .await
        .expect(204);
    let body = key_envelope(json!({
        "type": KEY_TYPE, "name": "overridden", "extractable": false,
        "rotation": {"enabled": true, "interval_month": 6},
        "dualAuthDelete": {"enabled": true},
    }));
    let k = c
        .post("/api/v2/keys_with_policy_overrides", &body)
        .await
        .resource(201);
    assert_eq!(
        k["rotation"],
        json!({"enabled": true, "interval_month": 6}),
        "{k}"
    );
    assert_eq!(k["dualAuthDelete"]["enabled"], true, "{k}");
    let p = c
        .get(&format!("/api/v2/keys/{}/policies", id_of(&k)))
        .await
        .resources(200);
    assert_eq!(p.len(), 2, "{p:?}");
    // Rotation switched off by the override.
    let body = key_envelope(json!({
        "type": KEY_TYPE, "name": "no-rotation", "extractable": false,
        "rotation": {"enabled": false},
    }));
    let k = c
        .post("/api/v2/keys_with_policy_overrides", &body)
        .await
        .resource(201);
    assert_eq!(k["rotation"]["enabled"], false, "{k}");
    // Out-of-range interval.
    let body = key_envelope(json!({
        "type": KEY_TYPE, "name": "bad", "extractable": false,
        "rotation": {"enabled": true, "interval_month": 13},
    }));
    assert_field_error(
        &c.post("/api/v2/keys_with_policy_overrides", &body).await,
        400,
        "INVALID_FIELD_ERR",
        "interval_month",
    );
}

/// The point of `keys_with_policy_overrides` is to depart from the instance policies.
#[tokio::test]
async fn keys_with_policy_overrides_can_turn_off_instance_dual_auth() {
    let s = TestServer::start();
    let c = s.tenant().await;
    c.put_instance_policy("dualAuthDelete", true, None)
        .await
        .expect(204);
    let body = key_envelope(json!({
        "type": KEY_TYPE, "name": "single-auth", "extractable": false,
        "dualAuthDelete": {"enabled": false},
    }));
    let r = c.post("/api/v2/keys_with_policy_overrides", &body).await;
    let k = r.resource(201);
    assert_eq!(k["dualAuthDelete"]["enabled"], false, "{k}");
    c.delete_key(&id_of(&k)).await.expect(204);
}

#[tokio::test]
async fn allowed_ip_is_enforced_against_the_client_address() {
    let s = TestServer::start();
    // Loopback allowed: requests keep working.
    let ok = s.tenant().await;
    ok.put_instance_policy(
        "allowedIP",
        true,
        Some(json!({"allowed_ip": ["127.0.0.0/8"]})),
    )
    .await
    .expect(204);
    ok.create_root("still-works").await;
    let p = ok
        .get("/api/v2/instance/policies?policy=allowedIP")
        .await
        .resources(200);
    assert_eq!(
        p[0]["policy_data"]["attributes"]["allowed_ip"],
        json!(["127.0.0.0/8"])
    );
    ok.put_instance_policy(
        "allowedIP",
        true,
        Some(json!({"allowed_ip": ["10.0.0.0/8", "127.0.0.1/32", "2001:db8::/32"]})),
    )
    .await
    .expect(204);
    ok.create_root("still-works-2").await;

    // A CIDR that excludes 127.0.0.1: every request of the instance is refused.
    let blocked = s.tenant().await;
    let id = id_of(&blocked.create_root("soon-blocked").await);
    blocked
        .put_instance_policy(
            "allowedIP",
            true,
            Some(json!({"allowed_ip": ["10.0.0.0/8"]})),
        )
        .await
        .expect(204);
    for r in [
        blocked.metadata(&id).await,
        blocked.get("/api/v2/keys").await,
        blocked.get("/api/v2/instance/policies").await,
        blocked
            .create(json!({"type": KEY_TYPE, "name": "nope", "extractable": false}))
            .await,
    ] {
        assert_error(&r, 401, "UNAUTHORIZED_ERR");
    }
    // Other instances of the same server are unaffected.
    ok.meta(&id_of(&ok.create_root("other-instance").await))
        .await;
    // The same principal in another instance is unaffected as well.
    let other = s.create_instance().await;
    s.grant(other, &blocked.iam_id, Role::Manager).await;
    let mut same = blocked.clone();
    same.instance = other.to_string();
    same.instance_id = other;
    same.create_root("elsewhere").await;

    // Invalid CIDRs are refused (and nothing is stored).
    let v = s.tenant().await;
    for bad in [
        json!(["300.1.1.1/8"]),
        json!(["10.0.0.0/33"]),
        json!([]),
        json!("10.0.0.0/8"),
    ] {
        let r = v
            .put_instance_policy("allowedIP", true, Some(json!({"allowed_ip": bad})))
            .await;
        assert_field_error(&r, 400, "INVALID_FIELD_ERR", "allowed_ip");
    }
    v.create_root("unrestricted").await;
}

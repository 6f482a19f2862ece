//! Key rings and aliases (spec §8).

use keyward_domain::Role;
use serde_json::json;

use crate::common::*;

fn ring_ids(v: &[serde_json::Value]) -> Vec<String> {
    v.iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn key_rings_create_list_place_move_and_delete() {
    let s = TestServer::start();
    let c = s.tenant().await;
    let rings = c.get("/api/v2/key_rings").await.expect(200);
    assert_eq!(
        rings["metadata"]["collectionType"],
        "application/vnd.ibm.kms.key_ring+json"
    );
    assert_eq!(
        ring_ids(rings["resources"].as_array().unwrap()),
        vec!["default"]
    );

    c.post_empty("/api/v2/key_rings/ring-a").await.expect(201);
    c.post_empty("/api/v2/key_rings/ring_b").await.expect(201);
    assert_error(
        &c.post_empty("/api/v2/key_rings/ring-a").await,
        409,
        "KEY_RING_CONFLICT_ERR",
    );
    assert_error(
        &c.post_empty("/api/v2/key_rings/default").await,
        409,
        "KEY_RING_CONFLICT_ERR",
    );
    assert_error(
        &c.delete("/api/v2/key_rings/default").await,
        409,
        "KEY_RING_CONFLICT_ERR",
    );
    assert_error(
        &c.delete("/api/v2/key_rings/default?force=true").await,
        409,
        "KEY_RING_CONFLICT_ERR",
    );
    for bad in ["x", "bad.ring", "ring%20space"] {
        assert_error(
            &c.post_empty(&format!("/api/v2/key_rings/{bad}")).await,
            400,
            "INVALID_FIELD_ERR",
        );
    }
    let listed = c.get("/api/v2/key_rings?totalCount=true").await.expect(200);
    assert_eq!(
        ring_ids(listed["resources"].as_array().unwrap()),
        vec!["default", "ring-a", "ring_b"]
    );
    assert_eq!(listed["metadata"]["totalCount"], 3);
    assert_eq!(listed["resources"][1]["createdBy"], c.iam_id.as_str());

    // x-kms-key-ring on create places the key; an unknown ring is refused.
    let a = c
        .create_in(
            json!({"type": KEY_TYPE, "name": "in-ring-a", "extractable": false}),
            Some("ring-a"),
        )
        .await
        .resource(201);
    assert_eq!(a["keyRingID"], "ring-a");
    let a = id_of(&a);
    let d = c.create_root("in-default").await;
    assert_eq!(d["keyRingID"], "default");
    let d = id_of(&d);
    let r = c
        .create_in(
            json!({"type": KEY_TYPE, "name": "lost", "extractable": false}),
            Some("no-such-ring"),
        )
        .await;
    assert_error(&r, 404, "KEY_RING_NOT_FOUND_ERR");

    // x-kms-key-ring on list restricts to that ring (GET and HEAD agree).
    let in_a = c
        .get_h("/api/v2/keys", &[("x-kms-key-ring", "ring-a")])
        .await
        .resources(200);
    assert_eq!(ring_ids(&in_a), vec![a.clone()]);
    let in_default = c
        .get_h("/api/v2/keys", &[("x-kms-key-ring", "default")])
        .await
        .resources(200);
    assert_eq!(ring_ids(&in_default), vec![d.clone()]);
    let head = send(
        c.req(reqwest::Method::HEAD, "/api/v2/keys")
            .await
            .header("x-kms-key-ring", "ring-a"),
    )
    .await;
    assert_eq!(head.key_total(), 1);
    assert_eq!(c.list_ids("").await.len(), 2, "no header: every ring");

    // UNCONFIRMED in the spec (§11.7): Keyward ignores x-kms-key-ring on single-key lookups,
    // so a key is found whichever ring the header names.
    assert_eq!(
        c.get_h(
            &format!("/api/v2/keys/{a}/metadata"),
            &[("x-kms-key-ring", "ring_b")]
        )
        .await
        .resource(200)["id"],
        a.as_str()
    );

    // PATCH moves the key (Manager only); to an unknown ring: 404.
    let w = s.client(c.instance_id, Role::Writer).await;
    assert_error(
        &w.patch(
            &format!("/api/v2/keys/{a}"),
            &json!({"keyRingID": "ring_b"}),
            &[],
        )
        .await,
        403,
        "UNAUTHORIZED_ERR",
    );
    let moved = c
        .patch(
            &format!("/api/v2/keys/{a}"),
            &json!({"keyRingID": "ring_b"}),
            &[("x-kms-key-ring", "ring-a")],
        )
        .await
        .resource(200);
    assert_eq!(moved["keyRingID"], "ring_b");
    assert_eq!(c.meta(&a).await["keyRingID"], "ring_b");
    assert!(c
        .get_h("/api/v2/keys", &[("x-kms-key-ring", "ring-a")])
        .await
        .resources(200)
        .is_empty());
    assert_eq!(
        ring_ids(
            &c.get_h("/api/v2/keys", &[("x-kms-key-ring", "ring_b")])
                .await
                .resources(200)
        ),
        vec![a.clone()]
    );
    assert_error(
        &c.patch(
            &format!("/api/v2/keys/{a}"),
            &json!({"keyRingID": "nowhere"}),
            &[],
        )
        .await,
        404,
        "KEY_RING_NOT_FOUND_ERR",
    );
    assert_error(
        &c.patch(&format!("/api/v2/keys/{a}"), &json!({}), &[]).await,
        400,
        "INVALID_FIELD_ERR",
    );
    // The Go client's capitalised field name is accepted.
    c.patch(
        &format!("/api/v2/keys/{d}"),
        &json!({"KeyRingID": "ring-a"}),
        &[],
    )
    .await
    .resource(200);
    c.patch(
        &format!("/api/v2/keys/{d}"),
        &json!({"keyRingID": "default"}),
        &[],
    )
    .await
    .resource(200);

    // An empty ring is deleted; one holding a live key is not, even with force.
    c.delete("/api/v2/key_rings/ring-a").await.expect(204);
    assert_error(
        &c.delete("/api/v2/key_rings/ring-a").await,
        404,
        "KEY_RING_NOT_FOUND_ERR",
    );
    assert_error(
        &c.delete("/api/v2/key_rings/ring_b").await,
        409,
        "KEY_RING_NOT_EMPTY_ERR",
    );
    assert_error(
        &c.delete("/api/v2/key_rings/ring_b?force=true").await,
        409,
        "KEY_RING_NOT_EMPTY_ERR",
    );
    // With only destroyed keys: refused without force, allowed with it; the keys move to default.
    c.delete_key(&a).await.expect(204);
    assert_error(
        &c.delete("/api/v2/key_rings/ring_b").await,
        409,
        "KEY_RING_NOT_EMPTY_ERR",
    );
    assert_error(
        &w.delete("/api/v2/key_rings/ring_b?force=true").await,
        403,
        "UNAUTHORIZED_ERR",
    );
    c.delete("/api/v2/key_rings/ring_b?force=true")
        .await
        .expect(204);
    assert_eq!(c.meta(&a).await["keyRingID"], "default");
    assert_eq!(
        ring_ids(&c.get("/api/v2/key_rings").await.resources(200)),
        vec!["default"]
    );
    // A Writer may create rings.
    w.post_empty("/api/v2/key_rings/writer-ring")
        .await
        .expect(201);
}

#[tokio::test]
async fn at_most_fifty_key_rings_per_instance() {
    let s = TestServer::start();
    let c = s.tenant().await;
    for i in 1..=49 {
        c.post_empty(&format!("/api/v2/key_rings/ring-{i:02}"))
            .await
            .expect(201);
    }
    assert_error(
        &c.post_empty("/api/v2/key_rings/ring-50").await,
        400,
        "KEY_RING_LIMIT_EXCEEDED_ERR",
    );
    let all = c.get("/api/v2/key_rings?totalCount=true").await.expect(200);
    assert_eq!(
        all["metadata"]["totalCount"], 50,
        "default counts towards the 50"
    );
    assert_eq!(all["resources"].as_array().unwrap().len(), 50);
    let page = c
        .get("/api/v2/key_rings?limit=10&offset=45")
        .await
        .resources(200);
    assert_eq!(
        ring_ids(&page),
        vec!["ring-45", "ring-46", "ring-47", "ring-48", "ring-49"]
    );
    // The limit is per instance.
    s.tenant()
        .await
        .post_empty("/api/v2/key_rings/ring-50")
        .await
        .expect(201);
    // Freeing one makes room.
    c.delete("/api/v2/key_rings/ring-01").await.expect(204);
    c.post_empty("/api/v2/key_rings/ring-50").await.expect(201);
}

#[tokio::test]
async fn aliases_limits_uniqueness_and_reserved_words() {
    let s = TestServer::start();
    let c = s.tenant().await;
    let k = id_of(&c.create_root("aliased").await);
    let k2 = id_of(&c.create_root("other").await);

    let v = c
        .post_empty(&format!("/api/v2/keys/{k}/aliases/alias-1"))
        .await
        .expect(201);
    assert_eq!(
        v["metadata"]["collectionType"],
        "application/vnd.ibm.kms.alias+json"
    );
    let a = &v["resources"][0];
    assert_eq!(a["keyId"], k.as_str());
    assert_eq!(a["alias"], "alias-1");
    assert_eq!(a["createdBy"], c.iam_id.as_str());
    assert_eq!(a["creationDate"], time_str(s.now()));
    for i in 2..=5 {
        c.post_empty(&format!("/api/v2/keys/{k}/aliases/alias-{i}"))
            .await
            .expect(201);
    }
    assert_error(
        &c.post_empty(&format!("/api/v2/keys/{k}/aliases/alias-6"))
            .await,
        400,
        "KEY_ALIAS_QUOTA_ERR",
    );
    // Keyward's choice (not in the spec): adding an alias the key already has is a no-op 201.
    c.post_empty(&format!("/api/v2/keys/{k}/aliases/alias-3"))
        .await
        .expect(201);
    let meta = c.meta(&k).await;
    let mut aliases: Vec<String> = meta["aliases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    aliases.sort();
    assert_eq!(
        aliases,
        vec!["alias-1", "alias-2", "alias-3", "alias-4", "alias-5"]
    );

    // Unique per instance; case-sensitive; fine in another instance.
    assert_error(
        &c.post_empty(&format!("/api/v2/keys/{k2}/aliases/alias-1"))
            .await,
        409,
        "KEY_ALIAS_NOT_UNIQUE_ERR",
    );
    c.post_empty(&format!("/api/v2/keys/{k2}/aliases/ALIAS-1"))
        .await
        .expect(201);
    let other = s.tenant().await;
    let ok = id_of(&other.create_root("elsewhere").await);
    other
        .post_empty(&format!("/api/v2/keys/{ok}/aliases/alias-1"))
        .await
        .expect(201);
    assert_eq!(
        other.meta("alias-1").await["id"],
        ok.as_str(),
        "an alias resolves in the caller's instance"
    );
    assert_eq!(c.meta("alias-1").await["id"], k.as_str());

    // Syntax: reserved words, UUID-shaped, length, characters.
    let uuid = "3f1b7f3e-5a2c-4d5e-9f1a-2b3c4d5e6f70";
    let long = "a".repeat(91);
    for bad in [
        "keys",
        "wrap",
        "versions",
        "policies",
        "allowed_ip",
        uuid,
        "a",
        long.as_str(),
        "bad.alias",
        "bad%20alias",
    ] {
        let r = c
            .post_empty(&format!("/api/v2/keys/{k2}/aliases/{bad}"))
            .await;
        assert_error(&r, 400, "INVALID_FIELD_ERR");
    }
    let ninety = "b".repeat(90);
    c.post_empty(&format!("/api/v2/keys/{k2}/aliases/{ninety}"))
        .await
        .expect(201);
    c.post_empty(&format!("/api/v2/keys/{k2}/aliases/ab"))
        .await
        .expect(201);

    // Readers cannot create aliases.
    let r = s.client(c.instance_id, Role::Reader).await;
    assert_error(
        &r.post_empty(&format!("/api/v2/keys/{k2}/aliases/reader-alias"))
            .await,
        403,
        "UNAUTHORIZED_ERR",
    );

    // Delete an alias; it stops resolving and can be reused.
    c.delete(&format!("/api/v2/keys/{k}/aliases/alias-5"))
        .await
        .expect(204);
    assert_error(&c.metadata("alias-5").await, 404, "KEY_NOT_FOUND_ERR");
    assert_error(
        &c.delete(&format!("/api/v2/keys/{k}/aliases/alias-5")).await,
        404,
        "NOT_FOUND_ERR",
    );
    c.post_empty(&format!("/api/v2/keys/{k2}/aliases/alias-5"))
        .await
        .expect(201);
}

#[tokio::test]
async fn aliases_stand_for_the_key_id_and_go_with_the_purged_key() {
    let s = TestServer::start();
    let c = s.tenant().await;
    let (pk, iam) = s.create_api_key(c.instance_id, Role::KeyPurge).await;
    let p = Client::login(&s.base, s.clock.clone(), c.instance_id, &pk, &iam).await;
    let k = id_of(&c.create_root("by-alias").await);
    c.post_empty(&format!("/api/v2/keys/{k}/aliases/my-key"))
        .await
        .expect(201);

    assert_eq!(
        c.get("/api/v2/keys/my-key").await.resource(200)["id"],
        k.as_str()
    );
    assert_eq!(c.meta("my-key").await["aliases"], json!(["my-key"]));
    let dek = random(32);
    let (ct, _) = c.wrap_ok("my-key", &dek).await;
    let v = c.unwrap("my-key", &ct).await.expect(200);
    assert_eq!(unb64(v["plaintext"].as_str().unwrap()), dek);
    c.rotate("my-key", &json!({})).await.expect(204);
    assert_eq!(c.versions("my-key").await.1, 2);
    c.put_key_policy("my-key", "?policy=dualAuthDelete", dual_auth_policy(false))
        .await
        .expect(200);
    c.act("my-key", "disable").await.expect(204);
    s.advance(30);
    c.act("my-key", "enable").await.expect(204);
    c.post_empty("/api/v2/key_rings/alias-ring")
        .await
        .expect(201);
    c.patch(
        "/api/v2/keys/my-key",
        &json!({"keyRingID": "alias-ring"}),
        &[],
    )
    .await
    .resource(200);
    // An alias in the path of an alias call.
    c.post_empty("/api/v2/keys/my-key/aliases/my-key-2")
        .await
        .expect(201);
    assert_eq!(c.meta("my-key-2").await["id"], k.as_str());

    c.delete_key("my-key").await.expect(204);
    assert_eq!(c.meta(&k).await["state"], 5);
    // A deleted key takes no new alias and cannot be moved.
    assert_error(
        &c.post_empty(&format!("/api/v2/keys/{k}/aliases/too-late"))
            .await,
        409,
        "KEY_ACTION_INVALID_STATE_ERR",
    );
    assert_error(
        &c.patch(
            &format!("/api/v2/keys/{k}"),
            &json!({"keyRingID": "default"}),
            &[],
        )
        .await,
        409,
        "KEY_ACTION_INVALID_STATE_ERR",
    );
    // While only deleted the alias still resolves (restore brings it back) and stays taken.
    assert_eq!(c.meta("my-key").await["state"], 5);
    let k2 = id_of(&c.create_root("next").await);
    assert_error(
        &c.post_empty(&format!("/api/v2/keys/{k2}/aliases/my-key"))
            .await,
        409,
        "KEY_ALIAS_NOT_UNIQUE_ERR",
    );
    // Purged: the aliases are deleted with the key and free again.
    s.advance(4 * HOUR);
    p.purge("my-key").await.resource(200);
    assert_error(&c.metadata("my-key").await, 404, "KEY_NOT_FOUND_ERR");
    assert_error(&c.metadata("my-key-2").await, 404, "KEY_NOT_FOUND_ERR");
    c.post_empty(&format!("/api/v2/keys/{k2}/aliases/my-key"))
        .await
        .expect(201);
    assert_eq!(c.meta("my-key").await["id"], k2.as_str());
    // An alias that names nothing.
    assert_error(&c.metadata("never-was").await, 404, "KEY_NOT_FOUND_ERR");
}

/// `aliases` in a create body (Key Protect's `CreateKeyWithAliases`): created with the key in
/// one transaction, or nothing is created.
#[tokio::test]
async fn aliases_given_at_creation_come_with_the_key_or_nothing_does() {
    let s = TestServer::start();
    let c = s.tenant().await;
    let count = || async {
        c.get("/api/v2/keys?state=0,1,2,3,5").await.expect(200)["metadata"]["collectionTotal"]
            .as_u64()
            .unwrap()
    };
    let k = c
        .create(
            json!({"type": KEY_TYPE, "name": "with-aliases", "extractable": false,
                       "aliases": ["first-alias", "second_alias", "first-alias"]}),
        )
        .await
        .resource(201);
    let mut got: Vec<String> = k["aliases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    got.sort();
    assert_eq!(got, ["first-alias", "second_alias"]);
    let id = id_of(&k);
    for a in ["first-alias", "second_alias"] {
        let m = c
            .get(&format!("/api/v2/keys/{a}/metadata"))
            .await
            .resource(200);
        assert_eq!(m["id"], id.as_str());
    }
    let n = count().await;
    // A taken alias: 409, and the key is not created either.
    let r = c
        .create(json!({"type": KEY_TYPE, "name": "clash", "aliases": ["fresh-one", "first-alias"]}))
        .await;
    assert_error(&r, 409, "KEY_ALIAS_NOT_UNIQUE_ERR");
    assert_eq!(count().await, n);
    assert_error(
        &c.get("/api/v2/keys/fresh-one/metadata").await,
        404,
        "KEY_NOT_FOUND_ERR",
    );
    // Too many, malformed, a UUID, a reserved word: refused before anything is written.
    let six: Vec<String> = (0..6).map(|i| format!("al-{i}")).collect();
    let r = c
        .create(json!({"type": KEY_TYPE, "name": "six", "aliases": six}))
        .await;
    assert_error(&r, 400, "KEY_ALIAS_QUOTA_ERR");
    for bad in [
        json!(["a"]),
        json!(["has space"]),
        json!(["0f1e2d3c-4b5a-4968-8776-655443322110"]),
        json!(["keys"]),
        json!("one"),
        json!([7]),
    ] {
        let r = c
            .create(json!({"type": KEY_TYPE, "name": "bad", "aliases": bad}))
            .await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }
    assert_eq!(count().await, n);
}

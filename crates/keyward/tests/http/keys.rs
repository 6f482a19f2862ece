//! Every key endpoint on its success path, and the errors each documents: create (generated,
//! plain import), list/HEAD with filters, get, metadata, delete, rotate, the deprecated
//! `?action=` form, `/identity/token` and `/healthz`.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use keyward_domain::{format_time, Role};
use serde_json::{json, Value};

use crate::common::*;

fn assert_key_shape(k: &Value, c: &Client, extractable: bool, imported: bool) {
    assert_eq!(k["type"], KEY_TYPE);
    let id = k["id"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    assert_eq!(k["state"], 1);
    assert_eq!(k["extractable"], extractable);
    assert_eq!(k["imported"], imported);
    assert_eq!(k["deleted"], false);
    assert_eq!(k["createdBy"], c.iam_id.as_str());
    let crn = k["crn"].as_str().unwrap();
    assert!(
        crn.contains(&c.instance) && crn.ends_with(&format!(":key:{id}")),
        "{crn}"
    );
    assert!(k["keyVersion"]["id"].is_string(), "{k}");
    assert!(k["creationDate"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn create_generated_root_and_standard_keys() {
    let s = shared();
    let c = s.tenant().await;

    let resp = c.create(json!({"type": KEY_TYPE, "name": "root-1", "extractable": false, "description": "a root key", "tags": ["a", "b"]})).await;
    let root = resp.resource(201);
    assert_key_shape(&root, &c, false, false);
    assert_eq!(root["name"], "root-1");
    assert_eq!(root["description"], "a root key");
    assert_eq!(root["tags"], json!(["a", "b"]));
    assert_eq!(root["algorithmBitSize"], 256);
    assert_eq!(root["creationDate"], format_time(s.now()));
    assert!(
        root.get("payload").is_none(),
        "root material must never be returned: {root}"
    );

    // `extractable` omitted: a standard key (docs/design.md), returned with its material.
    let std = c
        .create(json!({"type": KEY_TYPE, "name": "std-1"}))
        .await
        .resource(201);
    assert_key_shape(&std, &c, true, false);
    let material = unb64(std["payload"].as_str().unwrap());
    assert_eq!(material.len(), 32);

    // GET: the standard key's payload, none for the root key. Metadata: never a payload.
    let got = c
        .get(&format!("/api/v2/keys/{}", id_of(&std)))
        .await
        .resource(200);
    assert_eq!(unb64(got["payload"].as_str().unwrap()), material);
    let got = c
        .get(&format!("/api/v2/keys/{}", id_of(&root)))
        .await
        .resource(200);
    assert!(got.get("payload").is_none(), "{got}");
    assert_eq!(got["id"], root["id"]);
    for k in [&root, &std] {
        let m = c
            .get(&format!("/api/v2/keys/{}/metadata", id_of(k)))
            .await
            .resource(200);
        assert!(m.get("payload").is_none(), "{m}");
        assert_eq!(m["id"], k["id"]);
        assert_eq!(m["keyVersion"], k["keyVersion"]);
    }
}

#[tokio::test]
async fn plain_import_root_keys_16_24_32_and_wrong_sizes() {
    let s = shared();
    let c = s.tenant().await;
    for n in [16usize, 24, 32] {
        let material = random(n);
        let k = c.import_root_key(&material).await;
        assert_key_shape(&k, &c, false, true);
        assert_eq!(k["algorithmBitSize"], (n * 8) as u64);
        assert!(k.get("payload").is_none());
        // The key really holds that material: a wrap opens with it.
        let id = id_of(&k);
        let dek = random(32);
        let ct = c.wrap_bytes(&id, &dek, Some(&["ctx"])).await;
        assert_eq!(open_blob_with(&material, &id, &ct, &["ctx".into()]), dek);
        assert_eq!(c.unwrap_bytes(&id, &ct, Some(&["ctx"])).await, dek);
    }
    let before = s.snapshot(c.instance_id).await;
    for n in [0usize, 1, 15, 17, 31, 33, 64] {
        let r = c
            .create(json!({"type": KEY_TYPE, "name": "bad", "extractable": false, "payload": B64.encode(random(n))}))
            .await;
        assert_field_error(&r, 400, "INVALID_FIELD_ERR", "payload");
    }
    let r = c
        .create(json!({"type": KEY_TYPE, "name": "bad", "extractable": false, "payload": "not base64!"}))
        .await;
    assert_field_error(&r, 400, "INVALID_FIELD_ERR", "payload");
    assert_eq!(s.snapshot(c.instance_id).await, before);
}

#[tokio::test]
async fn import_standard_keys_up_to_7500_bytes() {
    let s = shared();
    let c = s.tenant().await;
    for n in [1usize, 32, 7500] {
        let material = random(n);
        let k = c
            .create(json!({"type": KEY_TYPE, "name": "std-imp", "extractable": true, "payload": B64.encode(&material)}))
            .await
            .resource(201);
        assert_key_shape(&k, &c, true, true);
        let got = c
            .get(&format!("/api/v2/keys/{}", id_of(&k)))
            .await
            .resource(200);
        assert_eq!(unb64(got["payload"].as_str().unwrap()), material);
    }
    let before = s.snapshot(c.instance_id).await;
    for payload in [B64.encode(random(7501)), String::new(), "%%%".into()] {
        let r = c
            .create(json!({"type": KEY_TYPE, "name": "std-imp", "extractable": true, "payload": payload}))
            .await;
        assert_field_error(&r, 400, "INVALID_FIELD_ERR", "payload");
    }
    assert_eq!(s.snapshot(c.instance_id).await, before);
}

#[tokio::test]
async fn list_and_head_with_limit_offset_state_extractable() {
    let s = shared();
    let c = s.tenant().await;
    let empty = c.get("/api/v2/keys").await.expect(200);
    assert_eq!(empty["metadata"]["collectionTotal"], 0);
    assert_eq!(empty["resources"], json!([]));

    let mut roots = Vec::new();
    for _ in 0..3 {
        roots.push(id_of(&c.create_root_key().await));
    }
    let mut stds = Vec::new();
    for _ in 0..2 {
        stds.push(id_of(&c.create_standard_key().await));
    }
    let ids = |v: &Value| -> Vec<String> {
        v["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(id_of)
            .collect()
    };
    let all = c.get("/api/v2/keys").await.expect(200);
    assert_eq!(all["metadata"]["collectionType"], KEY_TYPE);
    assert_eq!(all["metadata"]["collectionTotal"], 5);
    for r in all["resources"].as_array().unwrap() {
        assert!(
            r.get("payload").is_none(),
            "list never returns material: {r}"
        );
    }
    let mut want: Vec<String> = roots.iter().chain(&stds).cloned().collect();
    want.sort();
    let mut got = ids(&all);
    got.sort();
    assert_eq!(got, want);

    // Pages are disjoint and cover the list, in the list's order.
    let mut paged = Vec::new();
    for off in [0, 2, 4] {
        let p = c
            .get(&format!("/api/v2/keys?limit=2&offset={off}"))
            .await
            .expect(200);
        let n = if off == 4 { 1 } else { 2 };
        assert_eq!(p["metadata"]["collectionTotal"], n);
        paged.extend(ids(&p));
    }
    assert_eq!(paged, ids(&all));
    let p = c.get("/api/v2/keys?offset=5").await.expect(200);
    assert_eq!(p["metadata"]["collectionTotal"], 0);

    let t = c.get("/api/v2/keys?extractable=true").await.expect(200);
    let mut g = ids(&t);
    g.sort();
    let mut w = stds.clone();
    w.sort();
    assert_eq!(g, w);
    let f = c.get("/api/v2/keys?extractable=false").await.expect(200);
    assert_eq!(f["metadata"]["collectionTotal"], 3);

    // Deleted keys are hidden by default and shown with state=5.
    c.delete(&format!("/api/v2/keys/{}", roots[0]))
        .await
        .expect(204);
    assert_eq!(
        c.get("/api/v2/keys").await.expect(200)["metadata"]["collectionTotal"],
        4
    );
    let d = c.get("/api/v2/keys?state=5").await.expect(200);
    assert_eq!(ids(&d), vec![roots[0].clone()]);
    assert_eq!(d["resources"][0]["state"], 5);
    assert_eq!(
        c.get("/api/v2/keys?state=1,5").await.expect(200)["metadata"]["collectionTotal"],
        5
    );
    assert_eq!(
        c.get("/api/v2/keys?state=1").await.expect(200)["metadata"]["collectionTotal"],
        4
    );

    // HEAD: 200, no body, Key-Total with the same filters.
    for (q, n) in [
        ("", 4),
        ("?state=1,5", 5),
        ("?state=5", 1),
        ("?extractable=true", 2),
        ("?extractable=false&state=1,5", 3),
    ] {
        let h = c.head(&format!("/api/v2/keys{q}")).await;
        assert_eq!(h.status, 200, "HEAD {q}");
        assert!(h.body.is_empty());
        let total = h.headers.get("key-total").and_then(|v| v.to_str().ok());
        assert_eq!(total, Some(n.to_string().as_str()), "HEAD {q}");
    }

    // Bad query parameters: 400 INVALID_QUERY_PARAM_ERR naming the parameter.
    let before = s.snapshot(c.instance_id).await;
    for (q, param) in [
        ("limit=0", "limit"),
        ("limit=5001", "limit"),
        ("limit=abc", "limit"),
        ("limit=-1", "limit"),
        ("limit=1.5", "limit"),
        ("offset=-1", "offset"),
        ("offset=x", "offset"),
        ("state=4", "state"),
        ("state=1,x", "state"),
        ("extractable=yes", "extractable"),
    ] {
        let r = c.get(&format!("/api/v2/keys?{q}")).await;
        assert_field_error(&r, 400, "INVALID_QUERY_PARAM_ERR", param);
        let h = c.head(&format!("/api/v2/keys?{q}")).await;
        assert_eq!(h.status, 400, "HEAD ?{q}");
    }
    assert_eq!(
        c.get("/api/v2/keys?limit=5000").await.expect(200)["metadata"]["collectionTotal"],
        4
    );
    // Huge offsets are an empty page, not an error.
    for q in [
        "offset=9223372036854775807",
        "limit=5000&offset=9223372036854775807",
        "offset=4611686018427387904",
    ] {
        let r = c.get(&format!("/api/v2/keys?{q}")).await.expect(200);
        assert_eq!(r["metadata"]["collectionTotal"], 0, "{q}");
    }
    // A filter is never silently dropped because another part of the query is odd.
    for q in [
        "extractable=true&x=%FF",
        "extractable=true&%FF=1",
        "extractable=true&x=%ZZ",
        "x=%FF&extractable=true",
    ] {
        let r = c.get(&format!("/api/v2/keys?{q}")).await;
        if r.status == 200 {
            assert_eq!(
                r.json()["metadata"]["collectionTotal"],
                2,
                "{q}: filter dropped"
            );
        } else {
            assert_eq!(r.status, 400, "{q}");
        }
    }
    // An empty `state=` (IBM's Python SDK sends it) means no state filter.
    assert_eq!(
        c.get("/api/v2/keys?state=").await.expect(200)["metadata"]["collectionTotal"],
        4
    );
    assert_eq!(
        c.get("/api/v2/keys?limit=1").await.expect(200)["metadata"]["collectionTotal"],
        1
    );
    assert_eq!(s.snapshot(c.instance_id).await, before);
}

#[tokio::test]
async fn delete_default_204_representation_200_then_410() {
    let s = shared();
    let c = s.tenant().await;
    let a = id_of(&c.create_root_key().await);
    let r = c.delete(&format!("/api/v2/keys/{a}")).await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty(), "204 has no body");
    let m = c
        .get(&format!("/api/v2/keys/{a}/metadata"))
        .await
        .resource(200);
    assert_eq!(m["state"], 5);
    assert_eq!(m["deleted"], true);
    assert_eq!(m["deletedBy"], c.iam_id.as_str());
    assert!(m["deletionDate"].is_string());

    let before = s.snapshot(c.instance_id).await;
    let again = c.delete(&format!("/api/v2/keys/{a}")).await;
    assert_error(&again, 410, "KEY_DELETED_ERR");
    assert_eq!(s.snapshot(c.instance_id).await, before);

    // With `prefer: return=representation`: 200 and the deleted key (never material, even of
    // a standard key).
    let b = id_of(&c.create_standard_key().await);
    let r = send(
        c.req(reqwest::Method::DELETE, &format!("/api/v2/keys/{b}"))
            .header("prefer", "return=representation"),
    )
    .await;
    let k = r.resource(200);
    assert_eq!(k["id"], b.as_str());
    assert_eq!(k["state"], 5);
    assert_eq!(k["deleted"], true);
    assert!(k.get("payload").is_none(), "{k}");
    // A deleted standard key's GET carries no material either.
    let g = c.get(&format!("/api/v2/keys/{b}")).await.resource(200);
    assert!(g.get("payload").is_none(), "{g}");
    let r = send(
        c.req(reqwest::Method::DELETE, &format!("/api/v2/keys/{b}"))
            .header("prefer", "return=representation"),
    )
    .await;
    assert_error(&r, 410, "KEY_DELETED_ERR");
    // prefer: return=minimal behaves as the default.
    let m = id_of(&c.create_root_key().await);
    let r = send(
        c.req(reqwest::Method::DELETE, &format!("/api/v2/keys/{m}"))
            .header("prefer", "return=minimal"),
    )
    .await;
    assert_eq!(r.status, 204);
}

#[tokio::test]
async fn wrap_unwrap_rewrap() {
    let s = shared();
    let c = s.tenant().await;
    let k = c.create_root_key().await;
    let id = id_of(&k);
    let version = k["keyVersion"]["id"].as_str().unwrap().to_string();

    // Without plaintext: a generated 32-byte DEK comes back with its ciphertext.
    for body in [json!({}), Value::Null] {
        let w = c.wrap(&id, &body).await.expect(200);
        let dek = unb64(w["plaintext"].as_str().unwrap());
        assert_eq!(dek.len(), 32);
        assert_eq!(w["keyVersion"]["id"], version.as_str());
        let ct = w["ciphertext"].as_str().unwrap();
        let u = c.unwrap(&id, ct, None).await.expect(200);
        assert_eq!(unb64(u["plaintext"].as_str().unwrap()), dek);
        assert_eq!(u["keyVersion"]["id"], version.as_str());
        assert!(
            u.get("ciphertext").is_none() && u.get("rewrappedKeyVersion").is_none(),
            "{u}"
        );
    }
    // An empty body too (the Go client may send none).
    let w = send(c.req(
        reqwest::Method::POST,
        &format!("/api/v2/keys/{id}/actions/wrap"),
    ))
    .await
    .expect(200);
    assert_eq!(unb64(w["plaintext"].as_str().unwrap()).len(), 32);

    // With plaintext: no plaintext in the response; the blob has the format docs/design.md gives.
    let dek = random(7500);
    let w = c
        .wrap(&id, &json!({"plaintext": B64.encode(&dek)}))
        .await
        .expect(200);
    assert!(w.get("plaintext").is_none(), "{w}");
    let blob = decode_blob(w["ciphertext"].as_str().unwrap());
    assert_eq!(blob["version"], "5.0.0");
    assert_eq!(blob["handle"], version.as_str());
    assert_eq!(unb64(blob["iv"].as_str().unwrap()).len(), 12);
    assert_eq!(
        unb64(blob["salt"].as_str().unwrap()).len(),
        32,
        "a fresh 256-bit salt per wrap (a key of its own)"
    );
    assert_eq!(
        c.unwrap_bytes(&id, w["ciphertext"].as_str().unwrap(), None)
            .await,
        dek
    );
    // The salt and the version go together: without the salt, or relabelled as the earlier
    // (direct) form, the blob is just an unprocessable ciphertext.
    let mut no_salt = blob.clone();
    no_salt.as_object_mut().unwrap().remove("salt");
    let mut relabelled = no_salt.clone();
    relabelled["version"] = json!("4.0.0");
    let mut salted_old = blob.clone();
    salted_old["version"] = json!("4.0.0");
    for b in [no_salt, relabelled, salted_old] {
        assert_error(
            &c.unwrap(&id, &encode_blob(&b), None).await,
            422,
            "UNPROCESSABLE_CIPHERTEXT_ERR",
        );
    }

    // With aad: the same list unwraps; another list, another order, or none: 422.
    let dek = random(32);
    let ct = c.wrap_bytes(&id, &dek, Some(&["a", "b"])).await;
    assert_eq!(c.unwrap_bytes(&id, &ct, Some(&["a", "b"])).await, dek);
    let mut bodies = Vec::new();
    for aad in [
        Some(&["b", "a"][..]),
        Some(&["a"][..]),
        Some(&["ab"][..]),
        Some(&[][..]),
        None,
    ] {
        let r = c.unwrap(&id, &ct, aad).await;
        assert_error(&r, 422, "UNPROCESSABLE_CIPHERTEXT_ERR");
        bodies.push(r.body);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "422 bodies differ");

    // Rewrap: a new ciphertext under the current version; it unwraps to the same DEK.
    let r = c
        .action(&id, "rewrap", &json!({"ciphertext": ct, "aad": ["a", "b"]}))
        .await
        .expect(200);
    assert_eq!(r["keyVersion"]["id"], version.as_str());
    assert_eq!(r["rewrappedKeyVersion"]["id"], version.as_str());
    let ct2 = r["ciphertext"].as_str().unwrap();
    assert_ne!(ct2, ct);
    assert_eq!(c.unwrap_bytes(&id, ct2, Some(&["a", "b"])).await, dek);
    let r = c.action(&id, "rewrap", &json!({"ciphertext": ct})).await;
    assert_error(&r, 422, "UNPROCESSABLE_CIPHERTEXT_ERR");

    // Reader can wrap and unwrap too (covered with the role matrix); wrap changes nothing.
    let before = s.snapshot(c.instance_id).await;
    c.wrap(&id, &json!({})).await.expect(200);
    c.unwrap(&id, &ct, Some(&["a", "b"])).await.expect(200);
    assert_eq!(s.snapshot(c.instance_id).await, before);
}

#[tokio::test]
async fn deprecated_action_query_form() {
    let s = shared();
    let c = s.tenant().await;
    let id = id_of(&c.create_root_key().await);
    let dek = random(32);
    let w = c
        .post(
            &format!("/api/v2/keys/{id}?action=wrap"),
            &json!({"plaintext": B64.encode(&dek), "aad": ["x"]}),
        )
        .await
        .expect(200);
    let ct = w["ciphertext"].as_str().unwrap();
    let u = c
        .post(
            &format!("/api/v2/keys/{id}?action=unwrap"),
            &json!({"ciphertext": ct, "aad": ["x"]}),
        )
        .await
        .expect(200);
    assert_eq!(unb64(u["plaintext"].as_str().unwrap()), dek);
    // It interoperates with the current form.
    assert_eq!(c.unwrap_bytes(&id, ct, Some(&["x"])).await, dek);
    let r = c
        .post(
            &format!("/api/v2/keys/{id}?action=rewrap"),
            &json!({"ciphertext": ct, "aad": ["x"]}),
        )
        .await
        .expect(200);
    assert!(r["ciphertext"].is_string());

    let before = s.snapshot(c.instance_id).await;
    for q in [
        "",
        "?action=",
        "?action=wrapp",
        "?action=WRAP",
        "?foo=wrap",
        "?action=delete",
    ] {
        let r = c.post(&format!("/api/v2/keys/{id}{q}"), &json!({})).await;
        assert_error(&r, 400, "INVALID_QUERY_PARAM_ERR");
    }
    for a in ["wrapp", "Wrap", "delete", "purge"] {
        let r = c.action(&id, a, &json!({})).await;
        assert_error(&r, 400, "INVALID_QUERY_PARAM_ERR");
    }
    assert_eq!(s.snapshot(c.instance_id).await, before);
}

/// Rotation rules with a manual clock: generated keys rotate, imported keys need a payload,
/// one rotation per hour. Also: expired bearer tokens are refused.
#[tokio::test]
async fn rotate_rules_and_unwrap_of_older_versions() {
    let s = TestServer::start(0);
    let mut c = s.tenant().await;
    let k = c.create_root_key().await;
    let id = id_of(&k);
    let v1 = k["keyVersion"]["id"].as_str().unwrap().to_string();
    let dek = random(32);
    let ct1 = c.wrap_bytes(&id, &dek, Some(&["r"])).await;

    let r = c.rotate(&id, &json!({})).await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(r.body.is_empty());
    let m = c
        .get(&format!("/api/v2/keys/{id}/metadata"))
        .await
        .resource(200);
    let v2 = m["keyVersion"]["id"].as_str().unwrap().to_string();
    assert_ne!(v1, v2);
    assert_eq!(m["lastRotateDate"], format_time(s.now()));
    assert_eq!(m["state"], 1);

    // Unwrap of a ciphertext of the older version: plaintext, the old version, and the DEK
    // rewrapped under the newest version.
    let u = c.unwrap(&id, &ct1, Some(&["r"])).await.expect(200);
    assert_eq!(unb64(u["plaintext"].as_str().unwrap()), dek);
    assert_eq!(u["keyVersion"]["id"], v1.as_str());
    assert_eq!(u["rewrappedKeyVersion"]["id"], v2.as_str());
    let ct2 = u["ciphertext"].as_str().unwrap().to_string();
    assert_eq!(decode_blob(&ct2)["handle"], v2.as_str());
    let u2 = c.unwrap(&id, &ct2, Some(&["r"])).await.expect(200);
    assert_eq!(unb64(u2["plaintext"].as_str().unwrap()), dek);
    assert_eq!(u2["keyVersion"]["id"], v2.as_str());
    assert!(u2.get("ciphertext").is_none(), "{u2}");
    // New wraps use the new version; rewrap moves old ciphertexts forward.
    let w = c.wrap(&id, &json!({})).await.expect(200);
    assert_eq!(w["keyVersion"]["id"], v2.as_str());
    let rw = c
        .action(&id, "rewrap", &json!({"ciphertext": ct1, "aad": ["r"]}))
        .await
        .expect(200);
    assert_eq!(rw["keyVersion"]["id"], v1.as_str());
    assert_eq!(rw["rewrappedKeyVersion"]["id"], v2.as_str());

    // A second rotation within the hour: 409, nothing changed.
    let before = s.snapshot(c.instance_id).await;
    s.clock.advance(3599);
    let r = c.rotate(&id, &json!({})).await;
    assert_error(&r, 409, "KEY_ROTATION_NOT_PERMITTED");
    assert_eq!(s.snapshot(c.instance_id).await, before);

    // An hour later: the old bearer token has expired (401), a fresh one rotates.
    s.clock.advance(1);
    let r = c.get("/api/v2/keys").await;
    assert_error(&r, 401, "UNAUTHORIZED_ERR");
    let r = c.rotate(&id, &json!({})).await;
    assert_error(&r, 401, "UNAUTHORIZED_ERR");
    assert_eq!(s.snapshot(c.instance_id).await, before);
    c.refresh().await;
    let r = c.rotate(&id, &Value::Null).await;
    assert_eq!(r.status, 204, "{}", r.text());
    let v3 = c
        .get(&format!("/api/v2/keys/{id}/metadata"))
        .await
        .resource(200)["keyVersion"]["id"]
        .clone();
    assert_ne!(v3, json!(v2));
    // Every version still unwraps.
    assert_eq!(c.unwrap_bytes(&id, &ct1, Some(&["r"])).await, dek);
    assert_eq!(c.unwrap_bytes(&id, &ct2, Some(&["r"])).await, dek);

    // A generated key refuses a payload on rotate.
    let g = id_of(&c.create_root_key().await);
    let before = s.snapshot(c.instance_id).await;
    let r = c
        .rotate(&g, &json!({"payload": B64.encode(random(32))}))
        .await;
    assert_field_error(&r, 400, "INVALID_FIELD_ERR", "payload");
    // A standard key cannot be rotated.
    let st = id_of(&c.create_standard_key().await);
    let before_std = s.snapshot(c.instance_id).await;
    let r = c.rotate(&st, &json!({})).await;
    assert_error(&r, 400, "KEY_ROOT_REQ_ERR");
    assert_eq!(s.snapshot(c.instance_id).await, before_std);
    let _ = before;

    // An imported key needs a new payload; with one (plain import) it rotates to that material.
    let m1 = random(32);
    let imp = id_of(&c.import_root_key(&m1).await);
    let ct_imp = c.wrap_bytes(&imp, &dek, None).await;
    let before = s.snapshot(c.instance_id).await;
    for body in [json!({}), Value::Null] {
        let r = c.rotate(&imp, &body).await;
        assert_field_error(&r, 400, "KEY_PAYLOAD_REQ_ERR", "payload");
    }
    for bad in [random(15), random(33), Vec::new()] {
        let r = c.rotate(&imp, &json!({"payload": B64.encode(bad)})).await;
        assert_field_error(&r, 400, "INVALID_FIELD_ERR", "payload");
    }
    assert_eq!(s.snapshot(c.instance_id).await, before);
    let m2 = random(16);
    let r = c.rotate(&imp, &json!({"payload": B64.encode(&m2)})).await;
    assert_eq!(r.status, 204, "{}", r.text());
    let ct_new = c.wrap_bytes(&imp, &dek, None).await;
    assert_eq!(open_blob_with(&m2, &imp, &ct_new, &[]), dek);
    let u = c.unwrap(&imp, &ct_imp, None).await.expect(200);
    assert_eq!(unb64(u["plaintext"].as_str().unwrap()), dek);
    assert_eq!(
        open_blob_with(&m2, &imp, u["ciphertext"].as_str().unwrap(), &[]),
        dek
    );

    // Rotation of a deleted key: 409 (state), and nothing changes.
    c.delete(&format!("/api/v2/keys/{g}")).await.expect(204);
    let before = s.snapshot(c.instance_id).await;
    let r = c.rotate(&g, &json!({})).await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert_error(&r, 409, "KEY_ACTION_INVALID_STATE_ERR");
    assert_eq!(s.snapshot(c.instance_id).await, before);
}

#[tokio::test]
async fn identity_token_endpoint() {
    let s = shared();
    let inst = s.create_instance().await;
    let (apikey, _iam) = s.create_api_key(inst, Role::Reader).await;
    let http = http_client();

    let r = iam_token(
        &http,
        &s.base,
        &[("grant_type", APIKEY_GRANT), ("apikey", &apikey)],
    )
    .await;
    let v = r.expect(200);
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 3600);
    assert_eq!(v["expiration"], s.now() + 3600);
    assert!(
        v["access_token"].as_str().unwrap().split('.').count() == 3,
        "a JWT"
    );
    assert!(v["refresh_token"].is_string());

    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![
                ("grant_type", APIKEY_GRANT),
                ("apikey", "kw_definitely_not_a_key"),
            ],
            "BXNIM0415E",
        ),
        (
            vec![
                ("grant_type", APIKEY_GRANT),
                ("apikey", &apikey[..apikey.len() - 1]),
            ],
            "BXNIM0415E",
        ),
        (
            vec![("grant_type", "password"), ("apikey", &apikey)],
            "BXNIM0104E",
        ),
        (vec![("apikey", &apikey)], "BXNIM0104E"),
        (vec![("grant_type", APIKEY_GRANT)], "BXNIM0109E"),
        (
            vec![("grant_type", APIKEY_GRANT), ("apikey", "")],
            "BXNIM0109E",
        ),
    ];
    for (form, code) in cases {
        let r = iam_token(&http, &s.base, &form).await;
        assert_eq!(r.status, 400, "{form:?}: {}", r.text());
        assert_eq!(r.content_type(), Some("application/json"));
        assert_eq!(r.json()["errorCode"], code, "{form:?}");
    }
    // A garbage body is a 400, not a 5xx.
    let r = send(
        http.post(format!("{}/identity/token", s.base))
            .body(vec![0xffu8, 0, 1, 2]),
    )
    .await;
    assert_eq!(r.status, 400);
    // A token of a principal works as a bearer on the API.
    let c = Client::login(&s.base, inst, &apikey, "").await;
    c.get("/api/v2/keys").await.expect(200);

    // A deleted API key can no longer be exchanged.
    let store = s.store.clone();
    let now = s.now();
    let k = s
        .run(async move {
            keyward_service::admin::create_api_key(&*store, inst, Role::Writer, "del", None, now)
                .await
                .unwrap()
        })
        .await;
    let (secret, id) = (k.apikey.clone(), k.id.clone());
    iam_token(
        &http,
        &s.base,
        &[("grant_type", APIKEY_GRANT), ("apikey", &secret)],
    )
    .await
    .expect(200);
    let store = s.store.clone();
    s.run(async move { store.delete_api_key(&id).await.unwrap() })
        .await;
    let r = iam_token(
        &http,
        &s.base,
        &[("grant_type", APIKEY_GRANT), ("apikey", &secret)],
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["errorCode"], "BXNIM0415E");
}

#[tokio::test]
async fn healthz_and_unknown_routes() {
    let s = shared();
    let http = http_client();
    let r = send(http.get(format!("{}/healthz", s.base))).await;
    assert_eq!(r.expect(200), json!({"status": "ok"}));

    let c = s.tenant().await;
    let r = c.get("/api/v2/nope").await;
    assert_error(&r, 404, "NOT_FOUND_ERR");
    let r = send(c.req(reqwest::Method::PUT, "/api/v2/keys")).await;
    assert_error(&r, 405, "METHOD_NOT_ALLOWED_ERR");
    let id = id_of(&c.create_root_key().await);
    let r = send(c.req(
        reqwest::Method::PATCH,
        &format!("/api/v2/keys/{id}/metadata"),
    ))
    .await;
    assert_error(&r, 405, "METHOD_NOT_ALLOWED_ERR");
}

/// Parallel rotations of one key: exactly one 204, every other one 409
/// KEY_ROTATION_NOT_PERMITTED, one new version. Parallel deletes: one 204, the rest 410.
/// Wraps racing the rotation all unwrap afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_rotations_and_deletes() {
    let s = shared();
    let c = std::sync::Arc::new(s.tenant().await);
    let id = id_of(&c.create_root_key().await);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..30 {
        let c = c.clone();
        let id = id.clone();
        set.spawn(async move {
            if i % 3 == 0 {
                ("rotate", c.rotate(&id, &json!({})).await, Vec::new())
            } else {
                let dek = random(32);
                let r = c.wrap(&id, &json!({"plaintext": B64.encode(&dek)})).await;
                ("wrap", r, dek)
            }
        });
    }
    let mut ok = 0;
    let mut wrapped = Vec::new();
    while let Some(r) = set.join_next().await {
        let (kind, r, dek) = r.unwrap();
        if kind == "rotate" {
            if r.status == 204 {
                ok += 1;
            } else {
                assert_error(&r, 409, "KEY_ROTATION_NOT_PERMITTED");
            }
        } else {
            let v = r.expect(200);
            wrapped.push((v["ciphertext"].as_str().unwrap().to_string(), dek));
        }
    }
    assert_eq!(ok, 1, "exactly one rotation");
    let snap = s.snapshot(c.instance_id).await;
    assert_eq!(snap.keys[0].1, 2, "two versions");
    for (ct, dek) in &wrapped {
        assert_eq!(&c.unwrap_bytes(&id, ct, None).await, dek);
    }

    let mut set = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let c = c.clone();
        let id = id.clone();
        set.spawn(async move { c.delete(&format!("/api/v2/keys/{id}")).await });
    }
    let mut deleted = 0;
    while let Some(r) = set.join_next().await {
        let r = r.unwrap();
        if r.status == 204 {
            deleted += 1;
        } else {
            assert_error(&r, 410, "KEY_DELETED_ERR");
        }
    }
    assert_eq!(deleted, 1, "exactly one delete");
}

/// Expired (Deactivated) and disabled (Suspended) keys: wrap is refused with 409, unwrap works
/// only for Deactivated (spec §6.1).
#[tokio::test]
async fn expired_and_disabled_keys_wrap_unwrap() {
    let s = TestServer::start(0);
    let c = s.tenant().await;
    let exp = format_time(s.now() + 100);
    let k = c
        .create(
            json!({"type": KEY_TYPE, "name": "exp", "extractable": false, "expirationDate": exp}),
        )
        .await
        .resource(201);
    let id = id_of(&k);
    let dek = random(32);
    let ct = c.wrap_bytes(&id, &dek, None).await;
    let d = id_of(&c.create_root_key().await);
    let ct_d = c.wrap_bytes(&d, &dek, None).await;
    s.clock.advance(100);
    let m = c
        .get(&format!("/api/v2/keys/{id}/metadata"))
        .await
        .resource(200);
    assert_eq!(m["state"], 3);
    let before = s.snapshot(c.instance_id).await;
    assert_error(
        &c.wrap(&id, &json!({})).await,
        409,
        "KEY_ACTION_INVALID_STATE_ERR",
    );
    assert_eq!(c.unwrap_bytes(&id, &ct, None).await, dek);
    c.action(&id, "rewrap", &json!({"ciphertext": ct}))
        .await
        .expect(200);
    assert_eq!(s.snapshot(c.instance_id).await, before);

    let r = c.action(&d, "disable", &json!({})).await;
    assert_eq!(r.status, 204, "{}", r.text());
    let before = s.snapshot(c.instance_id).await;
    assert_error(
        &c.wrap(&d, &json!({})).await,
        409,
        "KEY_ACTION_INVALID_STATE_ERR",
    );
    assert_error(
        &c.unwrap(&d, &ct_d, None).await,
        409,
        "KEY_ACTION_INVALID_STATE_ERR",
    );
    assert_error(
        &c.action(&d, "rewrap", &json!({"ciphertext": ct_d})).await,
        409,
        "KEY_ACTION_INVALID_STATE_ERR",
    );
    assert_error(
        &c.rotate(&d, &json!({})).await,
        409,
        "KEY_ACTION_INVALID_STATE_ERR",
    );
    assert_eq!(s.snapshot(c.instance_id).await, before);
}

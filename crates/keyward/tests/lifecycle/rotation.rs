//! Rotation and versions: unwrap across many rotations with the
//! rewrapped ciphertext each time, the versions listing, the once-an-hour rule, imported-key
//! rotation with new material, and rotation in each state.

use keyward_crypto::SecretBytes;
use serde_json::json;

use crate::common::*;

/// Opens a wrapped DEK with known key material: proves which material a version holds.
fn open_with(material: &[u8], key_id: &str, ciphertext: &str) -> Vec<u8> {
    let blob: serde_json::Value = serde_json::from_slice(&unb64(ciphertext)).unwrap();
    let handle = blob["handle"].as_str().unwrap();
    let ad = keyward_crypto::dek::dek_aad(key_id, handle, &[]);
    let (iv, ct) = (
        unb64(blob["iv"].as_str().unwrap()),
        unb64(blob["ciphertext"].as_str().unwrap()),
    );
    let material = SecretBytes::copy_from(material);
    match blob["salt"].as_str() {
        // The current form: a key derived per wrap from the material and the salt.
        Some(salt) => keyward_crypto::dek::open_derived(&material, &unb64(salt), &iv, &ad, &ct),
        None => keyward_crypto::dek::open(&material, &iv, &ad, &ct),
    }
    .unwrap()
    .expose()
    .to_vec()
}

#[tokio::test]
async fn unwrap_works_across_six_rotations_and_rewraps_old_ciphertexts() {
    let s = TestServer::start();
    let c = s.tenant().await;
    let key = c.create_root("rotating-root").await;
    let id = id_of(&key);
    let mut versions = vec![key["keyVersion"]["id"].as_str().unwrap().to_string()];
    let mut wrapped: Vec<(String, Vec<u8>, usize)> = Vec::new();
    let dek = random(32);
    let (ct, v) = c.wrap_ok(&id, &dek).await;
    assert_eq!(v, versions[0]);
    wrapped.push((ct, dek, 0));

    for round in 1..=6 {
        s.advance(HOUR);
        c.rotate(&id, &json!({})).await.expect(204);
        let rotated_at = s.now();
        let (ids, total) = c.versions(&id).await;
        assert_eq!(total, round as i64 + 1);
        assert!(!versions.contains(&ids[0]), "fresh version id");
        versions.push(ids[0].clone());
        let mut oldest_first = ids.clone();
        oldest_first.reverse();
        assert_eq!(oldest_first, versions, "versions newest first");
        let latest = versions.last().unwrap().clone();

        let meta = c.meta(&id).await;
        assert_eq!(meta["keyVersion"]["id"], latest.as_str());
        assert_eq!(meta["lastRotateDate"], time_str(rotated_at));
        assert_eq!(meta["id"], id.as_str(), "rotation keeps the key id");
        assert_eq!(meta["name"], "rotating-root");

        // Every ciphertext made so far: older ones come back rewrapped under the newest version.
        for (ct, dek, vi) in &wrapped {
            let v = c.unwrap(&id, ct).await.expect(200);
            assert_eq!(unb64(v["plaintext"].as_str().unwrap()), *dek);
            assert_eq!(v["keyVersion"]["id"], versions[*vi].as_str());
            if *vi == versions.len() - 1 {
                assert!(
                    v.get("ciphertext").is_none() && v.get("rewrappedKeyVersion").is_none(),
                    "{v}"
                );
            } else {
                assert_eq!(v["rewrappedKeyVersion"]["id"], latest.as_str(), "{v}");
                let fresh = v["ciphertext"].as_str().unwrap();
                assert_eq!(handle_of(fresh), latest);
                let again = c.unwrap(&id, fresh).await.expect(200);
                assert_eq!(unb64(again["plaintext"].as_str().unwrap()), *dek);
                assert_eq!(again["keyVersion"]["id"], latest.as_str());
                assert!(again.get("rewrappedKeyVersion").is_none(), "{again}");
            }
        }
        // Wrap always uses the newest version.
        let dek = random(16);
        let (ct, v) = c.wrap_ok(&id, &dek).await;
        assert_eq!(v, latest);
        wrapped.push((ct, dek, versions.len() - 1));
    }

    // Rewrap moves the oldest ciphertext to the newest version.
    let (ct0, dek0, _) = &wrapped[0];
    let r = c
        .action(&id, "rewrap", &json!({"ciphertext": ct0}))
        .await
        .expect(200);
    assert_eq!(r["keyVersion"]["id"], versions[0].as_str());
    assert_eq!(
        r["rewrappedKeyVersion"]["id"],
        versions.last().unwrap().as_str()
    );
    let v = c
        .unwrap(&id, r["ciphertext"].as_str().unwrap())
        .await
        .expect(200);
    assert_eq!(unb64(v["plaintext"].as_str().unwrap()), *dek0);

    // Paging of the versions listing.
    let v = c
        .get(&format!(
            "/api/v2/keys/{id}/versions?limit=2&offset=1&totalCount=true"
        ))
        .await
        .expect(200);
    assert_eq!(
        v["metadata"]["collectionType"],
        "application/vnd.ibm.kms.key.version+json"
    );
    assert_eq!(v["metadata"]["totalCount"], 7);
    let page: Vec<&str> = v["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(page, vec![versions[5].as_str(), versions[4].as_str()]);
    let dates: Vec<String> = c
        .get(&format!("/api/v2/keys/{id}/versions"))
        .await
        .resources(200)
        .iter()
        .map(|r| r["creationDate"].as_str().unwrap().to_string())
        .collect();
    let mut sorted = dates.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(dates, sorted, "newest first by creationDate");
}

#[tokio::test]
async fn imported_key_rotates_to_the_supplied_material() {
    let s = TestServer::start();
    let c = s.tenant().await;
    let m0 = random(16);
    let key = c.import_root("imported-rot", &m0).await;
    let id = id_of(&key);
    assert_eq!(key["imported"], true);
    let mut materials = vec![m0];
    let mut cts = Vec::new();
    for round in 0..5 {
        let dek = random(32);
        let (ct, _) = c.wrap_ok(&id, &dek).await;
        assert_eq!(
            open_with(materials.last().unwrap(), &id, &ct),
            dek,
            "round {round}"
        );
        cts.push((ct, dek));
        s.advance(HOUR + 1);
        let next = random([16, 24, 32][round % 3]);
        c.rotate(&id, &json!({"payload": b64(&next)}))
            .await
            .expect(204);
        materials.push(next);
        let meta = c.meta(&id).await;
        assert_eq!(
            meta["algorithmBitSize"],
            materials.last().unwrap().len() as i64 * 8
        );
    }
    for (ct, dek) in &cts {
        let v = c.unwrap(&id, ct).await.expect(200);
        assert_eq!(unb64(v["plaintext"].as_str().unwrap()), *dek);
        let fresh = v["ciphertext"].as_str().unwrap();
        assert_eq!(
            open_with(materials.last().unwrap(), &id, fresh),
            *dek,
            "rewrapped under the newest material"
        );
    }
    assert_eq!(c.versions(&id).await.1, 6);

    // Without new material: 400 KEY_PAYLOAD_REQ_ERR naming `payload`; nothing changes.
    s.advance(HOUR);
    for body in [json!({}), json!(null)] {
        assert_field_error(
            &c.rotate(&id, &body).await,
            400,
            "KEY_PAYLOAD_REQ_ERR",
            "payload",
        );
    }
    assert_field_error(
        &c.act(&id, "rotate").await,
        400,
        "KEY_PAYLOAD_REQ_ERR",
        "payload",
    );
    assert_eq!(c.versions(&id).await.1, 6);
    // Material of the wrong size.
    assert_field_error(
        &c.rotate(&id, &json!({"payload": b64(&random(20))})).await,
        400,
        "INVALID_FIELD_ERR",
        "payload",
    );
}

#[tokio::test]
async fn at_most_one_rotation_per_hour() {
    let s = TestServer::start();
    let c = s.tenant().await;
    let id = id_of(&c.create_root("hourly").await);
    // The first rotation may follow creation at once.
    c.rotate(&id, &json!({})).await.expect(204);
    let e = assert_error(
        &c.rotate(&id, &json!({})).await,
        409,
        "KEY_ROTATION_NOT_PERMITTED",
    );
    assert!(
        e["resources"][0]["errorMsg"]
            .as_str()
            .unwrap()
            .starts_with("Conflict:"),
        "{e}"
    );
    s.advance(HOUR - 1);
    assert_error(
        &c.rotate(&id, &json!({})).await,
        409,
        "KEY_ROTATION_NOT_PERMITTED",
    );
    assert_eq!(
        c.versions(&id).await.1,
        2,
        "refused rotations make no version"
    );
    s.advance(1);
    c.rotate(&id, &json!({})).await.expect(204);
    assert_eq!(c.versions(&id).await.1, 3);
    // A generated key takes no material.
    s.advance(HOUR);
    assert_field_error(
        &c.rotate(&id, &json!({"payload": b64(&random(32))})).await,
        400,
        "INVALID_FIELD_ERR",
        "payload",
    );
    // Rotate docs send extra fields: they are tolerated.
    c.rotate(&id, &json!({"type": KEY_TYPE, "name": "x"}))
        .await
        .expect(204);
}

#[tokio::test]
async fn rotation_by_state_and_versions_of_non_active_keys() {
    let s = TestServer::start();
    let c = s.tenant().await;
    // Standard keys are never rotated.
    let std = id_of(&c.create_standard("std-key").await);
    assert_error(&c.rotate(&std, &json!({})).await, 400, "KEY_ROOT_REQ_ERR");

    // Suspended: no rotation; versions need allKeyStates.
    let k = id_of(&c.create_root("suspended").await);
    c.act(&k, "disable").await.expect(204);
    assert_error(
        &c.rotate(&k, &json!({})).await,
        409,
        "KEY_ACTION_INVALID_STATE_ERR",
    );
    assert_error(
        &c.get(&format!("/api/v2/keys/{k}/versions")).await,
        409,
        "KEY_ACTION_INVALID_STATE_ERR",
    );
    assert_eq!(c.versions(&k).await.1, 1);

    // Deactivated (expired): rotation allowed, wrap refused, unwrap still works.
    let exp = s.now() + 2 * HOUR;
    let e = c
        .create(json!({"type": KEY_TYPE, "name": "expiring", "extractable": false, "expirationDate": time_str(exp)}))
        .await
        .resource(201);
    let e = id_of(&e);
    let dek = random(32);
    let (ct, _) = c.wrap_ok(&e, &dek).await;
    s.advance(2 * HOUR);
    let meta = c.meta(&e).await;
    assert_eq!(meta["state"], 3, "expired at expirationDate: {meta}");
    assert_error(&c.wrap(&e, &dek).await, 409, "KEY_ACTION_INVALID_STATE_ERR");
    c.rotate(&e, &json!({})).await.expect(204);
    let v = c.unwrap(&e, &ct).await.expect(200);
    assert_eq!(unb64(v["plaintext"].as_str().unwrap()), dek);
    assert!(v["rewrappedKeyVersion"]["id"].is_string(), "{v}");
    let meta = c.meta(&e).await;
    assert_eq!(meta["state"], 3, "rotation does not extend expiry");
    assert_eq!(meta["expirationDate"], time_str(exp));
    // Disable needs an Active key.
    assert_error(
        &c.act(&e, "disable").await,
        409,
        "KEY_ACTION_INVALID_STATE_ERR",
    );

    // Deleted: nothing but restore.
    let d = id_of(&c.create_root("deleted").await);
    c.delete_key(&d).await.expect(204);
    assert_error(
        &c.rotate(&d, &json!({})).await,
        409,
        "KEY_ACTION_INVALID_STATE_ERR",
    );
    assert_error(&c.wrap(&d, &dek).await, 409, "KEY_ACTION_INVALID_STATE_ERR");
    assert_eq!(c.versions(&d).await.1, 1);
}

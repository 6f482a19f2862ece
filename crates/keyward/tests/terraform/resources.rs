//! Create, read (refresh), update and destroy of each KMS resource, as the exact request
//! sequence of the provider file named on each test, with each answer read as the provider
//! reads it.

use serde_json::{json, Value};

use crate::provider::*;
use crate::Server;

/// The requests of one `populateKPClient` + what follows, with the instance substituted.
fn rc(instance: &str) -> String {
    format!("GET /v2/resource_instances/{instance}")
}

/// `setKeyDetails` (`resource_ibm_kms_key.go`): the fields it reads, and the `type` it takes
/// from the resource id (the key CRN, segment 4).
fn check_key_details(key: &Key, crn_id: &str, instance: &str, name: &str, ring: &str) {
    assert_eq!(key.crn, crn_id);
    assert_eq!(key.name, name);
    assert_eq!(key.key_ring_id, ring);
    assert_eq!(key.kind, KEY_TYPE);
    let segs: Vec<&str> = crn_id.split(':').collect();
    assert_eq!(segs.len(), 10, "{crn_id}");
    assert_eq!(segs[4], "kms", "type of the resource");
    assert_eq!(instance_id_from_crn(crn_id), instance);
    assert_eq!(segs[8], "key");
    assert_eq!(segs[9], key.id);
    // ResourceControllerURL: the CRN without ":key:<id>"
    assert!(key.crn.ends_with(&format!(":key:{}", key.id)));
    assert!(key.creation_date.is_some() && key.last_update_date.is_some());
}

/// `resourceIBMKmsKeyRead` → `populateSchemaData`: RC, GET key, (state 5: gone), RC-less
/// registrations list. Returns the key, or `None` when the provider would drop it from state.
async fn read_key(p: &mut Provider, id: &str) -> Option<Key> {
    let (_, instance_id, key_id) = instance_and_key_from_crn(id);
    p.populate_kp_client(&instance_id).await;
    let key = match p.get_key(&key_id).await {
        Ok(k) => k,
        Err(e) if e.status == 404 || e.status == 409 => return None,
        Err(e) => panic!("Get Key failed: {e:?}"),
    };
    if key.state == 5 {
        return None;
    }
    let regs = p.list_registrations(&key.id).await.unwrap();
    assert_eq!(regs.metadata.collection_total, regs.resources.len() as i64);
    Some(key)
}

/// `resourceIBMKmsKeyExists`: RC, GET key (404: gone).
async fn key_exists(p: &mut Provider, id: &str) -> bool {
    let (_, instance_id, key_id) = instance_and_key_from_crn(id);
    p.populate_kp_client(&instance_id).await;
    match p.get_key(&key_id).await {
        Ok(_) => true,
        Err(e) if e.status == 404 => false,
        Err(e) => panic!("{e:?}"),
    }
}

/// `resourceIBMKmsKeyDelete`: RC, then `DeleteKey(id, ReturnRepresentation, force)`.
async fn destroy_key(p: &mut Provider, id: &str, force: bool) -> Result<(), KpError> {
    let (_, instance_id, key_id) = instance_and_key_from_crn(id);
    p.populate_kp_client(&instance_id).await;
    let deleted = p.delete_key(&key_id, force).await?;
    let k = deleted.expect("return=representation gives the deleted key");
    assert_eq!(k.state, 5);
    assert_eq!(k.deleted, Some(true));
    assert!(k.deletion_date.is_some());
    Ok(())
}

/// The key-creating half of `resourceIBMKmsKeyCreate`: RC, key ring on the client, POST.
async fn create_key(p: &mut Provider, instance: &str, ring: &str, resource: Value) -> Key {
    p.populate_kp_client(instance).await;
    p.key_ring = Some(ring.to_string());
    let key = p.create_key_resource(resource, "keys").await.unwrap();
    p.key_ring = None;
    key
}

/// The body `CreateKeyWithOptions` marshals: name, type, extractable always; the options'
/// fields only when set (omitempty).
fn go_key(name: &str, extractable: bool, extra: Value) -> Value {
    let mut k = json!({"name": name, "type": KEY_TYPE, "extractable": extractable});
    for (f, v) in extra.as_object().unwrap() {
        k[f] = v.clone();
    }
    k
}

/// `ibm_kms_key` (ibm/service/kms/resource_ibm_kms_key.go): a generated root key in a key ring,
/// refreshed, updated (`force_delete`), destroyed, then refreshed once more (gone).
#[tokio::test]
async fn ibm_kms_key_root() {
    let s = Server::start().await;
    let inst = s.tenant.instance.clone();
    let mut p = Provider::configure(s.base(), &s.tenant.apikey).await;
    let user = p.user.as_ref().unwrap();
    assert!(!user.user_id.is_empty());
    assert!(!user.account.is_empty());
    p.take_log();

    // a key ring for the key (ibm_kms_key_rings, created first by Terraform's graph)
    p.populate_kp_client(&inst).await;
    p.create_key_ring("tf-ring").await.unwrap();
    p.take_log();

    // create: ExtractAndValidateKeyDataFromSchema → CreateKeyWithOptions → SetId(crn) → Update
    // → Read
    let exp = "2031-01-02T03:04:05Z";
    let key = create_key(
        &mut p,
        &inst,
        "tf-ring",
        go_key(
            "tf-root",
            false,
            json!({"description": "made by terraform", "expirationDate": exp}),
        ),
    )
    .await;
    let id = key.crn.clone();
    assert!(key.payload.is_empty(), "no root key material");
    let read = read_key(&mut p, &id).await.expect("exists");
    check_key_details(&read, &id, &inst, "tf-root", "tf-ring");
    assert_eq!(read.description, "made by terraform");
    assert!(!read.extractable);
    assert_eq!(read.state, 1);
    assert_eq!(
        read.expiration.as_ref().unwrap().0,
        time::OffsetDateTime::parse(exp, &time::format_description::well_known::Rfc3339).unwrap()
    );
    let key_id = read.id.clone();
    assert_eq!(
        p.take_log(),
        vec![
            rc(&inst),
            "POST /api/v2/keys".into(),
            rc(&inst),
            format!("GET /api/v2/keys/{key_id}"),
            format!("GET /api/v2/keys/{key_id}/registrations"),
        ]
    );

    // refresh (plan): Exists, then Read
    assert!(key_exists(&mut p, &id).await);
    assert!(read_key(&mut p, &id).await.is_some());
    // update (force_delete changed): Read only
    assert!(read_key(&mut p, &id).await.is_some());
    p.take_log();

    // destroy with force_delete = true
    destroy_key(&mut p, &id, true).await.unwrap();
    assert_eq!(
        p.take_log(),
        vec![
            rc(&inst),
            format!("DELETE /api/v2/keys/{key_id}?force=true"),
        ]
    );
    // a refresh after the destroy drops it from the state (state 5 or 404)
    assert!(read_key(&mut p, &id).await.is_none());

    // the key ring goes last (resource_ibm_kms_key_rings.go delete)
    p.populate_kp_client(&inst).await;
    p.delete_key_ring("tf-ring").await.unwrap();
}

/// `ibm_kms_key` with `standard_key = true` and a plain `payload` (an imported standard key),
/// and a root key imported with `payload` alone.
#[tokio::test]
async fn ibm_kms_key_imported_plain() {
    use base64::Engine;
    let s = Server::start().await;
    let inst = s.tenant.instance.clone();
    let mut p = Provider::configure(s.base(), &s.tenant.apikey).await;
    let material = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);

    // WithPayload(payload, &"", &"", false): nonce and iv empty → not sent
    let std_key = create_key(
        &mut p,
        &inst,
        "default",
        go_key("tf-std", true, json!({"payload": material})),
    )
    .await;
    let id = std_key.crn.clone();
    let read = read_key(&mut p, &id).await.unwrap();
    check_key_details(&read, &id, &inst, "tf-std", "default");
    assert!(read.extractable);
    assert!(read.imported);
    assert_eq!(
        read.payload, material,
        "GET returns a standard key's payload"
    );

    let root = create_key(
        &mut p,
        &inst,
        "default",
        go_key("tf-imported-root", false, json!({"payload": material})),
    )
    .await;
    let root_read = read_key(&mut p, &root.crn).await.unwrap();
    assert!(root_read.imported && !root_read.extractable);
    assert!(root_read.payload.is_empty());

    // force_delete = false (the default)
    destroy_key(&mut p, &id, false).await.unwrap();
    destroy_key(&mut p, &root.crn, false).await.unwrap();
    assert!(read_key(&mut p, &id).await.is_none());
}

/// `ibm_kms_key` with `payload`, `encrypted_nonce` and `iv_value` (a root key imported with an
/// import token fetched outside Terraform, e.g. by `keyward kp import-token`): WithPayload
/// then adds `encryptionAlgorithm: RSAES_OAEP_SHA_256`.
#[tokio::test]
async fn ibm_kms_key_imported_with_token() {
    let s = Server::start().await;
    let inst = s.tenant.instance.clone();
    let api = s.tenant.login(s.base()).await;
    let token = api.import_token(600, 1).await;
    let fixture =
        keyward_testsupport::fixtures::secure_import_resource(&token, &[9u8; 32], "tf-secure");

    let mut p = Provider::configure(s.base(), &s.tenant.apikey).await;
    let key = create_key(
        &mut p,
        &inst,
        "default",
        go_key(
            "tf-secure",
            false,
            json!({
                "payload": fixture["payload"],
                "encryptedNonce": fixture["encryptedNonce"],
                "iv": fixture["iv"],
                "encryptionAlgorithm": "RSAES_OAEP_SHA_256",
            }),
        ),
    )
    .await;
    let read = read_key(&mut p, &key.crn).await.unwrap();
    check_key_details(&read, &key.crn, &inst, "tf-secure", "default");
    assert!(read.imported);
    assert!(read.payload.is_empty());
    // the key works
    let wrapped = api.wrap_ok(&read.id, b"terraform").await;
    assert_eq!(api.unwrap_ok(&read.id, &wrapped).await, b"terraform");
    destroy_key(&mut p, &key.crn, false).await.unwrap();
}

/// `ibm_kms_key_rings` (ibm/service/kms/resource_ibm_kms_key_rings.go).
#[tokio::test]
async fn ibm_kms_key_rings() {
    let s = Server::start().await;
    let inst = s.tenant.instance.clone();
    let mut p = Provider::configure(s.base(), &s.tenant.apikey).await;
    p.take_log();

    // create: RC, CreateKeyRing, GetKeyRings (find it), SetId(ring:keyRing:instanceCRN), Read
    let rc_inst = p.populate_kp_client(&inst).await;
    p.create_key_ring("tf-ring-1").await.unwrap();
    let rings = p.get_key_rings().await.unwrap();
    let found = rings
        .resources
        .iter()
        .find(|r| r.id == "tf-ring-1")
        .expect("the new ring is listed");
    assert!(found.creation_date.is_some());
    let id = format!("{}:keyRing:{}", found.id, rc_inst.crn);
    // Read: split on ":keyRing:", instance from the CRN part
    let parts: Vec<&str> = id.split(":keyRing:").collect();
    assert_eq!(parts.len(), 2);
    assert_eq!(instance_id_from_crn(parts[1]), inst);
    p.populate_kp_client(&instance_id_from_crn(parts[1])).await;
    p.get_key_rings().await.unwrap();
    assert_eq!(
        p.take_log(),
        vec![
            rc(&inst),
            "POST /api/v2/key_rings/tf-ring-1".into(),
            "GET /api/v2/key_rings".into(),
            rc(&inst),
            "GET /api/v2/key_rings".into(),
        ]
    );

    // a ring that exists already: CreateKeyRing fails (the provider reports the error)
    p.populate_kp_client(&inst).await;
    let dup = p.create_key_ring("tf-ring-1").await.unwrap_err();
    assert_eq!(dup.status, 409, "{dup:?}");

    // destroy: RC, DeleteKeyRing(force=true); 404 on a second destroy is ignored by the provider
    p.take_log();
    p.populate_kp_client(&inst).await;
    p.delete_key_ring("tf-ring-1").await.unwrap();
    assert_eq!(
        p.take_log(),
        vec![
            rc(&inst),
            "DELETE /api/v2/key_rings/tf-ring-1?force=true".into()
        ]
    );
    let again = p.delete_key_ring("tf-ring-1").await.unwrap_err();
    assert_eq!(again.status, 404, "{again:?}");
}

/// `ibm_kms_key_policies` (ibm/service/kms/resource_ibm_kms_key_policies.go): on an existing
/// key (by id, then by alias), SetPolicies; Read flattens each policy; updates go through
/// EnableRotationPolicy / SetRotationPolicy / SetDualAuthDeletePolicy; destroy sends nothing.
#[tokio::test]
async fn ibm_kms_key_policies() {
    let s = Server::start().await;
    let inst = s.tenant.instance.clone();
    let api = s.tenant.login(s.base()).await;
    let key_id = api.root_key("tf-policies").await;
    let alias_r = api
        .call(
            reqwest::Method::POST,
            &format!("/api/v2/keys/{key_id}/aliases/tf-alias"),
            None,
        )
        .await;
    alias_r.expect(201);

    let mut p = Provider::configure(s.base(), &s.tenant.apikey).await;
    p.take_log();

    // create (by alias): RC, GetKey(alias), SetPolicies(rotation 3 enabled, dual auth false),
    // SetId(key.CRN), Read
    p.populate_kp_client(&inst).await;
    let key = p.get_key("tf-alias").await.unwrap();
    assert_eq!(key.id, key_id);
    let set = p
        .set_policies(&key.id, Some((3, Some(true))), Some(false))
        .await
        .unwrap();
    assert_eq!(set.len(), 2, "{set:?}");
    let id = key.crn.clone();
    let read = async |p: &mut Provider| {
        let (_, instance_id, keyid) = instance_and_key_from_crn(&id);
        p.populate_kp_client(&instance_id).await;
        let key = p.get_key(&keyid).await.unwrap();
        assert_ne!(key.state, 5);
        let policies = p.get_policies(&keyid).await.unwrap();
        flatten_key_policies(&policies)
    };
    assert_eq!(read(&mut p).await, (Some((3, true)), Some(false)));
    assert_eq!(
        p.take_log(),
        vec![
            rc(&inst),
            "GET /api/v2/keys/tf-alias".into(),
            format!("PUT /api/v2/keys/{key_id}/policies"),
            rc(&inst),
            format!("GET /api/v2/keys/{key_id}"),
            format!("GET /api/v2/keys/{key_id}/policies"),
        ]
    );

    // update: rotation { enabled = false } (interval_month 0 → DisableRotationPolicy)
    p.populate_kp_client(&inst).await;
    let r = p
        .set_key_rotation_policy(&key_id, Some(false), 0)
        .await
        .unwrap()
        .expect("the policy");
    assert_eq!(r.rotation.as_ref().unwrap().enabled, Some(false));
    assert_eq!(read(&mut p).await, (Some((3, false)), Some(false)));
    // update: rotation { enabled = true } → EnableRotationPolicy keeps the interval
    p.populate_kp_client(&inst).await;
    p.set_key_rotation_policy(&key_id, Some(true), 0)
        .await
        .unwrap();
    assert_eq!(read(&mut p).await, (Some((3, true)), Some(false)));
    // update: rotation { enabled = true, interval_month = 6 }, dual_auth_delete { enabled = true }
    p.take_log();
    p.populate_kp_client(&inst).await;
    p.set_key_rotation_policy(&key_id, Some(true), 6)
        .await
        .unwrap();
    let d = p
        .set_dual_auth_delete_policy(&key_id, true)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.dual_auth.unwrap().enabled, Some(true));
    assert_eq!(read(&mut p).await, (Some((6, true)), Some(true)));
    assert_eq!(
        p.take_log()[..3].to_vec(),
        vec![
            rc(&inst),
            format!("PUT /api/v2/keys/{key_id}/policies?policy=rotation"),
            format!("PUT /api/v2/keys/{key_id}/policies?policy=dualAuthDelete"),
        ]
    );
    // an interval out of range is refused (the client sends -1 for 0 to get this error)
    let bad = p.set_policies(&key_id, Some((0, Some(true))), None).await;
    assert_eq!(bad.unwrap_err().status, 400);
    // destroy: no request (the provider only clears its state)
}

/// `ibm_kms_instance_policies` (ibm/service/kms/resource_ibm_kms_instance_policies.go).
#[tokio::test]
async fn ibm_kms_instance_policies() {
    let s = Server::start().await;
    let inst = s.tenant.instance.clone();
    let mut p = Provider::configure(s.base(), &s.tenant.apikey).await;
    p.take_log();

    // create: RC, SetInstancePolicies (policyCreateOrUpdate order: dualAuthDelete, metrics,
    // keyCreateImportAccess, rotation), SetId(instanceCRN), Read
    let rc_inst = p.populate_kp_client(&inst).await;
    p.set_instance_policies(vec![
        json!({"policy_type": "dualAuthDelete", "policy_data": {"enabled": false}}),
        json!({"policy_type": "metrics", "policy_data": {"enabled": true}}),
        json!({"policy_type": "keyCreateImportAccess", "policy_data": {"enabled": true,
            "attributes": {"create_root_key": true, "create_standard_key": true,
                           "import_root_key": true, "import_standard_key": true,
                           "enforce_token": false}}}),
        json!({"policy_type": "rotation", "policy_data": {"enabled": true,
            "attributes": {"interval_month": 3}}}),
    ])
    .await
    .unwrap();
    let id = rc_inst.crn.clone();
    let read = async |p: &mut Provider| {
        let (_, instance_id, _) = instance_and_key_from_crn(&id);
        assert_eq!(instance_id, inst);
        p.populate_kp_client(&instance_id).await;
        let policies = p.get_instance_policies().await.unwrap();
        flatten_instance_policies(&policies)
    };
    let got = read(&mut p).await;
    let find = |got: &[(String, Value)], t: &str| {
        got.iter()
            .find(|(k, _)| k == t)
            .unwrap_or_else(|| panic!("{t} in {got:?}"))
            .1
            .clone()
    };
    assert_eq!(find(&got, "dualAuthDelete")["enabled"], false);
    assert_eq!(find(&got, "metrics")["enabled"], true);
    assert_eq!(find(&got, "rotation")["interval_month"], 3);
    assert_eq!(find(&got, "keyCreateImportAccess")["enforce_token"], false);
    assert_eq!(
        p.take_log(),
        vec![
            rc(&inst),
            "PUT /api/v2/instance/policies".into(),
            rc(&inst),
            "GET /api/v2/instance/policies".into(),
        ]
    );

    // update: rotation disabled (no interval), keyCreateImportAccess disabled (no attributes)
    p.populate_kp_client(&inst).await;
    p.set_instance_policies(vec![
        json!({"policy_type": "keyCreateImportAccess", "policy_data": {"enabled": false}}),
        json!({"policy_type": "rotation", "policy_data": {"enabled": false}}),
    ])
    .await
    .unwrap();
    let got = read(&mut p).await;
    assert_eq!(find(&got, "rotation")["enabled"], false);
    assert_eq!(find(&got, "keyCreateImportAccess")["enabled"], false);
    // destroy: no request
}

/// `ibm_kms_key_with_policy_overrides`
/// (ibm/service/kms/resource_ibm_kms_key_with_policy_overrides.go).
#[tokio::test]
async fn ibm_kms_key_with_policy_overrides() {
    let s = Server::start().await;
    let inst = s.tenant.instance.clone();
    let mut p = Provider::configure(s.base(), &s.tenant.apikey).await;
    p.take_log();

    // create: RC, key ring on the client, CreateImportedKeyWithPolicyOverrides (no payload:
    // a generated key), SetId(crn), Update → Read (populateSchemaData + GetPolicies)
    p.populate_kp_client(&inst).await;
    p.key_ring = Some("default".into());
    let key = p
        .create_key_resource(
            go_key(
                "tf-overrides",
                false,
                json!({"rotation": {"enabled": true, "interval_month": 2},
                       "dualAuthDelete": {"enabled": false}}),
            ),
            "keys_with_policy_overrides",
        )
        .await
        .unwrap();
    p.key_ring = None;
    let id = key.crn.clone();
    let read = async |p: &mut Provider| {
        let k = read_key(p, &id).await.expect("exists");
        let policies = p.get_policies(&k.id).await.unwrap();
        // FlattenKeyPoliciesKey dereferences rotation.enabled and dualAuthDelete.enabled
        let mut rotation = None;
        let mut dual = None;
        for pol in &policies {
            if let Some(r) = &pol.rotation {
                rotation = Some((r.interval_month, r.enabled.expect("rotation.enabled")));
            } else if let Some(d) = &pol.dual_auth {
                dual = Some(d.enabled.expect("dualAuthDelete.enabled"));
            }
        }
        (k, rotation, dual)
    };
    let (k, rotation, dual) = read(&mut p).await;
    check_key_details(&k, &id, &inst, "tf-overrides", "default");
    assert_eq!((rotation, dual), (Some((2, true)), Some(false)));
    let key_id = k.id.clone();
    assert_eq!(
        p.take_log(),
        vec![
            rc(&inst),
            "POST /api/v2/keys_with_policy_overrides".into(),
            rc(&inst),
            format!("GET /api/v2/keys/{key_id}"),
            format!("GET /api/v2/keys/{key_id}/registrations"),
            format!("GET /api/v2/keys/{key_id}/policies"),
        ]
    );

    // update (both policies present): RC, SetPolicies, Read
    p.populate_kp_client(&inst).await;
    p.set_policies(&key_id, Some((4, Some(true))), Some(false))
        .await
        .unwrap();
    let (_, rotation, dual) = read(&mut p).await;
    assert_eq!((rotation, dual), (Some((4, true)), Some(false)));

    // an override interval of 0 is sent as -1 and refused
    p.populate_kp_client(&inst).await;
    let bad = p
        .create_key_resource(
            go_key("tf-bad", false, json!({"rotation": {"interval_month": -1}})),
            "keys_with_policy_overrides",
        )
        .await
        .unwrap_err();
    assert_eq!(bad.status, 400, "{bad:?}");

    // destroy: resourceIBMKmsKeyDelete
    destroy_key(&mut p, &id, false).await.unwrap();
    assert!(read_key(&mut p, &id).await.is_none());
}

/// The data source `ibm_kms_keys` (ibm/service/kms/data_source_ibm_kms_keys.go): all keys
/// (limit 0 → one GetKeys(2000, 0)), paged with `limit`, by `key_name`, by `alias` and by
/// `key_id` (GetKey + GetPolicies, FlattenKeyPolicies).
#[tokio::test]
async fn ibm_kms_keys_data_source() {
    let s = Server::start().await;
    let inst = s.tenant.instance.clone();
    let api = s.tenant.login(s.base()).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(api.root_key(&format!("ds-{i}")).await);
    }
    api.put_rotation_policy(&ids[0], 2).await.expect(200);
    api.call(
        reqwest::Method::POST,
        &format!("/api/v2/keys/{}/aliases/ds-alias", ids[1]),
        None,
    )
    .await
    .expect(201);

    let mut p = Provider::configure(s.base(), &s.tenant.apikey).await;
    p.take_log();

    // no limit: GetKeys(0, 0) → limit=2000&offset=0
    p.populate_kp_client(&inst).await;
    let all = p.get_keys(0, 0).await.unwrap();
    assert_eq!(all.resources.len(), 5);
    assert_eq!(all.metadata.collection_total, 5);
    for k in &all.resources {
        assert!(!k.crn.is_empty() && !k.id.is_empty() && !k.name.is_empty());
        assert_eq!(k.key_ring_id, "default");
    }
    assert_eq!(
        p.take_log(),
        vec![rc(&inst), "GET /api/v2/keys?limit=2000&offset=0".into()]
    );

    // limit = 3: GetKeys(3, 0) ((limit - offset) < pageSize 200)
    let some = p.get_keys(3, 0).await.unwrap();
    assert_eq!(some.resources.len(), 3);
    // key_name: filtered client-side over the list
    let named: Vec<&Key> = all.resources.iter().filter(|k| k.name == "ds-2").collect();
    assert_eq!(named.len(), 1);

    // alias: GetKey(alias) then GetPolicies(key.ID)
    let by_alias = p.get_key("ds-alias").await.unwrap();
    assert_eq!(by_alias.id, ids[1]);
    assert_eq!(
        by_alias.aliases.as_deref(),
        Some(&["ds-alias".to_string()][..])
    );
    let pol = p.get_policies(&by_alias.id).await.unwrap();
    flatten_key_policies(&pol);

    // key_id: GetKey(id) then GetPolicies(id) (a rotation policy is flattened)
    let by_id = p.get_key(&ids[0]).await.unwrap();
    let pol = p.get_policies(&by_id.id).await.unwrap();
    assert_eq!(flatten_key_policies(&pol).0, Some((2, true)));
}

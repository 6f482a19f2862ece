//! The KMIP adapter management API (`/api/v2/kmip_adapters/...`, docs/kmip.md): Key Protect's
//! bodies, the role table (Manager only, reads included), tenant isolation, and
//! bad input answered 4xx with nothing changed. The KMIP protocol itself is tested with
//! PyKMIP (tests/python/test_kmip.py) and the codec in crates/kmip.

use keyward_domain::Role;
use serde_json::{json, Value};

use crate::common::*;

const ADAPTER_TYPE: &str = "application/vnd.ibm.kms.kmip_adapter+json";
const CERT_TYPE: &str = "application/vnd.ibm.kms.kmip_client_certificate+json";
const OBJECT_TYPE: &str = "application/vnd.ibm.kms.kmip_object+json";

fn adapter_body(name: Option<&str>, crk: &str) -> Value {
    let mut r =
        json!({"profile": "native_1.0", "profile_data": {"crk_id": crk}, "description": "d"});
    if let Some(n) = name {
        r["name"] = json!(n);
    }
    json!({"metadata": {"collectionType": ADAPTER_TYPE, "collectionTotal": 1}, "resources": [r]})
}

fn cert_pem() -> String {
    rcgen::generate_simple_self_signed(vec!["esxi.example".to_string()])
        .unwrap()
        .cert
        .pem()
}

fn cert_body(name: &str, pem: &str) -> Value {
    json!({"metadata": {"collectionType": CERT_TYPE, "collectionTotal": 1},
           "resources": [{"name": name, "certificate": pem}]})
}

/// `resources[0]` of a one-resource KMIP collection answered with `status`.
fn first(r: &Resp, status: u16) -> Value {
    let v = r.expect(status);
    assert_eq!(v["metadata"]["collectionTotal"], 1, "{v}");
    v["resources"][0].clone()
}

async fn total(c: &Client, path: &str) -> u64 {
    let v = c.get(&format!("{path}?totalCount=true")).await.expect(200);
    v["metadata"]["totalCount"].as_u64().unwrap()
}

#[tokio::test]
async fn adapters_certificates_and_objects_with_key_protect_bodies() {
    let s = shared();
    let a = s.tenant().await;
    let crk = id_of(&a.create_root_key().await);
    let v = a
        .post("/api/v2/kmip_adapters", &adapter_body(Some("vsan"), &crk))
        .await
        .expect(201);
    assert_eq!(v["metadata"]["collectionType"], ADAPTER_TYPE);
    let ad = &v["resources"][0];
    assert_eq!(ad["name"], "vsan");
    assert_eq!(ad["profile"], "native_1.0");
    assert_eq!(ad["profile_data"]["crk_id"], crk.as_str());
    assert_eq!(ad["created_by"], a.iam_id.as_str());
    let id = id_of(ad);
    // by id and by name
    for p in [&id, "vsan"] {
        let g = a
            .get(&format!("/api/v2/kmip_adapters/{p}"))
            .await
            .expect(200);
        assert_eq!(g["resources"][0]["id"], id.as_str());
    }
    // a name is generated when none is given
    let v = a
        .post("/api/v2/kmip_adapters", &adapter_body(None, &crk))
        .await
        .expect(201);
    assert!(v["resources"][0]["name"]
        .as_str()
        .unwrap()
        .starts_with("kmip_adapter_"));
    // the root key by its alias
    a.post(&format!("/api/v2/keys/{crk}/aliases/kmip-crk"), &json!({}))
        .await
        .expect(201);
    let v = a
        .post(
            "/api/v2/kmip_adapters",
            &adapter_body(Some("by-alias"), "kmip-crk"),
        )
        .await
        .expect(201);
    assert_eq!(v["resources"][0]["profile_data"]["crk_id"], crk.as_str());
    a.delete("/api/v2/kmip_adapters/by-alias").await.expect(204);
    assert_eq!(total(&a, "/api/v2/kmip_adapters").await, 2);
    let page = a
        .get("/api/v2/kmip_adapters?limit=1&offset=1")
        .await
        .expect(200);
    assert_eq!(page["resources"].as_array().unwrap().len(), 1);

    let pem = cert_pem();
    let c = a
        .post(
            &format!("/api/v2/kmip_adapters/{id}/certificates"),
            &cert_body("esxi-1", &pem),
        )
        .await
        .expect(201);
    assert_eq!(c["metadata"]["collectionType"], CERT_TYPE);
    let cert_id = id_of(&c["resources"][0]);
    let g = a
        .get(&format!(
            "/api/v2/kmip_adapters/{id}/certificates/{cert_id}"
        ))
        .await
        .expect(200);
    assert_eq!(
        g["resources"][0]["certificate"].as_str().unwrap(),
        pem.trim()
    );
    let l = a
        .get(&format!("/api/v2/kmip_adapters/{id}/certificates"))
        .await
        .expect(200);
    assert_eq!(l["resources"][0]["name"], "esxi-1");
    assert!(l["resources"][0].get("certificate").is_none());
    let o = a
        .get(&format!(
            "/api/v2/kmip_adapters/{id}/kmip_objects?totalCount=true"
        ))
        .await
        .expect(200);
    assert_eq!(o["metadata"]["collectionType"], OBJECT_TYPE);
    assert_eq!(o["metadata"]["totalCount"], 0);
    assert_error(
        &a.get(&format!("/api/v2/kmip_adapters/{id}/kmip_objects/nope"))
            .await,
        404,
        "NOT_FOUND_ERR",
    );

    // delete the certificate, then the adapter (no objects): both gone
    a.delete(&format!(
        "/api/v2/kmip_adapters/{id}/certificates/{cert_id}"
    ))
    .await
    .expect(204);
    assert_error(
        &a.get(&format!(
            "/api/v2/kmip_adapters/{id}/certificates/{cert_id}"
        ))
        .await,
        404,
        "NOT_FOUND_ERR",
    );
    a.delete(&format!("/api/v2/kmip_adapters/{id}"))
        .await
        .expect(204);
    assert_error(
        &a.get(&format!("/api/v2/kmip_adapters/{id}")).await,
        404,
        "NOT_FOUND_ERR",
    );
    assert_error(
        &a.delete(&format!("/api/v2/kmip_adapters/{id}")).await,
        404,
        "NOT_FOUND_ERR",
    );
    assert_eq!(total(&a, "/api/v2/kmip_adapters").await, 1);
}

#[tokio::test]
async fn only_managers_reach_kmip_adapters() {
    let s = shared();
    let m = s.tenant().await;
    let crk = id_of(&m.create_root_key().await);
    let ad = first(
        &m.post("/api/v2/kmip_adapters", &adapter_body(Some("roles"), &crk))
            .await,
        201,
    );
    let id = id_of(&ad);
    for role in [Role::Reader, Role::ReaderPlus, Role::Writer, Role::KeyPurge] {
        let c = s.client(m.instance_id, role).await;
        for path in [
            "/api/v2/kmip_adapters".to_string(),
            format!("/api/v2/kmip_adapters/{id}"),
            format!("/api/v2/kmip_adapters/{id}/certificates"),
            format!("/api/v2/kmip_adapters/{id}/kmip_objects"),
        ] {
            assert_error(&c.get(&path).await, 403, "UNAUTHORIZED_ERR");
        }
        assert_error(
            &c.post("/api/v2/kmip_adapters", &adapter_body(Some("nope"), &crk))
                .await,
            403,
            "UNAUTHORIZED_ERR",
        );
        assert_error(
            &c.post(
                &format!("/api/v2/kmip_adapters/{id}/certificates"),
                &cert_body("cc", &cert_pem()),
            )
            .await,
            403,
            "UNAUTHORIZED_ERR",
        );
        assert_error(
            &c.delete(&format!("/api/v2/kmip_adapters/{id}")).await,
            403,
            "UNAUTHORIZED_ERR",
        );
    }
    assert_eq!(total(&m, "/api/v2/kmip_adapters").await, 1);
    assert_eq!(
        total(&m, &format!("/api/v2/kmip_adapters/{id}/certificates")).await,
        0
    );
}

#[tokio::test]
async fn another_tenants_adapter_is_not_found() {
    let s = shared();
    let a = s.tenant().await;
    let b = s.tenant().await;
    let crk = id_of(&a.create_root_key().await);
    let id = id_of(&first(
        &a.post("/api/v2/kmip_adapters", &adapter_body(Some("mine"), &crk))
            .await,
        201,
    ));
    for path in [
        format!("/api/v2/kmip_adapters/{id}"),
        "/api/v2/kmip_adapters/mine".to_string(),
        format!("/api/v2/kmip_adapters/{id}/certificates"),
        format!("/api/v2/kmip_adapters/{id}/kmip_objects"),
    ] {
        assert_error(&b.get(&path).await, 404, "NOT_FOUND_ERR");
    }
    assert_error(
        &b.delete(&format!("/api/v2/kmip_adapters/{id}")).await,
        404,
        "NOT_FOUND_ERR",
    );
    assert_error(
        &b.post(
            &format!("/api/v2/kmip_adapters/{id}/certificates"),
            &cert_body("xx", &cert_pem()),
        )
        .await,
        404,
        "NOT_FOUND_ERR",
    );
    // B cannot bind an adapter to A's root key
    assert_error(
        &b.post("/api/v2/kmip_adapters", &adapter_body(Some("theirs"), &crk))
            .await,
        404,
        "KEY_NOT_FOUND_ERR",
    );
    assert_eq!(total(&b, "/api/v2/kmip_adapters").await, 0);
    assert_eq!(total(&a, "/api/v2/kmip_adapters").await, 1);
}

#[tokio::test]
async fn bad_input_is_4xx_and_changes_nothing() {
    let s = shared();
    let a = s.tenant().await;
    let crk = id_of(&a.create_root_key().await);
    let std = id_of(&a.create_standard_key().await);
    let good = adapter_body(Some("good"), &crk);
    let id = id_of(&first(&a.post("/api/v2/kmip_adapters", &good).await, 201));
    let mut wrong_profile = adapter_body(Some("pp"), &crk);
    wrong_profile["resources"][0]["profile"] = json!("native_2.0");
    let mut no_profile_data = adapter_body(Some("pp"), &crk);
    no_profile_data["resources"][0]
        .as_object_mut()
        .unwrap()
        .remove("profile_data");
    let mut wrong_type = adapter_body(Some("pp"), &crk);
    wrong_type["metadata"]["collectionType"] = json!("application/json");
    let mut two = adapter_body(Some("pp"), &crk);
    two["metadata"]["collectionTotal"] = json!(2);
    let mut long_desc = adapter_body(Some("pp"), &crk);
    long_desc["resources"][0]["description"] = json!("x".repeat(241));
    let cases: Vec<(Value, u16, &str)> = vec![
        (wrong_profile, 400, "INVALID_FIELD_ERR"),
        (no_profile_data, 400, "INVALID_FIELD_ERR"),
        (wrong_type, 400, "INVALID_FIELD_ERR"),
        (two, 400, "COLLECTION_TOTAL_MISMATCH_ERR"),
        (long_desc, 400, "INVALID_FIELD_ERR"),
        (adapter_body(Some("a b"), &crk), 400, "INVALID_FIELD_ERR"),
        (
            adapter_body(Some("pp"), "bad alias!"),
            400,
            "INVALID_FIELD_ERR",
        ),
        (adapter_body(Some("pp"), ""), 400, "INVALID_FIELD_ERR"),
        (
            adapter_body(Some("pp"), "no-such-alias"),
            404,
            "KEY_NOT_FOUND_ERR",
        ),
        (
            adapter_body(Some(&random_uuid()), &crk),
            400,
            "INVALID_FIELD_ERR",
        ),
        (
            adapter_body(Some("pp"), &random_uuid()),
            404,
            "KEY_NOT_FOUND_ERR",
        ),
        (adapter_body(Some("pp"), &std), 400, "KEY_ROOT_REQ_ERR"),
        (good.clone(), 409, "CONFLICT_ERR"),
        (json!([]), 400, "BAD_BODY_ERR"),
        (json!({"metadata": 1}), 400, "BAD_BODY_ERR"),
        (
            json!({"metadata": {"collectionType": ADAPTER_TYPE, "collectionTotal": 1}, "resources": [1]}),
            400,
            "BAD_BODY_ERR",
        ),
        (
            json!({"metadata": {"collectionType": ADAPTER_TYPE, "collectionTotal": 1}, "resources": [{"profile": 5}]}),
            400,
            "INVALID_FIELD_ERR",
        ),
    ];
    for (body, status, code) in cases {
        let r = a.post("/api/v2/kmip_adapters", &body).await;
        assert_error(&r, status, code);
    }
    let r = a
        .post_raw(
            "/api/v2/kmip_adapters",
            b"{not json".to_vec(),
            Some("application/json"),
        )
        .await;
    assert_error(&r, 400, "BAD_BODY_ERR");
    assert_eq!(total(&a, "/api/v2/kmip_adapters").await, 1);

    // certificates
    let certs = format!("/api/v2/kmip_adapters/{id}/certificates");
    let pem = cert_pem();
    a.post(&certs, &cert_body("one", &pem)).await.expect(201);
    let two_certs = format!("{pem}\n{pem}");
    for (body, status, code) in [
        (cert_body("dup", &pem), 409, "CONFLICT_ERR"),
        (cert_body("one", &cert_pem()), 409, "CONFLICT_ERR"),
        (cert_body("bad", "hello"), 400, "INVALID_FIELD_ERR"),
        (
            cert_body(
                "bad",
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            ),
            400,
            "INVALID_FIELD_ERR",
        ),
        (cert_body("bad", &two_certs), 400, "INVALID_FIELD_ERR"),
        (
            cert_body("bad", &"A".repeat(20_000)),
            400,
            "INVALID_FIELD_ERR",
        ),
        (cert_body("a b", &cert_pem()), 400, "INVALID_FIELD_ERR"),
        (
            json!({"metadata": {"collectionType": CERT_TYPE, "collectionTotal": 1}, "resources": [{}]}),
            400,
            "INVALID_FIELD_ERR",
        ),
    ] {
        assert_error(&a.post(&certs, &body).await, status, code);
    }
    assert_eq!(total(&a, &certs).await, 1);
    // paging bounds
    assert_error(
        &a.get("/api/v2/kmip_adapters?limit=0").await,
        400,
        "INVALID_QUERY_PARAM_ERR",
    );
    assert_error(
        &a.get("/api/v2/kmip_adapters?offset=-1").await,
        400,
        "INVALID_QUERY_PARAM_ERR",
    );
}

/// A root key that an adapter is bound to cannot be deleted, even with `force`, until the
/// adapter is gone (Key Protect's rule; docs/kmip.md).
#[tokio::test]
async fn a_bound_root_key_is_not_deleted_before_its_adapter() {
    let s = shared();
    let a = s.tenant().await;
    let crk = id_of(&a.create_root_key().await);
    let ad = id_of(&first(
        &a.post("/api/v2/kmip_adapters", &adapter_body(Some("bound"), &crk))
            .await,
        201,
    ));
    let before = s.snapshot(a.instance_id).await;
    for path in [
        format!("/api/v2/keys/{crk}"),
        format!("/api/v2/keys/{crk}?force=true"),
    ] {
        let r = a.delete(&path).await;
        assert_error(&r, 409, "PROTECTED_RESOURCE_ERR");
    }
    assert_eq!(s.snapshot(a.instance_id).await, before);
    assert_eq!(
        a.delete(&format!("/api/v2/kmip_adapters/{ad}"))
            .await
            .status,
        204
    );
    let r = a.delete(&format!("/api/v2/keys/{crk}")).await;
    assert!(r.status == 200 || r.status == 204, "{}", r.text());
}

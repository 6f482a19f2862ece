//! `GET /v2/resource_instances/{id}`: the instance as the provider's `populateKPClient` reads
//! it, by GUID and by CRN, consistent with the key CRNs; and the refusals (no token, another
//! instance, an unknown or malformed id: one 404 for all three).

use keyward_testsupport::{admin_json, Tenant};
use serde_json::Value;

use crate::Server;

async fn get(s: &Server, id: &str, auth: Option<&str>) -> (u16, Value) {
    let mut r = keyward_testsupport::http().get(format!("{}/v2/resource_instances/{id}", s.base()));
    if let Some(a) = auth {
        r = r.header("authorization", a);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn resource_instances() {
    let s = Server::start().await;
    let api = s.tenant.login(s.base()).await;
    let bearer = format!("Bearer {}", api.token);
    let inst = &s.tenant.instance;

    let (st, v) = get(&s, inst, Some(&bearer)).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["guid"], inst.as_str());
    assert_eq!(v["name"], "terraform");
    assert_eq!(v["state"], "active");
    assert_eq!(v["id"], v["crn"]);
    assert_eq!(v["extensions"]["endpoints"]["public"], s.base());
    assert_eq!(v["extensions"]["endpoints"]["private"], s.base());
    let crn = v["crn"].as_str().unwrap().to_string();
    let segs: Vec<&str> = crn.split(':').collect();
    assert_eq!(segs.len(), 10, "{crn}");
    assert_eq!(
        (segs[0], segs[4], segs[7], segs[8], segs[9]),
        ("crn", "kms", inst.as_str(), "", "")
    );
    assert!(v["created_at"].is_string());

    // every key CRN is the instance CRN with ":key:<id>" in place of "::"
    let key = api.create_root_key("rc").await.expect(201).clone();
    let key = &key["resources"][0];
    assert_eq!(
        key["crn"].as_str().unwrap(),
        format!(
            "{}:key:{}",
            crn.trim_end_matches("::"),
            key["id"].as_str().unwrap()
        )
    );

    // by CRN, as `instance_id` may be given (path-escaped by the SDK: `/` is `%2F`)
    let (st, by_crn) = get(&s, &crn.replace('/', "%2F"), Some(&bearer)).await;
    assert_eq!(st, 200);
    assert_eq!(by_crn, v);

    // no token, a bad token: 401
    assert_eq!(get(&s, inst, None).await.0, 401);
    assert_eq!(get(&s, inst, Some("Bearer x.y.z")).await.0, 401);

    // another instance (it exists), an unknown GUID and a malformed id: the same 404
    let other = Tenant::in_data_dir(&s.data, "other");
    let (st, a) = get(&s, &other.instance, Some(&bearer)).await;
    assert_eq!(st, 404, "{a}");
    let (st, b) = get(&s, &uuid::Uuid::new_v4().to_string(), Some(&bearer)).await;
    assert_eq!(st, 404);
    let (st, c) = get(&s, "not-an-instance", Some(&bearer)).await;
    assert_eq!(st, 404);
    assert_eq!(a, b);
    assert_eq!(b, c);
    assert_eq!(
        a["resources"][0]["reasons"][0]["code"], "NOT_FOUND_ERR",
        "{a}"
    );

    // a Reader sees it too
    let reader = admin_json(
        &s.data,
        &[
            "apikey",
            "create",
            "--instance",
            inst,
            "--role",
            "Reader",
            "--name",
            "r",
        ],
    );
    let r = Tenant {
        instance: inst.clone(),
        apikey: reader["apikey"].as_str().unwrap().to_string(),
    }
    .login(s.base())
    .await;
    assert_eq!(
        get(&s, inst, Some(&format!("Bearer {}", r.token))).await.0,
        200
    );
}

//! The registration listings' query (`GET /keys/{id}/registrations` and
//! `GET /keys/registrations`): `limit`, `offset`, `totalCount`, `preventKeyDeletion` and
//! `urlEncodedResourceCRNQuery`, as the Go client and Terraform's provider send them
//! (`registrations.go` of keyprotect-go-client sets `urlEncodedResourceCRNQuery` through
//! `url.Values`, so the server sees the CRN once decoded).

use crate::common::*;

fn crns(v: &serde_json::Value) -> Vec<String> {
    v["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["resourceCrn"].as_str().unwrap().to_string())
        .collect()
}

/// Percent-encodes everything but unreserved characters.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn registration_queries() {
    let s = TestServer::start();
    let c = s.tenant().await;
    let k1 = id_of(&c.create_root("reg-1").await);
    let k2 = id_of(&c.create_root("reg-2").await);
    let bucket = |i: u32| {
        format!("crn:v1:bluemix:public:cloud-object-storage:global:a/acc:inst-1:bucket:b{i}")
    };
    let other = "crn:v1:bluemix:public:databases-for-postgresql:us-south:a/acc:pg-1::";
    for i in 0..5 {
        s.add_registration(c.instance_id, &k1, &bucket(i), i == 3)
            .await;
    }
    s.add_registration(c.instance_id, &k2, other, false).await;

    let base1 = format!("/api/v2/keys/{k1}/registrations");
    // no query: everything, no totalCount
    let all = c.get(&base1).await.expect(200);
    assert_eq!(all["metadata"]["collectionTotal"], 5, "{all}");
    assert!(all["metadata"].get("totalCount").is_none(), "{all}");

    // limit / offset / totalCount
    let page = c
        .get(&format!("{base1}?limit=2&offset=1&totalCount=true"))
        .await
        .expect(200);
    assert_eq!(page["metadata"]["collectionTotal"], 2, "{page}");
    assert_eq!(page["metadata"]["totalCount"], 5, "{page}");
    assert_eq!(crns(&page), crns(&all)[1..3].to_vec());
    let past = c
        .get(&format!("{base1}?offset=9&totalCount=true"))
        .await
        .expect(200);
    assert_eq!(past["metadata"]["collectionTotal"], 0, "{past}");
    assert_eq!(past["metadata"]["totalCount"], 5, "{past}");

    // preventKeyDeletion
    let held = c
        .get(&format!("{base1}?preventKeyDeletion=true"))
        .await
        .expect(200);
    assert_eq!(crns(&held), vec![bucket(3)]);
    assert_eq!(held["resources"][0]["preventKeyDeletion"], true);
    let free = c
        .get(&format!("{base1}?preventKeyDeletion=false&totalCount=true"))
        .await
        .expect(200);
    assert_eq!(free["metadata"]["totalCount"], 4, "{free}");

    // urlEncodedResourceCRNQuery: exact, once or twice encoded, wildcard in the last segment
    let exact = c
        .get(&format!(
            "{base1}?urlEncodedResourceCRNQuery={}",
            enc(&bucket(2))
        ))
        .await
        .expect(200);
    assert_eq!(crns(&exact), vec![bucket(2)]);
    let twice = c
        .get(&format!(
            "{base1}?urlEncodedResourceCRNQuery={}",
            enc(&enc(&bucket(2)))
        ))
        .await
        .expect(200);
    assert_eq!(crns(&twice), vec![bucket(2)]);
    let wild = "crn:v1:bluemix:public:cloud-object-storage:global:a/acc:inst-1:bucket:*";
    let w = c
        .get(&format!(
            "/api/v2/keys/registrations?urlEncodedResourceCRNQuery={}&totalCount=true",
            enc(wild)
        ))
        .await
        .expect(200);
    assert_eq!(w["metadata"]["totalCount"], 5, "{w}");
    let everything = c
        .get("/api/v2/keys/registrations?totalCount=true")
        .await
        .expect(200);
    assert_eq!(everything["metadata"]["totalCount"], 6, "{everything}");
    let pg = c
        .get(&format!(
            "/api/v2/keys/registrations?urlEncodedResourceCRNQuery={}",
            enc(other)
        ))
        .await
        .expect(200);
    assert_eq!(crns(&pg), vec![other.to_string()]);
    assert_eq!(pg["resources"][0]["keyId"], k2.as_str());

    // combined: wildcard + preventKeyDeletion + paging
    let combo = c
        .get(&format!(
            "{base1}?urlEncodedResourceCRNQuery={}&preventKeyDeletion=false&limit=1&offset=1&totalCount=true",
            enc(wild)
        ))
        .await
        .expect(200);
    assert_eq!(combo["metadata"]["totalCount"], 4, "{combo}");
    assert_eq!(combo["metadata"]["collectionTotal"], 1, "{combo}");

    // bad values: 400 naming the parameter
    for (q, name) in [
        ("limit=0", "limit"),
        ("limit=5001", "limit"),
        ("limit=x", "limit"),
        ("offset=-1", "offset"),
        ("totalCount=yes", "totalCount"),
        ("preventKeyDeletion=1", "preventKeyDeletion"),
        (
            "urlEncodedResourceCRNQuery=not-a-crn",
            "urlEncodedResourceCRNQuery",
        ),
        (
            "urlEncodedResourceCRNQuery=crn%3Av1%3Ax",
            "urlEncodedResourceCRNQuery",
        ),
    ] {
        let r = c.get(&format!("{base1}?{q}")).await;
        assert_field_error(&r, 400, "INVALID_QUERY_PARAM_ERR", name);
    }
    // the all-keys listing refuses a wildcard before the last two segments
    let early = "crn:v1:bluemix:public:cloud-object-storage:*:a/acc:inst-1:bucket:b1";
    let r = c
        .get(&format!(
            "/api/v2/keys/registrations?urlEncodedResourceCRNQuery={}",
            enc(early)
        ))
        .await;
    assert_field_error(
        &r,
        400,
        "INVALID_QUERY_PARAM_ERR",
        "urlEncodedResourceCRNQuery",
    );
}

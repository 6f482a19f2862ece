//! `GET /keys` and `HEAD /keys` with sort, search, filter, state, paging and key rings
//! (spec §1.7), and the deprecated `POST /keys/{id}?action=...` form (spec §2).

use std::collections::BTreeSet;

use keyward_domain::Role;
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::*;

/// `?k=v&...`, URL-encoded.
fn q(pairs: &[(&str, &str)]) -> String {
    let mut u = reqwest::Url::parse("http://x/").unwrap();
    {
        let mut qp = u.query_pairs_mut();
        for (k, v) in pairs {
            qp.append_pair(k, v);
        }
    }
    format!("?{}", u.query().unwrap_or(""))
}

fn set(ids: &[&String]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// GET and HEAD of one query: the ids, and Key-Total equal to their number.
async fn list(c: &Client, pairs: &[(&str, &str)]) -> Vec<String> {
    let mut all = pairs.to_vec();
    all.push(("limit", "5000"));
    let ids = c.list_ids(&q(&all)).await;
    assert_eq!(
        c.key_total(&q(pairs)).await,
        ids.len() as i64,
        "HEAD Key-Total vs GET for {pairs:?}"
    );
    ids
}

async fn list_set(c: &Client, pairs: &[(&str, &str)]) -> BTreeSet<String> {
    list(c, pairs).await.into_iter().collect()
}

#[tokio::test]
async fn sort_search_and_filter() {
    let s = TestServer::start();
    let c = s.tenant().await;
    let t0 = s.now();
    let k1 = id_of(&c.create_root("alpha-one").await);
    s.advance(10);
    let k2 = id_of(&c.create_standard("Beta-Two").await);
    c.post_empty(&format!("/api/v2/keys/{k2}/aliases/zeta-alias"))
        .await
        .expect(201);
    s.advance(10);
    let exp = s.now() + 100 * DAY;
    let k3 = c
        .create(json!({"type": KEY_TYPE, "name": "gamma-alpha", "extractable": false, "expirationDate": time_str(exp)}))
        .await
        .resource(201);
    let k3 = id_of(&k3);
    s.advance(10);
    let k4 = id_of(&c.create_root("alpha-deleted").await);
    c.delete_key(&k4).await.expect(204);
    c.act(&k1, "disable").await.expect(204);

    // Default: everything but state 5, sorted by id.
    let mut by_id = vec![k1.clone(), k2.clone(), k3.clone()];
    by_id.sort();
    assert_eq!(list(&c, &[]).await, by_id);

    // sort
    assert_eq!(
        list(&c, &[("sort", "creationDate")]).await,
        vec![k1.clone(), k2.clone(), k3.clone()]
    );
    assert_eq!(
        list(&c, &[("sort", "-creationDate")]).await,
        vec![k3.clone(), k2.clone(), k1.clone()]
    );
    assert_eq!(
        list(&c, &[("sort", "extractable,-creationDate")]).await,
        vec![k3.clone(), k1.clone(), k2.clone()]
    );
    assert_eq!(
        list(&c, &[("sort", "-state,creationDate")]).await,
        vec![k1.clone(), k2.clone(), k3.clone()]
    );
    let page = c
        .list_ids(&q(&[
            ("sort", "creationDate"),
            ("limit", "1"),
            ("offset", "1"),
        ]))
        .await;
    assert_eq!(page, vec![k2.clone()]);
    assert!(c.list_ids(&q(&[("offset", "3")])).await.is_empty());
    let all_states = list(&c, &[("state", "0,1,2,3,5"), ("sort", "-creationDate")]).await;
    assert_eq!(
        all_states,
        vec![k4.clone(), k3.clone(), k2.clone(), k1.clone()]
    );

    // search: name substring (case-insensitive) and aliases; prefixes; scopes; a full UUID.
    assert_eq!(list_set(&c, &[("search", "alpha")]).await, set(&[&k1, &k3]));
    assert_eq!(list_set(&c, &[("search", "ALPHA")]).await, set(&[&k1, &k3]));
    assert_eq!(
        list_set(&c, &[("search", "alpha,")]).await,
        set(&[&k1, &k3]),
        "Go client's trailing comma"
    );
    assert_eq!(list_set(&c, &[("search", "zeta")]).await, set(&[&k2]));
    assert_eq!(list_set(&c, &[("search", "alias:zeta")]).await, set(&[&k2]));
    assert_eq!(list_set(&c, &[("search", "alias:alpha")]).await, set(&[]));
    assert_eq!(list_set(&c, &[("search", "name:zeta")]).await, set(&[]));
    assert_eq!(
        list_set(&c, &[("search", "exact:alpha-one")]).await,
        set(&[&k1])
    );
    assert_eq!(list_set(&c, &[("search", "exact:alpha")]).await, set(&[]));
    assert_eq!(list_set(&c, &[("search", "not:alpha")]).await, set(&[&k2]));
    assert_eq!(
        list_set(&c, &[("search", "not:exact:alpha-one")]).await,
        set(&[&k2, &k3])
    );
    assert_eq!(list_set(&c, &[("search", k2.as_str())]).await, set(&[&k2]));
    assert_eq!(
        list_set(&c, &[("search", "alpha"), ("state", "5")]).await,
        set(&[&k4])
    );
    assert_eq!(
        list_set(
            &c,
            &[
                ("search", "alpha"),
                ("extractable", "false"),
                ("state", "1")
            ]
        )
        .await,
        set(&[&k3])
    );

    // filter
    let f = |s: &str| s.to_string();
    let at = |t: i64| format!("\"{}\"", time_str(t));
    let cases: Vec<(String, BTreeSet<String>)> = vec![
        (f("state=2"), set(&[&k1])),
        (f("state=1,2"), set(&[&k1, &k2, &k3])),
        (f("state=5"), set(&[&k4])),
        (f("extractable=true"), set(&[&k2])),
        (f("state=1 extractable=false"), set(&[&k3])),
        (format!("creationDate=gt:{}", at(t0 + 5)), set(&[&k2, &k3])),
        (
            format!("creationDate=lte:{}", at(t0 + 10)),
            set(&[&k1, &k2]),
        ),
        (format!("creationDate={}", at(t0 + 20)), set(&[&k3])),
        (f("expirationDate=none"), set(&[&k1, &k2])),
        (format!("expirationDate=gte:{}", at(exp)), set(&[&k3])),
        (format!("expirationDate=lt:{}", at(exp)), set(&[])),
        (
            f("lastRotateDate=none deletionDate=none"),
            set(&[&k1, &k2, &k3]),
        ),
    ];
    for (filter, want) in cases {
        assert_eq!(
            list_set(&c, &[("filter", filter.as_str())]).await,
            want,
            "filter {filter}"
        );
    }
    assert_eq!(
        list_set(&c, &[("filter", "extractable=false"), ("search", "gamma")]).await,
        set(&[&k3])
    );

    // state / extractable both as parameter and in the filter: 400.
    for pairs in [
        vec![("state", "1"), ("filter", "state=1")],
        vec![("extractable", "true"), ("filter", "extractable=false")],
        vec![("state", "1"), ("filter", "extractable=true")],
    ] {
        assert_error(
            &c.get(&format!("/api/v2/keys{}", q(&pairs))).await,
            400,
            "INVALID_QUERY_PARAM_ERR",
        );
        assert_eq!(
            c.head(&format!("/api/v2/keys{}", q(&pairs))).await.status,
            400
        );
    }
    for bad in [
        "bogus=1",
        "creationDate=gt:2020-01-01T00:00:00Z",
        "state=9",
        "creationDate=between:\"2020-01-01T00:00:00Z\"",
        "state",
    ] {
        assert_error(
            &c.get(&format!("/api/v2/keys{}", q(&[("filter", bad)])))
                .await,
            400,
            "INVALID_QUERY_PARAM_ERR",
        );
    }

    // Extractable as a plain parameter, and HEAD agreeing with the store count.
    assert_eq!(list_set(&c, &[("extractable", "true")]).await, set(&[&k2]));
    assert_eq!(list_set(&c, &[("state", "2")]).await, set(&[&k1]));
    assert_eq!(c.key_total("").await, 3);
}

/// An expired key is shown with state 3; listing by state must agree with what it shows.
#[tokio::test]
async fn list_by_state_sees_expired_keys_as_deactivated() {
    let s = TestServer::start();
    let c = s.tenant().await;
    let k = c
        .create(json!({"type": KEY_TYPE, "name": "expiring", "extractable": false, "expirationDate": time_str(s.now() + HOUR)}))
        .await
        .resource(201);
    let k = id_of(&k);
    s.advance(HOUR);
    assert_eq!(c.meta(&k).await["state"], 3);
    assert_eq!(list_set(&c, &[("filter", "state=3")]).await, set(&[&k]));
    let listed: Vec<Value> = c.get("/api/v2/keys").await.resources(200);
    assert_eq!(listed[0]["state"], 3);
    let by_state = (
        list_set(&c, &[("state", "3")]).await,
        list_set(&c, &[("state", "1")]).await,
    );
    assert_eq!(
        by_state,
        (set(&[&k]), set(&[])),
        "(GET /keys?state=3, GET /keys?state=1)"
    );
}

#[tokio::test]
async fn deprecated_action_query_form() {
    let s = TestServer::start();
    let a = s.tenant().await;
    let b = s.client(a.instance_id, Role::Manager).await;
    let id = id_of(&a.create_root("legacy").await);
    let legacy = |id: &str, action: &str| format!("/api/v2/keys/{id}?action={action}");
    let legacy_post = |c: &Client, path: String, body: Option<Value>| {
        let c = c.clone();
        async move {
            let mut rb = c.req(Method::POST, &path).await;
            if let Some(b) = body {
                rb = rb
                    .header("content-type", "application/vnd.ibm.kms.key_action+json")
                    .body(serde_json::to_vec(&b).unwrap());
            }
            send(rb).await
        }
    };

    legacy_post(&a, legacy(&id, "disable"), None)
        .await
        .expect(204);
    assert_eq!(a.meta(&id).await["state"], 2);
    assert_error(
        &legacy_post(&a, legacy(&id, "enable"), None).await,
        409,
        "REQ_TOO_EARLY_ERR",
    );
    s.advance(30);
    legacy_post(&a, legacy(&id, "enable"), Some(json!(null)))
        .await
        .expect(204);
    assert_eq!(a.meta(&id).await["state"], 1);

    let dek = random(32);
    let w = legacy_post(
        &a,
        legacy(&id, "wrap"),
        Some(json!({"plaintext": b64(&dek)})),
    )
    .await
    .expect(200);
    let ct = w["ciphertext"].as_str().unwrap().to_string();
    legacy_post(&a, legacy(&id, "rotate"), Some(json!({})))
        .await
        .expect(204);
    let u = legacy_post(&a, legacy(&id, "unwrap"), Some(json!({"ciphertext": ct})))
        .await
        .expect(200);
    assert_eq!(unb64(u["plaintext"].as_str().unwrap()), dek);
    assert!(u["rewrappedKeyVersion"]["id"].is_string(), "{u}");
    let r = legacy_post(&a, legacy(&id, "rewrap"), Some(json!({"ciphertext": ct})))
        .await
        .expect(200);
    assert_eq!(r["rewrappedKeyVersion"], u["rewrappedKeyVersion"]);

    // Dual auth through the legacy form, then delete and restore.
    a.put_key_policy(&id, "", dual_auth_policy(true))
        .await
        .expect(200);
    legacy_post(&a, legacy(&id, "setKeyForDeletion"), None)
        .await
        .expect(204);
    legacy_post(&a, legacy(&id, "unsetKeyForDeletion"), None)
        .await
        .expect(204);
    assert_error(&b.delete_key(&id).await, 409, "AUTHORIZATIONS_NOT_MET");
    legacy_post(&a, legacy(&id, "setKeyForDeletion"), None)
        .await
        .expect(204);
    b.delete_key(&id).await.expect(204);
    assert_error(
        &legacy_post(&a, legacy(&id, "restore"), None).await,
        409,
        "REQ_TOO_EARLY_ERR",
    );
    s.advance(30);
    let restored = legacy_post(&a, legacy(&id, "restore"), None)
        .await
        .resource(201);
    assert_eq!(restored["state"], 1);

    // Unknown or missing action.
    assert_error(
        &legacy_post(&a, legacy(&id, "explode"), None).await,
        400,
        "INVALID_QUERY_PARAM_ERR",
    );
    assert_error(
        &legacy_post(&a, format!("/api/v2/keys/{id}"), None).await,
        400,
        "INVALID_QUERY_PARAM_ERR",
    );
    // The standard-key rule holds on this path too.
    let std = id_of(&a.create_standard("legacy-std").await);
    assert_error(
        &legacy_post(&a, legacy(&std, "disable"), None).await,
        400,
        "KEY_ROOT_REQ_ERR",
    );
}

//! Bounded work per request and bounded state (threat model A1/A2): list-valued query
//! parameters are deduplicated and capped, no combination of them answers 5xx (a property test
//! on SQLite and, with `KEYWARD_TEST_DATABASE_URL`, PostgreSQL), callers that did not
//! authenticate or hold no role leave no state behind, opened material leaves memory after its
//! TTL without any request, and a request's database queries do not grow with the instance.
//!
//! State and query counts are read from `/metrics` (`keyward_cache_*`,
//! `keyward_store_operation_duration_seconds_count`), on servers of their own.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use keyward_domain::InstanceId;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::json;

use crate::common::*;

// ---- helpers ----

/// Percent-encodes a query component (everything but unreserved characters).
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b',') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn query(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn one(name: &str, value: impl Into<String>) -> String {
    query(&[(name, value.into())])
}

/// The key ids of a 200 `GET /keys?{q}`, in order.
async fn ids(c: &Client, q: &str) -> Vec<String> {
    let v = c.get(&format!("/api/v2/keys?{q}")).await.expect(200);
    v["resources"]
        .as_array()
        .map(|a| a.iter().map(id_of).collect())
        .unwrap_or_default()
}

/// `GET` and `HEAD /keys?{q}` are both refused with 400 `INVALID_QUERY_PARAM_ERR` naming `param`.
async fn refused(c: &Client, q: &str, param: &str) {
    let r = c.get(&format!("/api/v2/keys?{q}")).await;
    assert_field_error(&r, 400, "INVALID_QUERY_PARAM_ERR", param);
    assert_eq!(c.head(&format!("/api/v2/keys?{q}")).await.status, 400);
}

/// `HEAD /keys?{q}` answers 200.
async fn head_ok(c: &Client, q: &str) {
    let r = c.head(&format!("/api/v2/keys?{q}")).await;
    assert_eq!(r.status, 200, "HEAD ?{q}");
}

/// `/metrics` as (series, value); the series is the text before the value.
async fn metrics(base: &str) -> BTreeMap<String, f64> {
    let text = send(http_client().get(format!("{base}/metrics")))
        .await
        .text();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn cache(m: &BTreeMap<String, f64>, family: &str, cache: &str) -> u64 {
    m.get(&format!("{family}{{cache=\"{cache}\"}}"))
        .copied()
        .unwrap_or_else(|| panic!("{family}{{cache=\"{cache}\"}} missing from /metrics")) as u64
}

fn entries(m: &BTreeMap<String, f64>, name: &str) -> u64 {
    cache(m, "keyward_cache_entries", name)
}

/// Store calls so far, by operation.
fn store_ops(m: &BTreeMap<String, f64>) -> BTreeMap<String, u64> {
    m.iter()
        .filter_map(|(k, v)| {
            let op = k
                .strip_prefix("keyward_store_operation_duration_seconds_count{op=\"")?
                .strip_suffix("\"}")?;
            Some((op.to_string(), *v as u64))
        })
        .collect()
}

/// Store calls between two snapshots, by operation (only those that changed). The check that
/// a caller's own API key still exists (revocation, cached 1 s per key, so at most one per
/// second whatever the requests: `auth_edges.rs` tests its bound) is left out: it depends on
/// the clock, not on the request.
fn ops_between(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, u64> {
    let (b, a) = (store_ops(before), store_ops(after));
    a.into_iter()
        .filter(|(op, _)| op != "api_key_exists")
        .filter_map(|(op, n)| {
            let d = n - b.get(&op).copied().unwrap_or(0);
            (d > 0).then_some((op, d))
        })
        .collect()
}

/// A server of its own whose store is touched only by requests (no scheduler, no master-key
/// watch, no keypair pool).
fn quiet_server(
    configure: impl FnOnce(&mut keyward::config::ServeArgs) + Send + 'static,
) -> TestServer {
    TestServer::start_with(0, |a| {
        a.master_key_watch = Some(0);
        configure(a);
    })
}

async fn add_alias(c: &Client, key: &str, alias: &str) {
    c.post_raw(
        &format!("/api/v2/keys/{key}/aliases/{alias}"),
        Vec::new(),
        None,
    )
    .await
    .expect(201);
}

const SORT_FIELDS: [&str; 9] = [
    "id",
    "state",
    "extractable",
    "imported",
    "creationDate",
    "lastUpdateDate",
    "lastRotateDate",
    "deletionDate",
    "expirationDate",
];

fn filter_terms(n: usize) -> String {
    (0..n)
        .map(|i| format!(r#"creationDate=gt:"20{i:02}-01-01T00:00:00Z""#))
        .collect::<Vec<_>>()
        .join(" ")
}

// ---- caps ----

/// Each capped parameter exactly at its cap answers 2xx, one past answers 400
/// `INVALID_QUERY_PARAM_ERR`, duplicates count once, and nothing answers 5xx (every response
/// goes through `send`, which fails on any 5xx).
#[tokio::test]
async fn every_capped_parameter_at_and_past_its_cap() {
    let s = shared();
    let c = s.tenant().await;
    let root = id_of(&c.create_root_key().await);
    let std = id_of(&c.create_standard_key().await);
    add_alias(&c, &root, "capped-alias").await;
    let mut both = vec![root.clone(), std.clone()];
    both.sort();

    // state: five distinct values at most (the five states); duplicates count once;
    // repeated `state` parameters merge.
    assert_eq!(ids(&c, &one("state", "0,1,2,3,5")).await, both);
    head_ok(&c, &one("state", "0,1,2,3,5")).await;
    let dup = format!("{}1", "1,".repeat(2_000));
    assert_eq!(
        ids(&c, &one("state", dup)).await,
        ids(&c, &one("state", "1")).await
    );
    refused(&c, &one("state", "0,1,2,3,5,4"), "state").await;
    assert_eq!(
        ids(&c, "state=5&state=1&state=1").await,
        ids(&c, &one("state", "1,5")).await
    );

    // sort: the nine fields at most; a field named again (either direction) adds nothing.
    let nine = SORT_FIELDS.join(",");
    let sorted = ids(&c, &one("sort", nine.clone())).await;
    assert_eq!(sorted.len(), 2);
    head_ok(&c, &one("sort", nine.clone())).await;
    let again = format!("{nine},{}", "-id,-state,-creationDate,".repeat(300));
    assert_eq!(ids(&c, &one("sort", again)).await, sorted);
    refused(&c, &one("sort", format!("{nine},bogus")), "sort").await;
    // `-extractable` first: the standard key (extractable) leads; naming it again ascending
    // changes nothing.
    assert_eq!(
        ids(&c, "sort=-extractable&sort=extractable").await,
        vec![std.clone(), root.clone()]
    );

    // filter: sixteen distinct terms at most, also across repeated `filter` parameters.
    assert_eq!(ids(&c, &one("filter", filter_terms(16))).await, both);
    head_ok(&c, &one("filter", filter_terms(16))).await;
    refused(&c, &one("filter", filter_terms(17)), "filter").await;
    let split = query(&[("filter", filter_terms(10)), ("filter", filter_terms(16))]);
    assert_eq!(ids(&c, &split).await, both, "repeated terms count once");
    let past = format!(
        "{split}&{}",
        one("filter", r#"lastUpdateDate=gt:"2001-06-01T00:00:00Z""#)
    );
    refused(&c, &past, "filter").await;
    let same = "extractable=false ".repeat(500);
    assert_eq!(ids(&c, &one("filter", same)).await, vec![root.clone()]);
    assert_eq!(
        ids(&c, &one("filter", format!("state={}1", "1,".repeat(500)))).await,
        both
    );

    // search: 256 bytes at most, prefixes included; repeated scopes count once.
    let at_cap = format!("name:{}", "x".repeat(251));
    assert_eq!(at_cap.len(), 256);
    assert!(ids(&c, &one("search", at_cap.clone())).await.is_empty());
    head_ok(&c, &one("search", at_cap)).await;
    refused(
        &c,
        &one("search", format!("name:{}", "x".repeat(252))),
        "search",
    )
    .await;
    let scoped = format!("{}capped-alias", "alias:".repeat(40));
    assert_eq!(ids(&c, &one("search", scoped)).await, vec![root.clone()]);

    // A query string has at most 32 parameters, a repeated name counting each time.
    let pairs = |name: &str, n: usize| vec![format!("{name}=1"); n].join("&");
    assert_eq!(ids(&c, &pairs("state", 32)).await, both);
    head_ok(&c, &pairs("state", 32)).await;
    refused(&c, &pairs("state", 33), "state").await;
    refused(&c, &pairs("unknown", 33), "unknown").await;
    refused(&c, &format!("{}&sort=id", pairs("state", 32)), "sort").await;

    // The other routes that read a query string have the same cap.
    for path in [
        format!("/api/v2/keys/{root}/versions"),
        "/api/v2/key_rings".to_string(),
        "/api/v2/instance/policies".to_string(),
        format!("/api/v2/keys/{root}/policies"),
    ] {
        c.get(&format!("{path}?{}", pairs("limit", 32)))
            .await
            .expect(200);
        assert_field_error(
            &c.get(&format!("{path}?{}", pairs("x", 33))).await,
            400,
            "INVALID_QUERY_PARAM_ERR",
            "x",
        );
    }
    // A refused delete deletes nothing.
    let r = c
        .delete(&format!("/api/v2/keys/{std}?force=true&{}", pairs("x", 32)))
        .await;
    assert_field_error(&r, 400, "INVALID_QUERY_PARAM_ERR", "x");
    c.get(&format!("/api/v2/keys/{std}")).await.expect(200);
}

// ---- no 5xx from any combination ----

const TOKENS: &[&str] = &[
    "0",
    "1",
    "2",
    "3",
    "4",
    "5",
    "-1",
    "5000",
    "5001",
    "9223372036854775807",
    "99999999999999999999999",
    "id",
    "-id",
    "state",
    "-state",
    "extractable",
    "imported",
    "creationDate",
    "-expirationDate",
    "lastRotateDate",
    "deletionDate",
    "bogus",
    "true",
    "false",
    "none",
    r#"creationDate=gt:"2020-01-01T00:00:00Z""#,
    r#"lastUpdateDate=lte:"2100-01-01T00:00:00Z""#,
    r#"deletionDate=none"#,
    "expirationDate=none",
    "state=1,5",
    "state=0,1,2,3,5",
    "state=gt:1",
    "extractable=true",
    "extractable=maybe",
    "creationDate=between:1",
    "not:",
    "exact:",
    "alias:",
    "name:",
    "escape:",
    "root-key",
    "prop-alias",
    "9b0c8f3e-6f9e-4a51-9d0b-0d3c6a5e1f2a",
    "\"",
    "=",
    ":",
    "%",
    "",
    "\u{0}",
    "é",
    "'; DROP TABLE keys; --",
    "$1",
    "$S1",
];

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (
            proptest::collection::vec(proptest::sample::select(TOKENS), 0..14),
            proptest::sample::select(&[",", " ", "", ":", ",,"][..]),
        )
            .prop_map(|(parts, sep)| parts.join(sep)),
        1 => "\\PC{0,48}",
        1 => (proptest::sample::select(TOKENS), 0usize..100)
            .prop_map(|(t, n)| vec![t; n].join(",")),
    ]
}

fn name() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(
        &[
            "state",
            "state",
            "sort",
            "sort",
            "filter",
            "filter",
            "search",
            "search",
            "limit",
            "offset",
            "extractable",
            "other",
        ][..],
    )
}

/// A fresh PostgreSQL database for a server of its own (`None` when
/// `KEYWARD_TEST_DATABASE_URL` is unset).
async fn fresh_postgres() -> Option<(String, String)> {
    use sqlx::Connection;
    let base = std::env::var("KEYWARD_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())?;
    let name = format!("kw_bounds_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&base).await.unwrap();
    sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    conn.close().await.unwrap();
    let (prefix, _) = base.rsplit_once('/').unwrap();
    Some((format!("{prefix}/{name}"), name))
}

async fn drop_postgres(name: &str) {
    use sqlx::Connection;
    let Ok(base) = std::env::var("KEYWARD_TEST_DATABASE_URL") else {
        return;
    };
    let mut conn = sqlx::PgConnection::connect(&base).await.unwrap();
    let _ = sqlx::Executor::execute(
        &mut conn,
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str(),
    )
    .await;
    let _ = conn.close().await;
}

/// Random combinations of every list parameter (and the scalar ones beside them), over the
/// parser and the real SQL: `GET` and `HEAD /keys` answer 200 or 400, never anything else.
fn list_parameters_fuzz(s: &TestServer, cases: u32) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let c = rt.block_on(async {
        let c = s.tenant().await;
        let a = id_of(&c.create_root_key().await);
        let b = id_of(&c.create_standard_key().await);
        add_alias(&c, &a, "prop-alias").await;
        c.action(&b, "disable", &json!({})).await;
        c
    });
    // Now and then one list as long as a URI allows (http's limit is 64 KiB): thousands of
    // placeholders and quadratic work if it reached the SQL undeduplicated.
    let huge = (
        proptest::sample::select(&["state", "sort"][..]),
        proptest::sample::select(&["1", "5", "-id", "id"][..]),
        10_000usize..13_000,
    )
        .prop_map(|(n, t, k)| (n, vec![t; k].join(",")));
    let strategy = (
        proptest::collection::vec((name(), value()), 0..40),
        proptest::option::weighted(0.2, huge),
        proptest::option::of(proptest::sample::select(&["default", "nope", ""][..])),
    );
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&strategy, |(pairs, huge, ring)| {
            // As many pairs as fit in a URI (http's limit is 64 KiB), the long list first.
            let mut q = String::new();
            for (k, v) in huge.into_iter().chain(pairs) {
                let pair = format!("{k}={}", enc(&v));
                if q.len() + pair.len() + 1 > 60_000 {
                    break;
                }
                if !q.is_empty() {
                    q.push('&');
                }
                q.push_str(&pair);
            }
            rt.block_on(async {
                for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
                    let mut rb = c.req(method.clone(), &format!("/api/v2/keys?{q}"));
                    if let Some(r) = ring {
                        rb = rb.header("x-kms-key-ring", r);
                    }
                    let r = send(rb).await;
                    // 200 or 400 here; a front-end limit on the request line may also
                    // answer another 4xx, never a 5xx.
                    let shown: String = q.chars().take(300).collect();
                    prop_assert!(
                        (200..500).contains(&r.status),
                        "{method} ?{shown}: {} {}",
                        r.status,
                        r.text()
                    );
                    if r.status == 400 && method == reqwest::Method::GET {
                        let v = r.json();
                        let code = &v["resources"][0]["reasons"][0]["code"];
                        prop_assert!(
                            code == "INVALID_QUERY_PARAM_ERR" || code == "KEY_SEARCH_TOO_BROAD",
                            "{v}"
                        );
                    }
                }
                Ok(())
            })
        })
        .unwrap();
}

#[test]
fn list_parameters_never_answer_5xx_on_sqlite() {
    list_parameters_fuzz(shared(), 160);
}

#[test]
fn list_parameters_never_answer_5xx_on_postgres() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let Some((url, name)) = rt.block_on(fresh_postgres()) else {
        eprintln!("KEYWARD_TEST_DATABASE_URL unset: PostgreSQL variant skipped");
        return;
    };
    {
        let s = TestServer::start_with(0, move |a| a.database_url = Some(url));
        list_parameters_fuzz(&s, 120);
    }
    rt.block_on(drop_postgres(&name));
}

// ---- no state for strangers ----

/// Thousands of requests with bad tokens, and with a valid token in instances where the caller
/// has no role: no cache or limiter table grows (the role cache holds the negative answers
/// within its bound), no rate-limit bucket is made, bad tokens cost no database query, and a
/// roleless caller costs one role lookup per (instance, principal) (the cached negative
/// answer) and nothing else.
#[tokio::test]
async fn unauthenticated_and_roleless_callers_create_no_state() {
    let s = quiet_server(|a| {
        a.cache_entries = Some(500);
        // Limits on, so a bucket made for a stranger would show.
        a.rate_limit_crypto = Some("1000/1000".into());
        a.rate_limit_management = Some("1000/1000".into());
        a.rate_limit_import_token = Some("1000/1000".into());
    });
    let c = s.tenant().await;
    let key = id_of(&c.create_root_key().await);
    c.get("/api/v2/keys").await.expect(200);
    let m0 = metrics(&s.base).await;
    let bound = cache(&m0, "keyward_cache_capacity", "role");
    assert!((500..=564).contains(&bound), "role cache bound {bound}");
    assert!(entries(&m0, "rate_limit") >= 1, "the tenant has a bucket");

    // Bad tokens: missing, garbage, forged signature, oversized; from 20 addresses.
    let forged = {
        // A character inside the signature (the last one also carries padding bits).
        let mut t: Vec<char> = c.token.chars().collect();
        let i = t.len() - 5;
        t[i] = if t[i] == 'A' { 'B' } else { 'A' };
        t.into_iter().collect::<String>()
    };
    let bads: Vec<Option<String>> = vec![
        None,
        Some("garbage".into()),
        Some(forged),
        Some("x".repeat(5000)),
        Some(format!("{}.e30.{}", "eyJhbGciOiJub25lIn0", "")),
    ];
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..20u8 {
        let http = http_client_from(100 + n);
        let base = s.base.clone();
        let bads = bads.clone();
        let inst = c.instance.clone();
        tasks.spawn(async move {
            for i in 0..100usize {
                let mut rb = http
                    .get(format!("{base}/api/v2/keys"))
                    .header("bluemix-instance", &inst);
                if let Some(t) = &bads[i % bads.len()] {
                    rb = rb.header("authorization", format!("Bearer {t}"));
                }
                let r = send(rb).await;
                assert!(matches!(r.status, 401 | 429), "{} {}", r.status, r.text());
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let m1 = metrics(&s.base).await;
    assert!(
        ops_between(&m0, &m1).is_empty(),
        "bad tokens reached the database: {:?}",
        ops_between(&m0, &m1)
    );
    assert!(entries(&m1, "auth_failures") <= 20);

    // A valid token in 600 random instances, twice each in a row, on a list and a wrap
    // route: one role lookup per instance (the second request finds the cached empty answer).
    let pairs = 600usize;
    let mut slow = 0usize;
    for i in 0..pairs {
        let stranger = c.with_instance(&InstanceId::new().to_string());
        let t = Instant::now();
        let r = if i % 2 == 0 {
            stranger.get("/api/v2/keys").await
        } else {
            stranger.wrap(&key, &json!({})).await
        };
        assert_error(&r, 403, "UNAUTHORIZED_ERR");
        assert_error(&stranger.get("/api/v2/keys").await, 403, "UNAUTHORIZED_ERR");
        // The negative answer is cached for 1 s: a pair that took longer may ask twice.
        if t.elapsed() >= Duration::from_millis(900) {
            slow += 1;
        }
    }
    let m2 = metrics(&s.base).await;
    let ops = ops_between(&m1, &m2);
    let roles = ops.get("roles_of").copied().unwrap_or(0);
    assert!(
        roles >= pairs as u64 && roles <= (pairs + slow) as u64,
        "{roles} role lookups for {pairs} (instance, principal) pairs ({slow} slow)"
    );
    assert_eq!(
        ops.len(),
        1,
        "roleless callers reached the database beyond the role lookup: {ops:?}"
    );

    // Then 2,000 more, concurrently, well past the role cache's bound.
    let distinct = 2_000usize;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8usize {
        let c = c.clone();
        let key = key.clone();
        tasks.spawn(async move {
            for _ in 0..distinct / 8 {
                let stranger = c.with_instance(&InstanceId::new().to_string());
                let r = if worker % 2 == 0 {
                    stranger.get("/api/v2/keys").await
                } else {
                    stranger.wrap(&key, &json!({})).await
                };
                assert_error(&r, 403, "UNAUTHORIZED_ERR");
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let m2 = metrics(&s.base).await;
    let ops = ops_between(&m1, &m2);
    assert_eq!(
        ops.get("roles_of").copied().unwrap_or(0),
        roles + distinct as u64,
        "one role lookup per new (instance, principal)"
    );
    assert_eq!(
        ops.len(),
        1,
        "roleless callers reached the database beyond the role lookup: {ops:?}"
    );

    for name in [
        "key",
        "policy",
        "token",
        "import_token_key",
        "rate_limit",
        "auth_failures",
    ] {
        assert!(
            entries(&m2, name) <= entries(&m0, name).max(entries(&m1, name)),
            "the {name} table grew: {} -> {}",
            entries(&m0, name),
            entries(&m2, name)
        );
    }
    let role = entries(&m2, "role");
    assert!(role <= bound, "role cache {role} over its bound {bound}");

    // The tenant is not locked out, and its own bucket still works.
    c.get("/api/v2/keys").await.expect(200);
    c.wrap_bytes(&key, b"still here", None).await;
}

// ---- material leaves memory ----

/// Opened key versions leave the key cache after its TTL (1 s) and opened import-token
/// private keys leave theirs when the token expires, without any further request: the entry
/// counts on `/metrics` drop to zero by themselves.
#[tokio::test]
async fn opened_material_leaves_the_cache_after_its_ttl() {
    let s = quiet_server(|_| {});
    let c = s.tenant().await;
    let key = id_of(&c.create_root_key().await);
    // The wrap caches the key's opened versions (seen before the 1 s TTL runs out; a stalled
    // machine just wraps again).
    let mut seen = false;
    for _ in 0..20 {
        c.wrap_bytes(&key, b"opened", None).await;
        if entries(&metrics(&s.base).await, "key") == 1 {
            seen = true;
            break;
        }
    }
    assert!(seen, "the wrap cached the key");

    async fn wait_for_zero(base: &str, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if entries(&metrics(base).await, name) == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "{name} cache entries never left");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    wait_for_zero(&s.base, "key").await;
    c.create_token(&json!({"expiration": 300}))
        .await
        .expect(200);
    assert_eq!(
        entries(&metrics(&s.base).await, "import_token_key"),
        1,
        "the token's private key is cached"
    );
    // The token lives 300 s on the server's clock: its key stays until then.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(entries(&metrics(&s.base).await, "import_token_key"), 1);
    s.clock.advance(301);
    wait_for_zero(&s.base, "import_token_key").await;
}

// ---- bounded queries ----

/// Store calls of one request, by operation, leaving out the two cached lookups (roles,
/// instance policies), which are at most one each.
async fn ops_of<F, Fut>(s: &TestServer, f: F) -> BTreeMap<String, u64>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let before = metrics(&s.base).await;
    f().await;
    let mut ops = ops_between(&before, &metrics(&s.base).await);
    for cached in ["roles_of", "instance_policies"] {
        assert!(
            ops.remove(cached).unwrap_or(0) <= 1,
            "{cached} more than once"
        );
    }
    ops
}

/// Import-token creation and retrieval, key creation, a search over aliases and a lookup by
/// alias issue the same store calls with 3 keys as with 43 (no call per key or per alias).
#[tokio::test]
async fn requests_issue_a_bounded_number_of_queries() {
    let s = quiet_server(|_| {});
    let c = s.tenant().await;
    let mut keys = Vec::new();
    let grow = |c: Client, n: usize, start: usize| async move {
        let mut out = Vec::new();
        for i in start..start + n {
            let k = id_of(&c.create_root_key().await);
            add_alias(&c, &k, &format!("bounded-{i}")).await;
            add_alias(&c, &k, &format!("other-{i}")).await;
            out.push(k);
        }
        out
    };
    keys.extend(grow(c.clone(), 3, 0).await);

    async fn measure(s: &TestServer, c: &Client, round: usize) -> Vec<BTreeMap<String, u64>> {
        let search = ops_of(s, || async {
            let found = ids(c, &one("search", "exact:alias:bounded-1")).await;
            assert_eq!(found.len(), 1);
        })
        .await;
        let head = ops_of(s, || async {
            c.head(&format!("/api/v2/keys?{}", one("search", "bounded")))
                .await
                .expect(200);
        })
        .await;
        let by_alias = ops_of(s, || async {
            c.get("/api/v2/keys/bounded-2").await.expect(200);
        })
        .await;
        let wrap_by_alias = ops_of(s, || async {
            c.wrap(&format!("other-{round}"), &json!({}))
                .await
                .expect(200);
        })
        .await;
        let create = ops_of(s, || async {
            c.create(
                json!({"type": KEY_TYPE, "name": format!("made-{round}"), "extractable": false}),
            )
            .await
            .resource(201);
        })
        .await;
        let token = ops_of(s, || async {
            c.create_token(&json!({"maxAllowedRetrievals": 5}))
                .await
                .expect(200);
        })
        .await;
        let retrieve = ops_of(s, || async {
            c.get_token().await.expect(200);
        })
        .await;
        vec![
            search,
            head,
            by_alias,
            wrap_by_alias,
            create,
            token,
            retrieve,
        ]
    }

    let small = measure(&s, &c, 0).await;
    keys.extend(grow(c.clone(), 40, 3).await);
    assert_eq!(keys.len(), 43);
    let large = measure(&s, &c, 1).await;
    let names = [
        "search",
        "HEAD search",
        "get by alias",
        "wrap by alias",
        "create key",
        "create import token",
        "get import token",
    ];
    for ((name, a), b) in names.iter().zip(&small).zip(&large) {
        let total: u64 = b.values().sum();
        assert_eq!(a, b, "{name}: store calls grew with the number of keys");
        assert!(total <= 4, "{name}: {total} store calls: {b:?}");
    }
    // The search is one count (its search space) and one listing, which reads the candidates'
    // aliases itself: no call per key.
    assert_eq!(large[0].get("count_keys"), Some(&1), "{:?}", large[0]);
    assert_eq!(large[0].get("list_keys"), Some(&1), "{:?}", large[0]);
    assert_eq!(large[0].get("aliases_of"), None, "{:?}", large[0]);
    assert_eq!(large[0].get("aliases_of_keys"), None, "{:?}", large[0]);
}

//! The database going away, read-only, or without a synchronous standby, seen over HTTP with
//! the real binary on PostgreSQL (docs/postgres.md, "When the database goes away"): every
//! request gets 503 with `Retry-After` in good time (never a 500, a 401 or a hang), the
//! cause is logged with its SQLSTATE, `/metrics` counts it, and the node serves again once
//! the database does, without a restart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use keyward_testsupport::{key_envelope, pg_base, psql, Api, Db, Node, NodeOpts, KEY_TYPE};

/// Every answer during an outage must come within this (the store gives up acquiring a
/// connection after 3 s).
const ANSWER_WITHIN: Duration = Duration::from_secs(8);

/// A node on `url` (first start: its banner names a tenant); returns it and the tenant's
/// logged-in caller.
async fn node_on(dir: &std::path::Path, url: &str, extra: &[&str]) -> (Node, Api) {
    let mut node = Node::spawn_with(
        "failover",
        &NodeOpts {
            database_url: Some(url),
            ..NodeOpts::sqlite(dir)
        },
        extra,
    );
    node.wait_health(200).await;
    let (instance, apikey) = node.banner().expect("a first start prints a banner");
    let api = Api::login(&node.base, &apikey, &instance).await;
    (node, api)
}

/// POST /api/v2/keys, raw: (status, Retry-After, body).
async fn create_key(api: &Api, name: &str) -> (u16, Option<String>, Value) {
    let body = key_envelope(json!({"type": KEY_TYPE, "name": name, "extractable": false}));
    send(
        api,
        api.http
            .post(format!("{}/api/v2/keys", api.base))
            .json(&body),
    )
    .await
}

/// GET /api/v2/keys, raw.
async fn list_keys(api: &Api) -> (u16, Option<String>, Value) {
    send(api, api.http.get(format!("{}/api/v2/keys", api.base))).await
}

async fn send(api: &Api, rb: reqwest::RequestBuilder) -> (u16, Option<String>, Value) {
    let started = Instant::now();
    let r = rb
        .header("authorization", format!("Bearer {}", api.token))
        .header("bluemix-instance", &api.instance)
        .send()
        .await
        .unwrap();
    assert!(
        started.elapsed() < ANSWER_WITHIN,
        "the answer took {:?}",
        started.elapsed()
    );
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let body = r.json().await.unwrap_or(Value::Null);
    (status, retry, body)
}

/// The 503 of an unavailable store: `Retry-After` and the Key Protect error envelope.
fn assert_unavailable((status, retry, body): &(u16, Option<String>, Value)) {
    assert_eq!(*status, 503, "{body}");
    assert!(retry.is_some(), "a 503 says when to come back");
    assert_eq!(
        body["resources"][0]["reasons"][0]["code"], "SERVICE_UNAVAILABLE_ERR",
        "{body}"
    );
}

async fn metrics(node: &Node) -> String {
    keyward_testsupport::http()
        .get(format!("{}/metrics", node.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of one sample line of `/metrics` (0 when absent).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

fn terminate_backends(db: &Db, base: &str) {
    let name = db.url.rsplit('/').next().unwrap();
    psql(
        base,
        &format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        ),
    );
}

/// `--require-sync-replica` against a server without a synchronous standby: a key create is
/// refused with 503 (and logged and counted), a key list is 200; the same database without
/// the flag creates the key (201). Start-up warns that commits wait for no standby.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_synchronous_standby_writes_are_refused_only_when_required() {
    let Some(base) = pg_base("without_a_synchronous_standby_writes_are_refused_only_when_required")
    else {
        return;
    };
    let _serial = keyward_testsupport::SERIAL.lock().await;
    let db = Db::fresh(&base);
    let dir = tempfile::tempdir().unwrap();
    let (mut node, api) = node_on(dir.path(), &db.url, &["--require-sync-replica"]).await;
    assert!(
        node.log().contains("no synchronous standby attached"),
        "{}",
        node.log()
    );
    let refused = create_key(&api, "needs-a-standby").await;
    assert_unavailable(&refused);
    let (status, _, body) = list_keys(&api).await;
    assert_eq!(status, 200, "{body}");
    let m = metrics(&node).await;
    assert!(
        sample(&m, "keyward_store_unavailable_responses_total") >= 1.0,
        "{m}"
    );
    assert!(node.log().contains("synchronous standby"), "{}", node.log());
    node.kill();

    let mut plain = Node::spawn(
        "no-flag",
        &NodeOpts {
            database_url: Some(&db.url),
            ..NodeOpts::sqlite(dir.path())
        },
    );
    plain.wait_health(200).await;
    let api = api.on(&plain);
    let (status, _, body) = create_key(&api, "no-standby-needed").await;
    assert_eq!(status, 201, "{body}");
}

/// A database that turns read-only (what a standby behind a stale route, or a primary still
/// finishing its promotion, answers: SQLSTATE 25006): writes get 503 with `Retry-After`, not
/// 500; reads go on; the SQLSTATE is in the log and `/metrics` counts the read-only errors;
/// once the database takes writes again, so does the node, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_answers_503_and_the_node_recovers() {
    let Some(base) = pg_base("a_read_only_database_answers_503_and_the_node_recovers") else {
        return;
    };
    let _serial = keyward_testsupport::SERIAL.lock().await;
    let db = Db::fresh(&base);
    let name = db.url.rsplit('/').next().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let (node, api) = node_on(dir.path(), &db.url, &[]).await;
    let (status, _, body) = create_key(&api, "before").await;
    assert_eq!(status, 201, "{body}");

    psql(
        &base,
        &format!("ALTER DATABASE {name} SET default_transaction_read_only = on"),
    );
    terminate_backends(&db, &base);
    assert_unavailable(&create_key(&api, "during").await);
    let (status, _, body) = list_keys(&api).await;
    assert_eq!(status, 200, "{body}");
    assert!(node.log().contains(r#"sqlstate="25006""#), "{}", node.log());
    let m = metrics(&node).await;
    assert!(
        sample(&m, r#"keyward_database_errors_total{class="read_only"}"#) >= 1.0,
        "{m}"
    );

    psql(
        &base,
        &format!("ALTER DATABASE {name} RESET default_transaction_read_only"),
    );
    // Sessions opened while the database was read-only stay read-only: each one that meets a
    // write is dropped, so the node writes again after a few attempts at most.
    let mut created = false;
    for _ in 0..12 {
        let r = create_key(&api, "after").await;
        if r.0 == 201 {
            created = true;
            break;
        }
        assert_unavailable(&r);
    }
    assert!(created, "{}", node.log());
    let m = metrics(&node).await;
    assert!(
        sample(&m, "keyward_database_unwritable_seconds_total") > 0.0,
        "{m}"
    );
}

/// A TCP forwarder standing in for the path to the primary (HAProxy, or the primary itself):
/// killing it cuts every connection through it and refuses new ones.
struct Forwarder {
    port: u16,
    tasks: Arc<parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Forwarder {
    async fn start(port: u16, target: String) -> Forwarder {
        let l = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let port = l.local_addr().unwrap().port();
        let tasks: Arc<parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let t = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = l.accept().await {
                let target = target.clone();
                t.lock().push(tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                }));
            }
        });
        tasks.lock().push(accept);
        Forwarder { port, tasks }
    }

    fn kill(&self) {
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
    }
}

/// `host:port` of the test server's URL.
fn host_port(url: &str) -> String {
    let rest = url.split_once("://").unwrap().1;
    let authority = &rest[..rest.find('/').unwrap()];
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:5432")
    }
}

/// The database unreachable (every connection cut, new ones refused): every request, the
/// bearer-token check and the token exchange included, answers 503 with `Retry-After` in
/// good time; when the database is back the node serves again without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_answers_503_everywhere_and_the_node_recovers() {
    let Some(base) =
        pg_base("an_unreachable_database_answers_503_everywhere_and_the_node_recovers")
    else {
        return;
    };
    let _serial = keyward_testsupport::SERIAL.lock().await;
    let db = Db::fresh(&base);
    let fwd = Forwarder::start(0, host_port(&db.url)).await;
    let (prefix, rest) = db.url.split_once("://").unwrap();
    let user = rest
        .split_once('@')
        .map(|(u, _)| format!("{u}@"))
        .unwrap_or_default();
    let name = db.url.rsplit('/').next().unwrap();
    let via = format!("{prefix}://{user}127.0.0.1:{}/{name}", fwd.port);
    let dir = tempfile::tempdir().unwrap();
    let (node, api) = node_on(dir.path(), &via, &[]).await;
    let (status, _, body) = create_key(&api, "before").await;
    assert_eq!(status, 201, "{body}");

    fwd.kill();
    // Past the API-key cache (1 s): the bearer-token check itself asks the database.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_unavailable(&list_keys(&api).await);
    assert_unavailable(&create_key(&api, "during").await);
    let started = Instant::now();
    let r = api
        .http
        .post(format!("{}/identity/token", api.base))
        .form(&[
            ("grant_type", keyward_testsupport::APIKEY_GRANT),
            ("apikey", node.banner().unwrap().1.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert!(started.elapsed() < ANSWER_WITHIN);
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.headers().get("retry-after").is_some());
    let m = metrics(&node).await;
    assert!(
        sample(&m, r#"keyward_database_errors_total{class="connection"}"#) >= 1.0,
        "{m}"
    );
    assert!(
        sample(&m, "keyward_store_unavailable_responses_total") >= 3.0,
        "{m}"
    );

    // The database is back (on the same address): the node serves again.
    let _back = Forwarder::start(fwd.port, host_port(&db.url)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = create_key(&api, "after").await;
        if r.0 == 201 {
            break;
        }
        assert_unavailable(&r);
        assert!(Instant::now() < deadline, "{}", node.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, _, body) = list_keys(&api).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["resources"].as_array().unwrap().len() >= 2, "{body}");
}

/// A node on a multi-host URL (`h1,h2` with `target_session_attrs=read-write`) whose first
/// host dies: after a short burst of 503s it serves from the second host, without a restart,
/// and `/metrics` counts the failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_host_node_moves_to_the_next_host_when_the_first_dies() {
    let Some(base) = pg_base("a_multi_host_node_moves_to_the_next_host_when_the_first_dies") else {
        return;
    };
    let _serial = keyward_testsupport::SERIAL.lock().await;
    let db = Db::fresh(&base);
    let real = host_port(&db.url);
    let fwd = Forwarder::start(0, real.clone()).await;
    let (prefix, rest) = db.url.split_once("://").unwrap();
    let user = rest
        .split_once('@')
        .map(|(u, _)| format!("{u}@"))
        .unwrap_or_default();
    let name = db.url.rsplit('/').next().unwrap();
    let multi = format!(
        "{prefix}://{user}127.0.0.1:{},{real}/{name}?target_session_attrs=read-write",
        fwd.port
    );
    let dir = tempfile::tempdir().unwrap();
    let (node, api) = node_on(dir.path(), &multi, &[]).await;
    let (status, _, body) = create_key(&api, "before").await;
    assert_eq!(status, 201, "{body}");
    let failovers = sample(&metrics(&node).await, "keyward_database_failovers_total");

    fwd.kill();
    let killed = Instant::now();
    let mut refused = 0;
    loop {
        let r = create_key(&api, "after").await;
        if r.0 == 201 {
            break;
        }
        assert_unavailable(&r);
        refused += 1;
        assert!(killed.elapsed() < Duration::from_secs(20), "{}", node.log());
    }
    eprintln!(
        "multi-host failover: {refused} writes refused, serving again after {:?}",
        killed.elapsed()
    );
    let (status, _, body) = list_keys(&api).await;
    assert_eq!(status, 200, "{body}");
    let m = metrics(&node).await;
    assert!(
        sample(&m, "keyward_database_failovers_total") > failovers,
        "{m}"
    );
}

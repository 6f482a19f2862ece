//! Several stateless Keyward nodes on one PostgreSQL (docs/postgres.md): exact import-token retrievals
//! and single-winner rotations across nodes, a change on one node seen by another within the
//! cache bound, the scheduler rotating a due key once, nodes starting at once, a node with the
//! wrong master key refusing, PostgreSQL restarts losing nothing acknowledged, and the
//! SQLite → PostgreSQL migration.
//!
//! Needs `KEYWARD_TEST_DATABASE_URL` (e.g. postgres://postgres@127.0.0.1:5432/postgres) and
//! `psql`; each test creates its own database. The restart test also needs `pg_ctlcluster`
//! (cluster from `KEYWARD_TEST_PG_CLUSTER`, default "15 main") and restarts that server.
//! Without the URL every test prints a note and passes. The tests run one at a time.
//!
//! Run: `KEYWARD_TEST_DATABASE_URL=postgres://... cargo test -p keyward --test cluster`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bench;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward_store::Store;
use reqwest::Method;
use serde_json::json;

use keyward_testsupport::*;

/// The store on `db` (opened on the calling runtime), reading and writing authenticated rows
/// with the deployment's master key file.
async fn store_of(db: &Db, master_key_file: &Path) -> keyward_store::SqlStore {
    let settings = keyward::config::ServeArgs {
        database_url: Some(db.url.clone()),
        master_key_file: Some(master_key_file.to_path_buf()),
        ..Default::default()
    }
    .resolve()
    .unwrap();
    keyward::admin::open_store(&settings).await.unwrap()
}

/// Two nodes on one fresh database, sharing one master key file; `a` and `b` are the same
/// Manager (from node A's first-start banner) talking to node A and node B.
struct Cluster {
    na: Node,
    nb: Node,
    a: Api,
    b: Api,
}

impl Cluster {
    async fn start(db: &Db, dir: &Path, pool: usize, scheduler: u64) -> Cluster {
        let key = dir.join("master.key");
        let opts = |sub: &str| (dir.join(sub), key.clone());
        let (da, ka) = opts("a");
        let mut na = Node::spawn(
            "a",
            &NodeOpts {
                database_url: Some(&db.url),
                data_dir: &da,
                master_key_file: Some(&ka),
                token_pool_size: pool,
                scheduler_interval: scheduler,
            },
        );
        na.wait_health(200).await;
        let (inst, apikey) = na.banner().expect("node A prints the first-start banner");
        let (db_b, kb) = opts("b");
        let mut nb = Node::spawn(
            "b",
            &NodeOpts {
                database_url: Some(&db.url),
                data_dir: &db_b,
                master_key_file: Some(&kb),
                token_pool_size: pool,
                scheduler_interval: scheduler,
            },
        );
        nb.wait_health(200).await;
        assert!(
            nb.banner().is_none(),
            "node B must not bootstrap a second deployment"
        );
        let a = Api::login(&na.base, &apikey, &inst).await;
        let b = a.on(&nb);
        Cluster { na, nb, a, b }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_token_retrievals_are_exact_across_nodes() {
    let Some(base) = pg_base("import_token_retrievals_are_exact_across_nodes") else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let db = Db::fresh(&base);
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(&db, dir.path(), 2, 0).await;

    c.a.call(
        Method::POST,
        "/api/v2/import_token",
        Some(&json!({"expiration": 600, "maxAllowedRetrievals": 50})),
    )
    .await
    .expect(200);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let api = if i % 2 == 0 { c.a.clone() } else { c.b.clone() };
        tasks.push(tokio::spawn(async move {
            (
                i % 2,
                api.call(Method::GET, "/api/v2/import_token", None).await,
            )
        }));
    }
    let mut ok_per_node = [0usize; 2];
    let mut payloads = BTreeSet::new();
    let mut refusals = BTreeMap::new();
    for t in tasks {
        let (node, r) = t.await.unwrap();
        if r.status == 200 {
            ok_per_node[node] += 1;
            payloads.insert(r.body["payload"].as_str().unwrap().to_string());
        } else {
            assert!(r.status < 500, "5xx: {}", r.text);
            *refusals.entry((r.status, r.error_code())).or_insert(0) += 1;
        }
    }
    eprintln!(
        "successful retrievals per node: A {} B {}; refusals {refusals:?}",
        ok_per_node[0], ok_per_node[1]
    );
    assert_eq!(
        ok_per_node[0] + ok_per_node[1],
        50,
        "exactly maxAllowedRetrievals succeed"
    );
    assert_eq!(payloads.len(), 1, "every retrieval returned the same token");
    assert_eq!(
        refusals.into_iter().collect::<Vec<_>>(),
        vec![(
            (409, "IMPORT_TOKEN_RETRIEVALS_EXHAUSTED_ERR".to_string()),
            150
        )]
    );
    let store = store_of(&db, &dir.path().join("master.key")).await;
    let token = store.get_token(c.a.instance_id()).await.unwrap().unwrap();
    assert_eq!((token.remaining, token.max_retrievals), (0, 50));
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_rotations_on_two_nodes_have_one_winner() {
    let Some(base) = pg_base("racing_rotations_on_two_nodes_have_one_winner") else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let db = Db::fresh(&base);
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(&db, dir.path(), 0, 0).await;
    let store = store_of(&db, &dir.path().join("master.key")).await;
    for round in 0..8 {
        let id = c.a.root_key(&format!("race-{round}")).await;
        // Both nodes know the key (and have it cached) before the race.
        let ct = c.b.wrap_ok(&id, b"before").await;
        c.a.wrap_ok(&id, b"before").await;
        let (ra, rb) = tokio::join!(c.a.action(&id, "rotate"), c.b.action(&id, "rotate"));
        let statuses = [ra.status, rb.status];
        assert_eq!(
            statuses.iter().filter(|s| **s == 204).count(),
            1,
            "round {round}: exactly one rotation wins: A {} B {}",
            ra.text,
            rb.text
        );
        let loser = if ra.status == 204 { &rb } else { &ra };
        assert_eq!(loser.status, 409, "{}", loser.text);
        let code = loser.error_code();
        assert!(
            code == "KEY_ROTATION_NOT_PERMITTED" || code == "KEY_ACTION_INVALID_STATE_ERR",
            "{code}"
        );
        let versions = store
            .versions(c.a.instance_id(), key_id(&id))
            .await
            .unwrap();
        assert_eq!(versions.len(), 2, "round {round}: one new version");
        // Both nodes still unwrap the old ciphertext and wrap under the new version.
        assert_eq!(c.a.unwrap_ok(&id, &ct).await, b"before");
        assert_eq!(c.b.unwrap_ok(&id, &ct).await, b"before");
    }
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_disabled_on_one_node_is_refused_by_the_other_within_a_second() {
    let Some(base) = pg_base("a_key_disabled_on_one_node_is_refused_by_the_other_within_a_second")
    else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let db = Db::fresh(&base);
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(&db, dir.path(), 0, 0).await;
    const BOUND: Duration = Duration::from_secs(1);
    const POLL: Duration = Duration::from_millis(20);

    for round in 0..4 {
        // Alternate directions: disabled on A and checked on B, then the other way round.
        let (writer, reader) = if round % 2 == 0 {
            (&c.a, &c.b)
        } else {
            (&c.b, &c.a)
        };
        let id = writer.root_key(&format!("disable-{round}")).await;
        // The reader has the key cached (loaded just now).
        reader.wrap_ok(&id, b"x").await;
        let sent = Instant::now();
        writer.action(&id, "disable").await.expect(204);
        let mut first_refusal = None;
        // Poll the reader until half a second past the bound: every wrap that starts at least
        // the bound after the disable was sent must be refused.
        loop {
            let started = sent.elapsed();
            let r = reader.wrap(&id, b"x").await;
            match r.status {
                200 => assert!(
                    started < BOUND,
                    "round {round}: the other node still wrapped with the disabled key {started:?} after the disable was sent"
                ),
                _ => {
                    assert_eq!(r.error_code(), "KEY_ACTION_INVALID_STATE_ERR", "{}", r.text);
                    first_refusal.get_or_insert(started);
                }
            }
            if started > BOUND + Duration::from_millis(500) {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        let first = first_refusal.expect("the other node never refused");
        eprintln!("round {round}: the other node refused the disabled key {first:?} after the disable was sent");
        // (The first refusal itself comes at most one poll interval plus one request later.)
        assert!(
            first <= BOUND + Duration::from_millis(250),
            "round {round}: first refusal after {first:?}"
        );
    }
}

/// Runs `keyward admin --database-url URL --output json ARGS... --master-key-file KEY` (the
/// path an operator uses; API keys are authenticated rows, so the command needs the master key).
fn admin_json(db: &Db, key: &Path, args: &[&str]) -> serde_json::Value {
    let out = keyward()
        .args(["admin", "--database-url", &db.url, "--output", "json"])
        .args(args)
        .arg("--master-key-file")
        .arg(key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "admin {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Deleting an API key (through `keyward admin apikey delete`) revokes the access tokens minted
/// from it on every node within the API-key cache bound (1 s): every request that starts at
/// least the bound after the deletion committed is refused with 401, on both nodes. Another API
/// key of the same principal keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_api_key_token_stops_on_both_nodes() {
    let Some(base) = pg_base("deleted_api_key_token_stops_on_both_nodes") else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let db = Db::fresh(&base);
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(&db, dir.path(), 0, 0).await;
    const BOUND: Duration = Duration::from_secs(1);
    const POLL: Duration = Duration::from_millis(20);

    let id = c.a.root_key("revocation").await;
    // Two API keys of one new Writer principal, made through the admin CLI.
    let k1 = admin_json(
        &db,
        &dir.path().join("master.key"),
        &[
            "apikey",
            "create",
            "--instance",
            &c.a.instance,
            "--role",
            "Writer",
        ],
    );
    let iam = k1["iam_id"].as_str().unwrap();
    let k2 = admin_json(
        &db,
        &dir.path().join("master.key"),
        &[
            "apikey",
            "create",
            "--instance",
            &c.a.instance,
            "--role",
            "Writer",
            "--iam-id",
            iam,
        ],
    );
    let doomed_a = Api::login(&c.na.base, k1["apikey"].as_str().unwrap(), &c.a.instance).await;
    let doomed_b = doomed_a.on(&c.nb);
    let kept_a = Api::login(&c.na.base, k2["apikey"].as_str().unwrap(), &c.a.instance).await;
    let kept_b = kept_a.on(&c.nb);
    // The token works on both nodes (and each node has cached that its key exists).
    for api in [&doomed_a, &doomed_b, &kept_a, &kept_b] {
        api.wrap_ok(&id, b"x").await;
    }

    admin_json(
        &db,
        &dir.path().join("master.key"),
        &["apikey", "delete", k1["id"].as_str().unwrap()],
    );
    let deleted = Instant::now();
    let mut first_refusal = [None, None];
    loop {
        let started = deleted.elapsed();
        for (n, api) in [&doomed_a, &doomed_b].into_iter().enumerate() {
            let r = api.wrap(&id, b"x").await;
            match r.status {
                200 => assert!(
                    started < BOUND,
                    "node {n}: a token of the deleted API key still worked {started:?} after the deletion"
                ),
                // 401; or, once refusals from this address passed the failed-login limit,
                // 429 (still a refusal).
                429 if first_refusal[n].is_some() => {
                    assert_eq!(r.error_code(), "TOO_MANY_REQUESTS_ERR");
                }
                _ => {
                    assert_eq!(r.status, 401, "{}", r.text);
                    assert_eq!(r.error_code(), "UNAUTHORIZED_ERR");
                    first_refusal[n].get_or_insert(started);
                }
            }
        }
        if started > BOUND + Duration::from_millis(500) {
            break;
        }
        let both = first_refusal.iter().all(Option::is_some);
        tokio::time::sleep(if both { POLL * 5 } else { POLL }).await;
    }
    eprintln!("tokens of the deleted API key refused after {first_refusal:?} (nodes A, B)");
    assert!(
        first_refusal.iter().all(Option::is_some),
        "a node never refused: {first_refusal:?}"
    );
    // The same principal's other API key is untouched, on both nodes; the deleted key cannot
    // mint a new token.
    for api in [&kept_a, &kept_b] {
        api.wrap_ok(&id, b"x").await;
    }
    let r = http()
        .post(format!("{}/identity/token", c.nb.base))
        .form(&[
            ("grant_type", APIKEY_GRANT),
            ("apikey", k1["apikey"].as_str().unwrap()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_rotates_a_due_key_once_with_two_nodes() {
    let Some(base) = pg_base("the_scheduler_rotates_a_due_key_once_with_two_nodes") else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let db = Db::fresh(&base);
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(&db, dir.path(), 0, 1).await;
    let store = store_of(&db, &dir.path().join("master.key")).await;
    let inst = c.a.instance_id();

    let mut ids = Vec::new();
    for i in 0..5 {
        let id = c.a.root_key(&format!("scheduled-{i}")).await;
        c.a.put_rotation_policy(&id, 1).await.expect(200);
        ids.push(id);
    }
    let not_due = c.a.root_key("not-due").await;
    c.a.put_rotation_policy(&not_due, 1).await.expect(200);
    // Make the five keys due now: the policy's first rotation is a month away.
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for id in &ids {
        let mut row = store.get_key(inst, key_id(id)).await.unwrap().unwrap();
        assert!(row.next_rotation_at.unwrap() > now + 27 * 86_400);
        row.next_rotation_at = Some(now - 5);
        store.update_key(&row).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut done = 0;
        for id in &ids {
            if store.versions(inst, key_id(id)).await.unwrap().len() >= 2 {
                done += 1;
            }
        }
        if done == ids.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the scheduler rotated only {done} of {} due keys",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let both schedulers run a few more passes: nothing rotates twice.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for id in &ids {
        let versions = store.versions(inst, key_id(id)).await.unwrap();
        assert_eq!(
            versions.len(),
            2,
            "key {id} rotated {} times",
            versions.len() - 1
        );
        let row = store.get_key(inst, key_id(id)).await.unwrap().unwrap();
        assert!(
            row.next_rotation_at.unwrap() > now + 27 * 86_400,
            "next rotation a month away"
        );
        assert!(row.last_rotate_date.is_some());
    }
    assert_eq!(
        store.versions(inst, key_id(&not_due)).await.unwrap().len(),
        1
    );
    let passes = |n: &Node| n.log().matches("scheduler pass").count();
    eprintln!(
        "scheduler passes that rotated something: node A {}, node B {}",
        passes(&c.na),
        passes(&c.nb)
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_at_once_share_one_schema() {
    let Some(base) = pg_base("nodes_starting_at_once_share_one_schema") else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let db = Db::fresh(&base);
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("master.key");
    // Several nodes starting at once need the master key file prepared beforehand (two nodes
    // must not both create it).
    write_master_key(&key);
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| {
            Node::spawn(
                &format!("n{i}"),
                &NodeOpts {
                    database_url: Some(&db.url),
                    data_dir: &dir.path().join(format!("n{i}")),
                    master_key_file: Some(&key),
                    token_pool_size: 0,
                    scheduler_interval: 0,
                },
            )
        })
        .collect();
    for n in &mut nodes {
        n.wait_health(200).await;
    }
    assert_eq!(
        db.query("SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_migrations"),
        "1,2,3,4,5,6,7,8,9"
    );
    let banners: Vec<_> = nodes.iter().filter_map(Node::banner).collect();
    let instances: i64 = db.query("SELECT COUNT(*) FROM instances").parse().unwrap();
    eprintln!(
        "{} node(s) bootstrapped; instances: {instances}",
        banners.len()
    );
    assert!(!banners.is_empty());
    // Every node serves every banner's credentials (tokens and keys are shared).
    for (inst, apikey) in &banners {
        let api = Api::login(&nodes[0].base, apikey, inst).await;
        let id = api.root_key("started-at-once").await;
        for n in &nodes {
            let ct = api.on(n).wrap_ok(&id, b"hello").await;
            assert_eq!(api.on(&nodes[0]).unwrap_ok(&id, &ct).await, b"hello");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_master_key_starts_sealed() {
    let Some(base) = pg_base("a_node_with_another_master_key_starts_sealed") else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let db = Db::fresh(&base);
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(&db, dir.path(), 0, 0).await;
    let id = c.a.root_key("sealed-check").await;
    let ct = c.a.wrap_ok(&id, b"secret").await;

    let other = dir.path().join("other.key");
    write_master_key(&other);
    let mut nc = Node::spawn(
        "c",
        &NodeOpts {
            database_url: Some(&db.url),
            data_dir: &dir.path().join("c"),
            master_key_file: Some(&other),
            token_pool_size: 0,
            scheduler_interval: 0,
        },
    );
    let health = nc.wait_health(503).await;
    // The public listener does not say why; the log does.
    assert_eq!(health, json!({"status": "sealed"}));
    assert!(nc.log().contains("does not match"), "{}", nc.log());
    let c_api = c.a.on(&nc);
    for r in [
        c_api.call(Method::GET, "/api/v2/keys", None).await,
        c_api
            .call(
                Method::POST,
                &format!("/api/v2/keys/{id}/actions/unwrap"),
                Some(&json!({"ciphertext": ct})),
            )
            .await,
        c_api.wrap(&id, b"x").await,
    ] {
        assert_eq!(r.status, 503, "{}", r.text);
        assert_eq!(r.error_code(), "SERVICE_UNAVAILABLE_ERR");
    }
    assert!(nc.alive(), "a sealed node keeps running and says why");
    assert!(nc.log().contains("SEALED"));
    // The good nodes are unaffected.
    assert_eq!(c.b.unwrap_ok(&id, &ct).await, b"secret");
}

/// One request of the load loop.
#[derive(Debug)]
struct Sample {
    at: Duration,
    took: Duration,
    what: &'static str,
    status: Result<u16, String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarts_lose_nothing_acknowledged() {
    let Some(base) = pg_base("postgres_restarts_lose_nothing_acknowledged") else {
        return;
    };
    if std::process::Command::new("pg_ctlcluster")
        .arg("--help")
        .output()
        .is_err()
    {
        services::missing(
            "postgres_restarts_lose_nothing_acknowledged",
            "pg_ctlcluster",
            "install postgresql-common",
        );
        return;
    }
    let _serial = SERIAL.lock().await;
    assert!(pg_running(), "PostgreSQL must run before the test");
    let db = Db::fresh(&base);
    // Declared after the database, so it is dropped first: PostgreSQL runs again before the
    // test database is dropped.
    let _pg = PgGuard;
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(&db, dir.path(), 0, 0).await;
    let pid = c.na.pid();
    let anchor = c.a.root_key("anchor").await;

    let t0 = Instant::now();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let created = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let wrapped = Arc::new(std::sync::Mutex::new(
        Vec::<(String, String, Vec<u8>)>::new(),
    ));
    let samples = Arc::new(std::sync::Mutex::new(Vec::<Sample>::new()));
    let load = {
        let (api, stop, created, wrapped, samples) = (
            c.a.clone(),
            stop.clone(),
            created.clone(),
            wrapped.clone(),
            samples.clone(),
        );
        let anchor = anchor.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                n += 1;
                let at = t0.elapsed();
                let r = api.try_call(
                    Method::POST,
                    "/api/v2/keys",
                    Some(&key_envelope(json!({"type": KEY_TYPE, "name": format!("load-{n}"), "extractable": false}))),
                )
                .await;
                let status = match &r {
                    Ok(r) => {
                        if r.status == 201 {
                            created
                                .lock()
                                .unwrap()
                                .push(r.body["resources"][0]["id"].as_str().unwrap().to_string());
                        } else if r.status == 503 {
                            assert_eq!(r.error_code(), "SERVICE_UNAVAILABLE_ERR");
                        }
                        Ok(r.status)
                    }
                    Err(e) => Err(e.to_string()),
                };
                samples.lock().unwrap().push(Sample {
                    at,
                    took: t0.elapsed() - at,
                    what: "create",
                    status,
                });
                // Wrap with the newest key created (the anchor before any).
                let key = created
                    .lock()
                    .unwrap()
                    .last()
                    .cloned()
                    .unwrap_or_else(|| anchor.clone());
                let plaintext = keyward_crypto::random_bytes(32).unwrap();
                let at = t0.elapsed();
                let r = api
                    .try_call(
                        Method::POST,
                        &format!("/api/v2/keys/{key}/actions/wrap"),
                        Some(&json!({"plaintext": base64_encode(&plaintext)})),
                    )
                    .await;
                let status = match &r {
                    Ok(r) => {
                        if r.status == 200 {
                            wrapped.lock().unwrap().push((
                                key.clone(),
                                r.body["ciphertext"].as_str().unwrap().to_string(),
                                plaintext,
                            ));
                        } else if r.status == 503 {
                            assert_eq!(r.error_code(), "SERVICE_UNAVAILABLE_ERR");
                        }
                        Ok(r.status)
                    }
                    Err(e) => Err(e.to_string()),
                };
                samples.lock().unwrap().push(Sample {
                    at,
                    took: t0.elapsed() - at,
                    what: "wrap",
                    status,
                });
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    // Two restarts, then an outage long enough that every request in it needs the database:
    // stopped for 4 s, then started.
    // Three more clients list keys (a database read on every call) to sample the outages.
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (api, stop, samples) = (c.a.clone(), stop.clone(), samples.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let at = t0.elapsed();
                    let r = api
                        .try_call(Method::GET, "/api/v2/keys?limit=1", None)
                        .await;
                    let status = match &r {
                        Ok(r) => {
                            if r.status == 503 {
                                assert_eq!(r.error_code(), "SERVICE_UNAVAILABLE_ERR");
                            }
                            Ok(r.status)
                        }
                        Err(e) => Err(e.to_string()),
                    };
                    samples.lock().unwrap().push(Sample {
                        at,
                        took: t0.elapsed() - at,
                        what: "list",
                        status,
                    });
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        })
        .collect();
    let mut outages = Vec::new();
    for phase in [
        "restart -m fast",
        "restart -m immediate",
        "stop -m fast; 4 s; start",
    ] {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let begin = t0.elapsed();
        let mut down = None;
        let run = |args: &'static [&'static str]| async move {
            let out = tokio::task::spawn_blocking(move || pg_ctlcluster(args))
                .await
                .unwrap();
            assert!(
                out.status.success(),
                "pg_ctlcluster {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        match phase {
            "restart -m fast" => run(&["restart", "-m", "fast"]).await,
            "restart -m immediate" => run(&["restart", "-m", "immediate"]).await,
            _ => {
                run(&["stop", "-m", "fast"]).await;
                let stopped = t0.elapsed();
                tokio::time::sleep(Duration::from_secs(4)).await;
                down = Some((stopped, t0.elapsed()));
                run(&["start"]).await;
            }
        }
        let back = t0.elapsed();
        // The node serves 2xx again within 10 s of the database returning.
        let deadline = Instant::now() + Duration::from_secs(10);
        let recovered = loop {
            let ok = samples
                .lock()
                .unwrap()
                .iter()
                .find(|s| s.at >= back && matches!(s.status, Ok(200) | Ok(201)))
                .map(|s| s.at + s.took);
            if let Some(t) = ok {
                break t;
            }
            assert!(
                Instant::now() < deadline,
                "{phase}: no 2xx within 10 s after PostgreSQL returned:\n{}",
                c.na.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        eprintln!(
            "{phase}: PostgreSQL unavailable for up to {:?}; first 2xx {:?} after it was back",
            back - begin,
            recovered.saturating_sub(back)
        );
        if let Some((from, to)) = down {
            // While the database was certainly down, requests were answered 503 (wraps may
            // still succeed from the one-second caches); a request that ended while it was
            // down cannot have succeeded through the database.
            let window: Vec<(Duration, Duration, &'static str, Result<u16, String>)> = samples
                .lock()
                .unwrap()
                .iter()
                .filter(|x| x.at + x.took >= from && x.at + x.took < to)
                .map(|x| (x.at, x.took, x.what, x.status.clone()))
                .collect();
            let unavailable = window.iter().filter(|x| x.3 == Ok(503)).count();
            assert!(
                unavailable > 0,
                "no request was answered 503 while PostgreSQL was stopped: {window:?}"
            );
            for (at, _, what, status) in &window {
                if *what != "wrap" {
                    assert_eq!(
                        *status,
                        Ok(503),
                        "{what} at {at:?} while PostgreSQL was stopped"
                    );
                }
            }
            eprintln!(
                "{phase}: {} requests ended while stopped, {unavailable} answered 503",
                window.len()
            );
        }
        outages.push((phase, begin, back, recovered));
        assert!(c.na.alive(), "the node (pid {pid}) died during `{phase}`");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    load.await.unwrap();
    for r in readers {
        r.await.unwrap();
    }
    assert!(c.na.alive(), "the node (pid {pid}) must stay up");
    assert_eq!(c.na.pid(), pid);

    let samples = std::mem::take(&mut *samples.lock().unwrap());
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    let mut slowest = Duration::ZERO;
    for s in &samples {
        let key = match &s.status {
            Ok(code) => format!("{} {code}", s.what),
            Err(e) => format!("{} transport error {e}", s.what),
        };
        *by_status.entry(key).or_default() += 1;
        slowest = slowest.max(s.took);
        // Every answer is a success or a clean 503; none takes more than 5 s.
        match s.status {
            Ok(200) | Ok(201) | Ok(503) => {}
            ref other => panic!("{} at {:?}: {other:?}\n{}", s.what, s.at, c.na.log()),
        }
        assert!(
            s.took <= Duration::from_secs(5),
            "{} at {:?} took {:?}",
            s.what,
            s.at,
            s.took
        );
    }
    eprintln!(
        "{} requests, slowest {slowest:?}: {by_status:?}",
        samples.len()
    );
    for (phase, begin, back, _) in &outages {
        let during: Vec<_> = samples
            .iter()
            .filter(|s| s.at >= *begin && s.at < *back)
            .collect();
        let unavailable = during.iter().filter(|s| s.status == Ok(503)).count();
        eprintln!(
            "{phase}: {} requests during the outage, {unavailable} answered 503",
            during.len()
        );
    }
    assert!(
        by_status.keys().any(|k| k.ends_with(" 503")),
        "no request met the outage: {by_status:?}"
    );

    // Everything acknowledged is durable: keys exist, ciphertexts unwrap.
    let created = created.lock().unwrap().clone();
    let wrapped = wrapped.lock().unwrap().clone();
    eprintln!(
        "checking {} created keys and {} ciphertexts",
        created.len(),
        wrapped.len()
    );
    let store = store_of(&db, &dir.path().join("master.key")).await;
    let inst = c.a.instance_id();
    for id in &created {
        assert!(
            store.get_key(inst, key_id(id)).await.unwrap().is_some(),
            "acknowledged key {id} lost"
        );
    }
    for (i, (key, ct, pt)) in wrapped.iter().enumerate() {
        let api = if i % 2 == 0 { &c.a } else { &c.b };
        assert_eq!(
            &api.unwrap_ok(key, ct).await,
            pt,
            "ciphertext {i} no longer unwraps"
        );
    }
    store.close().await;
    // Node B, idle during the restarts, recovered by itself too.
    c.b.wrap_ok(&anchor, b"after").await;
    assert!(c.nb.alive());
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_deployment_migrates_to_postgres() {
    let Some(base) = pg_base("a_sqlite_deployment_migrates_to_postgres") else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let db = Db::fresh(&base);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("single");
    let key = dir.path().join("master.key");

    // A single node on SQLite, with keys (one rotated), ciphertexts, an import token, an
    // imported key, key and instance policies, and an alias.
    let mut single = Node::spawn(
        "single",
        &NodeOpts {
            database_url: None,
            data_dir: &data,
            master_key_file: Some(&key),
            token_pool_size: 2,
            scheduler_interval: 0,
        },
    );
    single.wait_health(200).await;
    let (inst, apikey) = single.banner().unwrap();
    let s = Api::login(&single.base, &apikey, &inst).await;
    let rotated = s.root_key("rotated").await;
    let plain = s.root_key("plain").await;
    let mut cts = Vec::new();
    for (i, id) in [&rotated, &plain, &rotated].into_iter().enumerate() {
        let pt = format!("secret-{i}").into_bytes();
        cts.push((id.clone(), s.wrap_ok(id, &pt).await, pt));
    }
    s.action(&rotated, "rotate").await.expect(204);
    let pt = b"after-rotation".to_vec();
    cts.push((rotated.clone(), s.wrap_ok(&rotated, &pt).await, pt));
    let imported = s
        .call(
            Method::POST,
            "/api/v2/keys",
            Some(&key_envelope(json!({
                "type": KEY_TYPE, "name": "imported", "extractable": false,
                "payload": base64_encode(&[7u8; 32]),
            }))),
        )
        .await;
    let imported = imported.expect(201)["resources"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let pt = b"imported".to_vec();
    cts.push((imported.clone(), s.wrap_ok(&imported, &pt).await, pt));
    s.put_rotation_policy(&plain, 3).await.expect(200);
    s.call(
        Method::PUT,
        "/api/v2/instance/policies?policy=metrics",
        Some(&json!({
            "metadata": {"collectionType": POLICY_TYPE, "collectionTotal": 1},
            "resources": [{"policy_type": "metrics", "policy_data": {"enabled": true}}],
        })),
    )
    .await
    .expect(204);
    s.call(
        Method::POST,
        &format!("/api/v2/keys/{plain}/aliases/plain-alias"),
        None,
    )
    .await
    .expect(201);
    s.call(
        Method::POST,
        "/api/v2/import_token",
        Some(&json!({"expiration": 3600, "maxAllowedRetrievals": 5})),
    )
    .await
    .expect(200);
    let token_before = s.call(Method::GET, "/api/v2/import_token", None).await;
    token_before.expect(200);
    single.terminate();

    // Copy it into PostgreSQL.
    let db_file = data.join("keyward.db");
    let migrate = |to: &str| {
        keyward()
            .args(["admin", "--output", "json", "migrate", "--from"])
            .arg(format!("sqlite:{}", db_file.display()))
            .args(["--to", to])
            .output()
            .unwrap()
    };
    let out = migrate(&db.url);
    assert!(
        out.status.success(),
        "migrate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("migrate: {report}");
    assert!(report["rows"].as_u64().unwrap() > 10, "{report}");
    assert_eq!(report["tables"]["keys"], 3, "{report}");
    assert_eq!(report["tables"]["key_versions"], 4, "{report}");
    assert_eq!(report["tables"]["import_tokens"], 1, "{report}");
    // Again: refused, the target is no longer empty; nothing changes.
    let again = migrate(&db.url);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("not empty"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(db.query("SELECT COUNT(*) FROM keys"), "3");
    // The sealed material is byte for byte the same.
    let sqlite_versions = {
        let settings = keyward::config::ServeArgs {
            database_url: Some(format!("sqlite://{}", db_file.display())),
            master_key_file: Some(key.clone()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        let src = keyward::admin::open_store(&settings).await.unwrap();
        let v = src
            .versions(s.instance_id(), key_id(&rotated))
            .await
            .unwrap();
        src.close().await;
        v
    };
    let pg = store_of(&db, &dir.path().join("master.key")).await;
    assert_eq!(
        pg.versions(s.instance_id(), key_id(&rotated))
            .await
            .unwrap(),
        sqlite_versions
    );
    pg.close().await;

    // Two nodes on PostgreSQL with the same master key file serve the old deployment.
    let mut nodes = Vec::new();
    for name in ["pg-a", "pg-b"] {
        let mut n = Node::spawn(
            name,
            &NodeOpts {
                database_url: Some(&db.url),
                data_dir: &dir.path().join(name),
                master_key_file: Some(&key),
                token_pool_size: 0,
                scheduler_interval: 0,
            },
        );
        n.wait_health(200).await;
        assert!(
            n.banner().is_none(),
            "the migrated deployment must not be bootstrapped again"
        );
        nodes.push(n);
    }
    let p = Api::login(&nodes[0].base, &apikey, &inst).await;
    for (i, (id, ct, pt)) in cts.iter().enumerate() {
        let api = p.on(&nodes[i % 2]);
        assert_eq!(
            &api.unwrap_ok(id, ct).await,
            pt,
            "ciphertext {i} under key {id}"
        );
    }
    // A bearer token the single node issued still works: the signing secret was copied.
    let (id, ct, pt) = &cts[0];
    assert_eq!(&s.on(&nodes[1]).unwrap_ok(id, ct).await, pt);
    let token_after = p.call(Method::GET, "/api/v2/import_token", None).await;
    let token_after = token_after.expect(200);
    assert_eq!(token_after["payload"], token_before.body["payload"]);
    assert_eq!(token_after["nonce"], token_before.body["nonce"]);
    assert_eq!(token_after["remainingRetrievals"], 3, "{token_after}");
    let pol = p
        .call(
            Method::GET,
            &format!("/api/v2/keys/{plain}/policies?policy=rotation"),
            None,
        )
        .await;
    assert_eq!(
        pol.expect(200)["resources"][0]["rotation"]["interval_month"],
        3
    );
    let ipol = p
        .call(
            Method::GET,
            "/api/v2/instance/policies?policy=metrics",
            None,
        )
        .await;
    assert_eq!(
        ipol.expect(200)["resources"][0]["policy_data"]["enabled"],
        true
    );
    let by_alias = p.call(Method::GET, "/api/v2/keys/plain-alias", None).await;
    assert_eq!(by_alias.expect(200)["resources"][0]["id"], plain.as_str());
    // The PostgreSQL deployment keeps working: a new key, and a rotation of a copied one.
    let fresh = p.root_key("after-migration").await;
    let ct = p.on(&nodes[1]).wrap_ok(&fresh, b"new").await;
    assert_eq!(p.unwrap_ok(&fresh, &ct).await, b"new");
    p.action(&plain, "rotate").await.expect(204);
    let (id, ct, pt) = &cts[1];
    assert_eq!(&p.on(&nodes[1]).unwrap_ok(id, ct).await, pt);
}

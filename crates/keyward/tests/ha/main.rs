//! Keyward on a highly available PostgreSQL (docs/high-availability.md): `scripts/ha-stack`
//! runs etcd, three PostgreSQL under Patroni in synchronous mode and HAProxy in front of the
//! primary; two real `keyward serve` nodes take a mixed load while the primary's postmaster is
//! killed (`kill -9`) or switched over, and afterwards everything the clients saw acknowledged
//! must be there. A third test checks `--require-sync-replica` with both standbys stopped.
//!
//! Each test starts its own stack in a temporary directory and stops it at the end, pass or
//! fail; the tests run one at a time. They need root (the stack runs PostgreSQL as user
//! postgres) and Debian's patroni, etcd-server and haproxy: without them every test prints a
//! note and passes, unless `KEYWARD_REQUIRE_SERVICES=1`, which makes that a failure.
//!
//! Run: `KEYWARD_REQUIRE_SERVICES=1 cargo test -p keyward --test ha`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod load;
mod stack;

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use keyward_testsupport::*;
use load::{client_for, gaps, send, verify, Load, Outcome};
use stack::Stack;

/// How long the load runs before the primary goes away.
const WARMUP: Duration = Duration::from_secs(6);
/// How long a node may take to serve again after the new primary is promoted.
const RECOVERY_BOUND: Duration = Duration::from_secs(30);

/// Keyward nodes on the stack: node n uses `urls[n]`; all share one master key file. `apis[n]`
/// is the first-start Manager talking to node n with the load's client deadline.
struct Deployment {
    // Before the directory: a dropped node prints its log (kept in the directory) on failure.
    nodes: Vec<Node>,
    apis: Vec<Api>,
    _dir: tempfile::TempDir,
}

async fn deploy(urls: &[String], extra: &[&str]) -> Deployment {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("master.key");
    let mut nodes = Vec::new();
    for (n, url) in urls.iter().enumerate() {
        let data = dir.path().join(format!("node{n}"));
        let mut node = Node::spawn_with(
            &format!("node{n}"),
            &NodeOpts {
                database_url: Some(url),
                data_dir: &data,
                master_key_file: Some(&key),
                token_pool_size: 2,
                scheduler_interval: 0,
            },
            extra,
        );
        node.wait_health(200).await;
        nodes.push(node);
    }
    let (inst, apikey) = nodes[0].banner().expect("the first node bootstraps");
    let first = Api::login(&nodes[0].base, &apikey, &inst).await;
    let apis = nodes.iter().map(|n| client_for(&first, &n.base)).collect();
    Deployment {
        nodes,
        apis,
        _dir: dir,
    }
}

/// Runs the load on both nodes, applies `disrupt` (which returns when the new primary was
/// promoted), keeps the load on until every node has served again for 3 s, then checks that no
/// request failed (500, other 5xx, unexpected 4xx, timeout), that every node came back within
/// `bound` of the promotion without a restart, and that nothing acknowledged is lost. Returns the
/// per-node gaps.
async fn survive<F, Fut>(stack: &Stack, d: &mut Deployment, bound: Duration, disrupt: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Instant>,
{
    let pids: Vec<u32> = d.nodes.iter().map(Node::pid).collect();
    let load = Load::start(&d.apis, 2);
    tokio::time::sleep(WARMUP).await;
    let before = Instant::now();
    let promoted = disrupt().await;
    eprintln!(
        "new primary promoted {:.1?} after the disruption",
        promoted - before
    );
    let give_up = promoted + bound.max(load::CLIENT_TIMEOUT) + Duration::from_secs(10);
    let mut next_note = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let g = gaps(&load.ledger.lock().events, d.nodes.len(), before);
        if Instant::now() >= next_note {
            // Progress, for a run that does not settle: answers per node in the last second.
            let l = load.ledger.lock();
            let recent = |n: usize| {
                l.events
                    .iter()
                    .filter(|e| e.node == n && e.end.elapsed() < Duration::from_secs(1))
                    .count()
            };
            eprintln!(
                "{:.1?} after the disruption: answers in the last second: node 0 {}, node 1 {}",
                before.elapsed(),
                recent(0),
                recent(1)
            );
            next_note += Duration::from_secs(3);
        }
        // Settled once every request sent before the promotion has come back (by the client
        // deadline at the latest: until then a refusal may still arrive, and a node with no
        // refusal recorded yet only looks recovered) and every node has served for 3 s since
        // its last refusal.
        let settled = promoted.elapsed() > load::CLIENT_TIMEOUT
            && g.iter().all(|g| {
                g.recovered
                    .is_some_and(|r| r.elapsed() >= Duration::from_secs(3))
            });
        if settled || Instant::now() > give_up {
            break;
        }
    }
    let ledger = load.finish().await;
    let g = gaps(&ledger.events, d.nodes.len(), before);
    for (n, g) in g.iter().enumerate() {
        eprintln!(
            "node {n}: gap {:.2?} (first refusal {:?} after the disruption, back {:?} after the promotion); {} refused, {} failed, {} succeeded since",
            g.length(),
            g.first_bad.map(|t| t.saturating_duration_since(before)),
            g.recovered.map(|t| t.saturating_duration_since(promoted)),
            g.refused,
            g.failed,
            g.ok
        );
    }
    eprintln!(
        "acknowledged: {} keys, {} rotations ({} unknown), {} wraps, {} import-token retrievals over {} tokens; {} requests",
        ledger.keys.len(),
        ledger.rotated.len(),
        ledger.rotation_unknown.len(),
        ledger.wraps.len(),
        ledger.retrievals.values().map(|v| v.0).sum::<u64>(),
        ledger.retrievals.len(),
        ledger.events.len()
    );
    assert!(
        ledger.failures.is_empty(),
        "{} requests failed (500, unexpected answer or no answer within the deadline); the first ones:\n{}",
        ledger.failures.len(),
        ledger.failures[..ledger.failures.len().min(20)].join("\n")
    );
    for (n, g) in g.iter().enumerate() {
        let back = g
            .recovered
            .unwrap_or_else(|| panic!("node {n} never served again after the disruption"));
        assert!(
            back.saturating_duration_since(promoted) <= bound,
            "node {n} served again only {:?} after the promotion",
            back - promoted
        );
    }
    for (node, pid) in d.nodes.iter_mut().zip(pids) {
        assert!(
            node.alive() && node.pid() == pid,
            "node {} restarted",
            node.name
        );
    }
    assert!(
        !ledger.keys.is_empty()
            && !ledger.rotated.is_empty()
            && !ledger.wraps.is_empty()
            && !ledger.retrievals.is_empty(),
        "the load acknowledged too little to check anything"
    );
    // The old primary comes back as a standby; check once the cluster is whole again.
    stack.run_async(&["wait"]).await;
    verify(&d.apis[0], &ledger).await;
    verify(&d.apis[1], &ledger).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_primary_under_load_loses_nothing_acknowledged() {
    let _serial = SERIAL.lock().await;
    let Some(stack) = Stack::start("killing_the_primary_under_load_loses_nothing_acknowledged")
    else {
        return;
    };
    // Node 0 reaches the primary through HAProxy, node 1 through the multi-host URL.
    let mut d = deploy(&[stack.proxy_url(), stack.multihost_url()], &[]).await;
    survive(&stack, &mut d, RECOVERY_BOUND, || async {
        let sent = Instant::now();
        let old = stack.run_async(&["kill-primary"]).await;
        eprintln!("killed the postmaster of {old} ({:.1?})", sent.elapsed());
        let (new, at) = stack.wait_new_primary(&old, Duration::from_secs(60)).await;
        eprintln!("{new} is the primary now");
        at
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planned_switchover_under_load_loses_nothing_and_refuses_briefly() {
    let _serial = SERIAL.lock().await;
    let Some(stack) =
        Stack::start("a_planned_switchover_under_load_loses_nothing_and_refuses_briefly")
    else {
        return;
    };
    let mut d = deploy(&[stack.proxy_url(), stack.proxy_url()], &[]).await;
    survive(&stack, &mut d, Duration::from_secs(10), || async {
        let old = stack.ctl.primary().expect("a primary");
        let (new, at) = tokio::join!(
            stack.wait_new_primary(&old, Duration::from_secs(60)),
            stack.run_async(&["switchover"])
        )
        .0;
        eprintln!("switched over from {old} to {new}");
        at
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_sync_replica_refuses_writes_without_a_synchronous_standby() {
    let _serial = SERIAL.lock().await;
    let Some(stack) =
        Stack::start("require_sync_replica_refuses_writes_without_a_synchronous_standby")
    else {
        return;
    };
    let d = deploy(&[stack.proxy_url()], &["--require-sync-replica"]).await;
    let api = &d.apis[0];
    let create = |name: &'static str| async move {
        let body = key_envelope(json!({"type": KEY_TYPE, "name": name, "extractable": false}));
        send(api, Method::POST, "/api/v2/keys", Some(&body), &[]).await
    };
    let Outcome::Ok(r) = create("with-standby").await else {
        panic!("a write with a synchronous standby must succeed")
    };
    let id = r.body["resources"][0]["id"].as_str().unwrap().to_string();
    let ct = api.wrap_ok(&id, b"kept").await;

    stack.run_async(&["stop-replicas"]).await;
    let since = Instant::now();
    loop {
        match create("alone").await {
            Outcome::Refused => break,
            Outcome::Ok(_) => assert!(
                since.elapsed() < Duration::from_secs(15),
                "writes still succeed 15 s after both standbys stopped"
            ),
            o => panic!("a write without a standby: {o:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "writes refused {:.1?} after the standbys stopped",
        since.elapsed()
    );
    let r = api.create_root_key("still-alone").await;
    assert_eq!(r.status, 503, "{}", r.text);
    // A Key Protect error envelope, not a bare status.
    eprintln!("refusal: {}", r.error_code());
    // Reads go on.
    api.get(&format!("/api/v2/keys/{id}")).await.expect(200);
    assert_eq!(api.unwrap_ok(&id, &ct).await, b"kept");
    api.get("/api/v2/keys").await.expect(200);

    stack.run_async(&["start-replicas"]).await;
    let since = Instant::now();
    loop {
        match create("again").await {
            Outcome::Ok(_) => break,
            Outcome::Refused => assert!(
                since.elapsed() < Duration::from_secs(30),
                "writes still refused 30 s after a synchronous standby came back"
            ),
            o => panic!("a write after the standbys came back: {o:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "writes accepted {:.1?} after the standbys came back",
        since.elapsed()
    );
}

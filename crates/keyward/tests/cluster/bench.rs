//! A small closed-loop load benchmark for docs/postgres.md (ignored by default): wrap, unwrap
//! and key creation with one and two nodes on one PostgreSQL, and key creation on SQLite.
//! It also samples the CPU time of the nodes, of PostgreSQL and of the load generator, to show
//! where a 2-core machine spends its time.
//!
//! Run (release, so the client is not the bottleneck by accident):
//! `KEYWARD_TEST_DATABASE_URL=postgres://... cargo test --release -p keyward --test cluster -- --ignored --nocapture bench`
//! Knobs: `KEYWARD_BENCH_SECS` (default 8), `KEYWARD_BENCH_WORKERS` (default 16).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use reqwest::Method;
use serde_json::json;

use keyward_testsupport::*;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds (user + system) used so far by a process.
fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// Machine-wide (busy, iowait) CPU seconds from /proc/stat.
fn machine_cpu() -> (f64, f64) {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return (0.0, 0.0);
    };
    let Some(line) = stat.lines().next() else {
        return (0.0, 0.0);
    };
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let get = |i: usize| v.get(i).copied().unwrap_or(0.0);
    // user nice system idle iowait irq softirq steal
    let busy = get(0) + get(1) + get(2) + get(5) + get(6) + get(7);
    (busy / 100.0, get(4) / 100.0)
}

/// The pids of every running `postgres` process (server and backends).
fn postgres_pids() -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
            {
                out.push(pid);
            }
        }
    }
    out
}

/// CPU seconds of the nodes, of PostgreSQL (processes alive at both samples; backends of
/// this benchmark live as long as the pools) and of this process.
fn cpu_sample(nodes: &[u32]) -> (f64, std::collections::HashMap<u32, f64>, f64) {
    let n = nodes.iter().map(|p| cpu_secs(*p)).sum();
    let pg = postgres_pids()
        .into_iter()
        .map(|p| (p, cpu_secs(p)))
        .collect();
    (n, pg, cpu_secs(std::process::id()))
}

#[derive(Debug)]
struct Outcome {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: usize,
    cpu_nodes: f64,
    cpu_pg: f64,
    cpu_client: f64,
    cpu_machine: f64,
    iowait: f64,
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Wrap,
    Unwrap,
    Create,
}

/// Runs `op` from `workers` closed-loop clients spread over `apis` for `secs` (after a one
/// second warm-up).
async fn measure(
    apis: &[Api],
    key: &str,
    ciphertext: &str,
    op: Op,
    workers: usize,
    secs: u64,
    node_pids: &[u32],
) -> Outcome {
    let run = |measure_for: Duration| {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = (0..workers)
            .map(|w| {
                let api = apis[w % apis.len()].clone();
                let (key, ct, stop) = (key.to_string(), ciphertext.to_string(), stop.clone());
                tokio::spawn(async move {
                    let mut lat = Vec::new();
                    let mut errors = 0;
                    let pt = B64.encode([7u8; 32]);
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let t = Instant::now();
                        let r = match op {
                            Op::Wrap => {
                                api.try_call(Method::POST, &format!("/api/v2/keys/{key}/actions/wrap"), Some(&json!({"plaintext": pt})))
                                    .await
                            }
                            Op::Unwrap => {
                                api.try_call(Method::POST, &format!("/api/v2/keys/{key}/actions/unwrap"), Some(&json!({"ciphertext": ct})))
                                    .await
                            }
                            Op::Create => {
                                api.try_call(
                                    Method::POST,
                                    "/api/v2/keys",
                                    Some(&key_envelope(json!({"type": KEY_TYPE, "name": format!("bench-{w}-{n}"), "extractable": false}))),
                                )
                                .await
                            }
                        };
                        match r {
                            Ok(r) if r.status < 300 => lat.push(t.elapsed()),
                            _ => errors += 1,
                        }
                    }
                    (lat, errors)
                })
            })
            .collect();
        async move {
            tokio::time::sleep(measure_for).await;
            stop.store(true, Ordering::Relaxed);
            let mut lat = Vec::new();
            let mut errors = 0;
            for t in tasks {
                let (l, e) = t.await.unwrap();
                lat.extend(l);
                errors += e;
            }
            (lat, errors)
        }
    };
    run(Duration::from_secs(1)).await;
    let (n0, pg0, c0) = cpu_sample(node_pids);
    let (m0, w0) = machine_cpu();
    let started = Instant::now();
    let (mut lat, errors) = run(Duration::from_secs(secs)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let (n1, pg1, c1) = cpu_sample(node_pids);
    let (m1, w1) = machine_cpu();
    let cpu_pg: f64 = pg1
        .iter()
        .map(|(p, t)| t - pg0.get(p).copied().unwrap_or(0.0))
        .sum();
    lat.sort_unstable();
    let pct = |q: f64| {
        lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
    };
    Outcome {
        rps: lat.len() as f64 / elapsed,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        errors,
        cpu_nodes: (n1 - n0) / elapsed,
        cpu_pg: cpu_pg / elapsed,
        cpu_client: (c1 - c0) / elapsed,
        cpu_machine: (m1 - m0) / elapsed,
        iowait: (w1 - w0) / elapsed,
    }
}

struct Setup {
    nodes: Vec<Node>,
    apis: Vec<Api>,
    key: String,
    ciphertext: String,
}

async fn setup(database_url: Option<&str>, dir: &std::path::Path, nodes: usize) -> Setup {
    let key_file = dir.join("master.key");
    let mut started: Vec<Node> = Vec::new();
    for i in 0..nodes {
        let mut n = Node::spawn(
            &format!("bench{i}"),
            &NodeOpts {
                database_url,
                data_dir: &dir.join(format!("n{i}")),
                master_key_file: Some(&key_file),
                token_pool_size: 0,
                scheduler_interval: 0,
            },
        );
        n.wait_health(200).await;
        started.push(n);
    }
    let (inst, apikey) = started[0].banner().unwrap();
    let first = Api::login(&started[0].base, &apikey, &inst).await;
    let apis: Vec<Api> = started.iter().map(|n| first.on(n)).collect();
    let key = first.root_key("bench").await;
    let ciphertext = first.wrap_ok(&key, &[7u8; 32]).await;
    Setup {
        nodes: started,
        apis,
        key,
        ciphertext,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run explicitly with --ignored (see the module docs)"]
async fn bench_one_and_two_nodes() {
    let Some(base) = pg_base("bench_one_and_two_nodes") else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let secs = env_num("KEYWARD_BENCH_SECS", 8);
    let workers = env_num("KEYWARD_BENCH_WORKERS", 16) as usize;
    eprintln!(
        "binary {}; {workers} closed-loop clients, {secs} s per run; CPU = cores busy (of {})",
        bin().display(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    eprintln!("| backend | nodes | operation | req/s | p50 ms | p99 ms | errors | CPU nodes | CPU PostgreSQL | CPU client | CPU machine | iowait |");
    eprintln!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let configs: [(&str, usize); 3] = [("postgres", 1), ("postgres", 2), ("sqlite", 1)];
    for (backend, n) in configs {
        let db = (backend == "postgres").then(|| Db::fresh(&base));
        let dir = tempfile::tempdir().unwrap();
        let s = setup(db.as_ref().map(|d| d.url.as_str()), dir.path(), n).await;
        let pids: Vec<u32> = s.nodes.iter().map(Node::pid).collect();
        for op in [Op::Wrap, Op::Unwrap, Op::Create] {
            let o = measure(&s.apis, &s.key, &s.ciphertext, op, workers, secs, &pids).await;
            eprintln!(
                "| {backend} | {n} | {op:?} | {:.0} | {:.1} | {:.1} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                o.rps, o.p50_ms, o.p99_ms, o.errors, o.cpu_nodes, o.cpu_pg, o.cpu_client, o.cpu_machine, o.iowait
            );
        }
        drop(s);
        drop(db);
    }
}

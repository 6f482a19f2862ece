//! The `failover` scenario (only when named, and alone): two `keyward serve` nodes on the HA
//! stack of `scripts/ha-stack` (node 0 through HAProxy, node 1 through the multi-host URL), a
//! closed-loop load of key creations and wraps, then the primary goes away (`kill -9` of its
//! postmaster, or a planned switchover). Reported: throughput before and after, how long the
//! new primary took, and per node the gap (first refused or failed request to the first
//! success after the last one) and the requests refused during it. docs/high-availability.md.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hyper::body::Bytes;
use hyper::Method;
use serde_json::{json, Value};

use crate::http::{self, Bodies, ReqTemplate};
use crate::server::{Backend, Nodes};
use crate::{admin_setup, bearer_token, key_envelope, progress, str_field, Args, JSON_CT, KEY_CT};

/// A request still unanswered after this long counts as failed.
const REQUEST_DEADLINE: Duration = Duration::from_secs(15);

/// The HA stack this run uses: one it started (stopped at the end) or one given by --ha-dir.
struct Stack {
    script: PathBuf,
    dir: PathBuf,
    owned: bool,
    env: Vec<(String, String)>,
}

impl Stack {
    fn run(&self, sub: &str) -> Result<String> {
        let out = std::process::Command::new(&self.script)
            .arg(sub)
            .arg(&self.dir)
            .output()
            .with_context(|| format!("run {}", self.script.display()))?;
        if !out.status.success() {
            bail!(
                "ha-stack {sub} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    async fn run_async(self: &Arc<Self>, sub: &'static str) -> Result<String> {
        let s = self.clone();
        tokio::task::spawn_blocking(move || s.run(sub)).await?
    }

    fn var(&self, name: &str) -> Result<String> {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| anyhow!("ha-stack env printed no {name}"))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One request's record: node, start and end (since the run's origin), outcome
/// (0 success, 1 refused with 503, 2 anything else: another status, a transport error, a
/// timeout).
#[derive(Clone, Copy)]
struct Ev {
    node: usize,
    /// A key creation (a database write); otherwise a wrap.
    write: bool,
    start: Duration,
    end: Duration,
    kind: u8,
}

pub async fn run(args: &Args, keyward: &Path) -> Result<bool> {
    let script = std::fs::canonicalize(&args.ha_stack)
        .with_context(|| format!("ha-stack script {}", args.ha_stack.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix("keyward-bench-failover-")
        .tempdir()?;
    let root = tmp.path().to_path_buf();
    let (dir, owned) = match &args.ha_dir {
        Some(d) => (std::fs::canonicalize(d)?, false),
        None => (root.join("ha"), true),
    };
    let mut stack = Stack {
        script,
        dir,
        owned,
        env: Vec::new(),
    };
    if owned {
        // The stack's directory must be reachable by user postgres.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))?;
        progress("starting the HA stack (scripts/ha-stack start)");
        let t = Instant::now();
        stack.run("start")?;
        progress(&format!("HA stack up in {:.1?}", t.elapsed()));
    }
    stack.env = stack
        .run("env")?
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let stack = Arc::new(stack);
    let result = measure(args, keyward, &root, &stack).await;
    if stack.owned {
        progress("stopping the HA stack");
        if let Err(e) = stack.run("stop") {
            progress(&format!("{e:#}"));
        }
    }
    if args.keep_data {
        progress(&format!("kept {}", tmp.keep().display()));
    }
    let report = result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&report));
    }
    if let Some(path) = &args.json_out {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(report["flagged"] == json!(true))
}

async fn measure(args: &Args, keyward: &Path, root: &Path, stack: &Arc<Stack>) -> Result<Value> {
    let proxy = stack.var("KEYWARD_HA_PROXY_URL")?;
    let multi = stack.var("KEYWARD_HA_MULTIHOST_URL")?;
    // A database of this run's own on the stack, so that a stack given by --ha-dir can be
    // reused.
    let db = format!(
        "keyward_failover_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
    );
    crate::server::psql(&proxy, &format!("CREATE DATABASE \"{db}\"")).await?;
    let urls = [
        crate::server::pg_url_with_db(&proxy, &db)?,
        crate::server::pg_url_with_db(&multi, &db)?,
    ];
    let master_key = root.join("master.key");
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&master_key)?;
        f.write_all(&keyward_crypto::random_bytes(32)?)?;
    }
    let data_dir = root.join("data");
    std::fs::create_dir_all(&data_dir)?;
    let mut serve_args = vec!["--token-pool-size".to_string(), "0".to_string()];
    serve_args.extend(crate::without_creation_limits(&args.serve_args));
    serve_args.extend(args.serve_args.iter().cloned());
    let mut nodes = Nodes {
        servers: Vec::new(),
    };
    for (i, url) in urls.iter().enumerate() {
        let backend = Backend {
            data_dir: data_dir.clone(),
            pg_url: Some(url.clone()),
            master_key: master_key.clone(),
        };
        let started = Nodes::start(
            keyward,
            &backend,
            1,
            root,
            &format!("failover-{i}"),
            &serve_args,
            &args.server_env,
            Duration::from_secs(60),
        )
        .await;
        match started {
            Ok(mut n) => nodes.servers.append(&mut n.servers),
            Err(e) => {
                nodes.stop().await;
                return Err(e);
            }
        }
    }
    let backend0 = Backend {
        data_dir: data_dir.clone(),
        pg_url: Some(urls[0].clone()),
        master_key: master_key.clone(),
    };
    let result = async {
        let setup = admin_setup(keyward, &data_dir, &backend0.db_args()).await?;
        load_and_disrupt(args, stack, &nodes, &setup.instance, &setup.apikey).await
    }
    .await;
    nodes.stop().await;
    if result.is_err() {
        eprintln!("server log tail:\n{}", nodes.log_tail());
    }
    let _ = crate::server::psql(
        &proxy,
        &format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"),
    )
    .await;
    let mut report = result?;
    report["urls"] = json!(["HAProxy", "multi-host"]);
    Ok(report)
}

async fn load_and_disrupt(
    args: &Args,
    stack: &Arc<Stack>,
    nodes: &Nodes,
    instance: &str,
    apikey: &str,
) -> Result<Value> {
    let addrs = nodes.addrs();
    let bearer = bearer_token(addrs[0], apikey).await?;
    // Keys to wrap with, made before the load.
    let headers = |ct: &'static str| -> Vec<(String, String)> {
        vec![
            ("authorization".into(), bearer.clone()),
            ("bluemix-instance".into(), instance.to_string()),
            ("content-type".into(), ct.into()),
            ("accept".into(), "application/json".into()),
        ]
    };
    let h = headers(KEY_CT);
    let href: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut keys = Vec::new();
    for i in 0..8 {
        let body = key_envelope(
            json!({"type": KEY_CT, "name": format!("failover-{i}"), "extractable": false}),
        );
        let v = http::call_json(
            addrs[0],
            Method::POST,
            "/api/v2/keys",
            &href,
            serde_json::to_vec(&body)?,
        )
        .await?;
        keys.push(str_field(&v["resources"][0], "id")?.to_string());
    }
    let create_body = serde_json::to_vec(&key_envelope(
        json!({"type": KEY_CT, "name": "failover-load", "extractable": false}),
    ))?;
    let wrap_body = serde_json::to_vec(&json!({"plaintext": B64.encode([7u8; 32])}))?;

    let origin = Instant::now();
    let events: Arc<Mutex<Vec<Ev>>> = Arc::new(Mutex::new(Vec::new()));
    // The first few answers that were neither 2xx nor 503 (status and body), for the report.
    let errors: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let conns = args.connections.max(2);
    let mut tasks = Vec::new();
    for c in 0..conns {
        let node = c % addrs.len();
        let addr = addrs[node];
        let host = addr.to_string();
        let hk = headers(KEY_CT);
        let hj = headers(JSON_CT);
        let hk: Vec<(&str, &str)> = hk.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let hj: Vec<(&str, &str)> = hj.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        // One connection in four creates keys (a write each), the others wrap.
        let write = c % 4 == 0;
        let template = if write {
            ReqTemplate::new(
                Method::POST,
                "/api/v2/keys",
                &host,
                &hk,
                Bodies::Fixed(Bytes::from(create_body.clone())),
            )?
        } else {
            let key = &keys[c % keys.len()];
            ReqTemplate::new(
                Method::POST,
                &format!("/api/v2/keys/{key}/actions/wrap"),
                &host,
                &hj,
                Bodies::Fixed(Bytes::from(wrap_body.clone())),
            )?
        };
        let (events, stop, errors) = (events.clone(), stop.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = None;
            let mut local = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let start = origin.elapsed();
                let kind = match conn.as_mut() {
                    None => match http::connect(addr).await {
                        Ok(c) => {
                            conn = Some(c);
                            continue;
                        }
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            2
                        }
                    },
                    Some(c) => {
                        match tokio::time::timeout(
                            REQUEST_DEADLINE,
                            http::send(c, template.build()),
                        )
                        .await
                        {
                            Ok(Ok((s, _))) if s.is_success() => 0,
                            Ok(Ok((s, _))) if s.as_u16() == 503 => 1,
                            Ok(outcome) => {
                                let what = match outcome {
                                    Ok((s, body)) => format!(
                                        "node {node}: {s}: {}",
                                        String::from_utf8_lossy(&body)
                                            .chars()
                                            .take(300)
                                            .collect::<String>()
                                    ),
                                    Err(e) => {
                                        conn = None;
                                        format!("node {node}: transport: {e:#}")
                                    }
                                };
                                let mut errs = lock(&errors);
                                if errs.len() < 5 {
                                    errs.push(what);
                                }
                                2
                            }
                            Err(_) => {
                                conn = None;
                                let mut errs = lock(&errors);
                                if errs.len() < 5 {
                                    errs.push(format!(
                                        "node {node}: no answer within {REQUEST_DEADLINE:?}"
                                    ));
                                }
                                2
                            }
                        }
                    }
                };
                local.push(Ev {
                    node,
                    write,
                    start,
                    end: origin.elapsed(),
                    kind,
                });
                if local.len() >= 64 {
                    lock(&events).append(&mut local);
                }
            }
            lock(&events).append(&mut local);
        }));
    }

    let before = Duration::from_secs_f64(args.duration.max(2.0));
    let warmup = Duration::from_secs_f64(args.warmup);
    tokio::time::sleep(warmup + before).await;
    let old = stack.run_async("primary").await?;
    let disrupted = origin.elapsed();
    let how = args.failover_mode.as_str();
    match how {
        "kill" => {
            stack.run_async("kill-primary").await?;
        }
        "switchover" => {
            // Runs while the promotion is polled below.
            let s = stack.clone();
            tokio::spawn(async move { s.run_async("switchover").await });
        }
        other => bail!("--failover-mode {other:?}: kill or switchover"),
    }
    let promoted = loop {
        let p = stack.run_async("primary").await.unwrap_or_default();
        if !p.is_empty() && p != old {
            break origin.elapsed();
        }
        if origin.elapsed() > disrupted + Duration::from_secs(90) {
            stop.store(true, Ordering::SeqCst);
            bail!("no new primary 90 s after the disruption");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    progress(&format!(
        "{how}: {old} replaced after {:.1?}",
        promoted.saturating_sub(disrupted)
    ));
    // Until every node has served again, then as long again as before the disruption.
    let recovered = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let g = gaps(&lock(&events), addrs.len(), disrupted);
        if g.iter().all(|g| g.back.is_some()) {
            break g.iter().filter_map(|g| g.back).max().unwrap_or(promoted);
        }
        if origin.elapsed() > promoted + Duration::from_secs(60) {
            break origin.elapsed();
        }
    };
    tokio::time::sleep(before).await;
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await?;
    }
    let end = origin.elapsed();
    let ev = lock(&events).clone();
    let rate = |from: Duration, to: Duration, write: Option<bool>| -> f64 {
        let n = ev
            .iter()
            .filter(|e| e.kind == 0 && e.start >= from && e.end <= to)
            .filter(|e| write.is_none_or(|w| e.write == w))
            .count();
        n as f64 / to.saturating_sub(from).as_secs_f64().max(1e-9)
    };
    let g = gaps(&ev, addrs.len(), disrupted);
    let secs = |d: Duration| (d.as_secs_f64() * 100.0).round() / 100.0;
    let per_node: Vec<Value> = g
        .iter()
        .enumerate()
        .map(|(n, g)| {
            let url = ["HAProxy", "multi-host"][n.min(1)];
            json!({
                "node": n,
                "url": url,
                "gap_s": g.gap().map(secs),
                "back_after_promotion_s": g.back.map(|b| secs(b.saturating_sub(promoted))),
                "refused_503": g.refused,
                "other_errors": g.failed,
            })
        })
        .collect();
    let other_errors: usize = g.iter().map(|g| g.failed).sum();
    Ok(json!({
        "mode": how,
        "nodes": addrs.len(),
        "connections": conns,
        "promotion_s": secs(promoted.saturating_sub(disrupted)),
        "before_rps": rate(warmup, disrupted, None).round(),
        "after_rps": rate(recovered, end, None).round(),
        "before_creates_per_s": rate(warmup, disrupted, Some(true)).round(),
        "after_creates_per_s": rate(recovered, end, Some(true)).round(),
        "before_wraps_per_s": rate(warmup, disrupted, Some(false)).round(),
        "after_wraps_per_s": rate(recovered, end, Some(false)).round(),
        "before_s": secs(disrupted.saturating_sub(warmup)),
        "after_s": secs(end.saturating_sub(recovered)),
        "per_node": per_node,
        "first_errors": *lock(&errors),
        "flagged": other_errors > 0 || g.iter().any(|g| g.back.is_none()),
    }))
}

struct Gap {
    first_bad: Option<Duration>,
    back: Option<Duration>,
    refused: usize,
    failed: usize,
}

impl Gap {
    fn gap(&self) -> Option<Duration> {
        match (self.first_bad, self.back) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            (None, _) => Some(Duration::ZERO),
            _ => None,
        }
    }
}

/// Per node, over the requests that ended after `from`: the first refused or failed one, the
/// first success after the last of them, and how many were refused (503) or failed.
fn gaps(ev: &[Ev], nodes: usize, from: Duration) -> Vec<Gap> {
    (0..nodes)
        .map(|n| {
            let mine = || ev.iter().filter(move |e| e.node == n && e.end >= from);
            let first_bad = mine().filter(|e| e.kind != 0).map(|e| e.start).min();
            let last_bad = mine().filter(|e| e.kind != 0).map(|e| e.end).max();
            let back = match last_bad {
                Some(t) => mine()
                    .filter(|e| e.kind == 0 && e.start >= t)
                    .map(|e| e.end)
                    .min(),
                None => mine().filter(|e| e.kind == 0).map(|e| e.end).min(),
            };
            Gap {
                first_bad,
                back,
                refused: mine().filter(|e| e.kind == 1).count(),
                failed: mine().filter(|e| e.kind == 2).count(),
            }
        })
        .collect()
}

/// The markdown report.
pub fn table(r: &Value) -> String {
    let mut o = String::new();
    let what = if r["mode"] == "switchover" {
        "planned switchover (patronictl switchover)"
    } else {
        "kill -9 of the primary's postmaster"
    };
    let _ = writeln!(
        o,
        "\nfailover: {what}; {} nodes, {} connections (1 in 4 creating keys, the rest wrapping)\n",
        r["nodes"], r["connections"]
    );
    let _ = writeln!(
        o,
        "new primary promoted {} s after the disruption\n",
        r["promotion_s"]
    );
    let _ = writeln!(
        o,
        "| 2xx per second | before ({} s) | after recovery ({} s) |\n|---|---|---|",
        r["before_s"], r["after_s"]
    );
    for (label, k) in [
        ("all", "rps"),
        ("key creations", "creates_per_s"),
        ("wraps", "wraps_per_s"),
    ] {
        let _ = writeln!(
            o,
            "| {label} | {} | {} |",
            r[format!("before_{k}")],
            r[format!("after_{k}")]
        );
    }
    let _ = writeln!(
        o,
        "\n| node | database URL | gap (first 503 to first success) | back after the promotion | refused (503) | other errors |\n|---|---|---|---|---|---|"
    );
    for n in r["per_node"].as_array().into_iter().flatten() {
        let s = |v: &Value| v.as_f64().map_or("never".to_string(), |x| format!("{x} s"));
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} |",
            n["node"],
            n["url"].as_str().unwrap_or_default(),
            s(&n["gap_s"]),
            s(&n["back_after_promotion_s"]),
            n["refused_503"],
            n["other_errors"]
        );
    }
    for e in r["first_errors"].as_array().into_iter().flatten() {
        let _ = writeln!(o, "\nother error: {}", e.as_str().unwrap_or_default());
    }
    o
}

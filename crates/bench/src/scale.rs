//! `scale`: one instance filled with many keys through `POST /api/v2/keys`, then what the size
//! costs: creation rate as the database grows, bytes per key, cold start, memory, wrap over many
//! keys, and list-query latencies (BENCHMARKS.md, "Scenarios").

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};

use crate::http::{self, Bodies, ReqTemplate, RunResult};
use crate::server::{self, rss_kib, Nodes};
use crate::stats::{percentile, CpuSample};
use crate::{bearer_token, form_encode, key_envelope, progress, Args, Ctx, Launch, Setup};
use crate::{JSON_CT, KEY_CT, WRAP_CT};

/// The key ring that every 100th key of the fill is created in.
const RING: &str = "bench-ring";
/// Aliases made after the fill (`bench-alias-0` …), one each on the first root keys.
const ALIASES: usize = 100;
const SAVED_FILE: &str = "scale.json";
const KEYS_FILE: &str = "scale-keys.txt";

/// Every 10th key is a standard key (`extractable: true`), the others root keys.
fn extractable(i: usize) -> bool {
    i % 10 == 9
}

/// What a fill leaves for later `--scale-reuse` runs, in the kept directory (mode 0600: it
/// holds the bench tenant's API key).
pub struct Saved {
    pub backend: String,
    pub database_url: Option<String>,
    pub instance: String,
    pub apikey: String,
    /// Key ids in fill order (empty where a creation failed).
    pub ids: Vec<String>,
}

impl Saved {
    pub fn load(root: &Path) -> Result<Self> {
        let path = root.join(SAVED_FILE);
        let v: Value = serde_json::from_slice(
            &std::fs::read(&path).with_context(|| format!("read {}", path.display()))?,
        )?;
        let s = |k: &str| {
            v[k].as_str()
                .map(str::to_string)
                .ok_or_else(|| anyhow!("{}: no {k}", path.display()))
        };
        let ids = std::fs::read_to_string(root.join(KEYS_FILE))?
            .lines()
            .map(str::to_string)
            .collect();
        Ok(Self {
            backend: s("backend")?,
            database_url: v["database_url"].as_str().map(str::to_string),
            instance: s("instance")?,
            apikey: s("apikey")?,
            ids,
        })
    }

    fn save(&self, root: &Path) -> Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let v = json!({
            "backend": self.backend,
            "database_url": self.database_url,
            "instance": self.instance,
            "apikey": self.apikey,
            "keys": self.ids.len(),
        });
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(root.join(SAVED_FILE))?;
        f.write_all(serde_json::to_string_pretty(&v)?.as_bytes())?;
        std::fs::write(root.join(KEYS_FILE), self.ids.join("\n"))?;
        Ok(())
    }
}

/// A count-bounded closed loop: `total` requests (index 0..total) spread over `conns`
/// connections (round robin over `addrs`); `make` builds request `i`, `on_ok` sees each 2xx
/// body. Also returns the time at each 10 % of completed requests.
struct CountRun {
    res: RunResult,
    /// (requests completed, time since the start).
    marks: Vec<(usize, Duration)>,
}

async fn count_loop<F, G>(
    addrs: &[SocketAddr],
    conns: usize,
    total: usize,
    pids: &[u32],
    make: F,
    on_ok: G,
    label: &str,
) -> Result<CountRun>
where
    F: Fn(usize) -> Request<Full<Bytes>> + Send + Sync + 'static,
    G: Fn(usize, &Bytes) + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let on_ok = Arc::new(on_ok);
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let step = (total / 10).max(1);
    let marks = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let before = CpuSample::take_all(pids).ok();
    let mut tasks = Vec::new();
    for c in 0..conns.max(1) {
        let addr = addrs[c % addrs.len().max(1)];
        let mut conn = http::connect(addr).await?;
        let (make, on_ok, next, done, marks) = (
            make.clone(),
            on_ok.clone(),
            next.clone(),
            done.clone(),
            marks.clone(),
        );
        let label = label.to_string();
        tasks.push(tokio::spawn(async move {
            let mut res = RunResult::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let req = make(i);
                let t0 = Instant::now();
                let outcome = http::send(&mut conn, req).await;
                let dt = t0.elapsed();
                if let Ok((status, body)) = &outcome {
                    if status.is_success() {
                        on_ok(i, body);
                    }
                }
                let alive = res.record_outcome(outcome, dt);
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n % step == 0 || n == total {
                    let at = start.elapsed();
                    if let Ok(mut m) = marks.lock() {
                        m.push((n, at));
                    }
                    eprint!(
                        "\r  {label}: {n}/{total} ({:.0}/s)   ",
                        n as f64 / at.as_secs_f64()
                    );
                }
                if !alive {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    match http::connect(addr).await {
                        Ok(c) => conn = c,
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            }
            res
        }));
    }
    let mut res = RunResult::default();
    for t in tasks {
        let r = t.await?;
        res.latencies_ns.extend(r.latencies_ns);
        res.ok += r.ok;
        for (k, v) in r.statuses {
            *res.statuses.entry(k).or_insert(0) += v;
        }
        res.transport_errors += r.transport_errors;
        if res.first_error.is_none() {
            res.first_error = r.first_error;
        }
    }
    eprintln!();
    res.elapsed = start.elapsed();
    if let (Some(b), Ok(a)) = (before, CpuSample::take_all(pids)) {
        res.cpu = Some(a.since(&b));
    }
    res.latencies_ns.sort_unstable();
    let mut marks = marks.lock().map(|m| m.clone()).unwrap_or_default();
    marks.sort();
    marks.dedup_by_key(|m| m.0);
    Ok(CountRun { res, marks })
}

fn ms(ns: Option<u64>) -> Option<f64> {
    ns.map(|v| (v as f64 / 1e6 * 1000.0).round() / 1000.0)
}

/// req/s, p50/p99/max, errors and CPU of a run.
fn summary(r: &RunResult) -> Value {
    let secs = r.elapsed.as_secs_f64();
    let lat = &r.latencies_ns;
    json!({
        "requests": lat.len(),
        "seconds": (secs * 1000.0).round() / 1000.0,
        "rps": if secs > 0.0 { (lat.len() as f64 / secs).round() } else { 0.0 },
        "p50_ms": ms(percentile(lat, 50.0)),
        "p99_ms": ms(percentile(lat, 99.0)),
        "max_ms": ms(lat.last().copied()),
        "errors": r.errors(),
        "first_error": r.first_error,
        "cpu_server": r.cpu.map(|c| (c.server * 100.0).round() / 100.0),
        "cpu_client": r.cpu.map(|c| (c.client * 100.0).round() / 100.0),
        "cpu_other": r.cpu.map(|c| (c.other * 100.0).round() / 100.0),
    })
}

fn rss_all(nodes: &Nodes) -> Value {
    let per: Vec<Option<u64>> = nodes.pids().iter().map(|&p| rss_kib(p)).collect();
    let total: u64 = per.iter().flatten().sum();
    json!({"total_mib": (total as f64 / 1024.0 * 10.0).round() / 10.0, "per_node_kib": per})
}

fn key_headers<'a>(ctx: &'a Ctx, ring: Option<&'a str>) -> Vec<(&'a str, &'a str)> {
    let mut h = ctx.headers(KEY_CT);
    if let Some(r) = ring {
        h.push(("x-kms-key-ring", r));
    }
    h
}

/// Fills the instance with `n` keys; returns their ids (in order) and the fill report.
async fn fill(args: &Args, ctx: &Ctx, n: usize) -> Result<(Vec<String>, Value)> {
    let (status, body) = http::call(
        ctx.addr,
        Method::POST,
        &format!("/api/v2/key_rings/{RING}"),
        &ctx.headers(JSON_CT),
        Vec::new(),
    )
    .await?;
    if !status.is_success() && status != StatusCode::CONFLICT {
        bail!(
            "create key ring {RING}: {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let plain = Arc::new(ReqTemplate::new(
        Method::POST,
        "/api/v2/keys",
        &ctx.host,
        &key_headers(ctx, None),
        Bodies::Fixed(Bytes::new()),
    )?);
    let ringed = Arc::new(ReqTemplate::new(
        Method::POST,
        "/api/v2/keys",
        &ctx.host,
        &key_headers(ctx, Some(RING)),
        Bodies::Fixed(Bytes::new()),
    )?);
    let ids = Arc::new(Mutex::new(vec![String::new(); n]));
    let make = move |i: usize| {
        let t = if i % 100 == 0 { &ringed } else { &plain };
        let mut req = t.build();
        let body = key_envelope(json!({
            "type": KEY_CT,
            "name": format!("scale-{i:07}"),
            "extractable": extractable(i),
        }));
        *req.body_mut() = Full::new(Bytes::from(serde_json::to_vec(&body).unwrap_or_default()));
        req
    };
    let sink = ids.clone();
    let on_ok = move |i: usize, body: &Bytes| {
        let id = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.pointer("/resources/0/id")?.as_str().map(str::to_string));
        if let (Some(id), Ok(mut ids)) = (id, sink.lock()) {
            if let Some(slot) = ids.get_mut(i) {
                *slot = id;
            }
        }
    };
    progress(&format!(
        "scale: creating {n} keys over {} connections",
        args.scale_fill_connections
    ));
    let run = count_loop(
        &ctx.addrs,
        args.scale_fill_connections,
        n,
        &ctx.pids,
        make,
        on_ok,
        "scale fill",
    )
    .await?;
    let mut deciles = Vec::new();
    let mut prev = (0usize, Duration::ZERO);
    for &(k, at) in &run.marks {
        let dt = (at - prev.1).as_secs_f64();
        if k > prev.0 && dt > 0.0 {
            deciles.push(json!({
                "up_to_keys": k,
                "keys_per_s": ((k - prev.0) as f64 / dt).round(),
            }));
        }
        prev = (k, at);
    }
    let ids = ids.lock().map(|v| v.clone()).unwrap_or_default();
    let mut report = summary(&run.res);
    report["keys_per_s"] = report["rps"].clone();
    report["per_10_percent"] = json!(deciles);
    report["connections"] = json!(args.scale_fill_connections);
    Ok((ids, report))
}

/// Database size over the keys: SQLite file + WAL + shm after the nodes stopped (SQLite
/// checkpoints the WAL when the last connection closes); PostgreSQL `pg_total_relation_size`
/// of every table of the schema, after an `ANALYZE`.
async fn db_bytes(launch: &Launch, keys: usize) -> Result<Value> {
    let mut tables = serde_json::Map::new();
    let total: u64 = match &launch.backend.pg_url {
        Some(url) => {
            // Fresh statistics for the planner, as autovacuum's analyze gives a production
            // server after a bulk load (the test servers here run with autovacuum off, and a
            // planner that thinks the table is empty walks a million rows).
            server::psql(url, "ANALYZE").await?;
            let out = server::psql(
                url,
                "SELECT c.relname || '|' || pg_total_relation_size(c.oid) FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = current_schema() AND c.relkind = 'r' ORDER BY 1",
            )
            .await?;
            let mut sum = 0;
            for line in out.lines() {
                if let Some((t, b)) = line.split_once('|') {
                    let b: u64 = b.trim().parse().unwrap_or(0);
                    sum += b;
                    if b > 0 {
                        tables.insert(t.to_string(), json!(b));
                    }
                }
            }
            sum
        }
        None => {
            // The server does not always leave the WAL checkpointed; fold it into the
            // database file with the sqlite3 shell when there is one (the nodes are stopped).
            let db = launch.backend.data_dir.join("keyward.db");
            let checkpoint = tokio::process::Command::new("sqlite3")
                .arg(&db)
                .arg("PRAGMA wal_checkpoint(TRUNCATE);")
                .stdin(std::process::Stdio::null())
                .output()
                .await;
            tables.insert(
                "checkpoint".to_string(),
                json!(match checkpoint {
                    Ok(o) if o.status.success() => format!(
                        "sqlite3 wal_checkpoint(TRUNCATE): {}",
                        String::from_utf8_lossy(&o.stdout).trim()
                    ),
                    _ => "none (no sqlite3 shell): WAL as the server left it".to_string(),
                }),
            );
            let mut sum = 0;
            for f in ["keyward.db", "keyward.db-wal", "keyward.db-shm"] {
                if let Ok(m) = std::fs::metadata(launch.backend.data_dir.join(f)) {
                    sum += m.len();
                    tables.insert(f.to_string(), json!(m.len()));
                }
            }
            sum
        }
    };
    // The tables that grow with the keys (the audit log and the rest are counted in the total
    // only): PostgreSQL only, where each table has its own size.
    let key_tables: u64 = ["keys", "key_versions", "key_aliases"]
        .iter()
        .filter_map(|t| tables.get(*t).and_then(Value::as_u64))
        .sum();
    Ok(json!({
        "total_bytes": total,
        "key_tables_bytes_per_key": if keys > 0 && key_tables > 0 {
            Some((key_tables as f64 / keys as f64).round())
        } else {
            None
        },
        "keys": keys,
        "bytes_per_key": if keys > 0 { (total as f64 / keys as f64).round() } else { 0.0 },
        "parts": tables,
    }))
}

/// One list query: sequential requests on one connection to the first node.
async fn list_query(
    ctx: &Ctx,
    label: &str,
    path: &str,
    ring: Option<&str>,
    repeats: usize,
    cap: Duration,
) -> Result<Value> {
    let mut headers = ctx.headers(JSON_CT);
    if let Some(r) = ring {
        headers.push(("x-kms-key-ring", r));
    }
    let t = ReqTemplate::new(
        Method::GET,
        path,
        &ctx.host,
        &headers,
        Bodies::Fixed(Bytes::new()),
    )?;
    let m0 = http::server_metrics(ctx.addr).await;
    let mut conn = http::connect(ctx.addr).await?;
    let mut lat = Vec::new();
    let mut statuses = std::collections::BTreeMap::<u16, u64>::new();
    let mut first_error = None;
    let mut returned = None;
    let mut total_count = None;
    let start = Instant::now();
    while lat.len() < repeats && (lat.len() < 5 || start.elapsed() < cap) {
        let t0 = Instant::now();
        match http::send(&mut conn, t.build()).await {
            Ok((s, body)) => {
                lat.push(u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX));
                *statuses.entry(s.as_u16()).or_insert(0) += 1;
                if s.is_success() {
                    if returned.is_none() {
                        let v: Value = serde_json::from_slice(&body).unwrap_or_default();
                        returned = v["resources"].as_array().map(Vec::len);
                        total_count = v["metadata"]["totalCount"].as_u64();
                    }
                } else if first_error.is_none() {
                    // The error envelope's reason code, else the start of the body.
                    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
                    let text = match v
                        .pointer("/resources/0/reasons/0/code")
                        .and_then(Value::as_str)
                    {
                        Some(code) => code.to_string(),
                        None => String::from_utf8_lossy(&body).chars().take(200).collect(),
                    };
                    first_error = Some(format!("{s}: {text}"));
                }
            }
            Err(e) => {
                *statuses.entry(0).or_insert(0) += 1;
                first_error.get_or_insert(format!("transport: {e:#}"));
                conn = http::connect(ctx.addr).await?;
            }
        }
    }
    let server_ms = match (m0, http::server_metrics(ctx.addr).await) {
        (Some(a), Some(b)) => b
            .route_since(&a, "/api/v2/keys")
            .map(|(mean, _)| (mean * 1000.0).round() / 1000.0),
        _ => None,
    };
    lat.sort_unstable();
    let v = json!({
        "query": label,
        "path": path,
        "key_ring_header": ring,
        "n": lat.len(),
        "p50_ms": ms(percentile(&lat, 50.0)),
        "p99_ms": ms(percentile(&lat, 99.0)),
        "server_mean_ms": server_ms,
        "statuses": statuses.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "returned": returned,
        "total_count": total_count,
        "first_error": first_error,
    });
    progress(&format!(
        "scale: list {label}: p50 {} ms, p99 {} ms, server {} ms, {:?}",
        v["p50_ms"], v["p99_ms"], v["server_mean_ms"], statuses
    ));
    Ok(v)
}

/// The list queries of the scenario, as (label, path and query, key ring header).
fn list_queries(keys: usize) -> Vec<(String, String, Option<&'static str>)> {
    let k = "/api/v2/keys";
    let mut q: Vec<(String, String, Option<&'static str>)> = vec![
        ("limit 200".into(), format!("{k}?limit=200"), None),
        (
            "offset 9800 limit 200".into(),
            format!("{k}?offset=9800&limit=200"),
            None,
        ),
        (
            format!("offset {} limit 200 (last page)", keys.saturating_sub(200)),
            format!("{k}?offset={}&limit=200", keys.saturating_sub(200)),
            None,
        ),
        (
            "limit 200 totalCount".into(),
            format!("{k}?limit=200&totalCount=true"),
            None,
        ),
    ];
    for f in [
        "id",
        "state",
        "extractable",
        "imported",
        "creationDate",
        "lastUpdateDate",
        "lastRotateDate",
        "deletionDate",
        "expirationDate",
    ] {
        for dir in ["", "-"] {
            q.push((
                format!("sort {dir}{f}"),
                format!("{k}?sort={dir}{f}&limit=200"),
                None,
            ));
        }
    }
    for (label, query) in [
        ("state=1 (all)", "state=1"),
        ("state=0,2,3 (none)", "state=0,2,3"),
        ("state=5 (none)", "state=5"),
        ("extractable=false", "extractable=false"),
        ("extractable=true", "extractable=true"),
    ] {
        q.push((label.into(), format!("{k}?{query}&limit=200"), None));
    }
    for search in [
        "scale-00123",
        "exact:scale-0001234",
        "name:scale-0001",
        "alias:bench-alias-7",
        "exact:alias:bench-alias-7",
    ] {
        q.push((
            format!("search={search}"),
            format!("{k}?search={}&limit=200", form_encode(search)),
            None,
        ));
    }
    for filter in [
        r#"creationDate=gt:"2000-01-01T00:00:00Z""#,
        r#"creationDate=lt:"2000-01-01T00:00:00Z""#,
    ] {
        q.push((
            format!("filter={filter}"),
            format!("{k}?filter={}&limit=200", form_encode(filter)),
            None,
        ));
    }
    q.push((
        format!("key ring {RING}"),
        format!("{k}?limit=200"),
        Some(RING),
    ));
    q.push((
        format!("key ring {RING} totalCount"),
        format!("{k}?limit=200&totalCount=true"),
        Some(RING),
    ));
    // The key ring holds every 100th key: under the 5,000-candidate bound of a search or a
    // filter up to 500,000 keys, so these measure the search and filter path itself.
    q.push((
        format!("key ring {RING} search=scale-00"),
        format!("{k}?search=scale-00&limit=200"),
        Some(RING),
    ));
    let filter = r#"creationDate=gt:"2000-01-01T00:00:00Z""#;
    q.push((
        format!("key ring {RING} filter={filter}"),
        format!("{k}?filter={}&limit=200", form_encode(filter)),
        Some(RING),
    ));
    q
}

/// Runs the scenario (after the others, on the same or a reused database); leaves nodes running.
pub async fn run(
    args: &Args,
    launch: &Launch,
    nodes: &mut Nodes,
    setup: &Setup,
    saved: Option<&Saved>,
) -> Result<Value> {
    if nodes.servers.len() != launch.nodes {
        // An earlier scenario (import-token-cold) left one node with other flags.
        nodes.stop().await;
        *nodes = launch.start("serve-scale-fill", &[], None).await?;
    }
    let ctx = Ctx::new(
        nodes,
        bearer_token(nodes.first().addr, &setup.apikey).await?,
        setup.instance.clone(),
    );
    let (ids, fill_report) = match saved {
        Some(s) => {
            progress(&format!(
                "scale: reusing {} keys from {}",
                s.ids.len(),
                launch.root.display()
            ));
            (s.ids.clone(), Value::Null)
        }
        None => {
            let (ids, report) = fill(args, &ctx, args.scale_keys).await?;
            Saved {
                backend: launch.backend.name().to_string(),
                database_url: launch.backend.pg_url.clone(),
                instance: setup.instance.clone(),
                apikey: setup.apikey.clone(),
                ids: ids.clone(),
            }
            .save(&launch.root)?;
            // Aliases on the first root keys, for the alias searches.
            let roots = ids
                .iter()
                .enumerate()
                .filter(|(i, id)| !extractable(*i) && !id.is_empty());
            for (j, (_, id)) in roots.take(ALIASES).enumerate() {
                ctx.json(
                    Method::POST,
                    &format!("/api/v2/keys/{id}/aliases/bench-alias-{j}"),
                    JSON_CT,
                    Value::Null,
                )
                .await?;
            }
            (ids, report)
        }
    };
    let created = ids.iter().filter(|id| !id.is_empty()).count();

    // Size on disk, with the nodes stopped.
    nodes.stop().await;
    let size = db_bytes(launch, created).await?;
    progress(&format!("scale: database {size}"));

    // Cold start on the same data.
    progress("scale: restarting on the same data");
    *nodes = launch.start("serve-scale", &[], None).await?;
    let last = nodes.servers.last().ok_or_else(|| anyhow!("no node"))?;
    let (last_addr, spawned_ago) = (last.addr, last.ready_after);
    let t_ready = Instant::now();
    let probe = |bearer: &str| {
        let mut h = ctx.headers(JSON_CT);
        h[0] = ("authorization", bearer);
        ReqTemplate::new(
            Method::GET,
            "/api/v2/keys?limit=1",
            &last_addr.to_string(),
            &h,
            Bodies::Fixed(Bytes::new()),
        )
    };
    let mut conn = http::connect(last_addr).await?;
    let (mut status, _) = http::send(&mut conn, probe(&ctx.bearer)?.build()).await?;
    let mut bearer = ctx.bearer.clone();
    let mut new_token = false;
    if !status.is_success() {
        // The old token was not accepted: log in again (counted in the time).
        bearer = bearer_token(last_addr, &setup.apikey).await?;
        new_token = true;
        status = http::send(&mut conn, probe(&bearer)?.build()).await?.0;
    }
    let first_auth = spawned_ago + t_ready.elapsed();
    let ctx = Ctx::new(nodes, bearer, setup.instance.clone());
    let cold = json!({
        "healthz_200_ms": (spawned_ago.as_secs_f64() * 1e6).round() / 1e3,
        "first_authenticated_200_ms": (first_auth.as_secs_f64() * 1e6).round() / 1e3,
        "first_authenticated_status": status.as_u16(),
        "needed_new_token": new_token,
        "node": nodes.servers.len() - 1,
    });
    progress(&format!("scale: cold start {cold}"));
    for &a in &ctx.addrs {
        crate::settle(a, args.token_pool_size, 0).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_idle = rss_all(nodes);

    // Each of `scale_distinct` root keys wrapped once (every one a key-cache miss).
    let dek = base64_dek()?;
    let wrap_body = Bytes::from(serde_json::to_vec(&json!({ "plaintext": dek }))?);
    let paths: Vec<String> = ids
        .iter()
        .enumerate()
        .filter(|(i, id)| !extractable(*i) && !id.is_empty())
        .map(|(_, id)| format!("/api/v2/keys/{id}/actions/wrap"))
        .take(args.scale_distinct)
        .collect();
    if paths.is_empty() {
        bail!("scale: no root keys to wrap with");
    }
    let wrap = ReqTemplate::new(
        Method::POST,
        &paths[0],
        &ctx.host,
        &ctx.headers(WRAP_CT),
        Bodies::Fixed(wrap_body),
    )?;
    let once = Arc::new(wrap.clone().with_paths(&paths, false)?);
    progress(&format!(
        "scale: wrapping once with each of {} keys, {} connections",
        paths.len(),
        args.connections
    ));
    let first_pass = count_loop(
        &ctx.addrs,
        args.connections,
        paths.len(),
        &ctx.pids,
        move |_| once.build(),
        |_, _| {},
        "distinct wraps",
    )
    .await?;
    let rss_after = rss_all(nodes);
    progress(&format!(
        "scale: RSS idle {rss_idle}, after the distinct wraps {rss_after}; pausing {} s",
        args.scale_pause
    ));
    tokio::time::sleep(Duration::from_secs(args.scale_pause)).await;
    let rss_paused = rss_all(nodes);

    // Wrap at random over those keys vs. one key.
    let warmup = Duration::from_secs_f64(args.warmup);
    let duration = Duration::from_secs_f64(args.duration);
    let random = Arc::new(wrap.clone().with_paths(&paths, true)?);
    progress("scale: wrap over random keys among them");
    let random_run = http::closed_loop_nodes(
        &ctx.addrs,
        random,
        args.connections,
        warmup,
        duration,
        &ctx.pids,
    )
    .await?;
    progress("scale: wrap with one key");
    let one_run = http::closed_loop_nodes(
        &ctx.addrs,
        Arc::new(wrap),
        args.connections,
        warmup,
        duration,
        &ctx.pids,
    )
    .await?;
    let sorted = |mut r: RunResult| {
        r.latencies_ns.sort_unstable();
        r
    };
    let (random_run, one_run) = (sorted(random_run), sorted(one_run));

    // List queries, sequential, on the first node.
    let mut lists = Vec::new();
    for (label, path, ring) in list_queries(created) {
        lists.push(
            list_query(
                &ctx,
                &label,
                &path,
                ring,
                args.scale_list_repeats,
                Duration::from_secs(args.scale_list_secs),
            )
            .await?,
        );
    }

    Ok(json!({
        "backend": launch.backend.name(),
        "nodes": nodes.servers.len(),
        "keys": created,
        "reused": saved.is_some(),
        "fill": fill_report,
        "database": size,
        "cold_start": cold,
        "rss": {
            "idle_after_restart": rss_idle,
            "after_distinct_wraps": rss_after,
            "after_pause": rss_paused,
            "pause_s": args.scale_pause,
        },
        "distinct_wraps": summary(&first_pass.res),
        "distinct_keys": paths.len(),
        "wrap_random_keys": summary(&random_run),
        "wrap_one_key": summary(&one_run),
        "lists": lists,
    }))
}

fn base64_dek() -> Result<String> {
    use base64::Engine as _;
    Ok(base64::engine::general_purpose::STANDARD.encode(keyward_crypto::random_bytes(32)?))
}

/// The text report of the scale scenario (empty when it did not run).
pub fn table(s: &Value) -> String {
    let mut o = String::new();
    if s.is_null() {
        return o;
    }
    let _ = writeln!(
        o,
        "\nscale: {} keys, {} with {} node(s){}",
        s["keys"],
        s["backend"].as_str().unwrap_or_default(),
        s["nodes"],
        if s["reused"] == json!(true) {
            " (reused fill)"
        } else {
            ""
        }
    );
    let f = &s["fill"];
    if !f.is_null() {
        let per: Vec<String> = f["per_10_percent"]
            .as_array()
            .map(|a| a.iter().map(|d| format!("{}", d["keys_per_s"])).collect())
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "  fill: {} keys/s over {} s ({} conns), p50/p99 {}/{} ms, {} errors, cpu srv/cli/oth {}/{}/{}; keys/s per 10 %: {}",
            f["keys_per_s"], f["seconds"], f["connections"], f["p50_ms"], f["p99_ms"], f["errors"],
            f["cpu_server"], f["cpu_client"], f["cpu_other"], per.join(", ")
        );
    }
    let d = &s["database"];
    let _ = writeln!(
        o,
        "  database: {} bytes, {} bytes/key (key tables only: {}) ({})",
        d["total_bytes"], d["bytes_per_key"], d["key_tables_bytes_per_key"], d["parts"]
    );
    let c = &s["cold_start"];
    let _ = writeln!(
        o,
        "  cold start: /healthz 200 after {} ms, first authenticated 200 after {} ms",
        c["healthz_200_ms"], c["first_authenticated_200_ms"]
    );
    let r = &s["rss"];
    let _ = writeln!(
        o,
        "  RSS MiB: idle {}, after {} distinct wraps {}, after {} s pause {}",
        r["idle_after_restart"]["total_mib"],
        s["distinct_keys"],
        r["after_distinct_wraps"]["total_mib"],
        r["pause_s"],
        r["after_pause"]["total_mib"]
    );
    for (label, k) in [
        ("distinct keys, each once", "distinct_wraps"),
        ("random keys among them", "wrap_random_keys"),
        ("one key", "wrap_one_key"),
    ] {
        let w = &s[k];
        let _ = writeln!(
            o,
            "  wrap, {label}: {} req/s, p50/p99 {}/{} ms, {} errors, cpu srv/cli/oth {}/{}/{}",
            w["rps"],
            w["p50_ms"],
            w["p99_ms"],
            w["errors"],
            w["cpu_server"],
            w["cpu_client"],
            w["cpu_other"]
        );
    }
    let _ = writeln!(
        o,
        "  {:<44} {:>4} {:>9} {:>9} {:>9}  status",
        "list query", "n", "p50 ms", "p99 ms", "srv ms"
    );
    for l in s["lists"].as_array().into_iter().flatten() {
        let _ = writeln!(
            o,
            "  {:<44} {:>4} {:>9} {:>9} {:>9}  {}{}",
            l["query"].as_str().unwrap_or_default(),
            l["n"].to_string(),
            l["p50_ms"].to_string(),
            l["p99_ms"].to_string(),
            l["server_mean_ms"].to_string(),
            l["statuses"],
            match l["first_error"].as_str() {
                Some(e) => format!(" {}", e.chars().take(90).collect::<String>()),
                None => String::new(),
            }
        );
    }
    o
}

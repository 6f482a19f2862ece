//! The `edge` scenario: what hostile unauthenticated clients cost everyone else.
//!
//! 1. wrap at `connections` keep-alive connections, undisturbed;
//! 2. the same while `stalled` connections each hold half a request head (opened again as
//!    soon as the server closes one, so the count stays up), on their own client thread;
//!    the p99 ratio of the two is the figure (target: within 2x);
//! 3. the largest request URI `GET /api/v2/keys` accepts, for a few query parameters made
//!    as expensive as they can be (long `state`, `sort` and `filter` lists, a long `search`):
//!    the status of that request and of a longer one (must be 4xx, never 5xx), and the
//!    server CPU time per request (target: under 5 ms), from /proc/PID/stat.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::http::{self, Bodies, ReqTemplate};
use crate::report::Scenario;
use crate::stats::{clk_tck, percentile, CpuSample};

pub struct Params {
    pub addr: SocketAddr,
    pub host: String,
    pub pid: u32,
    /// authorization, bluemix-instance, accept (the list requests' headers).
    pub headers: Vec<(String, String)>,
    pub wrap: ReqTemplate,
    pub connections: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub stalled: usize,
    /// Minimum seconds of requests per bad-query measurement.
    pub bad_query_secs: f64,
}

/// Counters of the stalled-connection holder.
#[derive(Default)]
struct Holder {
    stop: AtomicBool,
    open: AtomicU64,
    opened: AtomicU64,
    connect_errors: AtomicU64,
    /// Bytes the server sent on a stalled connection (it should send none, or a 4xx).
    answered: AtomicU64,
    answered_5xx: AtomicU64,
}

/// Holds `n` connections with half a request head each, until `h.stop`; each runs until the
/// server closes it and is then opened again. Runs on its own thread and runtime, so the
/// load generator's timing is not disturbed by this client's work.
fn hold_stalled(addr: SocketAddr, n: usize, h: Arc<Holder>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            let mut tasks = Vec::with_capacity(n);
            for i in 0..n {
                let h = h.clone();
                tasks.push(tokio::spawn(async move {
                    // Spread the first connects over ~1 s (the accept queue holds 1024).
                    tokio::time::sleep(Duration::from_micros(
                        (i as u64 * 1_000_000) / n.max(1) as u64,
                    ))
                    .await;
                    while !h.stop.load(Ordering::Relaxed) {
                        let s =
                            tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
                                .await;
                        let Ok(Ok(mut s)) = s else {
                            h.connect_errors.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        };
                        h.opened.fetch_add(1, Ordering::Relaxed);
                        h.open.fetch_add(1, Ordering::Relaxed);
                        if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Stalled: ")
                            .await
                            .is_ok()
                        {
                            let mut buf = [0u8; 512];
                            let mut first = true;
                            while !h.stop.load(Ordering::Relaxed) {
                                match tokio::time::timeout(
                                    Duration::from_millis(500),
                                    s.read(&mut buf),
                                )
                                .await
                                {
                                    Ok(Ok(0)) | Ok(Err(_)) => break,
                                    Ok(Ok(k)) => {
                                        if first {
                                            first = false;
                                            h.answered.fetch_add(1, Ordering::Relaxed);
                                            if buf[..k].starts_with(b"HTTP/1.1 5") {
                                                h.answered_5xx.fetch_add(1, Ordering::Relaxed);
                                            }
                                        }
                                    }
                                    Err(_) => {}
                                }
                            }
                        }
                        h.open.fetch_sub(1, Ordering::Relaxed);
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
        });
    })
}

fn open_fds(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// Raises this process's soft open-file limit to its hard limit.
fn raise_nofile() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let l = getrlimit(Resource::Nofile);
    if let (Some(cur), Some(max)) = (l.current, l.maximum) {
        if cur < max
            && setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: Some(max),
                    maximum: Some(max),
                },
            )
            .is_ok()
        {
            return max;
        }
    }
    l.current.unwrap_or(u64::MAX)
}

fn summary(s: &Scenario) -> Value {
    let lat = &s.res.latencies_ns;
    let ms = |p: f64| percentile(lat, p).map(|n| (n as f64 / 1e3).round() / 1e3);
    let secs = s.res.elapsed.as_secs_f64();
    json!({
        "requests": lat.len(),
        "rps": if secs > 0.0 { (lat.len() as f64 / secs).round() } else { 0.0 },
        "p50_ms": ms(50.0),
        "p99_ms": ms(99.0),
        "p999_ms": ms(99.9),
        "errors": s.res.errors(),
    })
}

/// Runs the scenario: the two wrap runs (as scenarios for the table) and the edge report.
pub async fn run(p: Params) -> Result<(Vec<Scenario>, Value)> {
    let limit = raise_nofile();
    if (limit as usize) < p.stalled + 256 {
        return Err(anyhow!(
            "the open-file limit ({limit}) is too low for {} stalled connections: raise ulimit -n",
            p.stalled
        ));
    }
    let wrap = Arc::new(p.wrap.clone());
    crate::progress(&format!(
        "edge: wrap, {} connections, no stalled connections",
        p.connections
    ));
    let clean_res = http::closed_loop(
        p.addr,
        wrap.clone(),
        p.connections,
        p.warmup,
        p.duration,
        p.pid,
    )
    .await?;
    let clean = Scenario::new("edge-wrap-clean", "closed-loop", p.connections, clean_res);
    let fds_before = open_fds(p.pid);

    crate::progress(&format!(
        "edge: opening {} stalled connections (half a request head each)",
        p.stalled
    ));
    let h = Arc::new(Holder::default());
    let holder = hold_stalled(p.addr, p.stalled, h.clone());
    let ready_by = Instant::now() + Duration::from_secs(30);
    while (h.open.load(Ordering::Relaxed) as usize) < p.stalled && Instant::now() < ready_by {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let open_at_start = h.open.load(Ordering::Relaxed);
    let fds_stalled = open_fds(p.pid);
    crate::progress(&format!(
        "edge: {open_at_start} stalled connections open (server fds {fds_before:?} -> {fds_stalled:?}); wrap again"
    ));
    let opened0 = h.opened.load(Ordering::Relaxed);
    let min_open = Arc::new(AtomicU64::new(u64::MAX));
    let max_fds = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (h, min_open, max_fds, pid) = (h.clone(), min_open.clone(), max_fds.clone(), p.pid);
        let end = Instant::now() + p.warmup + p.duration;
        tokio::spawn(async move {
            while Instant::now() < end {
                min_open.fetch_min(h.open.load(Ordering::Relaxed), Ordering::Relaxed);
                if let Some(f) = open_fds(pid) {
                    max_fds.fetch_max(f, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let stalled_res =
        http::closed_loop(p.addr, wrap, p.connections, p.warmup, p.duration, p.pid).await?;
    let _ = sampler.await;
    let reopened = h.opened.load(Ordering::Relaxed) - opened0;
    h.stop.store(true, Ordering::Relaxed);
    let _ = tokio::task::spawn_blocking(move || holder.join()).await;
    let mut stalled = Scenario::new(
        "edge-wrap-stalled",
        "closed-loop",
        p.connections,
        stalled_res,
    );
    stalled.note = Some(format!(
        "{open_at_start} stalled connections held (min {} during the run, {reopened} re-opened as the server closed them)",
        min_open.load(Ordering::Relaxed)
    ));

    let (c, s) = (summary(&clean), summary(&stalled));
    let ratio = |k: &str| match (c[k].as_f64(), s[k].as_f64()) {
        (Some(a), Some(b)) if a > 0.0 => Some((b / a * 1000.0).round() / 1000.0),
        _ => None,
    };
    let p99_ratio = ratio("p99_ms");

    crate::progress("edge: the largest URIs GET /api/v2/keys accepts, and their CPU cost");
    let bad = bad_queries(&p).await?;
    let worst = bad
        .iter()
        .filter_map(|b| b["server_cpu_ms_per_request"].as_f64())
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    let any_5xx = bad.iter().any(|b| {
        b["status"].as_u64().is_some_and(|s| s >= 500)
            || b["over_long_status"].as_u64().is_some_and(|s| s >= 500)
    });

    let report = json!({
        "stalled_target": p.stalled,
        "stalled_open_at_start": open_at_start,
        "stalled_open_min": min_open.load(Ordering::Relaxed),
        "stalled_reopened_during_run": reopened,
        "stalled_connect_errors": h.connect_errors.load(Ordering::Relaxed),
        "stalled_answered": h.answered.load(Ordering::Relaxed),
        "stalled_answered_5xx": h.answered_5xx.load(Ordering::Relaxed),
        "server_fds_before": fds_before,
        "server_fds_stalled": fds_stalled,
        "server_fds_max": max_fds.load(Ordering::Relaxed),
        "wrap_clean": c,
        "wrap_stalled": s,
        "p99_ratio": p99_ratio,
        "rps_ratio": ratio("rps"),
        "bad_queries": bad,
        "verdicts": {
            "p99_with_stalled_within_2x": p99_ratio.map(|r| r <= 2.0),
            "bad_query_cpu_under_5_ms": worst.map(|w| w < 5.0),
            "no_5xx": !any_5xx && h.answered_5xx.load(Ordering::Relaxed) == 0,
        },
    });
    Ok((vec![clean, stalled], report))
}

/// One request on a new connection: the status, or None when the server closed without one.
async fn probe(addr: SocketAddr, t: &ReqTemplate) -> Option<StatusCode> {
    let mut c = http::connect(addr).await.ok()?;
    http::send(&mut c, t.build()).await.ok().map(|(s, _)| s)
}

fn list_template(p: &Params, path: &str) -> Result<ReqTemplate> {
    let headers: Vec<(&str, &str)> = p
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    ReqTemplate::new(
        Method::GET,
        path,
        &p.host,
        &headers,
        Bodies::Fixed(Bytes::new()),
    )
}

fn rejected_by_size(s: Option<StatusCode>) -> bool {
    matches!(s.map(|s| s.as_u16()), Some(414 | 431) | None)
}

/// Whether the server refuses `path` for its size (a path the client cannot even send,
/// past 64 KiB, counts as refused).
async fn too_long(p: &Params, path: &str) -> bool {
    match list_template(p, path) {
        Ok(t) => rejected_by_size(probe(p.addr, &t).await),
        Err(_) => true,
    }
}

/// The largest `reps` for which `make(reps)` is not refused for its size.
async fn largest_accepted(p: &Params, make: &dyn Fn(usize) -> String) -> Result<usize> {
    let (mut lo, mut hi) = (0usize, 1usize);
    while !too_long(p, &make(hi)).await {
        lo = hi;
        hi *= 2;
        if hi > 1 << 22 {
            return Err(anyhow!("no size limit found for {}", make(1)));
        }
    }
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if too_long(p, &make(mid)).await {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(lo)
}

async fn bad_queries(p: &Params) -> Result<Vec<Value>> {
    type Maker = Box<dyn Fn(usize) -> String>;
    let variants: Vec<(&str, Maker)> = vec![
        (
            "plain (reference)",
            Box::new(|_| "/api/v2/keys".to_string()),
        ),
        (
            "state list",
            Box::new(|n| {
                format!(
                    "/api/v2/keys?state={}",
                    vec!["0,1,2,3,5"; n.max(1)].join(",")
                )
            }),
        ),
        (
            "sort list",
            Box::new(|n| {
                format!(
                    "/api/v2/keys?sort={}",
                    vec!["-creationDate,id,state,lastUpdateDate,-expirationDate"; n.max(1)]
                        .join(",")
                )
            }),
        ),
        (
            "filter terms",
            Box::new(|n| {
                format!(
                    "/api/v2/keys?filter={}",
                    vec!["state=0,1,2,3,5+creationDate=gt:%222000-01-01T00:00:00Z%22+extractable=false"; n.max(1)].join("+")
                )
            }),
        ),
        (
            "search string",
            Box::new(|n| format!("/api/v2/keys?search={}", "k".repeat(n.max(1)))),
        ),
    ];
    let mut out = Vec::new();
    for (name, make) in &variants {
        let (path, reps) = if *name == "plain (reference)" {
            (make(0), 0)
        } else {
            let reps = largest_accepted(p, make.as_ref()).await?;
            (make(reps), reps)
        };
        let t = list_template(p, &path)?;
        let status = probe(p.addr, &t).await.map(|s| s.as_u16());
        // A little longer than the largest accepted (still under the client's 64 KiB).
        let longer = reps + reps / 8 + 1;
        let over_long = if reps > 0 {
            probe(p.addr, &list_template(p, &make(longer))?)
                .await
                .map(|s| s.as_u16())
        } else {
            None
        };
        // Sequential requests on one keep-alive connection for at least `bad_query_secs`.
        let mut conn = http::connect(p.addr).await?;
        let mut lat = Vec::new();
        let before = CpuSample::take(p.pid)?;
        let ticks0 = crate::stats::proc_ticks(&p.pid.to_string())?;
        let start = Instant::now();
        let mut statuses = std::collections::BTreeMap::<u16, u64>::new();
        while start.elapsed().as_secs_f64() < p.bad_query_secs || lat.len() < 20 {
            let t0 = Instant::now();
            match http::send(&mut conn, t.build()).await {
                Ok((s, _)) => *statuses.entry(s.as_u16()).or_insert(0) += 1,
                Err(_) => {
                    *statuses.entry(0).or_insert(0) += 1;
                    conn = http::connect(p.addr).await?;
                }
            }
            lat.push(u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX));
        }
        let ticks = crate::stats::proc_ticks(&p.pid.to_string())? - ticks0;
        let cpu = CpuSample::take(p.pid)?.since(&before);
        lat.sort_unstable();
        let n = lat.len() as f64;
        let cpu_ms = ticks as f64 / clk_tck() * 1000.0 / n;
        let ms = |q: f64| percentile(&lat, q).map(|v| (v as f64 / 1e3).round() / 1e3);
        crate::progress(&format!(
            "edge: {name}: URI {} bytes -> {status:?} (longer: {over_long:?}); {cpu_ms:.3} ms server CPU per request over {} requests",
            path.len(),
            lat.len()
        ));
        out.push(json!({
            "name": name,
            "uri_bytes": path.len(),
            "repetitions": reps,
            "status": status,
            "over_long_uri_bytes": if reps > 0 { Some(make(longer).len()) } else { None },
            "over_long_status": over_long,
            "requests": lat.len(),
            "statuses": statuses.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "server_cpu_ms_per_request": (cpu_ms * 1000.0).round() / 1000.0,
            "server_cores": (cpu.server * 100.0).round() / 100.0,
            "p50_ms": ms(50.0),
            "p99_ms": ms(99.0),
        }));
    }
    Ok(out)
}

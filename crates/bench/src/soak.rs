//! The soak scenario (BENCHMARKS.md, Soak): an open-loop load at a fixed rate for minutes, with
//! the server's memory (VmRSS) and open file descriptors sampled along the way.
//!
//! Open loop: requests are dispatched at fixed intervals whatever the server does, and each
//! latency is measured from its dispatch, so a stalled server shows up as latency (no
//! coordinated omission). Requests are spread over a few keep-alive connections; a request
//! waits for a free connection, and that wait counts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::http::{self, ReqTemplate, RunResult};
use crate::stats::percentile;

/// One sample of the server process.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    pub at_s: f64,
    pub rss_kib: u64,
    pub fds: u64,
}

fn sample(pid: u32, at_s: f64) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some(ProcSample { at_s, rss_kib, fds })
}

/// The result of a soak run.
pub struct Soak {
    pub rate: f64,
    pub res: RunResult,
    pub samples: Vec<ProcSample>,
    /// Requests of each kind sent (name, count).
    pub mix: Vec<(String, u64)>,
}

/// Runs `templates` in turn (the list is the mix: repeat a template to weight it) at `rate`
/// requests per second for `duration`, over `connections` connections; samples the server
/// every `every`.
pub async fn run(
    addr: std::net::SocketAddr,
    templates: Vec<(String, Arc<ReqTemplate>)>,
    rate: f64,
    duration: Duration,
    connections: usize,
    pid: u32,
    every: Duration,
) -> Result<Soak> {
    let mut pool = Vec::with_capacity(connections);
    for _ in 0..connections.max(1) {
        pool.push(http::connect(addr).await?);
    }
    let pool = Arc::new(Mutex::new(pool));
    let free = Arc::new(tokio::sync::Semaphore::new(connections.max(1)));
    let start = Instant::now();
    let end = start + duration;
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));

    let sampler = tokio::spawn(async move {
        let mut out = Vec::new();
        let mut t = start;
        while t <= end {
            tokio::time::sleep_until(t.into()).await;
            if let Some(s) = sample(pid, t.duration_since(start).as_secs_f64()) {
                out.push(s);
            }
            t += every;
        }
        out
    });

    let results = Arc::new(Mutex::new(RunResult::default()));
    let mut counts = vec![0u64; templates.len()];
    let mut tasks = Vec::new();
    let mut due = start;
    let mut i = 0usize;
    while due < end {
        tokio::time::sleep_until(due.into()).await;
        let k = i % templates.len().max(1);
        i += 1;
        let Some((_, t)) = templates.get(k) else {
            break;
        };
        if let Some(c) = counts.get_mut(k) {
            *c += 1;
        }
        let (t, pool, free, results) = (t.clone(), pool.clone(), free.clone(), results.clone());
        // Latency counts from this dispatch, not from `due`: tokio's timer has 1 ms resolution,
        // and its slack would otherwise be counted as server latency.
        let was_due = Instant::now();
        tasks.push(tokio::spawn(async move {
            let Ok(_permit) = free.acquire().await else {
                return;
            };
            let conn = pool.lock().await.pop();
            let mut conn = match conn {
                Some(c) => c,
                None => match http::connect(addr).await {
                    Ok(c) => c,
                    Err(_) => {
                        results.lock().await.transport_errors += 1;
                        return;
                    }
                },
            };
            let outcome = http::send(&mut conn, t.build()).await;
            let dt = was_due.elapsed();
            let keep = results.lock().await.record_outcome(outcome, dt);
            if keep {
                pool.lock().await.push(conn);
            }
        }));
        // Reap finished tasks now and then so the list stays short.
        if tasks.len() > 4096 {
            tasks.retain(|t| !t.is_finished());
        }
        due += interval;
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut res = std::mem::take(&mut *results.lock().await);
    res.elapsed = duration;
    Ok(Soak {
        rate,
        res,
        samples: sampler.await?,
        mix: templates
            .iter()
            .zip(counts)
            .map(|((n, _), c)| (n.clone(), c))
            .collect(),
    })
}

impl Soak {
    /// The figures T13 asks for, and its verdicts.
    pub fn to_json(&self) -> Value {
        let mut lat = self.res.latencies_ns.clone();
        lat.sort_unstable();
        let ms = |p: f64| percentile(&lat, p).map(|n| (n as f64 / 1e3).round() / 1e3);
        let total = lat.len() as u64 + self.res.transport_errors;
        let non_2xx = self.res.errors();
        // RSS growth from minute 2 (or 20 % of the run, if shorter) to the end.
        let secs = self.res.elapsed.as_secs_f64();
        let from_s = 120.0_f64.min(secs * 0.2);
        let at_from = self.samples.iter().find(|s| s.at_s >= from_s);
        let last = self.samples.last();
        let growth = match (at_from, last) {
            (Some(a), Some(b)) if a.rss_kib > 0 => {
                Some((b.rss_kib as f64 - a.rss_kib as f64) / a.rss_kib as f64 * 100.0)
            }
            _ => None,
        };
        let fds_from: Vec<u64> = self
            .samples
            .iter()
            .filter(|s| s.at_s >= from_s)
            .map(|s| s.fds)
            .collect();
        let fd_min = fds_from.iter().min().copied();
        let fd_max = fds_from.iter().max().copied();
        json!({
            "rate_per_s": self.rate,
            "seconds": secs,
            "requests": total,
            "achieved_per_s": if secs > 0.0 { (total as f64 / secs).round() } else { 0.0 },
            "non_2xx_or_transport_errors": non_2xx,
            "first_error": self.res.first_error,
            "p50_ms": ms(50.0),
            "p99_ms": ms(99.0),
            "p999_ms": ms(99.9),
            "max_ms": lat.last().map(|n| (*n as f64 / 1e3).round() / 1e3),
            "rss_kib_from": at_from.map(|s| s.rss_kib),
            "rss_from_s": at_from.map(|s| s.at_s),
            "rss_kib_end": last.map(|s| s.rss_kib),
            "rss_growth_pct": growth.map(|g| (g * 10.0).round() / 10.0),
            "fds_min": fd_min,
            "fds_max": fd_max,
            "samples": self.samples.iter().map(|s| json!([s.at_s.round(), s.rss_kib, s.fds])).collect::<Vec<_>>(),
            "mix": self.mix.iter().map(|(n, c)| json!({"request": n, "sent": c})).collect::<Vec<_>>(),
            "verdicts": {
                "zero_non_2xx": non_2xx == 0,
                "p99_under_50_ms": ms(99.0).map(|p| p < 50.0),
                "rss_growth_under_10_pct": growth.map(|g| g < 10.0),
                "fds_flat": match (fd_min, fd_max) { (Some(a), Some(b)) => Some(b - a <= 2), _ => None },
            },
        })
    }
}

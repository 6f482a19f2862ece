//! The HTTP/1.1 load generator: one keep-alive connection per task, requests sent back to back.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::stats::{CpuSample, CpuUse};

/// Where the request bodies come from.
#[derive(Clone)]
pub enum Bodies {
    /// The same body on every request.
    Fixed(Bytes),
    /// A pre-computed batch, handed out in order across all connections; wraps around (and
    /// counts the wrap) when the batch runs out.
    Batch {
        bodies: Arc<Vec<Bytes>>,
        next: Arc<AtomicUsize>,
    },
}

impl Bodies {
    fn next(&self) -> Bytes {
        match self {
            Bodies::Fixed(b) => b.clone(),
            Bodies::Batch { bodies, next } => {
                let i = next.fetch_add(1, Ordering::Relaxed);
                match bodies.get(i % bodies.len().max(1)) {
                    Some(b) => b.clone(),
                    None => Bytes::new(),
                }
            }
        }
    }

    /// How many bodies were handed out, and whether the batch had to be reused.
    pub fn used(&self) -> Option<(usize, bool)> {
        match self {
            Bodies::Fixed(_) => None,
            Bodies::Batch { bodies, next } => {
                let n = next.load(Ordering::Relaxed);
                Some((n, n > bodies.len()))
            }
        }
    }
}

/// Where the request URIs come from.
#[derive(Clone)]
pub enum Uris {
    /// The template's own URI on every request.
    Fixed,
    /// These URIs in order across all connections, wrapping around.
    Cycle {
        uris: Arc<Vec<Uri>>,
        next: Arc<AtomicUsize>,
    },
    /// A pseudo-random one of these on every request (splitmix64 over a shared counter: cheap,
    /// and uniform enough to defeat a server-side cache of a few hot entries).
    Random {
        uris: Arc<Vec<Uri>>,
        next: Arc<AtomicU64>,
    },
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A request that is cloned for every send (method, origin-form URI and headers are parsed once).
#[derive(Clone)]
pub struct ReqTemplate {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub bodies: Bodies,
    pub uris: Uris,
}

impl ReqTemplate {
    pub fn new(
        method: Method,
        path: &str,
        host: &str,
        headers: &[(&str, &str)],
        bodies: Bodies,
    ) -> Result<Self> {
        let uri: Uri = path.parse().with_context(|| format!("bad path {path}"))?;
        let mut map = HeaderMap::new();
        map.insert(hyper::header::HOST, HeaderValue::from_str(host)?);
        for (k, v) in headers {
            map.insert(
                HeaderName::from_bytes(k.as_bytes())?,
                HeaderValue::from_str(v)?,
            );
        }
        Ok(Self {
            method,
            uri,
            headers: map,
            bodies,
            uris: Uris::Fixed,
        })
    }

    /// The same request with its URI taken from `paths`, in order (`random` false) or at
    /// random (`random` true).
    pub fn with_paths(mut self, paths: &[String], random: bool) -> Result<Self> {
        let uris: Vec<Uri> = paths
            .iter()
            .map(|p| p.parse().with_context(|| format!("bad path {p}")))
            .collect::<Result<_>>()?;
        let uris = Arc::new(uris);
        self.uris = if random {
            Uris::Random {
                uris,
                next: Arc::new(AtomicU64::new(0)),
            }
        } else {
            Uris::Cycle {
                uris,
                next: Arc::new(AtomicUsize::new(0)),
            }
        };
        Ok(self)
    }

    fn next_uri(&self) -> Uri {
        let pick = |uris: &Vec<Uri>, i: usize| uris.get(i).cloned();
        let chosen = match &self.uris {
            Uris::Fixed => None,
            Uris::Cycle { uris, next } => {
                let i = next.fetch_add(1, Ordering::Relaxed);
                pick(uris, i % uris.len().max(1))
            }
            Uris::Random { uris, next } => {
                let r = splitmix64(next.fetch_add(1, Ordering::Relaxed));
                pick(uris, (r % uris.len().max(1) as u64) as usize)
            }
        };
        chosen.unwrap_or_else(|| self.uri.clone())
    }

    pub fn build(&self) -> Request<Full<Bytes>> {
        let body = self.bodies.next();
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.next_uri();
        *req.headers_mut() = self.headers.clone();
        req
    }
}

pub type Conn = SendRequest<Full<Bytes>>;

pub async fn connect(addr: SocketAddr) -> Result<Conn> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Sends one request on `conn` and reads the whole response body.
pub async fn send(conn: &mut Conn, req: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes)> {
    conn.ready().await?;
    let resp = conn.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// A one-off request on a fresh connection (setup calls, not measured).
pub async fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<(StatusCode, Bytes)> {
    let host = addr.to_string();
    let t = ReqTemplate::new(
        method,
        path,
        &host,
        headers,
        Bodies::Fixed(Bytes::from(body)),
    )?;
    let mut conn = connect(addr).await?;
    send(&mut conn, t.build()).await
}

/// Like [`call`] but fails unless the status is 2xx, and parses the body as JSON.
pub async fn call_json(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<serde_json::Value> {
    let (status, bytes) = call(addr, method.clone(), path, headers, body).await?;
    if !status.is_success() {
        return Err(anyhow!(
            "{method} {path} -> {status}: {}",
            String::from_utf8_lossy(&bytes)
        ));
    }
    serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "{method} {path}: body is not JSON: {}",
            String::from_utf8_lossy(&bytes)
        )
    })
}

/// What one load phase measured.
#[derive(Default)]
pub struct RunResult {
    /// Latency of every measured request, in nanoseconds (2xx and non-2xx alike).
    pub latencies_ns: Vec<u64>,
    /// Requests that got a 2xx.
    pub ok: u64,
    /// Non-2xx responses by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Connection-level failures (the connection is then reopened).
    pub transport_errors: u64,
    /// The first non-2xx body or transport error seen, for the report.
    pub first_error: Option<String>,
    /// Length of the measured window.
    pub elapsed: Duration,
    pub cpu: Option<CpuUse>,
    /// Sequential runs: the server's import-token pool depth seen just before each request.
    pub pool_depths: Vec<f64>,
}

impl RunResult {
    fn merge(&mut self, other: RunResult) {
        self.latencies_ns.extend(other.latencies_ns);
        self.ok += other.ok;
        for (k, v) in other.statuses {
            *self.statuses.entry(k).or_insert(0) += v;
        }
        self.transport_errors += other.transport_errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    pub fn errors(&self) -> u64 {
        self.statuses.values().sum::<u64>() + self.transport_errors
    }

    /// Records one request's outcome; false when the connection is unusable afterwards.
    pub fn record_outcome(&mut self, outcome: Result<(StatusCode, Bytes)>, dt: Duration) -> bool {
        self.record(outcome, dt)
    }

    fn record(&mut self, outcome: Result<(StatusCode, Bytes)>, dt: Duration) -> bool {
        match outcome {
            Ok((status, body)) => {
                self.latencies_ns
                    .push(dt.as_nanos().try_into().unwrap_or(u64::MAX));
                if status.is_success() {
                    self.ok += 1;
                } else {
                    *self.statuses.entry(status.as_u16()).or_insert(0) += 1;
                    if self.first_error.is_none() {
                        let text = String::from_utf8_lossy(&body);
                        let text: String = text.chars().take(300).collect();
                        self.first_error = Some(format!("{status}: {text}"));
                    }
                }
                true
            }
            Err(e) => {
                self.transport_errors += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(format!("transport: {e:#}"));
                }
                false
            }
        }
    }
}

/// Closed-loop load: `connections` tasks, each on its own keep-alive connection, sending
/// requests back to back for `warmup + duration`. Only requests that start after the warm-up
/// are recorded. `server_pid` is sampled for CPU use over the measured window.
pub async fn closed_loop(
    addr: SocketAddr,
    template: Arc<ReqTemplate>,
    connections: usize,
    warmup: Duration,
    duration: Duration,
    server_pid: u32,
) -> Result<RunResult> {
    closed_loop_nodes(
        &[addr],
        template,
        connections,
        warmup,
        duration,
        &[server_pid],
    )
    .await
}

/// [`closed_loop`] over several nodes: connection `i` goes to `addrs[i % addrs.len()]` (round
/// robin), and the server CPU is summed over `server_pids`.
pub async fn closed_loop_nodes(
    addrs: &[SocketAddr],
    template: Arc<ReqTemplate>,
    connections: usize,
    warmup: Duration,
    duration: Duration,
    server_pids: &[u32],
) -> Result<RunResult> {
    let mut conns = Vec::with_capacity(connections);
    for i in 0..connections {
        let addr = addrs[i % addrs.len().max(1)];
        conns.push((addr, connect(addr).await?));
    }
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;

    let pids = server_pids.to_vec();
    let sampler = tokio::spawn(async move {
        tokio::time::sleep_until(measure_from.into()).await;
        let before = CpuSample::take_all(&pids);
        tokio::time::sleep_until(end.into()).await;
        let after = CpuSample::take_all(&pids);
        match (before, after) {
            (Ok(b), Ok(a)) => Some(a.since(&b)),
            _ => None,
        }
    });

    let mut tasks = Vec::with_capacity(connections);
    for (addr, mut conn) in conns {
        let template = template.clone();
        tasks.push(tokio::spawn(async move {
            let mut res = RunResult::default();
            let mut warm = RunResult::default();
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                let req = template.build();
                let t0 = Instant::now();
                let outcome = send(&mut conn, req).await;
                let dt = t0.elapsed();
                let target = if now >= measure_from {
                    &mut res
                } else {
                    &mut warm
                };
                if !target.record(outcome, dt) {
                    // The connection is gone: back off briefly, then open a new one.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    match connect(addr).await {
                        Ok(c) => conn = c,
                        Err(e) => {
                            res.transport_errors += 1;
                            if res.first_error.is_none() {
                                res.first_error = Some(format!("reconnect: {e:#}"));
                            }
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }
            // Errors during the warm-up are still errors of the scenario.
            res.transport_errors += warm.transport_errors;
            for (k, v) in warm.statuses {
                *res.statuses.entry(k).or_insert(0) += v;
            }
            if res.first_error.is_none() {
                res.first_error = warm.first_error;
            }
            res
        }));
    }
    let mut total = RunResult::default();
    for t in tasks {
        total.merge(t.await?);
    }
    total.elapsed = duration;
    total.cpu = sampler.await?;
    Ok(total)
}

/// Sequential requests on one keep-alive connection, `pause` before each one. With
/// `pool_wait`, also waits (up to that long) until the server reports at least one ready
/// import-token keypair, so that every request is served from the pool; the depth seen before
/// each request is recorded either way (when the server serves /metrics).
pub async fn sequential(
    addr: SocketAddr,
    template: Arc<ReqTemplate>,
    samples: usize,
    pause: Duration,
    pool_wait: Option<Duration>,
    server_pid: u32,
    progress: &str,
) -> Result<RunResult> {
    let mut conn = connect(addr).await?;
    let mut res = RunResult::default();
    let before = CpuSample::take(server_pid).ok();
    let start = Instant::now();
    for i in 0..samples {
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        let deadline = Instant::now() + pool_wait.unwrap_or(Duration::ZERO);
        let mut depth = server_metrics(addr).await.and_then(|m| m.pool_depth);
        while pool_wait.is_some() && depth == Some(0.0) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            depth = server_metrics(addr).await.and_then(|m| m.pool_depth);
        }
        if let Some(d) = depth {
            res.pool_depths.push(d);
        }
        let req = template.build();
        let t0 = Instant::now();
        let outcome = send(&mut conn, req).await;
        let dt = t0.elapsed();
        if !res.record(outcome, dt) {
            conn = connect(addr).await?;
        }
        eprint!("\r  {progress}: {}/{samples}   ", i + 1);
    }
    eprintln!();
    res.elapsed = start.elapsed();
    let after = CpuSample::take(server_pid).ok();
    if let (Some(b), Some(a)) = (before, after) {
        res.cpu = Some(a.since(&b));
    }
    Ok(res)
}

/// GET /metrics of every node, merged (None if a node does not serve it).
pub async fn nodes_metrics(addrs: &[SocketAddr]) -> Option<crate::stats::ServerMetrics> {
    let mut all: Option<crate::stats::ServerMetrics> = None;
    for &a in addrs {
        let m = server_metrics(a).await?;
        match &mut all {
            Some(x) => x.merge(m),
            None => all = Some(m),
        }
    }
    all
}

/// GET /metrics, parsed (None if the server does not serve it on this address).
pub async fn server_metrics(addr: SocketAddr) -> Option<crate::stats::ServerMetrics> {
    match call(addr, Method::GET, "/metrics", &[], Vec::new()).await {
        Ok((s, body)) if s.is_success() => Some(crate::stats::ServerMetrics::parse(
            &String::from_utf8_lossy(&body),
        )),
        _ => None,
    }
}

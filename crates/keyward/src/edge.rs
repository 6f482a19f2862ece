//! The network edge: the accept loop and per-connection rules of every listener (the main
//! one, plain or TLS, and the ops listener of `--metrics-listen`).
//!
//! A client that has not authenticated can open connections and send any bytes, so every
//! connection is bounded in time and the number of connections is bounded per listener:
//!
//! - **Header timeout** (`--header-timeout`): a new connection has this long, from `accept`,
//!   to finish its TLS handshake and send its first request head. Later, once the first byte
//!   of a request head has arrived, the rest must arrive within the same time.
//! - **Idle timeout** (`--idle-timeout`): a keep-alive connection with no request in flight
//!   is closed after this long without the first byte of a new request. A response the peer
//!   does not read (no progress writing for this long) closes the connection too.
//! - **Body deadline and rate floor** (`--body-timeout`, `--min-body-rate`): from the first
//!   read of a request body, the whole body must arrive within the deadline, and after a
//!   grace of [`BODY_RATE_GRACE`] the bytes received must keep up with the floor. A body
//!   that does not is cut off: the handler sees a failed read (so it changes nothing) and
//!   the answer is `408` with `Connection: close`.
//! - **Connection cap** (`--max-connections`): a listener holds at most this many
//!   connections. At the cap it stops calling `accept`, so new connections wait in the
//!   kernel's accept queue (first come, first served) until a held one closes. Accept errors
//!   (`EMFILE` when the process runs out of descriptors) are retried after a short, growing
//!   pause, never in a hot loop.
//! - **Header size**: a request line plus headers of more than [`MAX_HEADER_BYTES`] gets 431.
//!
//! hyper's own `header_read_timeout` is not used: it starts as soon as a response has been
//! written, so it would close every idle keep-alive connection after the header timeout and
//! the idle timeout could never be longer. Each connection runs a watchdog instead, fed by
//! the connection's reads and writes and by its requests starting and finishing.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use parking_lot::RwLock;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::{Instant, Sleep};

/// Largest request line plus headers, in bytes (`431` past it).
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
/// How long a request body may arrive slower than `--min-body-rate` before the floor applies.
pub const BODY_RATE_GRACE: Duration = Duration::from_secs(2);
/// Largest accepted `--max-connections`.
pub const MAX_CONNECTIONS_LIMIT: usize = 1_000_000;
/// Descriptors kept free beyond the connection caps (database, files, the listeners).
const FD_MARGIN: u64 = 256;

/// The edge settings of every listener (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeSettings {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    /// Bytes per second; 0 turns the floor off (the body deadline still applies).
    pub min_body_rate: u64,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl Default for EdgeSettings {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            min_body_rate: 1024,
            idle_timeout: Duration::from_secs(60),
            max_connections: 4096,
        }
    }
}

/// The TLS configuration of a listener, replaceable while it runs (SIGHUP reload): each new
/// connection handshakes with the configuration current at its accept.
#[derive(Clone)]
pub struct TlsConfig(Arc<RwLock<Arc<rustls::ServerConfig>>>);

impl TlsConfig {
    pub fn new(cfg: rustls::ServerConfig) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(cfg))))
    }

    pub fn reload(&self, cfg: rustls::ServerConfig) {
        *self.0.write() = Arc::new(cfg);
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.0.read().clone())
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, so the connection caps of `listeners`
/// listeners fit. Returns a warning when they still do not: past the limit, `accept` fails
/// with `EMFILE` (retried after a pause) instead of connections waiting in the accept queue.
pub fn raise_nofile_limit(settings: &EdgeSettings, listeners: usize) -> Option<String> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    let hard = lim.maximum.or_else(|| {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
    });
    let mut soft = lim.current.unwrap_or(u64::MAX);
    if let Some(hard) = hard {
        if soft < hard {
            match setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: Some(hard),
                    maximum: lim.maximum,
                },
            ) {
                Ok(()) => soft = hard,
                Err(e) => tracing::warn!(error = %e, "could not raise RLIMIT_NOFILE"),
            }
        }
    }
    let need = (settings.max_connections as u64)
        .saturating_mul(listeners as u64)
        .saturating_add(FD_MARGIN);
    (soft < need).then(|| {
        format!(
            "the open-file limit ({soft}) is below what --max-connections {} on {listeners} \
             listener(s) needs ({need}): past it new connections are refused until descriptors \
             free up. Raise the hard limit (ulimit -Hn, systemd LimitNOFILE=) or lower \
             --max-connections",
            settings.max_connections
        )
    })
}

/// Serves `router` on `listener` until `stop` turns true; then stops accepting, lets every
/// connection finish its request in flight (idle ones close at once) and returns. With
/// `grace`, connections still open after it are closed. `name` labels the log lines.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<TlsConfig>,
    settings: EdgeSettings,
    name: &'static str,
    mut stop: watch::Receiver<bool>,
    grace: Option<Duration>,
) {
    let cap = settings.max_connections.clamp(1, MAX_CONNECTIONS_LIMIT);
    let slots = Arc::new(Semaphore::new(cap));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(true)
        .header_read_timeout(None)
        .max_header_size(MAX_HEADER_BYTES)
        .max_buf_size(2 * MAX_HEADER_BYTES);
    let ctx = Arc::new(Ctx {
        http,
        router,
        settings,
        name,
    });
    // 0: serving; 1: finish in-flight requests and close; 2: close now.
    let (conns_tx, conns_rx) = watch::channel(0u8);
    let mut backoff = Duration::from_millis(10);
    let mut warned_at: Option<Instant> = None;
    'accept: loop {
        // Wait for a free slot first: at the cap, nothing is accepted and new connections
        // queue in the kernel.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break 'accept,
            },
            _ = stop.wait_for(|s| *s) => break 'accept,
        };
        let (stream, peer) = loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                _ = stop.wait_for(|s| *s) => break 'accept,
            };
            match accepted {
                Ok(x) => {
                    backoff = Duration::from_millis(10);
                    break x;
                }
                Err(e) if is_per_connection_error(&e) => continue,
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM: wait for resources to free up.
                    if warned_at.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        tracing::warn!(listener = name, error = %e, "accept failed; retrying after a pause");
                        warned_at = Some(Instant::now());
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.wait_for(|s| *s) => break 'accept,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        };
        let ctx = ctx.clone();
        let tls = tls.as_ref().map(TlsConfig::acceptor);
        let conns = conns_rx.clone();
        tokio::spawn(async move {
            connection(stream, peer, tls, ctx, conns).await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = conns_tx.send(1);
    let all = u32::try_from(cap).unwrap_or(u32::MAX);
    let drained = async {
        let _ = slots.acquire_many(all).await;
    };
    match grace {
        None => drained.await,
        Some(g) => {
            if tokio::time::timeout(g, drained).await.is_err() {
                tracing::info!(
                    listener = name,
                    "closing the connections still open after the shutdown grace"
                );
                let _ = conns_tx.send(2);
                let _ = slots.acquire_many(all).await;
            }
        }
    }
}

/// Errors of `accept` that concern only the connection being accepted.
fn is_per_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock
    )
}

struct Ctx {
    http: hyper::server::conn::http1::Builder,
    router: axum::Router,
    settings: EdgeSettings,
    name: &'static str,
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    ctx: Arc<Ctx>,
    mut conns: watch::Receiver<u8>,
) {
    let accepted = Instant::now();
    let _ = stream.set_nodelay(true);
    let Some(acceptor) = tls else {
        return drive(stream, peer, accepted, ctx, conns).await;
    };
    let deadline = accepted + ctx.settings.header_timeout;
    let handshake = tokio::select! {
        r = tokio::time::timeout_at(deadline, acceptor.accept(stream)) => r,
        _ = conns.wait_for(|s| *s >= 1) => return,
    };
    match handshake {
        Ok(Ok(tls)) => drive(tls, peer, accepted, ctx, conns).await,
        Ok(Err(e)) => {
            tracing::debug!(listener = ctx.name, %peer, error = %e, "TLS handshake failed")
        }
        Err(_) => tracing::debug!(listener = ctx.name, %peer, "TLS handshake timed out"),
    }
}

/// Serves HTTP/1.1 on one connection under its watchdog.
async fn drive<I>(
    io: I,
    peer: SocketAddr,
    accepted: Instant,
    ctx: Arc<Ctx>,
    mut conns: watch::Receiver<u8>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let state = Arc::new(ConnState::new(accepted));
    let io = TokioIo::new(Watched {
        inner: io,
        state: state.clone(),
    });
    let svc = EdgeService {
        router: ctx.router.clone(),
        peer,
        state: state.clone(),
        settings: ctx.settings,
    };
    let conn = ctx.http.serve_connection(io, svc);
    tokio::pin!(conn);
    let watchdog = state.watchdog(&ctx.settings);
    tokio::pin!(watchdog);
    let mut closing = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(listener = ctx.name, %peer, error = %e, "connection ended with an error");
                }
                return;
            }
            why = watchdog.as_mut() => {
                tracing::debug!(listener = ctx.name, %peer, reason = why, "closing connection");
                return;
            }
            changed = conns.changed() => {
                let now = *conns.borrow_and_update();
                if changed.is_err() || now >= 2 {
                    return;
                }
                if now == 1 && !closing {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// What a connection's watchdog reads. Every field is touched only by the task that drives
/// the connection (hyper polls the service future inside it), so relaxed atomics suffice.
struct ConnState {
    base: Instant,
    /// Requests whose response body has not been handed to hyper in full yet.
    in_flight: AtomicUsize,
    /// Whether a request head has been received on this connection.
    served: AtomicBool,
    /// Milliseconds since `base` when the connection last became idle.
    idle_since: AtomicU64,
    /// Milliseconds since `base` (+1) of the first byte read while idle; 0: none.
    head_started: AtomicU64,
    /// Milliseconds since `base` (+1) since when writing has been blocked; 0: not blocked.
    write_blocked: AtomicU64,
}

impl ConnState {
    fn new(base: Instant) -> Self {
        Self {
            base,
            in_flight: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
            write_blocked: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn at(&self, ms: u64) -> Instant {
        self.base + Duration::from_millis(ms)
    }

    fn on_read(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_started.load(Ordering::Relaxed) == 0
        {
            self.head_started
                .store(self.now_ms() + 1, Ordering::Relaxed);
        }
    }

    fn on_write(&self, blocked: bool) {
        let was = self.write_blocked.load(Ordering::Relaxed);
        if blocked && was == 0 {
            self.write_blocked
                .store(self.now_ms() + 1, Ordering::Relaxed);
        } else if !blocked && was != 0 {
            self.write_blocked.store(0, Ordering::Relaxed);
        }
    }

    fn request_started(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.served.store(true, Ordering::Relaxed);
        self.head_started.store(0, Ordering::Relaxed);
        RequestGuard(self.clone())
    }

    /// When the connection must be closed if nothing changes, and why.
    fn deadline(&self, s: &EdgeSettings) -> Option<(Instant, &'static str)> {
        let blocked = match self.write_blocked.load(Ordering::Relaxed) {
            0 => None,
            t => Some((
                self.at(t - 1) + s.idle_timeout,
                "peer does not read the response",
            )),
        };
        let waiting = if self.in_flight.load(Ordering::Relaxed) > 0 {
            None
        } else if !self.served.load(Ordering::Relaxed) {
            Some((
                self.base + s.header_timeout,
                "no request head within the header timeout",
            ))
        } else {
            match self.head_started.load(Ordering::Relaxed) {
                0 => Some((
                    self.at(self.idle_since.load(Ordering::Relaxed)) + s.idle_timeout,
                    "idle keep-alive connection",
                )),
                t => Some((
                    self.at(t - 1) + s.header_timeout,
                    "request head not complete within the header timeout",
                )),
            }
        };
        match (blocked, waiting) {
            (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
            (a, b) => a.or(b),
        }
    }

    /// Resolves when the connection has overstayed, with the reason.
    ///
    /// The watchdog is lazy, so that serving a request costs no timer or wake-up: one timer per
    /// connection is re-armed only when it fires, for the connection's deadline or at most one
    /// `tick` (a quarter of the shorter timeout) ahead, and the deadline is worked out afresh
    /// each time. A deadline that moves earlier meanwhile (a request head starting on an idle
    /// connection) is therefore noticed within one tick of it: connections overstay by at most
    /// a quarter of a timeout.
    async fn watchdog(&self, s: &EdgeSettings) -> &'static str {
        let tick = (s.header_timeout.min(s.idle_timeout) / 4).max(Duration::from_millis(20));
        let first = self
            .deadline(s)
            .map_or(self.base + tick, |(at, _)| at.min(self.base + tick));
        let sleep = tokio::time::sleep_until(first);
        tokio::pin!(sleep);
        loop {
            sleep.as_mut().await;
            let now = Instant::now();
            match self.deadline(s) {
                Some((at, why)) if at <= now => return why,
                Some((at, _)) => sleep.as_mut().reset(at.min(now + tick)),
                None => sleep.as_mut().reset(now + tick),
            }
        }
    }
}

/// Held while a request is in flight (moved into its response body).
struct RequestGuard(Arc<ConnState>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let st = &self.0;
        if st.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            st.idle_since.store(st.now_ms(), Ordering::Relaxed);
            st.head_started.store(0, Ordering::Relaxed);
        }
    }
}

/// The connection's stream, reporting reads and blocked writes to its [`ConnState`].
struct Watched<I> {
    inner: I,
    state: Arc<ConnState>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.on_read();
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.state.on_write(r.is_pending());
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.state.on_write(r.is_pending());
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.state.on_write(r.is_pending());
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.state.on_write(r.is_pending());
        r
    }
}

/// The per-connection service: adds the peer address (`ConnectInfo`), puts the body under
/// its deadline and turns a cut-off body into `408`.
#[derive(Clone)]
struct EdgeService {
    router: axum::Router,
    peer: SocketAddr,
    state: Arc<ConnState>,
    settings: EdgeSettings,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl hyper::service::Service<Request<Incoming>> for EdgeService {
    type Response = Response<GuardedBody>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let guard = self.state.request_started();
        let cut_off = Arc::new(AtomicBool::new(false));
        let (mut parts, body) = req.into_parts();
        parts.extensions.insert(ConnectInfo(self.peer));
        let body = DeadlineBody {
            inner: body,
            timeout: self.settings.body_timeout,
            min_rate: self.settings.min_body_rate,
            started: None,
            received: 0,
            timer: None,
            cut_off: cut_off.clone(),
        };
        let req = Request::from_parts(parts, Body::new(body));
        let fut = tower::ServiceExt::oneshot(self.router.clone(), req);
        Box::pin(async move {
            let resp = match fut.await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            let resp = if cut_off.load(Ordering::Relaxed) {
                request_timeout()
            } else {
                resp
            };
            let (parts, body) = resp.into_parts();
            Ok(Response::from_parts(
                parts,
                GuardedBody {
                    inner: body,
                    _guard: guard,
                },
            ))
        })
    }
}

/// `408` in the Key Protect error envelope; the connection is closed after it.
fn request_timeout() -> Response<Body> {
    let status = StatusCode::REQUEST_TIMEOUT;
    let body = json!({
        "metadata": {"collectionType": "application/vnd.ibm.kms.error+json", "collectionTotal": 1},
        "resources": [{
            "errorMsg": "Request Timeout: the request body did not arrive in time: Please see `reasons` for more details (REQUEST_TIMEOUT_ERR)",
            "reasons": [{
                "code": "REQUEST_TIMEOUT_ERR",
                "message": "The request body arrived too slowly or not in full within the body timeout",
                "status": 408,
                "moreInfo": "https://cloud.ibm.com/apidocs/key-protect",
            }],
        }],
    });
    let mut resp = keyward_api::json_response(status, &body);
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// The error a cut-off body reports to the handler reading it.
#[derive(Debug)]
struct BodyTimeout;

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request body timed out")
    }
}

impl std::error::Error for BodyTimeout {}

/// A request body under the body deadline and the rate floor. The clock starts at the
/// first read, so a handler that reads late does not cut off a client that sent on time.
struct DeadlineBody {
    inner: Incoming,
    timeout: Duration,
    min_rate: u64,
    started: Option<Instant>,
    received: u64,
    timer: Option<Pin<Box<Sleep>>>,
    cut_off: Arc<AtomicBool>,
}

impl DeadlineBody {
    /// The instant by which more bytes must have arrived (or the body ended).
    fn deadline(&self, started: Instant) -> Instant {
        let whole = started + self.timeout;
        if self.min_rate == 0 {
            return whole;
        }
        // `received` bytes keep up with the floor until received / rate seconds in.
        let kept_up = Duration::from_secs_f64(self.received as f64 / self.min_rate as f64);
        whole.min(started + kept_up.max(BODY_RATE_GRACE))
    }
}

impl hyper::body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.cut_off.load(Ordering::Relaxed) {
            return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
        }
        let started = *this.started.get_or_insert_with(Instant::now);
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.received = this.received.saturating_add(d.len() as u64);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let at = this.deadline(started);
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                if timer.deadline() != at {
                    timer.as_mut().reset(at);
                }
                if timer.as_mut().poll(cx).is_ready() {
                    this.cut_off.store(true, Ordering::Relaxed);
                    return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that holds its request's [`RequestGuard`] until hyper has taken it all.
struct GuardedBody {
    inner: Body,
    _guard: RequestGuard,
}

impl hyper::body::Body for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

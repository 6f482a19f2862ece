//! The network edge (crates/keyward/src/edge.rs): header, idle and body timeouts, the body
//! rate floor and the connection cap, on the plain, TLS and ops listeners, over raw sockets.
//!
//! The servers run with short timeouts (header 1 s, idle 1 s, body 2 s) and a cap of 8. Every
//! wait below is a liveness bound, many times the timeout it checks, not a measurement.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;

const CAP: usize = 8;
/// Longest wait for a connection the server must close (the timeouts are 1-2 s).
const CLOSE_BOUND: Duration = Duration::from_secs(15);

fn edge_args(dir: &Path) -> ServeArgs {
    let mut a = base_args(dir);
    a.header_timeout = Some(1);
    a.idle_timeout = Some(1);
    a.body_timeout = Some(2);
    a.min_body_rate = Some(1024);
    a.max_connections = Some(CAP);
    a
}

/// Starts a server; also returns the ops listener's address when `--metrics-listen` is set.
async fn start_edge(args: ServeArgs) -> (Running, Option<SocketAddr>) {
    let settings = args.resolve().unwrap();
    let srv = server::start_with_clock(&settings, Arc::new(SystemClock))
        .await
        .unwrap();
    let ops = srv.ops_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (addr, store) = (srv.addr, srv.store.clone());
    tokio::spawn(srv.serve(async move {
        let _ = rx.await;
    }));
    (
        Running {
            addr,
            store,
            stop: Some(tx),
            _dir: None,
        },
        ops,
    )
}

/// Reads until the peer closes the connection. `Some(bytes read)` when it closed within
/// `limit`, `None` when it was still open.
async fn closed_within<S: AsyncRead + Unpin>(s: &mut S, limit: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let done = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    done.ok().map(|()| out)
}

/// Reads one HTTP/1.1 response with a Content-Length body: (status, body).
async fn read_response<S: AsyncRead + Unpin>(s: &mut S) -> (u16, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(CLOSE_BOUND, s.read(&mut chunk))
            .await
            .expect("no response")
            .unwrap();
        assert!(
            n > 0,
            "closed before a response: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status: u16 = head[9..12].parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&chunk[..n]);
    }
    (status, buf[head_end..head_end + len].to_vec())
}

fn assert_no_5xx(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    assert!(
        !text.starts_with("HTTP/1.1 5") && !text.starts_with("HTTP/1.0 5"),
        "the server answered 5xx: {text}"
    );
}

/// A connection that sends half a request head, one that trickles a head a byte at a time,
/// and one that sends nothing are all closed after the header timeout.
async fn partial_headers_are_closed(addr: SocketAddr) {
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let trickle = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = trickle.into_split();
    let feeding = tokio::spawn(async move {
        // Never completes the head: a byte every 100 ms keeps the connection busy.
        for b in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: "
            .iter()
            .cycle()
        {
            if wr.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    for (name, got) in [
        ("half a head", closed_within(&mut half, CLOSE_BOUND).await),
        ("no bytes", closed_within(&mut silent, CLOSE_BOUND).await),
        ("a trickled head", closed_within(&mut rd, CLOSE_BOUND).await),
    ] {
        let got = got.unwrap_or_else(|| panic!("{name}: still open after {CLOSE_BOUND:?}"));
        assert_no_5xx(&got);
    }
    feeding.abort();
}

#[tokio::test]
async fn partial_header_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, _) = start_edge(edge_args(dir.path())).await;
    partial_headers_are_closed(srv.addr).await;
    // The server still serves.
    let r = reqwest::get(format!("http://{}/healthz", srv.addr))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Sends the head of a key creation, then its body in `step`-byte pieces every `every`;
/// returns what the server sent back before it closed the connection (None: still open).
async fn post_key_slowly(
    addr: SocketAddr,
    token: &str,
    inst: &str,
    body: Vec<u8>,
    step: usize,
    every: Duration,
) -> Option<Vec<u8>> {
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let head = format!(
        "POST /api/v2/keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Bluemix-Instance: {inst}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    wr.write_all(head.as_bytes()).await.unwrap();
    let feeding = tokio::spawn(async move {
        for piece in body.chunks(step) {
            if wr.write_all(piece).await.is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
        // Keep the write half open: only the server may end this connection.
        std::future::pending::<()>().await;
    });
    let got = closed_within(&mut rd, Duration::from_secs(30)).await;
    feeding.abort();
    got
}

async fn key_count(base: &str, token: &str, inst: &str) -> u64 {
    let r: Value = reqwest::Client::new()
        .get(format!("{base}/api/v2/keys"))
        .bearer_auth(token)
        .header("bluemix-instance", inst)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["metadata"]["collectionTotal"].as_u64().unwrap()
}

fn assert_408(got: Option<Vec<u8>>, what: &str) {
    let got = got.unwrap_or_else(|| panic!("{what}: the connection is still open"));
    let text = String::from_utf8_lossy(&got);
    assert!(
        got.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{what}: expected 408 or a closed connection, got {text}"
    );
    if !got.is_empty() {
        assert!(
            text.to_ascii_lowercase().contains("connection: close"),
            "{text}"
        );
        assert!(text.contains("REQUEST_TIMEOUT_ERR"), "{text}");
    }
}

/// A body slower than --min-body-rate is cut off after the grace, long before the body
/// deadline (60 s here), and the key it would have created does not exist.
#[tokio::test]
async fn slow_body_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = edge_args(dir.path());
    args.body_timeout = Some(60);
    let (srv, _) = start_edge(args).await;
    let (apikey, inst) = tenant(&*srv.store, "slow-body").await;
    let base = format!("http://{}", srv.addr);
    let t = token(&reqwest::Client::new(), &base, &apikey).await;
    let body = serde_json::to_vec(&key_body("trickled")).unwrap();
    // 2 bytes every 250 ms: 8 B/s, far under 1024 B/s; the body would take ~50 s.
    let got = post_key_slowly(srv.addr, &t, &inst, body, 2, Duration::from_millis(250)).await;
    assert_408(got, "a body under the rate floor");
    assert_eq!(
        key_count(&base, &t, &inst).await,
        0,
        "the handler changed something"
    );
}

/// A body above the rate floor that does not arrive in full within --body-timeout is cut
/// off too (and creates nothing); the same body sent at once creates its key.
#[tokio::test]
async fn body_deadline_cuts_off_a_body_above_the_floor() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, _) = start_edge(edge_args(dir.path())).await;
    let (apikey, inst) = tenant(&*srv.store, "body-deadline").await;
    let base = format!("http://{}", srv.addr);
    let t = token(&reqwest::Client::new(), &base, &apikey).await;
    // Valid JSON padded with whitespace to 12 KiB.
    let mut body = serde_json::to_vec(&key_body("late")).unwrap();
    body.resize(12 * 1024, b' ');
    // 512 bytes every 100 ms: ~5 KiB/s, above the floor; the whole body takes ~2.4 s > 2 s.
    let got = post_key_slowly(
        srv.addr,
        &t,
        &inst,
        body.clone(),
        512,
        Duration::from_millis(100),
    )
    .await;
    assert_408(got, "a body past the body deadline");
    assert_eq!(
        key_count(&base, &t, &inst).await,
        0,
        "the handler changed something"
    );
    // Sent at once, the same body is fine.
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let head = format!(
        "POST /api/v2/keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t}\r\n\
         Bluemix-Instance: {inst}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(&[head.as_bytes(), &body].concat())
        .await
        .unwrap();
    let (status, _) = read_response(&mut s).await;
    assert_eq!(status, 201);
    assert_eq!(key_count(&base, &t, &inst).await, 1);
}

/// After a complete request, an idle keep-alive connection is closed after the idle
/// timeout; the header timeout (shorter here) does not apply to a connection that is idle.
#[tokio::test]
async fn idle_keepalive_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = edge_args(dir.path());
    args.idle_timeout = Some(3);
    let (srv, _) = start_edge(args).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let req = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    s.write_all(req).await.unwrap();
    assert_eq!(read_response(&mut s).await.0, 200);
    // Idle for longer than the header timeout (1 s) but within the idle timeout (3 s): the
    // connection is still usable.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.write_all(req).await.unwrap();
    assert_eq!(read_response(&mut s).await.0, 200);
    // Then idle: closed.
    let got = closed_within(&mut s, CLOSE_BOUND)
        .await
        .expect("an idle keep-alive connection stayed open");
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
}

fn self_signed(dir: &Path, host: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    keyward::tls::run(keyward::tls::TlsCmd::SelfSigned {
        out_dir: dir.to_path_buf(),
        hosts: vec![host.into()],
    })
    .unwrap();
    (dir.join("cert.pem"), dir.join("key.pem"))
}

fn tls_connector(cert: &Path) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

async fn tls_connect(
    addr: SocketAddr,
    cert: &Path,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tls_connector(cert).connect(name, tcp).await
}

async fn tls_server(dir: &Path) -> (Running, std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = self_signed(&dir.join("tls"), "localhost");
    let mut args = edge_args(&dir.join("data"));
    args.tls_cert = Some(cert.clone());
    args.tls_key = Some(key.clone());
    (start_edge(args).await.0, cert, key)
}

/// On the TLS listener: a handshake that stops half way and a connection that sends
/// nothing are closed; after a complete handshake, half a request head is closed too.
#[tokio::test]
async fn tls_partial_handshake_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, cert, _) = tls_server(dir.path()).await;
    // A TLS record header announcing a 512-byte ClientHello, then only its first bytes.
    let mut partial = TcpStream::connect(srv.addr).await.unwrap();
    partial
        .write_all(&[
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ])
        .await
        .unwrap();
    let mut silent = TcpStream::connect(srv.addr).await.unwrap();
    let mut tls = tls_connect(srv.addr, &cert).await.unwrap();
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    tls.flush().await.unwrap();
    assert!(
        closed_within(&mut partial, CLOSE_BOUND).await.is_some(),
        "a partial handshake stayed open"
    );
    assert!(
        closed_within(&mut silent, CLOSE_BOUND).await.is_some(),
        "a connection without a handshake stayed open"
    );
    let got = closed_within(&mut tls, CLOSE_BOUND)
        .await
        .expect("half a request head over TLS stayed open");
    assert_no_5xx(&got);
    // A complete exchange over TLS still works, and its keep-alive connection is closed
    // once idle.
    let mut ok = tls_connect(srv.addr, &cert).await.unwrap();
    ok.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    ok.flush().await.unwrap();
    assert_eq!(read_response(&mut ok).await.0, 200);
    assert!(
        closed_within(&mut ok, CLOSE_BOUND).await.is_some(),
        "an idle TLS keep-alive connection stayed open"
    );
}

/// A new certificate written over the files is served after SIGHUP, without a restart.
#[tokio::test]
async fn tls_certificate_reloads_on_sighup() {
    use tokio::signal::unix::{signal, SignalKind};
    // A SIGHUP that arrives before the server's handler is registered must not end the test
    // process: listen for it here as well.
    let _hup = signal(SignalKind::hangup()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (srv, cert, key) = tls_server(dir.path()).await;
    let old = dir.path().join("old-cert.pem");
    std::fs::copy(&cert, &old).unwrap();
    let (new_cert, new_key) = self_signed(&dir.path().join("new"), "localhost");
    assert!(tls_connect(srv.addr, &new_cert).await.is_err());
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    let mut reloaded = false;
    for _ in 0..50 {
        rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::HUP)
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        if tls_connect(srv.addr, &new_cert).await.is_ok() {
            reloaded = true;
            break;
        }
    }
    assert!(reloaded, "the new certificate is not served after SIGHUP");
    assert!(tls_connect(srv.addr, &old).await.is_err());
}

/// The ops listener (--metrics-listen) has the same timeouts: half a request head and an
/// idle keep-alive connection are closed, and /healthz still answers.
#[tokio::test]
async fn ops_listener_has_timeouts() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = edge_args(dir.path());
    args.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let (_srv, ops) = start_edge(args).await;
    let ops = ops.expect("an ops listener");
    partial_headers_are_closed(ops).await;
    let mut s = TcpStream::connect(ops).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut s).await.0, 200);
    let got = closed_within(&mut s, CLOSE_BOUND)
        .await
        .expect("an idle keep-alive connection to the ops listener stayed open");
    assert!(got.is_empty());
}

/// The socket inodes of this process's open descriptors.
fn socket_inodes() -> HashSet<u64> {
    let mut out = HashSet::new();
    for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        if let Ok(target) = std::fs::read_link(e.path()) {
            let t = target.to_string_lossy();
            if let Some(n) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                out.insert(n.parse().unwrap());
            }
        }
    }
    out
}

/// Descriptors this process holds for connections accepted on `port` (the server's side):
/// the inodes of TCP sockets whose local port is `port` and that are not the listening socket.
///
/// Other tests of this binary run beside this one, and a server of theirs that listened on
/// the same port earlier (the kernel hands out freed ports again) may still hold a
/// connection accepted then: the caller subtracts the sockets seen before its own server
/// accepted anything.
///
/// Neither /proc/self/fd nor /proc/self/net/tcp is read atomically, and descriptors are
/// reused at once, so a socket closed during the reading and another opened after it could
/// both be seen. Only sockets present in the descriptor table both before and after the TCP
/// table was read are counted: those were all open at the same instant (socket inodes are
/// not reused).
fn server_held_fds(port: u16) -> HashSet<u64> {
    let before = socket_inodes();
    let table = std::fs::read_to_string("/proc/self/net/tcp").unwrap();
    let ours: HashSet<u64> = socket_inodes().intersection(&before).copied().collect();
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local_port = f[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            let listening = f[3] == "0A";
            let inode: u64 = f[9].parse().unwrap_or(0);
            local_port == Some(port) && !listening && inode != 0 && ours.contains(&inode)
        })
        .map(|l| l.split_whitespace().nth(9).unwrap().parse().unwrap())
        .collect()
}

/// Three times the cap of clients hold stalled connections (half a request head, opened
/// again as soon as the server closes one). The server never holds more than the cap, never
/// answers 5xx, and a well-behaved client that connects meanwhile gets its answer as the
/// stalled connections time out.
#[tokio::test]
async fn past_the_cap_a_new_client_is_served() {
    // Counts the server's connections at their peak: no other test's load meanwhile.
    let _alone = EXCLUSIVE.write().await;
    let dir = tempfile::tempdir().unwrap();
    let (srv, _) = start_edge(edge_args(dir.path())).await;
    let (apikey, inst) = tenant(&*srv.store, "cap").await;
    let base = format!("http://{}", srv.addr);
    let addr = srv.addr;
    // Nothing has connected to this server yet: what is held on its port now is not its own.
    let foreign = Arc::new(server_held_fds(addr.port()));

    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicUsize::new(0));
    let mut attackers = Vec::new();
    for _ in 0..3 * CAP {
        let (stop, opened) = (stop.clone(), opened.clone());
        attackers.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut s) = TcpStream::connect(addr).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                opened.fetch_add(1, Ordering::Relaxed);
                if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                    .await
                    .is_err()
                {
                    continue;
                }
                let mut got = Vec::new();
                let mut buf = [0u8; 1024];
                while !stop.load(Ordering::Relaxed) {
                    match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => break,
                        Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                        Err(_) => {}
                    }
                }
                answers.push(got);
            }
            answers
        }));
    }
    // The server's side of the connections, sampled until the end.
    let max_held = Arc::new(AtomicUsize::new(0));
    let sampling = {
        let (stop, max_held) = (stop.clone(), max_held.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let held = server_held_fds(addr.port()).difference(&foreign).count();
                max_held.fetch_max(held, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A well-behaved client: a token exchange and a key creation, each on a new connection.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let t = token(&client, &base, &apikey).await;
    let r = client
        .post(format!("{base}/api/v2/keys"))
        .bearer_auth(&t)
        .header("bluemix-instance", &inst)
        .json(&key_body("past-the-cap"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    stop.store(true, Ordering::Relaxed);
    sampling.await.unwrap();
    let mut answered = 0;
    for a in attackers {
        for got in a.await.unwrap() {
            assert_no_5xx(&got);
            answered += usize::from(!got.is_empty());
        }
    }
    let held = max_held.load(Ordering::Relaxed);
    assert!(
        held <= CAP,
        "the server held {held} connections, more than the cap of {CAP}"
    );
    assert!(
        held >= CAP / 2,
        "the stalled clients never reached the cap ({held})"
    );
    assert!(
        opened.load(Ordering::Relaxed) > 3 * CAP,
        "stalled connections were never closed and re-opened"
    );
    assert_eq!(answered, 0, "stalled connections got an answer");
}

/// On shutdown the listener stops accepting, idle keep-alive connections close at once, and
/// a request in flight (its body half sent) still gets its answer.
#[tokio::test]
async fn shutdown_finishes_in_flight_requests() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = edge_args(dir.path());
    args.idle_timeout = Some(600);
    args.body_timeout = Some(60);
    let (mut srv, _) = start_edge(args).await;
    let (apikey, inst) = tenant(&*srv.store, "shutdown").await;
    let base = format!("http://{}", srv.addr);
    let t = token(&reqwest::Client::new(), &base, &apikey).await;

    let mut idle = TcpStream::connect(srv.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut idle).await.0, 200);

    let body = serde_json::to_vec(&key_body("in-flight")).unwrap();
    let (first, rest) = body.split_at(body.len() / 2);
    let mut busy = TcpStream::connect(srv.addr).await.unwrap();
    let head = format!(
        "POST /api/v2/keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t}\r\n\
         Bluemix-Instance: {inst}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    busy.write_all(&[head.as_bytes(), first].concat())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    srv.stop.take().unwrap().send(()).unwrap();
    // The idle connection is closed long before its idle timeout (600 s).
    assert!(
        closed_within(&mut idle, CLOSE_BOUND).await.is_some(),
        "an idle connection stayed open after shutdown"
    );
    // No new connection is served.
    if let Ok(mut late) = TcpStream::connect(srv.addr).await {
        late.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .ok();
        let got = closed_within(&mut late, CLOSE_BOUND)
            .await
            .expect("a connection made after shutdown stayed open");
        assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    }
    // The request in flight completes.
    busy.write_all(rest).await.unwrap();
    let (status, _) = read_response(&mut busy).await;
    assert_eq!(status, 201);
    assert!(closed_within(&mut busy, CLOSE_BOUND).await.is_some());
}

/// CPU time (utime + stime, in clock ticks) of a process.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = stat.rsplit_once(')').unwrap().1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// The real binary under an open-file limit far below its connection cap: it warns at
/// start, and when `accept` fails with EMFILE it pauses instead of spinning (its CPU time
/// stays low while connections wait), and serves again once descriptors free up.
#[tokio::test]
async fn fd_exhaustion_backs_off_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let log = dir.path().join("serve.log");
    let mut cmd = tokio::process::Command::new("bash");
    for (k, _) in std::env::vars() {
        if k.starts_with("KEYWARD_") {
            cmd.env_remove(k);
        }
    }
    // `ulimit -n` sets the soft and the hard limit: the server cannot raise it.
    let mut child = cmd
        .arg("-c")
        .arg(format!(
            "ulimit -n 128 && exec {} serve --listen {addr} --data-dir {} --token-pool-size 0 \
             --scheduler-interval 0 --header-timeout 30",
            env!("CARGO_BIN_EXE_keyward"),
            dir.path().join("data").display()
        ))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let health = format!("http://{addr}/healthz");
    let mut up = false;
    for _ in 0..600 {
        if client
            .get(&health)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "{}", std::fs::read_to_string(&log).unwrap());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("open-file limit"),
        "no warning at start: {text}"
    );

    // More stalled connections than the server has descriptors.
    let mut stalled = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        stalled.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t0 = cpu_ticks(pid);
    let window = Duration::from_secs(4);
    tokio::time::sleep(window).await;
    let used = (cpu_ticks(pid) - t0) as f64 / 100.0;
    // A loop retrying accept without a pause burns the whole window on one core.
    assert!(
        used < window.as_secs_f64() / 4.0,
        "the server used {used:.2} s of CPU in {window:?} while accept failed"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("accept failed"),
        "EMFILE was never hit: {text}"
    );

    // Descriptors free up: the server serves again.
    drop(stalled);
    let r = client.get(&health).send().await.unwrap();
    assert_eq!(r.status(), 200);
    child.kill().await.unwrap();
}

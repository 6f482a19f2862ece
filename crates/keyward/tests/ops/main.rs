//! Operations: TLS (handshake with a real client, TLS 1.1 refused), rate limits (429 with
//! Retry-After, other tenants unaffected, failed bearer tokens capped per address), metrics and
//! readiness, and a master key that does not match the database (sealed start). Modules: `edge`
//! (timeouts and the connection cap), `audit` (the audit log's file and table sinks).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod audit;
mod edge;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use keyward::config::ServeArgs;
use keyward::server;
use keyward_domain::SystemClock;
use serde_json::{json, Value};

use keyward_testsupport::{key_envelope, services, token, Tenant, KEY_TYPE};

/// Taken for writing by a test that measures the server under a load of its own
/// (`edge::past_the_cap_a_new_client_is_served`), and for reading by the heavier tests that
/// share this binary (`audit`), so those never run alongside it.
static EXCLUSIVE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

struct Running {
    addr: SocketAddr,
    store: Arc<dyn keyward_store::Store>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn start(args: ServeArgs, dir: Option<tempfile::TempDir>) -> Running {
    let settings = args.resolve().unwrap();
    let srv = server::start_with_clock(&settings, Arc::new(SystemClock))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (addr, store) = (srv.addr, srv.store.clone());
    tokio::spawn(srv.serve(async move {
        let _ = rx.await;
    }));
    Running {
        addr,
        store,
        stop: Some(tx),
        _dir: dir,
    }
}

fn base_args(dir: &Path) -> ServeArgs {
    ServeArgs {
        data_dir: Some(dir.to_path_buf()),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        token_pool_size: Some(0),
        scheduler_interval: Some(0),
        ..ServeArgs::default()
    }
}

/// (apikey, instance id) of a new Manager in a new instance.
async fn tenant(store: &dyn keyward_store::Store, name: &str) -> (String, String) {
    let t = Tenant::in_store(store, name).await;
    (t.apikey, t.instance)
}

fn key_body(name: &str) -> Value {
    key_envelope(json!({"type": KEY_TYPE, "name": name, "extractable": false}))
}

#[tokio::test]
async fn tls_serves_https_and_refuses_tls_1_1() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    keyward::tls::run(keyward::tls::TlsCmd::SelfSigned {
        out_dir: tls.clone(),
        hosts: vec!["localhost".into()],
    })
    .unwrap();
    let mut args = base_args(&dir.path().join("data"));
    args.tls_cert = Some(tls.join("cert.pem"));
    args.tls_key = Some(tls.join("key.pem"));
    let srv = start(args, None).await;
    let (apikey, inst) = tenant(&*srv.store, "tls").await;

    let pem = std::fs::read(tls.join("cert.pem")).unwrap();
    let ca = reqwest::Certificate::from_pem(&pem).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap();
    let base = format!("https://localhost:{}", srv.addr.port());
    let t = token(&client, &base, &apikey).await;
    let r = client
        .post(format!("{base}/api/v2/keys"))
        .bearer_auth(&t)
        .header("bluemix-instance", &inst)
        .json(&key_body("over-tls"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{}/healthz", srv.addr.port()))
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);

    // TLS 1.1 and 1.0 are refused at the handshake, by the server. The client is OpenSSL at
    // security level 0, where it does offer TLS 1.0/1.1 (at OpenSSL 3's default level it refuses
    // them itself, and a failed command would then prove nothing about the server). The control:
    // the same client, allowed TLS 1.2, completes a handshake with the same server.
    let port = srv.addr.port();
    let Some(control) = s_client(port, "-tls1_2").await else {
        services::missing(
            "tls_serves_https_and_refuses_tls_1_1",
            "openssl",
            "apt-get install -y openssl",
        );
        return;
    };
    assert!(
        control.0
            && control.1.contains("Protocol  : TLSv1.2")
            && control.1.contains("Cipher is ECDHE"),
        "control: the same client with TLS 1.2 must complete a handshake: {}",
        control.1
    );
    for (old, name) in [("-tls1_1", "TLSv1.1"), ("-tls1", "TLSv1")] {
        let (ok, text) = s_client(port, old).await.unwrap();
        assert!(!ok, "{old}: the handshake must fail: {text}");
        // The client really offered the old version (it did not refuse on its own)...
        assert!(
            !text.contains("no protocols available")
                && text.contains(&format!("Protocol  : {name}\n")),
            "{old}: the client did not offer {name}, so the server was not tested: {text}"
        );
        // ...and the server answered it with a fatal alert (rustls sends handshake_failure,
        // 40, when no version in common; protocol_version, 70, is as good), negotiating nothing.
        assert!(
            text.contains("SSL alert number 40") || text.contains("SSL alert number 70"),
            "{old}: the server must refuse with a TLS alert: {text}"
        );
        assert!(
            text.contains("Cipher is (NONE)") && !text.contains("Cipher is ECDHE"),
            "{old}: no cipher may be negotiated: {text}"
        );
    }
}

/// `openssl s_client` with `version` (`-tls1_2`, `-tls1_1`, `-tls1`) at security level 0
/// against 127.0.0.1:`port`: (exit status success, stdout + stderr), or None when there is no
/// `openssl`. (tokio::process: a blocking call here would stall the in-process server.)
async fn s_client(port: u16, version: &str) -> Option<(bool, String)> {
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        tokio::process::Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &format!("127.0.0.1:{port}"),
                "-servername",
                "localhost",
                "-cipher",
                "DEFAULT@SECLEVEL=0",
                version,
            ])
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await
    .expect("openssl s_client did not finish")
    .ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    Some((out.status.success(), text))
}

#[tokio::test]
async fn rate_limit_gives_429_with_retry_after_and_spares_other_tenants() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = base_args(dir.path());
    args.rate_limit_crypto = Some("2/20".into());
    let srv = start(args, None).await;
    let (k1, i1) = tenant(&*srv.store, "noisy").await;
    let (k2, i2) = tenant(&*srv.store, "quiet").await;
    let client = reqwest::Client::new();
    let base = format!("http://{}", srv.addr);
    let (t1, t2) = (
        token(&client, &base, &k1).await,
        token(&client, &base, &k2).await,
    );
    let mk = |t: &str, i: &str| {
        let (t, i, c, b) = (t.to_string(), i.to_string(), client.clone(), base.clone());
        async move {
            let r: Value = c
                .post(format!("{b}/api/v2/keys"))
                .bearer_auth(&t)
                .header("bluemix-instance", &i)
                .json(&key_body("rl"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            r["resources"][0]["id"].as_str().unwrap().to_string()
        }
    };
    let (key1, key2) = (mk(&t1, &i1).await, mk(&t2, &i2).await);
    let wrap = |t: &str, i: &str, k: &str| {
        client
            .post(format!("{base}/api/v2/keys/{k}/actions/wrap"))
            .bearer_auth(t)
            .header("bluemix-instance", i)
            .json(&json!({}))
            .send()
    };
    let mut limited = 0;
    let mut ok = 0;
    for _ in 0..100 {
        let r = wrap(&t1, &i1, &key1).await.unwrap();
        match r.status().as_u16() {
            200 => ok += 1,
            429 => {
                limited += 1;
                let ra: u64 = r.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!(ra >= 1);
                let body: Value = r.json().await.unwrap();
                assert_eq!(
                    body["resources"][0]["reasons"][0]["code"],
                    "TOO_MANY_REQUESTS_ERR"
                );
            }
            s => panic!("unexpected {s}"),
        }
    }
    assert!((20..=25).contains(&ok), "burst of 20 plus refill, got {ok}");
    assert!(limited >= 75, "the rest are limited, got {limited}");
    // The other tenant has its own bucket.
    for _ in 0..10 {
        assert_eq!(wrap(&t2, &i2, &key2).await.unwrap().status(), 200);
    }
    // Management calls are another class (unlimited here).
    let r = client
        .get(format!("{base}/api/v2/keys"))
        .bearer_auth(&t1)
        .header("bluemix-instance", &i1)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Import-token creation (2/s, bursts of 20) and key creation (50/s, bursts of 500) are limited
/// per (instance, principal) by default: a client within the burst never sees a 429, a flood
/// does, another tenant and other calls are unaffected; `0` turns a limit off. (Requests that
/// fail validation count too: the limit applies before the body is read, so the floods here
/// cost no RSA work.)
#[tokio::test]
async fn creation_limits_are_on_by_default() {
    let client = reqwest::Client::new();
    let post = |base: &str, t: &str, i: &str, path: &str, body: Value| {
        client
            .post(format!("{base}{path}"))
            .bearer_auth(t)
            .header("bluemix-instance", i)
            .json(&body)
            .send()
    };
    // (requests answered before the first 429, that 429's Retry-After)
    async fn flood<F, Fut>(max: usize, mut send: F) -> (usize, Option<u64>)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = reqwest::Result<reqwest::Response>>,
    {
        for n in 0..max {
            let r = send().await.unwrap();
            match r.status().as_u16() {
                400 => {}
                429 => {
                    let ra = r.headers()["retry-after"]
                        .to_str()
                        .unwrap()
                        .parse()
                        .unwrap();
                    let body: Value = r.json().await.unwrap();
                    assert_eq!(
                        body["resources"][0]["reasons"][0]["code"],
                        "TOO_MANY_REQUESTS_ERR"
                    );
                    return (n, Some(ra));
                }
                s => panic!("unexpected {s}: {}", r.text().await.unwrap_or_default()),
            }
        }
        (max, None)
    }
    let bad_token = json!({"expiration": 1});
    let bad_key = json!({"metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
                         "resources": [{"type": "application/vnd.ibm.kms.key+json", "extractable": false}]});

    let dir = tempfile::tempdir().unwrap();
    let srv = start(base_args(dir.path()), None).await;
    let base = format!("http://{}", srv.addr);
    let (k1, i1) = tenant(&*srv.store, "noisy").await;
    let (k2, i2) = tenant(&*srv.store, "quiet").await;
    let (t1, t2) = (
        token(&client, &base, &k1).await,
        token(&client, &base, &k2).await,
    );

    let (n, ra) = flood(200, || {
        post(&base, &t1, &i1, "/api/v2/import_token", bad_token.clone())
    })
    .await;
    eprintln!("import-token creation: first 429 after {n} requests");
    assert!(n >= 20, "the burst of 20 is served, got {n}");
    assert!(ra.is_some_and(|s| s >= 1), "a flood is limited");
    // Retrieval is not creation; another tenant has its own bucket.
    let r = client
        .get(format!("{base}/api/v2/import_token"))
        .bearer_auth(&t1)
        .header("bluemix-instance", &i1)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = post(&base, &t2, &i2, "/api/v2/import_token", bad_token.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let (n, ra) = flood(20_000, || {
        post(&base, &t1, &i1, "/api/v2/keys", bad_key.clone())
    })
    .await;
    eprintln!("key creation: first 429 after {n} requests");
    assert!(n >= 500, "the burst of 500 is served, got {n}");
    assert!(ra.is_some_and(|s| s >= 1), "a flood is limited");
    // keys_with_policy_overrides shares the key-creation bucket: drained, it refuses within a
    // few requests (the bucket refills meanwhile, one token at a time), where a bucket of its
    // own would serve a burst of 500 first.
    let (n, ra) = flood(50, || {
        post(
            &base,
            &t1,
            &i1,
            "/api/v2/keys_with_policy_overrides",
            bad_key.clone(),
        )
    })
    .await;
    assert!(
        n < 50 && ra.is_some(),
        "keys_with_policy_overrides shares the drained key-creation bucket (first 429 after {n})"
    );
    // Other calls, and another tenant's creations, are unaffected.
    let r = client
        .get(format!("{base}/api/v2/keys"))
        .bearer_auth(&t1)
        .header("bluemix-instance", &i1)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = post(&base, &t2, &i2, "/api/v2/keys", key_body("quiet"))
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // 0 turns them off.
    let dir = tempfile::tempdir().unwrap();
    let mut args = base_args(dir.path());
    args.rate_limit_import_token_create = Some("0".into());
    args.rate_limit_key_create = Some("0".into());
    let srv = start(args, None).await;
    let base = format!("http://{}", srv.addr);
    let (k1, i1) = tenant(&*srv.store, "unlimited").await;
    let t1 = token(&client, &base, &k1).await;
    let (n, _) = flood(100, || {
        post(&base, &t1, &i1, "/api/v2/import_token", bad_token.clone())
    })
    .await;
    assert_eq!(n, 100);
    let (n, _) = flood(1000, || {
        post(&base, &t1, &i1, "/api/v2/keys", bad_key.clone())
    })
    .await;
    assert_eq!(n, 1000);
}

#[tokio::test]
async fn failed_bearer_tokens_are_capped_per_address() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = base_args(dir.path());
    args.auth_failure_limit = Some("0.01/5".into());
    let srv = start(args, None).await;
    let (apikey, inst) = tenant(&*srv.store, "auth").await;
    let client = reqwest::Client::new();
    let base = format!("http://{}", srv.addr);
    let good = token(&client, &base, &apikey).await;
    let get = |t: String| {
        client
            .get(format!("{base}/api/v2/keys"))
            .bearer_auth(t)
            .header("bluemix-instance", &inst)
            .send()
    };
    for _ in 0..5 {
        assert_eq!(
            get("forged.token.value".into()).await.unwrap().status(),
            401
        );
    }
    let r = get("forged.token.value".into()).await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    // A valid token is never locked out (a proxy's shared address must keep working).
    assert_eq!(get(good).await.unwrap().status(), 200);
    // API-key guessing at the IAM endpoint is capped the same way.
    let r = client
        .post(format!("{base}/identity/token"))
        .form(&[
            ("grant_type", "urn:ibm:params:oauth:grant-type:apikey"),
            ("apikey", "kw_guess"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn metrics_and_readiness() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(base_args(dir.path()), None).await;
    let (apikey, inst) = tenant(&*srv.store, "metrics").await;
    let client = reqwest::Client::new();
    let base = format!("http://{}", srv.addr);
    let t = token(&client, &base, &apikey).await;
    for _ in 0..3 {
        client
            .post(format!("{base}/api/v2/keys"))
            .bearer_auth(&t)
            .header("bluemix-instance", &inst)
            .json(&key_body("metered"))
            .send()
            .await
            .unwrap();
    }
    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(
            r#"keyward_http_requests_total{route="/api/v2/keys",method="POST",status="201"} 3"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"keyward_http_request_duration_seconds_count{route="/api/v2/keys"} 3"#));
    assert!(text.contains("keyward_import_token_pool_depth 0"));
    assert!(text.contains("keyward_sealed 0"));
    // store latency per operation: three key inserts, timed
    assert!(
        text.contains(r#"keyward_store_operation_duration_seconds_count{op="insert_key"} 3"#),
        "{text}"
    );
    assert!(text.contains(r#"keyward_store_errors_total{op="insert_key"} 0"#));
    // crypto operations: three root keys generated and sealed under the master key
    assert!(
        text.contains(r#"keyward_crypto_operations_total{op="master_seal"} 3"#),
        "{text}"
    );
    assert!(text.contains(r#"keyward_crypto_operations_total{op="wrap"} 0"#));
    assert!(!text.contains(&apikey) && !text.contains(&t));
}

#[tokio::test]
async fn a_master_key_that_does_not_match_the_database_leaves_the_service_sealed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let srv = start(base_args(dir.path()), None).await;
        let (apikey, inst) = tenant(&*srv.store, "seal").await;
        let client = reqwest::Client::new();
        let base = format!("http://{}", srv.addr);
        let t = token(&client, &base, &apikey).await;
        let r = client
            .post(format!("{base}/api/v2/keys"))
            .bearer_auth(&t)
            .header("bluemix-instance", &inst)
            .json(&key_body("sealed"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // Replace the master key file: the database's rows no longer open.
    let mk = dir.path().join("master.key");
    std::fs::remove_file(&mk).unwrap();
    let other = tempfile::tempdir().unwrap();
    let mut args = base_args(dir.path());
    args.master_key_file = Some(other.path().join("other.key"));
    let srv = start(args, Some(other)).await;
    let client = reqwest::Client::new();
    let base = format!("http://{}", srv.addr);
    let h = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(h.status(), 503);
    let body: Value = h.json().await.unwrap();
    assert_eq!(body["status"], "sealed");
    let r = client
        .post(format!("{base}/api/v2/keys"))
        .header("bluemix-instance", "00000000-0000-4000-8000-000000000000")
        .json(&key_body("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["metadata"]["collectionType"],
        "application/vnd.ibm.kms.error+json"
    );
    // The missing original key file was not silently re-created over existing data.
    assert!(!mk.exists());
}

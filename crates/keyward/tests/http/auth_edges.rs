//! Auth edges (`docs/threat-model.md`, A1/A2/A4): revocation reaches live tokens (a removed
//! role, a deleted API key), aliases are no oracle across instances, `X-Forwarded-For` counts
//! only from trusted proxies, a sealed server's public `/healthz` says nothing, and the
//! first-start API key never reaches stdout or the log when stdout is not a terminal.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward::config::ServeArgs;
use keyward_domain::{Role, SystemClock};
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::*;
use keyward_testsupport::{free_port, keyward, Node, NodeOpts};

/// The role cache and the API-key cache both trust an entry for 1 s (`docs/design.md`, Auth).
const BOUND: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_millis(20);

/// Polls `call` until half a second past [`BOUND`] after `since`: every call that starts at
/// least the bound after `since` must be refused with `status`; returns the first refusal's
/// response and when it came. After the first refusal it polls more slowly: refused bearer
/// tokens count against the caller's address (30 allowed in a burst).
async fn refused_within_bound<F, Fut>(since: Instant, status: u16, mut call: F) -> (Resp, Duration)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Resp>,
{
    let mut first: Option<(Resp, Duration)> = None;
    loop {
        let started = since.elapsed();
        let r = call().await;
        if r.status == status {
            if first.is_none() {
                first = Some((r, started));
            }
        } else {
            assert!(
                started < BOUND,
                "still answered {} {started:?} after the revocation: {}",
                r.status,
                r.text()
            );
            assert!(r.status < 300, "{}", r.text());
        }
        if started > BOUND + Duration::from_millis(500) {
            break;
        }
        tokio::time::sleep(if first.is_some() { POLL * 5 } else { POLL }).await;
    }
    first.expect("never refused")
}

/// Revoking a grant (what `keyward admin instance revoke` does) stops a live token within the
/// role-cache bound, and the refusal is exactly the answer of an instance without any role.
#[tokio::test]
async fn removed_role_stops_within_bound() {
    let s = shared();
    let inst = s.create_instance().await;
    let c = s.client(inst, Role::Writer).await;
    let owner = s.client(inst, Role::Manager).await;
    let key = id_of(&owner.create_root_key().await);
    let body = json!({"plaintext": b64(b"0123456789abcdef")});
    c.wrap(&key, &body).await.expect(200);
    c.get("/api/v2/keys").await.expect(200);
    let elsewhere = c.with_instance(&s.create_instance().await.to_string());
    let no_role = elsewhere.wrap(&key, &body).await;
    assert_error(&no_role, 403, "UNAUTHORIZED_ERR");

    let store = s.store.clone();
    let iam = c.iam_id.clone();
    s.run(async move { store.revoke(inst, &iam, Role::Writer).await.unwrap() })
        .await;
    let revoked = Instant::now();
    let (r, after) = refused_within_bound(revoked, 403, || c.wrap(&key, &body)).await;
    eprintln!("removed role refused {after:?} after the revocation");
    assert_eq!(r.body, no_role.body, "a removed role looks like no role");
    assert_error(&c.get("/api/v2/keys").await, 403, "UNAUTHORIZED_ERR");
    // A fresh token of the same principal is refused as well; others are unaffected.
    let mut fresh = c.clone();
    fresh.refresh().await;
    assert_error(&fresh.wrap(&key, &body).await, 403, "UNAUTHORIZED_ERR");
    owner.wrap(&key, &body).await.expect(200);
}

/// Deleting an API key stops the tokens minted from it within the API-key cache bound (the
/// two-node version is `cluster/main.rs: deleted_api_key_token_stops_on_both_nodes`).
#[tokio::test]
async fn deleted_api_key_token_stops_within_bound() {
    let s = shared();
    let inst = s.create_instance().await;
    let mut c = s.client(inst, Role::Manager).await;
    // Its refusals count against its own address, not the one the other tests share.
    c.http = http_client_from(91);
    let key = id_of(&c.create_root_key().await);
    let body = json!({"plaintext": b64(b"0123456789abcdef")});
    c.wrap(&key, &body).await.expect(200);
    let store = s.store.clone();
    let iam = c.iam_id.clone();
    let id = s
        .run(async move {
            let keys = store.list_api_keys().await.unwrap();
            let id = keys.into_iter().find(|k| k.iam_id == iam).unwrap().id;
            store.delete_api_key(&id).await.unwrap();
            id
        })
        .await;
    let deleted = Instant::now();
    let (r, after) = refused_within_bound(deleted, 401, || c.wrap(&key, &body)).await;
    eprintln!("API key {id} deleted: its token refused {after:?} later");
    assert_error(&r, 401, "UNAUTHORIZED_ERR");
    // Exactly the answer of a token that was never valid.
    let mut forged = c.clone();
    forged.token = "not-a-token".into();
    assert_eq!(forged.wrap(&key, &body).await.body, r.body);
}

/// A caller without a role in an instance learns nothing about its aliases or key ids: every
/// key-addressed call answers with the same status and body bytes for a known alias, an unknown
/// alias, a key id of the instance and a random UUID, and the same again for an instance that
/// does not exist. Nothing changes.
#[tokio::test]
async fn foreign_alias_is_no_oracle() {
    let s = shared();
    let a = s.tenant().await;
    let key = id_of(&a.create_root_key().await);
    send(a.req(
        Method::POST,
        &format!("/api/v2/keys/{key}/aliases/known-alias"),
    ))
    .await
    .expect(201);
    let ct = a.wrap_bytes(&key, &random(32), None).await;
    let before = s.snapshot(a.instance_id).await;

    let b = s.tenant().await;
    let b_in_a = b.with_instance(&a.instance);
    let b_nowhere = b.with_instance(&random_uuid());
    let json_body = |v: &Value| serde_json::to_vec(v).unwrap();
    let calls: Vec<(&str, Method, String, Option<Vec<u8>>)> = vec![
        ("get", Method::GET, "/api/v2/keys/{id}".into(), None),
        (
            "metadata",
            Method::GET,
            "/api/v2/keys/{id}/metadata".into(),
            None,
        ),
        (
            "versions",
            Method::GET,
            "/api/v2/keys/{id}/versions".into(),
            None,
        ),
        (
            "policies",
            Method::GET,
            "/api/v2/keys/{id}/policies".into(),
            None,
        ),
        (
            "registrations",
            Method::GET,
            "/api/v2/keys/{id}/registrations".into(),
            None,
        ),
        (
            "wrap",
            Method::POST,
            "/api/v2/keys/{id}/actions/wrap".into(),
            Some(json_body(&json!({}))),
        ),
        (
            "unwrap",
            Method::POST,
            "/api/v2/keys/{id}/actions/unwrap".into(),
            Some(json_body(&json!({"ciphertext": ct}))),
        ),
        (
            "rotate",
            Method::POST,
            "/api/v2/keys/{id}/actions/rotate".into(),
            None,
        ),
        (
            "disable",
            Method::POST,
            "/api/v2/keys/{id}/actions/disable".into(),
            None,
        ),
        (
            "legacy-wrap",
            Method::POST,
            "/api/v2/keys/{id}?action=wrap".into(),
            Some(json_body(&json!({}))),
        ),
        (
            "restore",
            Method::POST,
            "/api/v2/keys/{id}/restore".into(),
            None,
        ),
        ("delete", Method::DELETE, "/api/v2/keys/{id}".into(), None),
        (
            "purge",
            Method::DELETE,
            "/api/v2/keys/{id}/purge".into(),
            None,
        ),
        (
            "add-alias",
            Method::POST,
            "/api/v2/keys/{id}/aliases/another-alias".into(),
            None,
        ),
        (
            "delete-alias",
            Method::DELETE,
            "/api/v2/keys/{id}/aliases/known-alias".into(),
            None,
        ),
        (
            "patch",
            Method::PATCH,
            "/api/v2/keys/{id}".into(),
            Some(json_body(&json!({"keyRingID": "default"}))),
        ),
    ];
    let random_id = random_uuid();
    let ids = [
        "known-alias",
        "unknown-alias",
        key.as_str(),
        random_id.as_str(),
    ];
    for (name, method, path, body) in &calls {
        let mut answers = Vec::new();
        for (who, client) in [("no role", &b_in_a), ("no instance", &b_nowhere)] {
            for id in ids {
                let mut rb = client.req(method.clone(), &path.replace("{id}", id));
                if let Some(b) = body {
                    rb = rb
                        .header("content-type", "application/json")
                        .body(b.clone());
                }
                let r = send(rb).await;
                answers.push((format!("{who}, {id}"), r));
            }
        }
        let (first_name, first) = &answers[0];
        assert_error(first, 403, "UNAUTHORIZED_ERR");
        for (n, r) in &answers[1..] {
            assert_eq!(
                (r.status, r.text(), r.content_type()),
                (first.status, first.text(), first.content_type()),
                "{name}: `{n}` answers differently from `{first_name}`"
            );
        }
    }
    assert_eq!(s.snapshot(a.instance_id).await, before);
    // The owner still resolves its alias.
    a.get("/api/v2/keys/known-alias/metadata").await.expect(200);
}

/// `X-Forwarded-For` names the client only when the TCP peer is a trusted proxy
/// (`--trusted-proxy`): then it is what the instance's `allowedIP` policy, the per-address
/// auth-failure limit and the audit `source` see. From any other peer it is ignored.
#[tokio::test]
async fn forwarded_for_is_trusted_only_from_proxies() {
    const CLIENT: &str = "203.0.113.7";
    let proxied = TestServer::start_with(0, |a| {
        a.trusted_proxy = vec!["127.0.0.1/32".into()];
        a.audit_sink = Some("database".into());
        a.auth_failure_limit = Some("0.01/3".into());
    });
    // Trusts proxies, but not the address the requests come from.
    let direct = TestServer::start_with(0, |a| {
        a.trusted_proxy = vec!["10.0.0.0/8".into()];
    });
    let with_xff = |c: &Client, xff: Option<&str>, m: Method, path: &str| {
        let mut rb = c.req(m, path);
        if let Some(x) = xff {
            rb = rb.header("x-forwarded-for", x);
        }
        rb
    };
    let key_body = serde_json::to_vec(&key_envelope(
        json!({"type": KEY_TYPE, "name": "via-proxy", "extractable": false}),
    ))
    .unwrap();

    for (srv, trusted) in [(&proxied, true), (&direct, false)] {
        let c = srv.tenant().await;
        // Only the forwarded client address may call this instance.
        let policy = json!({
            "metadata": {"collectionType": "application/vnd.ibm.kms.policy+json", "collectionTotal": 1},
            "resources": [{"policy_type": "allowedIP", "policy_data": {
                "enabled": true, "attributes": {"allowed_ip": [format!("{CLIENT}/32")]}}}],
        });
        send(
            c.req(Method::PUT, "/api/v2/instance/policies?policy=allowedIP")
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&policy).unwrap()),
        )
        .await
        .expect(204);
        let list = |xff: Option<&str>| send(with_xff(&c, xff, Method::GET, "/api/v2/keys"));

        let r = list(Some(CLIENT)).await;
        if !trusted {
            // The header of an untrusted peer is ignored: the peer (127.0.0.1) is refused.
            assert_error(&r, 401, "UNAUTHORIZED_ERR");
            continue;
        }
        r.expect(200);
        // A chain through a second trusted proxy still names the client.
        list(Some(&format!("{CLIENT}, 127.0.0.1")))
            .await
            .expect(200);
        // No header: the peer itself, which the policy does not admit.
        assert_error(&list(None).await, 401, "UNAUTHORIZED_ERR");
        // Another client address, and a client that prepends the allowed address itself: the
        // right-most untrusted entry (what the proxy saw) decides.
        for xff in ["198.51.100.1", &format!("{CLIENT}, 198.51.100.1")] {
            assert_error(&list(Some(xff)).await, 401, "UNAUTHORIZED_ERR");
        }

        // The audit record names the forwarded client.
        let k = send(
            with_xff(&c, Some(CLIENT), Method::POST, "/api/v2/keys")
                .header("content-type", "application/json")
                .body(key_body.clone()),
        )
        .await
        .resource(201);
        let store = srv.store.clone();
        let key_id = id_of(&k);
        let rows = srv
            .run(async move {
                store
                    .audit_records(&keyward_store::AuditQuery {
                        key_id: Some(key_id),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
            })
            .await;
        assert!(!rows.is_empty(), "no audit record");
        for e in &rows {
            assert_eq!(e.row.source.as_deref(), Some(CLIENT), "{:?}", e.row);
        }

        // Failed bearer tokens are limited per forwarded address (burst 3 here).
        let bad = |xff: &str| {
            let mut rb = c
                .http
                .get(c.url("/api/v2/keys"))
                .header("bluemix-instance", &c.instance)
                .header("authorization", "Bearer not-a-token");
            rb = rb.header("x-forwarded-for", xff);
            send(rb)
        };
        for _ in 0..3 {
            assert_error(&bad("192.0.2.1").await, 401, "UNAUTHORIZED_ERR");
        }
        assert_error(&bad("192.0.2.1").await, 429, "TOO_MANY_REQUESTS_ERR");
        assert_error(&bad("192.0.2.2").await, 401, "UNAUTHORIZED_ERR");
        // ... and the allowed client is still served.
        list(Some(CLIENT)).await.expect(200);
    }
}

/// A sealed server's public `/healthz` (and `/readyz`) answer `{"status":"sealed"}` and nothing
/// else; the reason, which names master key ids, is on the operator-facing ops listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_healthz_reveals_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let args = |ops: Option<u16>| ServeArgs {
        data_dir: Some(dir.path().to_path_buf()),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        token_pool_size: Some(0),
        scheduler_interval: Some(0),
        metrics_listen: ops.map(|p| format!("127.0.0.1:{p}").parse().unwrap()),
        ..ServeArgs::default()
    };
    // A deployment with rows sealed under its key...
    let first =
        keyward::server::start_with_clock(&args(None).resolve().unwrap(), Arc::new(SystemClock))
            .await
            .unwrap();
    assert!(first.sealed.is_none());
    drop(first);
    // ... started with another master key: sealed, and the reason names master key ids.
    let other = tempfile::tempdir().unwrap();
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(other.path().join("other.key"))
            .unwrap()
            .write_all(&random(32))
            .unwrap();
    }
    for ops in [None, Some(free_port())] {
        let mut a = args(ops);
        a.master_key_file = Some(other.path().join("other.key"));
        let srv = keyward::server::start_with_clock(&a.resolve().unwrap(), Arc::new(SystemClock))
            .await
            .unwrap();
        let reason = srv.sealed.clone().expect("sealed");
        assert!(reason.contains("does not match"), "{reason}");
        let base = format!("http://{}", srv.addr);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(srv.serve(async move {
            let _ = rx.await;
        }));
        let http = http_client();
        for path in ["/healthz", "/readyz"] {
            let r = send_sealed(&http, &format!("{base}{path}")).await;
            assert_eq!(r.0, 503, "{path}");
            assert_eq!(
                r.1,
                br#"{"status":"sealed"}"#,
                "{path}: {}",
                String::from_utf8_lossy(&r.1)
            );
        }
        if let Some(p) = ops {
            for path in ["/healthz", "/readyz"] {
                let r = send_sealed(&http, &format!("http://127.0.0.1:{p}{path}")).await;
                assert_eq!(r.0, 503);
                let v: Value = serde_json::from_slice(&r.1).unwrap();
                assert_eq!(v["status"], "sealed");
                assert_eq!(v["reason"], reason.as_str(), "the ops listener says why");
            }
        }
        let _ = tx.send(());
        task.await.unwrap().unwrap();
    }
}

async fn send_sealed(http: &reqwest::Client, url: &str) -> (u16, Vec<u8>) {
    let r = http.get(url).send().await.unwrap();
    (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
}

/// The real binary, stdout and stderr to pipes (as under systemd or in a container): the
/// first-start API key appears in neither; it is in `<data-dir>/initial-api-key`, mode 0600 (the
/// data dir created 0700), the banner and the log name that file, and the key in it works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_key_goes_to_a_private_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    // Not a `Node`: this start must create the data dir, and write to pipes.
    let mut child = keyward()
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(&data)
        .args(["--token-pool-size", "0", "--scheduler-interval", "0"])
        .env("KEYWARD_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let drain = |mut p: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = p.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Kill(child);

    let base = format!("http://127.0.0.1:{port}");
    let http = http_client();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(http.get(format!("{base}/healthz")).send().await, Ok(r) if r.status() == 200) {
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "keyward serve exited"
        );
        assert!(Instant::now() < deadline, "keyward serve never came up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let file = data.join("initial-api-key");
    let meta = std::fs::symlink_metadata(&file).expect("the key file exists");
    assert!(meta.is_file());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "key file mode");
    assert_eq!(
        std::fs::metadata(&data).unwrap().permissions().mode() & 0o777,
        0o700,
        "data dir mode"
    );
    let apikey = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert!(apikey.starts_with("kw_"), "{apikey}");
    let token = fetch_token(&http, &base, &apikey).await;

    // Stop the server: SIGTERM, then read everything it wrote.
    let st = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "keyward ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
    assert!(!stdout.contains(&apikey), "the API key is on stdout");
    assert!(!stderr.contains(&apikey), "the API key is in the log");
    let shown = file.display().to_string();
    assert!(
        stdout.contains(&shown),
        "the banner names the file:\n{stdout}"
    );
    assert!(stderr.contains(&shown), "the log names the file:\n{stderr}");
    let inst = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("instance id"))
        .map(|v| v.trim_start_matches([' ', ':']).trim().to_string())
        .expect("the banner shows the instance id");

    // The key works: its token reads the default instance (on a restarted server, which does
    // not bootstrap again or write another file).
    let mut node = Node::spawn("restarted", &NodeOpts::sqlite(&data));
    node.wait_health(200).await;
    let base = node.base.clone();
    let r = send(
        http.get(format!("{base}/api/v2/keys"))
            .header("authorization", format!("Bearer {token}"))
            .header("bluemix-instance", &inst),
    )
    .await;
    r.expect(200);
    let fresh = fetch_token(&http, &base, &apikey).await;
    assert!(!fresh.is_empty());
    let files: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("initial-api-key"))
        .collect();
    assert_eq!(files, vec!["initial-api-key".to_string()]);
}

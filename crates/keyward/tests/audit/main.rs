//! Audit log: exactly one record per audited request, none of the secrets the test used, and
//! with the sink failing (`/dev/full`) every state-changing request gets 503 and changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use keyward::config::ServeArgs;
use keyward_domain::{InstanceId, KeyState, Role, SystemClock};
use keyward_service::admin;
use keyward_store::{KeyQuery, Store};
use serde_json::{json, Value};

struct Srv {
    base: String,
    store: Arc<dyn Store>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(dir: &Path, audit: PathBuf) -> Srv {
    let settings = ServeArgs {
        data_dir: Some(dir.to_path_buf()),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        token_pool_size: Some(0),
        scheduler_interval: Some(0),
        audit_log: Some(audit),
        ..ServeArgs::default()
    }
    .resolve()
    .unwrap();
    let srv = keyward::server::start_with_clock(&settings, Arc::new(SystemClock))
        .await
        .unwrap();
    assert!(srv.sealed.is_none(), "{:?}", srv.sealed);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (base, store) = (format!("http://{}", srv.addr), srv.store.clone());
    tokio::spawn(srv.serve(async move {
        let _ = rx.await;
    }));
    Srv {
        base,
        store,
        _stop: tx,
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    instance: String,
}

impl Client {
    async fn new(srv: &Srv, role: Role) -> (Self, String, InstanceId) {
        let inst = admin::create_instance(&*srv.store, "audit", 1)
            .await
            .unwrap();
        let k = admin::create_api_key(&*srv.store, inst.id, role, "a", None, 1)
            .await
            .unwrap();
        let http = reqwest::Client::new();
        let t: Value = http
            .post(format!("{}/identity/token", srv.base))
            .form(&[
                ("grant_type", "urn:ibm:params:oauth:grant-type:apikey"),
                ("apikey", k.apikey.as_str()),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = t["access_token"].as_str().unwrap().to_string();
        (
            Self {
                http,
                base: srv.base.clone(),
                token,
                instance: inst.id.to_string(),
            },
            k.apikey,
            inst.id,
        )
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = self
            .http
            .request(method, format!("{}/api/v2/{path}", self.base))
            .bearer_auth(&self.token)
            .header("bluemix-instance", &self.instance)
            .header("correlation-id", "test-corr-1");
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

fn key_body(name: &str, payload: Option<&str>) -> Value {
    let mut r =
        json!({"type": "application/vnd.ibm.kms.key+json", "name": name, "extractable": false});
    if let Some(p) = payload {
        r["payload"] = json!(p);
    }
    json!({"metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1}, "resources": [r]})
}

fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_record_per_audited_request_and_no_secrets() {
    use reqwest::Method as M;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let srv = start(&dir.path().join("data"), log.clone()).await;
    let (c, apikey, _) = Client::new(&srv, Role::Manager).await;
    let material = B64.encode([7u8; 32]);

    let (s, k) = c
        .call(M::POST, "keys", Some(key_body("imp", Some(&material))))
        .await;
    assert_eq!(s, 201);
    let id = k["resources"][0]["id"].as_str().unwrap().to_string();
    let dek = B64.encode([9u8; 32]);
    let (s, w) = c
        .call(
            M::POST,
            &format!("keys/{id}/actions/wrap"),
            Some(json!({"plaintext": dek})),
        )
        .await;
    assert_eq!(s, 200);
    let ct = w["ciphertext"].as_str().unwrap().to_string();
    assert_eq!(
        c.call(
            M::POST,
            &format!("keys/{id}/actions/unwrap"),
            Some(json!({"ciphertext": ct}))
        )
        .await
        .0,
        200
    );
    // plain reads are not audited
    assert_eq!(
        c.call(M::GET, &format!("keys/{id}/metadata"), None).await.0,
        200
    );
    assert_eq!(c.call(M::GET, "keys", None).await.0, 200);
    assert_eq!(
        c.call(M::POST, &format!("keys/{id}/aliases/audited-alias"), None)
            .await
            .0,
        201
    );
    assert_eq!(
        c.call(M::POST, &format!("keys/{id}/actions/disable"), None)
            .await
            .0,
        204
    );
    // a failed audited request: one failure record with its reason code
    assert_eq!(
        c.call(M::POST, &format!("keys/{id}/actions/wrap"), Some(json!({})))
            .await
            .0,
        409
    );
    assert_eq!(
        c.call(M::POST, "import_token", Some(json!({"expiration": 300})))
            .await
            .0,
        200
    );
    assert_eq!(c.call(M::GET, "import_token", None).await.0, 200);
    assert_eq!(c.call(M::DELETE, &format!("keys/{id}"), None).await.0, 204);

    let recs = records(&log);
    let actions: Vec<(&str, &str)> = recs
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap(),
                r["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        vec![
            ("kms.secrets.create", "success"),
            ("kms.secrets.wrap", "success"),
            ("kms.secrets.unwrap", "success"),
            ("kms.secrets.createalias", "success"),
            ("kms.secrets.disable", "success"),
            ("kms.secrets.wrap", "failure"),
            ("kms.importtoken.create", "success"),
            ("kms.importtoken.read", "success"),
            ("kms.secrets.delete", "success"),
        ]
    );
    let failure = &recs[5];
    assert_eq!(failure["reason"], "KEY_ACTION_INVALID_STATE_ERR");
    for r in &recs {
        assert_eq!(r["correlation_id"], "test-corr-1");
        assert_eq!(r["source"], "127.0.0.1");
        assert!(r["request_id"].as_str().unwrap().len() == 36);
        assert!(r["principal"]
            .as_str()
            .unwrap()
            .starts_with("iam-ServiceId-"));
    }
    assert_eq!(recs[1]["key_id"], id.as_str());
    let text = std::fs::read_to_string(&log).unwrap();
    for secret in [
        material.as_str(),
        dek.as_str(),
        ct.as_str(),
        apikey.as_str(),
        c.token.as_str(),
    ] {
        assert!(!text.contains(secret), "the audit log holds a secret");
    }
    let found = keyward::auditcmd::run(keyward::auditcmd::AuditCmd::Search {
        file: log.clone(),
        action: Some("kms.secrets.wrap".into()),
        key_id: None,
        principal: None,
        instance: None,
        outcome: Some("failure".into()),
        since: None,
    })
    .unwrap();
    assert_eq!(found.len(), 1);
    let tail = keyward::auditcmd::run(keyward::auditcmd::AuditCmd::Tail {
        file: log.clone(),
        lines: 2,
    })
    .unwrap();
    assert_eq!(tail.len(), 2);
    assert_eq!(tail[1]["action"], "kms.secrets.delete");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&log).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_audit_sink_refuses_changes_with_503_and_changes_nothing() {
    use reqwest::Method as M;
    if !Path::new("/dev/full").exists() {
        eprintln!("/dev/full missing: test skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), PathBuf::from("/dev/full")).await;
    let (c, _, inst) = Client::new(&srv, Role::Manager).await;
    let all = KeyQuery {
        states: vec![
            KeyState::Active,
            KeyState::Suspended,
            KeyState::Deactivated,
            KeyState::Destroyed,
        ],
        ..KeyQuery::default()
    };
    let before = srv.store.count_keys(inst, &all).await.unwrap();
    let (s, body) = c.call(M::POST, "keys", Some(key_body("nope", None))).await;
    assert_eq!(s, 503);
    assert_eq!(
        body["resources"][0]["reasons"][0]["code"],
        "SERVICE_UNAVAILABLE_ERR"
    );
    assert_eq!(
        c.call(M::POST, "import_token", Some(json!({}))).await.0,
        503
    );
    assert_eq!(c.call(M::POST, "key_rings/ring-x", None).await.0, 503);
    assert_eq!(
        srv.store.count_keys(inst, &all).await.unwrap(),
        before,
        "no key was stored"
    );
    assert!(
        srv.store.get_token(inst).await.unwrap().is_none(),
        "no token was stored"
    );
    assert!(
        srv.store.list_key_rings(inst).await.unwrap().is_empty(),
        "no ring was stored"
    );
    // reads that use no key material still work
    assert_eq!(c.call(M::GET, "keys", None).await.0, 200);
}

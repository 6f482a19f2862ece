//! The lifecycle harness: an in-process Keyward on its own runtime thread with a manual clock
//! and no background scheduler (tests run scheduler passes themselves), clients that renew
//! their bearer token when the manual clock has moved past its lifetime, request helpers and
//! the error-envelope check.
//!
//! Every test that moves the clock starts its own server: the clock is the server's.
//! Every response goes through [`send`], which fails the test on any 5xx.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use keyward::config::ServeArgs;
use keyward_domain::{format_time, Clock, InstanceId, KeyId, ManualClock, Role};
use keyward_service::KeyService;
use keyward_store::{RegistrationRow, Store};
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};

pub const KEY_TYPE: &str = "application/vnd.ibm.kms.key+json";
pub const ERROR_TYPE: &str = "application/vnd.ibm.kms.error+json";
pub const POLICY_TYPE: &str = "application/vnd.ibm.kms.policy+json";
pub const APIKEY_GRANT: &str = "urn:ibm:params:oauth:grant-type:apikey";

pub const MIN: i64 = 60;
pub const HOUR: i64 = 3_600;
pub const DAY: i64 = 86_400;

/// A running in-process server with its own runtime thread, data dir and manual clock.
pub struct TestServer {
    pub addr: SocketAddr,
    pub base: String,
    pub store: Arc<dyn Store>,
    pub svc: Arc<KeyService>,
    pub clock: Arc<ManualClock>,
    handle: tokio::runtime::Handle,
    shutdown: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    _dir: tempfile::TempDir,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Ok(mut s) = self.shutdown.lock() {
            if let Some(tx) = s.take() {
                let _ = tx.send(());
            }
        }
    }
}

impl TestServer {
    /// Starts a server (no import-token pool, no background scheduler) whose clock starts at
    /// the real current time. Blocks the calling thread until the server is bound.
    pub fn start() -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().to_path_buf();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let clock = Arc::new(ManualClock::new(now));
        let (tx, rx) = std::sync::mpsc::channel();
        let (stx, srx) = tokio::sync::oneshot::channel::<()>();
        let c2 = clock.clone();
        std::thread::Builder::new()
            .name("keyward-lifecycle-server".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let settings = ServeArgs {
                        data_dir: Some(data_dir),
                        listen: Some("127.0.0.1:0".parse().unwrap()),
                        token_pool_size: Some(0),
                        scheduler_interval: Some(0),
                        ..ServeArgs::default()
                    }
                    .resolve()
                    .unwrap();
                    let server = keyward::server::start_with_clock(&settings, c2)
                        .await
                        .unwrap();
                    assert!(
                        server.sealed.is_none(),
                        "server sealed: {:?}",
                        server.sealed
                    );
                    let svc = server.svc.clone().expect("unsealed server has a service");
                    tx.send((
                        server.addr,
                        server.store.clone(),
                        svc,
                        tokio::runtime::Handle::current(),
                    ))
                    .unwrap();
                    server
                        .serve(async move {
                            let _ = srx.await;
                        })
                        .await
                        .unwrap();
                });
                rt.shutdown_background();
            })
            .unwrap();
        let (addr, store, svc, handle) = rx.recv_timeout(Duration::from_secs(60)).unwrap();
        TestServer {
            addr,
            base: format!("http://{addr}"),
            store,
            svc,
            clock,
            handle,
            shutdown: Mutex::new(Some(stx)),
            _dir: dir,
        }
    }

    pub fn now(&self) -> i64 {
        self.clock.now_unix()
    }

    pub fn advance(&self, secs: i64) {
        self.clock.advance(secs);
    }

    /// Runs `fut` on the server's runtime (the store's pool lives there).
    pub async fn run<F>(&self, fut: F) -> F::Output
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(fut).await.unwrap()
    }

    /// One scheduler pass: (rotated, purged).
    pub async fn scheduler(&self) -> (usize, usize) {
        let svc = self.svc.clone();
        self.run(async move { svc.run_scheduled_jobs().await.unwrap() })
            .await
    }

    pub async fn create_instance(&self) -> InstanceId {
        let store = self.store.clone();
        let now = self.now();
        self.run(async move {
            keyward_service::admin::create_instance(&*store, "lifecycle", now)
                .await
                .unwrap()
                .id
        })
        .await
    }

    /// A new principal with `role` in `instance`; returns (apikey, iam_id).
    pub async fn create_api_key(&self, instance: InstanceId, role: Role) -> (String, String) {
        let store = self.store.clone();
        let now = self.now();
        self.run(async move {
            let k = keyward_service::admin::create_api_key(&*store, instance, role, "t", None, now)
                .await
                .unwrap();
            (k.apikey, k.iam_id)
        })
        .await
    }

    /// Grants an existing principal another `role` in `instance`.
    pub async fn grant(&self, instance: InstanceId, iam_id: &str, role: Role) {
        let store = self.store.clone();
        let now = self.now();
        let iam = iam_id.to_string();
        self.run(async move {
            keyward_service::admin::grant(&*store, instance, &iam, role, now)
                .await
                .unwrap()
        })
        .await
    }

    /// A client for a new principal with `role` in `instance`.
    pub async fn client(&self, instance: InstanceId, role: Role) -> Client {
        let (apikey, iam_id) = self.create_api_key(instance, role).await;
        Client::login(&self.base, self.clock.clone(), instance, &apikey, &iam_id).await
    }

    /// A fresh instance and a Manager client for it.
    pub async fn tenant(&self) -> Client {
        let inst = self.create_instance().await;
        self.client(inst, Role::Manager).await
    }

    /// Inserts a registration (the only way: no API creates them).
    pub async fn add_registration(
        &self,
        instance: InstanceId,
        key: &str,
        crn: &str,
        prevent: bool,
    ) {
        let store = self.store.clone();
        let row = RegistrationRow {
            instance_id: instance,
            key_id: KeyId::parse(key).unwrap(),
            resource_crn: crn.to_string(),
            prevent_key_deletion: prevent,
            description: Some("test registration".into()),
            created_at: self.now(),
            created_by: "iam-ServiceId-cloud-object-storage".into(),
        };
        self.run(async move { store.add_registration(&row).await.unwrap() })
            .await
    }

    /// Number of sealed versions the store still holds for a key.
    pub async fn stored_versions(&self, instance: InstanceId, key: &str) -> usize {
        let store = self.store.clone();
        let key = KeyId::parse(key).unwrap();
        self.run(async move { store.versions(instance, key).await.unwrap().len() })
            .await
    }
}

/// A response, fully read.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts `status`; returns the JSON body (Null when empty).
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(
            self.status,
            status,
            "unexpected status; body: {}",
            self.text()
        );
        if self.body.is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }

    /// `resources[0]` of a key collection response with `status`.
    pub fn resource(&self, status: u16) -> Value {
        let v = self.expect(status);
        assert_eq!(v["metadata"]["collectionType"], KEY_TYPE, "{v}");
        assert_eq!(v["metadata"]["collectionTotal"], 1, "{v}");
        assert_eq!(v["resources"].as_array().map(Vec::len), Some(1), "{v}");
        v["resources"][0].clone()
    }

    /// `resources` of a collection response with `status`.
    pub fn resources(&self, status: u16) -> Vec<Value> {
        let v = self.expect(status);
        let res = v["resources"].as_array().cloned().unwrap_or_default();
        assert_eq!(v["metadata"]["collectionTotal"], res.len(), "{v}");
        res
    }

    /// The `Key-Total` header of a HEAD /keys.
    pub fn key_total(&self) -> i64 {
        assert_eq!(self.status, 200, "{}", self.text());
        self.headers
            .get("key-total")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no Key-Total header: {:?}", self.headers))
    }
}

/// Asserts a Key Protect error envelope with `status` and reason `code`; returns the body.
pub fn assert_error(resp: &Resp, status: u16, code: &str) -> Value {
    assert_eq!(
        resp.status,
        status,
        "expected {status} {code}, got {}: {}",
        resp.status,
        resp.text()
    );
    let v = resp.json();
    assert_eq!(v["metadata"]["collectionType"], ERROR_TYPE, "{v}");
    let res = v["resources"].as_array().expect("resources array");
    assert_eq!(res.len(), 1, "{v}");
    let msg = res[0]["errorMsg"].as_str().expect("errorMsg string");
    assert!(msg.contains(code), "errorMsg {msg:?} lacks {code}");
    let reasons = res[0]["reasons"].as_array().expect("reasons array");
    assert_eq!(reasons[0]["code"], code, "{v}");
    assert_eq!(reasons[0]["status"], status, "{v}");
    v
}

/// The reason code of an error response, if it is one.
pub fn reason(resp: &Resp) -> Option<String> {
    let v: Value = serde_json::from_slice(&resp.body).ok()?;
    v["resources"][0]["reasons"][0]["code"]
        .as_str()
        .map(str::to_string)
}

/// As [`assert_error`], and the reason's `target.name` is `field`.
pub fn assert_field_error(resp: &Resp, status: u16, code: &str, field: &str) -> Value {
    let v = assert_error(resp, status, code);
    assert_eq!(
        v["resources"][0]["reasons"][0]["target"]["name"], field,
        "target of {v}"
    );
    v
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Sends, reads the whole body, and fails on any 5xx.
pub async fn send(rb: reqwest::RequestBuilder) -> Resp {
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.bytes().await.unwrap().to_vec();
    assert!(
        status < 500,
        "5xx from the server: {status} {}",
        String::from_utf8_lossy(&body)
    );
    Resp {
        status,
        headers,
        body,
    }
}

pub async fn fetch_token(http: &reqwest::Client, base: &str, apikey: &str) -> String {
    let r = send(
        http.post(format!("{base}/identity/token"))
            .form(&[("grant_type", APIKEY_GRANT), ("apikey", apikey)]),
    )
    .await;
    let v = r.expect(200);
    v["access_token"].as_str().unwrap().to_string()
}

/// A caller: one principal in one instance. Its bearer token is renewed automatically once
/// the manual clock has moved 50 minutes past its issue (tokens last an hour).
#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    pub instance: String,
    pub instance_id: InstanceId,
    pub apikey: String,
    pub iam_id: String,
    clock: Arc<ManualClock>,
    token: Arc<Mutex<(String, i64)>>,
}

impl Client {
    pub async fn login(
        base: &str,
        clock: Arc<ManualClock>,
        instance: InstanceId,
        apikey: &str,
        iam_id: &str,
    ) -> Client {
        let http = http_client();
        let issued = clock.now_unix();
        let token = fetch_token(&http, base, apikey).await;
        Client {
            http,
            base: base.to_string(),
            instance: instance.to_string(),
            instance_id: instance,
            apikey: apikey.to_string(),
            iam_id: iam_id.to_string(),
            clock,
            token: Arc::new(Mutex::new((token, issued))),
        }
    }

    async fn bearer(&self) -> String {
        let now = self.clock.now_unix();
        {
            let t = self.token.lock().unwrap();
            if now - t.1 < 50 * MIN && now >= t.1 {
                return t.0.clone();
            }
        }
        let fresh = fetch_token(&self.http, &self.base, &self.apikey).await;
        *self.token.lock().unwrap() = (fresh.clone(), now);
        fresh
    }

    /// A request with the bearer token and the instance header.
    pub async fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let bearer = self.bearer().await;
        self.http
            .request(method, format!("{}{}", self.base, path))
            .header("authorization", format!("Bearer {bearer}"))
            .header("bluemix-instance", &self.instance)
    }

    pub async fn get(&self, path: &str) -> Resp {
        send(self.req(Method::GET, path).await).await
    }

    pub async fn get_h(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        let mut rb = self.req(Method::GET, path).await;
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        send(rb).await
    }

    pub async fn head(&self, path: &str) -> Resp {
        send(self.req(Method::HEAD, path).await).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        send(self.req(Method::DELETE, path).await).await
    }

    pub async fn delete_h(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        let mut rb = self.req(Method::DELETE, path).await;
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        send(rb).await
    }

    pub async fn send_json(
        &self,
        method: Method,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut rb = self
            .req(method, path)
            .await
            .header("content-type", "application/json")
            .body(serde_json::to_vec(body).unwrap());
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        send(rb).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.send_json(Method::POST, path, body, &[]).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Resp {
        self.send_json(Method::PUT, path, body, &[]).await
    }

    pub async fn patch(&self, path: &str, body: &Value, headers: &[(&str, &str)]) -> Resp {
        self.send_json(Method::PATCH, path, body, headers).await
    }

    /// POST with no body at all (as IBM's SDKs send restore, alias and key-ring calls).
    pub async fn post_empty(&self, path: &str) -> Resp {
        send(self.req(Method::POST, path).await).await
    }

    // ---- keys ----

    pub async fn create_in(&self, resource: Value, ring: Option<&str>) -> Resp {
        let headers: Vec<(&str, &str)> = ring
            .map(|r| vec![("x-kms-key-ring", r)])
            .unwrap_or_default();
        self.send_json(
            Method::POST,
            "/api/v2/keys",
            &key_envelope(resource),
            &headers,
        )
        .await
    }

    pub async fn create(&self, resource: Value) -> Resp {
        self.create_in(resource, None).await
    }

    pub async fn create_root(&self, name: &str) -> Value {
        self.create(json!({"type": KEY_TYPE, "name": name, "extractable": false}))
            .await
            .resource(201)
    }

    pub async fn create_standard(&self, name: &str) -> Value {
        self.create(json!({"type": KEY_TYPE, "name": name, "extractable": true}))
            .await
            .resource(201)
    }

    /// Plain (token-less) import of a root key.
    pub async fn import_root(&self, name: &str, material: &[u8]) -> Value {
        self.create(json!({
            "type": KEY_TYPE, "name": name, "extractable": false, "payload": B64.encode(material),
        }))
        .await
        .resource(201)
    }

    pub async fn metadata(&self, id: &str) -> Resp {
        self.get(&format!("/api/v2/keys/{id}/metadata")).await
    }

    /// The key's metadata resource (asserting 200).
    pub async fn meta(&self, id: &str) -> Value {
        self.metadata(id).await.resource(200)
    }

    /// `POST /keys/{id}/actions/{action}` with a JSON body.
    pub async fn action(&self, id: &str, action: &str, body: &Value) -> Resp {
        self.post(&format!("/api/v2/keys/{id}/actions/{action}"), body)
            .await
    }

    /// `POST /keys/{id}/actions/{action}` with no body.
    pub async fn act(&self, id: &str, action: &str) -> Resp {
        self.post_empty(&format!("/api/v2/keys/{id}/actions/{action}"))
            .await
    }

    pub async fn wrap(&self, id: &str, plaintext: &[u8]) -> Resp {
        self.action(id, "wrap", &json!({"plaintext": B64.encode(plaintext)}))
            .await
    }

    /// Wraps and returns (ciphertext, keyVersion.id).
    pub async fn wrap_ok(&self, id: &str, plaintext: &[u8]) -> (String, String) {
        let v = self.wrap(id, plaintext).await.expect(200);
        (
            v["ciphertext"].as_str().unwrap().to_string(),
            v["keyVersion"]["id"].as_str().unwrap().to_string(),
        )
    }

    pub async fn unwrap(&self, id: &str, ciphertext: &str) -> Resp {
        self.action(id, "unwrap", &json!({"ciphertext": ciphertext}))
            .await
    }

    pub async fn rotate(&self, id: &str, body: &Value) -> Resp {
        self.action(id, "rotate", body).await
    }

    pub async fn delete_key(&self, id: &str) -> Resp {
        self.delete(&format!("/api/v2/keys/{id}")).await
    }

    pub async fn restore(&self, id: &str) -> Resp {
        self.post_empty(&format!("/api/v2/keys/{id}/restore")).await
    }

    pub async fn purge(&self, id: &str) -> Resp {
        self.delete(&format!("/api/v2/keys/{id}/purge")).await
    }

    /// `GET /keys/{id}/versions?allKeyStates=true&totalCount=true`: (ids newest first, totalCount).
    pub async fn versions(&self, id: &str) -> (Vec<String>, i64) {
        let v = self
            .get(&format!(
                "/api/v2/keys/{id}/versions?allKeyStates=true&totalCount=true"
            ))
            .await
            .expect(200);
        let ids = v["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect();
        (ids, v["metadata"]["totalCount"].as_i64().unwrap())
    }

    /// Ids of `GET /keys{query}` (query starts with `?` or is empty).
    pub async fn list_ids(&self, query: &str) -> Vec<String> {
        self.get(&format!("/api/v2/keys{query}"))
            .await
            .resources(200)
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    }

    pub async fn key_total(&self, query: &str) -> i64 {
        self.head(&format!("/api/v2/keys{query}")).await.key_total()
    }

    // ---- policies ----

    /// `PUT /instance/policies?policy=<type>` with one policy.
    pub async fn put_instance_policy(
        &self,
        policy_type: &str,
        enabled: bool,
        attributes: Option<Value>,
    ) -> Resp {
        let mut data = json!({"enabled": enabled});
        if let Some(a) = attributes {
            data["attributes"] = a;
        }
        self.put(
            &format!("/api/v2/instance/policies?policy={policy_type}"),
            &policy_envelope(vec![
                json!({"policy_type": policy_type, "policy_data": data}),
            ]),
        )
        .await
    }

    /// `PUT /keys/{id}/policies[?policy=...]` with one resource.
    pub async fn put_key_policy(&self, id: &str, query: &str, resource: Value) -> Resp {
        self.put(
            &format!("/api/v2/keys/{id}/policies{query}"),
            &policy_envelope(vec![resource]),
        )
        .await
    }
}

pub fn key_envelope(resource: Value) -> Value {
    json!({
        "metadata": {"collectionType": KEY_TYPE, "collectionTotal": 1},
        "resources": [resource],
    })
}

pub fn policy_envelope(resources: Vec<Value>) -> Value {
    json!({
        "metadata": {"collectionType": POLICY_TYPE, "collectionTotal": resources.len()},
        "resources": resources,
    })
}

pub fn rotation_policy(interval: i64) -> Value {
    json!({"type": POLICY_TYPE, "rotation": {"enabled": true, "interval_month": interval}})
}

pub fn dual_auth_policy(enabled: bool) -> Value {
    json!({"type": POLICY_TYPE, "dualAuthDelete": {"enabled": enabled}})
}

pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

pub fn unb64(s: &str) -> Vec<u8> {
    B64.decode(s).unwrap()
}

pub fn random(n: usize) -> Vec<u8> {
    keyward_crypto::random_bytes(n).unwrap()
}

pub fn id_of(resource: &Value) -> String {
    resource["id"].as_str().unwrap().to_string()
}

pub fn time_str(unix: i64) -> String {
    format_time(unix)
}

/// The key version id a wrapped ciphertext names (the blob format of docs/design.md).
pub fn handle_of(ciphertext: &str) -> String {
    let blob: Value = serde_json::from_slice(&unb64(ciphertext)).unwrap();
    blob["handle"].as_str().unwrap().to_string()
}

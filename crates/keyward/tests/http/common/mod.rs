//! The harness: an in-process Keyward on its own runtime thread (so one server can outlive a
//! single `#[tokio::test]` runtime and be shared), clients per (API key, instance), request
//! helpers, the error-envelope check and state snapshots.
//!
//! Every response goes through [`Client::send`], which fails the test on any 5xx.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use keyward::config::ServeArgs;
use keyward_crypto::import::{encrypt_material, encrypt_nonce, pem_decode, OaepHash};
use keyward_crypto::SecretBytes;
use keyward_domain::{Clock, InstanceId, KeyState, ManualClock, Role, TokenId};
use keyward_store::{KeyQuery, KeyRow, Store};
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};

pub const KEY_TYPE: &str = "application/vnd.ibm.kms.key+json";
pub const ERROR_TYPE: &str = "application/vnd.ibm.kms.error+json";
pub const APIKEY_GRANT: &str = "urn:ibm:params:oauth:grant-type:apikey";

/// A running in-process server with its own runtime thread, data dir and manual clock.
pub struct TestServer {
    pub addr: SocketAddr,
    pub base: String,
    pub store: Arc<dyn Store>,
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

/// The server shared by every test that neither moves the clock nor needs a special pool.
/// Each test isolates itself by creating its own instances.
pub fn shared() -> &'static TestServer {
    static SHARED: OnceLock<TestServer> = OnceLock::new();
    SHARED.get_or_init(|| TestServer::start(3))
}

impl TestServer {
    /// Starts a server with `pool` pre-generated import-token keypairs (0: generate inline).
    /// Blocks the calling thread briefly until the server is bound.
    pub fn start(pool: usize) -> TestServer {
        Self::start_with(pool, |_| {})
    }

    /// As [`TestServer::start`], with more settings made by `configure`.
    pub fn start_with(
        pool: usize,
        configure: impl FnOnce(&mut ServeArgs) + Send + 'static,
    ) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().to_path_buf();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let clock = Arc::new(ManualClock::new(now));
        let (tx, rx) = std::sync::mpsc::channel();
        let (stx, srx) = tokio::sync::oneshot::channel::<()>();
        let c2 = clock.clone();
        std::thread::Builder::new()
            .name("keyward-test-server".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let mut args = ServeArgs {
                        data_dir: Some(data_dir),
                        listen: Some("127.0.0.1:0".parse().unwrap()),
                        token_pool_size: Some(pool),
                        // The scheduler is driven by the manual clock only when a test asks.
                        scheduler_interval: Some(0),
                        ..ServeArgs::default()
                    };
                    configure(&mut args);
                    let settings = args.resolve().unwrap();
                    let server = keyward::server::start_with_clock(&settings, c2)
                        .await
                        .unwrap();
                    assert!(
                        server.sealed.is_none(),
                        "server sealed: {:?}",
                        server.sealed
                    );
                    tx.send((
                        server.addr,
                        server.store.clone(),
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
        let (addr, store, handle) = rx.recv_timeout(Duration::from_secs(60)).unwrap();
        TestServer {
            addr,
            base: format!("http://{addr}"),
            store,
            clock,
            handle,
            shutdown: Mutex::new(Some(stx)),
            _dir: dir,
        }
    }

    pub fn now(&self) -> i64 {
        self.clock.now_unix()
    }

    /// Runs `fut` on the server's runtime (the store's pool lives there).
    pub async fn run<F>(&self, fut: F) -> F::Output
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(fut).await.unwrap()
    }

    pub async fn create_instance(&self) -> InstanceId {
        let store = self.store.clone();
        let now = self.now();
        self.run(async move {
            keyward_service::admin::create_instance(&*store, "test", now)
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

    /// Grants an existing principal `role` in `instance`.
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
        Client::login(&self.base, instance, &apikey, &iam_id).await
    }

    /// A fresh instance and a Manager client for it.
    pub async fn tenant(&self) -> Client {
        let inst = self.create_instance().await;
        self.client(inst, Role::Manager).await
    }

    /// Everything a rejected request must leave unchanged in `instance`.
    pub async fn snapshot(&self, instance: InstanceId) -> Snapshot {
        self.snapshot_with(instance, true).await
    }

    /// As [`TestServer::snapshot`] without per-key version counts (one query for the keys;
    /// a rotation still shows as a changed row).
    pub async fn quick_snapshot(&self, instance: InstanceId) -> Snapshot {
        self.snapshot_with(instance, false).await
    }

    async fn snapshot_with(&self, instance: InstanceId, versions: bool) -> Snapshot {
        let store = self.store.clone();
        self.run(async move {
            let q = KeyQuery {
                states: vec![
                    KeyState::PreActivation,
                    KeyState::Active,
                    KeyState::Suspended,
                    KeyState::Deactivated,
                    KeyState::Destroyed,
                ],
                limit: 5000,
                ..KeyQuery::default()
            };
            let mut keys = Vec::new();
            for row in store.list_keys(instance, &q).await.unwrap() {
                let n = if versions {
                    store.versions(instance, row.id).await.unwrap().len()
                } else {
                    0
                };
                keys.push((row, n));
            }
            keys.sort_by_key(|(r, _)| r.id);
            let count = store.count_keys(instance, &q).await.unwrap();
            let token = store.get_token(instance).await.unwrap().map(|t| TokenSnap {
                token_id: t.token_id,
                remaining: t.remaining,
                max: t.max_retrievals,
                expires_at: t.expires_at,
                nonce: t.nonce.clone(),
            });
            Snapshot { keys, count, token }
        })
        .await
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TokenSnap {
    pub token_id: TokenId,
    pub remaining: i64,
    pub max: i64,
    pub expires_at: i64,
    pub nonce: Vec<u8>,
}

/// Keys (every state, with their version counts), the store's count, and the token row.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub keys: Vec<(KeyRow, usize)>,
    pub count: i64,
    pub token: Option<TokenSnap>,
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

    pub fn content_type(&self) -> Option<&str> {
        self.headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
    }

    /// Asserts `status` and, for a body, `Content-Type: application/json`; returns the JSON
    /// (Null for an empty body).
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
            assert_eq!(
                self.content_type(),
                Some("application/json"),
                "{}",
                self.text()
            );
            self.json()
        }
    }

    /// `resources[0]` of a 200/201 collection response.
    pub fn resource(&self, status: u16) -> Value {
        let v = self.expect(status);
        assert_eq!(v["metadata"]["collectionType"], KEY_TYPE, "{v}");
        assert_eq!(v["metadata"]["collectionTotal"], 1, "{v}");
        assert_eq!(v["resources"].as_array().map(Vec::len), Some(1), "{v}");
        v["resources"][0].clone()
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
    assert_eq!(
        resp.content_type(),
        Some("application/json"),
        "error Content-Type must be exactly application/json"
    );
    let v = resp.json();
    assert_eq!(v["metadata"]["collectionType"], ERROR_TYPE, "{v}");
    assert_eq!(v["metadata"]["collectionTotal"], 1, "{v}");
    let res = v["resources"].as_array().expect("resources array");
    assert_eq!(res.len(), 1, "{v}");
    let msg = res[0]["errorMsg"].as_str().expect("errorMsg string");
    assert!(msg.contains(code), "errorMsg {msg:?} lacks {code}");
    let reasons = res[0]["reasons"].as_array().expect("reasons array");
    assert_eq!(reasons.len(), 1, "{v}");
    assert_eq!(reasons[0]["code"], code, "{v}");
    assert_eq!(reasons[0]["status"], status, "{v}");
    assert!(reasons[0]["message"].is_string(), "{v}");
    v
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

/// A client whose connections come from another loopback address (127.0.0.`n`): the server
/// limits failed bearer tokens per source address, so tests that send many bad tokens use
/// their own addresses and cannot lock the shared server out for everyone else.
pub fn http_client_from(n: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(std::net::IpAddr::from([127, 0, 0, n]))
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

/// `POST /identity/token` with a form body.
pub async fn iam_token(http: &reqwest::Client, base: &str, form: &[(&str, &str)]) -> Resp {
    send(http.post(format!("{base}/identity/token")).form(form)).await
}

/// A caller: bearer token for one principal, and the `bluemix-instance` it sends.
#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    pub instance: String,
    pub instance_id: InstanceId,
    pub apikey: String,
    pub iam_id: String,
    pub token: String,
}

impl Client {
    pub async fn login(base: &str, instance: InstanceId, apikey: &str, iam_id: &str) -> Client {
        let http = http_client();
        let token = fetch_token(&http, base, apikey).await;
        Client {
            http,
            base: base.to_string(),
            instance: instance.to_string(),
            instance_id: instance,
            apikey: apikey.to_string(),
            iam_id: iam_id.to_string(),
            token,
        }
    }

    /// A fresh bearer token (after the manual clock moved past the old one's expiry).
    pub async fn refresh(&mut self) {
        self.token = fetch_token(&self.http, &self.base, &self.apikey).await;
    }

    /// The same principal, sending another `bluemix-instance`.
    pub fn with_instance(&self, instance: &str) -> Client {
        let mut c = self.clone();
        c.instance = instance.to_string();
        c
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A request with the bearer token and the instance header.
    pub fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .header("authorization", format!("Bearer {}", self.token))
            .header("bluemix-instance", &self.instance)
    }

    pub async fn get(&self, path: &str) -> Resp {
        send(self.req(Method::GET, path)).await
    }

    pub async fn head(&self, path: &str) -> Resp {
        send(self.req(Method::HEAD, path)).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        send(self.req(Method::DELETE, path)).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        send(
            self.req(Method::POST, path)
                .header("content-type", "application/json")
                .body(serde_json::to_vec(body).unwrap()),
        )
        .await
    }

    /// POST of raw bytes with an optional Content-Type.
    pub async fn post_raw(&self, path: &str, body: Vec<u8>, content_type: Option<&str>) -> Resp {
        let mut rb = self.req(Method::POST, path).body(body);
        if let Some(ct) = content_type {
            rb = rb.header("content-type", ct);
        }
        send(rb).await
    }

    // ---- keys ----

    pub async fn create(&self, resource: Value) -> Resp {
        self.post("/api/v2/keys", &key_envelope(resource)).await
    }

    pub async fn create_root_key(&self) -> Value {
        self.create(json!({"type": KEY_TYPE, "name": "root-key", "extractable": false}))
            .await
            .resource(201)
    }

    pub async fn create_standard_key(&self) -> Value {
        self.create(json!({"type": KEY_TYPE, "name": "std-key", "extractable": true}))
            .await
            .resource(201)
    }

    /// Plain (token-less) import of a root key.
    pub async fn import_root_key(&self, material: &[u8]) -> Value {
        self.create(json!({
            "type": KEY_TYPE, "name": "imported-root", "extractable": false,
            "payload": B64.encode(material),
        }))
        .await
        .resource(201)
    }

    pub async fn action(&self, id: &str, action: &str, body: &Value) -> Resp {
        self.post(&format!("/api/v2/keys/{id}/actions/{action}"), body)
            .await
    }

    pub async fn wrap(&self, id: &str, body: &Value) -> Resp {
        self.action(id, "wrap", body).await
    }

    pub async fn unwrap(&self, id: &str, ciphertext: &str, aad: Option<&[&str]>) -> Resp {
        let mut b = json!({ "ciphertext": ciphertext });
        if let Some(a) = aad {
            b["aad"] = json!(a);
        }
        self.action(id, "unwrap", &b).await
    }

    /// Wraps `plaintext` (bytes) and returns the ciphertext.
    pub async fn wrap_bytes(&self, id: &str, plaintext: &[u8], aad: Option<&[&str]>) -> String {
        let mut b = json!({ "plaintext": B64.encode(plaintext) });
        if let Some(a) = aad {
            b["aad"] = json!(a);
        }
        let v = self.wrap(id, &b).await.expect(200);
        v["ciphertext"].as_str().unwrap().to_string()
    }

    /// Unwraps and returns the plaintext bytes.
    pub async fn unwrap_bytes(&self, id: &str, ciphertext: &str, aad: Option<&[&str]>) -> Vec<u8> {
        let v = self.unwrap(id, ciphertext, aad).await.expect(200);
        B64.decode(v["plaintext"].as_str().unwrap()).unwrap()
    }

    pub async fn rotate(&self, id: &str, body: &Value) -> Resp {
        self.action(id, "rotate", body).await
    }

    // ---- import tokens ----

    pub async fn create_token(&self, body: &Value) -> Resp {
        self.post("/api/v2/import_token", body).await
    }

    pub async fn get_token(&self) -> Resp {
        self.get("/api/v2/import_token").await
    }

    /// POST a token and GET it once: the token as a client sees it.
    pub async fn fresh_token(&self, expiration: i64, max: i64) -> ImportToken {
        self.create_token(&json!({"expiration": expiration, "maxAllowedRetrievals": max}))
            .await
            .expect(200);
        ImportToken::from_get(&self.get_token().await.expect(200))
    }
}

pub async fn fetch_token(http: &reqwest::Client, base: &str, apikey: &str) -> String {
    let r = iam_token(
        http,
        base,
        &[("grant_type", APIKEY_GRANT), ("apikey", apikey)],
    )
    .await;
    let v = r.expect(200);
    v["access_token"].as_str().unwrap().to_string()
}

pub fn key_envelope(resource: Value) -> Value {
    json!({
        "metadata": {"collectionType": KEY_TYPE, "collectionTotal": 1},
        "resources": [resource],
    })
}

/// The public half of a retrieved import token.
#[derive(Debug, Clone)]
pub struct ImportToken {
    pub pem: String,
    pub nonce: Vec<u8>,
}

impl ImportToken {
    pub fn from_get(v: &Value) -> ImportToken {
        let pem = String::from_utf8(B64.decode(v["payload"].as_str().unwrap()).unwrap()).unwrap();
        let nonce = B64.decode(v["nonce"].as_str().unwrap()).unwrap();
        ImportToken { pem, nonce }
    }

    /// The secure-import fields for `material` (`payload`, `encryptedNonce`, `iv`,
    /// `encryptionAlgorithm`).
    pub fn secure_fields(&self, material: &[u8], hash: OaepHash) -> SecureFields {
        let payload = encrypt_material(&self.pem, hash, material).unwrap();
        let (iv, en) = encrypt_nonce(&SecretBytes::copy_from(material), &self.nonce).unwrap();
        SecureFields {
            payload,
            encrypted_nonce: en,
            iv: iv.to_vec(),
            algorithm: hash.wire_name().to_string(),
        }
    }

    pub fn spki_der(&self) -> Vec<u8> {
        pem_decode(&self.pem).unwrap()
    }
}

/// Raw (decoded) secure-import fields, to be mutated by bad-input tests.
#[derive(Debug, Clone)]
pub struct SecureFields {
    pub payload: Vec<u8>,
    pub encrypted_nonce: Vec<u8>,
    pub iv: Vec<u8>,
    pub algorithm: String,
}

impl SecureFields {
    /// The create-key resource for a secure import of a root key.
    pub fn resource(&self) -> Value {
        json!({
            "type": KEY_TYPE, "name": "secure-import", "extractable": false,
            "payload": B64.encode(&self.payload),
            "encryptedNonce": B64.encode(&self.encrypted_nonce),
            "iv": B64.encode(&self.iv),
            "encryptionAlgorithm": self.algorithm,
        })
    }

    /// The rotate body.
    pub fn rotate_body(&self) -> Value {
        json!({
            "payload": B64.encode(&self.payload),
            "encryptedNonce": B64.encode(&self.encrypted_nonce),
            "iv": B64.encode(&self.iv),
            "encryptionAlgorithm": self.algorithm,
        })
    }
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

pub fn random_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The wrapped-DEK blob (docs/design.md): base64 of `{"ciphertext","iv","version","handle"}`.
pub fn decode_blob(ciphertext: &str) -> Value {
    serde_json::from_slice(&unb64(ciphertext)).unwrap()
}

pub fn encode_blob(v: &Value) -> String {
    b64(&serde_json::to_vec(v).unwrap())
}

/// Opens a wrapped DEK with known key `material`: proves which material a key version holds.
pub fn open_blob_with(material: &[u8], key_id: &str, ciphertext: &str, aad: &[String]) -> Vec<u8> {
    let blob = decode_blob(ciphertext);
    let handle = blob["handle"].as_str().unwrap();
    let ad = keyward_crypto::dek::dek_aad(key_id, handle, aad);
    let (iv, ct) = (
        unb64(blob["iv"].as_str().unwrap()),
        unb64(blob["ciphertext"].as_str().unwrap()),
    );
    let material = SecretBytes::copy_from(material);
    match blob["salt"].as_str() {
        // The current form: a key derived per wrap from the material and the salt.
        Some(salt) => keyward_crypto::dek::open_derived(&material, &unb64(salt), &iv, &ad, &ct),
        None => keyward_crypto::dek::open(&material, &iv, &ad, &ct),
    }
    .unwrap()
    .expose()
    .to_vec()
}

pub fn id_of(resource: &Value) -> String {
    resource["id"].as_str().unwrap().to_string()
}

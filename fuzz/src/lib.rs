//! Shared harness of the HTTP fuzz targets: one real Keyward (the `keyward serve` wiring of
//! `keyward::server::start_with_clock`, a SQLite store in a private temporary directory, a
//! file master key, no audit log, no rate limits, no import-token pool), built once per
//! process, and its axum router called in-process with `tower::ServiceExt::oneshot`.
//!
//! Fixtures made through the API itself at start: instance A (a Manager and a Reader), a
//! separate instance B for instance-policy bodies (its policies are reset after every such
//! request, so one fuzz input cannot lock the next ones out), a key ring, root keys (one to
//! wrap with, one to rotate, one imported, one whose state the fuzzer may flip), a standard
//! key, an alias, and an import token.
//!
//! [`App::check`] is the oracle: no 5xx (the 500/503 integrity and availability cases cannot
//! happen on this private, healthy store), and every non-empty body is JSON served as
//! `application/json`.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use keyward::config::ServeArgs;
use keyward_api::ratelimit::{Limits, Rate};
use keyward_api::AppState;
use keyward_domain::{ManualClock, Role};
use keyward_service::policies::InstancePolicyInput;
use serde_json::{json, Value};
use tower::ServiceExt;

/// A fixed time for the manual clock (tokens never expire during a run).
pub const NOW: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

pub const KEY_TYPE: &str = "application/vnd.ibm.kms.key+json";

/// What a response looked like.
pub struct Reply {
    pub status: StatusCode,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// The server and its fixtures.
pub struct App {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
    /// The service behind the router (for targets that call it directly).
    pub svc: Arc<keyward_service::KeyService>,
    /// Manager of instance A and of instance B.
    pub manager: String,
    /// The Manager's IAM id.
    pub manager_iam: String,
    /// Reader of instance A.
    pub reader: String,
    pub instance_a: String,
    pub instance_b: String,
    pub ring: String,
    /// Root key of A to wrap, unwrap and rewrap with.
    pub root: String,
    /// Root key of A whose lifecycle the fuzzer drives (disable, enable, restore, move...).
    pub victim: String,
    /// Root key of A that is rotated.
    pub rotated: String,
    /// Imported root key of A (rotation needs new material).
    pub imported: String,
    /// Standard key of A.
    pub standard: String,
    /// An alias of `root`.
    pub alias: String,
    /// A wrapped DEK of `root` (no aad) and the same with aad ["fuzz"].
    pub ciphertext: String,
    pub ciphertext_aad: String,
    /// The DEKs inside `ciphertext` and `ciphertext_aad`.
    pub dek: Vec<u8>,
    pub dek_aad: Vec<u8>,
    _dir: tempfile::TempDir,
}

/// The process-wide app (built on first use; about a second for the import token's RSA key).
pub fn app() -> &'static App {
    static APP: OnceLock<App> = OnceLock::new();
    APP.get_or_init(|| match App::build() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fuzz harness set-up failed: {e:#}");
            std::process::abort()
        }
    })
}

fn scratch_dir() -> std::io::Result<tempfile::TempDir> {
    // tmpfs when there is one: SQLite's fsyncs are then free. The app lives in a static, so
    // its directory outlives the process (libFuzzer exits without running destructors): the
    // name carries the pid, and directories of processes that are gone are removed here.
    let shm = std::path::Path::new("/dev/shm");
    let parent = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    if let Ok(rd) = std::fs::read_dir(&parent) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(pid) = name
                .strip_prefix("keyward-fuzz-")
                .and_then(|r| r.split('-').next())
            {
                if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
    tempfile::Builder::new()
        .prefix(&format!("keyward-fuzz-{}-", std::process::id()))
        .tempdir_in(parent)
}

fn bail(msg: String) -> anyhow::Error {
    anyhow::anyhow!(msg)
}

type Res<T> = anyhow::Result<T>;

impl App {
    fn build() -> Res<App> {
        let dir = scratch_dir()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let data_dir = dir.path().join("data");
        let (router, svc, manager_key, manager_iam, reader_key, a, b) = rt.block_on(async {
            let settings = ServeArgs {
                data_dir: Some(data_dir),
                listen: Some("127.0.0.1:0".parse()?),
                token_pool_size: Some(0),
                scheduler_interval: Some(0),
                ..ServeArgs::default()
            }
            .resolve()
            .map_err(|e| bail(format!("{e:#}")))?;
            let clock = Arc::new(ManualClock::new(NOW));
            let server = keyward::server::start_with_clock(&settings, clock)
                .await
                .map_err(|e| bail(format!("{e:#}")))?;
            if let Some(reason) = &server.sealed {
                return Err(bail(format!("server sealed: {reason}")));
            }
            let svc = server
                .svc
                .clone()
                .ok_or_else(|| bail("no service".into()))?;
            let store = server.store.clone();
            let limits = Limits {
                crypto: Rate::OFF,
                import_token: Rate::OFF,
                management: Rate::OFF,
                import_token_create: Rate::OFF,
                key_create: Rate::OFF,
                auth_failures: Rate::OFF,
                ..Limits::default()
            };
            let router = keyward_api::app(AppState::new(svc.clone(), limits), true);
            let a = keyward_service::admin::create_instance(&*store, "fuzz-a", NOW).await?;
            let b = keyward_service::admin::create_instance(&*store, "fuzz-b", NOW).await?;
            let m = keyward_service::admin::create_api_key(
                &*store,
                a.id,
                Role::Manager,
                "m",
                None,
                NOW,
            )
            .await?;
            keyward_service::admin::grant(&*store, b.id, &m.iam_id, Role::Manager, NOW).await?;
            let r =
                keyward_service::admin::create_api_key(&*store, a.id, Role::Reader, "r", None, NOW)
                    .await?;
            // The listener of `server` is dropped here: the router is called without a socket.
            drop(server);
            Ok::<_, anyhow::Error>((
                router,
                svc,
                m.apikey,
                m.iam_id,
                r.apikey,
                a.id.to_string(),
                b.id.to_string(),
            ))
        })?;
        let mut app = App {
            rt,
            router,
            svc,
            manager: String::new(),
            manager_iam,
            reader: String::new(),
            instance_a: a,
            instance_b: b,
            ring: "fuzz-ring".into(),
            root: String::new(),
            victim: String::new(),
            rotated: String::new(),
            imported: String::new(),
            standard: String::new(),
            alias: "fuzz-alias".into(),
            ciphertext: String::new(),
            ciphertext_aad: String::new(),
            dek: Vec::new(),
            dek_aad: Vec::new(),
            _dir: dir,
        };
        app.manager = app.login(&manager_key)?;
        app.reader = app.login(&reader_key)?;
        app.fixtures()?;
        Ok(app)
    }

    fn login(&self, apikey: &str) -> Res<String> {
        let body =
            format!("grant_type=urn%3Aibm%3Aparams%3Aoauth%3Agrant-type%3Aapikey&apikey={apikey}");
        let r = self.call(
            Method::POST,
            "/identity/token",
            &[(
                header::CONTENT_TYPE.as_str(),
                "application/x-www-form-urlencoded",
            )],
            None,
            body.into_bytes(),
        );
        let v = expect_json(&r, 200, "token")?;
        v["access_token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| bail("no access_token".into()))
    }

    fn api(&self, method: Method, uri: &str, body: Value, status: u16) -> Res<Value> {
        let r = self.call(
            method,
            uri,
            &[(header::CONTENT_TYPE.as_str(), "application/json")],
            Some((&self.manager, &self.instance_a)),
            if body.is_null() {
                Vec::new()
            } else {
                serde_json::to_vec(&body)?
            },
        );
        expect_json(&r, status, uri)
    }

    fn create_key(&self, name: &str, extra: Value) -> Res<String> {
        let mut res = json!({"type": KEY_TYPE, "name": name, "extractable": false,
                             "description": "a fuzz fixture", "tags": ["fuzz", "t2"]});
        if let (Some(m), Value::Object(e)) = (res.as_object_mut(), extra) {
            m.extend(e);
        }
        let v = self.api(
            Method::POST,
            "/api/v2/keys",
            json!({"metadata": {"collectionType": KEY_TYPE, "collectionTotal": 1},
                   "resources": [res]}),
            201,
        )?;
        v["resources"][0]["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| bail("no key id".into()))
    }

    fn fixtures(&mut self) -> Res<()> {
        self.api(
            Method::POST,
            &format!("/api/v2/key_rings/{}", self.ring),
            Value::Null,
            201,
        )?;
        self.root = self.create_key("fuzz-root", json!({}))?;
        self.victim = self.create_key("fuzz-victim", json!({}))?;
        self.rotated = self.create_key("fuzz-rotated", json!({}))?;
        self.standard = self.create_key("fuzz-standard", json!({"extractable": true}))?;
        self.api(
            Method::POST,
            &format!("/api/v2/keys/{}/aliases/{}", self.root, self.alias),
            Value::Null,
            201,
        )?;
        // An imported root key: plain import of 32 bytes.
        let material = base64_std(&[7u8; 32]);
        self.imported = self.create_key("fuzz-imported", json!({"payload": material}))?;
        let w = self.api(
            Method::POST,
            &format!("/api/v2/keys/{}/actions/wrap", self.root),
            json!({}),
            200,
        )?;
        self.ciphertext = w["ciphertext"].as_str().unwrap_or_default().to_string();
        self.dek = base64_decode(w["plaintext"].as_str().unwrap_or_default())?;
        let w = self.api(
            Method::POST,
            &format!("/api/v2/keys/{}/actions/wrap", self.root),
            json!({"aad": ["fuzz"]}),
            200,
        )?;
        self.ciphertext_aad = w["ciphertext"].as_str().unwrap_or_default().to_string();
        self.dek_aad = base64_decode(w["plaintext"].as_str().unwrap_or_default())?;
        // An import token, so that secure-import bodies reach the RSA-OAEP step.
        self.api(
            Method::POST,
            "/api/v2/import_token",
            json!({"expiration": 86400, "maxAllowedRetrievals": 500}),
            200,
        )?;
        self.reset_instance_b()?;
        Ok(())
    }

    /// Puts every instance policy of B back to disabled. Called through the service with the
    /// Manager's identity rather than over HTTP, because a fuzzed allowedIP policy may refuse
    /// every address (as it would in Key Protect).
    pub fn reset_instance_b(&self) -> Res<()> {
        let caller = keyward_service::Caller {
            iam_id: self.manager_iam.clone(),
            instance: keyward_domain::InstanceId::parse(&self.instance_b)
                .map_err(|e| bail(format!("{e:?}")))?,
            roles: Arc::from(vec![Role::Manager]),
            meta: keyward_service::audit::RequestMeta {
                request_id: String::new(),
                correlation_id: None,
                source: None,
                audited: Default::default(),
            },
        };
        let input = [
            "allowedIP",
            "dualAuthDelete",
            "keyCreateImportAccess",
            "metrics",
            "rotation",
        ]
        .iter()
        .map(|t| InstancePolicyInput {
            policy_type: t.to_string(),
            enabled: false,
            attributes: None,
        })
        .collect();
        self.rt
            .block_on(self.svc.set_instance_policies(&caller, input))
            .map_err(|e| bail(format!("resetting instance B policies: {}", e.message)))
    }

    /// Runs `fut` on the harness's runtime (the store's pool lives there).
    pub fn block_on<F: std::future::Future>(&self, fut: F) -> F::Output {
        self.rt.block_on(fut)
    }

    /// The Manager of instance A as the service sees it.
    pub fn manager_caller(&self) -> Res<keyward_service::Caller> {
        let instance = keyward_domain::InstanceId::parse(&self.instance_a)
            .map_err(|e| bail(format!("{e:?}")))?;
        let meta = keyward_service::audit::RequestMeta {
            request_id: String::new(),
            correlation_id: None,
            source: None,
            audited: Default::default(),
        };
        self.rt
            .block_on(self.svc.authenticate(&self.manager, instance, meta))
            .map_err(|e| bail(e.message))
    }

    /// Sends one request through the router, as from 127.0.0.1 (never fails: an unbuildable
    /// request, which no client could send, is answered 400 here).
    pub fn call(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        auth: Option<(&str, &str)>,
        body: Vec<u8>,
    ) -> Reply {
        let mut b = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        if let Some((token, instance)) = auth {
            b = b
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .header("bluemix-instance", instance);
        }
        b = b.header(header::CONTENT_LENGTH, body.len());
        let Ok(mut req) = b.body(Body::from(body)) else {
            return Reply {
                status: StatusCode::BAD_REQUEST,
                content_type: None,
                body: Vec::new(),
            };
        };
        let peer: SocketAddr = ([127, 0, 0, 1], 40000).into();
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        let router = self.router.clone();
        self.rt.block_on(async move {
            let resp = match router.oneshot(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            let status = resp.status();
            let content_type = resp
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .map(|c| c.to_bytes().to_vec())
                .unwrap_or_default();
            Reply {
                status,
                content_type,
                body,
            }
        })
    }

    /// The oracle for every fuzzed request.
    pub fn check(&self, what: &str, r: &Reply) {
        if r.status.is_server_error() {
            panic!(
                "{what}: server error {}: {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            );
        }
        if !r.body.is_empty() {
            if r.content_type.as_deref() != Some("application/json") {
                panic!(
                    "{what}: {} with content-type {:?}: {}",
                    r.status,
                    r.content_type,
                    String::from_utf8_lossy(&r.body)
                );
            }
            if serde_json::from_slice::<Value>(&r.body).is_err() {
                panic!(
                    "{what}: {} body is not JSON: {}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                );
            }
        }
    }
}

fn expect_json(r: &Reply, status: u16, what: &str) -> Res<Value> {
    if r.status.as_u16() != status {
        return Err(bail(format!(
            "{what}: expected {status}, got {}: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        )));
    }
    if r.body.is_empty() {
        return Ok(Value::Null);
    }
    Ok(serde_json::from_slice(&r.body)?)
}

pub fn base64_std(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn base64_decode(s: &str) -> Result<Vec<u8>, anyhow::Error> {
    use base64::Engine;
    Ok(base64::engine::general_purpose::STANDARD.decode(s)?)
}

/// Replaces every `from` in `hay` with `to`.
pub fn replace(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    if from.is_empty() || hay.len() < from.len() {
        return hay.to_vec();
    }
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

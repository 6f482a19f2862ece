//! Router-level tests: requests go straight into `keyward_api::app` (`tower::ServiceExt::
//! oneshot`, no socket) over a real `KeyService` on a temporary SQLite store and a file master
//! key, wired as `crates/keyward/src/server.rs` does. They cover what the API layer itself
//! decides on the wire: the request headers (`bluemix-instance`, `prefer`, `x-kms-key-ring`,
//! `correlation-id`, `content-type`), case-insensitive JSON field names, the error envelope
//! (its shape, `target`, content type), 4xx for malformed bodies and queries, and `HEAD` counts.
//! Only wire behaviour is asserted (status, headers, body), so they hold across rewrites of the
//! crate's internals. The same behaviour over real sockets is in `crates/keyward/tests/http`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use keyward_api::{app, ratelimit::Limits, AppState};
use keyward_crypto::master::FileMasterKey;
use keyward_domain::SystemClock;
use keyward_service::{KeyService, ServiceConfig};
use keyward_store::{DatabaseUrl, SqlStore, Store};
use keyward_testsupport::{key_envelope, Tenant, APIKEY_GRANT, ERROR_TYPE, KEY_TYPE};
use serde_json::{json, Value};
use tower::ServiceExt;

/// The router over a fresh service, and one tenant (a Manager) logged in through it.
struct Fixture {
    router: Router,
    store: Arc<dyn Store>,
    token: String,
    instance: String,
    _dir: tempfile::TempDir,
}

/// A response as a client sees it.
struct Res {
    status: StatusCode,
    headers: HeaderMap,
    bytes: Vec<u8>,
    /// The body as JSON (Null when empty or not JSON).
    json: Value,
}

impl Res {
    fn content_type(&self) -> Option<&str> {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
    }

    fn expect(&self, status: u16) -> &Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "{}",
            String::from_utf8_lossy(&self.bytes)
        );
        &self.json
    }

    /// Asserts a Key Protect error envelope with one reason of `code` and this status, served
    /// as `application/json`; returns the reason.
    fn error(&self, status: u16, code: &str) -> Value {
        let v = self.expect(status);
        assert_eq!(self.content_type(), Some("application/json"), "{v}");
        assert_eq!(v["metadata"]["collectionType"], ERROR_TYPE, "{v}");
        assert_eq!(v["metadata"]["collectionTotal"], 1, "{v}");
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["metadata", "resources"], "{v}");
        let res = &v["resources"][0];
        let msg = res["errorMsg"].as_str().unwrap();
        assert!(
            msg.ends_with(&format!("Please see `reasons` for more details ({code})")),
            "{msg}"
        );
        let phrase = self.status.canonical_reason().unwrap();
        assert!(msg.starts_with(&format!("{phrase}: ")), "{msg}");
        let reasons = res["reasons"].as_array().unwrap();
        assert_eq!(reasons.len(), 1, "{v}");
        let r = &reasons[0];
        assert_eq!(r["code"], code, "{v}");
        assert_eq!(r["status"], status, "{v}");
        assert_eq!(r["moreInfo"], "https://cloud.ibm.com/apidocs/key-protect");
        assert!(!r["message"].as_str().unwrap().is_empty());
        r.clone()
    }

    /// As [`Res::error`], for a field error: the reason's `target` names `field`.
    fn field_error(&self, status: u16, code: &str, field: &str) -> Value {
        let r = self.error(status, code);
        assert_eq!(r["target"], json!({"type": "field", "name": field}), "{r}");
        r
    }
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let url = DatabaseUrl::new(format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("keyward.db").display()
        ));
        let store: Arc<dyn Store> = Arc::new(SqlStore::connect(&url).await.unwrap());
        let master =
            Arc::new(FileMasterKey::load_or_create(&dir.path().join("master.key"), true).unwrap());
        let svc = KeyService::new(
            store.clone(),
            master,
            Arc::new(SystemClock),
            ServiceConfig {
                token_pool_size: 0,
                ..ServiceConfig::default()
            },
        )
        .await
        .unwrap();
        let router = app(AppState::new(Arc::new(svc), Limits::default()), true);
        let mut f = Fixture {
            router,
            store,
            token: String::new(),
            instance: String::new(),
            _dir: dir,
        };
        let t = Tenant::in_store(&*f.store, "router").await;
        f.token = f.login(&t.apikey).await;
        f.instance = t.instance;
        f
    }

    /// A bearer token for `apikey` (the IAM API-key grant, through the router).
    async fn login(&self, apikey: &str) -> String {
        let body = format!(
            "grant_type={}&apikey={apikey}",
            APIKEY_GRANT.replace(':', "%3A")
        );
        let req = Request::post("/identity/token")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap();
        let r = self.send(req).await;
        r.expect(200)["access_token"].as_str().unwrap().to_string()
    }

    /// Sends one request as a TCP peer on 127.0.0.1 would.
    async fn send(&self, mut req: Request<Body>) -> Res {
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40_000))));
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        assert!(
            !status.is_server_error(),
            "{status}: {}",
            String::from_utf8_lossy(&bytes)
        );
        Res {
            status,
            headers,
            bytes,
            json,
        }
    }

    /// A request with the tenant's token and instance.
    fn req(&self, method: Method, path: &str) -> axum::http::request::Builder {
        Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {}", self.token))
            .header("bluemix-instance", &self.instance)
    }

    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Res {
        let rb = self.req(method, path);
        let req = match body {
            Some(b) => rb
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(b).unwrap())),
            None => rb.body(Body::empty()),
        };
        self.send(req.unwrap()).await
    }

    /// Sends `body` as it is, with `content_type` when given.
    async fn raw(
        &self,
        method: Method,
        path: &str,
        body: &[u8],
        content_type: Option<&str>,
    ) -> Res {
        let mut rb = self.req(method, path);
        if let Some(ct) = content_type {
            rb = rb.header("content-type", ct);
        }
        self.send(rb.body(Body::from(body.to_vec())).unwrap()).await
    }

    /// A new root key; its id.
    async fn root_key(&self, name: &str) -> String {
        let r = self
            .call(
                Method::POST,
                "/api/v2/keys",
                Some(&key_envelope(
                    json!({"type": KEY_TYPE, "name": name, "extractable": false}),
                )),
            )
            .await;
        r.expect(201)["resources"][0]["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// `HEAD /api/v2/keys{query}` with `headers`: 200, no body; the `Key-Total` count.
    async fn head_count(&self, query: &str, headers: &[(&str, &str)]) -> i64 {
        let mut rb = self.req(Method::HEAD, &format!("/api/v2/keys{query}"));
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        let r = self.send(rb.body(Body::empty()).unwrap()).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.bytes.is_empty(), "HEAD has no body");
        r.headers["key-total"].to_str().unwrap().parse().unwrap()
    }
}

#[tokio::test]
async fn bluemix_instance_header_is_required_and_checked() {
    let f = Fixture::new().await;
    let without = Request::get("/api/v2/keys")
        .header("authorization", format!("Bearer {}", f.token))
        .body(Body::empty())
        .unwrap();
    f.send(without).await.error(400, "INSTANCE_ID_REQUIRED_ERR");
    for bad in [
        "nope",
        "",
        "00000000-0000-0000-0000-00000000000g",
        "x".repeat(300).as_str(),
    ] {
        let r = f
            .send(
                Request::get("/api/v2/keys")
                    .header("authorization", format!("Bearer {}", f.token))
                    .header("bluemix-instance", bad)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad:?}");
        let code = r.json["resources"][0]["reasons"][0]["code"].clone();
        assert!(
            code == "INVALID_INSTANCE_ID_ERR" || code == "INSTANCE_ID_REQUIRED_ERR",
            "{bad:?}: {code}"
        );
        r.error(400, code.as_str().unwrap());
    }
    f.call(Method::GET, "/api/v2/keys", None).await.expect(200);
    // An instance the caller has no access to: refused, the same way whether it exists or not.
    let other = Tenant::in_store(&*f.store, "other").await;
    let stranger = keyward_domain::InstanceId::new().to_string();
    let mut seen = Vec::new();
    for inst in [other.instance.as_str(), stranger.as_str()] {
        let r = f
            .send(
                Request::get("/api/v2/keys")
                    .header("authorization", format!("Bearer {}", f.token))
                    .header("bluemix-instance", inst)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert!(r.status.is_client_error(), "{inst}: {}", r.status);
        seen.push((
            r.status,
            r.json["resources"][0]["reasons"][0]["code"].clone(),
        ));
    }
    assert_eq!(
        seen[0], seen[1],
        "an existing instance looks like an unknown one"
    );
}

#[tokio::test]
async fn prefer_header_chooses_the_delete_representation() {
    let f = Fixture::new().await;
    let minimal = f.root_key("minimal").await;
    let r = f
        .call(Method::DELETE, &format!("/api/v2/keys/{minimal}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(r.bytes.is_empty());

    let full = f.root_key("full").await;
    for prefer in [
        "return=representation",
        "return = representation",
        "RETURN=REPRESENTATION",
    ] {
        let id = if prefer == "return=representation" {
            full.clone()
        } else {
            f.root_key("again").await
        };
        let r = f
            .send(
                f.req(Method::DELETE, &format!("/api/v2/keys/{id}"))
                    .header("prefer", prefer)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        let v = r.expect(200);
        assert_eq!(r.content_type(), Some("application/json"));
        assert_eq!(v["metadata"]["collectionType"], KEY_TYPE);
        assert_eq!(v["resources"][0]["id"], id.as_str());
        assert_eq!(v["resources"][0]["state"], 5, "{v}");
        assert_eq!(v["resources"][0]["deleted"], true, "{v}");
        assert!(
            v["resources"][0].get("payload").is_none(),
            "no root key material"
        );
    }
    // `return=minimal` is the default: no body.
    let id = f.root_key("explicit-minimal").await;
    let r = f
        .send(
            f.req(Method::DELETE, &format!("/api/v2/keys/{id}"))
                .header("prefer", "return=minimal")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(r.bytes.is_empty());
}

#[tokio::test]
async fn key_ring_header_places_lists_and_counts() {
    let f = Fixture::new().await;
    f.call(Method::POST, "/api/v2/key_rings/ring-a", None)
        .await
        .expect(201);
    let in_default = f.root_key("in-default").await;
    let r = f
        .send(
            f.req(Method::POST, "/api/v2/keys")
                .header("x-kms-key-ring", "ring-a")
                .body(Body::from(
                    serde_json::to_vec(&key_envelope(
                        json!({"type": KEY_TYPE, "name": "in-ring", "extractable": false}),
                    ))
                    .unwrap(),
                ))
                .unwrap(),
        )
        .await;
    let in_ring = r.expect(201)["resources"][0].clone();
    assert_eq!(in_ring["keyRingID"], "ring-a", "{in_ring}");
    let in_ring = in_ring["id"].as_str().unwrap().to_string();

    let list = |ring: Option<&'static str>| {
        let f = &f;
        async move {
            let mut rb = f.req(Method::GET, "/api/v2/keys");
            if let Some(ring) = ring {
                rb = rb.header("x-kms-key-ring", ring);
            }
            let r = f.send(rb.body(Body::empty()).unwrap()).await;
            let v = r.expect(200).clone();
            let mut ids: Vec<String> = v["resources"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|k| k["id"].as_str().unwrap().to_string())
                        .collect()
                })
                .unwrap_or_default();
            ids.sort();
            ids
        }
    };
    let mut both = vec![in_default.clone(), in_ring.clone()];
    both.sort();
    assert_eq!(list(None).await, both);
    assert_eq!(list(Some("ring-a")).await, vec![in_ring.clone()]);
    assert_eq!(list(Some("default")).await, vec![in_default.clone()]);
    assert_eq!(f.head_count("", &[]).await, 2);
    assert_eq!(f.head_count("", &[("x-kms-key-ring", "ring-a")]).await, 1);
    assert_eq!(f.head_count("", &[("x-kms-key-ring", "default")]).await, 1);
}

#[tokio::test]
async fn head_counts_follow_the_list_filters() {
    let f = Fixture::new().await;
    assert_eq!(f.head_count("", &[]).await, 0);
    let a = f.root_key("key-a").await;
    f.root_key("key-b").await;
    let std = f
        .call(
            Method::POST,
            "/api/v2/keys",
            Some(&key_envelope(
                json!({"type": KEY_TYPE, "name": "std", "extractable": true}),
            )),
        )
        .await;
    std.expect(201);
    assert_eq!(f.head_count("", &[]).await, 3);
    assert_eq!(f.head_count("?extractable=false", &[]).await, 2);
    assert_eq!(f.head_count("?extractable=true", &[]).await, 1);
    f.call(
        Method::POST,
        &format!("/api/v2/keys/{a}/actions/disable"),
        None,
    )
    .await
    .expect(204);
    assert_eq!(f.head_count("?state=2", &[]).await, 1);
    assert_eq!(f.head_count("?state=1", &[]).await, 2);
    // HEAD and GET agree.
    let list = f.call(Method::GET, "/api/v2/keys?state=1,2", None).await;
    assert_eq!(
        list.expect(200)["resources"].as_array().unwrap().len() as i64,
        f.head_count("?state=1,2", &[]).await
    );
    // A bad query on HEAD is refused (status only: HEAD has no body).
    let r = f
        .send(
            f.req(Method::HEAD, "/api/v2/keys?state=9")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.bytes.is_empty());
}

#[tokio::test]
async fn correlation_id_of_any_shape_is_informational() {
    let f = Fixture::new().await;
    let long = "c".repeat(500);
    for cid in [
        "6a5c2c6c-3b9e-4d3a-9d2b-1f2e3d4c5b6a",
        "not-a-uuid",
        "",
        long.as_str(),
        "with space",
    ] {
        let r = f
            .send(
                f.req(Method::GET, "/api/v2/keys")
                    .header("correlation-id", cid)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        r.expect(200);
        assert_eq!(r.json["metadata"]["collectionType"], KEY_TYPE);
    }
}

#[tokio::test]
async fn json_field_names_match_case_insensitively() {
    let f = Fixture::new().await;
    let body = json!({
        "METADATA": {"collectiontype": KEY_TYPE, "CollectionTotal": 1},
        "Resources": [{"TYPE": KEY_TYPE, "Name": "shouty", "EXTRACTABLE": false, "Description": "desc"}],
    });
    let r = f.call(Method::POST, "/api/v2/keys", Some(&body)).await;
    let k = r.expect(201)["resources"][0].clone();
    assert_eq!(k["name"], "shouty", "{k}");
    assert_eq!(k["extractable"], false, "{k}");
    assert_eq!(k["description"], "desc", "{k}");
    let id = k["id"].as_str().unwrap();
    let dek = B64.encode([7u8; 32]);
    let w = f
        .call(
            Method::POST,
            &format!("/api/v2/keys/{id}/actions/wrap"),
            Some(&json!({"PlainText": dek})),
        )
        .await;
    let ct = w.expect(200)["ciphertext"].as_str().unwrap().to_string();
    let u = f
        .call(
            Method::POST,
            &format!("/api/v2/keys/{id}/actions/unwrap"),
            Some(&json!({"CIPHERTEXT": ct})),
        )
        .await;
    assert_eq!(u.expect(200)["plaintext"], dek.as_str());
    let t = f
        .call(
            Method::POST,
            "/api/v2/import_token",
            Some(&json!({"Expiration": 600, "MAXALLOWEDRETRIEVALS": 2})),
        )
        .await;
    let t = t.expect(200);
    assert_eq!(t["maxAllowedRetrievals"], 2, "{t}");
}

#[tokio::test]
async fn bodies_without_or_with_other_content_types() {
    let f = Fixture::new().await;
    let body = serde_json::to_vec(&key_envelope(
        json!({"type": KEY_TYPE, "name": "no-ct", "extractable": false}),
    ))
    .unwrap();
    // The Go SDK sends no content type; IBM's SDKs send vendor JSON types.
    for ct in [
        None,
        Some("application/json"),
        Some("application/vnd.ibm.kms.key+json"),
        Some("application/json; charset=utf-8"),
    ] {
        let r = f.raw(Method::POST, "/api/v2/keys", &body, ct).await;
        r.expect(201);
        assert_eq!(r.content_type(), Some("application/json"), "{ct:?}");
    }
    let r = f
        .raw(Method::POST, "/api/v2/keys", &body, Some("text/plain"))
        .await;
    r.error(415, "UNSUPPORTED_MEDIA_TYPE_ERR");
}

#[tokio::test]
async fn malformed_bodies_get_4xx_envelopes() {
    let f = Fixture::new().await;
    let root = f.root_key("root").await;
    let wrap = format!("/api/v2/keys/{root}/actions/wrap");
    let json_ct = Some("application/json");
    f.raw(Method::POST, "/api/v2/keys", b"{", json_ct)
        .await
        .error(400, "BAD_BODY_ERR");
    f.raw(Method::POST, "/api/v2/keys", b"", None)
        .await
        .error(400, "NO_BODY_ERR");
    f.raw(Method::POST, "/api/v2/keys", b"[1,2]", json_ct)
        .await
        .error(400, "BAD_BODY_ERR");
    f.raw(Method::POST, "/api/v2/keys", b"\xff\xfe", json_ct)
        .await
        .error(400, "BAD_BODY_ERR");
    let two = json!({"metadata": {"collectionType": KEY_TYPE, "collectionTotal": 2},
                     "resources": [{"name": "ab"}, {"name": "cd"}]});
    f.call(Method::POST, "/api/v2/keys", Some(&two))
        .await
        .error(400, "BAD_BODY_ERR");
    let mismatch = json!({"metadata": {"collectionType": KEY_TYPE, "collectionTotal": 3},
                          "resources": [{"name": "ab"}]});
    f.call(Method::POST, "/api/v2/keys", Some(&mismatch))
        .await
        .error(400, "COLLECTION_TOTAL_MISMATCH_ERR");
    // Field errors name the field.
    f.call(Method::POST, &wrap, Some(&json!({"plaintext": "@"})))
        .await
        .field_error(400, "INVALID_FIELD_ERR", "plaintext");
    f.call(Method::POST, &wrap, Some(&json!({"plaintext": 5})))
        .await
        .field_error(400, "INVALID_FIELD_ERR", "plaintext");
    f.call(
        Method::POST,
        &wrap,
        Some(&json!({"plaintext": B64.encode([1u8; 16]), "aad": "not-a-list"})),
    )
    .await
    .field_error(400, "INVALID_FIELD_ERR", "aad");
    f.call(
        Method::POST,
        "/api/v2/import_token",
        Some(&json!({"expiration": "soon"})),
    )
    .await
    .field_error(400, "INVALID_FIELD_ERR", "expiration");
    f.call(
        Method::POST,
        "/api/v2/import_token",
        Some(&json!({"expiration": 600, "maxAllowedRetrievals": -1})),
    )
    .await
    .field_error(400, "INVALID_FIELD_ERR", "maxAllowedRetrievals");
    let name = json!({"type": KEY_TYPE, "name": 7, "extractable": false});
    f.call(Method::POST, "/api/v2/keys", Some(&key_envelope(name)))
        .await
        .field_error(400, "INVALID_FIELD_ERR", "name");
    // Unwrap of something that is not one of our ciphertexts.
    f.call(
        Method::POST,
        &format!("/api/v2/keys/{root}/actions/unwrap"),
        Some(&json!({"ciphertext": B64.encode(b"{}")})),
    )
    .await
    .error(422, "UNPROCESSABLE_CIPHERTEXT_ERR");
}

#[tokio::test]
async fn malformed_queries_and_paths_get_4xx_envelopes() {
    let f = Fixture::new().await;
    for q in [
        "limit=0",
        "limit=abc",
        "limit=5001",
        "offset=-1",
        "state=9",
        "state=one",
        "extractable=maybe",
    ] {
        let r = f
            .call(Method::GET, &format!("/api/v2/keys?{q}"), None)
            .await;
        r.error(400, "INVALID_QUERY_PARAM_ERR");
    }
    f.call(Method::GET, "/api/v2/keys/not-a-key-or-alias!", None)
        .await
        .expect(400);
    let missing = keyward_domain::new_uuid().to_string();
    f.call(Method::GET, &format!("/api/v2/keys/{missing}"), None)
        .await
        .error(404, "KEY_NOT_FOUND_ERR");
    f.call(Method::GET, "/api/v2/no_such_collection", None)
        .await
        .error(404, "NOT_FOUND_ERR");
    f.call(Method::PUT, &format!("/api/v2/keys/{missing}"), None)
        .await
        .error(405, "METHOD_NOT_ALLOWED_ERR");
    f.call(
        Method::POST,
        &format!("/api/v2/keys/{missing}/actions/fly"),
        None,
    )
    .await
    .expect(400);
}

#[tokio::test]
async fn authorization_errors_use_the_envelope() {
    let f = Fixture::new().await;
    let no_token = Request::get("/api/v2/keys")
        .header("bluemix-instance", &f.instance)
        .body(Body::empty())
        .unwrap();
    f.send(no_token).await.error(401, "UNAUTHORIZED_ERR");
    for auth in ["Bearer nope", "Basic abc", "Bearer", ""] {
        let r = f
            .send(
                Request::get("/api/v2/keys")
                    .header("authorization", auth)
                    .header("bluemix-instance", &f.instance)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        r.error(401, "UNAUTHORIZED_ERR");
    }
    // A bad grant is a 4xx too, never a 5xx.
    let r = f
        .send(
            Request::post("/identity/token")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from("grant_type=password&apikey=x"))
                .unwrap(),
        )
        .await;
    assert!(r.status.is_client_error(), "{}", r.status);
}

/// The lenient inputs the contract run (`tests/python/test_api_contract.py`) found are refused,
/// and the refused write changes nothing.
#[tokio::test]
async fn values_outside_the_document_are_refused() {
    let f = Fixture::new().await;
    let key = f.root_key("contract-key").await;
    for path in [
        "/api/v2/key_rings?totalCount=banana".to_string(),
        "/api/v2/key_rings?offset=9223372036854775808".to_string(),
        format!("/api/v2/keys/{key}/versions?allKeyStates=maybe"),
        format!("/api/v2/keys/{key}/versions?totalCount=null"),
    ] {
        f.call(Method::GET, &path, None)
            .await
            .error(400, "INVALID_QUERY_PARAM_ERR");
    }
    f.call(Method::GET, "/api/v2/key_rings?totalCount=true", None)
        .await
        .expect(200);
    f.call(
        Method::DELETE,
        &format!("/api/v2/keys/{key}?force=yes"),
        None,
    )
    .await
    .error(400, "INVALID_QUERY_PARAM_ERR");
    f.call(Method::GET, &format!("/api/v2/keys/{key}"), None)
        .await
        .expect(200);

    let r = f
        .send(
            f.req(Method::GET, "/api/v2/keys")
                .header("x-kms-key-ring", "not a ring!")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    let reason = r.error(400, "INVALID_FIELD_ERR");
    assert_eq!(
        reason["target"],
        json!({"type": "header", "name": "x-kms-key-ring"})
    );
    let r = f
        .send(
            f.req(Method::GET, "/api/v2/keys")
                .header("x-kms-key-ring", "")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    r.expect(200);

    let body = json!({
        "metadata": {"collectionType": {}, "collectionTotal": 1},
        "resources": [{"type": "application/vnd.ibm.kms.policy+json",
                       "rotation": {"enabled": true, "interval_month": 3}}],
    });
    f.call(
        Method::PUT,
        &format!("/api/v2/keys/{key}/policies"),
        Some(&body),
    )
    .await
    .error(400, "BAD_BODY_ERR");
    let policies = f
        .call(Method::GET, &format!("/api/v2/keys/{key}/policies"), None)
        .await;
    let v = policies.expect(200);
    assert!(
        v["resources"].as_array().is_none_or(|a| a.is_empty()),
        "{v}"
    );
}

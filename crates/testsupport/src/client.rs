//! An HTTP client for the Key Protect API: [`Api`] (a caller with a bearer token and an
//! instance), [`Resp`] (status, JSON body, text) and [`token`] (the IAM API-key grant).

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use keyward_domain::{InstanceId, KeyId};
use reqwest::Method;
use serde_json::{json, Value};

use crate::{APIKEY_GRANT, ERROR_TYPE, KEY_TYPE, POLICY_TYPE};

/// A client that ignores proxy settings and gives up after 30 s.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A bearer token for `apikey` from `BASE/identity/token` (which must answer 200).
pub async fn token(http: &reqwest::Client, base: &str, apikey: &str) -> String {
    let r = http
        .post(format!("{base}/identity/token"))
        .form(&[("grant_type", APIKEY_GRANT), ("apikey", apikey)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "login failed");
    let v: Value = r.json().await.unwrap();
    v["access_token"].as_str().unwrap().to_string()
}

/// A response: status and JSON body (Null when empty or not JSON).
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub text: String,
}

impl Resp {
    pub fn expect(&self, status: u16) -> &Value {
        assert_eq!(self.status, status, "unexpected status: {}", self.text);
        &self.body
    }

    /// The reason code of a Key Protect error envelope (asserting its shape).
    pub fn error_code(&self) -> String {
        let v = &self.body;
        assert_eq!(
            v["metadata"]["collectionType"], ERROR_TYPE,
            "not an error envelope: {}",
            self.text
        );
        let r = &v["resources"][0]["reasons"][0];
        assert_eq!(r["status"], self.status, "{}", self.text);
        r["code"].as_str().unwrap_or_default().to_string()
    }
}

/// A logged-in caller (bearer token + instance) talking to one node.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
    pub instance: String,
}

impl Api {
    pub async fn login(base: &str, apikey: &str, instance: &str) -> Api {
        let http = http();
        let token = token(&http, base, apikey).await;
        Api {
            http,
            base: base.to_string(),
            token,
            instance: instance.to_string(),
        }
    }

    /// The same caller (same bearer token) talking to another node.
    pub fn on(&self, node: &crate::Node) -> Api {
        Api {
            base: node.base.clone(),
            ..self.clone()
        }
    }

    pub fn instance_id(&self) -> InstanceId {
        InstanceId::parse(&self.instance).unwrap()
    }

    /// Sends; `Err` only when no HTTP response came back at all.
    pub async fn try_call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Resp, reqwest::Error> {
        let mut rb = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .header("authorization", format!("Bearer {}", self.token))
            .header("bluemix-instance", &self.instance);
        if let Some(b) = body {
            rb = rb
                .header("content-type", "application/json")
                .body(serde_json::to_vec(b).unwrap());
        }
        let r = rb.send().await?;
        let status = r.status().as_u16();
        let text = r.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Resp { status, body, text })
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Resp {
        self.try_call(method, path, body).await.unwrap()
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn create_root_key(&self, name: &str) -> Resp {
        self.call(
            Method::POST,
            "/api/v2/keys",
            Some(&key_envelope(
                json!({"type": KEY_TYPE, "name": name, "extractable": false}),
            )),
        )
        .await
    }

    /// A new root key's id.
    pub async fn root_key(&self, name: &str) -> String {
        let r = self.create_root_key(name).await;
        r.expect(201)["resources"][0]["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Creates a key from `resource` (201 expected); its id.
    pub async fn create_key(&self, resource: Value) -> String {
        let r = self
            .call(Method::POST, "/api/v2/keys", Some(&key_envelope(resource)))
            .await;
        r.expect(201)["resources"][0]["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub async fn wrap(&self, id: &str, plaintext: &[u8]) -> Resp {
        self.call(
            Method::POST,
            &format!("/api/v2/keys/{id}/actions/wrap"),
            Some(&json!({"plaintext": B64.encode(plaintext)})),
        )
        .await
    }

    pub async fn wrap_ok(&self, id: &str, plaintext: &[u8]) -> String {
        let r = self.wrap(id, plaintext).await;
        r.expect(200)["ciphertext"].as_str().unwrap().to_string()
    }

    pub async fn unwrap(&self, id: &str, ciphertext: &str) -> Resp {
        self.call(
            Method::POST,
            &format!("/api/v2/keys/{id}/actions/unwrap"),
            Some(&json!({"ciphertext": ciphertext})),
        )
        .await
    }

    pub async fn unwrap_ok(&self, id: &str, ciphertext: &str) -> Vec<u8> {
        let r = self.unwrap(id, ciphertext).await;
        B64.decode(r.expect(200)["plaintext"].as_str().unwrap())
            .unwrap()
    }

    pub async fn action(&self, id: &str, action: &str) -> Resp {
        self.call(
            Method::POST,
            &format!("/api/v2/keys/{id}/actions/{action}"),
            None,
        )
        .await
    }

    pub async fn put_rotation_policy(&self, id: &str, months: i64) -> Resp {
        self.call(
            Method::PUT,
            &format!("/api/v2/keys/{id}/policies?policy=rotation"),
            Some(&json!({
                "metadata": {"collectionType": POLICY_TYPE, "collectionTotal": 1},
                "resources": [{"type": POLICY_TYPE, "rotation": {"enabled": true, "interval_month": months}}],
            })),
        )
        .await
    }

    /// Creates an import token and retrieves it (one retrieval used); the token's JSON.
    pub async fn import_token(&self, expiration: u64, retrievals: u64) -> Value {
        self.call(
            Method::POST,
            "/api/v2/import_token",
            Some(&json!({"expiration": expiration, "maxAllowedRetrievals": retrievals})),
        )
        .await
        .expect(200);
        self.get("/api/v2/import_token").await.expect(200).clone()
    }
}

/// A one-resource key envelope.
pub fn key_envelope(resource: Value) -> Value {
    json!({
        "metadata": {"collectionType": KEY_TYPE, "collectionTotal": 1},
        "resources": [resource],
    })
}

pub fn key_id(s: &str) -> KeyId {
    KeyId::parse(s).unwrap()
}

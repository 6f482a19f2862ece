//! Headers the official Go and Node clients send on every call: `Correlation-Id` (echoed back,
//! as Key Protect does) and `X-Kms-Key-Ring` (keyprotect-go-client sends its configured key
//! ring on every request, so every key route must accept it), and `Prefer` through the
//! provider's own `DeleteKey(..., ReturnRepresentation, ...)`.

use reqwest::Method;
use serde_json::{json, Value};

use crate::Server;

#[tokio::test]
async fn correlation_id_and_key_ring_on_every_route() {
    let s = Server::start().await;
    let api = s.tenant.login(s.base()).await;
    api.call(Method::POST, "/api/v2/key_rings/hdr-ring", None)
        .await
        .expect(201);
    let http = keyward_testsupport::http();
    let send = |method: Method, path: String, body: Option<Value>| {
        let mut r = http
            .request(method, format!("{}{path}", s.base()))
            .header("authorization", format!("Bearer {}", api.token))
            .header("bluemix-instance", &s.tenant.instance)
            .header("correlation-id", "tf-corr-1234")
            .header("x-kms-key-ring", "hdr-ring");
        if let Some(b) = body {
            r = r.body(serde_json::to_vec(&b).unwrap());
        }
        async move {
            let r = r.send().await.unwrap();
            let corr = r
                .headers()
                .get("correlation-id")
                .map(|v| v.to_str().unwrap().to_string());
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            (status, corr, body)
        }
    };
    let env = |r: Value| {
        json!({"metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
               "resources": [r]})
    };
    let (st, corr, created) = send(
        Method::POST,
        "/api/v2/keys".into(),
        Some(env(json!({"type": "application/vnd.ibm.kms.key+json", "name": "hdr", "extractable": false}))),
    )
    .await;
    assert_eq!(st, 201, "{created}");
    assert_eq!(corr.as_deref(), Some("tf-corr-1234"));
    assert_eq!(created["resources"][0]["keyRingID"], "hdr-ring");
    let id = created["resources"][0]["id"].as_str().unwrap().to_string();
    let policy = json!({"metadata": {"collectionType": "application/vnd.ibm.kms.policy+json", "collectionTotal": 1},
        "resources": [{"type": "application/vnd.ibm.kms.policy+json", "rotation": {"interval_month": 3}}]});
    let calls: Vec<(Method, String, Option<Value>, u16)> = vec![
        (Method::GET, "/api/v2/keys".into(), None, 200),
        (Method::HEAD, "/api/v2/keys".into(), None, 200),
        (Method::GET, format!("/api/v2/keys/{id}"), None, 200),
        (
            Method::GET,
            format!("/api/v2/keys/{id}/metadata"),
            None,
            200,
        ),
        (
            Method::GET,
            format!("/api/v2/keys/{id}/versions"),
            None,
            200,
        ),
        (
            Method::GET,
            format!("/api/v2/keys/{id}/policies"),
            None,
            200,
        ),
        (
            Method::PUT,
            format!("/api/v2/keys/{id}/policies"),
            Some(policy),
            200,
        ),
        (
            Method::GET,
            format!("/api/v2/keys/{id}/registrations"),
            None,
            200,
        ),
        (
            Method::POST,
            format!("/api/v2/keys/{id}/actions/wrap"),
            Some(json!({})),
            200,
        ),
        (
            Method::POST,
            format!("/api/v2/keys/{id}/actions/rotate"),
            None,
            204,
        ),
        (
            Method::POST,
            format!("/api/v2/keys/{id}/aliases/hdr-alias"),
            None,
            201,
        ),
        (
            Method::DELETE,
            format!("/api/v2/keys/{id}/aliases/hdr-alias"),
            None,
            204,
        ),
        (
            Method::POST,
            format!("/api/v2/keys/{id}/actions/disable"),
            None,
            204,
        ),
        (Method::GET, "/api/v2/keys/registrations".into(), None, 200),
        (Method::GET, "/api/v2/instance/policies".into(), None, 200),
        (Method::GET, "/api/v2/key_rings".into(), None, 200),
        (Method::DELETE, format!("/api/v2/keys/{id}"), None, 204),
        // an error answer carries it too
        (
            Method::GET,
            format!("/api/v2/keys/{}", uuid::Uuid::new_v4()),
            None,
            404,
        ),
    ];
    for (m, path, body, want) in calls {
        let what = format!("{m} {path}");
        let (st, corr, b) = send(m, path, body).await;
        assert_eq!(st, want, "{what}: {b}");
        assert_eq!(corr.as_deref(), Some("tf-corr-1234"), "{what}");
    }
    // an unprintable or oversized id is not echoed
    let r = http
        .get(format!("{}/api/v2/keys", s.base()))
        .header("authorization", format!("Bearer {}", api.token))
        .header("bluemix-instance", &s.tenant.instance)
        .header("correlation-id", "x".repeat(200))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("correlation-id").is_none());
}

//! `docs/openapi.json` is the document `GET /openapi.json` serves. When the API changes, this
//! test fails until the file is regenerated with
//! `KEYWARD_BLESS=1 cargo test -p keyward-api --test openapi`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
}

#[test]
fn committed_openapi_document_is_current() {
    let current = keyward_api::openapi_json();
    let path = committed_path();
    if std::env::var_os("KEYWARD_BLESS").is_some() {
        std::fs::write(&path, &current).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == current,
        "docs/openapi.json is stale: regenerate it with \
         `KEYWARD_BLESS=1 cargo test -p keyward-api --test openapi` and commit it"
    );
}

#[test]
fn document_is_openapi_3_1_and_names_every_route_group() {
    let doc: serde_json::Value = serde_json::from_str(&keyward_api::openapi_json()).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/api/v2/keys",
        "/api/v2/keys/{id}",
        "/api/v2/keys/{id}/actions/wrap",
        "/api/v2/keys/{id}/actions/unwrap",
        "/api/v2/keys/{id}/policies",
        "/api/v2/instance/policies",
        "/api/v2/key_rings/{id}",
        "/api/v2/import_token",
        "/identity/token",
        "/openapi.json",
    ] {
        assert!(paths.contains_key(p), "{p} missing");
    }
    assert_eq!(paths["/openapi.json"]["get"]["x-keyward"], true);
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for s in ["Key", "KeyCollection", "ErrorCollection", "WrapRequest"] {
        assert!(schemas.contains_key(s), "schema {s} missing");
    }
}

#[tokio::test]
async fn served_without_a_token_even_when_sealed() {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;
    let resp = keyward_api::sealed_app()
        .oneshot(Request::get("/openapi.json").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    assert_eq!(body, keyward_api::openapi_json().as_bytes());
}

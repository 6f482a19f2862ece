//! The HTTP face of Keyward: the Key Protect REST API (`/api/v2/...`), the IAM token endpoint
//! the SDKs call (`/identity/token`), and health.
//!
//! What must hold:
//! - Every response body is JSON with `Content-Type: application/json` (IBM's Python SDK
//!   decodes only that), and every error is the Key Protect error envelope ([`error`]).
//! - Handlers only translate: wire ⇄ service types. No store or crypto here.
//! - Bodies are capped at [`extract::BODY_LIMIT`] before parsing.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use keyward_service::{ErrorCode, KeyService, ServiceError};
use serde_json::json;

pub mod error;
pub mod extract;
mod routes;
mod wire;

pub use error::ApiError;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub svc: Arc<KeyService>,
}

/// A JSON response with exactly `application/json`.
pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// The router of an unsealed service.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health))
        .route("/identity/token", post(routes::identity::token))
        .route(
            "/api/v2/keys",
            get(routes::keys::list)
                .post(routes::keys::create)
                .head(routes::keys::head),
        )
        .route("/api/v2/keys/{id}/metadata", get(routes::keys::metadata))
        .route(
            "/api/v2/keys/{id}",
            get(routes::keys::get)
                .delete(routes::keys::delete)
                .post(routes::actions::legacy_action)
                .patch(routes::lifecycle::patch),
        )
        .route("/api/v2/keys/{id}/versions", get(routes::lifecycle::versions))
        .route("/api/v2/keys/{id}/restore", post(routes::lifecycle::restore))
        .route("/api/v2/keys/{id}/purge", delete(routes::lifecycle::purge))
        .route(
            "/api/v2/keys/{id}/policies",
            get(routes::lifecycle::get_key_policies).put(routes::lifecycle::put_key_policies),
        )
        .route(
            "/api/v2/keys/{id}/aliases/{alias}",
            post(routes::lifecycle::create_alias).delete(routes::lifecycle::delete_alias),
        )
        .route(
            "/api/v2/keys/{id}/registrations",
            get(routes::lifecycle::key_registrations),
        )
        .route(
            "/api/v2/keys/registrations",
            get(routes::lifecycle::all_registrations),
        )
        .route(
            "/api/v2/keys_with_policy_overrides",
            post(routes::keys::create_with_overrides),
        )
        .route(
            "/api/v2/instance/policies",
            get(routes::lifecycle::get_instance_policies)
                .put(routes::lifecycle::put_instance_policies),
        )
        .route("/api/v2/key_rings", get(routes::lifecycle::list_key_rings))
        .route(
            "/api/v2/key_rings/{id}",
            post(routes::lifecycle::create_key_ring).delete(routes::lifecycle::delete_key_ring),
        )
        .route(
            "/api/v2/keys/{id}/actions/{action}",
            post(routes::actions::action),
        )
        .route(
            "/api/v2/import_token",
            get(routes::tokens::get).post(routes::tokens::create),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// The router of a sealed service: health says why, everything else is 503.
pub fn sealed_app(reason: String) -> Router {
    let reason = Arc::new(reason);
    let r2 = reason.clone();
    Router::new()
        .route(
            "/healthz",
            get(move || {
                let reason = r2.clone();
                async move {
                    json_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &json!({"status": "sealed", "reason": reason.as_str()}),
                    )
                }
            }),
        )
        .fallback(|| async {
            ApiError::new(
                ServiceError::new(
                    ErrorCode::Unavailable,
                    "Keyward is sealed: its master key is unavailable",
                ),
                "Request could not be processed",
            )
            .into_response()
        })
}

async fn health() -> Response {
    json_response(StatusCode::OK, &json!({"status": "ok"}))
}

async fn not_found() -> Response {
    ApiError::new(
        ServiceError::new(ErrorCode::NotFound, "No such route"),
        "Request could not be routed",
    )
    .into_response()
}

async fn method_not_allowed() -> Response {
    ApiError::new(
        ServiceError::new(
            ErrorCode::MethodNotAllowed,
            "The method is not allowed on this route",
        ),
        "Request could not be routed",
    )
    .into_response()
}

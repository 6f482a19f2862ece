//! The HTTP face of Keyward: the Key Protect REST API (`/api/v2/...`), the IAM token endpoint
//! the SDKs call (`/identity/token`, `/oidc/token`), the Resource Controller subset Terraform
//! calls (`/v2/resource_instances/{id}`), and health.
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

pub mod audit;
pub mod endpoint;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod proxy;
pub mod query;
pub mod ratelimit;
mod routes;
mod wire;

pub use error::ApiError;
pub use routes::openapi::document_json as openapi_json;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub svc: Arc<KeyService>,
    pub metrics: Arc<metrics::Metrics>,
    pub limiter: Arc<ratelimit::RateLimiter>,
    /// Peers whose `X-Forwarded-For` names the client (none by default).
    pub proxies: Arc<proxy::TrustedProxies>,
    /// `http` or `https`: how this server is reached (the Resource Controller's endpoints).
    pub scheme: &'static str,
}

impl AppState {
    pub fn new(svc: Arc<KeyService>, limits: ratelimit::Limits) -> Self {
        Self {
            svc,
            metrics: Arc::new(metrics::Metrics::default()),
            limiter: Arc::new(ratelimit::RateLimiter::new(limits)),
            proxies: Arc::default(),
            scheme: "http",
        }
    }

    /// The server listens with TLS (`https` endpoints in Resource Controller answers).
    pub fn with_tls(mut self, tls: bool) -> Self {
        self.scheme = if tls { "https" } else { "http" };
        self
    }

    /// Believes `X-Forwarded-For` from peers inside these networks.
    pub fn with_trusted_proxies(mut self, proxies: proxy::TrustedProxies) -> Self {
        self.proxies = Arc::new(proxies);
        self
    }

    /// The client's address: the TCP peer, or what a trusted proxy says it is.
    pub fn client_ip(&self, parts: &axum::http::request::Parts) -> Option<std::net::IpAddr> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        self.proxies.client_ip(peer, &parts.headers)
    }
}

/// A JSON response with exactly `application/json`.
pub fn json_response<T: serde::Serialize + ?Sized>(status: StatusCode, body: &T) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// `/healthz`, `/readyz` and `/metrics` (no bearer token), for the main listener or a
/// separate one.
pub fn ops_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics_text))
        .with_state(state)
}

async fn ready(axum::extract::State(st): axum::extract::State<AppState>) -> Response {
    match st.svc.ready().await {
        Ok(()) => json_response(StatusCode::OK, &health_body("ready", None)),
        Err(e) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &health_body("unavailable", Some(e.message)),
        ),
    }
}

async fn metrics_text(axum::extract::State(st): axum::extract::State<AppState>) -> Response {
    let mut registry = prometheus_client::registry::Registry::default();
    st.metrics.register(&mut registry);
    registry.register(
        "keyward_import_token_pool_depth",
        "Ready RSA-4096 import-token keypairs",
        metrics::const_gauge(i64::try_from(st.svc.pool_depth()).unwrap_or(i64::MAX)),
    );
    registry.register("keyward_sealed", SEALED_HELP, metrics::const_gauge(0));
    let (pending, dropped) = st.svc.usage_stats();
    registry.register(
        "keyward_key_usage_pending_keys",
        "Keys with uses recorded in memory and not yet written (docs/design.md, \"Key usage\")",
        metrics::const_gauge(i64::try_from(pending).unwrap_or(i64::MAX)),
    );
    registry.register(
        "keyward_key_usage_dropped",
        "Key uses not recorded because the in-memory bound was reached (since start)",
        metrics::const_gauge(i64::try_from(dropped).unwrap_or(i64::MAX)),
    );
    if let Some(t) = st.svc.store().timings() {
        t.register(&mut registry);
    }
    let mut caches = st.svc.cache_stats();
    caches.extend(st.limiter.stats());
    registry.register_collector(Box::new(metrics::Snapshot {
        crypto: st.svc.crypto_counters().snapshot().to_vec(),
        integrity_failures: keyward_service::row_integrity_failures(),
        caches,
    }));
    registry.register_collector(Box::new(metrics::DatabaseSnapshot::now()));
    metrics_response(&registry)
}

const SEALED_HELP: &str = "1 when the service is sealed (master key unavailable)";

fn metrics_response(registry: &prometheus_client::registry::Registry) -> Response {
    let mut resp = Response::new(Body::from(metrics::encode(registry)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(metrics::CONTENT_TYPE),
    );
    resp
}

/// The router of an unsealed service. With `with_ops`, also `/readyz` and `/metrics`
/// (otherwise they are served by [`ops_router`] on a separate listener).
pub fn app(state: AppState, with_ops: bool) -> Router {
    // No token, outside the API's layers: the API's description is public
    // (`docs/openapi.json`).
    let api = api_routes(state.clone()).route("/openapi.json", get(routes::openapi::serve));
    if with_ops {
        api.merge(ops_router(state))
    } else {
        api.route("/healthz", get(health))
    }
}

fn api_routes(state: AppState) -> Router {
    Router::new()
        .route("/identity/token", post(routes::identity::token))
        .route("/oidc/token", post(routes::identity::oidc_token))
        .route(
            "/v2/resource_instances/{id}",
            get(routes::resource_controller::get),
        )
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
        .route(
            "/api/v2/keys/{id}/versions",
            get(routes::lifecycle::versions),
        )
        .route(
            "/api/v2/keys/{id}/restore",
            post(routes::lifecycle::restore),
        )
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
            "/api/v2/keys/{id}/registrations/{crn}",
            post(routes::lifecycle::service_only)
                .put(routes::lifecycle::service_only)
                .patch(routes::lifecycle::service_only)
                .delete(routes::lifecycle::service_only),
        )
        .route("/api/v2/event_ack", post(routes::lifecycle::service_only))
        .route(
            "/api/v2/instance/allowed_ip_port",
            get(routes::lifecycle::allowed_ip_port),
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
        .route("/api/v2/x-keyward/batch", post(routes::batch::batch))
        .route(
            "/api/v2/import_token",
            get(routes::tokens::get).post(routes::tokens::create),
        )
        .route("/api/v2/x-keyward/audit", get(routes::xkeyward_audit::list))
        .route(
            "/api/v2/kmip_adapters",
            get(routes::kmip::list_adapters).post(routes::kmip::create_adapter),
        )
        .route(
            "/api/v2/kmip_adapters/{id}",
            get(routes::kmip::get_adapter).delete(routes::kmip::delete_adapter),
        )
        .route(
            "/api/v2/kmip_adapters/{id}/certificates",
            get(routes::kmip::list_certs).post(routes::kmip::create_cert),
        )
        .route(
            "/api/v2/kmip_adapters/{id}/certificates/{cert_id}",
            get(routes::kmip::get_cert).delete(routes::kmip::delete_cert),
        )
        .route(
            "/api/v2/kmip_adapters/{id}/kmip_objects",
            get(routes::kmip::list_objects),
        )
        .route(
            "/api/v2/kmip_adapters/{id}/kmip_objects/{object_id}",
            get(routes::kmip::get_object).delete(routes::kmip::delete_object),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            audit::record_outcomes,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .route_layer(axum::middleware::from_fn(endpoint::classify))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(echo_correlation_id))
        .with_state(state)
}

/// Key Protect answers with the request's `Correlation-Id` (the Go and Node clients send one
/// on every call and show it in their errors). Echoed only when it is 1 to 128 visible ASCII
/// characters, like the audit record keeps it.
async fn echo_correlation_id(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let id = req
        .headers()
        .get("correlation-id")
        .filter(|v| {
            let b = v.as_bytes();
            !b.is_empty() && b.len() <= 128 && b.iter().all(u8::is_ascii_graphic)
        })
        .cloned();
    let mut resp = next.run(req).await;
    if let Some(id) = id {
        resp.headers_mut().insert("correlation-id", id);
    }
    resp
}

/// The router of a sealed service on the main (public) listener: every route answers 503, and
/// `/healthz` says only `{"status":"sealed"}`. Why it is sealed (which names key files, HSM
/// labels and master key ids) goes to the log, and to the ops listener when one is configured
/// ([`sealed_ops_router`]), never to the public listener.
pub fn sealed_app() -> Router {
    Router::new()
        .route("/healthz", get(sealed_status))
        .route("/readyz", get(sealed_status))
        .route("/metrics", get(sealed_metrics))
        .route("/openapi.json", get(routes::openapi::serve))
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

/// The separate ops listener (`--metrics-listen`) of a sealed service: operator-facing, so its
/// `/healthz` and `/readyz` also give the reason.
pub fn sealed_ops_router(reason: String) -> Router {
    let reason = Arc::new(reason);
    let status = move || {
        let reason = reason.clone();
        async move {
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &health_body("sealed", Some(reason.to_string())),
            )
        }
    };
    Router::new()
        .route("/healthz", get(status.clone()))
        .route("/readyz", get(status))
        .route("/metrics", get(sealed_metrics))
}

async fn sealed_status() -> Response {
    json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        &health_body("sealed", None),
    )
}

async fn sealed_metrics() -> Response {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register("keyward_sealed", SEALED_HELP, metrics::const_gauge(1));
    metrics_response(&registry)
}

async fn health() -> Response {
    json_response(StatusCode::OK, &health_body("ok", None))
}

fn health_body(status: &str, reason: Option<String>) -> keyward_wire::resp::Health {
    keyward_wire::resp::Health {
        reason,
        status: status.to_string(),
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    /// The API router's path templates (read from this file) are exactly those
    /// [`crate::endpoint::Route`] classifies, so no route goes unclassified (unlabelled in the
    /// metrics, unaudited, or in the wrong rate-limit class).
    #[test]
    fn every_api_route_is_an_endpoint() {
        let src = include_str!("lib.rs");
        let api = &src[src.find("fn api_routes").unwrap()..src.find("pub fn sealed_app").unwrap()];
        let mut routed: Vec<&str> = api
            .split(".route(")
            .skip(1)
            .filter_map(|s| s.trim_start().strip_prefix('"')?.split('"').next())
            .collect();
        routed.sort_unstable();
        let mut known: Vec<&str> = crate::endpoint::Route::ALL
            .iter()
            .map(|r| r.template())
            .collect();
        known.sort_unstable();
        assert_eq!(routed, known);
    }
}

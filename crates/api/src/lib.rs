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

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub svc: Arc<KeyService>,
    pub metrics: Arc<metrics::Metrics>,
    pub limiter: Arc<ratelimit::RateLimiter>,
    /// Peers whose `X-Forwarded-For` names the client (none by default).
    pub proxies: Arc<proxy::TrustedProxies>,
}

impl AppState {
    pub fn new(svc: Arc<KeyService>, limits: ratelimit::Limits) -> Self {
        Self {
            svc,
            metrics: Arc::new(metrics::Metrics::default()),
            limiter: Arc::new(ratelimit::RateLimiter::new(limits)),
            proxies: Arc::default(),
        }
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
        Ok(()) => json_response(StatusCode::OK, &json!({"status": "ready"})),
        Err(e) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "unavailable", "reason": e.message}),
        ),
    }
}

async fn metrics_text(axum::extract::State(st): axum::extract::State<AppState>) -> Response {
    let depth = st.svc.pool_depth() as f64;
    let mut body = st.metrics.render(&[
        (
            "keyward_import_token_pool_depth",
            "Ready RSA-4096 import-token keypairs.",
            depth,
        ),
        (
            "keyward_sealed",
            "1 when the service is sealed (master key unavailable).",
            0.0,
        ),
    ]);
    if let Some(t) = st.svc.store().timings() {
        t.render(&mut body);
    }
    st.svc.crypto_counters().render(&mut body);
    render_integrity_failures(&mut body);
    let mut caches = st.svc.cache_stats();
    caches.extend(st.limiter.stats());
    render_caches(&caches, &mut body);
    let mut resp = Response::new(Body::from(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}

/// `keyward_row_integrity_failures_total{table}`: stored rows refused because their
/// authentication tag did not verify (`docs/threat-model.md`).
fn render_integrity_failures(out: &mut String) {
    use std::fmt::Write;
    out.push_str("# HELP keyward_row_integrity_failures_total Stored rows refused because their integrity check failed (database tampering).\n# TYPE keyward_row_integrity_failures_total counter\n");
    for (table, n) in keyward_store::row_integrity_failures() {
        let _ = writeln!(
            out,
            "keyward_row_integrity_failures_total{{table=\"{table}\"}} {n}"
        );
    }
}

/// `keyward_cache_entries`, `keyward_cache_capacity`, `keyward_cache_hits_total` and
/// `keyward_cache_misses_total`, by `cache` (the limiter tables have entries and a capacity
/// only).
fn render_caches(caches: &[keyward_domain::bounded::CacheStats], out: &mut String) {
    use std::fmt::Write;
    type Field = fn(&keyward_domain::bounded::CacheStats) -> u64;
    let families: [(&str, &str, &str, Field); 4] = [
        (
            "keyward_cache_entries",
            "gauge",
            "Entries in each in-memory cache and limiter table.",
            |c| c.entries,
        ),
        (
            "keyward_cache_capacity",
            "gauge",
            "Most entries each cache and limiter table holds (past it, entries are evicted).",
            |c| c.capacity,
        ),
        (
            "keyward_cache_hits_total",
            "counter",
            "Cache lookups answered from the cache.",
            |c| c.hits,
        ),
        (
            "keyward_cache_misses_total",
            "counter",
            "Cache lookups not answered from the cache (absent or expired).",
            |c| c.misses,
        ),
    ];
    for (i, (name, kind, help, field)) in families.iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for c in caches {
            // Limiter tables are not caches: no hit/miss series for them.
            if i >= 2 && matches!(c.name, "rate_limit" | "auth_failures") {
                continue;
            }
            let _ = writeln!(out, "{name}{{cache=\"{}\"}} {}", c.name, field(c));
        }
    }
}

/// The router of an unsealed service. With `with_ops`, also `/readyz` and `/metrics`
/// (otherwise they are served by [`ops_router`] on a separate listener).
pub fn app(state: AppState, with_ops: bool) -> Router {
    let api = api_routes(state.clone());
    if with_ops {
        api.merge(ops_router(state))
    } else {
        api.route("/healthz", get(health))
    }
}

fn api_routes(state: AppState) -> Router {
    Router::new()
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
        .route(
            "/api/v2/import_token",
            get(routes::tokens::get).post(routes::tokens::create),
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
        .with_state(state)
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
                &json!({"status": "sealed", "reason": reason.as_str()}),
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
        &json!({"status": "sealed"}),
    )
}

async fn sealed_metrics() -> Response {
    let mut resp = Response::new(Body::from(
        "# HELP keyward_sealed 1 when the service is sealed (master key unavailable).\n# TYPE keyward_sealed gauge\nkeyward_sealed 1\n",
    ));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
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

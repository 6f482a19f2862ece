//! Keyward's web console: a few static files (plain ES modules, one stylesheet, no build
//! step and no Node toolchain) embedded in the binary with `include_bytes!` and served at
//! `/ui/` on the main listener (`keyward serve --no-console` turns it off; docs/console.md).
//!
//! What must hold:
//! - Every response under `/ui` carries a strict Content-Security-Policy (no inline script or
//!   style, no other origin: [`CSP`]), `X-Frame-Options: DENY`, `X-Content-Type-Options:
//!   nosniff` and `Referrer-Policy: no-referrer`, 404s included.
//! - Each asset has its exact content type, and an `ETag` (a hash of its bytes) with
//!   `Cache-Control: no-cache`, so a browser revalidates and never runs a stale module after an
//!   upgrade.
//! - The router has no fallback of its own: it merges into the API's router.

use std::sync::OnceLock;

use axum::body::Body;
use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;

/// The console's Content-Security-Policy: its own origin only, no inline code, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self'; connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; \
form-action 'none'; frame-ancestors 'none'";

/// One embedded file.
pub struct Asset {
    /// Its path under `/ui/`.
    pub path: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $ct:expr) => {
        Asset {
            path: $path,
            content_type: $ct,
            bytes: include_bytes!(concat!("../assets/", $path)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the console.
pub const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("keys.js", JS),
    asset!("importer.js", JS),
    asset!("panels.js", JS),
];

/// The asset at `path` (`""` is `index.html`).
pub fn asset(path: &str) -> Option<&'static Asset> {
    let path = if path.is_empty() { "index.html" } else { path };
    ASSETS.iter().find(|a| a.path == path)
}

/// 64-bit FNV-1a: a cheap, stable fingerprint of an asset for its `ETag` (not a security
/// boundary: the bytes are public).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn etags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| format!("\"{:016x}\"", fnv1a(a.bytes)))
            .collect()
    })
}

fn security_headers(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(), microphone=(), geolocation=(), payment=()"),
    );
}

fn respond(path: &str, req: &HeaderMap) -> Response {
    let Some(idx) = ASSETS
        .iter()
        .position(|a| a.path == if path.is_empty() { "index.html" } else { path })
    else {
        let mut r = Response::new(Body::from("Not found\n"));
        *r.status_mut() = StatusCode::NOT_FOUND;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        security_headers(r.headers_mut());
        return r;
    };
    let a = &ASSETS[idx];
    let tag = &etags()[idx];
    let fresh = req
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    let mut r = if fresh {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Response::new(Body::from(a.bytes));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(a.content_type),
        );
        r
    };
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(tag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    security_headers(h);
    r
}

async fn index(headers: HeaderMap) -> Response {
    respond("", &headers)
}

async fn file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    respond(&path, &headers)
}

async fn redirect() -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/ui/"));
    security_headers(r.headers_mut());
    r
}

/// `/ui` (a redirect to `/ui/`), `/ui/` and `/ui/{file}`; no fallback (it merges into the
/// API's router).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/ui", get(redirect))
        .route("/ui/", get(index))
        .route("/ui/{*path}", get(file))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tower::ServiceExt;

    async fn call(path: &str, inm: Option<&str>) -> Response {
        let mut b = axum::http::Request::get(path);
        if let Some(t) = inm {
            b = b.header(header::IF_NONE_MATCH, t);
        }
        router::<()>()
            .oneshot(b.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn assets_revalidate_by_etag_and_unknown_paths_are_404() {
        let r = call("/ui/app.js", None).await;
        assert_eq!(r.status(), StatusCode::OK);
        let tag = r.headers()[header::ETAG].to_str().unwrap().to_string();
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-cache");
        let r = call("/ui/app.js", Some(&tag)).await;
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(r.headers()[header::CONTENT_SECURITY_POLICY], CSP);
        let r = call("/ui/style.css", Some(&tag)).await;
        assert_eq!(r.status(), StatusCode::OK);
        let r = call("/ui/../Cargo.toml", None).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(r.headers()[header::X_FRAME_OPTIONS], "DENY");
        let r = call("/ui", None).await;
        assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
        // every asset is distinct (no two share a tag) and the index is the root
        let mut tags = etags().to_vec();
        tags.sort();
        tags.dedup();
        assert_eq!(tags.len(), ASSETS.len());
        assert_eq!(asset("").unwrap().path, "index.html");
    }
}

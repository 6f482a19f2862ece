//! Request extraction: the caller (bearer token + `bluemix-instance`), bodies (size cap,
//! media type, case-insensitive JSON field names) and query strings.

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use keyward_domain::InstanceId;
use keyward_service::{Caller, ErrorCode, ServiceError};
use serde_json::Value;

use crate::error::ApiError;
use crate::AppState;

/// Largest request body accepted (wrap, unwrap and import bodies are far smaller).
pub const BODY_LIMIT: usize = 64 * 1024;
/// Oversized bodies up to this size are read and dropped before the 413 is sent.
const DRAIN_LIMIT: usize = 1024 * 1024;

/// The authenticated caller of an `/api/v2` route.
pub struct Auth(pub Caller);

fn too_many(retry_after: u64) -> ApiError {
    let mut e = ApiError::new(
        ServiceError::new(
            ErrorCode::RateLimited,
            "Too many requests: the rate limit for this caller and action class is exhausted",
        ),
        "Request could not be processed",
    );
    e.retry_after = Some(retry_after);
    e
}

fn auth_err(err: ServiceError) -> ApiError {
    ApiError::new(err, "Request could not be authorized")
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // The peer, or the client a trusted proxy names (`--trusted-proxy`).
        let ip = state.client_ip(parts);
        // A valid token always passes; failures are counted per source address and, past
        // the limit, answered 429 (so a proxy's shared address is never locked out).
        let refuse = |e: ServiceError| -> ApiError {
            if e.code != ErrorCode::Unauthorized {
                return auth_err(e);
            }
            match state.limiter.auth_allowed(ip) {
                Ok(()) => {
                    state.limiter.auth_failed(ip);
                    auth_err(e)
                }
                Err(retry) => too_many(retry),
            }
        };
        let Some(token) = bearer(&parts.headers) else {
            return Err(refuse(ServiceError::unauthorized()));
        };
        let instance = instance_header(&parts.headers)?;
        let meta = keyward_service::audit::RequestMeta {
            // Only the audit log uses request ids; skip the random draw when it is off.
            request_id: if state.svc.auditing() {
                keyward_domain::new_uuid().to_string()
            } else {
                String::new()
            },
            correlation_id: parts
                .headers
                .get("correlation-id")
                .and_then(|v| v.to_str().ok())
                .filter(|v| v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
                .map(str::to_string),
            source: ip,
            audited: Default::default(),
        };
        let caller = state
            .svc
            .authenticate(token, instance, meta)
            .await
            .map_err(refuse)?;
        if let Some(slot) = parts.extensions.get::<crate::audit::AuditSlot>() {
            slot.set(caller.clone());
        }
        // A caller without a role here gets its 403 from the service without touching the
        // limiter: strangers create no bucket. Every routed request has its endpoint
        // (`endpoint::classify`); one without counts as management.
        if !caller.roles.is_empty() {
            let endpoint = parts.extensions.get::<crate::endpoint::Endpoint>();
            let class = endpoint.map_or(crate::ratelimit::Class::Management, |e| e.class());
            state
                .limiter
                .check(caller.instance, &caller.iam_id, class)
                .map_err(too_many)?;
            if let Some(sub) = endpoint.and_then(|e| e.creation()) {
                state
                    .limiter
                    .check(caller.instance, &caller.iam_id, sub)
                    .map_err(too_many)?;
            }
        }
        Ok(Auth(caller))
    }
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let v = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let s = v.to_str().ok()?.trim();
    let (scheme, token) = s.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn instance_header(headers: &HeaderMap) -> Result<InstanceId, ApiError> {
    let mut values = headers.get_all("bluemix-instance").iter();
    let Some(v) = values.next() else {
        return Err(auth_err(
            ServiceError::new(
                ErrorCode::InstanceIdRequired,
                "The header `bluemix-instance` is required",
            )
            .with_target("header", "bluemix-instance"),
        ));
    };
    let invalid = || {
        auth_err(
            ServiceError::new(
                ErrorCode::InvalidInstanceId,
                "The header `bluemix-instance` must be: one instance UUID",
            )
            .with_target("header", "bluemix-instance"),
        )
    };
    if values.next().is_some() {
        return Err(invalid());
    }
    let s = v.to_str().map_err(|_| invalid())?.trim();
    InstanceId::parse(s).map_err(|_| invalid())
}

/// Reads a body of at most [`BODY_LIMIT`] bytes; 413 before reading when `Content-Length`
/// already says more, and 415 for a non-JSON media type.
pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    op: &'static str,
) -> Result<axum::body::Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            ServiceError::new(
                ErrorCode::PayloadTooLarge,
                format!("The request body must be at most {BODY_LIMIT} bytes"),
            ),
            op,
        )
    };
    if let Some(len) = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > BODY_LIMIT as u64 {
            // Read (and drop) a moderately oversized body first, so the client, still
            // sending, reliably sees the 413 instead of a reset connection. Larger bodies get
            // the 413 at once and the connection is closed.
            if len <= DRAIN_LIMIT as u64 {
                let _ = axum::body::to_bytes(body, DRAIN_LIMIT).await;
            }
            return Err(too_large());
        }
    }
    if let Some(ct) = headers.get(CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
        if !ct.trim().is_empty() && !ct.contains("json") {
            return Err(ApiError::new(
                ServiceError::new(
                    ErrorCode::UnsupportedMediaType,
                    "The request body must be JSON (application/json or a Key Protect JSON media type)",
                ),
                op,
            ));
        }
    }
    axum::body::to_bytes(body, BODY_LIMIT)
        .await
        .map_err(|_| too_large())
}

/// Parses a JSON body; `None` for an empty body or JSON `null`. Object keys are lowercased at
/// every level (Key Protect matches field names case-insensitively; the Go client sends `Tags`).
pub fn parse_json(bytes: &[u8], op: &'static str) -> Result<Option<Value>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let v: Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            ServiceError::new(
                ErrorCode::BadBody,
                format!("The request body is not valid JSON: {e}"),
            ),
            op,
        )
    })?;
    match v {
        Value::Null => Ok(None),
        other => lowercase_keys(other).map(Some).map_err(|dup| {
            ApiError::new(
                ServiceError::new(
                    ErrorCode::BadBody,
                    format!("The field `{dup}` appears more than once (field names are case-insensitive)"),
                ),
                op,
            )
        }),
    }
}

/// Lowercases object keys at every level; `Err(name)` when two keys differ only by case.
fn lowercase_keys(v: Value) -> Result<Value, String> {
    match v {
        Value::Object(m) => {
            let mut out = serde_json::Map::with_capacity(m.len());
            for (k, v) in m {
                let lk = k.to_ascii_lowercase();
                if out.contains_key(&lk) {
                    return Err(k);
                }
                out.insert(lk, lowercase_keys(v)?);
            }
            Ok(Value::Object(out))
        }
        Value::Array(a) => a
            .into_iter()
            .map(lowercase_keys)
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        other => Ok(other),
    }
}

/// The query string as (name, value) pairs.
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
        .unwrap_or_default()
}

/// Reads an optional string field; a present non-string is `INVALID_FIELD_ERR`.
pub fn opt_str(
    obj: &serde_json::Map<String, Value>,
    key: &str,
    wire: &str,
    op: &'static str,
) -> Result<Option<String>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::new(
            ServiceError::field(wire, format!("The field `{wire}` must be: a string")),
            op,
        )),
    }
}

/// Reads an optional array of strings.
pub fn opt_str_list(
    obj: &serde_json::Map<String, Value>,
    key: &str,
    wire: &str,
    op: &'static str,
) -> Result<Option<Vec<String>>, ApiError> {
    let bad = || {
        ApiError::new(
            ServiceError::field(
                wire,
                format!("The field `{wire}` must be: an array of strings"),
            ),
            op,
        )
    };
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(bad))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(bad()),
    }
}

/// Reads an optional integer; floats (even `600.0`), strings, booleans are refused.
pub fn opt_int(
    obj: &serde_json::Map<String, Value>,
    key: &str,
    wire: &str,
    op: &'static str,
) -> Result<Option<i64>, ApiError> {
    match obj.get(key) {
        None => Ok(None),
        Some(Value::Number(n)) if n.is_i64() => Ok(n.as_i64()),
        Some(_) => Err(ApiError::new(
            ServiceError::field(wire, format!("The field `{wire}` must be: an integer")),
            op,
        )),
    }
}

/// Reads an optional JSON object field.
pub fn opt_obj<'a>(
    obj: &'a serde_json::Map<String, Value>,
    key: &str,
    wire: &str,
    op: &'static str,
) -> Result<Option<&'a serde_json::Map<String, Value>>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err(ApiError::new(
            ServiceError::field(wire, format!("The field `{wire}` must be: an object")),
            op,
        )),
    }
}

/// `BAD_BODY_ERR` for the first key of `obj` not in `allowed` (bodies that reject unknown fields).
pub fn deny_unknown(
    obj: &serde_json::Map<String, Value>,
    allowed: &[&str],
    op: &'static str,
) -> Result<(), ApiError> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(ApiError::new(
            ServiceError::new(ErrorCode::BadBody, format!("json: unknown field \"{k}\"")),
            op,
        )),
        None => Ok(()),
    }
}

/// Reads an optional boolean.
pub fn opt_bool(
    obj: &serde_json::Map<String, Value>,
    key: &str,
    wire: &str,
    op: &'static str,
) -> Result<Option<bool>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::new(
            ServiceError::field(wire, format!("The field `{wire}` must be: a boolean")),
            op,
        )),
    }
}

/// The body must be a JSON object (or absent, which gives an empty object).
pub fn object_or_empty(
    v: Option<Value>,
    op: &'static str,
) -> Result<serde_json::Map<String, Value>, ApiError> {
    match v {
        None => Ok(serde_json::Map::new()),
        Some(Value::Object(m)) => Ok(m),
        Some(_) => Err(ApiError::new(
            ServiceError::new(ErrorCode::BadBody, "The request body must be a JSON object"),
            op,
        )),
    }
}

//! Request extraction: the caller (bearer token + `bluemix-instance`), bodies (size cap,
//! media type, case-insensitive JSON field names) and query strings.

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use keyward_domain::InstanceId;
use keyward_service::{Caller, ErrorCode, ServiceError};
use keyward_wire::de::{self, BodyError};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::AppState;

/// Largest request body accepted (wrap, unwrap and import bodies are far smaller).
pub const BODY_LIMIT: usize = 64 * 1024;
/// Oversized bodies up to this size are read and dropped before the 413 is sent.
const DRAIN_LIMIT: usize = 1024 * 1024;

/// The authenticated caller of an `/api/v2` route.
pub struct Auth(pub Caller);

pub(crate) fn too_many(retry_after: u64) -> ApiError {
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
        let instance = if bearer(&parts.headers).is_some() {
            Some(instance_header(&parts.headers)?)
        } else {
            None
        };
        Ok(Auth(authenticate(parts, state, instance).await?))
    }
}

/// Authenticates the bearer token of a request for `instance` (the instance is read only when
/// a token was sent, `None` then only when none was), counting failures and rate-limiting as
/// every authenticated route does.
pub async fn authenticate(
    parts: &mut Parts,
    state: &AppState,
    instance: Option<InstanceId>,
) -> Result<Caller, ApiError> {
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
    let (Some(token), Some(instance)) = (bearer(&parts.headers), instance) else {
        return Err(refuse(ServiceError::unauthorized()));
    };
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
    Ok(caller)
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

fn body_error(e: BodyError, op: &'static str) -> ApiError {
    let err = match e {
        BodyError::Syntax(m) => ServiceError::new(
            ErrorCode::BadBody,
            format!("The request body is not valid JSON: {m}"),
        ),
        BodyError::Duplicate(dup) => ServiceError::new(
            ErrorCode::BadBody,
            format!("The field `{dup}` appears more than once (field names are case-insensitive)"),
        ),
        BodyError::NotObject => {
            ServiceError::new(ErrorCode::BadBody, "The request body must be a JSON object")
        }
        BodyError::Unknown(k) => {
            ServiceError::new(ErrorCode::BadBody, format!("json: unknown field \"{k}\""))
        }
        BodyError::Field { name, expected } => {
            ServiceError::field(&name, format!("The field `{name}` must be: {expected}"))
        }
    };
    ApiError::new(err, op)
}

/// Checks a JSON body and lowercases its member names (Key Protect matches them
/// case-insensitively; the Go client sends `Tags`); `None` for an empty body or JSON `null`.
pub fn lowercased_json(bytes: &[u8], op: &'static str) -> Result<Option<Vec<u8>>, ApiError> {
    if de::is_absent(bytes) {
        return Ok(None);
    }
    de::lowercase_keys(bytes)
        .map(Some)
        .map_err(|e| body_error(e, op))
}

/// Reads the output of [`lowercased_json`] as `T`.
pub fn from_lowercased<T: DeserializeOwned>(
    lowered: &[u8],
    op: &'static str,
) -> Result<T, ApiError> {
    de::from_lowercased(lowered).map_err(|e| body_error(e, op))
}

/// A body that must be a JSON object, read as `T`; an absent body is `T::default()`.
pub fn object_body<T: DeserializeOwned + Default>(
    bytes: &[u8],
    op: &'static str,
) -> Result<T, ApiError> {
    match lowercased_json(bytes, op)? {
        None => Ok(T::default()),
        Some(l) if de::is_object(&l) => from_lowercased(&l, op),
        Some(_) => Err(body_error(BodyError::NotObject, op)),
    }
}

/// The query string as (name, value) pairs.
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
        .unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use keyward_wire::req::{ImportTokenRequest, InstancePolicyData, WrapRequest};

    fn err<T: DeserializeOwned + Default + std::fmt::Debug>(body: &str) -> ServiceError {
        match object_body::<T>(body.as_bytes(), "op") {
            Err(e) => e.err,
            Ok(v) => panic!("accepted {body}: {v:?}"),
        }
    }

    fn target(e: &ServiceError) -> Option<(&str, &str)> {
        e.target.as_ref().map(|t| (t.kind, t.name.as_str()))
    }

    #[test]
    fn field_errors_name_the_field_as_the_wire_spells_it() {
        let e = err::<WrapRequest>(r#"{"AAD": ["a", 1]}"#);
        assert_eq!(e.code, ErrorCode::InvalidField);
        assert_eq!(e.message, "The field `aad` must be: an array of strings");
        assert_eq!(target(&e), Some(("field", "aad")));
        let e = err::<ImportTokenRequest>(r#"{"MaxAllowedRetrievals": 1.0}"#);
        assert_eq!(
            e.message,
            "The field `maxAllowedRetrievals` must be: an integer"
        );
        assert_eq!(target(&e), Some(("field", "maxAllowedRetrievals")));
        let e = err::<WrapRequest>(r#"{"plaintext": false}"#);
        assert_eq!(e.message, "The field `plaintext` must be: a string");
    }

    #[test]
    fn body_shape_errors_are_bad_body() {
        let e = err::<WrapRequest>("[1]");
        assert_eq!(
            (e.code, e.message.as_str()),
            (ErrorCode::BadBody, "The request body must be a JSON object")
        );
        let e = err::<WrapRequest>(r#"{"aad": [], "AAD": []}"#);
        assert_eq!(
            e.message,
            "The field `aad` appears more than once (field names are case-insensitive)"
        );
        let e = err::<WrapRequest>(r#"{"aad": "#);
        assert_eq!(e.code, ErrorCode::BadBody);
        assert!(e
            .message
            .starts_with("The request body is not valid JSON: "));
        let e = err::<InstancePolicyData>(r#"{"enabled": true, "Extra": 1}"#);
        assert_eq!(
            (e.code, e.message.as_str()),
            (ErrorCode::BadBody, "json: unknown field \"extra\"")
        );
    }

    #[test]
    fn absent_bodies_are_empty_and_names_match_any_case() {
        for body in ["", "  ", "null", "{}"] {
            let r: WrapRequest = object_body(body.as_bytes(), "op").unwrap();
            assert!(r.plaintext.is_none() && r.aad.is_none(), "{body}");
        }
        let r: WrapRequest =
            object_body(br#"{"PlainText": "AAAA", "Aad": ["x"]}"#, "op").unwrap_or_default();
        assert_eq!(r.plaintext.as_deref(), Some("AAAA"));
        assert_eq!(r.aad, Some(vec!["x".to_string()]));
    }
}

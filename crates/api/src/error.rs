//! The one error → HTTP mapping. Every error leaves as the Key Protect error envelope with
//! `Content-Type: application/json`; 5xx bodies are generic and their causes go to the log.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keyward_service::{ErrorCode, ServiceError};
use keyward_wire::resp::{ErrorCollection, ErrorReason, ErrorResource, ErrorTarget};

use crate::json_response;

/// `Retry-After` seconds of a 503 that names none.
pub const UNAVAILABLE_RETRY_AFTER: u64 = 5;

/// A service error plus what the request was trying to do ("Key could not be created").
#[derive(Debug)]
pub struct ApiError {
    pub err: ServiceError,
    pub op: &'static str,
    /// `Retry-After` seconds, for 429 (503 gets [`UNAVAILABLE_RETRY_AFTER`] unless set).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(err: ServiceError, op: &'static str) -> Self {
        Self {
            err,
            op,
            retry_after: None,
        }
    }
}

/// Adapter for `.map_err(op("Key could not be created"))`.
pub fn op(op: &'static str) -> impl Fn(ServiceError) -> ApiError {
    move |err| ApiError::new(err, op)
}

/// The HTTP status of each reason code (exhaustive: a new code does not compile without one).
pub fn status_of(code: ErrorCode) -> StatusCode {
    use ErrorCode::*;
    match code {
        BadBody
        | CollectionTotalMismatch
        | NoBody
        | InvalidField
        | InvalidQueryParam
        | InstanceIdRequired
        | InvalidInstanceId
        | KeyRootRequired
        | KeyPayloadRequired
        | IncorrectNonce
        | IncorrectNonceIv
        | BodyQueryParamMismatch
        | NumCollectionResource
        | KeyExpired
        | KeyRestoreExpired
        | KeySearchTooBroad
        | AliasLimit
        | KeyRingLimit => StatusCode::BAD_REQUEST,
        Unauthorized => StatusCode::UNAUTHORIZED,
        Forbidden | ServiceOnly => StatusCode::FORBIDDEN,
        KeyNotFound | ImportTokenNotFound | NotFound | KeyRingNotFound => StatusCode::NOT_FOUND,
        MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        KeyActionInvalidState
        | ImportTokenExpired
        | ImportTokenRetrievalsExhausted
        | KeyRotationNotPermitted
        | ReqTooEarly
        | ProtectedResource
        | PrevKeyDeletion
        | AuthorizationsNotMet
        | NotDualAuth
        | KeyCreateImportAccess
        | KeyRingConflict
        | KeyRingNotEmpty
        | AliasConflict
        | Conflict => StatusCode::CONFLICT,
        KeyDeleted => StatusCode::GONE,
        PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        RateLimited => StatusCode::TOO_MANY_REQUESTS,
        UnprocessableCiphertext => StatusCode::UNPROCESSABLE_ENTITY,
        Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Internal | RowIntegrity => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The one log line of a 5xx answer: the reason code, the operation, the cause, and for a
/// database error its SQLSTATE and message (never a password, key material or row values:
/// see `keyward_store::database_error_detail`). A 503 because the database is unavailable is
/// also counted for `/metrics`.
pub(crate) fn log_server_error(err: &ServiceError, op: &'static str) {
    let code = err.code;
    let Some(src) = err.source.as_deref() else {
        tracing::error!(code = code.as_str(), op, "request failed");
        return;
    };
    let src: &(dyn std::error::Error + 'static) = src;
    if code == keyward_service::ErrorCode::Unavailable && keyward_service::is_store_unavailable(src)
    {
        crate::metrics::count_store_unavailable();
    }
    match keyward_service::database_error_detail(src) {
        Some((sqlstate, message)) => tracing::error!(
            code = code.as_str(),
            op,
            source = %src,
            sqlstate = sqlstate.as_deref().unwrap_or("none"),
            db_message = %message,
            "request failed"
        ),
        None => tracing::error!(code = code.as_str(), op, source = %src, "request failed"),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.err.code;
        let status = status_of(code);
        if status.is_server_error() {
            log_server_error(&self.err, self.op);
        }
        let phrase = status.canonical_reason().unwrap_or("Error");
        let error_msg = format!(
            "{phrase}: {}: Please see `reasons` for more details ({})",
            self.op,
            code.as_str()
        );
        let reason = ErrorReason {
            code: code.as_str().to_string(),
            message: self.err.message.clone(),
            more_info: keyward_wire::MORE_INFO.to_string(),
            status: status.as_u16(),
            target: self.err.target.as_ref().map(|t| ErrorTarget {
                name: t.name.clone(),
                kind: t.kind.to_string(),
            }),
        };
        let body = ErrorCollection::new(
            keyward_wire::ERROR_TYPE,
            vec![ErrorResource {
                error_msg,
                reasons: vec![reason],
            }],
        );
        let mut resp = json_response(status, &body);
        resp.extensions_mut().insert(code);
        // A 503 (store unreachable, key generation at capacity) says when to come back.
        let retry_after = self
            .retry_after
            .or((status == StatusCode::SERVICE_UNAVAILABLE).then_some(UNAVAILABLE_RETRY_AFTER));
        if let Some(secs) = retry_after {
            if let Ok(v) = axum::http::HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

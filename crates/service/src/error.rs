//! Service errors: one [`ErrorCode`] per Key Protect reason code Keyward produces. The api
//! crate maps each code to its HTTP status in one exhaustive match.

use keyward_store::StoreError;

/// Key Protect reason codes (and Keyward's documented additions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BadBody,
    CollectionTotalMismatch,
    NoBody,
    InvalidField,
    InvalidQueryParam,
    InstanceIdRequired,
    InvalidInstanceId,
    KeyRootRequired,
    KeyPayloadRequired,
    IncorrectNonce,
    IncorrectNonceIv,
    Unauthorized,
    Forbidden,
    KeyNotFound,
    ImportTokenNotFound,
    KeyActionInvalidState,
    ImportTokenExpired,
    ImportTokenRetrievalsExhausted,
    KeyRotationNotPermitted,
    KeyDeleted,
    UnprocessableCiphertext,
    PayloadTooLarge,
    UnsupportedMediaType,
    BodyQueryParamMismatch,
    NumCollectionResource,
    KeyExpired,
    KeyRestoreExpired,
    ReqTooEarly,
    ProtectedResource,
    PrevKeyDeletion,
    AuthorizationsNotMet,
    NotDualAuth,
    KeyCreateImportAccess,
    KeySearchTooBroad,
    KeyRingNotFound,
    KeyRingConflict,
    KeyRingNotEmpty,
    KeyRingLimit,
    AliasConflict,
    AliasLimit,
    RateLimited,
    ServiceOnly,
    NotFound,
    MethodNotAllowed,
    Unavailable,
    Internal,
    /// A stored row failed its integrity check (`docs/threat-model.md`).
    RowIntegrity,
    /// A KMIP adapter, certificate or object conflicts with the request (docs/kmip.md).
    Conflict,
}

impl ErrorCode {
    /// The wire reason code.
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            BadBody => "BAD_BODY_ERR",
            CollectionTotalMismatch => "COLLECTION_TOTAL_MISMATCH_ERR",
            NoBody => "NO_BODY_ERR",
            InvalidField => "INVALID_FIELD_ERR",
            InvalidQueryParam => "INVALID_QUERY_PARAM_ERR",
            InstanceIdRequired => "INSTANCE_ID_REQUIRED_ERR",
            InvalidInstanceId => "INVALID_INSTANCE_ID_ERR",
            KeyRootRequired => "KEY_ROOT_REQ_ERR",
            KeyPayloadRequired => "KEY_PAYLOAD_REQ_ERR",
            IncorrectNonce => "INCORRECT_NONCE_ERR",
            IncorrectNonceIv => "INCORRECT_NONCE_IV_ERR",
            Unauthorized | Forbidden => "UNAUTHORIZED_ERR",
            KeyNotFound => "KEY_NOT_FOUND_ERR",
            ImportTokenNotFound => "IMPORT_TOKEN_NOT_FOUND_ERR",
            KeyActionInvalidState => "KEY_ACTION_INVALID_STATE_ERR",
            ImportTokenExpired => "IMPORT_TOKEN_EXPIRED_ERR",
            ImportTokenRetrievalsExhausted => "IMPORT_TOKEN_RETRIEVALS_EXHAUSTED_ERR",
            KeyRotationNotPermitted => "KEY_ROTATION_NOT_PERMITTED",
            KeyDeleted => "KEY_DELETED_ERR",
            UnprocessableCiphertext => "UNPROCESSABLE_CIPHERTEXT_ERR",
            PayloadTooLarge => "REQUEST_TOO_LARGE_ERR",
            UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE_ERR",
            BodyQueryParamMismatch => "BODY_QUERY_PARAM_MISMATCH_ERR",
            NumCollectionResource => "NUM_COLLECTION_RESOURCE_ERR",
            KeyExpired => "KEY_EXPIRED_ERR",
            KeyRestoreExpired => "KEY_RESTORE_EXPIRED",
            ReqTooEarly => "REQ_TOO_EARLY_ERR",
            ProtectedResource => "PROTECTED_RESOURCE_ERR",
            PrevKeyDeletion => "PREV_KEY_DEL_ERR",
            AuthorizationsNotMet => "AUTHORIZATIONS_NOT_MET",
            NotDualAuth => "NOT_DUAL_AUTH_ERR",
            KeyCreateImportAccess => "KEY_CREATE_IMPORT_ACCESS_ERR",
            KeySearchTooBroad => "KEY_SEARCH_TOO_BROAD",
            KeyRingNotFound => "KEY_RING_NOT_FOUND_ERR",
            KeyRingConflict => "KEY_RING_CONFLICT_ERR",
            KeyRingNotEmpty => "KEY_RING_NOT_EMPTY_ERR",
            KeyRingLimit => "KEY_RING_LIMIT_EXCEEDED_ERR",
            AliasConflict => "KEY_ALIAS_NOT_UNIQUE_ERR",
            AliasLimit => "KEY_ALIAS_QUOTA_ERR",
            RateLimited => "TOO_MANY_REQUESTS_ERR",
            ServiceOnly => "SERVICE_ONLY_ERR",
            NotFound => "NOT_FOUND_ERR",
            MethodNotAllowed => "METHOD_NOT_ALLOWED_ERR",
            Unavailable => "SERVICE_UNAVAILABLE_ERR",
            Internal => "INTERNAL_SERVER_ERROR",
            RowIntegrity => "ROW_INTEGRITY_ERR",
            Conflict => "CONFLICT_ERR",
        }
    }
}

/// An error with the code, a client-safe message, and (for field errors) the field.
#[derive(Debug, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ServiceError {
    pub code: ErrorCode,
    pub message: String,
    /// `target` of the reason: the field (or header / query parameter) at fault.
    pub target: Option<Target>,
    /// The cause, for the log only (never sent to the client).
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `field`, `header` or `query_param`.
    pub kind: &'static str,
    pub name: String,
}

pub type ServiceResult<T> = Result<T, ServiceError>;

impl ServiceError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            target: None,
            source: None,
        }
    }

    /// `INVALID_FIELD_ERR` naming `field`.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidField, message).with_target("field", field)
    }

    pub fn query(param: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidQueryParam, message).with_target("query_param", param)
    }

    pub fn with_target(mut self, kind: &'static str, name: &str) -> Self {
        self.target = Some(Target {
            kind,
            name: name.to_string(),
        });
        self
    }

    pub fn key_not_found() -> Self {
        Self::new(ErrorCode::KeyNotFound, "Key does not exist")
    }

    pub fn invalid_state(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::KeyActionInvalidState, message)
    }

    pub fn forbidden() -> Self {
        Self::new(
            ErrorCode::Forbidden,
            "The user does not have access to the specified resource",
        )
    }

    pub fn unauthorized() -> Self {
        Self::new(
            ErrorCode::Unauthorized,
            "The bearer token is missing, invalid or expired",
        )
    }

    pub fn internal(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self {
            code: ErrorCode::Internal,
            message: "Internal error".into(),
            target: None,
            source: Some(Box::new(source)),
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ServiceError::key_not_found(),
            StoreError::Unavailable(_) => Self {
                code: ErrorCode::Unavailable,
                message: "The service is temporarily unavailable; retry later".into(),
                target: None,
                source: Some(Box::new(e)),
            },
            StoreError::Integrity { .. } => Self {
                code: ErrorCode::RowIntegrity,
                message: "A stored row failed its integrity check; the database may have been tampered with".into(),
                target: None,
                source: Some(Box::new(e)),
            },
            StoreError::RowAuthMissing => Self {
                code: ErrorCode::Unavailable,
                message: "The service is temporarily unavailable; retry later".into(),
                target: None,
                source: Some(Box::new(e)),
            },
            other => ServiceError::internal(other),
        }
    }
}

impl From<keyward_crypto::CryptoError> for ServiceError {
    fn from(e: keyward_crypto::CryptoError) -> Self {
        ServiceError::internal(e)
    }
}

impl ErrorCode {
    /// Every reason code, in declaration order (a test checks it against an exhaustive match,
    /// so a new code cannot be left out).
    pub const ALL: [ErrorCode; 48] = [
        ErrorCode::BadBody,
        ErrorCode::CollectionTotalMismatch,
        ErrorCode::NoBody,
        ErrorCode::InvalidField,
        ErrorCode::InvalidQueryParam,
        ErrorCode::InstanceIdRequired,
        ErrorCode::InvalidInstanceId,
        ErrorCode::KeyRootRequired,
        ErrorCode::KeyPayloadRequired,
        ErrorCode::IncorrectNonce,
        ErrorCode::IncorrectNonceIv,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::KeyNotFound,
        ErrorCode::ImportTokenNotFound,
        ErrorCode::KeyActionInvalidState,
        ErrorCode::ImportTokenExpired,
        ErrorCode::ImportTokenRetrievalsExhausted,
        ErrorCode::KeyRotationNotPermitted,
        ErrorCode::KeyDeleted,
        ErrorCode::UnprocessableCiphertext,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::BodyQueryParamMismatch,
        ErrorCode::NumCollectionResource,
        ErrorCode::KeyExpired,
        ErrorCode::KeyRestoreExpired,
        ErrorCode::ReqTooEarly,
        ErrorCode::ProtectedResource,
        ErrorCode::PrevKeyDeletion,
        ErrorCode::AuthorizationsNotMet,
        ErrorCode::NotDualAuth,
        ErrorCode::KeyCreateImportAccess,
        ErrorCode::KeySearchTooBroad,
        ErrorCode::KeyRingNotFound,
        ErrorCode::KeyRingConflict,
        ErrorCode::KeyRingNotEmpty,
        ErrorCode::KeyRingLimit,
        ErrorCode::AliasConflict,
        ErrorCode::AliasLimit,
        ErrorCode::RateLimited,
        ErrorCode::ServiceOnly,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
        ErrorCode::RowIntegrity,
        ErrorCode::Conflict,
    ];
}

#[cfg(test)]
mod all_codes_tests {
    use super::ErrorCode;

    /// The position of `c` in [`ErrorCode::ALL`] (exhaustive: a new code must be listed).
    fn code_index(c: ErrorCode) -> usize {
        use ErrorCode::*;
        match c {
            BadBody => 0,
            CollectionTotalMismatch => 1,
            NoBody => 2,
            InvalidField => 3,
            InvalidQueryParam => 4,
            InstanceIdRequired => 5,
            InvalidInstanceId => 6,
            KeyRootRequired => 7,
            KeyPayloadRequired => 8,
            IncorrectNonce => 9,
            IncorrectNonceIv => 10,
            Unauthorized => 11,
            Forbidden => 12,
            KeyNotFound => 13,
            ImportTokenNotFound => 14,
            KeyActionInvalidState => 15,
            ImportTokenExpired => 16,
            ImportTokenRetrievalsExhausted => 17,
            KeyRotationNotPermitted => 18,
            KeyDeleted => 19,
            UnprocessableCiphertext => 20,
            PayloadTooLarge => 21,
            UnsupportedMediaType => 22,
            BodyQueryParamMismatch => 23,
            NumCollectionResource => 24,
            KeyExpired => 25,
            KeyRestoreExpired => 26,
            ReqTooEarly => 27,
            ProtectedResource => 28,
            PrevKeyDeletion => 29,
            AuthorizationsNotMet => 30,
            NotDualAuth => 31,
            KeyCreateImportAccess => 32,
            KeySearchTooBroad => 33,
            KeyRingNotFound => 34,
            KeyRingConflict => 35,
            KeyRingNotEmpty => 36,
            KeyRingLimit => 37,
            AliasConflict => 38,
            AliasLimit => 39,
            RateLimited => 40,
            ServiceOnly => 41,
            NotFound => 42,
            MethodNotAllowed => 43,
            Unavailable => 44,
            Internal => 45,
            RowIntegrity => 46,
            Conflict => 47,
        }
    }

    #[test]
    fn every_reason_code_is_listed_once() {
        for (i, c) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(code_index(*c), i);
        }
    }
}

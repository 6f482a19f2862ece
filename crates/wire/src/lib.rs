//! The Key Protect wire format as Rust types: every request and response body Keyward serves,
//! with their OpenAPI schemas (`utoipa`). No behaviour lives here beyond (de)serialization:
//! the api crate maps these types to and from the service's.
//!
//! Two rules of the wire format shape this crate:
//! - Responses: object members leave in byte order of their names (the order Keyward has
//!   always sent), so every response struct declares its fields in that order; a test in
//!   `resp.rs` checks each one.
//! - Requests: Key Protect matches field names case-insensitively, so a body is first passed
//!   through [`de::lowercase_keys`] and request structs use lowercase names; type errors name
//!   the offending field ([`de::BodyError`]).

pub mod de;
pub mod kmip;
pub mod req;
pub mod resp;

/// Media type of a key resource (`type` and `collectionType`).
pub const KEY_TYPE: &str = "application/vnd.ibm.kms.key+json";
/// `collectionType` of key versions.
pub const VERSION_TYPE: &str = "application/vnd.ibm.kms.key.version+json";
/// `collectionType` and `type` of key policies (and of instance policies).
pub const POLICY_TYPE: &str = "application/vnd.ibm.kms.policy+json";
/// `collectionType` of aliases.
pub const ALIAS_TYPE: &str = "application/vnd.ibm.kms.alias+json";
/// `collectionType` of key rings.
pub const KEY_RING_TYPE: &str = "application/vnd.ibm.kms.key_ring+json";
/// `collectionType` of registrations.
pub const REGISTRATION_TYPE: &str = "application/vnd.ibm.kms.registration+json";
/// `collectionType` of `GET /instance/allowed_ip_port`.
pub const ALLOWED_IP_TYPE: &str = "application/vnd.ibm.kms.allowed_ip_metadata+json";
/// `collectionType` of Keyward's audit records (`GET /api/v2/x-keyward/audit`).
pub const AUDIT_TYPE: &str = "application/vnd.keyward.audit+json";
/// `collectionType` of the error envelope.
pub const ERROR_TYPE: &str = "application/vnd.ibm.kms.error+json";
/// `moreInfo` of every error reason.
pub const MORE_INFO: &str = "https://cloud.ibm.com/apidocs/key-protect";

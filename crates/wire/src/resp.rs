//! Response bodies. Fields are declared in byte order of their wire names (see the crate
//! docs); `Option` fields marked `skip_serializing_if` are absent rather than `null`.

use serde::Serialize;
use utoipa::ToSchema;

/// `metadata` of every collection.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CollectionMetadata {
    #[serde(rename = "collectionTotal")]
    pub collection_total: u64,
    /// The media type of the resources (`application/vnd.ibm.kms.*+json`).
    #[serde(rename = "collectionType")]
    pub collection_type: String,
    /// All matching resources (versions and key rings, with `totalCount=true`).
    #[serde(rename = "totalCount", skip_serializing_if = "Option::is_none")]
    pub total_count: Option<u64>,
}

impl CollectionMetadata {
    pub fn new(collection_type: &str, total: usize) -> Self {
        Self {
            collection_total: total as u64,
            collection_type: collection_type.to_string(),
            total_count: None,
        }
    }
}

macro_rules! collection {
    ($(#[$doc:meta])* $name:ident, $item:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Serialize, ToSchema)]
        pub struct $name {
            pub metadata: CollectionMetadata,
            pub resources: Vec<$item>,
        }

        impl $name {
            /// The collection of `resources` (`collectionTotal` is their number).
            pub fn new(collection_type: &str, resources: Vec<$item>) -> Self {
                Self {
                    metadata: CollectionMetadata::new(collection_type, resources.len()),
                    resources,
                }
            }

            /// Adds `metadata.totalCount`.
            pub fn with_total_count(mut self, total: Option<u64>) -> Self {
                self.metadata.total_count = total;
                self
            }
        }
    };
}

collection!(
    /// A collection of keys (`application/vnd.ibm.kms.key+json`).
    KeyCollection,
    Key
);
collection!(
    /// A collection of key versions.
    VersionCollection,
    KeyVersionRef
);
collection!(
    /// A collection of key policies.
    KeyPolicyCollection,
    KeyPolicy
);
collection!(
    /// A collection of instance policies.
    InstancePolicyCollection,
    InstancePolicy
);
collection!(
    /// A collection of aliases.
    AliasCollection,
    Alias
);
collection!(
    /// A collection of key rings.
    KeyRingCollection,
    KeyRing
);
collection!(
    /// A collection of registrations.
    RegistrationCollection,
    Registration
);
collection!(
    /// The private endpoint port (`GET /instance/allowed_ip_port`).
    AllowedIpPortCollection,
    AllowedIpPort
);
collection!(
    /// The error envelope: one resource with the reasons.
    ErrorCollection,
    ErrorResource
);

/// `algorithmMetadata` of a key.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AlgorithmMetadata {
    #[serde(rename = "bitLength")]
    pub bit_length: String,
    pub mode: String,
}

/// `dualAuthDelete` of a key.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyDualAuthDelete {
    /// When the pending deletion authorisation expires.
    #[serde(rename = "authExpiration", skip_serializing_if = "Option::is_none")]
    pub auth_expiration: Option<String>,
    pub enabled: bool,
    /// Present when `enabled`.
    #[serde(rename = "keySetForDeletion", skip_serializing_if = "Option::is_none")]
    pub key_set_for_deletion: Option<bool>,
}

/// A rotation policy as a key and key policies show it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RotationPolicy {
    pub enabled: Option<bool>,
    /// Months between automatic rotations (1 to 12).
    pub interval_month: Option<i64>,
}

/// A dual-authorization-delete policy as key policies show it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DualAuthPolicy {
    pub enabled: Option<bool>,
}

/// `{"id": ...}` of a key version, with its creation date where the API gives it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyVersionRef {
    #[serde(rename = "creationDate", skip_serializing_if = "Option::is_none")]
    pub creation_date: Option<String>,
    pub id: String,
}

/// One key resource (`application/vnd.ibm.kms.key+json`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Key {
    #[serde(rename = "algorithmBitSize")]
    pub algorithm_bit_size: i64,
    #[serde(rename = "algorithmMetadata")]
    pub algorithm_metadata: AlgorithmMetadata,
    #[serde(rename = "algorithmMode")]
    pub algorithm_mode: String,
    #[serde(rename = "algorithmType")]
    pub algorithm_type: String,
    /// Present on single-key responses of a key that has aliases.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aliases: Option<Vec<String>>,
    #[serde(rename = "createdBy")]
    pub created_by: String,
    #[serde(rename = "creationDate")]
    pub creation_date: String,
    pub crn: String,
    pub deleted: bool,
    #[serde(rename = "deletedBy", skip_serializing_if = "Option::is_none")]
    pub deleted_by: Option<String>,
    #[serde(rename = "deletionDate", skip_serializing_if = "Option::is_none")]
    pub deletion_date: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(rename = "dualAuthDelete")]
    pub dual_auth_delete: KeyDualAuthDelete,
    #[serde(rename = "expirationDate", skip_serializing_if = "Option::is_none")]
    pub expiration_date: Option<String>,
    pub extractable: bool,
    pub id: String,
    pub imported: bool,
    #[serde(rename = "keyRingID")]
    pub key_ring_id: String,
    #[serde(rename = "keyVersion")]
    pub key_version: KeyVersionRef,
    #[serde(rename = "lastRotateDate", skip_serializing_if = "Option::is_none")]
    pub last_rotate_date: Option<String>,
    #[serde(rename = "lastUpdateDate")]
    pub last_update_date: String,
    pub name: String,
    /// 1: deactivated, 2: suspended, 0: other (absent for active keys).
    #[serde(
        rename = "nonactiveStateReason",
        skip_serializing_if = "Option::is_none"
    )]
    pub nonactive_state_reason: Option<i64>,
    /// Base64 material of a standard key, where the caller asked for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    #[serde(rename = "purgeAllowed", skip_serializing_if = "Option::is_none")]
    pub purge_allowed: Option<bool>,
    #[serde(rename = "purgeAllowedFrom", skip_serializing_if = "Option::is_none")]
    pub purge_allowed_from: Option<String>,
    #[serde(rename = "purgeScheduledOn", skip_serializing_if = "Option::is_none")]
    pub purge_scheduled_on: Option<String>,
    #[serde(rename = "restoreAllowed", skip_serializing_if = "Option::is_none")]
    pub restore_allowed: Option<bool>,
    #[serde(
        rename = "restoreExpirationDate",
        skip_serializing_if = "Option::is_none"
    )]
    pub restore_expiration_date: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationPolicy>,
    /// 0 pre-activation, 1 active, 2 suspended, 3 deactivated, 5 destroyed.
    pub state: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(rename = "type")]
    pub kind: String,
}

/// `POST /keys/{id}/actions/wrap`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WrapResponse {
    pub ciphertext: String,
    #[serde(rename = "keyVersion")]
    pub key_version: KeyVersionRef,
    /// The generated data encryption key (base64), when none was sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plaintext: Option<String>,
}

/// `POST /keys/{id}/actions/unwrap`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UnwrapResponse {
    /// The ciphertext rewrapped under the latest version, when it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ciphertext: Option<String>,
    #[serde(rename = "keyVersion")]
    pub key_version: KeyVersionRef,
    pub plaintext: String,
    #[serde(
        rename = "rewrappedKeyVersion",
        skip_serializing_if = "Option::is_none"
    )]
    pub rewrapped_key_version: Option<KeyVersionRef>,
}

/// `POST /keys/{id}/actions/rewrap`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RewrapResponse {
    pub ciphertext: String,
    #[serde(rename = "keyVersion")]
    pub key_version: KeyVersionRef,
    #[serde(rename = "rewrappedKeyVersion")]
    pub rewrapped_key_version: KeyVersionRef,
}

/// One key policy (rotation or dual authorization delete) of a key.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyPolicy {
    #[serde(rename = "createdBy")]
    pub created_by: Option<String>,
    #[serde(rename = "creationDate")]
    pub creation_date: Option<String>,
    pub crn: String,
    #[serde(rename = "dualAuthDelete", skip_serializing_if = "Option::is_none")]
    pub dual_auth_delete: Option<DualAuthPolicy>,
    pub id: String,
    #[serde(rename = "lastUpdateDate")]
    pub last_update_date: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationPolicy>,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(rename = "updatedBy")]
    pub updated_by: Option<String>,
}

/// One instance policy.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InstancePolicy {
    #[serde(rename = "createdBy")]
    pub created_by: String,
    #[serde(rename = "creationDate")]
    pub creation_date: String,
    #[serde(rename = "lastUpdated")]
    pub last_updated: String,
    /// `{"enabled": bool, "attributes": {...}}`; the attributes depend on the policy type.
    #[schema(value_type = Object)]
    pub policy_data: serde_json::Value,
    /// rotation, dualAuthDelete, allowedNetwork, allowedIP, keyCreateImportAccess, metrics.
    pub policy_type: String,
    #[serde(rename = "updatedBy")]
    pub updated_by: String,
}

/// One alias of a key.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Alias {
    pub alias: String,
    #[serde(rename = "createdBy")]
    pub created_by: String,
    #[serde(rename = "creationDate")]
    pub creation_date: String,
    #[serde(rename = "keyId")]
    pub key_id: String,
}

/// One key ring.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyRing {
    #[serde(rename = "createdBy")]
    pub created_by: String,
    #[serde(rename = "creationDate")]
    pub creation_date: String,
    pub id: String,
}

/// One registration of a cloud resource with a key.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Registration {
    #[serde(rename = "createdBy")]
    pub created_by: String,
    #[serde(rename = "creationDate")]
    pub creation_date: String,
    pub description: Option<String>,
    #[serde(rename = "keyId")]
    pub key_id: String,
    #[serde(rename = "preventKeyDeletion")]
    pub prevent_key_deletion: bool,
    #[serde(rename = "resourceCrn")]
    pub resource_crn: String,
}

/// The port of the endpoint the caller reached.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AllowedIpPort {
    pub private_endpoint_port: u16,
}

/// An import token (`POST` and `GET /import_token`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ImportToken {
    #[serde(rename = "creationDate")]
    pub creation_date: String,
    /// Lifetime in seconds.
    pub expiration: i64,
    #[serde(rename = "expirationDate")]
    pub expiration_date: String,
    #[serde(rename = "maxAllowedRetrievals")]
    pub max_allowed_retrievals: i64,
    /// Base64 of the encrypted nonce's nonce (GET only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// Base64 of the PEM RSA-4096 public key (GET only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    #[serde(rename = "remainingRetrievals")]
    pub remaining_retrievals: i64,
}

/// `target` of an error reason: the field, header, query or path parameter at fault.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorTarget {
    pub name: String,
    /// field, header, query_param or path_param.
    #[serde(rename = "type")]
    pub kind: String,
}

/// One reason of an error.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorReason {
    /// The reason code (`BAD_BODY_ERR`, `KEY_NOT_FOUND_ERR`, ...).
    pub code: String,
    pub message: String,
    #[serde(rename = "moreInfo")]
    pub more_info: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<ErrorTarget>,
}

/// The one resource of the error envelope.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorResource {
    #[serde(rename = "errorMsg")]
    pub error_msg: String,
    pub reasons: Vec<ErrorReason>,
}

/// `POST /identity/token`: an access token.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IdentityToken {
    pub access_token: String,
    /// Unix time the access token expires.
    pub expiration: i64,
    pub expires_in: i64,
    pub refresh_token: String,
    pub scope: String,
    pub token_type: String,
}

/// `context` of an IAM error.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IamErrorContext {
    #[serde(rename = "requestType")]
    pub request_type: String,
}

/// An error of `POST /identity/token` (IAM's shape, not Key Protect's).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IamError {
    pub context: IamErrorContext,
    #[serde(rename = "errorCode")]
    pub error_code: String,
    #[serde(rename = "errorMessage")]
    pub error_message: String,
}

/// `/healthz` and `/readyz`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Health {
    /// Why the service is not ready (`/readyz` only; never on a sealed main listener).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// ok, ready, unavailable or sealed.
    pub status: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serializing through `serde_json::Value` sorts members by name; a struct whose output
    /// differs declares its fields out of order.
    fn assert_sorted<T: Serialize>(v: &T) {
        let direct = serde_json::to_string(v).unwrap_or_default();
        let sorted = serde_json::to_value(v)
            .and_then(|v| serde_json::to_string(&v))
            .unwrap_or_default();
        assert!(!direct.is_empty());
        assert_eq!(direct, sorted);
    }

    fn vref() -> KeyVersionRef {
        KeyVersionRef {
            creation_date: Some("d".into()),
            id: "v".into(),
        }
    }

    fn s() -> Option<String> {
        Some("x".into())
    }

    #[test]
    fn every_response_type_is_in_wire_order() {
        let key = Key {
            algorithm_bit_size: 256,
            algorithm_metadata: AlgorithmMetadata {
                bit_length: "256".into(),
                mode: "Deprecated".into(),
            },
            algorithm_mode: "Deprecated".into(),
            algorithm_type: "AES".into(),
            aliases: Some(vec!["a".into()]),
            created_by: "u".into(),
            creation_date: "d".into(),
            crn: "c".into(),
            deleted: true,
            deleted_by: s(),
            deletion_date: s(),
            description: s(),
            dual_auth_delete: KeyDualAuthDelete {
                auth_expiration: s(),
                enabled: true,
                key_set_for_deletion: Some(true),
            },
            expiration_date: s(),
            extractable: true,
            id: "i".into(),
            imported: false,
            key_ring_id: "default".into(),
            key_version: vref(),
            last_rotate_date: s(),
            last_update_date: "d".into(),
            name: "n".into(),
            nonactive_state_reason: Some(1),
            payload: s(),
            purge_allowed: Some(true),
            purge_allowed_from: s(),
            purge_scheduled_on: s(),
            restore_allowed: Some(true),
            restore_expiration_date: s(),
            rotation: Some(RotationPolicy {
                enabled: Some(true),
                interval_month: Some(3),
            }),
            state: 5,
            tags: Some(vec!["t".into()]),
            kind: crate::KEY_TYPE.into(),
        };
        assert_sorted(&KeyCollection::new(crate::KEY_TYPE, vec![key]).with_total_count(Some(1)));
        assert_sorted(&WrapResponse {
            ciphertext: "c".into(),
            key_version: vref(),
            plaintext: s(),
        });
        assert_sorted(&UnwrapResponse {
            ciphertext: s(),
            key_version: vref(),
            plaintext: "p".into(),
            rewrapped_key_version: Some(vref()),
        });
        assert_sorted(&RewrapResponse {
            ciphertext: "c".into(),
            key_version: vref(),
            rewrapped_key_version: vref(),
        });
        assert_sorted(&KeyPolicyCollection::new(
            crate::POLICY_TYPE,
            vec![KeyPolicy {
                created_by: s(),
                creation_date: s(),
                crn: "c".into(),
                dual_auth_delete: Some(DualAuthPolicy {
                    enabled: Some(true),
                }),
                id: "i".into(),
                last_update_date: s(),
                rotation: Some(RotationPolicy {
                    enabled: None,
                    interval_month: None,
                }),
                kind: crate::POLICY_TYPE.into(),
                updated_by: s(),
            }],
        ));
        assert_sorted(&InstancePolicy {
            created_by: "u".into(),
            creation_date: "d".into(),
            last_updated: "d".into(),
            policy_data: serde_json::Value::Bool(true),
            policy_type: "rotation".into(),
            updated_by: "u".into(),
        });
        assert_sorted(&Alias {
            alias: "a".into(),
            created_by: "u".into(),
            creation_date: "d".into(),
            key_id: "k".into(),
        });
        assert_sorted(&KeyRing {
            created_by: "u".into(),
            creation_date: "d".into(),
            id: "r".into(),
        });
        assert_sorted(&Registration {
            created_by: "u".into(),
            creation_date: "d".into(),
            description: None,
            key_id: "k".into(),
            prevent_key_deletion: true,
            resource_crn: "c".into(),
        });
        assert_sorted(&ImportToken {
            creation_date: "d".into(),
            expiration: 600,
            expiration_date: "d".into(),
            max_allowed_retrievals: 1,
            nonce: s(),
            payload: s(),
            remaining_retrievals: 1,
        });
        assert_sorted(&ErrorCollection::new(
            crate::ERROR_TYPE,
            vec![ErrorResource {
                error_msg: "m".into(),
                reasons: vec![ErrorReason {
                    code: "c".into(),
                    message: "m".into(),
                    more_info: crate::MORE_INFO.into(),
                    status: 400,
                    target: Some(ErrorTarget {
                        name: "n".into(),
                        kind: "field".into(),
                    }),
                }],
            }],
        ));
        assert_sorted(&IdentityToken {
            access_token: "a".into(),
            expiration: 1,
            expires_in: 1,
            refresh_token: "r".into(),
            scope: "s".into(),
            token_type: "Bearer".into(),
        });
        assert_sorted(&IamError {
            context: IamErrorContext {
                request_type: "r".into(),
            },
            error_code: "c".into(),
            error_message: "m".into(),
        });
        assert_sorted(&Health {
            reason: s(),
            status: "s".into(),
        });
        assert_sorted(&AllowedIpPortCollection::new(
            crate::ALLOWED_IP_TYPE,
            vec![AllowedIpPort {
                private_endpoint_port: 443,
            }],
        ));
    }
}

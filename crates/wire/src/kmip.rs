//! KMIP adapter bodies (`/api/v2/kmip_adapters/...`, docs/kmip.md), as Key Protect shapes
//! them: snake_case member names, in byte order like every response here.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::resp::CollectionMetadata;

/// `type` / `collectionType` of KMIP adapters.
pub const KMIP_ADAPTER_TYPE: &str = "application/vnd.ibm.kms.kmip_adapter+json";
/// `collectionType` of KMIP client certificates.
pub const KMIP_CERT_TYPE: &str = "application/vnd.ibm.kms.kmip_client_certificate+json";
/// `collectionType` of KMIP objects.
pub const KMIP_OBJECT_TYPE: &str = "application/vnd.ibm.kms.kmip_object+json";

/// `profile_data` of the `native_1.0` profile.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KmipProfileData {
    /// The root key the adapter's objects are wrapped under.
    pub crk_id: String,
}

/// One KMIP adapter.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KmipAdapter {
    pub created_at: String,
    pub created_by: String,
    pub description: String,
    pub id: String,
    pub name: String,
    pub profile: String,
    pub profile_data: KmipProfileData,
    pub updated_at: String,
    pub updated_by: String,
}

/// One client certificate registered on an adapter.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KmipClientCertificate {
    /// The certificate, PEM (returned by GET of one certificate only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    pub created_at: String,
    pub created_by: String,
    pub id: String,
    pub name: String,
}

/// One object a KMIP client created or registered through the adapter.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KmipObject {
    pub created_at: String,
    pub created_by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by_kmip_client_cert_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destroyed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destroyed_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destroyed_by_kmip_client_cert_id: Option<String>,
    pub id: String,
    /// The KMIP Object Type (2: symmetric key, 7: secret data).
    pub kmip_object_type: i64,
    /// The KMIP State (1 pre-active, 2 active, 3 deactivated, 4 compromised, 5 destroyed,
    /// 6 destroyed compromised).
    pub state: i64,
    pub updated_at: String,
    pub updated_by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_by_kmip_client_cert_id: Option<String>,
}

macro_rules! kmip_collection {
    ($(#[$doc:meta])* $name:ident, $item:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Serialize, ToSchema)]
        pub struct $name {
            pub metadata: CollectionMetadata,
            pub resources: Vec<$item>,
        }

        impl $name {
            pub fn new(collection_type: &str, resources: Vec<$item>, total: Option<u64>) -> Self {
                let mut metadata = CollectionMetadata::new(collection_type, resources.len());
                metadata.total_count = total;
                Self { metadata, resources }
            }
        }
    };
}

kmip_collection!(
    /// A collection of KMIP adapters.
    KmipAdapterCollection,
    KmipAdapter
);
kmip_collection!(
    /// A collection of KMIP client certificates.
    KmipCertificateCollection,
    KmipClientCertificate
);
kmip_collection!(
    /// A collection of KMIP objects.
    KmipObjectCollection,
    KmipObject
);

/// `profile_data` of a new adapter.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct KmipProfileDataRequest {
    /// The id of an active root key of the instance.
    #[schema(
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    pub crk_id: String,
}

/// `metadata` of a creation body (one resource).
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct KmipCreateMetadata {
    #[serde(rename = "collectionTotal")]
    #[schema(minimum = 1, maximum = 1)]
    pub collection_total: u64,
    /// The media type of the resource.
    #[serde(rename = "collectionType")]
    pub collection_type: String,
}

/// The resource of `POST /kmip_adapters`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct KmipAdapterCreate {
    /// 2 to 40 letters, digits, `-` and `_`, not a UUID (generated when absent).
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9_-]{2,40}$")]
    pub name: Option<String>,
    #[serde(default)]
    #[schema(max_length = 240)]
    pub description: Option<String>,
    #[schema(pattern = "^native_1\\.0$")]
    pub profile: String,
    pub profile_data: KmipProfileDataRequest,
}

/// The body of `POST /kmip_adapters`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct KmipAdapterCreateRequest {
    pub metadata: KmipCreateMetadata,
    #[schema(min_items = 1, max_items = 1)]
    pub resources: Vec<KmipAdapterCreate>,
}

/// The resource of `POST /kmip_adapters/{id}/certificates`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct KmipCertificateCreate {
    /// 2 to 40 letters, digits, `-` and `_` (generated when absent).
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9_-]{2,40}$")]
    pub name: Option<String>,
    /// One X.509 certificate, PEM.
    #[schema(
        pattern = "^\\s*-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\\r\\n]+-----END CERTIFICATE-----\\s*$",
        max_length = 16384
    )]
    pub certificate: String,
}

/// The body of `POST /kmip_adapters/{id}/certificates`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct KmipCertificateCreateRequest {
    pub metadata: KmipCreateMetadata,
    #[schema(min_items = 1, max_items = 1)]
    pub resources: Vec<KmipCertificateCreate>,
}

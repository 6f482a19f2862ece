//! The stored rows of KMIP adapters, their client certificates and their objects
//! (`crates/store/migrations/*/0008_kmip.sql`, docs/kmip.md).

use crate::{InstanceId, KeyId};

/// A KMIP adapter: bound to a root key of its instance (profile `native_1.0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmipAdapterRow {
    pub id: String,
    pub instance_id: InstanceId,
    pub name: String,
    pub description: String,
    pub profile: String,
    pub crk_id: KeyId,
    pub created_by: String,
    pub created_at: i64,
    pub updated_by: String,
    pub updated_at: i64,
}

/// A client certificate registered on an adapter (PEM, and the SHA-256 of its DER form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmipCertRow {
    pub id: String,
    pub instance_id: InstanceId,
    pub adapter_id: String,
    pub name: String,
    pub certificate: String,
    pub fingerprint: Vec<u8>,
    pub created_by: String,
    pub created_at: i64,
}

/// A KMIP managed object. `meta` is its attributes as TTLV (`keyward_kmip::ops::Object`);
/// `wrapped` its material wrapped under the adapter's root key, `None` once destroyed.
#[derive(Clone, PartialEq, Eq)]
pub struct KmipObjectRow {
    pub id: String,
    pub instance_id: InstanceId,
    pub adapter_id: String,
    pub object_type: i64,
    pub state: i64,
    pub meta: Vec<u8>,
    pub wrapped: Option<String>,
    pub row_version: i64,
    pub created_by_cert_id: Option<String>,
    pub created_by: String,
    pub created_at: i64,
    pub updated_by_cert_id: Option<String>,
    pub updated_by: String,
    pub updated_at: i64,
    pub destroyed_by_cert_id: Option<String>,
    pub destroyed_by: Option<String>,
    pub destroyed_at: Option<i64>,
}

impl std::fmt::Debug for KmipObjectRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmipObjectRow")
            .field("id", &self.id)
            .field("adapter_id", &self.adapter_id)
            .field("object_type", &self.object_type)
            .field("state", &self.state)
            .field("row_version", &self.row_version)
            .finish_non_exhaustive()
    }
}

//! [`TimedStore`]: a [`Store`] that times every call of the store it wraps, for the
//! `keyward_store_*` metrics (latency histogram and error count per operation).
//!
//! The forwarding impl is generated from one list of the trait's methods, so a method added to
//! [`Store`] and not to that list fails to compile here.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use keyward_domain::{InstanceId, KeyId, Role, TokenId};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::{
    AliasRow, ApiKeyRow, AuditEntry, AuditQuery, AuditRow, GrantRow, InstanceRow, KeyQuery,
    KeyRingRow, KeyRow, PolicyRow, PrincipalRow, RegistrationRow, SealedRow, Store, StoreResult,
    TokenGuard, TokenRow, VersionRow,
};

/// Upper bounds (seconds) of the latency buckets.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: &'static str,
}

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// Latency and errors per store operation (`prometheus-client` families).
pub struct StoreTimings {
    latency: Family<OpLabel, Histogram, fn() -> Histogram>,
    errors: Family<OpLabel, Counter>,
}

impl Default for StoreTimings {
    fn default() -> Self {
        Self {
            latency: Family::new_with_constructor(histogram),
            errors: Family::default(),
        }
    }
}

impl fmt::Debug for StoreTimings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreTimings").finish_non_exhaustive()
    }
}

impl StoreTimings {
    pub fn record(&self, op: &'static str, secs: f64, ok: bool) {
        let label = OpLabel { op };
        self.latency.get_or_create(&label).observe(secs);
        // An operation has its error series (at 0) from its first call on.
        if !ok {
            self.errors.get_or_create(&label).inc();
        } else if self.errors.get(&label).is_none() {
            let _ = self.errors.get_or_create(&label);
        }
    }

    /// Adds `keyward_store_operation_duration_seconds{op}` and `keyward_store_errors_total{op}`
    /// to a registry (they stay shared with `self`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "keyward_store_operation_duration_seconds",
            "Latency of store (database) operations",
            self.latency.clone(),
        );
        registry.register(
            "keyward_store_errors",
            "Store operations that failed (database unreachable, conflicts, ...)",
            self.errors.clone(),
        );
    }
}

/// Wraps a store, timing each call into shared [`StoreTimings`].
#[derive(Debug)]
pub struct TimedStore {
    inner: Arc<dyn Store>,
    timings: Arc<StoreTimings>,
}

impl TimedStore {
    pub fn new(inner: Arc<dyn Store>, timings: Arc<StoreTimings>) -> Self {
        Self { inner, timings }
    }
}

/// The `op` label of a timed call: the method's name, or the label given after `as`.
macro_rules! op_label {
    ($name:ident) => {
        stringify!($name)
    };
    ($name:ident, $label:literal) => {
        $label
    };
}

macro_rules! timed {
    ($( fn $name:ident(&self $(, $arg:ident : $ty:ty)* ) -> $ret:ty $(as $label:literal)?; )*) => {
        #[async_trait]
        impl Store for TimedStore {
            fn backend(&self) -> &'static str {
                self.inner.backend()
            }
            fn timings(&self) -> Option<&StoreTimings> {
                Some(&self.timings)
            }
            fn install_row_auth(&self, auth: Arc<dyn crate::RowAuth>) {
                self.inner.install_row_auth(auth)
            }
            $(
                async fn $name(&self $(, $arg: $ty)*) -> $ret {
                    let start = Instant::now();
                    let r = self.inner.$name($($arg),*).await;
                    self.timings
                        .record(op_label!($name $(, $label)?), start.elapsed().as_secs_f64(), r.is_ok());
                    r
                }
            )*
        }
    };
}

timed! {
    fn row_auth_state(&self) -> StoreResult<crate::RowAuthState>;
    fn tag_untagged(&self, limit: i64) -> StoreResult<u64>;
    fn sealed_rows(&self) -> StoreResult<(i64, Vec<String>)>;
    fn get_secret(&self, name: &str) -> StoreResult<Option<(Vec<u8>, String)>>;
    fn put_secret_if_absent(&self, name: &str, sealed: &[u8], master_key_id: &str, now: i64) -> StoreResult<bool>;
    fn put_secret(&self, name: &str, sealed: &[u8], master_key_id: &str, now: i64) -> StoreResult<()>;
    fn sealed_counts(&self) -> StoreResult<Vec<(String, i64)>>;
    fn sealed_key_ids(&self) -> StoreResult<Vec<String>>;
    fn record_key_usage(&self, rows: &[crate::KeyUsageRow]) -> StoreResult<()>;
    fn key_usage(&self, instance: InstanceId, keys: &[KeyId]) -> StoreResult<Vec<crate::KeyUsageRow>>;
    fn sealed_batch(&self, keep: &str, limit: i64) -> StoreResult<Vec<SealedRow>>;
    fn reseal(&self, row: &SealedRow, sealed: &[u8], master_key_id: &str) -> StoreResult<bool>;
    fn create_instance(&self, row: &InstanceRow) -> StoreResult<()>;
    fn get_instance(&self, id: InstanceId) -> StoreResult<Option<InstanceRow>>;
    fn list_instances(&self) -> StoreResult<Vec<InstanceRow>>;
    fn delete_instance(&self, id: InstanceId) -> StoreResult<()>;
    fn create_api_key(&self, principal: &PrincipalRow, key: &ApiKeyRow, key_hash: &[u8]) -> StoreResult<()>;
    fn find_api_key(&self, key_hash: &[u8]) -> StoreResult<Option<ApiKeyRow>>;
    fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyRow>>;
    fn delete_api_key(&self, id: &str) -> StoreResult<()>;
    fn api_key_exists(&self, id: &str) -> StoreResult<bool>;
    fn principal_exists(&self, iam_id: &str) -> StoreResult<bool>;
    fn grant(&self, grant: &GrantRow) -> StoreResult<()>;
    fn revoke(&self, instance: InstanceId, iam_id: &str, role: Role) -> StoreResult<()>;
    fn roles_of(&self, instance: InstanceId, iam_id: &str) -> StoreResult<Vec<Role>>;
    fn list_grants(&self) -> StoreResult<Vec<GrantRow>>;
    // Labelled as before aliases could come with a key (dashboards keep their series).
    fn insert_key_with_aliases(&self, key: &KeyRow, version: &VersionRow, guard: Option<TokenGuard>, aliases: &[AliasRow]) -> StoreResult<()> as "insert_key";
    fn get_key(&self, instance: InstanceId, id: KeyId) -> StoreResult<Option<KeyRow>>;
    fn list_keys(&self, instance: InstanceId, q: &KeyQuery) -> StoreResult<Vec<KeyRow>>;
    fn count_keys(&self, instance: InstanceId, q: &KeyQuery) -> StoreResult<i64>;
    fn update_key(&self, key: &KeyRow) -> StoreResult<()>;
    fn rotate_key(&self, key: &KeyRow, version: &VersionRow, guard: Option<TokenGuard>) -> StoreResult<()>;
    fn versions(&self, instance: InstanceId, key: KeyId) -> StoreResult<Vec<VersionRow>>;
    fn purge_key(&self, key: &KeyRow) -> StoreResult<()>;
    fn due_rotations(&self, now: i64, limit: i64) -> StoreResult<Vec<KeyRow>>;
    fn due_purges(&self, deleted_before: i64, limit: i64) -> StoreResult<Vec<KeyRow>>;
    fn create_alias(&self, row: &AliasRow) -> StoreResult<()>;
    fn delete_alias(&self, instance: InstanceId, alias: &str, key: KeyId) -> StoreResult<()>;
    fn aliases_of(&self, instance: InstanceId, key: KeyId) -> StoreResult<Vec<AliasRow>>;
    fn aliases_of_keys(&self, instance: InstanceId, keys: &[KeyId]) -> StoreResult<Vec<AliasRow>>;
    fn resolve_alias(&self, instance: InstanceId, alias: &str) -> StoreResult<Option<KeyId>>;
    fn create_key_ring(&self, row: &KeyRingRow) -> StoreResult<()>;
    fn list_key_rings(&self, instance: InstanceId) -> StoreResult<Vec<KeyRingRow>>;
    fn delete_key_ring(&self, instance: InstanceId, id: &str, force: bool) -> StoreResult<()>;
    fn put_instance_policy(&self, row: &PolicyRow) -> StoreResult<()>;
    fn instance_policies(&self, instance: InstanceId) -> StoreResult<Vec<PolicyRow>>;
    fn add_registration(&self, row: &RegistrationRow) -> StoreResult<()>;
    fn registrations(&self, instance: InstanceId, key: Option<KeyId>) -> StoreResult<Vec<RegistrationRow>>;
    fn put_token(&self, row: &TokenRow) -> StoreResult<()>;
    fn get_token(&self, instance: InstanceId) -> StoreResult<Option<TokenRow>>;
    fn take_token_retrieval(&self, instance: InstanceId, now: i64) -> StoreResult<Option<TokenRow>>;
    fn import_failures(&self, instance: InstanceId, token: TokenId) -> StoreResult<i64>;
    fn record_import_failure(&self, instance: InstanceId, token: TokenId) -> StoreResult<i64>;
    fn append_audit(&self, rows: &[AuditRow]) -> StoreResult<()>;
    fn audit_records(&self, q: &AuditQuery) -> StoreResult<Vec<AuditEntry>>;
    fn create_kmip_adapter(&self, row: &crate::KmipAdapterRow) -> StoreResult<()>;
    fn kmip_adapters(&self, instance: InstanceId, limit: i64, offset: i64) -> StoreResult<(Vec<crate::KmipAdapterRow>, i64)>;
    fn get_kmip_adapter(&self, instance: InstanceId, id_or_name: &str) -> StoreResult<Option<crate::KmipAdapterRow>>;
    fn delete_kmip_adapter(&self, instance: InstanceId, id: &str) -> StoreResult<()>;
    fn create_kmip_cert(&self, row: &crate::KmipCertRow) -> StoreResult<()>;
    fn kmip_certs(&self, instance: InstanceId, adapter: &str, limit: i64, offset: i64) -> StoreResult<(Vec<crate::KmipCertRow>, i64)>;
    fn get_kmip_cert(&self, instance: InstanceId, adapter: &str, id_or_name: &str) -> StoreResult<Option<crate::KmipCertRow>>;
    fn delete_kmip_cert(&self, instance: InstanceId, adapter: &str, id: &str) -> StoreResult<()>;
    fn find_kmip_cert(&self, fingerprint: &[u8]) -> StoreResult<Option<crate::KmipCertRow>>;
    fn insert_kmip_object(&self, row: &crate::KmipObjectRow) -> StoreResult<()>;
    fn get_kmip_object(&self, instance: InstanceId, adapter: &str, id: &str) -> StoreResult<Option<crate::KmipObjectRow>>;
    fn kmip_objects(&self, instance: InstanceId, adapter: &str, limit: i64, offset: i64) -> StoreResult<(Vec<crate::KmipObjectRow>, i64)>;
    fn update_kmip_object(&self, row: &crate::KmipObjectRow) -> StoreResult<()>;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn every_call_is_timed_and_failures_counted() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let inner: Arc<dyn Store> = Arc::new(
            crate::SqlStore::connect(&crate::DatabaseUrl::new(url))
                .await
                .unwrap(),
        );
        let timings = Arc::new(StoreTimings::default());
        let store = TimedStore::new(inner, timings.clone());
        assert!(store.timings().is_some());
        assert!(store
            .get_instance(InstanceId::new())
            .await
            .unwrap()
            .is_none());
        assert!(store
            .get_instance(InstanceId::new())
            .await
            .unwrap()
            .is_none());
        // a grant that does not exist cannot be revoked: an error, counted
        assert!(store
            .revoke(InstanceId::new(), "nobody", Role::Reader)
            .await
            .is_err());
        let mut registry = Registry::default();
        timings.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("keyward_store_operation_duration_seconds_count{op=\"revoke\"} 1"));
        assert!(
            text.contains("keyward_store_operation_duration_seconds_count{op=\"get_instance\"} 2"),
            "{text}"
        );
        assert!(text.contains(
            "keyward_store_operation_duration_seconds_bucket{op=\"get_instance\",le=\"+Inf\"} 2"
        ));
        assert!(
            text.contains("keyward_store_errors_total{op=\"revoke\"} 1"),
            "{text}"
        );
        assert!(text.contains("keyward_store_errors_total{op=\"get_instance\"} 0"));
    }
}

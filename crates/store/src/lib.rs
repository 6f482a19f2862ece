//! Persistence behind one [`Store`] trait.
//!
//! What must hold:
//! - The store never sees plaintext key material: secret columns hold bytes sealed by the
//!   master key (`sealed`, `sealed_private`), each row recording its `master_key_id`.
//! - Every write the API acknowledges is durable when the call returns (SQLite: WAL with
//!   `synchronous=FULL`; PostgreSQL: a committed transaction).
//! - Counters that must be exact under concurrency (import-token retrievals) change only through
//!   one conditional `UPDATE … RETURNING`, never read-modify-write in application code.
//! - Every key row is read and written with its `instance_id`: no query can reach another
//!   tenant's row.
//!
//! One implementation ([`SqlStore`]) serves SQLite and PostgreSQL through sqlx's `Any` driver;
//! [`testsuite`] is the conformance suite every backend must pass.

use std::fmt;

use async_trait::async_trait;
use keyward_domain::{InstanceId, KeyId, Role, TokenId};

mod copy;
pub mod rowtag;
mod sql;
pub mod testsuite;
mod timed;
pub use timed::{StoreTimings, TimedStore};

pub use copy::{copy_database, CopyReport, COPY_TABLES};
pub use rowtag::{row_integrity_failures, RowAuth, TAGGED_TABLES};
pub use sql::{checkpoint_sqlite_file, set_sqlite_cache_kib, DEFAULT_SQLITE_CACHE_KIB};
pub use sql::{
    database_error_detail, database_health, is_store_unavailable, DatabaseHealth, ErrorClass,
    Replication,
};
pub use sql::{
    is_serialization_failure, retry_write, serialization_retries, DatabaseUrl, SqlStore,
    AUDIT_BATCH_ROWS, MAX_BATCH_COST, MAX_BATCH_JOBS, PG_ACQUIRE_TIMEOUT, PG_CALL_DEADLINE,
    PG_MAX_CONNECTIONS, WRITE_ATTEMPTS,
};

/// Store failures. `Conflict` is a lost race or a violated uniqueness/condition; `Unavailable`
/// means the database could not be reached (the API answers 503).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(ConflictKind),
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error")]
    Backend(#[source] sqlx::Error),
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// A row of an authenticated table whose tag does not verify: edited or inserted by
    /// someone without the master key (`docs/threat-model.md`).
    #[error("a {table} row ({id}) failed its integrity check")]
    Integrity { table: &'static str, id: String },
    /// An authenticated table was read or written before the row-authentication key was
    /// installed ([`Store::install_row_auth`]).
    #[error("the row-authentication key is not loaded")]
    RowAuthMissing,
}

pub type StoreResult<T> = Result<T, StoreError>;

// The row types are the domain's (`keyward_domain::rows`); re-exported so the store's users
// name them from here as before.
pub use keyward_domain::rows::*;

/// Which condition a [`StoreError::Conflict`] lost on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictKind {
    /// A row with that key exists already (a uniqueness violation: an alias, a key ring, ...).
    AlreadyExists,
    /// The key's `row_version` moved on: another writer got there first.
    KeyChanged,
    /// The import token a secure import was verified against is no longer the instance's
    /// live, unexpired token ([`TokenGuard`]).
    ImportToken,
    /// The instance still has keys that are not deleted.
    InstanceHasKeys,
    /// The key ring still holds keys (undeleted ones; or any, without `force`).
    KeyRingHasKeys,
    /// The target database of a copy is not empty.
    TargetNotEmpty,
    /// A KMIP adapter still holds objects that are not destroyed.
    AdapterHasObjects,
}

impl ConflictKind {
    /// The text [`StoreError`]'s `Display` and the admin commands show.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AlreadyExists => "already exists",
            Self::KeyChanged => "key changed",
            Self::ImportToken => "import token",
            Self::InstanceHasKeys => "instance has keys that are not deleted",
            Self::KeyRingHasKeys => "key ring has keys",
            Self::TargetNotEmpty => "the target database is not empty",
            Self::AdapterHasObjects => "the KMIP adapter has objects that are not destroyed",
        }
    }
}

impl fmt::Display for ConflictKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What [`Store::row_auth_state`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RowAuthState {
    /// Some row of an authenticated table has a tag.
    pub tagged: bool,
    /// Some row of an authenticated table has no tag.
    pub untagged: bool,
}

#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// `"sqlite"` or `"postgres"`.
    fn backend(&self) -> &'static str;

    /// Per-operation latency, when this store is a [`TimedStore`].
    fn timings(&self) -> Option<&StoreTimings> {
        None
    }

    /// Installs the row authenticator: from now on rows of the authenticated tables are tagged
    /// on write and checked on read (`rowtag`). Until then they can be neither.
    fn install_row_auth(&self, auth: std::sync::Arc<dyn RowAuth>);

    /// Whether any row of an authenticated table carries a tag, and whether any row of those
    /// tables exists at all (to tell a database written before row authentication from one
    /// whose tags were stripped).
    async fn row_auth_state(&self) -> StoreResult<RowAuthState>;

    /// Tags up to `limit` rows that have no tag yet (the upgrade of a database written before
    /// row authentication); returns how many it tagged. Each row is tagged as it is read, and
    /// only if it did not change meanwhile.
    async fn tag_untagged(&self, limit: i64) -> StoreResult<u64>;

    /// Rows sealed under a master key (versions, tokens, secrets), and the distinct master key ids.
    async fn sealed_rows(&self) -> StoreResult<(i64, Vec<String>)>;

    /// A sealed service secret (e.g. the token-signing key) by name.
    async fn get_secret(&self, name: &str) -> StoreResult<Option<(Vec<u8>, String)>>;
    /// Stores a sealed secret unless one exists already; returns whether it was stored.
    async fn put_secret_if_absent(
        &self,
        name: &str,
        sealed: &[u8],
        master_key_id: &str,
        now: i64,
    ) -> StoreResult<bool>;

    /// Stores a named secret row, replacing one of that name.
    async fn put_secret(
        &self,
        name: &str,
        sealed: &[u8],
        master_key_id: &str,
        now: i64,
    ) -> StoreResult<()>;

    /// Sealed rows per master key id (versions, tokens and sealed secrets together).
    async fn sealed_counts(&self) -> StoreResult<Vec<(String, i64)>>;
    /// The master key ids that seal at least one row (versions, tokens, sealed secrets), in
    /// order: what a node must hold to serve. One index seek per id, however many rows, so a
    /// node starts as fast with a million keys as with none.
    async fn sealed_key_ids(&self) -> StoreResult<Vec<String>>;
    /// Up to `limit` sealed rows whose master key id is not `keep` (to re-seal them under it).
    async fn sealed_batch(&self, keep: &str, limit: i64) -> StoreResult<Vec<SealedRow>>;
    /// Replaces one row's sealed value and master key id, if the row still holds exactly
    /// `row.sealed` under `row.master_key_id`; returns whether it did (a row changed or deleted
    /// meanwhile is left alone).
    async fn reseal(
        &self,
        row: &SealedRow,
        sealed: &[u8],
        master_key_id: &str,
    ) -> StoreResult<bool>;

    async fn create_instance(&self, row: &InstanceRow) -> StoreResult<()>;
    async fn get_instance(&self, id: InstanceId) -> StoreResult<Option<InstanceRow>>;
    async fn list_instances(&self) -> StoreResult<Vec<InstanceRow>>;
    /// Deletes an instance with its grants and token; `Conflict` while it has keys not destroyed.
    async fn delete_instance(&self, id: InstanceId) -> StoreResult<()>;

    /// Creates the principal if new, and an API key for it stored by `key_hash`.
    async fn create_api_key(
        &self,
        principal: &PrincipalRow,
        key: &ApiKeyRow,
        key_hash: &[u8],
    ) -> StoreResult<()>;
    async fn find_api_key(&self, key_hash: &[u8]) -> StoreResult<Option<ApiKeyRow>>;
    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyRow>>;
    async fn delete_api_key(&self, id: &str) -> StoreResult<()>;
    /// Whether the API key `id` still exists (tokens minted from a deleted key stop working).
    async fn api_key_exists(&self, id: &str) -> StoreResult<bool>;
    async fn principal_exists(&self, iam_id: &str) -> StoreResult<bool>;

    async fn grant(&self, grant: &GrantRow) -> StoreResult<()>;
    async fn revoke(&self, instance: InstanceId, iam_id: &str, role: Role) -> StoreResult<()>;
    async fn roles_of(&self, instance: InstanceId, iam_id: &str) -> StoreResult<Vec<Role>>;
    async fn list_grants(&self) -> StoreResult<Vec<GrantRow>>;

    /// Inserts a key with its first version, atomically; with a guard, only if the guard's
    /// token is still the instance's token and unexpired (else `Conflict(ConflictKind::ImportToken)`).
    async fn insert_key(
        &self,
        key: &KeyRow,
        version: &VersionRow,
        guard: Option<TokenGuard>,
    ) -> StoreResult<()> {
        self.insert_key_with_aliases(key, version, guard, &[]).await
    }
    /// [`Store::insert_key`] and the key's first aliases, in one transaction: all or nothing
    /// (`Conflict(AlreadyExists)` when an alias is taken).
    async fn insert_key_with_aliases(
        &self,
        key: &KeyRow,
        version: &VersionRow,
        guard: Option<TokenGuard>,
        aliases: &[AliasRow],
    ) -> StoreResult<()>;
    async fn get_key(&self, instance: InstanceId, id: KeyId) -> StoreResult<Option<KeyRow>>;
    async fn list_keys(&self, instance: InstanceId, q: &KeyQuery) -> StoreResult<Vec<KeyRow>>;
    async fn count_keys(&self, instance: InstanceId, q: &KeyQuery) -> StoreResult<i64>;
    /// Writes `key` if its stored `row_version` is still `key.row_version`, and bumps it.
    /// `Conflict(ConflictKind::KeyChanged)` if another writer got there first.
    async fn update_key(&self, key: &KeyRow) -> StoreResult<()>;
    /// Adds a version and updates the key (conditional as in [`Store::update_key`]) atomically;
    /// with a guard, also requires the token to be live as in [`Store::insert_key`].
    async fn rotate_key(
        &self,
        key: &KeyRow,
        version: &VersionRow,
        guard: Option<TokenGuard>,
    ) -> StoreResult<()>;
    /// All versions of a key, newest first.
    async fn versions(&self, instance: InstanceId, key: KeyId) -> StoreResult<Vec<VersionRow>>;

    /// Removes a key for good (versions, aliases, registrations, the row), if its
    /// `row_version` is still `key.row_version`.
    async fn purge_key(&self, key: &KeyRow) -> StoreResult<()>;
    /// Keys (any instance) whose rotation policy is due at `now`, active or deactivated.
    async fn due_rotations(&self, now: i64, limit: i64) -> StoreResult<Vec<KeyRow>>;
    /// Destroyed keys (any instance) deleted before `deleted_before`.
    async fn due_purges(&self, deleted_before: i64, limit: i64) -> StoreResult<Vec<KeyRow>>;

    /// `Conflict` if the alias is taken in the instance.
    async fn create_alias(&self, row: &AliasRow) -> StoreResult<()>;
    /// `NotFound` unless `alias` names `key`.
    async fn delete_alias(&self, instance: InstanceId, alias: &str, key: KeyId) -> StoreResult<()>;
    async fn aliases_of(&self, instance: InstanceId, key: KeyId) -> StoreResult<Vec<AliasRow>>;
    /// The aliases of each of `keys` (of `instance`), in one query for up to 8,192 keys.
    async fn aliases_of_keys(
        &self,
        instance: InstanceId,
        keys: &[KeyId],
    ) -> StoreResult<Vec<AliasRow>>;
    async fn resolve_alias(&self, instance: InstanceId, alias: &str) -> StoreResult<Option<KeyId>>;

    /// `Conflict` if it exists.
    async fn create_key_ring(&self, row: &KeyRingRow) -> StoreResult<()>;
    async fn list_key_rings(&self, instance: InstanceId) -> StoreResult<Vec<KeyRingRow>>;
    /// `NotFound`; `Conflict(ConflictKind::KeyRingHasKeys)` while it holds keys not destroyed, or any
    /// key without `force` (with `force`, destroyed keys move to `default`).
    async fn delete_key_ring(&self, instance: InstanceId, id: &str, force: bool)
        -> StoreResult<()>;

    /// Creates or replaces one instance policy (keeping its creation stamp).
    async fn put_instance_policy(&self, row: &PolicyRow) -> StoreResult<()>;
    async fn instance_policies(&self, instance: InstanceId) -> StoreResult<Vec<PolicyRow>>;

    async fn add_registration(&self, row: &RegistrationRow) -> StoreResult<()>;
    /// Registrations of the instance, or of one key.
    async fn registrations(
        &self,
        instance: InstanceId,
        key: Option<KeyId>,
    ) -> StoreResult<Vec<RegistrationRow>>;

    /// Creates or atomically replaces the instance's import token.
    async fn put_token(&self, row: &TokenRow) -> StoreResult<()>;
    async fn get_token(&self, instance: InstanceId) -> StoreResult<Option<TokenRow>>;
    /// One retrieval: decrements `remaining` iff it is > 0 and the token is unexpired at `now`,
    /// returning the row after the decrement; `None` if nothing was decremented.
    async fn take_token_retrieval(
        &self,
        instance: InstanceId,
        now: i64,
    ) -> StoreResult<Option<TokenRow>>;

    /// Failed secure imports counted against the instance's token `token` (0 when the
    /// instance's token is another one, or there is none).
    /// KMIP adapters (docs/kmip.md). `AlreadyExists` on a name taken in the instance.
    async fn create_kmip_adapter(&self, row: &KmipAdapterRow) -> StoreResult<()>;
    /// A page of the instance's adapters (oldest first) and their total.
    async fn kmip_adapters(
        &self,
        instance: InstanceId,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(Vec<KmipAdapterRow>, i64)>;
    /// An adapter by id, or else by name.
    async fn get_kmip_adapter(
        &self,
        instance: InstanceId,
        id_or_name: &str,
    ) -> StoreResult<Option<KmipAdapterRow>>;
    /// Deletes an adapter with its certificates and destroyed objects;
    /// `Conflict(AdapterHasObjects)` while it holds objects that are not destroyed.
    async fn delete_kmip_adapter(&self, instance: InstanceId, id: &str) -> StoreResult<()>;
    /// `AlreadyExists` for a certificate registered anywhere already, or a name taken on the
    /// adapter; `NotFound` when the adapter is gone.
    async fn create_kmip_cert(&self, row: &KmipCertRow) -> StoreResult<()>;
    async fn kmip_certs(
        &self,
        instance: InstanceId,
        adapter: &str,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(Vec<KmipCertRow>, i64)>;
    async fn get_kmip_cert(
        &self,
        instance: InstanceId,
        adapter: &str,
        id_or_name: &str,
    ) -> StoreResult<Option<KmipCertRow>>;
    async fn delete_kmip_cert(
        &self,
        instance: InstanceId,
        adapter: &str,
        id: &str,
    ) -> StoreResult<()>;
    /// The certificate with this SHA-256 fingerprint, in any instance (the KMIP listener).
    async fn find_kmip_cert(&self, fingerprint: &[u8]) -> StoreResult<Option<KmipCertRow>>;
    /// `NotFound` when the adapter is gone.
    async fn insert_kmip_object(&self, row: &KmipObjectRow) -> StoreResult<()>;
    async fn get_kmip_object(
        &self,
        instance: InstanceId,
        adapter: &str,
        id: &str,
    ) -> StoreResult<Option<KmipObjectRow>>;
    async fn kmip_objects(
        &self,
        instance: InstanceId,
        adapter: &str,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(Vec<KmipObjectRow>, i64)>;
    /// Compare-and-swap on `row_version` (the stored one must be `row.row_version - 1`).
    async fn update_kmip_object(&self, row: &KmipObjectRow) -> StoreResult<()>;

    async fn import_failures(&self, instance: InstanceId, token: TokenId) -> StoreResult<i64>;
    /// Counts one failed secure import against the instance's token `token`, in one
    /// conditional `UPDATE … RETURNING` (exact across nodes); returns the count after it (0 if
    /// the instance's token is no longer `token`: nothing was counted).
    async fn record_import_failure(&self, instance: InstanceId, token: TokenId)
        -> StoreResult<i64>;

    /// Records key usage, in one transaction: each row replaces the stored one for its key and
    /// operation unless that one is newer. Rows of keys that no longer exist are dropped.
    async fn record_key_usage(&self, rows: &[KeyUsageRow]) -> StoreResult<()>;
    /// The usage rows of `keys` in `instance` (any order).
    async fn key_usage(
        &self,
        instance: InstanceId,
        keys: &[KeyId],
    ) -> StoreResult<Vec<KeyUsageRow>>;

    /// Appends audit records in one committed transaction of its own (all or none, in order):
    /// when this returns `Ok`, they are durable.
    async fn append_audit(&self, rows: &[AuditRow]) -> StoreResult<()>;
    /// Audit records matching `q`, by id: oldest first, or newest first with `q.newest_first`.
    async fn audit_records(&self, q: &AuditQuery) -> StoreResult<Vec<AuditEntry>>;
}

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
use keyward_domain::{InstanceId, KeyId, KeyState, Role, TokenId, VersionId};

mod copy;
pub mod rowtag;
mod sql;
pub mod testsuite;
mod timed;
pub use timed::{StoreTimings, TimedStore};

pub use copy::{copy_database, CopyReport, COPY_TABLES};
pub use rowtag::{row_integrity_failures, RowAuth, TAGGED_TABLES};
pub use sql::{
    is_serialization_failure, retry_write, serialization_retries, DatabaseUrl, SqlStore,
    AUDIT_BATCH_ROWS, PG_ACQUIRE_TIMEOUT, PG_MAX_CONNECTIONS, WRITE_ATTEMPTS,
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
        }
    }
}

impl fmt::Display for ConflictKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRow {
    pub id: InstanceId,
    pub name: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalRow {
    pub iam_id: String,
    pub name: String,
    pub created_at: i64,
}

/// An API key's public half; the key itself is stored only as a hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRow {
    pub id: String,
    pub iam_id: String,
    pub name: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRow {
    pub instance_id: InstanceId,
    pub iam_id: String,
    pub role: Role,
    pub created_at: i64,
}

/// A key's metadata. Material lives in [`VersionRow`]s, sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    pub id: KeyId,
    pub instance_id: InstanceId,
    pub name: String,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub state: KeyState,
    pub extractable: bool,
    pub imported: bool,
    pub key_ring_id: String,
    pub expiration_date: Option<i64>,
    pub created_at: i64,
    pub created_by: String,
    pub updated_at: i64,
    pub last_rotate_date: Option<i64>,
    pub deletion_date: Option<i64>,
    pub deleted_by: Option<String>,
    /// When the state last changed (the 30-second rules of enable/restore read it).
    pub state_changed_at: i64,
    pub current_version: VersionId,
    /// Lifecycle attributes that do not need their own column (policies, dual-auth marks),
    /// as a JSON object.
    pub attrs: serde_json::Value,
    /// Optimistic-concurrency counter: every update is conditional on it and increments it.
    pub row_version: i64,
    /// When the rotation policy next makes this key due (None: no policy).
    pub next_rotation_at: Option<i64>,
}

/// One version of a key's material, sealed under the master key.
#[derive(Clone, PartialEq, Eq)]
pub struct VersionRow {
    pub id: VersionId,
    pub key_id: KeyId,
    pub instance_id: InstanceId,
    /// 1 for the first version, +1 per rotation.
    pub seq: i64,
    pub created_at: i64,
    pub sealed: Vec<u8>,
    pub master_key_id: String,
}

impl fmt::Debug for VersionRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VersionRow")
            .field("id", &self.id)
            .field("key_id", &self.key_id)
            .field("seq", &self.seq)
            .field(
                "sealed",
                &format_args!("[{} sealed bytes]", self.sealed.len()),
            )
            .finish_non_exhaustive()
    }
}

/// Which row a sealed value belongs to (its seal context).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealedPlace {
    KeyVersion {
        instance: String,
        key: String,
        version: String,
    },
    ImportToken {
        instance: String,
        token: String,
    },
    Secret {
        name: String,
    },
}

/// A sealed value with where it lives and which master key sealed it.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedRow {
    pub place: SealedPlace,
    pub sealed: Vec<u8>,
    pub master_key_id: String,
}

impl fmt::Debug for SealedRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedRow")
            .field("place", &self.place)
            .field("master_key_id", &self.master_key_id)
            .field(
                "sealed",
                &format_args!("[{} sealed bytes]", self.sealed.len()),
            )
            .finish()
    }
}

/// The one import token of an instance.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub instance_id: InstanceId,
    pub token_id: TokenId,
    pub created_at: i64,
    pub expires_at: i64,
    pub expiration_secs: i64,
    pub max_retrievals: i64,
    pub remaining: i64,
    pub nonce: Vec<u8>,
    pub public_pem: String,
    pub sealed_private: Vec<u8>,
    pub master_key_id: String,
}

impl fmt::Debug for TokenRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRow")
            .field("instance_id", &self.instance_id)
            .field("token_id", &self.token_id)
            .field("expires_at", &self.expires_at)
            .field("remaining", &self.remaining)
            .finish_non_exhaustive()
    }
}

/// An alias of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasRow {
    pub instance_id: InstanceId,
    pub alias: String,
    pub key_id: KeyId,
    pub created_at: i64,
    pub created_by: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRingRow {
    pub instance_id: InstanceId,
    pub id: String,
    pub created_at: i64,
    pub created_by: String,
}

/// One instance policy (`policy_type` → its JSON `policy_data`).
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyRow {
    pub instance_id: InstanceId,
    pub policy_type: String,
    pub data: serde_json::Value,
    pub created_at: i64,
    pub created_by: String,
    pub updated_at: i64,
    pub updated_by: String,
}

/// A registration: a cloud resource protected by a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationRow {
    pub instance_id: InstanceId,
    pub key_id: KeyId,
    pub resource_crn: String,
    pub prevent_key_deletion: bool,
    pub description: Option<String>,
    pub created_at: i64,
    pub created_by: String,
}

/// One audit record as the `audit_log` table holds it: ids, names, outcomes and addresses,
/// never a secret (no key material, plaintext, ciphertext, nonce, token or API key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// `time` as Unix seconds (what time filters and indexes use).
    pub time_unix: i64,
    /// RFC 3339, UTC, exactly as the JSON-lines file writes it.
    pub time: String,
    pub request_id: String,
    pub correlation_id: Option<String>,
    pub principal: String,
    pub instance: String,
    /// Key Protect's activity-tracker name, e.g. `kms.secrets.wrap`.
    pub action: String,
    pub key_id: Option<String>,
    /// `success` or `failure`.
    pub outcome: String,
    /// The reason code of a failure.
    pub reason: Option<String>,
    /// The client's address.
    pub source: Option<String>,
}

/// A stored audit record and the id the database gave it (ids grow in insertion order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: i64,
    pub row: AuditRow,
}

/// Filters of [`Store::audit_records`]: a record must match every filter given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub action: Option<String>,
    pub key_id: Option<String>,
    pub principal: Option<String>,
    pub instance: Option<String>,
    pub outcome: Option<String>,
    pub request_id: Option<String>,
    /// Records at or after this time (Unix seconds).
    pub since: Option<i64>,
    /// Records at or before this time (Unix seconds).
    pub until: Option<i64>,
    /// Records with an id greater than this (to page through a long result).
    pub after_id: Option<i64>,
    /// At most this many records (`None`: all).
    pub limit: Option<i64>,
    /// Newest first (the last records, for `tail`) instead of oldest first.
    pub newest_first: bool,
}

/// What [`Store::row_auth_state`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RowAuthState {
    /// Some row of an authenticated table has a tag.
    pub tagged: bool,
    /// Some row of an authenticated table has no tag.
    pub untagged: bool,
}

/// Sort fields of `GET /keys`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortField {
    Id,
    State,
    Extractable,
    Imported,
    CreationDate,
    LastUpdateDate,
    LastRotateDate,
    DeletionDate,
    ExpirationDate,
}

/// Filters of `GET /keys` and `HEAD /keys`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyQuery {
    /// States to include; empty = the default (every state but Destroyed).
    pub states: Vec<KeyState>,
    pub extractable: Option<bool>,
    pub key_ring_id: Option<String>,
    pub limit: i64,
    pub offset: i64,
    /// (field, descending); empty = by id.
    pub sort: Vec<(SortField, bool)>,
    /// "Now", for state filters and sorts: an Active key whose expiration date has passed
    /// counts as Deactivated (3).
    pub now: i64,
}

impl Default for KeyQuery {
    fn default() -> Self {
        Self {
            states: Vec::new(),
            extractable: None,
            key_ring_id: None,
            limit: 200,
            offset: 0,
            sort: Vec::new(),
            now: 0,
        }
    }
}

/// What the key insert must find still true at commit: a secure import is accepted only while
/// the token it was verified against is still the instance's live, unexpired token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenGuard {
    pub token_id: TokenId,
    pub now: i64,
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
    async fn import_failures(&self, instance: InstanceId, token: TokenId) -> StoreResult<i64>;
    /// Counts one failed secure import against the instance's token `token`, in one
    /// conditional `UPDATE … RETURNING` (exact across nodes); returns the count after it (0 if
    /// the instance's token is no longer `token`: nothing was counted).
    async fn record_import_failure(&self, instance: InstanceId, token: TokenId)
        -> StoreResult<i64>;

    /// Appends audit records in one committed transaction of its own (all or none, in order):
    /// when this returns `Ok`, they are durable.
    async fn append_audit(&self, rows: &[AuditRow]) -> StoreResult<()>;
    /// Audit records matching `q`, by id: oldest first, or newest first with `q.newest_first`.
    async fn audit_records(&self, q: &AuditQuery) -> StoreResult<Vec<AuditEntry>>;
}

//! The rows Keyward stores, as plain data: what the store reads and writes, the service
//! works on and the API renders. The store (`keyward-store`) re-exports them; the API names
//! them from here, so it needs no dependency on the store.
//!
//! Secret columns hold sealed bytes only, and the `Debug` of a row with sealed bytes shows
//! their length, never the bytes.

use std::fmt;

use crate::{InstanceId, KeyId, KeyState, Role, TokenId, VersionId};

mod key_attrs;
mod kmip;
pub use key_attrs::{DeletionAuthAttr, DualAuthAttr, KeyAttrs, RotationAttr};
pub use kmip::{KmipAdapterRow, KmipCertRow, KmipObjectRow};

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
    /// stored as a JSON object (see [`KeyAttrs`]).
    pub attrs: KeyAttrs,
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

/// What a key was used for, as [`KeyUsageRow`] records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UsageOp {
    Wrap,
    Unwrap,
    Rewrap,
    /// The latest of the three (what the listing filter `lastUsed` reads).
    Any,
}

impl UsageOp {
    pub const ALL: [UsageOp; 4] = [
        UsageOp::Wrap,
        UsageOp::Unwrap,
        UsageOp::Rewrap,
        UsageOp::Any,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UsageOp::Wrap => "wrap",
            UsageOp::Unwrap => "unwrap",
            UsageOp::Rewrap => "rewrap",
            UsageOp::Any => "any",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        UsageOp::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

/// When a key was last used for `op`, and by whom (an IAM id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUsageRow {
    pub instance_id: InstanceId,
    pub key_id: KeyId,
    pub op: UsageOp,
    pub at: i64,
    pub by: String,
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

/// Filters of `Store::audit_records` (`keyward-store`): a record must match every filter given.
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
    /// Records to skip before the first returned (only with `limit`).
    pub offset: Option<i64>,
    /// Newest first (the last records, for `tail`) instead of oldest first.
    pub newest_first: bool,
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
    /// The `filter` terms: a key must match every one.
    pub filter: Vec<KeyFilter>,
    /// The `search`: over at most [`KEY_SEARCH_SPACE`] candidate keys (those the other
    /// parameters select), which the caller checks first with a count.
    pub search: Option<KeySearch>,
}

/// The most keys a `search` looks through (Key Protect's limit; past it the service answers
/// `KEY_SEARCH_TOO_BROAD`).
pub const KEY_SEARCH_SPACE: i64 = 5_000;

/// A property of a `filter` term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterProp {
    CreationDate,
    DeletionDate,
    ExpirationDate,
    LastRotateDate,
    LastUpdateDate,
    /// The effective state (expiry counts, as in [`KeyQuery::states`]).
    State,
    Extractable,
    /// When the key was last used for wrap, unwrap or rewrap (a Keyward extension). A key
    /// never used counts as used before every date: `lt`/`lte` match it, `none` matches only
    /// such keys.
    LastUsed,
}

/// The comparison of a `filter` term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterOp {
    /// Equal to one of the values (`none`: the property is absent).
    Eq,
    Lt,
    Lte,
    Gt,
    Gte,
}

/// One `filter` term. `values` empty means `none` (the property is absent); a comparison other
/// than [`FilterOp::Eq`] has exactly one value; booleans are 0 and 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFilter {
    pub prop: FilterProp,
    pub op: FilterOp,
    pub values: Vec<i64>,
}

impl KeyFilter {
    /// Whether a key whose property is `v` matches (`None`: the key has no such property).
    pub fn matches(&self, v: Option<i64>) -> bool {
        match (self.values.as_slice(), v) {
            ([], v) => v.is_none(),
            (_, None) => false,
            (l, Some(v)) => match (self.op, l) {
                (FilterOp::Eq, l) => l.contains(&v),
                (FilterOp::Lt, [x]) => v < *x,
                (FilterOp::Lte, [x]) => v <= *x,
                (FilterOp::Gt, [x]) => v > *x,
                (FilterOp::Gte, [x]) => v >= *x,
                _ => false,
            },
        }
    }
}

/// A parsed `search`: a case-insensitive substring (or, with `exact`, an exact match) of the
/// name or of an alias; a query that is a key id also matches that key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySearch {
    pub query: String,
    pub not: bool,
    pub exact: bool,
    /// Search names (`name:` scope, or no scope).
    pub names: bool,
    /// Search aliases (`alias:` scope, or no scope).
    pub aliases: bool,
    /// `query` lowercased and `query` as a key id, computed once.
    lowered: String,
    id: Option<KeyId>,
}

impl KeySearch {
    pub fn new(query: &str, not: bool, exact: bool, names: bool, aliases: bool) -> Self {
        Self {
            query: query.to_string(),
            not,
            exact,
            names,
            aliases,
            lowered: query.to_lowercase(),
            id: KeyId::parse(query).ok(),
        }
    }

    fn hit(&self, text: &str) -> bool {
        if self.exact {
            text == self.query
        } else {
            text.to_lowercase().contains(&self.lowered)
        }
    }

    /// Whether the key `id` named `name` with `aliases` matches.
    pub fn matches(&self, id: KeyId, name: &str, aliases: &[String]) -> bool {
        let found = self.id == Some(id)
            || (self.names && self.hit(name))
            || (self.aliases && aliases.iter().any(|a| self.hit(a)));
        found != self.not
    }
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
            filter: Vec::new(),
            search: None,
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

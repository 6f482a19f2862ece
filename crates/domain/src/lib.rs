//! Keyward's vocabulary: typed identifiers, key states, roles and the actions they permit,
//! and the clock every time rule goes through.
//!
//! What must hold here:
//! - Nothing in this crate knows about HTTP, SQL or cryptography.
//! - Ids are parsed once at the edge ([`KeyId::parse`] and friends) and passed inward typed.
//! - Every time-dependent rule reads time from a [`Clock`], so tests move time instead of sleeping.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use time::OffsetDateTime;
use uuid::Uuid;

pub mod bounded;
mod ids;
pub mod rows;
pub use ids::{InstanceId, KeyId, TokenId, VersionId};

/// Errors in parsing domain values at the edge.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DomainError {
    #[error("not a valid UUID")]
    InvalidUuid,
    #[error("unknown role `{0}`")]
    UnknownRole(String),
    #[error("unknown key state `{0}`")]
    UnknownState(String),
}

/// Key Protect key states (there is no state 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyState {
    PreActivation = 0,
    Active = 1,
    Suspended = 2,
    Deactivated = 3,
    Destroyed = 5,
}

impl KeyState {
    pub fn code(self) -> i64 {
        self as i64
    }

    pub fn from_code(code: i64) -> Option<Self> {
        match code {
            0 => Some(Self::PreActivation),
            1 => Some(Self::Active),
            2 => Some(Self::Suspended),
            3 => Some(Self::Deactivated),
            5 => Some(Self::Destroyed),
            _ => None,
        }
    }
}

/// IAM service roles of Key Protect, held per instance. Reader ⊂ ReaderPlus ⊂ Writer ⊂ Manager;
/// KeyPurge stands alone and is part of no other role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Reader,
    ReaderPlus,
    Writer,
    Manager,
    KeyPurge,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Reader,
        Role::ReaderPlus,
        Role::Writer,
        Role::Manager,
        Role::KeyPurge,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "Reader",
            Role::ReaderPlus => "ReaderPlus",
            Role::Writer => "Writer",
            Role::Manager => "Manager",
            Role::KeyPurge => "KeyPurge",
        }
    }

    /// Position in the additive chain Reader ⊂ ReaderPlus ⊂ Writer ⊂ Manager; `None` for KeyPurge.
    fn level(self) -> Option<u8> {
        match self {
            Role::Reader => Some(1),
            Role::ReaderPlus => Some(2),
            Role::Writer => Some(3),
            Role::Manager => Some(4),
            Role::KeyPurge => None,
        }
    }

    /// Whether holding `self` grants everything `needed` grants.
    pub fn covers(self, needed: Role) -> bool {
        match (self.level(), needed.level()) {
            (Some(have), Some(need)) => have >= need,
            (None, None) => true,
            _ => false,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| DomainError::UnknownRole(s.to_string()))
    }
}

/// Every operation a caller can ask for. The role each needs is decided in exactly one
/// place, [`Action::required_role`], following Key Protect's IAM table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    ListKeys,
    HeadKeys,
    GetKeyMetadata,
    /// GET of a root key (no material is ever returned for root keys).
    GetRootKey,
    /// GET of a standard key, which returns its material.
    GetStandardKeyPayload,
    ListVersions,
    Wrap,
    Unwrap,
    Rewrap,
    CreateKey,
    ImportKey,
    Rotate,
    SetKeyForDeletion,
    UnsetKeyForDeletion,
    Sync,
    CreateImportToken,
    GetImportToken,
    Disable,
    Enable,
    DeleteKey,
    RestoreKey,
    PatchKey,
    Purge,
    ReadKeyPolicies,
    WriteKeyPolicies,
    ReadInstancePolicies,
    WriteInstancePolicies,
    ListKeyRings,
    CreateKeyRing,
    DeleteKeyRing,
    CreateAlias,
    DeleteAlias,
    ListRegistrations,
    /// KMIP adapters, their client certificates and objects (docs/kmip.md).
    CreateKmipAdapter,
    ListKmipAdapters,
    GetKmipAdapter,
    DeleteKmipAdapter,
    CreateKmipCert,
    ListKmipCerts,
    GetKmipCert,
    DeleteKmipCert,
    ListKmipObjects,
    GetKmipObject,
    DeleteKmipObject,
    /// An operation of a KMIP client (authenticated by its certificate, docs/kmip.md).
    KmipOperation,
}

impl Action {
    /// The least role that permits this action.
    pub fn required_role(self) -> Role {
        use Action::*;
        match self {
            ListKeys | HeadKeys | GetKeyMetadata | GetRootKey | ListVersions | Wrap | Unwrap
            | Rewrap | ListKeyRings | ListRegistrations => Role::Reader,
            GetStandardKeyPayload => Role::ReaderPlus,
            CreateKey | ImportKey | Rotate | SetKeyForDeletion | UnsetKeyForDeletion | Sync
            | CreateImportToken | GetImportToken | CreateKeyRing | CreateAlias | DeleteAlias => {
                Role::Writer
            }
            Disable
            | Enable
            | DeleteKey
            | RestoreKey
            | PatchKey
            | ReadKeyPolicies
            | WriteKeyPolicies
            | ReadInstancePolicies
            | WriteInstancePolicies
            | DeleteKeyRing
            | ListKmipAdapters
            | GetKmipAdapter
            | ListKmipCerts
            | GetKmipCert
            | ListKmipObjects
            | GetKmipObject
            | CreateKmipAdapter
            | DeleteKmipAdapter
            | CreateKmipCert
            | DeleteKmipCert
            | DeleteKmipObject => Role::Manager,
            // Never checked against a role: a KMIP client is its registered certificate.
            KmipOperation => Role::Manager,
            Purge => Role::KeyPurge,
        }
    }

    /// Key Protect's activity-tracker action name.
    pub fn audit_name(self) -> &'static str {
        use Action::*;
        match self {
            ListKeys => "kms.secrets.list",
            HeadKeys => "kms.secrets.head",
            GetKeyMetadata => "kms.secrets.readmetadata",
            GetRootKey | GetStandardKeyPayload => "kms.secrets.read",
            ListVersions => "kms.secrets.listkeyversions",
            Wrap => "kms.secrets.wrap",
            Unwrap => "kms.secrets.unwrap",
            Rewrap => "kms.secrets.rewrap",
            CreateKey | ImportKey => "kms.secrets.create",
            Rotate => "kms.secrets.rotate",
            SetKeyForDeletion => "kms.secrets.setkeyfordeletion",
            UnsetKeyForDeletion => "kms.secrets.unsetkeyfordeletion",
            Sync => "kms.secrets.sync",
            CreateImportToken => "kms.importtoken.create",
            GetImportToken => "kms.importtoken.read",
            Disable => "kms.secrets.disable",
            Enable => "kms.secrets.enable",
            DeleteKey => "kms.secrets.delete",
            RestoreKey => "kms.secrets.restore",
            PatchKey => "kms.secrets.patch",
            Purge => "kms.secrets.purge",
            ReadKeyPolicies => "kms.policies.read",
            WriteKeyPolicies => "kms.policies.write",
            ReadInstancePolicies => "kms.instancepolicies.read",
            WriteInstancePolicies => "kms.instancepolicies.write",
            ListKeyRings => "kms.keyrings.list",
            CreateKeyRing => "kms.keyrings.create",
            DeleteKeyRing => "kms.keyrings.delete",
            CreateAlias => "kms.secrets.createalias",
            DeleteAlias => "kms.secrets.deletealias",
            ListRegistrations => "kms.registrations.list",
            CreateKmipAdapter | CreateKmipCert => "kms.kmip-management.create",
            ListKmipAdapters | ListKmipCerts | ListKmipObjects => "kms.kmip-management.list",
            GetKmipAdapter | GetKmipCert | GetKmipObject => "kms.kmip-management.read",
            DeleteKmipAdapter | DeleteKmipCert | DeleteKmipObject => "kms.kmip-management.delete",
            KmipOperation => "kms.kmip.operation",
        }
    }
}

/// The source of "now" for every time rule (token expiry, 30 s rules, rotation intervals).
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> OffsetDateTime;

    /// Whole seconds since the Unix epoch; the unit stored in the database.
    fn now_unix(&self) -> i64 {
        self.now().unix_timestamp()
    }
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that only moves when told to: for tests of time rules without sleeping.
#[derive(Debug, Clone)]
pub struct ManualClock {
    unix: Arc<AtomicI64>,
}

impl ManualClock {
    pub fn new(start_unix: i64) -> Self {
        Self {
            unix: Arc::new(AtomicI64::new(start_unix)),
        }
    }

    pub fn advance(&self, secs: i64) {
        self.unix.fetch_add(secs, Ordering::SeqCst);
    }

    pub fn set(&self, unix: i64) {
        self.unix.store(unix, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(self.unix.load(Ordering::SeqCst))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

/// Formats a Unix timestamp the way Key Protect does: RFC 3339, UTC, second precision.
pub fn format_time(unix: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp(unix).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    t.format(&fmt).unwrap_or_default()
}

/// Parses an RFC 3339 timestamp into Unix seconds.
pub fn parse_time(s: &str) -> Option<i64> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// A new random v4 UUID.
pub fn new_uuid() -> Uuid {
    Uuid::new_v4()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_additive_except_purge() {
        assert!(Role::Manager.covers(Role::Reader));
        assert!(Role::Writer.covers(Role::ReaderPlus));
        assert!(!Role::Reader.covers(Role::ReaderPlus));
        assert!(!Role::Manager.covers(Role::KeyPurge));
        assert!(!Role::KeyPurge.covers(Role::Reader));
        assert!(Role::KeyPurge.covers(Role::KeyPurge));
    }

    #[test]
    fn role_parse_round_trip() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
        }
        assert!("Admin".parse::<Role>().is_err());
    }

    #[test]
    fn time_format_is_second_precision_utc() {
        assert_eq!(format_time(1_584_000_000), "2020-03-12T08:00:00Z");
        assert_eq!(parse_time("2020-03-12T08:00:00Z"), Some(1_584_000_000));
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(100);
        assert_eq!(c.now_unix(), 100);
        c.advance(30);
        assert_eq!(c.now_unix(), 130);
    }

    #[test]
    fn states_round_trip_and_four_does_not_exist() {
        for s in [
            KeyState::PreActivation,
            KeyState::Active,
            KeyState::Suspended,
            KeyState::Deactivated,
            KeyState::Destroyed,
        ] {
            assert_eq!(KeyState::from_code(s.code()), Some(s));
        }
        assert_eq!(KeyState::from_code(4), None);
    }
}

//! What the key operations of `keys.rs`, `lifecycle.rs`, `rings.rs`, `envelope.rs` and
//! `listing.rs` share about a key row: the view the API shows ([`KeyInfo`]), its state at a
//! time, its policies and attributes, and the syntax of aliases. Those modules import this one
//! and not each other.

use keyward_crypto::SecretBytes;
use keyward_domain::rows::{DualAuthAttr, KeyRow, RotationAttr};
use keyward_domain::KeyState;

use crate::{ServiceError, ServiceResult};

pub const DAY: i64 = 86_400;
/// A rotation-policy month.
pub const MONTH: i64 = 30 * DAY;

/// `POST /keys/{id}/actions/rotate`.
#[derive(Debug, Default, Clone)]
pub struct RotateRequest {
    pub payload: Option<String>,
    pub encrypted_nonce: Option<String>,
    pub iv: Option<String>,
    pub encryption_algorithm: Option<String>,
}

/// A key as the API shows it.
#[derive(Debug)]
pub struct KeyInfo {
    pub row: KeyRow,
    pub crn: String,
    /// The state as of now (an Active key past its expiration date shows Deactivated).
    pub state: KeyState,
    pub version_created_at: i64,
    pub bits: i64,
    /// Material of a standard key, only where the API returns it.
    pub payload: Option<SecretBytes>,
    /// Aliases (filled on single-key responses).
    pub aliases: Vec<String>,
    /// When a pending `setKeyForDeletion` authorisation expires (None: none pending).
    pub deletion_auth_expires: Option<i64>,
}

/// The state of `row` at `now`: expiry turns Active into Deactivated.
pub fn effective_state(row: &KeyRow, now: i64) -> KeyState {
    match (row.state, row.expiration_date) {
        (KeyState::Active, Some(exp)) if exp <= now => KeyState::Deactivated,
        (s, _) => s,
    }
}

/// 2–90 characters of `[A-Za-z0-9_-]`.
pub fn alias_syntax_ok(s: &str) -> bool {
    (2..=90).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub(crate) fn dual_auth_enabled(row: &KeyRow) -> bool {
    row.attrs.dual_auth_enabled()
}

pub(crate) fn rotation_interval(row: &KeyRow) -> Option<i64> {
    let r = row.attrs.rotation.as_ref()?;
    if r.enabled != Some(true) {
        return None;
    }
    r.interval_month
}

/// When the key next falls due under its rotation policy.
pub(crate) fn next_rotation(row: &KeyRow) -> Option<i64> {
    rotation_interval(row).map(|m| row.last_rotate_date.unwrap_or(row.created_at) + m * MONTH)
}

/// The `bits` attribute of `len` bytes of material.
pub(crate) fn bits_of(len: usize) -> i64 {
    i64::try_from(len.saturating_mul(8)).unwrap_or(i64::MAX)
}

/// Applies key policy changes to a row (shared by PUT policies and create-with-overrides).
pub(crate) fn apply_key_policies(
    row: &mut KeyRow,
    rotation: Option<(bool, Option<i64>)>,
    dual: Option<bool>,
    by: &str,
    now: i64,
) -> ServiceResult<()> {
    if let Some((enabled, interval)) = rotation {
        if row.extractable || row.imported {
            return Err(ServiceError::field(
                "rotation",
                "A rotation policy can be set only on root keys that were not imported",
            ));
        }
        // Unknown keys of the old policy (written by another version) are kept.
        let old = row.attrs.rotation.take().unwrap_or_default();
        row.attrs.rotation = Some(RotationAttr {
            enabled: Some(enabled),
            interval_month: Some(interval.or(old.interval_month).unwrap_or(1)),
            creation_date: Some(old.creation_date.unwrap_or(now)),
            created_by: Some(old.created_by.unwrap_or_else(|| by.to_string())),
            last_update_date: Some(now),
            updated_by: Some(by.to_string()),
            other: old.other,
        });
        row.next_rotation_at = next_rotation(row);
    }
    if let Some(enabled) = dual {
        if !enabled && dual_auth_enabled(row) {
            return Err(ServiceError::field(
                "dualAuthDelete",
                "A dual authorization policy cannot be disabled once it is enabled",
            ));
        }
        let old = row.attrs.dual_auth_delete.take().unwrap_or_default();
        row.attrs.dual_auth_delete = Some(DualAuthAttr {
            enabled: Some(enabled),
            creation_date: Some(old.creation_date.unwrap_or(now)),
            created_by: Some(by.to_string()),
            last_update_date: Some(now),
            updated_by: Some(by.to_string()),
            other: old.other,
        });
    }
    Ok(())
}

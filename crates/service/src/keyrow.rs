//! What the key operations of `keys.rs`, `lifecycle.rs`, `rings.rs`, `envelope.rs` and
//! `listing.rs` share about a key row: the view the API shows ([`KeyInfo`]), its state at a
//! time, its policies and attributes, and the syntax of aliases. Those modules import this one
//! and not each other.

use keyward_crypto::SecretBytes;
use keyward_domain::rows::KeyRow;
use keyward_domain::KeyState;
use serde_json::{json, Value};

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
    row.attrs
        .pointer("/dualAuthDelete/enabled")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

pub(crate) fn rotation_interval(row: &KeyRow) -> Option<i64> {
    let r = row.attrs.get("rotation")?;
    if r.get("enabled").and_then(Value::as_bool) != Some(true) {
        return None;
    }
    r.get("interval_month").and_then(Value::as_i64)
}

/// When the key next falls due under its rotation policy.
pub(crate) fn next_rotation(row: &KeyRow) -> Option<i64> {
    rotation_interval(row).map(|m| row.last_rotate_date.unwrap_or(row.created_at) + m * MONTH)
}

/// Sets one attribute of the key (making `attrs` an object first if it somehow is not).
pub(crate) fn set_attr(row: &mut KeyRow, name: &str, value: Value) {
    if !row.attrs.is_object() {
        row.attrs = json!({});
    }
    if let Some(m) = row.attrs.as_object_mut() {
        m.insert(name.into(), value);
    }
}

/// Removes one attribute of the key (making `attrs` an object first if it somehow is not).
pub(crate) fn remove_attr(row: &mut KeyRow, name: &str) {
    if !row.attrs.is_object() {
        row.attrs = json!({});
    }
    if let Some(m) = row.attrs.as_object_mut() {
        m.remove(name);
    }
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
        let old = row.attrs.get("rotation").cloned();
        let interval = interval
            .or_else(|| {
                old.as_ref()
                    .and_then(|o| o.get("interval_month"))
                    .and_then(Value::as_i64)
            })
            .unwrap_or(1);
        let created = old
            .as_ref()
            .and_then(|o| o.get("creationDate").cloned())
            .unwrap_or(json!(now));
        let created_by = old
            .as_ref()
            .and_then(|o| o.get("createdBy").cloned())
            .unwrap_or(json!(by));
        set_attr(
            row,
            "rotation",
            json!({"enabled": enabled, "interval_month": interval, "creationDate": created,
                   "createdBy": created_by, "lastUpdateDate": now, "updatedBy": by}),
        );
        row.next_rotation_at = next_rotation(row);
    }
    if let Some(enabled) = dual {
        if !enabled && dual_auth_enabled(row) {
            return Err(ServiceError::field(
                "dualAuthDelete",
                "A dual authorization policy cannot be disabled once it is enabled",
            ));
        }
        let old = row.attrs.get("dualAuthDelete").cloned();
        let created = old
            .as_ref()
            .and_then(|o| o.get("creationDate").cloned())
            .unwrap_or(json!(now));
        set_attr(
            row,
            "dualAuthDelete",
            json!({"enabled": enabled, "creationDate": created, "createdBy": by,
                   "lastUpdateDate": now, "updatedBy": by}),
        );
    }
    Ok(())
}

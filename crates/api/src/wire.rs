//! Service types → `keyward-wire` response types.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use keyward_domain::rows::KeyRow;
use keyward_domain::{format_time, KeyState};
use keyward_service::keys::KeyInfo;
use keyward_service::tokens::TokenInfo;
use keyward_wire::resp;

pub use keyward_wire::KEY_TYPE;

/// The key attributes the wire shows (read from `KeyRow.attrs` here and nowhere else).
pub struct KeyAttrs {
    /// `dualAuthDelete.enabled` of the key's policy.
    pub dual_auth_delete: bool,
    /// The key's rotation policy, `(enabled, interval_month)`, when it has one.
    pub rotation: Option<(Option<bool>, Option<i64>)>,
}

pub fn key_attrs(row: &KeyRow) -> KeyAttrs {
    KeyAttrs {
        dual_auth_delete: row.attrs.dual_auth_enabled(),
        rotation: row
            .attrs
            .rotation
            .as_ref()
            .map(|rot| (rot.enabled, rot.interval_month)),
    }
}

/// One key resource. `payload` only for standard keys, and only where the caller asked for it.
pub fn key(info: &KeyInfo) -> resp::Key {
    let r = &info.row;
    let attrs = key_attrs(r);
    let deleted = r.deletion_date;
    let at = |offset: i64| deleted.map(|t| format_time(t + offset));
    resp::Key {
        algorithm_bit_size: info.bits,
        algorithm_metadata: resp::AlgorithmMetadata {
            bit_length: info.bits.to_string(),
            mode: "Deprecated".into(),
        },
        algorithm_mode: "Deprecated".into(),
        algorithm_type: "AES".into(),
        aliases: (!info.aliases.is_empty()).then(|| info.aliases.clone()),
        created_by: r.created_by.clone(),
        creation_date: format_time(r.created_at),
        crn: info.crn.clone(),
        deleted: r.state == KeyState::Destroyed,
        deleted_by: deleted.and(r.deleted_by.clone()),
        deletion_date: at(0),
        description: r.description.clone(),
        dual_auth_delete: resp::KeyDualAuthDelete {
            auth_expiration: if attrs.dual_auth_delete {
                info.deletion_auth_expires.map(format_time)
            } else {
                None
            },
            enabled: attrs.dual_auth_delete,
            key_set_for_deletion: attrs
                .dual_auth_delete
                .then_some(info.deletion_auth_expires.is_some()),
        },
        expiration_date: r.expiration_date.map(format_time),
        extractable: r.extractable,
        id: r.id.to_string(),
        imported: r.imported,
        key_ring_id: r.key_ring_id.clone(),
        key_version: resp::KeyVersionRef {
            creation_date: Some(format_time(info.version_created_at)),
            id: r.current_version.to_string(),
        },
        last_rotate_date: r.last_rotate_date.map(format_time),
        last_update_date: format_time(r.updated_at),
        name: r.name.clone(),
        nonactive_state_reason: (info.state != KeyState::Active).then_some(match info.state {
            KeyState::Deactivated => 1,
            KeyState::Suspended => 2,
            _ => 0,
        }),
        payload: info.payload.as_ref().map(|p| B64.encode(p.expose())),
        purge_allowed: deleted.map(|_| true),
        purge_allowed_from: at(4 * 3_600),
        purge_scheduled_on: at(90 * 86_400),
        restore_allowed: deleted.map(|_| true),
        restore_expiration_date: at(30 * 86_400),
        rotation: attrs
            .rotation
            .map(|(enabled, interval_month)| resp::RotationPolicy {
                enabled,
                interval_month,
            }),
        state: info.state.code(),
        tags: (!r.tags.is_empty()).then(|| r.tags.clone()),
        kind: KEY_TYPE.into(),
        usage: None,
    }
}

/// A key's usage on the wire.
pub fn usage(u: &keyward_service::usage::KeyUsage) -> resp::KeyUsage {
    let one = |l: &Option<keyward_service::usage::LastUse>| {
        l.as_ref().map(|l| resp::LastUse {
            last_used_date: format_time(l.at),
            last_used_by: l.by.to_string(),
        })
    };
    resp::KeyUsage {
        last_used_date: u.last().map(|l| format_time(l.at)),
        wrap: one(&u.wrap),
        unwrap: one(&u.unwrap),
        rewrap: one(&u.rewrap),
    }
}

/// A collection of keys.
pub fn keys<'a>(infos: impl IntoIterator<Item = &'a KeyInfo>) -> resp::KeyCollection {
    resp::KeyCollection::new(KEY_TYPE, infos.into_iter().map(key).collect())
}

/// The identifiers of keys (`Prefer: return=minimal` on create).
pub fn key_ids<'a>(ids: impl IntoIterator<Item = &'a String>) -> resp::KeyIdCollection {
    resp::KeyIdCollection::new(
        KEY_TYPE,
        ids.into_iter()
            .map(|id| resp::KeyId {
                kind: KEY_TYPE.to_string(),
                id: id.clone(),
            })
            .collect(),
    )
}

pub fn token(t: &TokenInfo) -> resp::ImportToken {
    let secret = match (&t.payload, &t.nonce) {
        (Some(p), Some(n)) => Some((p.clone(), n.clone())),
        _ => None,
    };
    resp::ImportToken {
        creation_date: format_time(t.created_at),
        expiration: t.expiration_secs,
        expiration_date: format_time(t.expires_at),
        max_allowed_retrievals: t.max_retrievals,
        nonce: secret.as_ref().map(|(_, n)| n.clone()),
        payload: secret.map(|(p, _)| p),
        remaining_retrievals: t.remaining,
        algorithm: t.algorithm.map(str::to_string),
        id: t.id.clone(),
    }
}

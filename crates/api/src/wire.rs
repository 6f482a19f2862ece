//! Key Protect wire shapes of responses.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use keyward_domain::{format_time, KeyState};
use keyward_service::keys::KeyInfo;
use keyward_service::tokens::TokenInfo;
use serde_json::{json, Map, Value};

pub const KEY_TYPE: &str = "application/vnd.ibm.kms.key+json";

/// One key resource. `payload` only for standard keys, and only where the caller asked for it.
pub fn key_json(info: &KeyInfo) -> Value {
    let r = &info.row;
    let mut m = Map::new();
    m.insert("type".into(), json!(KEY_TYPE));
    m.insert("id".into(), json!(r.id.to_string()));
    m.insert("name".into(), json!(r.name));
    if let Some(d) = &r.description {
        m.insert("description".into(), json!(d));
    }
    if !r.tags.is_empty() {
        m.insert("tags".into(), json!(r.tags));
    }
    m.insert("state".into(), json!(info.state.code()));
    if info.state != KeyState::Active {
        m.insert(
            "nonactiveStateReason".into(),
            json!(match info.state {
                KeyState::Deactivated => 1,
                KeyState::Suspended => 2,
                _ => 0,
            }),
        );
    }
    if let Some(e) = r.expiration_date {
        m.insert("expirationDate".into(), json!(format_time(e)));
    }
    m.insert("extractable".into(), json!(r.extractable));
    m.insert("crn".into(), json!(info.crn));
    m.insert("imported".into(), json!(r.imported));
    m.insert("keyRingID".into(), json!(r.key_ring_id));
    m.insert("creationDate".into(), json!(format_time(r.created_at)));
    m.insert("createdBy".into(), json!(r.created_by));
    m.insert("lastUpdateDate".into(), json!(format_time(r.updated_at)));
    if let Some(t) = r.last_rotate_date {
        m.insert("lastRotateDate".into(), json!(format_time(t)));
    }
    m.insert(
        "keyVersion".into(),
        json!({"id": r.current_version.to_string(), "creationDate": format_time(info.version_created_at)}),
    );
    m.insert("algorithmType".into(), json!("AES"));
    m.insert("algorithmBitSize".into(), json!(info.bits));
    m.insert("algorithmMode".into(), json!("Deprecated"));
    m.insert(
        "algorithmMetadata".into(),
        json!({"bitLength": info.bits.to_string(), "mode": "Deprecated"}),
    );
    let dual = r
        .attrs
        .pointer("/dualAuthDelete/enabled")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut d = json!({"enabled": dual});
    if dual {
        d["keySetForDeletion"] = json!(info.deletion_auth_expires.is_some());
        if let Some(exp) = info.deletion_auth_expires {
            d["authExpiration"] = json!(format_time(exp));
        }
    }
    m.insert("dualAuthDelete".into(), d);
    if let Some(rot) = r.attrs.get("rotation") {
        m.insert(
            "rotation".into(),
            json!({"enabled": rot.get("enabled"), "interval_month": rot.get("interval_month")}),
        );
    }
    if !info.aliases.is_empty() {
        m.insert("aliases".into(), json!(info.aliases));
    }
    m.insert("deleted".into(), json!(r.state == KeyState::Destroyed));
    if let Some(t) = r.deletion_date {
        m.insert("deletionDate".into(), json!(format_time(t)));
        if let Some(by) = &r.deleted_by {
            m.insert("deletedBy".into(), json!(by));
        }
        m.insert(
            "restoreExpirationDate".into(),
            json!(format_time(t + 30 * 86_400)),
        );
        m.insert("restoreAllowed".into(), json!(true));
        m.insert("purgeAllowed".into(), json!(true));
        m.insert("purgeAllowedFrom".into(), json!(format_time(t + 4 * 3_600)));
        m.insert(
            "purgeScheduledOn".into(),
            json!(format_time(t + 90 * 86_400)),
        );
    }
    if let Some(p) = &info.payload {
        m.insert("payload".into(), json!(B64.encode(p.expose())));
    }
    Value::Object(m)
}

pub fn collection(collection_type: &str, resources: Vec<Value>) -> Value {
    json!({
        "metadata": {"collectionType": collection_type, "collectionTotal": resources.len()},
        "resources": resources,
    })
}

pub fn token_json(t: &TokenInfo) -> Value {
    let mut v = json!({
        "creationDate": format_time(t.created_at),
        "expirationDate": format_time(t.expires_at),
        "expiration": t.expiration_secs,
        "maxAllowedRetrievals": t.max_retrievals,
        "remainingRetrievals": t.remaining,
    });
    if let (Some(p), Some(n)) = (&t.payload, &t.nonce) {
        v["payload"] = json!(p);
        v["nonce"] = json!(n);
    }
    v
}

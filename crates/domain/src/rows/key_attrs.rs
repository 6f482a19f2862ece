//! The typed attributes of a key row ([`KeyAttrs`], `KeyRow.attrs`), stored as JSON text in the
//! `keys.attrs` column.
//!
//! The text is covered by the row's authentication tag (`crates/store/src/rowtag.rs`), which the
//! store recomputes from the parsed row on every read, so `serialize(parse(text)) == text` must
//! hold for every text already stored. It does, for any JSON object: [`KeyAttrs`] serialises
//! through a `serde_json::Value` (whose objects keep their keys sorted, as the untyped column
//! always did), absent optionals are omitted, unknown keys are kept in `other`, and a known key
//! whose stored value does not read back to the same JSON (an unexpected type, a `null`) is
//! kept verbatim in `other` too and reads as absent.

use serde::de::{DeserializeOwned, Deserializer};
use serde::ser::{Error as _, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

const BITS: &str = "bits";
const ROTATION: &str = "rotation";
const DUAL_AUTH_DELETE: &str = "dualAuthDelete";
const DELETION_AUTH: &str = "deletionAuth";

/// Lifecycle attributes of a key that do not need their own column.
///
/// Nested values serialise through `serde_json::to_value` here (sorted keys); serialise a
/// `KeyAttrs`, not its parts, to get the stored text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyAttrs {
    /// The size of the current material in bits (`bits`).
    pub bits: Option<i64>,
    /// The rotation policy (`rotation`).
    pub rotation: Option<RotationAttr>,
    /// The dual-authorization-delete policy (`dualAuthDelete`).
    pub dual_auth_delete: Option<DualAuthAttr>,
    /// A pending `setKeyForDeletion` authorisation (`deletionAuth`).
    pub deletion_auth: Option<DeletionAuthAttr>,
    /// Every other key of the stored object, kept as it was read (written by another version).
    pub other: Map<String, Value>,
}

/// `attrs.rotation`: a key's rotation policy and its metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationAttr {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_month: Option<i64>,
    #[serde(
        rename = "creationDate",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub creation_date: Option<i64>,
    #[serde(rename = "createdBy", default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(
        rename = "lastUpdateDate",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub last_update_date: Option<i64>,
    #[serde(rename = "updatedBy", default, skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `attrs.dualAuthDelete`: a key's dual-authorization-delete policy and its metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DualAuthAttr {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(
        rename = "creationDate",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub creation_date: Option<i64>,
    #[serde(rename = "createdBy", default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(
        rename = "lastUpdateDate",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub last_update_date: Option<i64>,
    #[serde(rename = "updatedBy", default, skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `attrs.deletionAuth`: the first authorisation of a dual-auth delete.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletionAuthAttr {
    /// Who set the key for deletion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// When (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<i64>,
    /// When the authorisation lapses (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl KeyAttrs {
    /// The attributes of a new key with `bits` of material.
    pub fn with_bits(bits: i64) -> KeyAttrs {
        KeyAttrs {
            bits: Some(bits),
            ..KeyAttrs::default()
        }
    }

    /// `dualAuthDelete.enabled` (false when there is no policy).
    pub fn dual_auth_enabled(&self) -> bool {
        self.dual_auth_delete
            .as_ref()
            .and_then(|d| d.enabled)
            .unwrap_or(false)
    }

    /// The stored JSON object: `other`, with each present typed field written over it.
    pub fn to_json(&self) -> Result<Value, serde_json::Error> {
        let mut m = self.other.clone();
        put(&mut m, BITS, &self.bits)?;
        put(&mut m, ROTATION, &self.rotation)?;
        put(&mut m, DUAL_AUTH_DELETE, &self.dual_auth_delete)?;
        put(&mut m, DELETION_AUTH, &self.deletion_auth)?;
        Ok(Value::Object(m))
    }
}

fn put<T: Serialize>(
    m: &mut Map<String, Value>,
    key: &str,
    v: &Option<T>,
) -> Result<(), serde_json::Error> {
    if let Some(v) = v {
        m.insert(key.to_string(), serde_json::to_value(v)?);
    }
    Ok(())
}

/// Moves `key` out of `m` as a `T` when its value reads as one and writes back identically;
/// leaves it in `m` otherwise.
fn take<T: Serialize + DeserializeOwned>(m: &mut Map<String, Value>, key: &str) -> Option<T> {
    let stored = m.get(key)?;
    let typed: T = serde_json::from_value(stored.clone()).ok()?;
    if serde_json::to_value(&typed).ok()? != *stored {
        return None;
    }
    m.remove(key);
    Some(typed)
}

impl Serialize for KeyAttrs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().map_err(S::Error::custom)?.serialize(s)
    }
}

impl<'de> Deserialize<'de> for KeyAttrs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<KeyAttrs, D::Error> {
        let mut other = Map::deserialize(d)?;
        Ok(KeyAttrs {
            bits: take(&mut other, BITS),
            rotation: take(&mut other, ROTATION),
            dual_auth_delete: take(&mut other, DUAL_AUTH_DELETE),
            deletion_auth: take(&mut other, DELETION_AUTH),
            other,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// What the service writes (`crates/service/src/keys.rs`, `keyrow.rs`, `lifecycle.rs`):
    /// a new key, a rotation policy, a dual-auth policy, a key set for deletion, both policies
    /// and a pending authorisation, plus texts from other versions.
    const STORED: &[&str] = &[
        r#"{}"#,
        r#"{"bits":256}"#,
        r#"{"bits":128}"#,
        r#"{"bits":256,"rotation":{"createdBy":"IBMid-1","creationDate":1700000000,"enabled":true,"interval_month":3,"lastUpdateDate":1700000000,"updatedBy":"IBMid-1"}}"#,
        r#"{"bits":256,"rotation":{"createdBy":"IBMid-1","creationDate":1700000000,"enabled":false,"interval_month":1,"lastUpdateDate":1700000500,"updatedBy":"IBMid-2"}}"#,
        r#"{"bits":256,"dualAuthDelete":{"createdBy":"IBMid-1","creationDate":1700000000,"enabled":true,"lastUpdateDate":1700000000,"updatedBy":"IBMid-1"}}"#,
        r#"{"bits":256,"deletionAuth":{"at":1700000100,"by":"IBMid-2","expires":1700604900},"dualAuthDelete":{"createdBy":"IBMid-1","creationDate":1700000000,"enabled":true,"lastUpdateDate":1700000000,"updatedBy":"IBMid-1"}}"#,
        r#"{"bits":256,"deletionAuth":{"at":1700000100,"by":"IBMid-2","expires":1700604900},"dualAuthDelete":{"createdBy":"IBMid-1","creationDate":1700000000,"enabled":true,"lastUpdateDate":1700000000,"updatedBy":"IBMid-1"},"rotation":{"createdBy":"IBMid-1","creationDate":1700000000,"enabled":true,"interval_month":12,"lastUpdateDate":1700000000,"updatedBy":"IBMid-1"}}"#,
        // Keys of other versions, at the top and inside the policies.
        r#"{"a":[1,2.5,"x"],"bits":256,"policies":{},"rotation":{"enabled":true,"interval_month":2,"zz":{"b":1,"c":null}},"zzz":null}"#,
        // Known keys holding unexpected values stay as they are.
        r#"{"bits":"256","dualAuthDelete":false}"#,
        r#"{"bits":null,"deletionAuth":{"by":7},"rotation":{"enabled":null}}"#,
        r#"{"bits":1500.0}"#,
        r#"{"bits":18446744073709551615}"#,
    ];

    #[test]
    fn stored_text_round_trips_byte_for_byte() {
        for s in STORED {
            let typed: KeyAttrs = serde_json::from_str(s).unwrap();
            assert_eq!(serde_json::to_string(&typed).unwrap(), *s);
            // The same text the untyped column produced (its tag input).
            let untyped: Value = serde_json::from_str(s).unwrap();
            assert_eq!(serde_json::to_string(&untyped).unwrap(), *s);
        }
    }

    #[test]
    fn texts_read_as_typed_fields() {
        let a: KeyAttrs = serde_json::from_str(STORED[7]).unwrap();
        assert_eq!(a.bits, Some(256));
        assert!(a.dual_auth_enabled());
        let r = a.rotation.as_ref().unwrap();
        assert_eq!((r.enabled, r.interval_month), (Some(true), Some(12)));
        assert_eq!(r.created_by.as_deref(), Some("IBMid-1"));
        let d = a.deletion_auth.as_ref().unwrap();
        assert_eq!(d.by.as_deref(), Some("IBMid-2"));
        assert_eq!(d.expires, Some(1_700_604_900));
        assert!(a.other.is_empty());

        let odd: KeyAttrs = serde_json::from_str(STORED[9]).unwrap();
        assert_eq!(odd.bits, None);
        assert!(!odd.dual_auth_enabled());
        assert_eq!(odd.other.len(), 2);

        let other: KeyAttrs = serde_json::from_str(STORED[8]).unwrap();
        assert_eq!(other.rotation.as_ref().unwrap().interval_month, Some(2));
        assert_eq!(other.rotation.as_ref().unwrap().other.len(), 1);
        assert_eq!(other.other.len(), 3);
    }

    /// A read-modify-write keeps what it does not touch, and writes typed fields over
    /// unexpected stored values of the same key.
    #[test]
    fn updates_keep_unknown_keys() {
        let mut a: KeyAttrs = serde_json::from_str(STORED[8]).unwrap();
        a.bits = Some(128);
        a.deletion_auth = Some(DeletionAuthAttr {
            by: Some("u".into()),
            at: Some(1),
            expires: Some(2),
            other: Map::new(),
        });
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"a":[1,2.5,"x"],"bits":128,"deletionAuth":{"at":1,"by":"u","expires":2},"policies":{},"rotation":{"enabled":true,"interval_month":2,"zz":{"b":1,"c":null}},"zzz":null}"#
        );
        let mut odd: KeyAttrs = serde_json::from_str(STORED[9]).unwrap();
        odd.bits = Some(256);
        assert_eq!(
            serde_json::to_string(&odd).unwrap(),
            r#"{"bits":256,"dualAuthDelete":false}"#
        );
        assert_eq!(
            serde_json::to_string(&KeyAttrs::with_bits(256)).unwrap(),
            r#"{"bits":256}"#
        );
    }

    #[test]
    fn only_objects_are_attributes() {
        for s in ["[]", "null", "1", "\"x\""] {
            assert!(serde_json::from_str::<KeyAttrs>(s).is_err(), "{s}");
        }
    }
}

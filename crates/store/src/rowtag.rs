//! Row authentication in the store: what each authenticated row's tag covers, and the check on
//! every read.
//!
//! The database is not trusted (`docs/threat-model.md`, attacker A3). Every row that decides
//! what may be done with key material or who may do it carries an `auth_tag` column: a MAC,
//! under a key the store never sees in the clear, over the row's table, identity and the
//! fields listed below. The store builds the MAC input from the row's *parsed* fields, on write
//! and on read alike ([`TagInput`]), so the two can never drift apart, and an edit that changes
//! what a row means fails the check.
//!
//! | table | covered | not covered (and why) |
//! |---|---|---|
//! | `keys` | every column | `row_version` (a concurrency counter) |
//! | `key_versions` | id, key, instance, seq, creation time | `sealed`, `master_key_id` (the seal's AAD binds them; re-sealing rewrites them) |
//! | `import_tokens` | instance, token id, times, limits, nonce, public key | `remaining`, `failures` (changed by one SQL statement each), `sealed_private`, `master_key_id` (sealed) |
//! | `api_keys` | every column | |
//! | `role_grants` | every column | |
//! | `instances` | every column | |
//! | `key_aliases` | every column | |
//! | `instance_policies` | instance, type, data, update stamp | creation stamp (kept by the upsert; decides nothing) |
//! | `kmip_adapters` | every column | |
//! | `kmip_client_certs` | every column | |
//! | `kmip_objects` | every column | `row_version` (a concurrency counter) |
//!
//! The KMIP tables (migration `0008_kmip.sql`) are tagged from their first row on, so they
//! have no untagged rows to upgrade and are not in [`TAGGED_TABLES`].
//!
//! The keying lives behind [`RowAuth`] (the service implements it with
//! `keyward_crypto::rowauth::RowAuthKey`), so this crate holds no key and names no primitive.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{
    AliasRow, ApiKeyRow, GrantRow, InstanceRow, KeyRow, KmipAdapterRow, KmipCertRow, KmipObjectRow,
    PolicyRow, TokenRow, VersionRow,
};

/// Tags and verifies rows. Installed into the store once the master key has opened the
/// row-authentication key ([`crate::Store::install_row_auth`]).
pub trait RowAuth: Send + Sync + fmt::Debug {
    /// The tag of a row's canonical input.
    fn tag(&self, input: &[u8]) -> Vec<u8>;
    /// Whether `tag` is the tag of `input` (constant time).
    fn verify(&self, input: &[u8], tag: &[u8]) -> bool;
    /// Whether a row without any tag is accepted: only during the grace period of an upgrade
    /// from a Keyward that wrote no tags (`docs/threat-model.md`).
    fn accept_untagged(&self) -> bool;
}

/// The tables whose rows are authenticated, in the order the upgrade tags them.
pub const TAGGED_TABLES: &[&str] = &[
    "instances",
    "api_keys",
    "role_grants",
    "keys",
    "key_versions",
    "import_tokens",
    "key_aliases",
    "instance_policies",
];

static FAILURES: [AtomicU64; TAGGED_TABLES.len()] =
    [const { AtomicU64::new(0) }; TAGGED_TABLES.len()];

/// Rows refused so far because their tag did not verify, per table (for `/metrics`).
pub fn row_integrity_failures() -> Vec<(&'static str, u64)> {
    TAGGED_TABLES
        .iter()
        .zip(FAILURES.iter())
        .map(|(t, n)| (*t, n.load(Ordering::Relaxed)))
        .collect()
}

pub(crate) fn count_failure(table: &str) {
    if let Some(i) = TAGGED_TABLES.iter().position(|t| *t == table) {
        if let Some(c) = FAILURES.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The canonical, unambiguous encoding of a row for its tag: a domain string, the table, then
/// each field as a type byte and (for values) a length-prefixed body.
pub(crate) struct TagInput(Vec<u8>);

impl TagInput {
    pub(crate) fn new(table: &str) -> Self {
        let mut v = Vec::with_capacity(256);
        v.extend_from_slice(b"keyward-row-v1\0");
        let mut t = Self(v);
        t.push(1, table.as_bytes());
        t
    }

    fn push(&mut self, kind: u8, body: &[u8]) {
        self.0.push(kind);
        self.0
            .extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
        self.0.extend_from_slice(body);
    }

    pub(crate) fn text(mut self, s: &str) -> Self {
        self.push(1, s.as_bytes());
        self
    }

    pub(crate) fn bytes(mut self, b: &[u8]) -> Self {
        self.push(2, b);
        self
    }

    pub(crate) fn int(mut self, i: i64) -> Self {
        self.push(3, &i.to_be_bytes());
        self
    }

    pub(crate) fn opt_text(self, s: Option<&str>) -> Self {
        match s {
            Some(s) => self.text(s),
            None => self.null(),
        }
    }

    pub(crate) fn opt_int(self, i: Option<i64>) -> Self {
        match i {
            Some(i) => self.int(i),
            None => self.null(),
        }
    }

    fn null(mut self) -> Self {
        self.0.push(0);
        self
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

fn json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

pub(crate) fn key_input(k: &KeyRow) -> TagInput {
    TagInput::new("keys")
        .text(&k.id.to_string())
        .text(&k.instance_id.to_string())
        .text(&k.name)
        .opt_text(k.description.as_deref())
        .text(&json(&k.tags))
        .int(k.state.code())
        .int(i64::from(k.extractable))
        .int(i64::from(k.imported))
        .text(&k.key_ring_id)
        .opt_int(k.expiration_date)
        .int(k.created_at)
        .text(&k.created_by)
        .int(k.updated_at)
        .opt_int(k.last_rotate_date)
        .opt_int(k.deletion_date)
        .opt_text(k.deleted_by.as_deref())
        .int(k.state_changed_at)
        .text(&k.current_version.to_string())
        .text(&json(&k.attrs))
        .opt_int(k.next_rotation_at)
}

pub(crate) fn version_input(v: &VersionRow) -> TagInput {
    TagInput::new("key_versions")
        .text(&v.id.to_string())
        .text(&v.key_id.to_string())
        .text(&v.instance_id.to_string())
        .int(v.seq)
        .int(v.created_at)
}

pub(crate) fn token_input(t: &TokenRow) -> TagInput {
    TagInput::new("import_tokens")
        .text(&t.instance_id.to_string())
        .text(&t.token_id.to_string())
        .int(t.created_at)
        .int(t.expires_at)
        .int(t.expiration_secs)
        .int(t.max_retrievals)
        .bytes(&t.nonce)
        .text(&t.public_pem)
}

pub(crate) fn api_key_input(k: &ApiKeyRow, key_hash: &[u8]) -> TagInput {
    TagInput::new("api_keys")
        .text(&k.id)
        .text(&k.iam_id)
        .bytes(key_hash)
        .text(&k.name)
        .int(k.created_at)
}

pub(crate) fn grant_input(g: &GrantRow) -> TagInput {
    TagInput::new("role_grants")
        .text(&g.instance_id.to_string())
        .text(&g.iam_id)
        .text(g.role.as_str())
        .int(g.created_at)
}

pub(crate) fn instance_input(i: &InstanceRow) -> TagInput {
    TagInput::new("instances")
        .text(&i.id.to_string())
        .text(&i.name)
        .int(i.created_at)
}

pub(crate) fn alias_input(a: &AliasRow) -> TagInput {
    TagInput::new("key_aliases")
        .text(&a.instance_id.to_string())
        .text(&a.alias)
        .text(&a.key_id.to_string())
        .int(a.created_at)
        .text(&a.created_by)
}

pub(crate) fn policy_input(p: &PolicyRow) -> TagInput {
    TagInput::new("instance_policies")
        .text(&p.instance_id.to_string())
        .text(&p.policy_type)
        .text(&json(&p.data))
        .int(p.updated_at)
        .text(&p.updated_by)
}

pub(crate) fn kmip_adapter_input(a: &KmipAdapterRow) -> TagInput {
    TagInput::new("kmip_adapters")
        .text(&a.id)
        .text(&a.instance_id.to_string())
        .text(&a.name)
        .text(&a.description)
        .text(&a.profile)
        .text(&a.crk_id.to_string())
        .text(&a.created_by)
        .int(a.created_at)
        .text(&a.updated_by)
        .int(a.updated_at)
}

pub(crate) fn kmip_cert_input(c: &KmipCertRow) -> TagInput {
    TagInput::new("kmip_client_certs")
        .text(&c.id)
        .text(&c.instance_id.to_string())
        .text(&c.adapter_id)
        .text(&c.name)
        .text(&c.certificate)
        .bytes(&c.fingerprint)
        .text(&c.created_by)
        .int(c.created_at)
}

pub(crate) fn kmip_object_input(o: &KmipObjectRow) -> TagInput {
    TagInput::new("kmip_objects")
        .text(&o.id)
        .text(&o.instance_id.to_string())
        .text(&o.adapter_id)
        .int(o.object_type)
        .int(o.state)
        .bytes(&o.meta)
        .opt_text(o.wrapped.as_deref())
        .opt_text(o.created_by_cert_id.as_deref())
        .text(&o.created_by)
        .int(o.created_at)
        .opt_text(o.updated_by_cert_id.as_deref())
        .text(&o.updated_by)
        .int(o.updated_at)
        .opt_text(o.destroyed_by_cert_id.as_deref())
        .opt_text(o.destroyed_by.as_deref())
        .opt_int(o.destroyed_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_is_unambiguous() {
        // Moving a byte from one field to the next, or a NULL for an empty string, changes
        // the input.
        let a = TagInput::new("t").text("ab").text("c");
        let b = TagInput::new("t").text("a").text("bc");
        assert_ne!(a.as_bytes(), b.as_bytes());
        let c = TagInput::new("t").opt_text(None);
        let d = TagInput::new("t").opt_text(Some(""));
        assert_ne!(c.as_bytes(), d.as_bytes());
        let e = TagInput::new("t").text("1");
        let f = TagInput::new("t").int(1);
        assert_ne!(e.as_bytes(), f.as_bytes());
        assert_ne!(
            TagInput::new("keys").as_bytes(),
            TagInput::new("key_versions").as_bytes()
        );
    }
}

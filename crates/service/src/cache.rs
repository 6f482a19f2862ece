//! In-memory caches, bounded and short-lived.
//!
//! - [`KeyCache`]: a key's metadata and its opened versions, so wrap/unwrap do no database
//!   read and no master-key open. An entry is dropped at once when this node changes the key,
//!   and trusted at most `ttl` otherwise (the bound on how long another node's change, e.g. a
//!   disable, can go unseen here).
//! - [`RoleCache`]: a caller's roles per instance, for `ttl`; an empty answer (no role) is
//!   cached too, so a caller without a role costs one database query per `ttl`.
//! - [`ApiKeyCache`]: whether the API key a token was minted from still exists, for `ttl`.
//!
//! Every cache here is a [`BoundedCache`]: at most `capacity` entries, S3-FIFO eviction when
//! full, never cleared wholesale. [`KeyService::sweep_caches`](crate::KeyService) removes
//! expired entries periodically, so opened material leaves memory (and is zeroized, being
//! `SecretBytes`) shortly after its TTL even if nobody asks for the key again.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward_crypto::SecretBytes;
use keyward_domain::bounded::{BoundedCache, CacheStats, Equivalent};
use keyward_domain::{InstanceId, KeyId, Role, VersionId};
use keyward_store::KeyRow;

/// Default bound of each cache (the `--cache-entries` setting).
pub const DEFAULT_ENTRIES: usize = 50_000;

/// Default bound of the key cache (the `--key-cache-entries` setting), the one cache whose
/// entries are large: a [`CachedKey`] is about 1 KiB (696 bytes inline, its `Arc` header, the
/// strings of its row and one opened version, and the cache's slot), so 10,000 entries hold
/// about 10 MiB where 50,000 would hold about 50 MiB. With the 1-second TTL, 10,000 entries
/// still serve every key used in the last second at up to 10,000 distinct keys per second.
pub const DEFAULT_KEY_ENTRIES: usize = 10_000;

/// One opened version of a key's material.
pub struct OpenedVersion {
    pub id: VersionId,
    pub seq: i64,
    pub created_at: i64,
    pub material: SecretBytes,
}

/// A key with every version opened.
pub struct CachedKey {
    pub row: KeyRow,
    /// Newest first.
    pub versions: Vec<OpenedVersion>,
    loaded: Instant,
}

impl CachedKey {
    pub fn new(row: KeyRow, versions: Vec<OpenedVersion>) -> Self {
        Self {
            row,
            versions,
            loaded: Instant::now(),
        }
    }

    pub fn current(&self) -> Option<&OpenedVersion> {
        self.versions
            .iter()
            .find(|v| v.id == self.row.current_version)
    }

    pub fn version(&self, id: VersionId) -> Option<&OpenedVersion> {
        self.versions.iter().find(|v| v.id == id)
    }
}

pub struct KeyCache {
    ttl: Duration,
    map: BoundedCache<(InstanceId, KeyId), Arc<CachedKey>>,
}

impl KeyCache {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            map: BoundedCache::new("key", capacity),
        }
    }

    pub fn get(&self, instance: InstanceId, id: KeyId) -> Option<Arc<CachedKey>> {
        let ttl = self.ttl;
        self.map
            .get_valid(&(instance, id), |e| e.loaded.elapsed() < ttl)
    }

    pub fn put(&self, entry: Arc<CachedKey>) {
        if self.ttl.is_zero() {
            return;
        }
        self.map
            .insert((entry.row.instance_id, entry.row.id), entry);
    }

    pub fn invalidate(&self, instance: InstanceId, id: KeyId) {
        self.map.remove(&(instance, id));
    }

    /// Drops every entry older than the TTL (their opened material with them).
    pub fn sweep(&self) {
        let ttl = self.ttl;
        self.map.retain(|_, e| e.loaded.elapsed() < ttl);
    }

    pub fn stats(&self) -> CacheStats {
        self.map.stats()
    }
}

/// (instance, principal), hashed so that [`RoleKeyRef`] finds it without an allocation.
#[derive(PartialEq, Eq)]
struct RoleKey {
    instance: InstanceId,
    iam_id: String,
}

impl Hash for RoleKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.instance.hash(h);
        self.iam_id.as_str().hash(h);
    }
}

struct RoleKeyRef<'a> {
    instance: InstanceId,
    iam_id: &'a str,
}

impl Hash for RoleKeyRef<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.instance.hash(h);
        self.iam_id.hash(h);
    }
}

impl Equivalent<RoleKey> for RoleKeyRef<'_> {
    fn equivalent(&self, key: &RoleKey) -> bool {
        self.instance == key.instance && self.iam_id == key.iam_id
    }
}

pub struct RoleCache {
    ttl: Duration,
    map: BoundedCache<RoleKey, (Arc<[Role]>, Instant)>,
}

impl RoleCache {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            map: BoundedCache::new("role", capacity),
        }
    }

    pub fn get(&self, instance: InstanceId, iam_id: &str) -> Option<Arc<[Role]>> {
        let ttl = self.ttl;
        self.map
            .get_valid(&RoleKeyRef { instance, iam_id }, |(_, at)| {
                at.elapsed() < ttl
            })
            .map(|(roles, _)| roles)
    }

    pub fn put(&self, instance: InstanceId, iam_id: &str, roles: Arc<[Role]>) {
        if self.ttl.is_zero() {
            return;
        }
        self.map.insert(
            RoleKey {
                instance,
                iam_id: iam_id.to_string(),
            },
            (roles, Instant::now()),
        );
    }

    pub fn sweep(&self) {
        let ttl = self.ttl;
        self.map.retain(|_, (_, at)| at.elapsed() < ttl);
    }

    pub fn stats(&self) -> CacheStats {
        self.map.stats()
    }
}

/// Whether an API key still exists, by key id, for `ttl`: how long a token minted from a
/// deleted API key can still be accepted by a node. Both answers are cached, so a revoked token
/// replayed in a loop costs one query per `ttl`, not one per request. Entries are made only for
/// ids taken from verified tokens (which this service signed), so the map holds at most one
/// entry per API key, and at most `capacity` in all.
pub struct ApiKeyCache {
    ttl: Duration,
    map: BoundedCache<String, (bool, Instant)>,
}

impl ApiKeyCache {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            map: BoundedCache::new("api_key", capacity),
        }
    }

    pub fn get(&self, id: &str) -> Option<bool> {
        let ttl = self.ttl;
        self.map
            .get_valid(id, |(_, at)| at.elapsed() < ttl)
            .map(|(exists, _)| exists)
    }

    /// Caches what a lookup that *started* at `asked` found: the entry ages from the start of
    /// the lookup, so an answer read just before a deletion committed is never trusted past
    /// `ttl` after that commit.
    pub fn put(&self, id: &str, exists: bool, asked: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        self.map.insert(id.to_string(), (exists, asked));
    }

    pub fn sweep(&self) {
        let ttl = self.ttl;
        self.map.retain(|_, (_, at)| at.elapsed() < ttl);
    }

    pub fn stats(&self) -> CacheStats {
        self.map.stats()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn roles_are_found_by_borrowed_key_and_expire() {
        let c = RoleCache::new(Duration::from_millis(50), 10);
        let i = InstanceId::new();
        let roles: Arc<[Role]> = vec![Role::Reader].into();
        c.put(i, "p", roles.clone());
        c.put(i, "q", Vec::new().into());
        assert_eq!(c.get(i, "p").as_deref(), Some(&[Role::Reader][..]));
        assert_eq!(c.get(i, "q").map(|r| r.len()), Some(0));
        assert!(c.get(InstanceId::new(), "p").is_none());
        std::thread::sleep(Duration::from_millis(60));
        c.sweep();
        assert_eq!(c.stats().entries, 0);
        assert!(c.get(i, "p").is_none());
    }

    #[test]
    fn key_cache_stays_bounded_under_a_flood_of_distinct_keys() {
        let c = KeyCache::new(Duration::from_secs(60), 100);
        let instance = InstanceId::new();
        for _ in 0..5_000 {
            let id = KeyId::new();
            let version = VersionId::new();
            let row = KeyRow {
                id,
                instance_id: instance,
                name: "k".into(),
                description: None,
                tags: Vec::new(),
                state: keyward_domain::KeyState::Active,
                extractable: false,
                imported: false,
                key_ring_id: "default".into(),
                expiration_date: None,
                created_at: 0,
                created_by: "iam-ServiceId-t".into(),
                updated_at: 0,
                last_rotate_date: None,
                deletion_date: None,
                deleted_by: None,
                state_changed_at: 0,
                current_version: version,
                attrs: Default::default(),
                row_version: 1,
                next_rotation_at: None,
            };
            c.put(Arc::new(CachedKey::new(
                row,
                vec![OpenedVersion {
                    id: version,
                    seq: 1,
                    created_at: 0,
                    material: SecretBytes::from_vec(vec![7; 32]),
                }],
            )));
            let s = c.stats();
            assert!(s.entries <= s.capacity, "{s:?}");
        }
        let s = c.stats();
        assert!(s.capacity < 200 && s.entries > 0, "{s:?}");
    }

    #[test]
    fn role_cache_stays_bounded() {
        let c = RoleCache::new(Duration::from_secs(60), 100);
        for _ in 0..5_000 {
            c.put(InstanceId::new(), "stranger", Vec::new().into());
        }
        let s = c.stats();
        assert!(s.entries <= s.capacity && s.capacity < 200, "{s:?}");
    }
}

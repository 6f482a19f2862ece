//! In-memory caches, bounded and short-lived.
//!
//! - [`KeyCache`]: a key's metadata and its opened versions, so wrap/unwrap do no database
//!   read and no master-key open. An entry is dropped at once when this node changes the key,
//!   and trusted at most `ttl` otherwise (the bound on how long another node's change, e.g. a
//!   disable, can go unseen here).
//! - [`RoleCache`]: a caller's roles per instance, for `ttl`.
//! - [`ApiKeyCache`]: whether the API key a token was minted from still exists, for `ttl`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward_crypto::SecretBytes;
use keyward_domain::{InstanceId, KeyId, Role, VersionId};
use keyward_store::KeyRow;
use parking_lot::RwLock;

const MAX_ENTRIES: usize = 50_000;

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
    map: RwLock<HashMap<(InstanceId, KeyId), Arc<CachedKey>>>,
}

impl KeyCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            map: RwLock::new(HashMap::new()),
        }
    }

    pub fn get(&self, instance: InstanceId, id: KeyId) -> Option<Arc<CachedKey>> {
        let map = self.map.read();
        let e = map.get(&(instance, id))?;
        (e.loaded.elapsed() < self.ttl).then(|| e.clone())
    }

    pub fn put(&self, entry: Arc<CachedKey>) {
        if self.ttl.is_zero() {
            return;
        }
        let mut map = self.map.write();
        if map.len() >= MAX_ENTRIES {
            let ttl = self.ttl;
            map.retain(|_, e| e.loaded.elapsed() < ttl);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        map.insert((entry.row.instance_id, entry.row.id), entry);
    }

    pub fn invalidate(&self, instance: InstanceId, id: KeyId) {
        self.map.write().remove(&(instance, id));
    }
}

/// instance → principal → (roles, loaded at). Two levels so a lookup needs no allocation.
type RoleEntries = HashMap<InstanceId, HashMap<String, (Arc<[Role]>, Instant)>>;

pub struct RoleCache {
    ttl: Duration,
    map: RwLock<RoleEntries>,
}

impl RoleCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            map: RwLock::new(HashMap::new()),
        }
    }

    pub fn get(&self, instance: InstanceId, iam_id: &str) -> Option<Arc<[Role]>> {
        let map = self.map.read();
        let (roles, at) = map.get(&instance)?.get(iam_id)?;
        (at.elapsed() < self.ttl).then(|| roles.clone())
    }

    pub fn put(&self, instance: InstanceId, iam_id: &str, roles: Arc<[Role]>) {
        if self.ttl.is_zero() {
            return;
        }
        let mut map = self.map.write();
        if map.values().map(HashMap::len).sum::<usize>() >= MAX_ENTRIES {
            map.clear();
        }
        map.entry(instance)
            .or_default()
            .insert(iam_id.to_string(), (roles, Instant::now()));
    }
}

/// Whether an API key still exists, by key id, for `ttl`: how long a token minted from a
/// deleted API key can still be accepted by a node. Both answers are cached, so a revoked token
/// replayed in a loop costs one query per `ttl`, not one per request. Entries are made only for
/// ids taken from verified tokens (which this service signed), so the map holds at most one
/// entry per API key; past [`MAX_ENTRIES`] expired entries go first, then arbitrary ones.
pub struct ApiKeyCache {
    ttl: Duration,
    map: RwLock<HashMap<String, (bool, Instant)>>,
}

impl ApiKeyCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            map: RwLock::new(HashMap::new()),
        }
    }

    pub fn get(&self, id: &str) -> Option<bool> {
        let map = self.map.read();
        let (exists, at) = map.get(id)?;
        (at.elapsed() < self.ttl).then_some(*exists)
    }

    /// Caches what a lookup that *started* at `asked` found: the entry ages from the start of
    /// the lookup, so an answer read just before a deletion committed is never trusted past
    /// `ttl` after that commit.
    pub fn put(&self, id: &str, exists: bool, asked: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        let mut map = self.map.write();
        if map.len() >= MAX_ENTRIES && !map.contains_key(id) {
            let ttl = self.ttl;
            map.retain(|_, (_, at)| at.elapsed() < ttl);
            while map.len() >= MAX_ENTRIES {
                let Some(k) = map.keys().next().cloned() else {
                    break;
                };
                map.remove(&k);
            }
        }
        map.insert(id.to_string(), (exists, asked));
    }
}

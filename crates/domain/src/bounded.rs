//! [`BoundedCache`]: the one bounded map every in-process cache and limiter table uses.
//!
//! What must hold:
//! - A table never holds more than its capacity ([`BoundedCache::capacity`]): when full, an
//!   insert evicts one entry (S3-FIFO, from `quick_cache`); nothing is ever cleared wholesale,
//!   so a flood of one-off keys cannot push out the entries that are in use.
//! - Keys are hashed with the standard library's randomly keyed SipHash, because some keys
//!   (instance ids, source addresses) are chosen by callers.
//! - Hits and misses are counted for `/metrics`.

use std::collections::hash_map::RandomState;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};

use quick_cache::sync::{Cache, DefaultLifecycle};
pub use quick_cache::Equivalent;
use quick_cache::UnitWeighter;

/// Size and counters of one cache, as `/metrics` shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheStats {
    /// The `cache` label: `key`, `role`, `policy`, ...
    pub name: &'static str,
    pub entries: u64,
    /// The most entries the cache holds.
    pub capacity: u64,
    pub hits: u64,
    pub misses: u64,
}

/// A concurrent map of at most `capacity` entries that evicts instead of growing.
pub struct BoundedCache<K, V> {
    name: &'static str,
    inner: Cache<K, V, UnitWeighter, RandomState, DefaultLifecycle<K, V>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl<K, V> std::fmt::Debug for BoundedCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundedCache")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<K: Eq + Hash, V: Clone> BoundedCache<K, V> {
    /// A cache of at most `capacity` entries (at least 1).
    pub fn new(name: &'static str, capacity: usize) -> Self {
        let cap = capacity.max(1);
        Self {
            name,
            inner: Cache::with(
                cap,
                cap as u64,
                UnitWeighter,
                RandomState::new(),
                DefaultLifecycle::default(),
            ),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The value for `key`, counted as a hit or a miss.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        self.get_valid(key, |_| true)
    }

    /// The value for `key` if `valid` accepts it (a hit); otherwise a miss, and an entry that
    /// `valid` refused (e.g. expired) is removed at once.
    pub fn get_valid<Q>(&self, key: &Q, valid: impl Fn(&V) -> bool) -> Option<V>
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        match self.inner.get(key) {
            Some(v) if valid(&v) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(v)
            }
            Some(_) => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                // Only if it is still the refused value (not one inserted meanwhile).
                self.inner.remove_if(key, |v| !valid(v));
                None
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// The value for `key`, or the one `make` returns, inserted (not counted as hit or miss:
    /// for tables such as rate-limit buckets, not caches).
    pub fn get_or_insert_with<Q>(&self, key: &Q, make: impl FnOnce() -> V) -> V
    where
        Q: Hash + Equivalent<K> + ToOwned<Owned = K> + ?Sized,
    {
        match self
            .inner
            .get_or_insert_with(key, || Ok::<V, std::convert::Infallible>(make()))
        {
            Ok(v) => v,
            Err(never) => match never {},
        }
    }

    /// The value for `key`, without counting.
    pub fn peek<Q>(&self, key: &Q) -> Option<V>
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        self.inner.peek(key)
    }

    /// Inserts or replaces; may evict another entry.
    pub fn insert(&self, key: K, value: V) {
        self.inner.insert(key, value);
    }

    pub fn remove<Q>(&self, key: &Q)
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        self.inner.remove(key);
    }

    /// Removes `key` if its value satisfies `f`.
    pub fn remove_if<Q>(&self, key: &Q, f: impl FnOnce(&V) -> bool)
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        self.inner.remove_if(key, f);
    }

    /// Keeps only the entries `keep` accepts (the periodic sweep of expired entries).
    pub fn retain(&self, keep: impl Fn(&K, &V) -> bool) {
        self.inner.retain(keep);
    }

    pub fn len(&self) -> usize {
        self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// The most entries this cache holds.
    pub fn capacity(&self) -> u64 {
        self.inner.capacity()
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            name: self.name,
            entries: self.len() as u64,
            capacity: self.capacity(),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn eviction_keeps_the_bound() {
        for cap in [1usize, 7, 100, 1000, 5000] {
            let c: BoundedCache<u64, u64> = BoundedCache::new("t", cap);
            assert!(c.capacity() >= cap as u64);
            // The rounding over shards adds at most a few entries.
            assert!(c.capacity() <= cap as u64 + 64, "{cap}: {}", c.capacity());
            for i in 0..(cap as u64 * 20 + 100) {
                c.insert(i, i);
                assert!(c.len() as u64 <= c.capacity(), "{cap}: {} entries", c.len());
            }
            assert!(!c.is_empty());
        }
    }

    #[test]
    fn hot_entries_survive_a_flood_of_one_off_keys() {
        let c: BoundedCache<u64, u64> = BoundedCache::new("t", 1000);
        let hot: Vec<u64> = (0..100).collect();
        for &k in &hot {
            c.insert(k, k);
        }
        // The hot set is used; then a stranger inserts 100k keys never seen again,
        // while the hot set keeps being used now and then.
        for round in 0..100u64 {
            for &k in &hot {
                if c.get(&k).is_none() {
                    c.insert(k, k);
                }
            }
            for i in 0..1000u64 {
                let k = 1_000_000 + round * 1000 + i;
                c.insert(k, k);
            }
        }
        let survivors = hot.iter().filter(|k| c.peek(*k).is_some()).count();
        assert_eq!(
            survivors,
            hot.len(),
            "hot entries were evicted by one-off keys"
        );
        assert!(c.len() as u64 <= c.capacity());
        // A map that is cleared when full (the old behaviour) would keep none of them at the
        // moment of clearing; the stats show the hot set was served from the cache.
        let s = c.stats();
        assert!(s.hits >= 99 * 100, "{s:?}");
    }

    #[test]
    fn invalid_entries_are_misses_and_removed() {
        let c: BoundedCache<&'static str, u32> = BoundedCache::new("t", 10);
        c.insert("a", 1);
        c.insert("b", 2);
        assert_eq!(c.get_valid("a", |v| *v > 5), None);
        assert_eq!(c.peek("a"), None, "a refused entry leaves the cache");
        assert_eq!(c.get("b"), Some(2));
        c.retain(|_, v| *v != 2);
        assert!(c.is_empty());
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.entries), (1, 1, 0));
        let d: BoundedCache<u8, u32> = BoundedCache::new("t", 10);
        assert_eq!(d.get_or_insert_with(&1, || 9), 9);
        assert_eq!(d.get_or_insert_with(&1, || 10), 9);
    }
}

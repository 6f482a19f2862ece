//! Key usage tracking (docs/design.md, "Key usage"): when each key was last used for wrap,
//! unwrap and rewrap, and by which principal.
//!
//! A use is recorded in memory ([`UsageTracker::record`], one map insert under a sharded lock,
//! no I/O) and written to the store in batches by a background task every flush interval
//! (`--usage-flush-interval`, default [`DEFAULT_FLUSH`]), and once more at shutdown. The
//! staleness bound: the stored value trails a use by at most one interval plus one write; a
//! node's own unflushed uses are merged into what it reports, so the bound shows only across
//! nodes and after a crash (which loses at most one interval of uses).
//!
//! Memory is bounded: at most [`MAX_PENDING`] keys wait for a flush. Past half of that the
//! flusher is woken early; when every slot is taken, a use of a further key is dropped and
//! counted (`keyward_key_usage_dropped_total`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keyward_domain::{InstanceId, KeyId};
use keyward_store::{KeyUsageRow, Store, UsageOp};
use parking_lot::Mutex;
use tokio::sync::Notify;

/// The default flush interval: the documented staleness bound.
pub const DEFAULT_FLUSH: Duration = Duration::from_secs(10);
/// Most keys with unflushed uses.
pub const MAX_PENDING: usize = 100_000;
/// Rows per store call when flushing.
const FLUSH_ROWS: usize = 2_000;
const SHARDS: usize = 16;

/// The last use of one operation: when, and by whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastUse {
    pub at: i64,
    pub by: Arc<str>,
}

#[derive(Debug, Clone, Default)]
struct Pending {
    instance: Option<InstanceId>,
    wrap: Option<LastUse>,
    unwrap: Option<LastUse>,
    rewrap: Option<LastUse>,
}

impl Pending {
    fn slot(&mut self, op: UsageOp) -> Option<&mut Option<LastUse>> {
        match op {
            UsageOp::Wrap => Some(&mut self.wrap),
            UsageOp::Unwrap => Some(&mut self.unwrap),
            UsageOp::Rewrap => Some(&mut self.rewrap),
            UsageOp::Any => None,
        }
    }
}

/// A key's usage as reported: the latest use of each operation, and of any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyUsage {
    pub wrap: Option<LastUse>,
    pub unwrap: Option<LastUse>,
    pub rewrap: Option<LastUse>,
}

impl KeyUsage {
    /// The latest of the three.
    pub fn last(&self) -> Option<&LastUse> {
        [&self.wrap, &self.unwrap, &self.rewrap]
            .into_iter()
            .flatten()
            .max_by_key(|u| u.at)
    }

    fn merge(&mut self, op: UsageOp, u: LastUse) {
        let slot = match op {
            UsageOp::Wrap => &mut self.wrap,
            UsageOp::Unwrap => &mut self.unwrap,
            UsageOp::Rewrap => &mut self.rewrap,
            UsageOp::Any => return,
        };
        if slot.as_ref().is_none_or(|s| s.at <= u.at) {
            *slot = Some(u);
        }
    }
}

/// Unflushed uses, sharded by key id.
pub struct UsageTracker {
    shards: Vec<Mutex<HashMap<KeyId, Pending>>>,
    pending: std::sync::atomic::AtomicUsize,
    dropped: AtomicU64,
    wake: Arc<Notify>,
    enabled: bool,
}

impl UsageTracker {
    pub fn new(enabled: bool) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            pending: Default::default(),
            dropped: AtomicU64::new(0),
            wake: Arc::new(Notify::new()),
            enabled,
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn shard(&self, key: &KeyId) -> &Mutex<HashMap<KeyId, Pending>> {
        let b = key.as_uuid().as_bytes();
        &self.shards[usize::from(b[15]) % SHARDS]
    }

    /// Records one use. Never blocks on I/O.
    pub fn record(&self, instance: InstanceId, key: KeyId, op: UsageOp, at: i64, by: &str) {
        if !self.enabled {
            return;
        }
        let mut map = self.shard(&key).lock();
        let entry = match map.get_mut(&key) {
            Some(e) => e,
            None => {
                let n = self.pending.fetch_add(1, Ordering::Relaxed) + 1;
                if n > MAX_PENDING {
                    self.pending.fetch_sub(1, Ordering::Relaxed);
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    self.wake.notify_one();
                    return;
                }
                if n == MAX_PENDING / 2 {
                    self.wake.notify_one();
                }
                map.entry(key).or_default()
            }
        };
        entry.instance = Some(instance);
        if let Some(slot) = entry.slot(op) {
            if slot.as_ref().is_none_or(|s| s.at <= at) {
                // The same principal string is kept, not copied, when it repeats.
                let by: Arc<str> = match slot {
                    Some(s) if &*s.by == by => s.by.clone(),
                    _ => Arc::from(by),
                };
                *slot = Some(LastUse { at, by });
            }
        }
    }

    /// Uses dropped because every pending slot was taken.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Keys with unflushed uses.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// Takes every unflushed use, as store rows (with each key's `any` row).
    fn drain(&self) -> Vec<KeyUsageRow> {
        let mut rows = Vec::new();
        for shard in &self.shards {
            let taken = std::mem::take(&mut *shard.lock());
            self.pending.fetch_sub(taken.len(), Ordering::Relaxed);
            for (key, p) in taken {
                let Some(instance) = p.instance else { continue };
                let mut any: Option<&LastUse> = None;
                for (op, u) in [
                    (UsageOp::Wrap, &p.wrap),
                    (UsageOp::Unwrap, &p.unwrap),
                    (UsageOp::Rewrap, &p.rewrap),
                ] {
                    if let Some(u) = u {
                        rows.push(row(instance, key, op, u));
                        if any.is_none_or(|a| a.at < u.at) {
                            any = Some(u);
                        }
                    }
                }
                if let Some(u) = any {
                    rows.push(row(instance, key, UsageOp::Any, u));
                }
            }
        }
        rows
    }

    /// Puts back rows a failed flush could not write (newer uses recorded meanwhile win).
    fn restore(&self, rows: Vec<KeyUsageRow>) {
        for r in rows {
            if r.op != UsageOp::Any {
                self.record(r.instance_id, r.key_id, r.op, r.at, &r.by);
            }
        }
    }

    /// This node's unflushed uses of `key`, merged into `usage`.
    pub fn overlay(&self, key: &KeyId, usage: &mut KeyUsage) {
        let map = self.shard(key).lock();
        if let Some(p) = map.get(key) {
            for (op, u) in [
                (UsageOp::Wrap, &p.wrap),
                (UsageOp::Unwrap, &p.unwrap),
                (UsageOp::Rewrap, &p.rewrap),
            ] {
                if let Some(u) = u {
                    usage.merge(op, u.clone());
                }
            }
        }
    }

    /// Writes every unflushed use to the store. On failure the uses are kept for the next try.
    pub async fn flush(&self, store: &dyn Store) -> Result<usize, keyward_store::StoreError> {
        let rows = self.drain();
        let n = rows.len();
        let mut chunks = rows.chunks(FLUSH_ROWS);
        while let Some(c) = chunks.next() {
            if let Err(e) = store.record_key_usage(c).await {
                let mut rest = c.to_vec();
                for c in chunks {
                    rest.extend_from_slice(c);
                }
                self.restore(rest);
                return Err(e);
            }
        }
        Ok(n)
    }

    /// The background flusher: every `every`, or sooner when many keys wait.
    pub fn start(self: &Arc<Self>, store: Arc<dyn Store>, every: Duration) {
        if !self.enabled || every.is_zero() {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(t) = weak.upgrade() else { return };
                let wake = t.wake.clone();
                drop(t);
                let _ = tokio::time::timeout(every, wake.notified()).await;
                let Some(t) = weak.upgrade() else { return };
                if let Err(e) = t.flush(&*store).await {
                    tracing::warn!(error = %e, "key usage flush failed; retrying at the next interval");
                }
            }
        });
    }
}

fn row(instance: InstanceId, key: KeyId, op: UsageOp, u: &LastUse) -> KeyUsageRow {
    KeyUsageRow {
        instance_id: instance,
        key_id: key,
        op,
        at: u.at,
        by: u.by.to_string(),
    }
}

/// Builds the reported usage of each key from its stored rows.
pub fn from_rows(rows: &[KeyUsageRow]) -> HashMap<KeyId, KeyUsage> {
    let mut out: HashMap<KeyId, KeyUsage> = HashMap::new();
    for r in rows {
        out.entry(r.key_id).or_default().merge(
            r.op,
            LastUse {
                at: r.at,
                by: Arc::from(r.by.as_str()),
            },
        );
    }
    out
}

impl crate::KeyService {
    /// Records a use of `key` by `caller` (memory only; see the module documentation).
    pub(crate) fn record_use(&self, caller: &crate::Caller, key: KeyId, op: UsageOp) {
        self.usage
            .record(caller.instance, key, op, self.now(), &caller.iam_id);
    }

    /// The usage of a key the caller has just been allowed to read: the stored rows with this
    /// node's unflushed uses merged in.
    pub async fn key_usage(
        &self,
        caller: &crate::Caller,
        id: KeyId,
    ) -> crate::ServiceResult<KeyUsage> {
        caller.require(keyward_domain::Action::GetKeyMetadata)?;
        let rows = self.store.key_usage(caller.instance, &[id]).await?;
        let mut u = from_rows(&rows).remove(&id).unwrap_or_default();
        self.usage.overlay(&id, &mut u);
        Ok(u)
    }

    /// Writes every unflushed use now (at shutdown, and for tests); returns the rows written.
    pub async fn flush_usage(&self) -> crate::ServiceResult<usize> {
        Ok(self.usage.flush(&*self.store).await?)
    }

    /// Keys with unflushed uses, and uses dropped at the memory bound (for `/metrics`).
    pub fn usage_stats(&self) -> (usize, u64) {
        (self.usage.pending(), self.usage.dropped())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn newest_use_wins_and_any_is_the_latest() {
        let t = UsageTracker::new(true);
        let (i, k) = (InstanceId::new(), KeyId::new());
        t.record(i, k, UsageOp::Wrap, 10, "a");
        t.record(i, k, UsageOp::Wrap, 5, "b");
        t.record(i, k, UsageOp::Unwrap, 20, "c");
        let rows = t.drain();
        let get = |op| {
            rows.iter()
                .find(|r| r.op == op)
                .map(|r| (r.at, r.by.clone()))
        };
        assert_eq!(get(UsageOp::Wrap), Some((10, "a".into())));
        assert_eq!(get(UsageOp::Unwrap), Some((20, "c".into())));
        assert_eq!(get(UsageOp::Rewrap), None);
        assert_eq!(get(UsageOp::Any), Some((20, "c".into())));
        assert_eq!(t.pending(), 0);
        assert!(t.drain().is_empty());
    }

    #[test]
    fn pending_keys_are_bounded() {
        let t = UsageTracker::new(true);
        let i = InstanceId::new();
        for n in 0..(MAX_PENDING + 10) {
            t.record(i, KeyId::new(), UsageOp::Wrap, n as i64, "p");
        }
        assert_eq!(t.pending(), MAX_PENDING);
        assert_eq!(t.dropped(), 10);
        // A key already pending is still updated when full.
        let k = KeyId::new();
        let t = UsageTracker::new(true);
        t.record(i, k, UsageOp::Wrap, 1, "p");
        t.record(i, k, UsageOp::Wrap, 2, "q");
        assert_eq!(t.pending(), 1);
    }

    #[test]
    fn disabled_records_nothing() {
        let t = UsageTracker::new(false);
        t.record(InstanceId::new(), KeyId::new(), UsageOp::Wrap, 1, "p");
        assert_eq!(t.pending(), 0);
    }
}

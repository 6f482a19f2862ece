//! Rate limits: token buckets per (instance, principal, action class), and a limit on failed
//! bearer-token attempts per source address. The buckets are `governor`'s GCRA limiters (one
//! direct limiter per table entry; the failure buckets keep governor's state in a store that
//! can also be read without counting, for the check made before a token is verified). Over a limit: 429 with `Retry-After` and the
//! error envelope. A rate of 0 disables a class.
//!
//! Both tables are [`BoundedCache`]s of at most [`Limits::table_entries`] buckets each, with
//! eviction (never cleared wholesale). Buckets are made only for callers that hold a role in
//! the instance (the auth extractor checks first), and failure buckets only for addresses that
//! failed; IPv6 addresses share one failure bucket per /64, the block one client usually holds.
//!
//! Two creation sub-limits are on by default, because each request of theirs makes Keyward do
//! expensive or lasting work: import-token creation (`POST /import_token`: an RSA-4096 keypair)
//! and key creation (`POST /keys` and `POST /keys_with_policy_overrides`, imports included: a
//! sealed row that stays). Such a request counts against its class and its sub-limit.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, QuantaClock, QuantaInstant};
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed, StateStore};
use governor::{NotUntil, Quota};
use keyward_domain::bounded::{BoundedCache, CacheStats};
use keyward_domain::InstanceId;

/// What a request does, for rate limiting (decided by [`crate::endpoint::Endpoint::class`]
/// and [`crate::endpoint::Endpoint::creation`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// wrap / unwrap / rewrap
    Crypto,
    /// import token create / get
    ImportToken,
    /// everything else
    Management,
    /// sub-limit: `POST /import_token`
    ImportTokenCreate,
    /// sub-limit: `POST /keys`, `POST /keys_with_policy_overrides`
    KeyCreate,
}

/// Requests per second and burst of one class.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_sec: f64,
    pub burst: f64,
}

impl Rate {
    pub const OFF: Rate = Rate {
        per_sec: 0.0,
        burst: 0.0,
    };
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub crypto: Rate,
    pub import_token: Rate,
    pub management: Rate,
    /// Import-token creations (on by default: [`Limits::IMPORT_TOKEN_CREATE`]).
    pub import_token_create: Rate,
    /// Key creations and imports (on by default: [`Limits::KEY_CREATE`]).
    pub key_create: Rate,
    /// Failed bearer-token attempts per source address.
    pub auth_failures: Rate,
    /// Most buckets in each table (callers; failing addresses).
    pub table_entries: usize,
}

impl Limits {
    /// Default import-token creations per (instance, principal): 2 per second, bursts of 20.
    /// A client makes one token per batch of imports; a flood makes one RSA-4096 keypair per
    /// request.
    pub const IMPORT_TOKEN_CREATE: Rate = Rate {
        per_sec: 2.0,
        burst: 20.0,
    };
    /// Default key creations per (instance, principal): 50 per second, bursts of 500.
    pub const KEY_CREATE: Rate = Rate {
        per_sec: 50.0,
        burst: 500.0,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            crypto: Rate::OFF,
            import_token: Rate::OFF,
            management: Rate::OFF,
            import_token_create: Limits::IMPORT_TOKEN_CREATE,
            key_create: Limits::KEY_CREATE,
            auth_failures: Rate {
                per_sec: 1.0,
                burst: 30.0,
            },
            table_entries: 50_000,
        }
    }
}

/// Governor's GCRA quota of a rate; `None` when the rate is off. The burst is the whole part
/// of [`Rate::burst`] (at least 1); the period is clamped so that governor's nanosecond
/// arithmetic cannot overflow for absurdly slow rates.
fn quota(rate: Rate) -> Option<Quota> {
    if !(rate.per_sec > 0.0 && rate.per_sec.is_finite()) {
        return None;
    }
    let burst = rate.burst.clamp(1.0, f64::from(u32::MAX / 2)) as u32;
    let burst = NonZeroU32::new(burst)?;
    // period × burst must stay below u64::MAX nanoseconds
    let max_period = u64::MAX / 4 / (u64::from(burst.get()) + 1);
    let nanos = (1e9 / rate.per_sec).clamp(1.0, max_period as f64) as u64;
    Quota::with_period(Duration::from_nanos(nanos)).map(|q| q.allow_burst(burst))
}

/// Whole seconds until `not_until` (at least 1), for `Retry-After`.
fn retry_after(not_until: &NotUntil<QuantaInstant>, clock: &QuantaClock) -> u64 {
    let wait = not_until.wait_time_from(clock.now());
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// A caller's bucket: one governor direct (unkeyed) limiter.
type Bucket = governor::RateLimiter<NotKeyed, InMemoryState, QuantaClock>;

/// Whether a GCRA decision on a [`FailureState`] is written back (a failure is counted) or
/// only computed (may this address still try?).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Use {
    Count,
    Peek,
}

/// The GCRA state of one failure bucket (the theoretical arrival time, as governor's own
/// in-memory state keeps it), which can also be read without being updated: the "key" of
/// governor's keyed interface says which ([`Use`]).
#[derive(Default)]
struct FailureState(AtomicU64);

impl StateStore for FailureState {
    type Key = Use;

    fn measure_and_replace<T, F, E>(&self, key: &Use, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let read = |v: u64| (v != 0).then(|| Nanos::from(v));
        let mut prev = self.0.load(Ordering::Acquire);
        loop {
            let (out, next) = f(read(prev))?;
            if *key == Use::Peek {
                return Ok(out);
            }
            match self.0.compare_exchange_weak(
                prev,
                u64::from(next),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(out),
                Err(now) => prev = now,
            }
        }
    }
}

type FailureBucket = governor::RateLimiter<Use, FailureState, QuantaClock>;

pub struct RateLimiter {
    limits: Limits,
    clock: QuantaClock,
    callers: BoundedCache<(InstanceId, String, Class), Arc<Bucket>>,
    failures: BoundedCache<IpAddr, Arc<FailureBucket>>,
}

/// The failure-table key of an address: IPv4 (also when IPv4-mapped) as is, IPv6 by /64.
fn failure_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        v4 => v4,
    }
}

impl RateLimiter {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            clock: QuantaClock::default(),
            callers: BoundedCache::new("rate_limit", limits.table_entries),
            failures: BoundedCache::new("auth_failures", limits.table_entries),
        }
    }

    /// Size and bound of the bucket tables (for `/metrics`).
    pub fn stats(&self) -> [CacheStats; 2] {
        [self.callers.stats(), self.failures.stats()]
    }

    fn rate(&self, c: Class) -> Rate {
        match c {
            Class::Crypto => self.limits.crypto,
            Class::ImportToken => self.limits.import_token,
            Class::Management => self.limits.management,
            Class::ImportTokenCreate => self.limits.import_token_create,
            Class::KeyCreate => self.limits.key_create,
        }
    }

    /// One request of `class` by a caller; `Err(retry_after_secs)` when over the limit.
    pub fn check(&self, instance: InstanceId, iam_id: &str, class: Class) -> Result<(), u64> {
        let Some(q) = quota(self.rate(class)) else {
            return Ok(());
        };
        self.callers
            .get_or_insert_with(&(instance, iam_id.to_string(), class), || {
                Arc::new(Bucket::direct_with_clock(q, self.clock.clone()))
            })
            .check()
            .map_err(|n| retry_after(&n, &self.clock))
    }

    /// `n` more requests of `class` by a caller at once (a batch's operations beyond the one
    /// its request already counted); `Err(retry_after_secs)` when over the limit, or when `n`
    /// exceeds the bucket's burst.
    pub fn check_n(
        &self,
        instance: InstanceId,
        iam_id: &str,
        class: Class,
        n: u32,
    ) -> Result<(), u64> {
        let (Some(q), Some(n)) = (quota(self.rate(class)), std::num::NonZeroU32::new(n)) else {
            return Ok(());
        };
        match self
            .callers
            .get_or_insert_with(&(instance, iam_id.to_string(), class), || {
                Arc::new(Bucket::direct_with_clock(q, self.clock.clone()))
            })
            .check_n(n)
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(retry_after(&not_until, &self.clock)),
            Err(_) => Err(1),
        }
    }

    /// Whether `ip` may still try a bearer token (checked before verification).
    pub fn auth_allowed(&self, ip: Option<IpAddr>) -> Result<(), u64> {
        let (Some(ip), Some(_)) = (ip, quota(self.limits.auth_failures)) else {
            return Ok(());
        };
        match self.failures.peek(&failure_key(ip)) {
            Some(b) => b
                .check_key(&Use::Peek)
                .map_err(|n| retry_after(&n, &self.clock)),
            None => Ok(()),
        }
    }

    /// Records a failed bearer-token attempt from `ip`.
    pub fn auth_failed(&self, ip: Option<IpAddr>) {
        let (Some(ip), Some(q)) = (ip, quota(self.limits.auth_failures)) else {
            return;
        };
        let _ = self
            .failures
            .get_or_insert_with(&failure_key(ip), || {
                Arc::new(FailureBucket::new(
                    q,
                    FailureState::default(),
                    self.clock.clone(),
                ))
            })
            .check_key(&Use::Count);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn bucket_limits_and_isolates_callers() {
        let l = RateLimiter::new(Limits {
            crypto: Rate {
                per_sec: 1.0,
                burst: 3.0,
            },
            ..Limits::default()
        });
        let a = InstanceId::new();
        for _ in 0..3 {
            assert!(l.check(a, "p", Class::Crypto).is_ok());
        }
        assert_eq!(l.check(a, "p", Class::Crypto), Err(1));
        assert!(
            l.check(a, "q", Class::Crypto).is_ok(),
            "another principal has its own bucket"
        );
        assert!(
            l.check(a, "p", Class::Management).is_ok(),
            "management is unlimited here"
        );
    }

    #[test]
    fn creation_sub_limits_are_on_by_default() {
        // on by default, with a burst
        let l = RateLimiter::new(Limits::default());
        let a = InstanceId::new();
        for _ in 0..20 {
            assert!(l.check(a, "p", Class::ImportTokenCreate).is_ok());
        }
        assert!(l.check(a, "p", Class::ImportTokenCreate).is_err());
        assert!(l.check(a, "p", Class::KeyCreate).is_ok());
    }

    #[test]
    fn auth_failures_are_capped_per_address() {
        let l = RateLimiter::new(Limits::default());
        let ip: IpAddr = [10, 0, 0, 1].into();
        for _ in 0..30 {
            assert!(l.auth_allowed(Some(ip)).is_ok());
            l.auth_failed(Some(ip));
        }
        assert!(l.auth_allowed(Some(ip)).is_err());
        assert!(l.auth_allowed(Some([10, 0, 0, 2].into())).is_ok());
        // IPv4-mapped IPv6 is the same address.
        assert!(l
            .auth_allowed(Some("::ffff:10.0.0.1".parse::<IpAddr>().unwrap()))
            .is_err());
    }

    #[test]
    fn ipv6_failures_count_per_64() {
        let l = RateLimiter::new(Limits::default());
        for i in 0..30u16 {
            let ip: IpAddr = format!("2001:db8:0:1::{i:x}").parse().unwrap();
            l.auth_failed(Some(ip));
        }
        let other_host_same_64: IpAddr = "2001:db8:0:1:ffff::1".parse().unwrap();
        assert!(l.auth_allowed(Some(other_host_same_64)).is_err());
        let other_64: IpAddr = "2001:db8:0:2::1".parse().unwrap();
        assert!(l.auth_allowed(Some(other_64)).is_ok());
    }

    #[test]
    fn tables_stay_bounded_and_active_buckets_survive() {
        let l = RateLimiter::new(Limits {
            management: Rate {
                per_sec: 0.001,
                burst: 3.0,
            },
            table_entries: 200,
            ..Limits::default()
        });
        let me = InstanceId::new();
        for round in 0..50 {
            // An active caller keeps spending its bucket...
            let _ = l.check(me, "busy", Class::Management);
            // ...while many others come and go.
            for i in 0..100 {
                let _ = l.check(
                    InstanceId::new(),
                    &format!("p{round}-{i}"),
                    Class::Management,
                );
                l.auth_failed(Some(IpAddr::from([10, 1, round as u8, i as u8])));
            }
        }
        for s in l.stats() {
            assert!(s.entries <= s.capacity && s.capacity < 300, "{s:?}");
        }
        // Its bucket survived the churn: it is still empty (a new one would allow 3).
        assert!(l.check(me, "busy", Class::Management).is_err());
    }

    #[test]
    fn a_peek_counts_nothing_and_retry_after_rounds_up() {
        let l = RateLimiter::new(Limits {
            auth_failures: Rate {
                per_sec: 0.25,
                burst: 2.0,
            },
            ..Limits::default()
        });
        let ip: IpAddr = [10, 0, 0, 9].into();
        for _ in 0..100 {
            assert!(l.auth_allowed(Some(ip)).is_ok());
        }
        l.auth_failed(Some(ip));
        assert!(l.auth_allowed(Some(ip)).is_ok());
        l.auth_failed(Some(ip));
        // one failure every 4 s: the next try is 3 to 4 s away, said as 4
        assert_eq!(l.auth_allowed(Some(ip)), Err(4));
        // failures past the cap are not counted (the wait does not grow)
        l.auth_failed(Some(ip));
        assert_eq!(l.auth_allowed(Some(ip)), Err(4));
    }

    #[test]
    fn extreme_rates_neither_panic_nor_disable_the_limit() {
        for (per_sec, burst) in [(1e-300, 1e12), (1e-300, 1.0), (1e300, 1.0), (1e12, 4e9)] {
            let l = RateLimiter::new(Limits {
                crypto: Rate { per_sec, burst },
                ..Limits::default()
            });
            let a = InstanceId::new();
            assert!(l.check(a, "p", Class::Crypto).is_ok(), "{per_sec} {burst}");
        }
        // a fractional burst counts its whole part
        let l = RateLimiter::new(Limits {
            crypto: Rate {
                per_sec: 0.001,
                burst: 2.9,
            },
            ..Limits::default()
        });
        let a = InstanceId::new();
        assert!(l.check(a, "p", Class::Crypto).is_ok());
        assert!(l.check(a, "p", Class::Crypto).is_ok());
        assert!(l.check(a, "p", Class::Crypto).is_err());
    }
}

//! Rate limits: token buckets per (instance, principal, action class), and a limit on failed
//! bearer-token attempts per source address. Over a limit: 429 with `Retry-After` and the
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
use std::sync::Arc;
use std::time::Instant;

use keyward_domain::bounded::{BoundedCache, CacheStats};
use keyward_domain::InstanceId;
use parking_lot::Mutex;

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

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Takes one token; `Err(seconds until one is available)` when empty.
    fn take(&mut self, rate: Rate, now: Instant) -> Result<(), u64> {
        let refill = now.duration_since(self.at).as_secs_f64() * rate.per_sec;
        self.tokens = (self.tokens + refill).min(rate.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - self.tokens) / rate.per_sec;
            Err(wait.ceil().max(1.0) as u64)
        }
    }

    fn peek(&mut self, rate: Rate, now: Instant) -> Result<(), u64> {
        let refill = now.duration_since(self.at).as_secs_f64() * rate.per_sec;
        let tokens = (self.tokens + refill).min(rate.burst);
        if tokens >= 1.0 {
            Ok(())
        } else {
            Err(((1.0 - tokens) / rate.per_sec).ceil().max(1.0) as u64)
        }
    }
}

type Shared = Arc<Mutex<Bucket>>;

pub struct RateLimiter {
    limits: Limits,
    callers: BoundedCache<(InstanceId, String, Class), Shared>,
    failures: BoundedCache<IpAddr, Shared>,
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
        let rate = self.rate(class);
        if rate.per_sec <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        self.callers
            .get_or_insert_with(&(instance, iam_id.to_string(), class), || {
                Arc::new(Mutex::new(Bucket {
                    tokens: rate.burst,
                    at: now,
                }))
            })
            .lock()
            .take(rate, now)
    }

    /// Whether `ip` may still try a bearer token (checked before verification).
    pub fn auth_allowed(&self, ip: Option<IpAddr>) -> Result<(), u64> {
        let rate = self.limits.auth_failures;
        let (Some(ip), true) = (ip, rate.per_sec > 0.0) else {
            return Ok(());
        };
        let now = Instant::now();
        match self.failures.peek(&failure_key(ip)) {
            Some(b) => b.lock().peek(rate, now),
            None => Ok(()),
        }
    }

    /// Records a failed bearer-token attempt from `ip`.
    pub fn auth_failed(&self, ip: Option<IpAddr>) {
        let rate = self.limits.auth_failures;
        let (Some(ip), true) = (ip, rate.per_sec > 0.0) else {
            return;
        };
        let now = Instant::now();
        let _ = self
            .failures
            .get_or_insert_with(&failure_key(ip), || {
                Arc::new(Mutex::new(Bucket {
                    tokens: rate.burst,
                    at: now,
                }))
            })
            .lock()
            .take(rate, now);
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
}

//! Instance policies (`/instance/policies`) and their effects: defaults for new keys
//! (dual-auth, rotation), the `keyCreateImportAccess` rules, and `allowedIP`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward_domain::bounded::{BoundedCache, CacheStats};
use keyward_domain::{Action, InstanceId};
use keyward_store::PolicyRow;
use serde_json::{json, Map, Value};

use crate::{Caller, ErrorCode, KeyService, ServiceError, ServiceResult};

pub const POLICY_TYPES: [&str; 6] = [
    "dualAuthDelete",
    "rotation",
    "allowedNetwork",
    "allowedIP",
    "keyCreateImportAccess",
    "metrics",
];

/// One policy as submitted.
#[derive(Debug, Clone)]
pub struct InstancePolicyInput {
    pub policy_type: String,
    pub enabled: bool,
    pub attributes: Option<Map<String, Value>>,
}

/// What `keyCreateImportAccess` allows (everything, when the policy is off).
#[derive(Debug, Clone)]
pub struct ImportAccess {
    pub create_root_key: bool,
    pub create_standard_key: bool,
    pub import_root_key: bool,
    pub import_standard_key: bool,
    pub enforce_token: bool,
}

/// Instance defaults applied to keys created from now on.
#[derive(Debug, Clone, Default)]
pub struct KeyDefaults {
    pub dual_auth: bool,
    pub rotation: Option<i64>,
}

/// Instance policies cached per instance for a short time (they are read on every request of
/// a caller with a role, for `allowedIP`). Bounded, with eviction.
pub struct PolicyCache {
    ttl: Duration,
    map: BoundedCache<InstanceId, (Arc<Vec<PolicyRow>>, Instant)>,
}

impl PolicyCache {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            map: BoundedCache::new("policy", capacity),
        }
    }

    fn get(&self, instance: InstanceId) -> Option<Arc<Vec<PolicyRow>>> {
        let ttl = self.ttl;
        self.map
            .get_valid(&instance, |(_, at)| at.elapsed() < ttl)
            .map(|(p, _)| p)
    }

    fn put(&self, instance: InstanceId, p: Arc<Vec<PolicyRow>>) {
        if !self.ttl.is_zero() {
            self.map.insert(instance, (p, Instant::now()));
        }
    }

    pub(crate) fn invalidate(&self, instance: InstanceId) {
        self.map.remove(&instance);
    }

    pub fn sweep(&self) {
        let ttl = self.ttl;
        self.map.retain(|_, (_, at)| at.elapsed() < ttl);
    }

    pub fn stats(&self) -> CacheStats {
        self.map.stats()
    }
}

fn bad(field: &str, msg: &str) -> ServiceError {
    ServiceError::field(field, msg.to_string())
}

/// Parses `a.b.c.d/n` or `x::y/n` (a bare address means a single host).
pub fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, bits) = match s.split_once('/') {
        Some((a, b)) => (a, b.parse::<u8>().ok()?),
        None => (s, if s.contains(':') { 128 } else { 32 }),
    };
    let ip: IpAddr = addr.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (bits <= max).then_some((ip, bits))
}

pub fn cidr_contains((net, bits): (IpAddr, u8), ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(bits))
            };
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(bits))
            };
            u128::from(n) & mask == u128::from(i) & mask
        }
        (IpAddr::V4(n), IpAddr::V6(i)) => i
            .to_ipv4_mapped()
            .is_some_and(|i| cidr_contains((IpAddr::V4(n), bits), IpAddr::V4(i))),
        _ => false,
    }
}

fn validate(p: &InstancePolicyInput) -> ServiceResult<Value> {
    let attrs = p.attributes.clone();
    let has_attrs = attrs.as_ref().is_some_and(|a| !a.is_empty());
    let no_attr_type = matches!(p.policy_type.as_str(), "dualAuthDelete" | "metrics");
    if !p.enabled || no_attr_type {
        if has_attrs {
            return Err(bad(
                "attributes",
                "The field `attributes` must be: absent when the policy is disabled or has no attributes",
            ));
        }
        return Ok(json!({"enabled": p.enabled}));
    }
    let Some(a) = attrs else {
        return Err(bad(
            "attributes",
            "The field `attributes` is required when the policy is enabled",
        ));
    };
    let allowed: &[&str] = match p.policy_type.as_str() {
        "rotation" => &["interval_month"],
        "allowedNetwork" => &["allowed_network"],
        "allowedIP" => &["allowed_ip"],
        "keyCreateImportAccess" => &[
            "create_root_key",
            "create_standard_key",
            "import_root_key",
            "import_standard_key",
            "enforce_token",
        ],
        _ => &[],
    };
    if let Some(k) = a.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ServiceError::new(
            ErrorCode::BadBody,
            format!("json: unknown field \"{k}\""),
        ));
    }
    match p.policy_type.as_str() {
        "rotation" => {
            let m = a.get("interval_month").and_then(Value::as_i64);
            if !m.is_some_and(|m| (1..=12).contains(&m)) {
                return Err(bad(
                    "interval_month",
                    "The field `interval_month` must be: an integer between 1 and 12 (inclusive)",
                ));
            }
        }
        "allowedNetwork" => {
            let v = a.get("allowed_network").and_then(Value::as_str);
            if !matches!(v, Some("public-and-private") | Some("private-only")) {
                return Err(bad(
                    "allowed_network",
                    "The field `allowed_network` must be: public-and-private or private-only",
                ));
            }
        }
        "allowedIP" => {
            let ok = a
                .get("allowed_ip")
                .and_then(Value::as_array)
                .is_some_and(|l| {
                    !l.is_empty() && l.iter().all(|c| c.as_str().and_then(parse_cidr).is_some())
                });
            if !ok {
                return Err(bad(
                    "allowed_ip",
                    "The field `allowed_ip` must be: a non-empty array of IPv4/IPv6 CIDR strings",
                ));
            }
        }
        "keyCreateImportAccess" if a.values().any(|v| !v.is_boolean()) => {
            return Err(bad(
                "attributes",
                "The keyCreateImportAccess attributes must be booleans",
            ));
        }
        _ => {}
    }
    Ok(json!({"enabled": true, "attributes": a}))
}

impl KeyService {
    async fn policies_of(&self, instance: InstanceId) -> ServiceResult<Arc<Vec<PolicyRow>>> {
        if let Some(p) = self.policies.get(instance) {
            return Ok(p);
        }
        let p = Arc::new(self.store.instance_policies(instance).await?);
        self.policies.put(instance, p.clone());
        Ok(p)
    }

    fn enabled<'a>(policies: &'a [PolicyRow], t: &str) -> Option<&'a Value> {
        policies
            .iter()
            .find(|p| p.policy_type == t)
            .filter(|p| p.data.get("enabled").and_then(Value::as_bool) == Some(true))
            .map(|p| &p.data)
    }

    /// `GET /instance/policies[?policy=type]`.
    pub async fn instance_policies(
        &self,
        caller: &Caller,
        policy_type: Option<&str>,
    ) -> ServiceResult<Vec<PolicyRow>> {
        caller.require(Action::ReadInstancePolicies)?;
        let all = self.store.instance_policies(caller.instance).await?;
        Ok(all
            .into_iter()
            .filter(|p| policy_type.is_none_or(|t| p.policy_type == t))
            .collect())
    }

    /// `PUT /instance/policies`: validates every policy first, then writes them.
    pub async fn set_instance_policies(
        &self,
        caller: &Caller,
        input: Vec<InstancePolicyInput>,
    ) -> ServiceResult<()> {
        caller.require(Action::WriteInstancePolicies)?;
        let mut rows = Vec::with_capacity(input.len());
        let now = self.now();
        for p in &input {
            if !POLICY_TYPES.contains(&p.policy_type.as_str()) {
                return Err(bad("policy_type", "The field `policy_type` must be: one of dualAuthDelete, rotation, allowedNetwork, allowedIP, keyCreateImportAccess, metrics"));
            }
            rows.push(PolicyRow {
                instance_id: caller.instance,
                policy_type: p.policy_type.clone(),
                data: validate(p)?,
                created_at: now,
                created_by: caller.iam_id.clone(),
                updated_at: now,
                updated_by: caller.iam_id.clone(),
            });
        }
        self.audit(caller, Action::WriteInstancePolicies, None)
            .await?;
        for r in &rows {
            self.store.put_instance_policy(r).await?;
        }
        self.policies.invalidate(caller.instance);
        Ok(())
    }

    pub(crate) async fn import_access(&self, instance: InstanceId) -> ServiceResult<ImportAccess> {
        let p = self.policies_of(instance).await?;
        let attrs = Self::enabled(&p, "keyCreateImportAccess").and_then(|d| d.get("attributes"));
        let flag = |k: &str, default: bool| {
            attrs
                .and_then(|a| a.get(k))
                .and_then(Value::as_bool)
                .unwrap_or(default)
        };
        Ok(ImportAccess {
            create_root_key: flag("create_root_key", true),
            create_standard_key: flag("create_standard_key", true),
            import_root_key: flag("import_root_key", true),
            import_standard_key: flag("import_standard_key", true),
            enforce_token: flag("enforce_token", false),
        })
    }

    pub(crate) async fn instance_key_defaults(
        &self,
        instance: InstanceId,
    ) -> ServiceResult<KeyDefaults> {
        let p = self.policies_of(instance).await?;
        Ok(KeyDefaults {
            dual_auth: Self::enabled(&p, "dualAuthDelete").is_some(),
            rotation: Self::enabled(&p, "rotation")
                .and_then(|d| d.pointer("/attributes/interval_month"))
                .and_then(Value::as_i64),
        })
    }

    /// Whether `ip` may call the instance under its `allowedIP` policy.
    pub(crate) async fn ip_allowed(
        &self,
        instance: InstanceId,
        ip: Option<IpAddr>,
    ) -> ServiceResult<bool> {
        let p = self.policies_of(instance).await?;
        let Some(list) = Self::enabled(&p, "allowedIP")
            .and_then(|d| d.pointer("/attributes/allowed_ip"))
            .and_then(Value::as_array)
        else {
            return Ok(true);
        };
        let Some(ip) = ip else { return Ok(false) };
        Ok(list
            .iter()
            .filter_map(|c| c.as_str().and_then(parse_cidr))
            .any(|c| cidr_contains(c, ip)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_matching() {
        let ip = |s: &str| s.parse::<IpAddr>().ok();
        let c = parse_cidr("10.1.0.0/16");
        assert!(c.is_some_and(|c| ip("10.1.200.3").is_some_and(|i| cidr_contains(c, i))));
        assert!(c.is_some_and(|c| ip("10.2.0.1").is_some_and(|i| !cidr_contains(c, i))));
        let v6 = parse_cidr("2001:db8::/32");
        assert!(v6.is_some_and(|c| ip("2001:db8:1::1").is_some_and(|i| cidr_contains(c, i))));
        assert!(parse_cidr("10.0.0.0/33").is_none());
        assert!(parse_cidr("nonsense").is_none());
        let host = parse_cidr("127.0.0.1");
        assert!(host.is_some_and(|c| ip("::ffff:127.0.0.1").is_some_and(|i| cidr_contains(c, i))));
    }
}

//! Prometheus metrics: requests by route, method and status; latency histograms by route;
//! plus what the service reports at scrape time (import-token pool depth, crypto operation
//! counts, store timings, cache sizes). Kept and rendered with `prometheus-client`, in the
//! Prometheus text exposition format (version 0.0.4) at `/metrics`.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use keyward_domain::bounded::CacheStats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::endpoint::Endpoint;
use crate::AppState;

/// The `Content-Type` of `/metrics`.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The `method` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct MethodLabel(axum::http::Method);

impl EncodeLabelValue for MethodLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.0.as_str(), encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: MethodLabel,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// Request counters and latency histograms, per route.
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabel, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
        }
    }
}

impl Metrics {
    pub fn record(&self, route: &'static str, method: &axum::http::Method, status: u16, secs: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method: MethodLabel(method.clone()),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabel { route })
            .observe(secs);
    }

    /// Adds the request metrics to a registry (they stay shared with `self`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "keyward_http_requests",
            "HTTP requests by route, method and status",
            self.requests.clone(),
        );
        registry.register(
            "keyward_http_request_duration_seconds",
            "Request latency by route",
            self.latency.clone(),
        );
    }
}

/// Renders a registry in the text exposition format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::with_capacity(8192);
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, registry);
    out
}

/// A one-off gauge (read when the scrape is built).
pub fn const_gauge(value: i64) -> ConstGauge {
    ConstGauge::new(value)
}

/// What the service counts outside the request path, read once per scrape: crypto operations
/// by kind, rows refused by their integrity check, and the size of every cache and limiter
/// table.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub crypto: Vec<(&'static str, u64)>,
    pub integrity_failures: Vec<(&'static str, u64)>,
    pub caches: Vec<CacheStats>,
}

fn encode_counters(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (&'static str, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, n) in values {
        ConstCounter::new(n).encode(m.encode_family(&[(label, value)])?)?;
    }
    Ok(())
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_counters(
            &mut encoder,
            "keyward_crypto_operations",
            "Cryptographic operations by kind.",
            "op",
            self.crypto.iter().copied(),
        )?;
        // Stored rows refused because their authentication tag did not verify
        // (`docs/threat-model.md`).
        encode_counters(
            &mut encoder,
            "keyward_row_integrity_failures",
            "Stored rows refused because their integrity check failed (database tampering).",
            "table",
            self.integrity_failures.iter().copied(),
        )?;
        // The whole process's resident memory (VmRSS), read at scrape time: what the cache
        // bounds and `--sqlite-cache-kib` keep bounded (`docs/design.md`, "Caches").
        if let Some(bytes) = resident_bytes() {
            let m = encoder.encode_descriptor(
                "process_resident_memory_bytes",
                "Resident memory of the server process, in bytes.",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(bytes).encode(m)?;
        }
        type Field = fn(&CacheStats) -> u64;
        let families: [(&str, MetricType, &str, Field); 4] = [
            (
                "keyward_cache_entries",
                MetricType::Gauge,
                "Entries in each in-memory cache and limiter table.",
                |c| c.entries,
            ),
            (
                "keyward_cache_capacity",
                MetricType::Gauge,
                "Most entries each cache and limiter table holds (past it, entries are evicted).",
                |c| c.capacity,
            ),
            (
                "keyward_cache_hits",
                MetricType::Counter,
                "Cache lookups answered from the cache.",
                |c| c.hits,
            ),
            (
                "keyward_cache_misses",
                MetricType::Counter,
                "Cache lookups not answered from the cache (absent or expired).",
                |c| c.misses,
            ),
        ];
        for (name, kind, help, field) in families {
            let mut m = encoder.encode_descriptor(name, help, None, kind)?;
            for c in &self.caches {
                let labels = [("cache", c.name)];
                if kind == MetricType::Gauge {
                    ConstGauge::new(field(c)).encode(m.encode_family(&labels)?)?;
                } else if !matches!(c.name, "rate_limit" | "auth_failures") {
                    // Limiter tables are not caches: no hit/miss series for them.
                    ConstCounter::new(field(c)).encode(m.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }
}

/// Requests answered 503 because the database was unavailable (see [`count_store_unavailable`]).
static STORE_UNAVAILABLE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Counts one request refused with 503 because the store could not reach a writable database
/// (called by the error mapping, `error.rs`).
pub fn count_store_unavailable() {
    STORE_UNAVAILABLE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// The database's health, read once per scrape: errors by class, 503s for an unavailable
/// store, failovers seen and the time without a writable primary (`docs/postgres.md`).
#[derive(Debug, Default)]
pub struct DatabaseSnapshot {
    pub health: keyward_service::DatabaseHealth,
    pub unavailable_responses: u64,
}

impl DatabaseSnapshot {
    pub fn now() -> Self {
        Self {
            health: keyward_service::database_health(),
            unavailable_responses: STORE_UNAVAILABLE.load(std::sync::atomic::Ordering::Relaxed),
        }
    }
}

impl Collector for DatabaseSnapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let h = &self.health;
        encode_counters(
            &mut encoder,
            "keyward_database_errors",
            "Database errors by class: connection (the server or the connection went away), \
             read_only (a standby or read-only server refused a write), other.",
            "class",
            [
                ("connection", h.errors_connection),
                ("read_only", h.errors_read_only),
                ("other", h.errors_other),
            ],
        )?;
        let counters: [(&str, &str, u64); 2] = [
            (
                "keyward_store_unavailable_responses",
                "Requests answered 503 because the database was unavailable.",
                self.unavailable_responses,
            ),
            (
                "keyward_database_failovers",
                "Changes of the database server reached by new connections (failovers seen).",
                h.failovers,
            ),
        ];
        for (name, help, n) in counters {
            let m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(n).encode(m)?;
        }
        let m = encoder.encode_descriptor(
            "keyward_database_unwritable_seconds",
            "Seconds between a first database failure and the next committed write, summed.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(h.unwritable_seconds).encode(m)?;
        Ok(())
    }
}

/// VmRSS of this process from `/proc/self/status` (None where there is no procfs).
fn resident_bytes() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: i64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Middleware: times every routed request.
pub async fn track(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<Endpoint>()
        .map_or("unmatched", Endpoint::metrics_label);
    let method = req.method().clone();
    let resp = next.run(req).await;
    st.metrics.record(
        route,
        &method,
        resp.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    resp
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_exposition_keeps_names_labels_and_types() {
        let m = Metrics::default();
        for _ in 0..3 {
            m.record("/api/v2/keys", &axum::http::Method::POST, 201, 0.002);
        }
        m.record("/api/v2/keys", &axum::http::Method::GET, 200, 3.0);
        let mut reg = Registry::default();
        m.register(&mut reg);
        reg.register(
            "keyward_sealed",
            "1 when the service is sealed (master key unavailable)",
            const_gauge(0),
        );
        reg.register_collector(Box::new(Snapshot {
            crypto: vec![("wrap", 7), ("unwrap", 0)],
            integrity_failures: vec![("keys", 1)],
            caches: vec![
                CacheStats {
                    name: "key",
                    entries: 2,
                    capacity: 10,
                    hits: 5,
                    misses: 1,
                },
                CacheStats {
                    name: "rate_limit",
                    entries: 1,
                    capacity: 10,
                    hits: 0,
                    misses: 0,
                },
            ],
        }));
        reg.register_collector(Box::new(DatabaseSnapshot {
            health: keyward_service::DatabaseHealth {
                errors_connection: 4,
                errors_read_only: 2,
                errors_other: 1,
                failovers: 1,
                unwritable_seconds: 2.5,
            },
            unavailable_responses: 3,
        }));
        let text = encode(&reg);
        for line in [
            "# TYPE keyward_database_errors_total counter",
            r#"keyward_database_errors_total{class="connection"} 4"#,
            r#"keyward_database_errors_total{class="read_only"} 2"#,
            r#"keyward_database_errors_total{class="other"} 1"#,
            "keyward_store_unavailable_responses_total 3",
            "keyward_database_failovers_total 1",
            "# TYPE keyward_database_unwritable_seconds_total counter",
            "keyward_database_unwritable_seconds_total 2.5",
            "# HELP keyward_http_requests_total HTTP requests by route, method and status.",
            "# TYPE keyward_http_requests_total counter",
            r#"keyward_http_requests_total{route="/api/v2/keys",method="POST",status="201"} 3"#,
            r#"keyward_http_requests_total{route="/api/v2/keys",method="GET",status="200"} 1"#,
            "# TYPE keyward_http_request_duration_seconds histogram",
            r#"keyward_http_request_duration_seconds_bucket{route="/api/v2/keys",le="0.0025"} 3"#,
            r#"keyward_http_request_duration_seconds_bucket{route="/api/v2/keys",le="2.5"} 3"#,
            r#"keyward_http_request_duration_seconds_bucket{route="/api/v2/keys",le="+Inf"} 4"#,
            r#"keyward_http_request_duration_seconds_count{route="/api/v2/keys"} 4"#,
            "# TYPE keyward_sealed gauge",
            "keyward_sealed 0",
            "# TYPE keyward_crypto_operations_total counter",
            r#"keyward_crypto_operations_total{op="wrap"} 7"#,
            r#"keyward_crypto_operations_total{op="unwrap"} 0"#,
            r#"keyward_row_integrity_failures_total{table="keys"} 1"#,
            "# TYPE keyward_cache_entries gauge",
            r#"keyward_cache_entries{cache="key"} 2"#,
            r#"keyward_cache_entries{cache="rate_limit"} 1"#,
            r#"keyward_cache_capacity{cache="rate_limit"} 10"#,
            "# TYPE keyward_cache_hits_total counter",
            r#"keyward_cache_hits_total{cache="key"} 5"#,
            r#"keyward_cache_misses_total{cache="key"} 1"#,
            "# TYPE process_resident_memory_bytes gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
        assert!(!text.contains(r#"keyward_cache_hits_total{cache="rate_limit"}"#));
        let sum = text
            .lines()
            .find_map(|l| {
                l.strip_prefix(
                    r#"keyward_http_request_duration_seconds_sum{route="/api/v2/keys"} "#,
                )
            })
            .unwrap();
        assert!((sum.parse::<f64>().unwrap() - 3.006).abs() < 1e-9, "{sum}");
        let rss: i64 = text
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(rss > 1024 * 1024, "{rss}");
    }
}

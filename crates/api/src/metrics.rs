//! Prometheus metrics: requests by route, method and status; latency histograms by route;
//! plus gauges the service reports (import-token pool depth, crypto operation counts).
//! Rendered in the text exposition format at `/metrics`.

use std::collections::HashMap;
use std::fmt::Write;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use parking_lot::Mutex;

use crate::AppState;

const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// Request counters and latency histograms.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<HashMap<(String, String, u16), u64>>,
    latency: Mutex<HashMap<String, Histogram>>,
}

impl Metrics {
    pub fn record(&self, route: &str, method: &str, status: u16, secs: f64) {
        *self
            .requests
            .lock()
            .entry((route.to_string(), method.to_string(), status))
            .or_default() += 1;
        let mut lat = self.latency.lock();
        let h = lat.entry(route.to_string()).or_default();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                if let Some(c) = h.counts.get_mut(i) {
                    *c += 1;
                }
            }
        }
        h.sum += secs;
        h.count += 1;
    }

    /// The text exposition.
    pub fn render(&self, extra: &[(&str, &str, f64)]) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP keyward_http_requests_total HTTP requests by route, method and status.\n# TYPE keyward_http_requests_total counter\n");
        let mut reqs: Vec<_> = self
            .requests
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        reqs.sort();
        for ((route, method, status), n) in reqs {
            let _ = writeln!(
                out,
                "keyward_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str("# HELP keyward_http_request_duration_seconds Request latency by route.\n# TYPE keyward_http_request_duration_seconds histogram\n");
        let lat = self.latency.lock();
        let mut routes: Vec<_> = lat.keys().cloned().collect();
        routes.sort();
        for route in routes {
            if let Some(h) = lat.get(&route) {
                for (i, b) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "keyward_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{b}\"}} {}",
                        h.counts.get(i).copied().unwrap_or(0)
                    );
                }
                let _ = writeln!(out, "keyward_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}", h.count);
                let _ = writeln!(
                    out,
                    "keyward_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                    h.sum
                );
                let _ = writeln!(
                    out,
                    "keyward_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                    h.count
                );
            }
        }
        for (name, help, v) in extra {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        out
    }
}

/// Middleware: times every routed request.
pub async fn track(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_string();
    let resp = next.run(req).await;
    st.metrics.record(
        &route,
        &method,
        resp.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    resp
}

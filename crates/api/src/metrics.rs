//! Prometheus metrics: requests by route, method and status; latency histograms by route;
//! plus gauges the service reports (import-token pool depth, crypto operation counts).
//! Rendered in the text exposition format at `/metrics`.

use std::collections::HashMap;
use std::fmt::Write;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use parking_lot::Mutex;

use crate::endpoint::Endpoint;
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

#[derive(Default)]
struct RouteStats {
    /// (method, status) → count
    counts: HashMap<(axum::http::Method, u16), u64>,
    latency: Histogram,
}

/// Request counters and latency histograms, per route (one lock, and no allocation once a
/// route has been seen).
#[derive(Default)]
pub struct Metrics {
    routes: Mutex<HashMap<String, RouteStats>>,
}

impl Metrics {
    pub fn record(&self, route: &str, method: &axum::http::Method, status: u16, secs: f64) {
        let mut routes = self.routes.lock();
        let stats = match routes.get_mut(route) {
            Some(s) => s,
            None => routes.entry(route.to_string()).or_default(),
        };
        *stats.counts.entry((method.clone(), status)).or_default() += 1;
        let h = &mut stats.latency;
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
        let routes = self.routes.lock();
        let mut names: Vec<&String> = routes.keys().collect();
        names.sort();
        out.push_str("# HELP keyward_http_requests_total HTTP requests by route, method and status.\n# TYPE keyward_http_requests_total counter\n");
        for route in &names {
            if let Some(st) = routes.get(*route) {
                let mut counts: Vec<_> = st.counts.iter().collect();
                counts.sort_by_key(|((m, s), _)| (m.as_str().to_string(), *s));
                for ((method, status), n) in counts {
                    let _ = writeln!(
                        out,
                        "keyward_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}"
                    );
                }
            }
        }
        out.push_str("# HELP keyward_http_request_duration_seconds Request latency by route.\n# TYPE keyward_http_request_duration_seconds histogram\n");
        for route in &names {
            if let Some(st) = routes.get(*route) {
                let h = &st.latency;
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
        drop(routes);
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

//! Turning measurements into the JSON report and the text table.

use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::http::RunResult;
use crate::stats::percentile;

pub struct Scenario {
    pub name: String,
    pub mode: &'static str,
    pub connections: usize,
    pub res: RunResult,
    pub note: Option<String>,
    /// Route with the most requests during the run, and its server-side mean latency (ms),
    /// from the server's /metrics.
    pub server_route: Option<(String, f64)>,
    /// With --rounds > 1: requests/s of every round, in run order.
    pub rounds_rps: Vec<f64>,
}

fn rps_of(s: &Scenario) -> f64 {
    let secs = s.res.elapsed.as_secs_f64();
    if secs > 0.0 {
        s.res.latencies_ns.len() as f64 / secs
    } else {
        0.0
    }
}

/// The round with the median requests/s (the lower middle one for an even count), carrying
/// the requests/s of all rounds.
pub fn median_round(mut runs: Vec<Scenario>) -> Option<Scenario> {
    let all: Vec<f64> = runs
        .iter()
        .map(|s| (rps_of(s) * 10.0).round() / 10.0)
        .collect();
    runs.sort_by(|a, b| rps_of(a).total_cmp(&rps_of(b)));
    let idx = runs.len().saturating_sub(1) / 2;
    let mut s = runs.into_iter().nth(idx)?;
    if all.len() > 1 {
        s.rounds_rps = all;
    }
    Some(s)
}

impl Scenario {
    pub fn new(name: &str, mode: &'static str, connections: usize, mut res: RunResult) -> Self {
        res.latencies_ns.sort_unstable();
        Self {
            name: name.to_string(),
            mode,
            connections,
            res,
            note: None,
            server_route: None,
            rounds_rps: Vec::new(),
        }
    }

    fn to_json(&self) -> Value {
        let r = &self.res;
        let lat = &r.latencies_ns;
        let ms = |ns: Option<u64>| ns.map(|v| (v as f64 / 1e6 * 1000.0).round() / 1000.0);
        let mean = if lat.is_empty() {
            None
        } else {
            Some(lat.iter().map(|&v| v as f64).sum::<f64>() / lat.len() as f64)
        };
        let secs = r.elapsed.as_secs_f64();
        let rps = if self.mode == "closed-loop" && secs > 0.0 {
            Some((lat.len() as f64 / secs * 10.0).round() / 10.0)
        } else {
            None
        };
        let statuses: serde_json::Map<String, Value> = r
            .statuses
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let errors = r.errors();
        json!({
            "name": self.name,
            "mode": self.mode,
            "connections": self.connections,
            "measured_s": (secs * 1000.0).round() / 1000.0,
            "requests": lat.len(),
            "ok": r.ok,
            "rps": rps,
            "p50_ms": ms(percentile(lat, 50.0)),
            "p99_ms": ms(percentile(lat, 99.0)),
            "p999_ms": ms(percentile(lat, 99.9)),
            "max_ms": ms(lat.last().copied()),
            "mean_ms": mean.map(|m| (m / 1e6 * 1000.0).round() / 1000.0),
            "errors": errors,
            "error_statuses": statuses,
            "transport_errors": r.transport_errors,
            "first_error": r.first_error,
            "flagged": errors > 0,
            "cpu_cores": r.cpu.map(|c| json!({
                "server": (c.server * 100.0).round() / 100.0,
                "client": (c.client * 100.0).round() / 100.0,
                "other": (c.other * 100.0).round() / 100.0,
            })),
            "server_route": self.server_route.as_ref().map(|(r, _)| r.clone()),
            "server_mean_ms": self.server_route.as_ref().map(|(_, m)| (m * 1000.0).round() / 1000.0),
            "pool_depth_before_each": if r.pool_depths.is_empty() { Value::Null } else { json!(r.pool_depths) },
            "pool_misses": if r.pool_depths.is_empty() { Value::Null } else {
                json!(r.pool_depths.iter().filter(|d| **d < 1.0).count())
            },
            "rounds_rps": if self.rounds_rps.is_empty() { Value::Null } else { json!(self.rounds_rps) },
            "note": self.note,
        })
    }
}

fn find<'a>(scenarios: &'a [Value], name: &str) -> Option<&'a Value> {
    scenarios.iter().find(|s| s["name"] == name)
}

fn num(v: Option<&Value>, field: &str) -> Option<f64> {
    v.and_then(|s| s.get(field)).and_then(Value::as_f64)
}

/// Emulator figure from the issue: an AWS KMS emulator in Go, no auth, 16 connections.
const GO_EMULATOR_RPS: f64 = 18_000.0;
/// Approximate RSA-4096 OAEP decryptions per second per core on this machine.
const RSA_PER_CORE: f64 = 300.0;

pub fn build(
    machine: Value,
    config: Value,
    scenarios: &[Scenario],
    rsa: Option<(f64, f64)>,
) -> Value {
    let sc: Vec<Value> = scenarios.iter().map(Scenario::to_json).collect();
    let base = num(find(&sc, "baseline"), "rps");
    let ratio = |name: &str| match (num(find(&sc, name), "rps"), base) {
        (Some(x), Some(b)) if b > 0.0 => Some((x / b * 1000.0).round() / 1000.0),
        _ => None,
    };
    let mut targets = Vec::new();
    let mut target = |name: String, want: String, value: Option<f64>, pass: Option<bool>| {
        targets.push(json!({"target": name, "want": want, "value": value, "pass": pass}));
    };
    for op in ["wrap", "unwrap"] {
        let s = find(&sc, op);
        if s.is_none() {
            continue;
        }
        let r = ratio(op);
        target(
            format!("{op} req/s / baseline req/s"),
            ">= 0.60".into(),
            r,
            r.map(|r| r >= 0.6),
        );
        let p99 = num(s, "p99_ms");
        target(
            format!("{op} p99 (ms)"),
            "<= 5".into(),
            p99,
            p99.map(|p| p <= 5.0),
        );
        let rps = num(s, "rps");
        target(
            format!("{op} req/s vs 2x Go KMS emulator"),
            format!(">= {:.0}", 2.0 * GO_EMULATOR_RPS),
            rps,
            rps.map(|r| r >= 2.0 * GO_EMULATOR_RPS),
        );
        let errs = num(s, "errors");
        target(
            format!("{op} errors"),
            "0".into(),
            errs,
            errs.map(|e| e == 0.0),
        );
    }
    if let Some(s) = find(&sc, "import-token-warm") {
        let p50 = num(Some(s), "p50_ms");
        target(
            "import-token-warm p50 (ms)".into(),
            "<= 5".into(),
            p50,
            p50.map(|p| p <= 5.0),
        );
    }
    for s in sc.iter().filter(|s| {
        s["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("secure-import") && !n.starts_with("secure-import-pq"))
    }) {
        let rps = num(Some(s), "rps");
        let name = s["name"].as_str().unwrap_or_default();
        let ceiling = RSA_PER_CORE * machine["nproc"].as_f64().unwrap_or(2.0);
        target(
            format!("{name} req/s vs RSA ceiling (~{RSA_PER_CORE:.0}/s per core)"),
            format!("approach {ceiling:.0}"),
            rps,
            None,
        );
        if let Some((_, all)) = rsa {
            target(
                format!("{name} req/s vs measured RSA decrypts/s (all cores)"),
                format!("approach {all:.0}"),
                rps,
                None,
            );
        }
    }
    for s in sc.iter().filter(|s| {
        s["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("secure-import-pq-"))
    }) {
        let name = s["name"].as_str().unwrap_or_default();
        let rsa_name = name.replacen("secure-import-pq-", "secure-import-", 1);
        let ratio = match (num(Some(s), "rps"), num(find(&sc, &rsa_name), "rps")) {
            (Some(pq), Some(rsa)) if rsa > 0.0 => Some(pq / rsa),
            _ => None,
        };
        target(
            format!("{name} req/s / {rsa_name} req/s"),
            ">= 3 (several times RSA)".into(),
            ratio,
            ratio.map(|r| r >= 3.0),
        );
    }
    json!({
        "machine": machine,
        "config": config,
        "rsa_calibration": rsa.map(|(one, all)| json!({
            "oaep_decrypts_per_s_1_thread": one.round(),
            "oaep_decrypts_per_s_all_threads": all.round(),
        })),
        "scenarios": sc,
        "ratios": {
            "wrap_over_baseline": ratio("wrap"),
            "unwrap_over_baseline": ratio("unwrap"),
        },
        "targets": targets,
    })
}

fn fmt_ms(v: &Value) -> String {
    match v.as_f64() {
        Some(ms) if ms < 10.0 => format!("{ms:.3}"),
        Some(ms) if ms < 1000.0 => format!("{ms:.1}"),
        Some(ms) => format!("{ms:.0}"),
        None => "-".into(),
    }
}

pub fn table(report: &Value) -> String {
    let mut o = String::new();
    let m = &report["machine"];
    let c = &report["config"];
    let _ = writeln!(
        o,
        "machine: {} cores, {}, {} GiB, load at start {}, kernel {}",
        m["nproc"],
        m["cpu_model"].as_str().unwrap_or("?"),
        m["mem_gib"],
        m["loadavg_at_start"].as_str().unwrap_or("?"),
        m["kernel"].as_str().unwrap_or("?"),
    );
    let _ = writeln!(
        o,
        "commit: {}   {}",
        m["git_commit"].as_str().unwrap_or("?"),
        m["rustc"].as_str().unwrap_or("?")
    );
    let _ = writeln!(
        o,
        "run: {} s measured after {} s warm-up per closed-loop scenario, client threads {}, server {}\n",
        c["duration_s"], c["warmup_s"], c["client_threads"], c["keyward"].as_str().unwrap_or("?")
    );
    let _ = writeln!(
        o,
        "{:<20} {:>5} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7}  {:>15}",
        "scenario",
        "conns",
        "req/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "srv ms",
        "errors",
        "cpu srv/cli/oth"
    );
    let empty = Vec::new();
    let scenarios = report["scenarios"].as_array().unwrap_or(&empty);
    for s in scenarios {
        let rps = match s["rps"].as_f64() {
            Some(r) => format!("{r:.0}"),
            None => format!("n={}", s["requests"]),
        };
        let cpu = match s["cpu_cores"].as_object() {
            Some(cpu) => format!(
                "{:.2}/{:.2}/{:.2}",
                cpu["server"].as_f64().unwrap_or(0.0),
                cpu["client"].as_f64().unwrap_or(0.0),
                cpu["other"].as_f64().unwrap_or(0.0)
            ),
            None => "-".into(),
        };
        let flag = if s["flagged"].as_bool().unwrap_or(false) {
            "  !! ERRORS"
        } else {
            ""
        };
        let _ = writeln!(
            o,
            "{:<20} {:>5} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7}  {:>15}{flag}",
            s["name"].as_str().unwrap_or("?"),
            s["connections"].to_string(),
            rps,
            fmt_ms(&s["p50_ms"]),
            fmt_ms(&s["p99_ms"]),
            fmt_ms(&s["p999_ms"]),
            fmt_ms(&s["max_ms"]),
            fmt_ms(&s["server_mean_ms"]),
            s["errors"].to_string(),
            cpu,
        );
    }
    let mut notes = String::new();
    for s in scenarios {
        let name = s["name"].as_str().unwrap_or("?");
        if let Some(n) = s["note"].as_str() {
            let _ = writeln!(notes, "  {name}: {n}");
        }
        if let Some(rr) = s["rounds_rps"].as_array() {
            let v: Vec<String> = rr
                .iter()
                .map(|x| format!("{:.0}", x.as_f64().unwrap_or(0.0)))
                .collect();
            let _ = writeln!(
                notes,
                "  {name}: req/s per round [{}], median shown",
                v.join(" ")
            );
        }
        if let Some(d) = s["pool_depth_before_each"].as_array() {
            let depths: Vec<String> = d.iter().map(|v| v.to_string()).collect();
            let _ = writeln!(
                notes,
                "  {name}: pool depth before each request [{}], {} request(s) found it empty",
                depths.join(" "),
                s["pool_misses"]
            );
        }
        if let Some(other) = s["cpu_cores"]["other"].as_f64().filter(|o| *o > 0.25) {
            let _ = writeln!(
                notes,
                "  {name}: WARNING other processes used {other:.2} cores during this run: not a clean measurement"
            );
        }
        if s["flagged"].as_bool().unwrap_or(false) {
            let _ = writeln!(
                notes,
                "  {name}: ERRORS {} (statuses {}, transport {}); first: {}",
                s["errors"],
                s["error_statuses"],
                s["transport_errors"],
                s["first_error"].as_str().unwrap_or("-")
            );
        }
    }
    if !notes.is_empty() {
        let _ = write!(o, "\nnotes:\n{notes}");
    }
    let r = &report["ratios"];
    if !r["wrap_over_baseline"].is_null() || !r["unwrap_over_baseline"].is_null() {
        let _ = writeln!(
            o,
            "\nratios: wrap/baseline {}   unwrap/baseline {}",
            r["wrap_over_baseline"], r["unwrap_over_baseline"]
        );
    }
    if let Some(c) = report["rsa_calibration"].as_object() {
        let _ = writeln!(
            o,
            "\nRSA-4096 OAEP decrypt, measured in the client before secure-import: {:.0}/s on 1 thread, {:.0}/s on all cores",
            c["oaep_decrypts_per_s_1_thread"].as_f64().unwrap_or(0.0),
            c["oaep_decrypts_per_s_all_threads"].as_f64().unwrap_or(0.0)
        );
    }
    if let Some(r) = report["master_key_rotate"].as_object() {
        let _ = writeln!(
            o,
            "\nmaster-key rotate (admin command, whole process incl. start-up): {} rows re-sealed in {} s = {}/s",
            r["rows"], r["seconds"], r["rows_per_s"]
        );
    }
    if let Some(s) = report["soak"].as_object() {
        let f = |k: &str| s.get(k).cloned().unwrap_or(Value::Null);
        let _ = writeln!(
            o,
            "\nsoak (open loop, {} req/s for {} s; 80 % wrap/unwrap): {} requests ({}/s), {} non-2xx, p50 {} ms, p99 {} ms, p99.9 {} ms, max {} ms",
            f("rate_per_s"), f("seconds"), f("requests"), f("achieved_per_s"), f("non_2xx_or_transport_errors"),
            f("p50_ms"), f("p99_ms"), f("p999_ms"), f("max_ms")
        );
        let _ = writeln!(
            o,
            "  server RSS {} KiB at {} s -> {} KiB at the end ({} %), open fds {}..{}",
            f("rss_kib_from"),
            f("rss_from_s"),
            f("rss_kib_end"),
            f("rss_growth_pct"),
            f("fds_min"),
            f("fds_max")
        );
        if let Some(v) = s.get("verdicts").and_then(Value::as_object) {
            for (k, v) in v {
                let verdict = match v.as_bool() {
                    Some(true) => "PASS",
                    Some(false) => "FAIL",
                    None => "n/a",
                };
                let _ = writeln!(o, "  [{verdict}] soak {k}");
            }
        }
    }
    if let Some(e) = report["edge"].as_object() {
        let f = |k: &str| e.get(k).cloned().unwrap_or(Value::Null);
        let (c, s) = (f("wrap_clean"), f("wrap_stalled"));
        let _ = writeln!(
            o,
            "\nedge: wrap p50/p99 {}/{} ms, {} req/s without stalled connections; {}/{} ms, {} req/s with {} held \
             (min {}, {} re-opened as the server closed them); p99 ratio {}, req/s ratio {}",
            c["p50_ms"], c["p99_ms"], c["rps"], s["p50_ms"], s["p99_ms"], s["rps"],
            f("stalled_open_at_start"), f("stalled_open_min"), f("stalled_reopened_during_run"),
            f("p99_ratio"), f("rps_ratio")
        );
        let _ = writeln!(
            o,
            "  server fds {} before, {} with the stalled connections (max {}); stalled connections answered: {} ({} with 5xx)",
            f("server_fds_before"), f("server_fds_stalled"), f("server_fds_max"),
            f("stalled_answered"), f("stalled_answered_5xx")
        );
        for b in e
            .get("bad_queries")
            .and_then(Value::as_array)
            .unwrap_or(&empty)
        {
            let _ = writeln!(
                o,
                "  GET /api/v2/keys {:<18} URI {:>6} B -> {}   longer ({} B) -> {}   server CPU {} ms/request (n={}, p50 {} ms)",
                b["name"].as_str().unwrap_or("?"),
                b["uri_bytes"], b["status"], b["over_long_uri_bytes"], b["over_long_status"],
                b["server_cpu_ms_per_request"], b["requests"], b["p50_ms"]
            );
        }
        if let Some(v) = e.get("verdicts").and_then(Value::as_object) {
            for (k, v) in v {
                let verdict = match v.as_bool() {
                    Some(true) => "PASS",
                    Some(false) => "FAIL",
                    None => "n/a",
                };
                let _ = writeln!(o, "  [{verdict}] edge {k}");
            }
        }
    }
    let _ = writeln!(o, "\ntargets:");
    for t in report["targets"].as_array().unwrap_or(&empty) {
        let verdict = match t["pass"].as_bool() {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None => "info",
        };
        let value = match t["value"].as_f64() {
            Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
            Some(v) => format!("{v:.3}"),
            None => "-".into(),
        };
        let _ = writeln!(
            o,
            "  [{verdict}] {:<58} {:>10}   want {}",
            t["target"].as_str().unwrap_or("?"),
            value,
            t["want"].as_str().unwrap_or("?")
        );
    }
    let _ = writeln!(
        o,
        "\nsrv ms = server-side mean latency of the busiest route (its /metrics histogram); cpu srv/cli/oth = cores used by\nthe server, by this client and by everything else on the machine over the measured window"
    );
    o
}

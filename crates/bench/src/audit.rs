//! `wrap-audit-file` and `wrap-audit-db`: the wrap load with the audit log on, each next to an
//! unaudited wrap at the same connection count in the same run (BENCHMARKS.md, "Scenarios").

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use hyper::body::Bytes;
use hyper::Method;
use serde_json::{json, Value};

use crate::http::{self, Bodies, ReqTemplate};
use crate::report::Scenario;
use crate::server::Nodes;
use crate::{bearer_token, progress, Args, Ctx, Launch, Setup, WRAP_CT};

/// Audited/unaudited req/s the sinks should reach: (sink, connections, minimum ratio).
const TARGETS: &[(&str, usize, f64)] = &[("file", 64, 0.75), ("file", 16, 0.5), ("db", 64, 0.6)];

/// One closed-loop wrap run on `nodes` (a fresh token: the nodes may be new).
async fn wrap_run(
    args: &Args,
    nodes: &Nodes,
    setup: &Setup,
    wrap_path: &str,
    dek: &str,
    name: &str,
    conns: usize,
) -> Result<Scenario> {
    let ctx = Ctx::new(
        nodes,
        bearer_token(nodes.first().addr, &setup.apikey).await?,
        setup.instance.clone(),
    );
    for &a in &ctx.addrs {
        crate::settle(a, args.token_pool_size, args.wait_idle).await;
    }
    let body = serde_json::to_vec(&json!({ "plaintext": dek }))?;
    let t = ReqTemplate::new(
        Method::POST,
        wrap_path,
        &ctx.host,
        &ctx.headers(WRAP_CT),
        Bodies::Fixed(Bytes::from(body)),
    )?;
    progress(&format!(
        "{name}: {conns} connections, {} s warm-up + {} s",
        args.warmup, args.duration
    ));
    let m0 = http::nodes_metrics(&ctx.addrs).await;
    let res = http::closed_loop_nodes(
        &ctx.addrs,
        Arc::new(t),
        conns,
        Duration::from_secs_f64(args.warmup),
        Duration::from_secs_f64(args.duration),
        &ctx.pids,
    )
    .await?;
    let mut s = Scenario::new(name, "closed-loop", conns, res);
    if let (Some(m0), Some(m1)) = (m0, http::nodes_metrics(&ctx.addrs).await) {
        s.server_route = m1.busiest_since(&m0);
    }
    Ok(s)
}

fn rps(s: &Scenario) -> f64 {
    let secs = s.res.elapsed.as_secs_f64();
    if secs > 0.0 {
        s.res.latencies_ns.len() as f64 / secs
    } else {
        0.0
    }
}

fn p99_ms(s: &Scenario) -> Option<f64> {
    crate::stats::percentile(&s.res.latencies_ns, 99.0).map(|v| v as f64 / 1e6)
}

/// For each sink and connection count: an unaudited wrap run, then the same run on the
/// node(s) restarted with the audit sink on, then the node(s) restarted without it. Leaves
/// unaudited nodes running.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    args: &Args,
    launch: &Launch,
    nodes: &mut Nodes,
    setup: &Setup,
    wrap_path: &str,
    dek: &str,
    file: bool,
    db: bool,
) -> Result<(Vec<Scenario>, Value)> {
    let mut out = Vec::new();
    let mut pairs = Vec::new();
    let sinks: Vec<&str> = [("file", file), ("db", db)]
        .into_iter()
        .filter(|(_, on)| *on)
        .map(|(s, _)| s)
        .collect();
    // The plain run happens on nodes started like the audited ones (a fresh start each time),
    // so the two differ only in the audit flags.
    nodes.stop().await;
    *nodes = launch.start("serve-unaudited", &[], None).await?;
    for sink in sinks {
        for &conns in &args.audit_connections {
            let plain = wrap_run(
                args,
                nodes,
                setup,
                wrap_path,
                dek,
                &format!("wrap-unaudited-{conns}"),
                conns,
            )
            .await?;
            let audit_file = launch.root.join(format!("audit-{sink}-{conns}.log"));
            let flags: Vec<String> = match sink {
                "file" => vec![
                    "--audit-log".into(),
                    audit_file.display().to_string(),
                    "--audit-sink".into(),
                    "file".into(),
                ],
                _ => vec!["--audit-sink".into(), "database".into()],
            };
            nodes.stop().await;
            *nodes = launch
                .start(&format!("serve-audit-{sink}-{conns}"), &flags, None)
                .await?;
            let audited = wrap_run(
                args,
                nodes,
                setup,
                wrap_path,
                dek,
                &format!("wrap-audit-{sink}-{conns}"),
                conns,
            )
            .await;
            nodes.stop().await;
            *nodes = launch.start("serve-unaudited", &[], None).await?;
            let audited = audited?;
            let file_bytes = if sink == "file" {
                // The live file and its rotations (audit-….log.1, …).
                let prefix = audit_file
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default();
                let mut total = 0u64;
                if let Ok(dir) = std::fs::read_dir(&launch.root) {
                    for e in dir.flatten() {
                        if e.file_name().to_string_lossy().starts_with(&prefix) {
                            total += e.metadata().map(|m| m.len()).unwrap_or(0);
                        }
                    }
                }
                Some(total)
            } else {
                None
            };
            let (a, p) = (rps(&audited), rps(&plain));
            let ratio = if p > 0.0 {
                Some((a / p * 1000.0).round() / 1000.0)
            } else {
                None
            };
            let target = TARGETS
                .iter()
                .find(|(s, c, _)| *s == sink && *c == conns)
                .map(|(_, _, t)| *t);
            pairs.push(json!({
                "sink": sink,
                "connections": conns,
                "unaudited_rps": p.round(),
                "audited_rps": a.round(),
                "ratio": ratio,
                "target": target,
                "pass": match (ratio, target) {
                    (Some(r), Some(t)) => Some(r >= t),
                    _ => None,
                },
                "unaudited_p99_ms": p99_ms(&plain),
                "audited_p99_ms": p99_ms(&audited),
                "audited_errors": audited.res.errors(),
                "audit_file_bytes": file_bytes,
            }));
            out.push(plain);
            out.push(audited);
        }
    }
    Ok((out, json!({ "pairs": pairs })))
}

/// The text report of the audited runs (empty when none ran).
pub fn table(audit: &Value) -> String {
    let mut o = String::new();
    let Some(pairs) = audit["pairs"].as_array() else {
        return o;
    };
    let _ = writeln!(
        o,
        "\naudited wrap (each next to an unaudited run at the same connection count):"
    );
    for p in pairs {
        let verdict = match p["pass"].as_bool() {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None => "info",
        };
        let _ = writeln!(
            o,
            "  [{verdict}] sink {} at {} conns: {} req/s audited / {} unaudited = {} (target {}), p99 {:.3} / {:.3} ms{}",
            p["sink"].as_str().unwrap_or_default(),
            p["connections"],
            p["audited_rps"],
            p["unaudited_rps"],
            p["ratio"],
            p["target"],
            p["audited_p99_ms"].as_f64().unwrap_or(f64::NAN),
            p["unaudited_p99_ms"].as_f64().unwrap_or(f64::NAN),
            match p["audit_file_bytes"].as_u64() {
                Some(b) => format!(", {b} bytes of audit file"),
                None => String::new(),
            }
        );
    }
    o
}

//! `keyward-bench`: starts a release `keyward serve`, then measures requests/s and latency of
//! the hot endpoints with N keep-alive HTTP/1.1 connections. See BENCHMARKS.md.

mod edge;
mod http;
mod report;
mod server;
mod soak;
mod stats;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use clap::Parser;
use hyper::body::Bytes;
use hyper::Method;
use serde_json::{json, Value};

use crate::http::{Bodies, ReqTemplate};
use crate::report::Scenario;
use crate::server::Server;

const ALL_SCENARIOS: &[&str] = &[
    "baseline",
    "wrap",
    "unwrap",
    "secure-import",
    "import-token-warm",
    "import-token-cold",
];

/// Diagnostic scenarios, run only when named in --scenarios.
const EXTRA_SCENARIOS: &[&str] = &["create-root-key", "master-key-rotate", "soak", "edge"];

#[derive(Parser, Debug, Clone)]
#[command(
    name = "keyward-bench",
    about = "Load benchmark for keyward (see BENCHMARKS.md)"
)]
pub struct Args {
    /// The keyward binary to benchmark (a release build).
    #[arg(long, default_value = "target/release/keyward")]
    keyward: PathBuf,
    /// Measured seconds per closed-loop scenario.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Warm-up seconds before each closed-loop scenario (not recorded).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Rounds of baseline, wrap and unwrap (interleaved); each reports its median round, and
    /// the ratios use those medians. More than 1 smooths out a noisy shared machine.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Keep-alive connections for baseline, wrap and unwrap.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Connection counts for the secure-import scenario, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "4,16")]
    secure_import_connections: Vec<usize>,
    /// Scenarios to run, comma-separated (default: all):
    /// baseline, wrap, unwrap, secure-import, import-token-warm, import-token-cold; also
    /// create-root-key (POST /keys generating a root key: the database write path of an
    /// import without the RSA work), only when named; likewise master-key-rotate, soak and
    /// edge (wrap with and without stalled connections, and the cost of the largest URIs).
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// `--token-pool-size` of the main server (the cold scenario always uses 0).
    #[arg(long, default_value_t = 4)]
    token_pool_size: usize,
    /// Sequential POST /import_token requests in each import-token scenario (warm).
    #[arg(long, default_value_t = 20)]
    import_token_samples: usize,
    /// Pause before each warm import-token request (milliseconds); each request also waits
    /// until the server's /metrics reports a ready keypair in the pool.
    #[arg(long, default_value_t = 1000)]
    import_token_interval_ms: u64,
    /// Sequential POST /import_token requests against the server without a pool.
    #[arg(long, default_value_t = 10)]
    cold_samples: usize,
    /// Secure-import request bodies pre-computed before the timed runs (reused in a cycle
    /// if a run needs more; the report says so).
    #[arg(long, default_value_t = 16000)]
    secure_import_bodies: usize,
    /// Worker threads of the load generator (1 = a single-threaded client).
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Extra argument for `keyward serve` (repeatable), e.g. --serve-arg=--rate-limit-crypto=5000.
    /// The key- and import-token-creation limits are off unless set here.
    #[arg(long = "serve-arg", allow_hyphen_values = true)]
    serve_args: Vec<String>,
    /// Before each scenario, wait up to this many seconds for the machine to be idle
    /// (under 0.25 cores busy over 2 s), for shared machines; 0 = do not wait.
    #[arg(long, default_value_t = 0)]
    wait_idle: u64,
    /// Extra environment variable for `keyward serve`, KEY=VALUE (repeatable), e.g.
    /// --server-env LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 to try an allocator.
    #[arg(long = "server-env")]
    server_env: Vec<String>,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Also write the JSON report to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Keep the temporary data directory (and server logs) and print its path.
    #[arg(long)]
    keep_data: bool,
    /// soak (only when named; BENCHMARKS.md): minutes of open-loop load
    #[arg(long, default_value_t = 10.0)]
    soak_minutes: f64,
    /// soak: requests per second (80 % wrap/unwrap, 10 % key reads, 10 % key creations)
    #[arg(long, default_value_t = 300.0)]
    soak_rate: f64,
    /// soak: replace the key creations by key reads (a database that does not grow, to tell
    /// memory held for a growing database from a leak)
    #[arg(long)]
    soak_no_create: bool,
    /// edge (only when named): connections holding half a request head during the second
    /// wrap run (re-opened as the server closes them)
    #[arg(long, default_value_t = 2000)]
    edge_stalled: usize,
    /// edge: keys created in the instance before the largest-URI list requests are measured
    #[arg(long, default_value_t = 100)]
    edge_keys: usize,
    /// edge: seconds of sequential requests per largest-URI measurement
    #[arg(long, default_value_t = 3.0)]
    edge_bad_query_secs: f64,
}

/// Exit status: 0, or 2 when a scenario saw a non-2xx response or a connection error (the
/// report is printed either way), or 1 when the harness itself failed.
fn main() -> Result<std::process::ExitCode> {
    let args = Args::parse();
    let rt = if args.client_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.client_threads)
            .enable_all()
            .build()?
    };
    let flagged = rt.block_on(run(args))?;
    Ok(if flagged {
        std::process::ExitCode::from(2)
    } else {
        std::process::ExitCode::SUCCESS
    })
}

/// Everything a scenario needs to talk to the server.
struct Ctx {
    addr: SocketAddr,
    host: String,
    bearer: String,
    instance: String,
    pid: u32,
}

impl Ctx {
    fn headers<'a>(&'a self, content_type: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![
            ("authorization", self.bearer.as_str()),
            ("bluemix-instance", self.instance.as_str()),
            ("content-type", content_type),
            ("accept", "application/json"),
        ]
    }

    async fn json(&self, method: Method, path: &str, ct: &str, body: Value) -> Result<Value> {
        let body = if body.is_null() {
            Vec::new()
        } else {
            serde_json::to_vec(&body)?
        };
        http::call_json(self.addr, method, path, &self.headers(ct), body).await
    }
}

/// `keyward serve` limits key and import-token creation by default; a benchmark measures the
/// server, not those limits, so they are off unless a `--serve-arg` sets them.
fn without_creation_limits(user: &[String]) -> Vec<String> {
    [
        "--rate-limit-key-create",
        "--rate-limit-import-token-create",
    ]
    .into_iter()
    .filter(|flag| !user.iter().any(|a| a.starts_with(flag)))
    .map(|flag| format!("{flag}=0"))
    .collect()
}

async fn bearer_token(addr: SocketAddr, apikey: &str) -> Result<String> {
    let form = format!(
        "grant_type={}&apikey={}",
        form_encode("urn:ibm:params:oauth:grant-type:apikey"),
        form_encode(apikey)
    );
    let v = http::call_json(
        addr,
        Method::POST,
        "/identity/token",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("accept", "application/json"),
        ],
        form.into_bytes(),
    )
    .await?;
    let token = v
        .get("access_token")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("no access_token in {v}"))?;
    Ok(format!("Bearer {token}"))
}

fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn str_field<'a>(v: &'a Value, name: &str) -> Result<&'a str> {
    v.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("no string field {name:?} in {v}"))
}

const KEY_CT: &str = "application/vnd.ibm.kms.key+json";
const WRAP_CT: &str = "application/vnd.ibm.kms.key_action_wrap+json";
const UNWRAP_CT: &str = "application/vnd.ibm.kms.key_action_unwrap+json";
const JSON_CT: &str = "application/json";

fn key_envelope(resource: Value) -> Value {
    json!({
        "metadata": {"collectionType": KEY_CT, "collectionTotal": 1},
        "resources": [resource],
    })
}

struct Setup {
    instance: String,
    apikey: String,
}

async fn admin_setup(keyward: &Path, data_dir: &Path) -> Result<Setup> {
    let inst = server::admin(
        keyward,
        data_dir,
        &["instance", "create", "--name", "bench"],
    )
    .await?;
    let instance = str_field(&inst, "id")?.to_string();
    let key = server::admin(
        keyward,
        data_dir,
        &[
            "apikey",
            "create",
            "--instance",
            &instance,
            "--role",
            "Manager",
            "--name",
            "bench",
        ],
    )
    .await?;
    Ok(Setup {
        instance,
        apikey: str_field(&key, "apikey")?.to_string(),
    })
}

fn progress(msg: &str) {
    eprintln!("[keyward-bench] {msg}");
}

/// Runs everything and prints the report; returns whether any scenario had errors.
async fn run(args: Args) -> Result<bool> {
    let scenarios: Vec<String> = if args.scenarios.is_empty() {
        ALL_SCENARIOS.iter().map(|s| s.to_string()).collect()
    } else {
        args.scenarios.clone()
    };
    for s in &scenarios {
        if !ALL_SCENARIOS.contains(&s.as_str()) && !EXTRA_SCENARIOS.contains(&s.as_str()) {
            bail!(
                "unknown scenario {s:?}; known: {}, {}",
                ALL_SCENARIOS.join(", "),
                EXTRA_SCENARIOS.join(", ")
            );
        }
    }
    let want = |name: &str| scenarios.iter().any(|s| s == name);
    let keyward = std::fs::canonicalize(&args.keyward)
        .with_context(|| format!("keyward binary {}", args.keyward.display()))?;

    let machine = stats::machine_facts();
    let tmp = tempfile::Builder::new()
        .prefix("keyward-bench-")
        .tempdir()?;
    let data_dir = tmp.path().join("data");
    std::fs::create_dir_all(&data_dir)?;
    progress(&format!("data dir {}", tmp.path().display()));

    let mut serve_args = vec![
        "--token-pool-size".to_string(),
        args.token_pool_size.to_string(),
    ];
    serve_args.extend(without_creation_limits(&args.serve_args));
    serve_args.extend(args.serve_args.iter().cloned());
    let ready = Duration::from_secs(180);

    // Instance + Manager API key through the admin CLI; if the CLI wants the database that
    // `serve` creates, start the server first and retry.
    let early = admin_setup(&keyward, &data_dir).await;
    let mut srv = Server::start(
        &keyward,
        &data_dir,
        tmp.path().join("serve.log"),
        &serve_args,
        &args.server_env,
        ready,
    )
    .await?;
    let setup = match early {
        Ok(s) => s,
        Err(e) => {
            progress(&format!(
                "admin before serve failed ({e:#}); retrying with the server up"
            ));
            admin_setup(&keyward, &data_dir).await?
        }
    };
    progress(&format!("server pid {} on {}", srv.pid, srv.addr));

    let result = run_scenarios(
        &args,
        &want,
        &keyward,
        &data_dir,
        tmp.path(),
        &mut srv,
        &setup,
    )
    .await;
    srv.stop().await;
    let (scenarios_done, rsa, reseal) = match result {
        Ok(s) => s,
        Err(e) => {
            eprintln!("server log tail:\n{}", srv.log_tail());
            if args.keep_data {
                let kept = tmp.keep();
                progress(&format!("kept {}", kept.display()));
            }
            return Err(e);
        }
    };

    let config = json!({
        "keyward": keyward.display().to_string(),
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "connections": args.connections,
        "rounds": args.rounds,
        "secure_import_connections": args.secure_import_connections,
        "token_pool_size": args.token_pool_size,
        "import_token_samples": args.import_token_samples,
        "import_token_interval_ms": args.import_token_interval_ms,
        "cold_samples": args.cold_samples,
        "client_threads": args.client_threads,
        "serve_args": args.serve_args,
        "server_env": args.server_env,
    });
    let mut report = report::build(machine, config, &scenarios_done, rsa);
    if let Some(x) = reseal {
        report["master_key_rotate"] = x["master_key_rotate"].clone();
        report["soak"] = x["soak"].clone();
        report["edge"] = x["edge"].clone();
    }
    if let Some(path) = &args.json_out {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report::table(&report));
    }
    if args.keep_data {
        let kept = tmp.keep();
        progress(&format!("kept {}", kept.display()));
    }
    let flagged = scenarios_done.iter().any(|s| s.res.errors() > 0)
        || report["soak"]["non_2xx_or_transport_errors"]
            .as_u64()
            .is_some_and(|n| n > 0)
        || report["edge"]["verdicts"]["no_5xx"] == json!(false);
    if flagged {
        progress("some scenarios had errors (see notes); exit status 2");
    }
    Ok(flagged)
}

#[allow(clippy::too_many_arguments)]
async fn run_scenarios(
    args: &Args,
    want: &dyn Fn(&str) -> bool,
    keyward: &Path,
    data_dir: &Path,
    tmp: &Path,
    srv: &mut Server,
    setup: &Setup,
) -> Result<(Vec<Scenario>, Option<(f64, f64)>, Option<Value>)> {
    let warmup = Duration::from_secs_f64(args.warmup);
    let duration = Duration::from_secs_f64(args.duration);
    let mut out = Vec::new();

    let ctx = Ctx {
        addr: srv.addr,
        host: srv.addr.to_string(),
        bearer: bearer_token(srv.addr, &setup.apikey).await?,
        instance: setup.instance.clone(),
        pid: srv.pid,
    };

    // One root key, and one ciphertext of a 32-byte DEK for unwrap; check the round trip.
    let created = ctx
        .json(
            Method::POST,
            "/api/v2/keys",
            KEY_CT,
            key_envelope(json!({"type": KEY_CT, "name": "bench-root", "extractable": false})),
        )
        .await?;
    let key_id = created
        .pointer("/resources/0/id")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("no resources[0].id in {created}"))?
        .to_string();
    let dek = B64.encode(keyward_crypto::random_bytes(32)?);
    let wrap_path = format!("/api/v2/keys/{key_id}/actions/wrap");
    let unwrap_path = format!("/api/v2/keys/{key_id}/actions/unwrap");
    let wrapped = ctx
        .json(Method::POST, &wrap_path, WRAP_CT, json!({"plaintext": dek}))
        .await?;
    let ciphertext = str_field(&wrapped, "ciphertext")?.to_string();
    let unwrapped = ctx
        .json(
            Method::POST,
            &unwrap_path,
            UNWRAP_CT,
            json!({"ciphertext": ciphertext}),
        )
        .await?;
    if str_field(&unwrapped, "plaintext")? != dek {
        bail!("unwrap did not return the wrapped plaintext: {unwrapped}");
    }
    progress(&format!("root key {key_id}; wrap/unwrap round trip ok"));

    let pool_target = args.token_pool_size;
    let wait_idle = args.wait_idle;
    let closed = |name: &str, t: ReqTemplate, conns: usize| {
        let t = Arc::new(t);
        let name = name.to_string();
        let addr = ctx.addr;
        let pid = ctx.pid;
        async move {
            settle(addr, pool_target, wait_idle).await;
            progress(&format!(
                "{name}: {conns} connections, {} s warm-up + {} s",
                warmup.as_secs_f64(),
                duration.as_secs_f64()
            ));
            let m0 = http::server_metrics(addr).await;
            let res = http::closed_loop(addr, t, conns, warmup, duration, pid).await?;
            let mut s = Scenario::new(&name, "closed-loop", conns, res);
            if let (Some(m0), Some(m1)) = (m0, http::server_metrics(addr).await) {
                s.server_route = m1.busiest_since(&m0);
            }
            Ok::<_, anyhow::Error>(s)
        }
    };

    // baseline, wrap and unwrap, interleaved for --rounds rounds; each reports its median round.
    let mut hot: Vec<(&str, ReqTemplate)> = Vec::new();
    if want("baseline") {
        let t = ReqTemplate::new(
            Method::GET,
            "/healthz",
            &ctx.host,
            &[],
            Bodies::Fixed(Bytes::new()),
        )?;
        hot.push(("baseline", t));
    }
    if want("wrap") {
        let body = serde_json::to_vec(&json!({"plaintext": dek}))?;
        let t = ReqTemplate::new(
            Method::POST,
            &wrap_path,
            &ctx.host,
            &ctx.headers(WRAP_CT),
            Bodies::Fixed(Bytes::from(body)),
        )?;
        hot.push(("wrap", t));
    }
    if want("unwrap") {
        let body = serde_json::to_vec(&json!({"ciphertext": ciphertext}))?;
        let t = ReqTemplate::new(
            Method::POST,
            &unwrap_path,
            &ctx.host,
            &ctx.headers(UNWRAP_CT),
            Bodies::Fixed(Bytes::from(body)),
        )?;
        hot.push(("unwrap", t));
    }
    let rounds = args.rounds.max(1);
    let mut per_round: Vec<Vec<Scenario>> = hot.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        if rounds > 1 {
            progress(&format!("round {}/{rounds}", round + 1));
        }
        for ((name, t), runs) in hot.iter().zip(per_round.iter_mut()) {
            runs.push(closed(name, t.clone(), args.connections).await?);
        }
    }
    for runs in per_round {
        if let Some(s) = report::median_round(runs) {
            out.push(s);
        }
    }

    let mut rsa: Option<(f64, f64)> = None;
    if want("secure-import") && !args.secure_import_connections.is_empty() {
        settle(ctx.addr, args.token_pool_size, args.wait_idle).await;
        let threads = std::thread::available_parallelism()
            .map(|p| p.get())
            .unwrap_or(1);
        progress(&format!(
            "calibrating RSA-4096 OAEP decryption (1 and {threads} threads, 2 s each)"
        ));
        rsa =
            Some(tokio::task::spawn_blocking(move || stats::rsa_calibration(threads, 2.0)).await??);
        if let Some((one, all)) = rsa {
            progress(&format!(
                "RSA-4096 OAEP decrypt: {one:.0}/s on 1 thread, {all:.0}/s on {threads}"
            ));
        }
        let bodies = secure_import_bodies(&ctx, args.secure_import_bodies).await?;
        for &conns in &args.secure_import_connections {
            let t = ReqTemplate::new(
                Method::POST,
                "/api/v2/keys",
                &ctx.host,
                &ctx.headers(KEY_CT),
                bodies.clone(),
            )?;
            let before = bodies.used().map(|(n, _)| n).unwrap_or(0);
            let mut s = closed(&format!("secure-import-{conns}"), t, conns).await?;
            if let Some((n, reused)) = bodies.used() {
                s.note = Some(format!(
                    "{} pre-computed bodies used{}",
                    n - before,
                    if reused {
                        " (batch reused: raise --secure-import-bodies)"
                    } else {
                        ""
                    }
                ));
            }
            out.push(s);
        }
    }

    if want("create-root-key") {
        let body = serde_json::to_vec(&key_envelope(
            json!({"type": KEY_CT, "name": "bench-generated", "extractable": false}),
        ))?;
        let t = ReqTemplate::new(
            Method::POST,
            "/api/v2/keys",
            &ctx.host,
            &ctx.headers(KEY_CT),
            Bodies::Fixed(Bytes::from(body)),
        )?;
        for &conns in &args.secure_import_connections {
            out.push(closed(&format!("create-root-key-{conns}"), t.clone(), conns).await?);
        }
    }

    let mut soak = None;
    if want("soak") {
        let t = |m: Method, path: &str, ct: &str, body: Vec<u8>| -> Result<Arc<ReqTemplate>> {
            Ok(Arc::new(ReqTemplate::new(
                m,
                path,
                &ctx.host,
                &ctx.headers(ct),
                Bodies::Fixed(Bytes::from(body)),
            )?))
        };
        let wrap = t(
            Method::POST,
            &wrap_path,
            WRAP_CT,
            serde_json::to_vec(&json!({"plaintext": dek}))?,
        )?;
        let unwrap = t(
            Method::POST,
            &unwrap_path,
            UNWRAP_CT,
            serde_json::to_vec(&json!({"ciphertext": ciphertext}))?,
        )?;
        let get = t(
            Method::GET,
            &format!("/api/v2/keys/{key_id}"),
            JSON_CT,
            Vec::new(),
        )?;
        let create = t(
            Method::POST,
            "/api/v2/keys",
            KEY_CT,
            serde_json::to_vec(&key_envelope(
                json!({"type": KEY_CT, "name": "soak-key", "extractable": false}),
            ))?,
        )?;
        // 10 requests: 4 wrap, 4 unwrap, 1 read, 1 create.
        let mut mix = Vec::new();
        for _ in 0..4 {
            mix.push(("wrap".to_string(), wrap.clone()));
            mix.push(("unwrap".to_string(), unwrap.clone()));
        }
        mix.push(("get key".to_string(), get.clone()));
        if args.soak_no_create {
            mix.push(("get key".to_string(), get));
        } else {
            mix.push(("create key".to_string(), create));
        }
        settle(ctx.addr, args.token_pool_size, args.wait_idle).await;
        progress(&format!(
            "soak: {} req/s for {} min (open loop)",
            args.soak_rate, args.soak_minutes
        ));
        let s = soak::run(
            ctx.addr,
            mix,
            args.soak_rate,
            Duration::from_secs_f64(args.soak_minutes * 60.0),
            16,
            ctx.pid,
            Duration::from_secs(10),
        )
        .await?;
        soak = Some(s.to_json());
    }

    let mut reseal = None;
    if want("master-key-rotate") {
        // Every sealed row (all keys made by the scenarios above, their versions, the import
        // token, the signing key) re-sealed under a new master key generation by the admin
        // command, while the server runs idle. `--settle 0`: no waiting for other nodes.
        settle(ctx.addr, args.token_pool_size, args.wait_idle).await;
        progress("master-key-rotate: keyward admin master-key rotate --settle 0");
        let key_file = data_dir.join("master.key");
        let key_file = key_file.to_string_lossy();
        let started = std::time::Instant::now();
        let out = server::admin(
            keyward,
            data_dir,
            &[
                "master-key",
                "--master-key-file",
                &key_file,
                "rotate",
                "--settle",
                "0",
            ],
        )
        .await?;
        let secs = started.elapsed().as_secs_f64();
        let rows = out["resealed"].as_f64().unwrap_or(0.0);
        if out["complete"] != json!(true) {
            bail!("master-key rotate did not complete: {out}");
        }
        reseal = Some(json!({
            "rows": rows,
            "seconds": (secs * 1000.0).round() / 1000.0,
            "rows_per_s": if secs > 0.0 { (rows / secs).round() } else { 0.0 },
        }));
    }

    if want("import-token-warm") {
        let body = serde_json::to_vec(&json!({"expiration": 600, "maxAllowedRetrievals": 1}))?;
        let t = ReqTemplate::new(
            Method::POST,
            "/api/v2/import_token",
            &ctx.host,
            &ctx.headers(JSON_CT),
            Bodies::Fixed(Bytes::from(body)),
        )?;
        let pause = Duration::from_millis(args.import_token_interval_ms);
        progress(&format!(
            "import-token-warm: {} sequential requests, {} ms apart, pool size {}",
            args.import_token_samples, args.import_token_interval_ms, args.token_pool_size
        ));
        settle(ctx.addr, args.token_pool_size, args.wait_idle).await;
        let m0 = http::server_metrics(ctx.addr).await;
        let res = http::sequential(
            ctx.addr,
            Arc::new(t),
            args.import_token_samples,
            pause,
            Some(Duration::from_secs(30)),
            ctx.pid,
            "import-token-warm",
        )
        .await?;
        let mut s = Scenario::new("import-token-warm", "sequential", 1, res);
        if let (Some(m0), Some(m1)) = (m0, http::server_metrics(ctx.addr).await) {
            s.server_route = m1.busiest_since(&m0);
        }
        s.note = Some(format!(
            "pool size {}, >= {} ms between requests and each sent only once the server reports a ready keypair",
            args.token_pool_size, args.import_token_interval_ms
        ));
        out.push(s);
    }

    if want("import-token-cold") {
        progress("import-token-cold: restarting the server with --token-pool-size 0");
        srv.stop().await;
        let mut cold_args = vec!["--token-pool-size".to_string(), "0".to_string()];
        cold_args.extend(without_creation_limits(&args.serve_args));
        cold_args.extend(args.serve_args.iter().cloned());
        *srv = Server::start(
            keyward,
            data_dir,
            tmp.join("serve-cold.log"),
            &cold_args,
            &args.server_env,
            Duration::from_secs(180),
        )
        .await?;
        let bearer = bearer_token(srv.addr, &setup.apikey).await?;
        let cold = Ctx {
            addr: srv.addr,
            host: srv.addr.to_string(),
            bearer,
            instance: setup.instance.clone(),
            pid: srv.pid,
        };
        let body = serde_json::to_vec(&json!({"expiration": 600, "maxAllowedRetrievals": 1}))?;
        let t = ReqTemplate::new(
            Method::POST,
            "/api/v2/import_token",
            &cold.host,
            &cold.headers(JSON_CT),
            Bodies::Fixed(Bytes::from(body)),
        )?;
        progress(&format!(
            "import-token-cold: {} sequential requests",
            args.cold_samples
        ));
        settle(cold.addr, 0, args.wait_idle).await;
        let m0 = http::server_metrics(cold.addr).await;
        let res = http::sequential(
            cold.addr,
            Arc::new(t),
            args.cold_samples,
            Duration::ZERO,
            None,
            cold.pid,
            "import-token-cold",
        )
        .await?;
        let mut s = Scenario::new("import-token-cold", "sequential", 1, res);
        if let (Some(m0), Some(m1)) = (m0, http::server_metrics(cold.addr).await) {
            s.server_route = m1.busiest_since(&m0);
        }
        s.note = Some("server started with --token-pool-size 0".to_string());
        out.push(s);
    }
    let mut edge_report = None;
    if want("edge") {
        settle(ctx.addr, args.token_pool_size, args.wait_idle).await;
        progress(&format!("edge: creating {} keys", args.edge_keys));
        for i in 0..args.edge_keys {
            ctx.json(
                Method::POST,
                "/api/v2/keys",
                KEY_CT,
                key_envelope(
                    json!({"type": KEY_CT, "name": format!("edge-{i}"), "extractable": false}),
                ),
            )
            .await?;
        }
        let body = serde_json::to_vec(&json!({"plaintext": dek}))?;
        let wrap = ReqTemplate::new(
            Method::POST,
            &wrap_path,
            &ctx.host,
            &ctx.headers(WRAP_CT),
            Bodies::Fixed(Bytes::from(body)),
        )?;
        let (scenarios, report) = edge::run(edge::Params {
            addr: ctx.addr,
            host: ctx.host.clone(),
            pid: ctx.pid,
            headers: vec![
                ("authorization".into(), ctx.bearer.clone()),
                ("bluemix-instance".into(), ctx.instance.clone()),
                ("accept".into(), "application/json".into()),
            ],
            wrap,
            connections: args.connections,
            warmup,
            duration,
            stalled: args.edge_stalled,
            bad_query_secs: args.edge_bad_query_secs,
        })
        .await?;
        out.extend(scenarios);
        edge_report = Some(report);
    }
    let extras = json!({"master_key_rotate": reseal, "soak": soak, "edge": edge_report});
    Ok((out, rsa, Some(extras)))
}

/// Waits until the server's import-token pool is full (its background RSA key generation would
/// otherwise eat CPU during the next scenario) and, with `--wait-idle`, until the machine is idle.
async fn settle(addr: SocketAddr, pool_target: usize, wait_idle: u64) {
    if pool_target > 0 {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut said = false;
        loop {
            match http::server_metrics(addr).await.and_then(|m| m.pool_depth) {
                Some(d) if d < pool_target as f64 && Instant::now() < deadline => {
                    if !said {
                        progress(&format!(
                            "waiting for the token pool to refill ({d}/{pool_target})"
                        ));
                        said = true;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                _ => break,
            }
        }
    }
    if wait_idle > 0 {
        let deadline = Instant::now() + Duration::from_secs(wait_idle);
        let mut said = false;
        loop {
            let Ok((b0, _)) = stats::machine_ticks() else {
                return;
            };
            let t0 = Instant::now();
            tokio::time::sleep(Duration::from_secs(2)).await;
            let Ok((b1, _)) = stats::machine_ticks() else {
                return;
            };
            let busy =
                (b1.saturating_sub(b0)) as f64 / stats::clk_tck() / t0.elapsed().as_secs_f64();
            if busy < 0.25 || Instant::now() > deadline {
                if said {
                    progress(&format!("machine at {busy:.2} busy cores; going on"));
                }
                return;
            }
            if !said {
                progress(&format!(
                    "machine busy ({busy:.2} cores); waiting up to {wait_idle} s"
                ));
                said = true;
            }
        }
    }
}

/// Creates one import token (high maxAllowedRetrievals, long expiry), fetches its public key
/// and nonce, and pre-computes `n` create-key bodies, each with fresh 32-byte material
/// encrypted client-side (RSA-OAEP-SHA-256 + AES-GCM nonce), so no client crypto is timed.
/// The first body is sent once as a check.
async fn secure_import_bodies(ctx: &Ctx, n: usize) -> Result<Bodies> {
    ctx.json(
        Method::POST,
        "/api/v2/import_token",
        JSON_CT,
        json!({"expiration": 86400, "maxAllowedRetrievals": 500}),
    )
    .await?;
    let tok = ctx
        .json(Method::GET, "/api/v2/import_token", JSON_CT, Value::Null)
        .await?;
    let pem = String::from_utf8(B64.decode(str_field(&tok, "payload")?)?)?;
    let nonce = B64.decode(str_field(&tok, "nonce")?)?;
    progress(&format!("secure-import: pre-computing {n} request bodies"));
    let t0 = Instant::now();
    let threads = std::thread::available_parallelism()
        .map(|p| p.get())
        .unwrap_or(1)
        .max(1);
    let per = n.div_ceil(threads);
    let pem = Arc::new(pem);
    let nonce = Arc::new(nonce);
    let mut handles = Vec::new();
    for t in 0..threads {
        let (pem, nonce) = (pem.clone(), nonce.clone());
        let range = (t * per)..((t + 1) * per).min(n);
        handles.push(tokio::task::spawn_blocking(
            move || -> Result<Vec<Bytes>> {
                range.map(|i| secure_import_body(i, &pem, &nonce)).collect()
            },
        ));
    }
    let mut bodies = Vec::with_capacity(n + 1);
    for h in handles {
        bodies.extend(h.await??);
    }
    progress(&format!(
        "secure-import: bodies ready in {:.1} s",
        t0.elapsed().as_secs_f64()
    ));
    let first = bodies
        .first()
        .cloned()
        .ok_or_else(|| anyhow!("no bodies"))?;
    let (status, body) = http::call(
        ctx.addr,
        Method::POST,
        "/api/v2/keys",
        &ctx.headers(KEY_CT),
        first.to_vec(),
    )
    .await?;
    if !status.is_success() {
        bail!(
            "secure import check failed: {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(Bodies::Batch {
        bodies: Arc::new(bodies),
        next: Arc::new(AtomicUsize::new(1)),
    })
}

fn secure_import_body(i: usize, pem: &str, nonce: &[u8]) -> Result<Bytes> {
    use keyward_crypto::import::{encrypt_material, encrypt_nonce, OaepHash};
    let material = keyward_crypto::random_secret(32)?;
    let payload = encrypt_material(pem, OaepHash::Sha256, material.expose())?;
    let (iv, enc_nonce) = encrypt_nonce(&material, nonce)?;
    let body = key_envelope(json!({
        "type": KEY_CT,
        "name": format!("bench-si-{i}"),
        "extractable": false,
        "payload": B64.encode(payload),
        "encryptionAlgorithm": "RSAES_OAEP_SHA_256",
        "encryptedNonce": B64.encode(enc_nonce),
        "iv": B64.encode(iv),
    }));
    Ok(Bytes::from(serde_json::to_vec(&body)?))
}

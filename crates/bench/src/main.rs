//! `keyward-bench`: starts a release `keyward serve`, then measures requests/s and latency of
//! the hot endpoints with N keep-alive HTTP/1.1 connections. See BENCHMARKS.md.

mod audit;
mod edge;
mod failover;
mod http;
mod kmip;
mod report;
mod scale;
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
use crate::server::{Backend, Nodes};

const ALL_SCENARIOS: &[&str] = &[
    "baseline",
    "wrap",
    "unwrap",
    "secure-import",
    "secure-import-pq",
    "import-token-warm",
    "import-token-cold",
    "import-token-pq",
];

/// Diagnostic scenarios, run only when named in --scenarios.
const EXTRA_SCENARIOS: &[&str] = &[
    "create-root-key",
    "master-key-rotate",
    "soak",
    "edge",
    "wrap-audit-file",
    "wrap-audit-db",
    "scale",
    "failover",
    "kmip",
];

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
    /// edge (wrap with and without stalled connections, and the cost of the largest URIs);
    /// failover (a primary failover on the HA stack of scripts/ha-stack, alone); kmip (KMIP
    /// Get and Create over --connections mutual-TLS connections, crates/bench/src/kmip.rs).
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
    /// Run the server(s) on PostgreSQL instead of SQLite: a server URL such as
    /// postgres://postgres@127.0.0.1:5432/postgres. A fresh database is created on it for the
    /// run (with psql) and dropped at the end unless --keep-data.
    #[arg(long)]
    database_url: Option<String>,
    /// `keyward serve` nodes on the one database (above 1 needs --database-url); the nodes
    /// share the master key file, and closed-loop connections go round robin over them.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// wrap-audit-file / wrap-audit-db (only when named): connection counts, each run audited
    /// and unaudited.
    #[arg(long, value_delimiter = ',', default_value = "16,64")]
    audit_connections: Vec<usize>,
    /// scale (only when named): keys created through POST /api/v2/keys before measuring.
    #[arg(long, default_value_t = 1_000_000)]
    scale_keys: usize,
    /// scale: connections creating keys during the fill.
    #[arg(long, default_value_t = 32)]
    scale_fill_connections: usize,
    /// scale: distinct root keys wrapped once each (the cache-miss path), then at random.
    #[arg(long, default_value_t = 200_000)]
    scale_distinct: usize,
    /// scale: start on the directory kept (--keep-data) by an earlier scale run instead of
    /// filling again: its data dir (or PostgreSQL database), tenant and key list.
    #[arg(long)]
    scale_reuse: Option<PathBuf>,
    /// scale: sequential repetitions of each list query.
    #[arg(long, default_value_t = 20)]
    scale_list_repeats: usize,
    /// scale: a list query stops repeating after this many seconds once it has 5 samples.
    #[arg(long, default_value_t = 30)]
    scale_list_secs: u64,
    /// failover (only when named, and alone; docs/high-availability.md): the HA stack script.
    #[arg(long, default_value = "scripts/ha-stack")]
    ha_stack: PathBuf,
    /// failover: use the stack already running in this directory (`scripts/ha-stack start
    /// DIR`) instead of starting one in the run's temporary directory.
    #[arg(long)]
    ha_dir: Option<PathBuf>,
    /// failover: how the primary goes away: kill (SIGKILL of its postmaster) or switchover.
    #[arg(long, default_value = "kill")]
    failover_mode: String,
    /// scale: seconds of idle before the last RSS reading.
    #[arg(long, default_value_t = 30)]
    scale_pause: u64,
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
pub struct Ctx {
    /// The first node (sequential scenarios, setup calls).
    pub addr: SocketAddr,
    pub host: String,
    pub bearer: String,
    pub instance: String,
    pub pid: u32,
    /// Every node: closed-loop connections go round robin over them.
    pub addrs: Vec<SocketAddr>,
    pub pids: Vec<u32>,
}

impl Ctx {
    pub fn new(nodes: &Nodes, bearer: String, instance: String) -> Self {
        let first = nodes.first();
        Self {
            addr: first.addr,
            host: first.addr.to_string(),
            bearer,
            instance,
            pid: first.pid,
            addrs: nodes.addrs(),
            pids: nodes.pids(),
        }
    }

    pub fn headers<'a>(&'a self, content_type: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![
            ("authorization", self.bearer.as_str()),
            ("bluemix-instance", self.instance.as_str()),
            ("content-type", content_type),
            ("accept", "application/json"),
        ]
    }

    pub async fn json(&self, method: Method, path: &str, ct: &str, body: Value) -> Result<Value> {
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

pub async fn bearer_token(addr: SocketAddr, apikey: &str) -> Result<String> {
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

pub fn str_field<'a>(v: &'a Value, name: &str) -> Result<&'a str> {
    v.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("no string field {name:?} in {v}"))
}

pub const KEY_CT: &str = "application/vnd.ibm.kms.key+json";
pub const WRAP_CT: &str = "application/vnd.ibm.kms.key_action_wrap+json";
const UNWRAP_CT: &str = "application/vnd.ibm.kms.key_action_unwrap+json";
pub const JSON_CT: &str = "application/json";

pub fn key_envelope(resource: Value) -> Value {
    json!({
        "metadata": {"collectionType": KEY_CT, "collectionTotal": 1},
        "resources": [resource],
    })
}

struct Setup {
    instance: String,
    apikey: String,
}

async fn admin_setup(keyward: &Path, data_dir: &Path, db_args: &[String]) -> Result<Setup> {
    let inst = server::admin(
        keyward,
        data_dir,
        &["instance", "create", "--name", "bench"],
        db_args,
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
        db_args,
    )
    .await?;
    Ok(Setup {
        instance,
        apikey: str_field(&key, "apikey")?.to_string(),
    })
}

pub fn progress(msg: &str) {
    eprintln!("[keyward-bench] {msg}");
}

/// How the server nodes of this run are started (the backend, the node count, the flags).
pub struct Launch {
    pub keyward: PathBuf,
    pub backend: Backend,
    pub nodes: usize,
    pub root: PathBuf,
    pub serve_args: Vec<String>,
    pub env: Vec<String>,
}

impl Launch {
    /// Starts `self.nodes` nodes (or `nodes` when given) with the run's flags plus `extra`.
    pub async fn start(
        &self,
        prefix: &str,
        extra: &[String],
        nodes: Option<usize>,
    ) -> Result<Nodes> {
        let a = override_flags(&self.serve_args, extra);
        Nodes::start(
            &self.keyward,
            &self.backend,
            nodes.unwrap_or(self.nodes),
            &self.root,
            prefix,
            &a,
            &self.env,
            Duration::from_secs(180),
        )
        .await
    }
}

/// `base` followed by `extra`, where a `--flag value` pair of `base` whose flag `extra` also
/// names is left out (clap refuses a repeated flag).
fn override_flags(base: &[String], extra: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = base.iter();
    while let Some(x) = it.next() {
        if x.starts_with("--") && !x.contains('=') && extra.contains(x) {
            it.next();
            continue;
        }
        out.push(x.clone());
    }
    out.extend(extra.iter().cloned());
    out
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
    if args.nodes == 0
        || (args.nodes > 1 && args.database_url.is_none() && args.scale_reuse.is_none())
    {
        bail!("--nodes above 1 needs --database-url (several nodes share one PostgreSQL database)");
    }
    let want = |name: &str| scenarios.iter().any(|s| s == name);
    let keyward = std::fs::canonicalize(&args.keyward)
        .with_context(|| format!("keyward binary {}", args.keyward.display()))?;

    if want("failover") {
        if scenarios.len() > 1 {
            bail!("the failover scenario runs alone (it brings its own database and nodes)");
        }
        return failover::run(&args, &keyward).await;
    }

    let machine = stats::machine_facts();
    // The run's directory: a fresh temporary one, or the kept one of an earlier scale fill.
    let (root, tmp) = match &args.scale_reuse {
        Some(dir) => (std::fs::canonicalize(dir)?, None),
        None => {
            let t = tempfile::Builder::new()
                .prefix("keyward-bench-")
                .tempdir()?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let saved = match &args.scale_reuse {
        Some(_) => Some(scale::Saved::load(&root)?),
        None => None,
    };
    let data_dir = root.join("data");
    std::fs::create_dir_all(&data_dir)?;
    progress(&format!("data dir {}", root.display()));

    // PostgreSQL: a fresh database for this run (or the one of the reused fill).
    let mut made_db: Option<(String, String)> = None;
    let pg_url = match (&saved, &args.database_url) {
        (Some(s), _) => s.database_url.clone(),
        (None, Some(base)) => {
            let name = format!(
                "keyward_bench_{}_{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_secs()
            );
            server::psql(base, &format!("CREATE DATABASE \"{name}\"")).await?;
            made_db = Some((base.clone(), name.clone()));
            Some(server::pg_url_with_db(base, &name)?)
        }
        (None, None) => None,
    };
    let master_key = if pg_url.is_some() {
        root.join("master.key")
    } else {
        data_dir.join("master.key")
    };
    if pg_url.is_some() && !master_key.exists() {
        // Every node loads this one key (docs/postgres.md, "One master key for every node").
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&master_key)?;
        f.write_all(&keyward_crypto::random_bytes(32)?)?;
    }
    let backend = Backend {
        data_dir: data_dir.clone(),
        pg_url,
        master_key,
    };
    progress(&format!(
        "backend {}, {} node(s)",
        backend.name(),
        args.nodes
    ));

    let mut serve_args = vec![
        "--token-pool-size".to_string(),
        args.token_pool_size.to_string(),
    ];
    serve_args.extend(without_creation_limits(&args.serve_args));
    serve_args.extend(args.serve_args.iter().cloned());
    let launch = Launch {
        keyward: keyward.clone(),
        backend,
        nodes: args.nodes,
        root: root.clone(),
        serve_args,
        env: args.server_env.clone(),
    };

    let outcome = run_with_backend(&args, &want, &launch, saved.as_ref()).await;

    // The database made for this run goes, unless kept.
    let keep = args.keep_data || args.scale_reuse.is_some();
    if let Some((base, name)) = &made_db {
        if keep {
            progress(&format!(
                "kept database {}",
                launch.backend.pg_url.as_deref().unwrap_or_default()
            ));
        } else if let Err(e) = server::psql(
            base,
            &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
        )
        .await
        {
            progress(&format!("could not drop database {name}: {e:#}"));
        }
    }
    if let Some(t) = tmp {
        if args.keep_data {
            let kept = t.keep();
            progress(&format!("kept {}", kept.display()));
        }
    }
    let (scenarios_done, rsa, extras) = outcome?;

    let config = json!({
        "keyward": keyward.display().to_string(),
        "backend": launch.backend.name(),
        "nodes": args.nodes,
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
    for k in ["master_key_rotate", "soak", "edge", "audit", "scale"] {
        report[k] = extras[k].clone();
    }
    if let Some(path) = &args.json_out {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report::table(&report));
        print!("{}", audit::table(&report["audit"]));
        print!("{}", scale::table(&report["scale"]));
    }
    let flagged = scenarios_done.iter().any(|s| s.res.errors() > 0)
        || report["soak"]["non_2xx_or_transport_errors"]
            .as_u64()
            .is_some_and(|n| n > 0)
        || report["edge"]["verdicts"]["no_5xx"] == json!(false)
        || ["fill", "distinct_wraps", "wrap_random_keys", "wrap_one_key"]
            .iter()
            .any(|k| report["scale"][k]["errors"].as_u64().is_some_and(|n| n > 0));
    if flagged {
        progress("some scenarios had errors (see notes); exit status 2");
    }
    Ok(flagged)
}

type Outcome = (Vec<Scenario>, Option<(f64, f64)>, Value);

/// Sets up the tenant (or takes the saved one), starts the nodes, runs the scenarios and
/// stops the nodes.
async fn run_with_backend(
    args: &Args,
    want: &dyn Fn(&str) -> bool,
    launch: &Launch,
    saved: Option<&scale::Saved>,
) -> Result<Outcome> {
    let keyward = &launch.keyward;
    let backend = &launch.backend;
    let db_args = backend.db_args();
    // Instance + Manager API key through the admin CLI; if the CLI wants the database that
    // `serve` creates, start the server first and retry.
    let early = match saved {
        Some(s) => Ok(Setup {
            instance: s.instance.clone(),
            apikey: s.apikey.clone(),
        }),
        None => admin_setup(keyward, &backend.data_dir, &db_args).await,
    };
    let mut nodes = launch.start("serve", &[], None).await?;
    let setup = match early {
        Ok(s) => s,
        Err(e) => {
            progress(&format!(
                "admin before serve failed ({e:#}); retrying with the server up"
            ));
            match admin_setup(keyward, &backend.data_dir, &db_args).await {
                Ok(s) => s,
                Err(e) => {
                    nodes.stop().await;
                    return Err(e);
                }
            }
        }
    };
    for s in &nodes.servers {
        progress(&format!("server pid {} on {}", s.pid, s.addr));
    }
    let result = run_scenarios(args, want, launch, &mut nodes, &setup, saved).await;
    nodes.stop().await;
    if result.is_err() {
        eprintln!("server log tail:\n{}", nodes.log_tail());
    }
    result
}

async fn run_scenarios(
    args: &Args,
    want: &dyn Fn(&str) -> bool,
    launch: &Launch,
    nodes: &mut Nodes,
    setup: &Setup,
    saved: Option<&scale::Saved>,
) -> Result<Outcome> {
    let keyward = launch.keyward.as_path();
    let backend = &launch.backend;
    let warmup = Duration::from_secs_f64(args.warmup);
    let duration = Duration::from_secs_f64(args.duration);
    let mut out = Vec::new();

    let ctx = Ctx::new(
        nodes,
        bearer_token(nodes.first().addr, &setup.apikey).await?,
        setup.instance.clone(),
    );

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
        let addrs = ctx.addrs.clone();
        let pids = ctx.pids.clone();
        async move {
            for &addr in &addrs {
                settle(addr, pool_target, wait_idle).await;
            }
            progress(&format!(
                "{name}: {conns} connections, {} s warm-up + {} s",
                warmup.as_secs_f64(),
                duration.as_secs_f64()
            ));
            let m0 = http::nodes_metrics(&addrs).await;
            let res = http::closed_loop_nodes(&addrs, t, conns, warmup, duration, &pids).await?;
            let mut s = Scenario::new(&name, "closed-loop", conns, res);
            if let (Some(m0), Some(m1)) = (m0, http::nodes_metrics(&addrs).await) {
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
    }
    for pq in [false, true] {
        let name = if pq {
            "secure-import-pq"
        } else {
            "secure-import"
        };
        if !want(name) || args.secure_import_connections.is_empty() {
            continue;
        }
        settle(ctx.addr, args.token_pool_size, args.wait_idle).await;
        let calibration = if pq {
            let threads = std::thread::available_parallelism()
                .map(|p| p.get())
                .unwrap_or(1);
            progress("calibrating the X-Wing import decryption (1 and all threads, 2 s each)");
            let (one, all) =
                tokio::task::spawn_blocking(move || stats::xwing_calibration(threads, 2.0))
                    .await??;
            Some(format!(
                "; X-Wing import decrypt measured in the client: {one:.0}/s on 1 thread, {all:.0}/s on all cores"
            ))
        } else {
            None
        };
        let bodies = secure_import_bodies(&ctx, args.secure_import_bodies, pq).await?;
        for &conns in &args.secure_import_connections {
            let t = ReqTemplate::new(
                Method::POST,
                "/api/v2/keys",
                &ctx.host,
                &ctx.headers(KEY_CT),
                bodies.clone(),
            )?;
            let before = bodies.used().map(|(n, _)| n).unwrap_or(0);
            let mut s = closed(&format!("{name}-{conns}"), t, conns).await?;
            if let Some((n, reused)) = bodies.used() {
                s.note = Some(format!(
                    "{} pre-computed bodies used{}{}",
                    n - before,
                    if reused {
                        " (batch reused: raise --secure-import-bodies)"
                    } else {
                        ""
                    },
                    calibration.as_deref().unwrap_or("")
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
        let key_file = backend.master_key.to_string_lossy();
        let started = std::time::Instant::now();
        let db = match &backend.pg_url {
            Some(url) => vec!["--database-url".to_string(), url.clone()],
            None => Vec::new(),
        };
        let out = server::admin(
            keyward,
            &backend.data_dir,
            &[
                "master-key",
                "--master-key-file",
                &key_file,
                "rotate",
                "--settle",
                "0",
            ],
            &db,
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

    if want("import-token-pq") {
        // X-Wing keypairs are generated inline in microseconds: no pool, no pause.
        let body = serde_json::to_vec(&json!({
            "expiration": 600, "maxAllowedRetrievals": 1,
            "algorithm": keyward_crypto::pq::TOKEN_ALGORITHM,
        }))?;
        let t = ReqTemplate::new(
            Method::POST,
            "/api/v2/import_token",
            &ctx.host,
            &ctx.headers(JSON_CT),
            Bodies::Fixed(Bytes::from(body)),
        )?;
        progress(&format!(
            "import-token-pq: {} sequential X-Wing token creations",
            args.import_token_samples
        ));
        settle(ctx.addr, args.token_pool_size, args.wait_idle).await;
        let res = http::sequential(
            ctx.addr,
            Arc::new(t),
            args.import_token_samples,
            Duration::ZERO,
            Some(Duration::from_secs(30)),
            ctx.pid,
            "import-token-pq",
        )
        .await?;
        let mut s = Scenario::new("import-token-pq", "sequential", 1, res);
        s.note = Some("X-Wing (ML-KEM-768 + X25519) tokens, generated inline".into());
        out.push(s);
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
        nodes.stop().await;
        // One node: the requests are sequential. The later `--token-pool-size 0` wins over
        // the run's own.
        *nodes = launch
            .start(
                "serve-cold",
                &["--token-pool-size".to_string(), "0".to_string()],
                Some(1),
            )
            .await?;
        let bearer = bearer_token(nodes.first().addr, &setup.apikey).await?;
        let cold = Ctx::new(nodes, bearer, setup.instance.clone());
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
    let mut audit_report = None;
    if want("wrap-audit-file") || want("wrap-audit-db") {
        let (scenarios, report) = audit::run(
            args,
            launch,
            nodes,
            setup,
            &wrap_path,
            &dek,
            want("wrap-audit-file"),
            want("wrap-audit-db"),
        )
        .await?;
        out.extend(scenarios);
        audit_report = Some(report);
    }
    if want("kmip") {
        out.extend(kmip::run(args, launch, nodes, setup).await?);
    }
    let mut scale_report = None;
    if want("scale") {
        scale_report = Some(scale::run(args, launch, nodes, setup, saved).await?);
    }
    let extras = json!({
        "master_key_rotate": reseal,
        "soak": soak,
        "edge": edge_report,
        "audit": audit_report,
        "scale": scale_report,
    });
    Ok((out, rsa, extras))
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
async fn secure_import_bodies(ctx: &Ctx, n: usize, pq: bool) -> Result<Bodies> {
    let mut create = json!({"expiration": 86400, "maxAllowedRetrievals": 500});
    if pq {
        create["algorithm"] = json!(keyward_crypto::pq::TOKEN_ALGORITHM);
    }
    ctx.json(Method::POST, "/api/v2/import_token", JSON_CT, create)
        .await?;
    let tok = ctx
        .json(Method::GET, "/api/v2/import_token", JSON_CT, Value::Null)
        .await?;
    let key = if pq {
        TokenKey::XWing {
            public_key: B64.decode(str_field(&tok, "payload")?)?,
            id: str_field(&tok, "id")?.to_string(),
            instance: ctx.instance.clone(),
        }
    } else {
        TokenKey::Rsa(String::from_utf8(B64.decode(str_field(&tok, "payload")?)?)?)
    };
    let nonce = B64.decode(str_field(&tok, "nonce")?)?;
    progress(&format!("secure-import: pre-computing {n} request bodies"));
    let t0 = Instant::now();
    let threads = std::thread::available_parallelism()
        .map(|p| p.get())
        .unwrap_or(1)
        .max(1);
    let per = n.div_ceil(threads);
    let key = Arc::new(key);
    let nonce = Arc::new(nonce);
    let mut handles = Vec::new();
    for t in 0..threads {
        let (key, nonce) = (key.clone(), nonce.clone());
        let range = (t * per)..((t + 1) * per).min(n);
        handles.push(tokio::task::spawn_blocking(
            move || -> Result<Vec<Bytes>> {
                range.map(|i| secure_import_body(i, &key, &nonce)).collect()
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

/// The public half of the benchmark's import token.
enum TokenKey {
    Rsa(String),
    XWing {
        public_key: Vec<u8>,
        id: String,
        instance: String,
    },
}

fn secure_import_body(i: usize, key: &TokenKey, nonce: &[u8]) -> Result<Bytes> {
    use keyward_crypto::import::{encrypt_material, encrypt_nonce, OaepHash};
    use keyward_crypto::pq;
    let material = keyward_crypto::random_secret(32)?;
    let (payload, algorithm) = match key {
        TokenKey::Rsa(pem) => (
            encrypt_material(pem, OaepHash::Sha256, material.expose())?,
            "RSAES_OAEP_SHA_256",
        ),
        TokenKey::XWing {
            public_key,
            id,
            instance,
        } => {
            let binding = pq::Binding {
                token_id: id,
                instance_id: instance,
                nonce,
            };
            (
                pq::encrypt_material(public_key, &binding, material.expose())?,
                pq::ENCRYPTION_ALGORITHM,
            )
        }
    };
    let (iv, enc_nonce) = encrypt_nonce(&material, nonce)?;
    let body = key_envelope(json!({
        "type": KEY_CT,
        "name": format!("bench-si-{i}"),
        "extractable": false,
        "payload": B64.encode(payload),
        "encryptionAlgorithm": algorithm,
        "encryptedNonce": B64.encode(enc_nonce),
        "iv": B64.encode(iv),
    }));
    Ok(Bytes::from(serde_json::to_vec(&body)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_flag_in_extra_replaces_the_base_pair() {
        let base = v(&["--token-pool-size", "4", "--rate-limit-key-create=0"]);
        assert_eq!(
            override_flags(&base, &v(&["--token-pool-size", "0"])),
            v(&["--rate-limit-key-create=0", "--token-pool-size", "0"])
        );
        assert_eq!(
            override_flags(&base, &v(&["--audit-sink", "database"])),
            v(&[
                "--token-pool-size",
                "4",
                "--rate-limit-key-create=0",
                "--audit-sink",
                "database"
            ])
        );
    }

    #[test]
    fn the_run_database_replaces_the_server_url_path() -> Result<()> {
        use crate::server::pg_url_with_db;
        assert_eq!(
            pg_url_with_db("postgres://postgres@127.0.0.1:5432/postgres", "b1")?,
            "postgres://postgres@127.0.0.1:5432/b1"
        );
        assert_eq!(
            pg_url_with_db("postgres://u:p@h/db?sslmode=disable", "b2")?,
            "postgres://u:p@h/b2?sslmode=disable"
        );
        assert_eq!(
            pg_url_with_db("postgres://h:5432", "b3")?,
            "postgres://h:5432/b3"
        );
        assert!(pg_url_with_db("h:5432/db", "b4").is_err());
        Ok(())
    }
}

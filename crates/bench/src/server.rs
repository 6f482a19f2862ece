//! Starting and stopping the keyward server under test, and its admin CLI.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use hyper::Method;
use serde_json::Value;
use tokio::process::{Child, Command};

use crate::http;

/// Runs `keyward admin --data-dir DIR --output json ARGS... DB_ARGS...` and parses its JSON
/// output; `db_args` is a [`Backend::db_args`] (empty for SQLite in DIR).
pub async fn admin(
    keyward: &Path,
    data_dir: &Path,
    args: &[&str],
    db_args: &[String],
) -> Result<Value> {
    let out = Command::new(keyward)
        .arg("admin")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--output", "json"])
        .args(args)
        .args(db_args)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("run {}", keyward.display()))?;
    if !out.status.success() {
        bail!(
            "keyward admin {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "keyward admin {}: output is not JSON: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub pid: u32,
    pub log: PathBuf,
    /// From the spawn to the first 200 from `/healthz` (polled every 10 ms).
    pub ready_after: Duration,
}

impl Server {
    /// Starts `keyward serve` on a free loopback port and waits until `/healthz` answers 200.
    pub async fn start(
        keyward: &Path,
        data_dir: &Path,
        log: PathBuf,
        extra: &[String],
        env: &[String],
        ready_timeout: Duration,
    ) -> Result<Self> {
        let mut vars = Vec::new();
        for kv in env {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| anyhow!("--server-env wants KEY=VALUE, got {kv:?}"))?;
            vars.push((k.to_string(), v.to_string()));
        }
        let port = free_port()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let logfile = std::fs::File::create(&log)?;
        let child = Command::new(keyward)
            .arg("serve")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .envs(vars)
            .stdin(Stdio::null())
            .stdout(logfile.try_clone()?)
            .stderr(logfile)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {} serve", keyward.display()))?;
        let spawned = Instant::now();
        let pid = child.id().ok_or_else(|| anyhow!("server exited at once"))?;
        let mut server = Server {
            child,
            addr,
            pid,
            log,
            ready_after: Duration::ZERO,
        };
        let deadline = Instant::now() + ready_timeout;
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "keyward serve exited ({status}) before it was ready:\n{}",
                    server.log_tail()
                );
            }
            if let Ok((s, _)) = http::call(addr, Method::GET, "/healthz", &[], Vec::new()).await {
                if s.is_success() {
                    server.ready_after = spawned.elapsed();
                    return Ok(server);
                }
            }
            if Instant::now() > deadline {
                server.stop().await;
                bail!("keyward serve not ready after {ready_timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGTERM (by pid, via kill(1)), then SIGKILL if it has not exited within 5 s.
    pub async fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-s", "TERM", &self.pid.to_string()])
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// The database the server(s) run on: SQLite in the data directory, or a PostgreSQL database
/// made for this run (dropped at the end unless kept).
pub struct Backend {
    pub data_dir: PathBuf,
    /// PostgreSQL: the URL of this run's database.
    pub pg_url: Option<String>,
    /// The master key file every node (and the admin CLI) loads.
    pub master_key: PathBuf,
}

impl Backend {
    pub fn name(&self) -> &'static str {
        if self.pg_url.is_some() {
            "postgres"
        } else {
            "sqlite"
        }
    }

    /// Arguments naming the database and the master key, for `serve` and for `admin`.
    /// SQLite: none (the defaults: `DATA_DIR/keyward.db` and `DATA_DIR/master.key`).
    pub fn db_args(&self) -> Vec<String> {
        match &self.pg_url {
            Some(url) => vec![
                "--database-url".into(),
                url.clone(),
                "--master-key-file".into(),
                self.master_key.display().to_string(),
            ],
            None => Vec::new(),
        }
    }
}

/// `base` with its database name replaced by `db` (the query string is kept).
pub fn pg_url_with_db(base: &str, db: &str) -> Result<String> {
    let (head, query) = match base.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (base, None),
    };
    let scheme_end = head
        .find("://")
        .ok_or_else(|| anyhow!("--database-url is not a postgres:// URL"))?
        + 3;
    let authority_end = head[scheme_end..]
        .find('/')
        .map(|i| scheme_end + i)
        .unwrap_or(head.len());
    let mut url = format!("{}/{db}", &head[..authority_end]);
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    Ok(url)
}

/// Runs one SQL statement with `psql` against `url` and returns its unaligned output.
pub async fn psql(url: &str, sql: &str) -> Result<String> {
    let out = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .stdin(Stdio::null())
        .output()
        .await
        .context("run psql (needed for --database-url)")?;
    if !out.status.success() {
        bail!(
            "psql failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// One or more `keyward serve` nodes on the same database; the client spreads its connections
/// round robin over them.
pub struct Nodes {
    pub servers: Vec<Server>,
}

impl Nodes {
    /// Starts `n` nodes one after the other (the first one on an empty database bootstraps it),
    /// logging to `DIR/LOG_PREFIX-<i>.log`.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        keyward: &Path,
        backend: &Backend,
        n: usize,
        log_dir: &Path,
        log_prefix: &str,
        extra: &[String],
        env: &[String],
        ready_timeout: Duration,
    ) -> Result<Self> {
        let mut args = backend.db_args();
        args.extend(extra.iter().cloned());
        let mut servers = Vec::new();
        for i in 0..n.max(1) {
            let log = if n <= 1 {
                log_dir.join(format!("{log_prefix}.log"))
            } else {
                log_dir.join(format!("{log_prefix}-{i}.log"))
            };
            match Server::start(keyward, &backend.data_dir, log, &args, env, ready_timeout).await {
                Ok(s) => servers.push(s),
                Err(e) => {
                    for s in &mut servers {
                        s.stop().await;
                    }
                    return Err(e);
                }
            }
        }
        Ok(Self { servers })
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.servers.iter().map(|s| s.addr).collect()
    }

    pub fn pids(&self) -> Vec<u32> {
        self.servers.iter().map(|s| s.pid).collect()
    }

    pub fn first(&self) -> &Server {
        &self.servers[0]
    }

    pub async fn stop(&mut self) {
        for s in &mut self.servers {
            s.stop().await;
        }
    }

    pub fn log_tail(&self) -> String {
        self.servers
            .iter()
            .map(|s| format!("{}:\n{}", s.log.display(), s.log_tail()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// VmRSS of a process in KiB (from /proc/PID/status).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

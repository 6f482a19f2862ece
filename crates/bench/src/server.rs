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

/// Runs `keyward admin --data-dir DIR --output json ARGS...` and parses its JSON output.
pub async fn admin(keyward: &Path, data_dir: &Path, args: &[&str]) -> Result<Value> {
    let out = Command::new(keyward)
        .arg("admin")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--output", "json"])
        .args(args)
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
        let pid = child.id().ok_or_else(|| anyhow!("server exited at once"))?;
        let mut server = Server {
            child,
            addr,
            pid,
            log,
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
                    return Ok(server);
                }
            }
            if Instant::now() > deadline {
                server.stop().await;
                bail!("keyward serve not ready after {ready_timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
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

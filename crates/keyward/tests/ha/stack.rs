//! The HA stack of `scripts/ha-stack` (etcd, three PostgreSQL under Patroni, HAProxy) in a
//! temporary directory, stopped when the handle is dropped (also when the test fails; the
//! directory and its logs are then kept and named).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use keyward_testsupport::services;

pub struct Stack {
    dir: Option<tempfile::TempDir>,
    pub ctl: Ctl,
    pub env: BTreeMap<String, String>,
}

/// `scripts/ha-stack` on one stack's directory.
#[derive(Clone)]
pub struct Ctl {
    script: PathBuf,
    path: PathBuf,
}

impl Ctl {
    /// Runs `scripts/ha-stack SUB DIR`, which must succeed; its stdout, trimmed.
    pub fn run(&self, sub: &[&str]) -> String {
        let out = Command::new(&self.script)
            .args(sub)
            .arg(&self.path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "scripts/ha-stack {sub:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The current primary's member name, if there is one.
    pub fn primary(&self) -> Option<String> {
        let out = Command::new(&self.script)
            .arg("primary")
            .arg(&self.path)
            .output()
            .unwrap();
        let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !s.is_empty()).then_some(s)
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/ha-stack")
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether every port the stack would use from `base` is free now.
fn ports_free(base: u16) -> bool {
    [0, 1, 10, 11, 12, 13, 21, 22, 23]
        .iter()
        .all(|off| std::net::TcpListener::bind(("127.0.0.1", base + off)).is_ok())
}

impl Stack {
    /// Starts a stack, or returns `None` after [`services::missing`] when Patroni, etcd or
    /// HAProxy is not installed (a failure with `KEYWARD_REQUIRE_SERVICES=1`).
    pub fn start(test: &str) -> Option<Stack> {
        let missing: Vec<&str> = ["patroni", "patronictl", "etcd", "haproxy", "setpriv"]
            .into_iter()
            .filter(|c| !have(c))
            .collect();
        if !missing.is_empty() {
            services::missing(
                test,
                &format!("the HA stack ({} not found)", missing.join(", ")),
                "apt-get install patroni etcd-server haproxy postgresql",
            );
            return None;
        }
        if !rustix::process::geteuid().is_root() {
            services::missing(
                test,
                "root (scripts/ha-stack runs PostgreSQL as user postgres)",
                "run the HA tests as root",
            );
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("kw-ha-")
            .tempdir_in("/tmp")
            .unwrap();
        let ctl = Ctl {
            script: script(),
            path: dir.path().to_path_buf(),
        };
        let mut stack = Stack {
            dir: Some(dir),
            ctl,
            env: BTreeMap::new(),
        };
        // A port base below the ephemeral range, different per run so that two runs (or a
        // stack left by another worktree) do not meet.
        // Each stack of one test binary gets other ports than the one before it, whose
        // processes may still be closing theirs.
        static STACKS: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
        let nth = STACKS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let seed = (std::process::id() as u16).wrapping_add(nth.wrapping_mul(41));
        let started = Instant::now();
        for attempt in 0..20u16 {
            let base = 20000 + ((seed.wrapping_add(attempt * 37)) % 120) * 100;
            if !ports_free(base) {
                continue;
            }
            let out = Command::new(&stack.ctl.script)
                .args(["start"])
                .arg(&stack.ctl.path)
                .env("HA_PORT_BASE", base.to_string())
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr).to_string();
            if out.status.success() {
                eprintln!(
                    "ha stack up in {:.1?} (ports from {base}): {}",
                    started.elapsed(),
                    err.trim()
                );
                let env = stack.run(&["env"]);
                stack.env = env
                    .lines()
                    .filter_map(|l| l.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                return Some(stack);
            }
            assert!(
                err.contains("in use"),
                "scripts/ha-stack start failed ({}):\n{err}",
                out.status
            );
        }
        panic!("no free port base for the HA stack");
    }

    pub fn var(&self, name: &str) -> String {
        self.env
            .get(name)
            .unwrap_or_else(|| panic!("ha-stack env has no {name}"))
            .clone()
    }

    pub fn proxy_url(&self) -> String {
        self.var("KEYWARD_HA_PROXY_URL")
    }

    pub fn multihost_url(&self) -> String {
        self.var("KEYWARD_HA_MULTIHOST_URL")
    }

    /// Runs `scripts/ha-stack SUB DIR`, which must succeed; its stdout, trimmed.
    pub fn run(&self, sub: &[&str]) -> String {
        self.ctl.run(sub)
    }

    /// [`Stack::run`] off the runtime's worker threads.
    pub async fn run_async(&self, sub: &[&str]) -> String {
        let ctl = self.ctl.clone();
        let sub: Vec<String> = sub.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = sub.iter().map(String::as_str).collect();
            ctl.run(&refs)
        })
        .await
        .unwrap()
    }

    /// Polls until a member other than `old` is primary; when it became so.
    pub async fn wait_new_primary(&self, old: &str, limit: Duration) -> (String, Instant) {
        let start = Instant::now();
        loop {
            let ctl = self.ctl.clone();
            let p = tokio::task::spawn_blocking(move || ctl.primary())
                .await
                .unwrap();
            if let Some(p) = p.filter(|p| p != old) {
                return (p, Instant::now());
            }
            assert!(
                start.elapsed() < limit,
                "no new primary {limit:?} after losing {old}:\n{}",
                self.patroni_logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last lines of every Patroni log (for failure messages).
    pub fn patroni_logs(&self) -> String {
        let mut s = String::new();
        for i in 1..=3 {
            let log = std::fs::read_to_string(self.ctl.path.join(format!("patroni{i}.log")))
                .unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            s += &format!("---- patroni{i}.log (end)\n");
            for l in &lines[lines.len().saturating_sub(25)..] {
                s += l;
                s.push('\n');
            }
        }
        s
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else {
            return;
        };
        let _ = Command::new(&self.ctl.script)
            .arg("stop")
            .arg(&self.ctl.path)
            .output();
        if std::thread::panicking() {
            eprintln!("{}", self.patroni_logs());
            eprintln!(
                "ha stack stopped; its directory is kept: {}",
                dir.keep().display()
            );
        }
    }
}

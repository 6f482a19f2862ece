//! Percentiles, CPU accounting from /proc, and machine facts.

use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use serde_json::{json, Value};

/// Nearest-rank percentile of a sorted slice (`p` in 0..=100), in nanoseconds.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    let idx = rank.clamp(1, n) - 1;
    sorted.get(idx).copied()
}

pub fn clk_tck() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|v| *v > 0.0)
            .unwrap_or(100.0)
    })
}

/// utime + stime of a process (all its threads), in clock ticks.
pub(crate) fn proc_ticks(pid: &str) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces; fields after the last ')' are plain.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("odd /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11).ok_or_else(|| anyhow!("no utime"))?.parse()?;
    let stime: u64 = fields.get(12).ok_or_else(|| anyhow!("no stime"))?.parse()?;
    Ok(utime + stime)
}

/// (busy, total) ticks of the whole machine from the first line of /proc/stat.
pub fn machine_ticks() -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat
        .lines()
        .next()
        .ok_or_else(|| anyhow!("empty /proc/stat"))?;
    let vals: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal guest guest_nice; guest is already in user.
    let total: u64 = vals.iter().take(8).sum();
    let idle = vals.get(3).copied().unwrap_or(0) + vals.get(4).copied().unwrap_or(0);
    Ok((total.saturating_sub(idle), total))
}

#[derive(Clone, Copy)]
pub struct CpuSample {
    at: Instant,
    server: u64,
    client: u64,
    busy: u64,
}

/// CPU used over a window, in cores (1.0 = one core fully busy).
#[derive(Clone, Copy, Debug)]
pub struct CpuUse {
    pub server: f64,
    pub client: f64,
    /// Everything else on the machine (other processes, e.g. a build).
    pub other: f64,
}

impl CpuSample {
    pub fn take(server_pid: u32) -> Result<Self> {
        Self::take_all(&[server_pid])
    }

    /// Like [`CpuSample::take`], with the server's CPU summed over several nodes.
    pub fn take_all(server_pids: &[u32]) -> Result<Self> {
        let (busy, _) = machine_ticks()?;
        let mut server = 0;
        for pid in server_pids {
            server += proc_ticks(&pid.to_string())?;
        }
        Ok(Self {
            at: Instant::now(),
            server,
            client: proc_ticks("self")?,
            busy,
        })
    }

    pub fn since(&self, before: &CpuSample) -> CpuUse {
        let secs = self.at.duration_since(before.at).as_secs_f64().max(1e-9);
        let hz = clk_tck();
        let cores = |t: u64| t as f64 / hz / secs;
        let server = self.server.saturating_sub(before.server);
        let client = self.client.saturating_sub(before.client);
        let busy = self.busy.saturating_sub(before.busy);
        CpuUse {
            server: cores(server),
            client: cores(client),
            other: cores(busy.saturating_sub(server + client)),
        }
    }
}

fn run(cmd: &str, args: &[&str]) -> Option<String> {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
}

/// nproc, CPU model, memory, load, kernel, git commit, rustc.
pub fn machine_facts() -> Value {
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| (kb / 1024.0 / 1024.0 * 10.0).round() / 10.0);
    let loadavg = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    let commit = run("git", &["rev-parse", "--short=12", "HEAD"]);
    let dirty =
        run("git", &["--no-optional-locks", "status", "--porcelain"]).map(|s| !s.is_empty());
    let git = match (commit, dirty) {
        (Some(c), Some(true)) => format!("{c}+dirty"),
        (Some(c), _) => c,
        (None, _) => "none (no commit)".to_string(),
    };
    json!({
        "nproc": nproc,
        "cpu_model": field("model name"),
        "cpu_mhz": field("cpu MHz"),
        "mem_gib": mem_gib,
        "loadavg_at_start": loadavg,
        "kernel": run("uname", &["-r"]),
        "git_commit": git,
        "rustc": run("rustc", &["--version"]),
    })
}

/// What the server's Prometheus text says: per-route latency sum/count, and the token pool depth.
#[derive(Default, Clone)]
pub struct ServerMetrics {
    pub routes: std::collections::HashMap<String, (f64, f64)>,
    pub pool_depth: Option<f64>,
}

impl ServerMetrics {
    pub fn parse(text: &str) -> Self {
        let mut m = ServerMetrics::default();
        for line in text.lines() {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            if name == "keyward_import_token_pool_depth" {
                m.pool_depth = Some(value);
                continue;
            }
            let route = |prefix: &str| {
                name.strip_prefix(prefix)
                    .and_then(|r| r.strip_prefix("{route=\""))
                    .and_then(|r| r.strip_suffix("\"}"))
                    .map(str::to_string)
            };
            if let Some(r) = route("keyward_http_request_duration_seconds_sum") {
                m.routes.entry(r).or_default().0 = value;
            } else if let Some(r) = route("keyward_http_request_duration_seconds_count") {
                m.routes.entry(r).or_default().1 = value;
            }
        }
        m
    }

    /// Adds another node's counters to these (route sums and counts; the smaller pool depth).
    pub fn merge(&mut self, other: ServerMetrics) {
        for (route, (sum, count)) in other.routes {
            let e = self.routes.entry(route).or_default();
            e.0 += sum;
            e.1 += count;
        }
        self.pool_depth = match (self.pool_depth, other.pool_depth) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// Server-side mean latency (ms) of `route` since `before`, and the requests counted.
    pub fn route_since(&self, before: &ServerMetrics, route: &str) -> Option<(f64, f64)> {
        let (sum, count) = self.routes.get(route).copied()?;
        let (s0, c0) = before.routes.get(route).copied().unwrap_or((0.0, 0.0));
        let dc = count - c0;
        (dc > 0.0).then(|| ((sum - s0) / dc * 1000.0, dc))
    }

    /// The route with the most requests since `before`, with its server-side mean latency (ms).
    pub fn busiest_since(&self, before: &ServerMetrics) -> Option<(String, f64)> {
        self.routes
            .iter()
            .filter_map(|(route, (sum, count))| {
                let (s0, c0) = before.routes.get(route).copied().unwrap_or((0.0, 0.0));
                let dc = count - c0;
                (dc > 0.0).then(|| (route.clone(), dc, (sum - s0) / dc * 1000.0))
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(route, _, mean)| (route, mean))
    }
}

/// Client-side calibration of the secure-import ceiling: RSA-4096 OAEP-SHA-256 decryptions per
/// second with a locally generated key, on 1 thread and on `threads` threads (`secs` each).
pub fn rsa_calibration(threads: usize, secs: f64) -> Result<(f64, f64)> {
    use keyward_crypto::import::{encrypt_material, ImportKeyPair, OaepHash};
    let kp = ImportKeyPair::generate()?;
    let material = keyward_crypto::random_bytes(32)?;
    let ct = encrypt_material(kp.public_pem(), OaepHash::Sha256, &material)?;
    calibrate(threads, secs, || {
        kp.decrypt_material(OaepHash::Sha256, &ct)
            .map(drop)
            .map_err(|e| anyhow!("decrypt: {e:?}"))
    })
}

/// The same for the X-Wing import (`keyward_crypto::pq`): decapsulation, HKDF-SHA-256 and the
/// AES-256-GCM open of 32 bytes of material.
pub fn xwing_calibration(threads: usize, secs: f64) -> Result<(f64, f64)> {
    use keyward_crypto::pq::{encrypt_material, public_key_from_pem, Binding, XWingKeyPair};
    let kp = XWingKeyPair::generate()?;
    let pk = public_key_from_pem(kp.public_pem()).ok_or_else(|| anyhow!("X-Wing public key"))?;
    let binding = Binding {
        token_id: "calibration",
        instance_id: "calibration",
        nonce: b"calibration!",
    };
    let ct = encrypt_material(&pk, &binding, &keyward_crypto::random_bytes(32)?)?;
    calibrate(threads, secs, || {
        kp.decrypt_material(&binding, &ct)
            .map(drop)
            .map_err(|e| anyhow!("decrypt: {e:?}"))
    })
}

/// Runs `op` in a loop for `secs` on 1 thread, then on `threads`: operations per second.
fn calibrate(threads: usize, secs: f64, op: impl Fn() -> Result<()> + Sync) -> Result<(f64, f64)> {
    let run = |n: usize| -> Result<f64> {
        let start = Instant::now();
        let limit = std::time::Duration::from_secs_f64(secs);
        let total: Result<u64> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..n)
                .map(|_| {
                    s.spawn(|| -> Result<u64> {
                        let mut done = 0u64;
                        while start.elapsed() < limit {
                            op()?;
                            done += 1;
                        }
                        Ok(done)
                    })
                })
                .collect();
            let mut sum = 0;
            for h in handles {
                sum += h.join().map_err(|_| anyhow!("calibration thread died"))??;
            }
            Ok(sum)
        });
        Ok(total? as f64 / start.elapsed().as_secs_f64())
    };
    Ok((run(1)?, run(threads.max(1))?))
}

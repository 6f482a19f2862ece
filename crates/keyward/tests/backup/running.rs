//! A `keyward admin` command running in the background whose stderr is read line by line as
//! it comes: wait for a progress report (`--output json`), then interrupt the process there.
//! Shared by the `backup` and `masterkey` test binaries.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

pub struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    stdout: std::thread::JoinHandle<String>,
    /// Every stderr line read so far.
    pub seen: Vec<String>,
}

/// What a finished command left: exit status, stdout, every stderr line.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: Vec<String>,
}

impl Finished {
    pub fn killed_by(&self) -> Option<i32> {
        self.status.signal()
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.join("\n")
    }
}

impl Running {
    pub fn spawn(mut cmd: Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let mut out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let stdout = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        Running {
            child,
            lines,
            stdout,
            seen: Vec::new(),
        }
    }

    /// Reads stderr until a line is a JSON object for which `pred` holds; returns it. Fails
    /// the test if the command ends first or nothing matches within two minutes.
    pub fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(120)) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if let Ok(v) = serde_json::from_str::<Value>(&l) {
                        if pred(&v) {
                            return v;
                        }
                    }
                }
                Err(e) => panic!(
                    "no {what} on stderr ({e:?}); status {:?}; stderr:\n{}",
                    self.child.try_wait(),
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits for a progress report of `phase` that is part-way: some done, not finished.
    pub fn wait_midway(&mut self, phase: &str) -> Value {
        self.wait_for(&format!("part-way progress of {phase}"), |v| {
            let p = &v["progress"];
            p["phase"] == phase && p["done"].as_u64().unwrap_or(0) > 0 && p["finished"] == false
        })
    }

    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([format!("-{sig}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success(), "kill -{sig}");
    }

    /// Waits for the process to end (reading the rest of its output).
    pub fn finish(mut self) -> Finished {
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(120)) {
            self.seen.push(l);
        }
        let status = self.child.wait().unwrap();
        Finished {
            status,
            stdout: self.stdout.join().unwrap(),
            stderr: self.seen,
        }
    }
}

/// The part-way progress objects and notes on a JSON-mode stderr: every line must be one JSON
/// object with a `progress` object (phase, unit, counts, rate, ETA, elapsed, finished) or a
/// `note` string, and nothing else.
pub fn assert_well_formed_progress(stderr: &[String]) -> Vec<Value> {
    let mut reports = Vec::new();
    for l in stderr {
        let v: Value = serde_json::from_str(l)
            .unwrap_or_else(|e| panic!("a stderr line is not JSON ({e}): {l:?}"));
        let o = v
            .as_object()
            .unwrap_or_else(|| panic!("not an object: {l}"));
        assert_eq!(o.len(), 1, "{l}");
        if let Some(n) = o.get("note") {
            assert!(n.is_string(), "{l}");
            continue;
        }
        let p = o
            .get("progress")
            .and_then(Value::as_object)
            .unwrap_or_else(|| panic!("neither progress nor note: {l}"));
        let mut keys: Vec<&str> = p.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "done",
                "elapsed_seconds",
                "eta_seconds",
                "finished",
                "phase",
                "rate",
                "total",
                "unit"
            ],
            "{l}"
        );
        assert!(p["phase"].is_string() && p["finished"].is_boolean(), "{l}");
        assert!(
            ["rows", "bytes"].contains(&p["unit"].as_str().unwrap()),
            "{l}"
        );
        let done = p["done"].as_u64().unwrap();
        if let Some(t) = p["total"].as_u64() {
            assert!(done <= t, "{l}");
        } else {
            assert!(p["total"].is_null(), "{l}");
        }
        assert!(p["rate"].as_f64().unwrap() >= 0.0, "{l}");
        assert!(p["elapsed_seconds"].as_f64().unwrap() >= 0.0, "{l}");
        assert!(
            p["eta_seconds"].is_null() || p["eta_seconds"].is_u64(),
            "{l}"
        );
        if p["finished"] == true {
            assert_eq!(p["eta_seconds"], 0, "{l}");
        }
        reports.push(v["progress"].clone());
    }
    reports
}

/// The last report of `phase`, which must say it finished.
pub fn finished_phase<'a>(reports: &'a [Value], phase: &str) -> &'a Value {
    let last = reports
        .iter()
        .rev()
        .find(|p| p["phase"] == phase)
        .unwrap_or_else(|| panic!("no progress of phase {phase}: {reports:?}"));
    assert_eq!(last["finished"], true, "{last}");
    last
}

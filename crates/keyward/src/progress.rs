//! Progress and interruption of the long admin commands: `admin migrate`, `backup`, `restore`
//! and `master-key rotate|migrate` (docs/backup.md, docs/master-key.md).
//!
//! - **Progress** goes to stderr, never stdout (which keeps the one result object):
//!   - on a terminal, a bar per phase with count/total, rate and ETA (`indicatif`);
//!   - elsewhere (a log, a pipe), one plain line per phase at its start, at most every
//!     `--progress-every` seconds (default 5), and at its end;
//!   - with `--output json`, the same reports as one JSON object per line:
//!     `{"progress":{"phase":"snapshot","unit":"rows","done":500,"total":6007,"rate":812.3,
//!     "eta_seconds":7,"elapsed_seconds":0.6,"finished":false}}` (default every second), and
//!     the command's messages as `{"note":"..."}`.
//!
//!   A report holds a phase name, counts, rates and times only: never a row, a key, a
//!   database URL or a path, so it cannot carry a secret.
//! - **Interruption.** [`watch_signals`] turns the first SIGINT or SIGTERM into a flag
//!   ([`interrupted`]) that the commands check between pages, batches and chunks: each stops
//!   at the next such point, cleans up (no backup file, no scratch copy, no half-written
//!   target; re-sealed rows stay re-sealed) and fails with a message that says what to do. A
//!   second signal ends the process at once (exit status 130). A process killed outright
//!   (SIGKILL, a crash, a power cut) stops anywhere; what that leaves, and why rerunning the
//!   command is then safe, is in the documents above.

use std::io::{IsTerminal, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use parking_lot::Mutex;
use serde_json::{json, Value};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A bar on the terminal (stderr is one).
    Bar,
    /// Plain lines on stderr.
    Lines,
    /// One JSON object per line on stderr.
    Json,
    /// Nothing.
    Off,
}

/// What a phase counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Rows,
    Bytes,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::Rows => "rows",
            Unit::Bytes => "bytes",
        }
    }
}

/// Where reports go: stderr, or a buffer (unit tests).
#[derive(Clone, Default)]
enum Sink {
    #[default]
    Stderr,
    #[cfg(test)]
    Buffer(Arc<Mutex<Vec<u8>>>),
}

impl Sink {
    fn line(&self, line: &str) {
        match self {
            Sink::Stderr => {
                let mut e = std::io::stderr().lock();
                let _ = writeln!(e, "{line}");
            }
            #[cfg(test)]
            Sink::Buffer(b) => {
                let mut b = b.lock();
                b.extend_from_slice(line.as_bytes());
                b.push(b'\n');
            }
        }
    }
}

/// The progress reporter of one command.
#[derive(Clone)]
pub struct Progress {
    mode: Mode,
    every: Duration,
    sink: Sink,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("mode", &self.mode)
            .field("every", &self.every)
            .finish()
    }
}

impl Progress {
    /// The reporter for `--output OUTPUT` (`human` or `json`): JSON lines for `json`, else a
    /// bar when stderr is a terminal and plain lines when it is not. `every`: seconds between
    /// two reports of a phase in lines and JSON (`None`: 5 for lines, 1 for JSON; `0`: every
    /// update). `off`: no progress at all.
    pub fn for_output(output: &str, every: Option<f64>, off: bool) -> Self {
        let mode = if off {
            Mode::Off
        } else if output == "json" {
            Mode::Json
        } else if std::io::stderr().is_terminal() {
            Mode::Bar
        } else {
            Mode::Lines
        };
        let default = if mode == Mode::Json { 1.0 } else { 5.0 };
        let secs = every
            .filter(|s| s.is_finite() && *s >= 0.0)
            .unwrap_or(default);
        Self {
            mode,
            every: Duration::from_secs_f64(secs.min(86_400.0)),
            sink: Sink::Stderr,
        }
    }

    /// No progress (library callers and tests that do not look).
    pub fn off() -> Self {
        Self {
            mode: Mode::Off,
            every: Duration::ZERO,
            sink: Sink::Stderr,
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// A message about the command's course (what it resumes, what it waits for): a line on
    /// stderr, or `{"note": MESSAGE}` in JSON mode.
    pub fn note(&self, msg: &str) {
        match self.mode {
            Mode::Json => self.sink.line(&json!({ "note": msg }).to_string()),
            _ => self.sink.line(msg),
        }
    }

    /// Copies every row of `from` into `to` (`SqlStore::copy_into`) as the phase `name`, in
    /// rows: the report follows the copy, an interrupt (SIGINT, SIGTERM) stops it between
    /// batches, and the phase is finished when the copy completes.
    pub async fn copy_rows(
        &self,
        name: &'static str,
        from: &keyward_store::SqlStore,
        to: &keyward_store::SqlStore,
    ) -> keyward_store::StoreResult<keyward_store::CopyReport> {
        let phase = self.phase(name, Unit::Rows, None);
        let copied = from
            .copy_into(to, &|_, done, total| {
                phase.set_total(total);
                phase.set(done);
                interrupted().is_none()
            })
            .await;
        if copied.is_ok() {
            phase.finish();
        }
        copied
    }

    /// A new phase `name` counting `unit`, with its total when known. Reported at once.
    pub fn phase(&self, name: &'static str, unit: Unit, total: Option<u64>) -> Phase {
        let bar = (self.mode == Mode::Bar).then(|| {
            let b = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr())
                .with_style(bar_style(unit, total.is_some()))
                .with_prefix(name);
            b.tick();
            b
        });
        let now = Instant::now();
        let p = Phase(Arc::new(PhaseInner {
            progress: self.clone(),
            name,
            unit,
            total: AtomicU64::new(total.unwrap_or(NO_TOTAL)),
            done: AtomicU64::new(0),
            started: now,
            last: Mutex::new(now),
            bar,
            finished: AtomicBool::new(false),
        }));
        p.0.report(false);
        p
    }
}

const NO_TOTAL: u64 = u64::MAX;

/// The bar of a phase: count/total, rate, ETA and elapsed time; a spinner while the total is
/// unknown.
fn bar_style(unit: Unit, with_total: bool) -> ProgressStyle {
    let template = match (unit, with_total) {
        (Unit::Rows, true) => {
            "{prefix:>9} [{bar:32}] {human_pos}/{human_len} rows {rows_per_sec} ETA {eta} ({elapsed})"
        }
        (Unit::Bytes, true) => {
            "{prefix:>9} [{bar:32}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} ({elapsed})"
        }
        (Unit::Rows, false) => "{prefix:>9} {spinner} {human_pos} rows {rows_per_sec} ({elapsed})",
        (Unit::Bytes, false) => "{prefix:>9} {spinner} {bytes} {bytes_per_sec} ({elapsed})",
    };
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key(
            "rows_per_sec",
            |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0}/s", s.per_sec());
            },
        )
        .progress_chars("=> ")
}

/// One phase of a command (the snapshot, the encryption, the re-seal, ...). Cheap to clone;
/// every clone reports the same counts.
#[derive(Clone)]
pub struct Phase(Arc<PhaseInner>);

struct PhaseInner {
    progress: Progress,
    name: &'static str,
    unit: Unit,
    total: AtomicU64,
    done: AtomicU64,
    started: Instant,
    last: Mutex<Instant>,
    bar: Option<ProgressBar>,
    finished: AtomicBool,
}

impl std::fmt::Debug for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Phase")
            .field("name", &self.0.name)
            .field("done", &self.0.done.load(Ordering::Relaxed))
            .finish()
    }
}

impl Phase {
    /// `done` units so far.
    pub fn set(&self, done: u64) {
        self.0.done.store(done, Ordering::Relaxed);
        if let Some(b) = &self.0.bar {
            b.set_position(done);
        }
        self.0.maybe_report();
    }

    /// `n` more units.
    pub fn inc(&self, n: u64) {
        let done = self
            .0
            .done
            .fetch_add(n, Ordering::Relaxed)
            .saturating_add(n);
        if let Some(b) = &self.0.bar {
            b.set_position(done);
        }
        self.0.maybe_report();
    }

    /// The total, once known (or changed).
    pub fn set_total(&self, total: u64) {
        let before = self.0.total.swap(total, Ordering::Relaxed);
        if let Some(b) = &self.0.bar {
            if before == NO_TOTAL {
                b.set_style(bar_style(self.0.unit, true));
            }
            b.set_length(total);
        }
    }

    pub fn done(&self) -> u64 {
        self.0.done.load(Ordering::Relaxed)
    }

    /// The phase is over: the last report (always made), the bar left on screen.
    pub fn finish(&self) {
        if self.0.finished.swap(true, Ordering::Relaxed) {
            return;
        }
        if let Some(b) = &self.0.bar {
            b.finish();
        }
        self.0.report(true);
    }

    /// A reader that counts what it reads into this phase and fails once the command is
    /// interrupted ([`interrupted`]).
    pub fn reader<R: Read>(&self, inner: R) -> CountingReader<R> {
        CountingReader {
            inner,
            phase: self.clone(),
        }
    }
}

impl PhaseInner {
    fn maybe_report(&self) {
        if matches!(self.progress.mode, Mode::Bar | Mode::Off) {
            return;
        }
        let now = Instant::now();
        {
            let mut last = self.last.lock();
            if now.duration_since(*last) < self.progress.every {
                return;
            }
            *last = now;
        }
        self.report(false);
    }

    /// The report as JSON: phase, unit, counts, rate, ETA, elapsed time, finished.
    fn snapshot(&self, finished: bool) -> Value {
        let done = self.done.load(Ordering::Relaxed);
        let total = match self.total.load(Ordering::Relaxed) {
            NO_TOTAL => None,
            t => Some(t.max(done)),
        };
        let elapsed = self.started.elapsed().as_secs_f64();
        let rate = if elapsed > 0.0 {
            done as f64 / elapsed
        } else {
            0.0
        };
        let eta = match total {
            _ if finished => Some(0),
            Some(t) if rate > 0.0 => Some(((t - done) as f64 / rate).ceil() as u64),
            _ => None,
        };
        json!({"progress": {
            "phase": self.name,
            "unit": self.unit.name(),
            "done": done,
            "total": total,
            "rate": (rate * 10.0).round() / 10.0,
            "eta_seconds": eta,
            "elapsed_seconds": (elapsed * 10.0).round() / 10.0,
            "finished": finished,
        }})
    }

    fn report(&self, finished: bool) {
        match self.progress.mode {
            Mode::Off | Mode::Bar => {}
            Mode::Json => self
                .progress
                .sink
                .line(&self.snapshot(finished).to_string()),
            Mode::Lines => self.progress.sink.line(&line(&self.snapshot(finished))),
        }
    }
}

impl Drop for PhaseInner {
    fn drop(&mut self) {
        // A phase that ends in an error keeps its bar on screen where it stopped.
        if let Some(b) = &self.bar {
            if !b.is_finished() {
                b.abandon();
            }
        }
    }
}

/// `n` of `unit` for a person: rows as they are, bytes in KiB/MiB/GiB.
fn amount(n: u64, unit: &str) -> String {
    if unit != "bytes" {
        return n.to_string();
    }
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units.get(i).copied().unwrap_or("B"))
    }
}

fn duration(secs: f64) -> String {
    let s = secs.round() as u64;
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, s) => format!("{h}h{m:02}m{s:02}s"),
    }
}

/// The plain line of a report, e.g. `snapshot: 3000/6007 rows (49.9%), 812.3 rows/s, ETA 4s`.
fn line(v: &Value) -> String {
    let p = &v["progress"];
    let unit = p["unit"].as_str().unwrap_or("");
    let done = p["done"].as_u64().unwrap_or(0);
    let rate = p["rate"].as_f64().unwrap_or(0.0);
    let rate = if unit == "bytes" {
        format!("{}/s", amount(rate as u64, unit))
    } else {
        format!("{rate:.1} {unit}/s")
    };
    let count = match p["total"].as_u64() {
        Some(t) if unit == "bytes" => format!("{}/{}", amount(done, unit), amount(t, unit)),
        Some(t) => format!("{done}/{t} {unit}"),
        None => format!(
            "{} {}",
            amount(done, unit),
            if unit == "bytes" { "" } else { unit }
        )
        .trim_end()
        .to_string(),
    };
    let pct = match p["total"].as_u64() {
        Some(0) => " (100%)".to_string(),
        Some(t) => format!(" ({:.1}%)", done as f64 * 100.0 / t as f64),
        None => String::new(),
    };
    let name = p["phase"].as_str().unwrap_or("");
    if p["finished"] == true {
        let took = duration(p["elapsed_seconds"].as_f64().unwrap_or(0.0));
        format!("{name}: {count} done in {took} ({rate})")
    } else {
        let eta = p["eta_seconds"]
            .as_u64()
            .map_or_else(String::new, |e| format!(", ETA {}", duration(e as f64)));
        format!("{name}: {count}{pct}, {rate}{eta}")
    }
}

/// A reader that counts into a [`Phase`] and fails with [`Interrupted`] once the command is
/// interrupted, so a loop that reads (the encryption, the verification) stops at its next
/// chunk.
pub struct CountingReader<R> {
    inner: R,
    phase: Phase,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(sig) = interrupted() {
            return Err(std::io::Error::other(Interrupted(sig)));
        }
        let n = self.inner.read(buf)?;
        self.phase.inc(n as u64);
        Ok(n)
    }
}

/// The command was interrupted by this signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupted(pub &'static str);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted by {}", self.0)
    }
}

impl std::error::Error for Interrupted {}

static SIGNAL: OnceLock<&'static str> = OnceLock::new();
static WATCHING: OnceLock<()> = OnceLock::new();
static WAKE: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// The signal that interrupted the command, if one did.
pub fn interrupted() -> Option<&'static str> {
    SIGNAL.get().copied()
}

/// `Err(Interrupted)` once the command is interrupted.
pub fn check() -> Result<(), Interrupted> {
    interrupted().map_or(Ok(()), |s| Err(Interrupted(s)))
}

/// Marks the command interrupted by `signal` and wakes whatever waits in [`sleep`].
pub fn interrupt(signal: &'static str) {
    let _ = SIGNAL.set(signal);
    WAKE.notify_waiters();
}

/// Starts watching SIGINT and SIGTERM (once per process; needs a multi-threaded runtime so
/// the watcher runs while a command computes): the first marks the command interrupted, the
/// second ends the process at once.
pub fn watch_signals(progress: &Progress) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    if WATCHING.get().is_some() {
        return Ok(());
    }
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let _ = WATCHING.set(());
    let progress = progress.clone();
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            };
            if interrupted().is_some() {
                progress.note(&format!("{name} again: stopping at once"));
                std::process::exit(130);
            }
            progress.note(&format!(
                "{name}: stopping at the next safe point (send it again to stop at once)"
            ));
            interrupt(name);
        }
    });
    Ok(())
}

/// Waits until the command is interrupted.
pub async fn until_interrupted() -> Interrupted {
    loop {
        let woken = WAKE.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        if let Some(s) = interrupted() {
            return Interrupted(s);
        }
        woken.await;
    }
}

/// Sleeps for `d`, or less if the command is interrupted meanwhile.
pub async fn sleep(d: Duration) -> Result<(), Interrupted> {
    tokio::select! {
        i = until_interrupted() => Err(i),
        () = tokio::time::sleep(d) => check(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn buffered(mode: Mode, every: Duration) -> (Progress, Arc<Mutex<Vec<u8>>>) {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let p = Progress {
            mode,
            every,
            sink: Sink::Buffer(buf.clone()),
        };
        (p, buf)
    }

    fn lines(buf: &Arc<Mutex<Vec<u8>>>) -> Vec<String> {
        String::from_utf8(buf.lock().clone())
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn json_reports_are_one_object_per_line_with_counts_rate_and_eta() {
        let (p, buf) = buffered(Mode::Json, Duration::ZERO);
        let ph = p.phase("copy", Unit::Rows, Some(1000));
        std::thread::sleep(Duration::from_millis(20));
        ph.inc(250);
        ph.set(500);
        ph.finish();
        ph.finish();
        p.note("resuming: \"x\"");
        let got: Vec<Value> = lines(&buf)
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(got.len(), 5, "{got:?}");
        let first = &got[0]["progress"];
        assert_eq!(first["phase"], "copy");
        assert_eq!(first["unit"], "rows");
        assert_eq!(first["done"], 0);
        assert_eq!(first["total"], 1000);
        assert_eq!(first["finished"], false);
        let mid = &got[1]["progress"];
        assert_eq!(mid["done"], 250);
        assert!(mid["rate"].as_f64().unwrap() > 0.0, "{mid}");
        assert!(mid["eta_seconds"].as_u64().is_some(), "{mid}");
        assert_eq!(got[2]["progress"]["done"], 500);
        let last = &got[3]["progress"];
        assert_eq!(last["finished"], true);
        assert_eq!(last["eta_seconds"], 0);
        assert_eq!(got[4], json!({"note": "resuming: \"x\""}));
    }

    #[test]
    fn reports_are_spaced_by_the_interval_but_start_and_end_always_show() {
        let (p, buf) = buffered(Mode::Lines, Duration::from_secs(3600));
        let ph = p.phase("snapshot", Unit::Rows, Some(10));
        for _ in 0..10 {
            ph.inc(1);
        }
        ph.finish();
        let l = lines(&buf);
        assert_eq!(l.len(), 2, "{l:?}");
        assert!(l[0].starts_with("snapshot: 0/10 rows (0.0%)"), "{l:?}");
        assert!(l[1].starts_with("snapshot: 10/10 rows done in"), "{l:?}");
    }

    #[test]
    fn a_phase_without_total_and_bytes_read_plainly() {
        let (p, buf) = buffered(Mode::Lines, Duration::ZERO);
        let ph = p.phase("scan", Unit::Rows, None);
        ph.inc(7);
        let b = p.phase("encrypt", Unit::Bytes, Some(3 << 20));
        let mut r = b.reader(&[0u8; 2048][..]);
        std::io::copy(&mut r, &mut std::io::sink()).unwrap();
        let l = lines(&buf);
        assert!(l[1].starts_with("scan: 7 rows, "), "{l:?}");
        assert!(!l[1].contains("ETA"), "{l:?}");
        assert!(l[2].starts_with("encrypt: 0 B/3.0 MiB (0.0%)"), "{l:?}");
        assert!(l[3].starts_with("encrypt: 2.0 KiB/3.0 MiB"), "{l:?}");
        assert_eq!(b.done(), 2048);
    }

    #[test]
    fn off_reports_nothing() {
        let (mut p, buf) = buffered(Mode::Off, Duration::ZERO);
        p.mode = Mode::Off;
        let ph = p.phase("x", Unit::Rows, Some(1));
        ph.inc(1);
        ph.finish();
        assert!(buf.lock().is_empty());
    }

    #[test]
    fn durations_and_amounts() {
        assert_eq!(duration(0.4), "0s");
        assert_eq!(duration(75.0), "1m15s");
        assert_eq!(duration(3725.0), "1h02m05s");
        assert_eq!(amount(1023, "bytes"), "1023 B");
        assert_eq!(amount(1536, "bytes"), "1.5 KiB");
        assert_eq!(amount(1536, "rows"), "1536");
    }
}

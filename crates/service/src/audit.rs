//! The audit log: one record per request that reads key material, uses a key or changes
//! anything.
//!
//! What must hold:
//! - A request that reads key material, uses a key or changes anything is recorded twice: an
//!   `attempt` **before** it acts (if that record cannot be written, the request fails with
//!   503 and nothing changes), and its outcome (`success` or `failure`) **after** the change
//!   committed or failed. So `success` is only ever written for what happened; an `attempt`
//!   without an outcome means the process stopped in between (docs/audit.md).
//! - Records never hold a secret: no key material, plaintext, ciphertext, token, API key or
//!   nonce. Only ids, names of actions, outcomes and addresses.
//! - Requests refused before they acted (no attempt) are recorded once, as `failure`, after the
//!   fact. Outcome records are best-effort: the change is already decided when they are written.
//!
//! [`FileSink`] appends JSON lines and fsyncs them with group commit: each request writes its
//! own line, and one syncer thread runs one `fdatasync` for every line written meanwhile, then
//! wakes their requests. An `attempt` waits for that `fdatasync`; an outcome only for its
//! `write`, and is on disk with the next `fdatasync` (it is best-effort anyway). It rotates the
//! file by size.
//!
//! [`DbSink`] inserts the records into the store's `audit_log` table, also with group commit:
//! every record queued while a batch commits goes into the next batch (one statement, one
//! commit). Each batch is its own committed write, never part of the change it records. On
//! PostgreSQL a few batches may be in flight at once. On SQLite the store itself groups every
//! write (`keyward_store`'s group commit, `docs/group-commit.md`): the sink hands records over
//! as they come, and the store inserts those of one store batch together, in the transaction
//! (and fsync) of the writes committed with them.
//!
//! [`TeeSink`] writes to two sinks at once and succeeds only if both do.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use keyward_domain::{format_time, Action, KeyId};
use keyward_store::{AuditRow, Store};
use serde::Serialize;

use crate::{Caller, ErrorCode, KeyService, ServiceError, ServiceResult};

/// Where a request came from and how it is tracked; part of every [`Caller`].
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    pub request_id: String,
    pub correlation_id: Option<String>,
    pub source: Option<IpAddr>,
    /// The attempt the service recorded for this request, if any: its outcome is recorded
    /// against the same action and key when the request ends.
    pub audited: Arc<parking_lot::Mutex<Option<Attempt>>>,
}

/// An `attempt` record written for a request, awaiting its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    pub action: Action,
    pub key: Option<KeyId>,
}

/// One audit record.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    pub time: String,
    /// `time` as Unix seconds (the table's `time_unix`; not in the JSON line).
    #[serde(skip)]
    pub time_unix: i64,
    pub request_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    pub principal: String,
    pub instance: String,
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("the audit log could not be written: {0}")]
pub struct AuditError(String);

/// An audit destination.
#[async_trait::async_trait]
pub trait AuditSink: Send + Sync + std::fmt::Debug {
    /// Returns once the record is durable.
    async fn append(&self, rec: AuditRecord) -> Result<(), AuditError>;

    /// Writes an outcome record. Outcomes are best-effort (the result is already decided), so
    /// a sink may return before the record is durable, as long as it makes it durable soon
    /// without being asked again; by default it waits as [`AuditSink::append`] does.
    async fn append_outcome(&self, rec: AuditRecord) -> Result<(), AuditError> {
        self.append(rec).await
    }

    /// Whether the records go to the store's `audit_log` table (so they can be read back
    /// through [`KeyService::read_audit`]).
    fn writes_table(&self) -> bool {
        false
    }
}

/// JSON lines in a file, fsync'd with group commit, rotated at `max_bytes` keeping `keep` old
/// files (`FILE.1` is the newest).
///
/// Each request writes its own line (one `write(2)` under a lock: a few microseconds, no
/// hand-off to another thread) and joins the open batch: the lines written since the last
/// `fdatasync` started. One syncer thread takes the open batch, opens a new one for the lines
/// that come meanwhile, calls `fdatasync` once, and wakes every request of the batch. An
/// `attempt` ([`AuditSink::append`]) returns only after its batch's `fdatasync` succeeded; an
/// outcome ([`AuditSink::append_outcome`]) returns once its line is written: it is in the
/// file for every reader at once and on disk with the next `fdatasync`, which the syncer starts
/// without waiting.
pub struct FileSink {
    shared: Arc<FileShared>,
    syncer: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for FileSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSink").finish_non_exhaustive()
    }
}

struct FileShared {
    state: parking_lot::Mutex<FileState>,
    /// Signalled when the first line of a batch is written, and when the sink is dropped.
    wake: parking_lot::Condvar,
}

struct FileState {
    file: Arc<File>,
    /// Bytes in the current file (for rotation).
    size: u64,
    /// The lines written since the last `fdatasync` started.
    open: Arc<Batch>,
    /// Whether `open` holds a line.
    dirty: bool,
    /// The sink was dropped: the syncer makes the last lines durable and stops.
    stopped: bool,
}

/// The lines one `fdatasync` makes durable, and its result once it ran.
struct Batch {
    done: std::sync::OnceLock<Result<(), String>>,
    notify: tokio::sync::Notify,
}

impl Batch {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            done: std::sync::OnceLock::new(),
            notify: tokio::sync::Notify::new(),
        })
    }

    fn finish(&self, result: Result<(), String>) {
        let _ = self.done.set(result);
        self.notify.notify_waiters();
    }

    async fn wait(&self) -> Result<(), String> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before the check, so a `finish` in between is not missed.
            notified.as_mut().enable();
            if let Some(r) = self.done.get() {
                return r.clone();
            }
            notified.await;
        }
    }
}

impl FileSink {
    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> Result<Self, AuditError> {
        let file = open_append(path).map_err(|e| AuditError(format!("{}: {e}", path.display())))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let shared = Arc::new(FileShared {
            state: parking_lot::Mutex::new(FileState {
                file: Arc::new(file),
                size,
                open: Batch::new(),
                dirty: false,
                stopped: false,
            }),
            wake: parking_lot::Condvar::new(),
        });
        let syncer_shared = shared.clone();
        let path = path.to_path_buf();
        let syncer = std::thread::Builder::new()
            .name("keyward-audit".into())
            .spawn(move || syncer(&syncer_shared, &path, max_bytes, keep))
            .map_err(|e| AuditError(e.to_string()))?;
        Ok(Self {
            shared,
            syncer: Some(syncer),
        })
    }

    /// Stops the syncer once it made every written line durable (and rotated), and waits for
    /// it. Dropping the sink stops it too, without waiting.
    pub fn close(mut self) {
        self.stop();
        if let Some(t) = self.syncer.take() {
            let _ = t.join();
        }
    }

    fn stop(&self) {
        self.shared.state.lock().stopped = true;
        self.shared.wake.notify_one();
    }

    /// Writes `rec` as one line and returns the batch whose `fdatasync` will cover it.
    fn write(&self, rec: &AuditRecord) -> Result<Arc<Batch>, AuditError> {
        let mut line = Vec::with_capacity(320);
        serde_json::to_writer(&mut line, rec).map_err(|e| AuditError(e.to_string()))?;
        line.push(b'\n');
        let mut st = self.shared.state.lock();
        if st.stopped {
            return Err(AuditError("audit writer stopped".into()));
        }
        if let Err(e) = (&*st.file).write_all(&line) {
            // A short write leaves part of a line: cut it off, so the next line starts clean.
            let _ = st.file.set_len(st.size);
            return Err(AuditError(e.to_string()));
        }
        st.size += line.len() as u64;
        if !st.dirty {
            st.dirty = true;
            self.shared.wake.notify_one();
        }
        Ok(st.open.clone())
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        self.stop();
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

fn rotate(path: &Path, keep: usize) -> std::io::Result<File> {
    let name = |i: usize| PathBuf::from(format!("{}.{i}", path.display()));
    for i in (1..keep).rev() {
        let _ = std::fs::rename(name(i), name(i + 1));
    }
    if keep > 0 {
        std::fs::rename(path, name(1))?;
    } else {
        std::fs::remove_file(path)?;
    }
    open_append(path)
}

/// The syncer thread: one `fdatasync` per batch, then the batch's requests are woken.
fn syncer(shared: &FileShared, path: &Path, max_bytes: u64, keep: usize) {
    loop {
        let (file, batch) = {
            let mut st = shared.state.lock();
            while !st.dirty && !st.stopped {
                shared.wake.wait(&mut st);
            }
            if !st.dirty {
                return;
            }
            st.dirty = false;
            (
                st.file.clone(),
                std::mem::replace(&mut st.open, Batch::new()),
            )
        };
        // Every line of `batch` was written before it was taken (under the lock), so this
        // `fdatasync`, which starts after, covers them all.
        let result = file.sync_data().map_err(|e| e.to_string());
        let synced = result.is_ok();
        batch.finish(result);
        if synced && max_bytes > 0 {
            let mut st = shared.state.lock();
            if st.size >= max_bytes {
                // Lines written since the fsync above belong to the old file: durable first.
                let pending = st
                    .dirty
                    .then(|| std::mem::replace(&mut st.open, Batch::new()));
                st.dirty = false;
                let result = st.file.sync_data().map_err(|e| e.to_string());
                let synced = result.is_ok();
                if let Some(b) = pending {
                    b.finish(result);
                }
                if synced {
                    match rotate(path, keep) {
                        Ok(f) => {
                            st.file = Arc::new(f);
                            st.size = 0;
                        }
                        Err(e) => tracing::error!(error = %e, "audit log rotation failed"),
                    }
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl AuditSink for FileSink {
    async fn append(&self, rec: AuditRecord) -> Result<(), AuditError> {
        let batch = self.write(&rec)?;
        batch.wait().await.map_err(AuditError)
    }

    async fn append_outcome(&self, rec: AuditRecord) -> Result<(), AuditError> {
        self.write(&rec).map(drop)
    }
}

impl AuditRecord {
    /// The record as a row of the `audit_log` table.
    pub fn to_row(&self) -> AuditRow {
        AuditRow {
            time_unix: self.time_unix,
            time: self.time.clone(),
            request_id: self.request_id.clone(),
            correlation_id: self.correlation_id.clone(),
            principal: self.principal.clone(),
            instance: self.instance.clone(),
            action: self.action.to_string(),
            key_id: self.key_id.clone(),
            outcome: self.outcome.to_string(),
            reason: self.reason.map(str::to_string),
            source: self.source.clone(),
        }
    }
}

type DbPending = (AuditRow, tokio::sync::oneshot::Sender<Result<(), String>>);

/// Records in the store's `audit_log` table, with group commit (see the module docs).
#[derive(Debug)]
pub struct DbSink {
    tx: tokio::sync::mpsc::UnboundedSender<DbPending>,
}

/// Batches of records committing at once on PostgreSQL (each holds one pooled connection
/// while it commits; the pool has `keyward_store::PG_MAX_CONNECTIONS`).
pub const DB_SINK_PG_BATCHES: usize = 4;

/// Batches of records handed to the store at once on SQLite: as many as its group commit
/// takes in one batch, so that a record never waits for an earlier batch of records to commit
/// before it can join the store's next batch.
pub const DB_SINK_SQLITE_BATCHES: usize = keyward_store::MAX_BATCH_JOBS;

impl DbSink {
    /// Starts the writer task on the current Tokio runtime. Batches in flight:
    /// [`DB_SINK_SQLITE_BATCHES`] on SQLite (the store's group commit merges them),
    /// [`DB_SINK_PG_BATCHES`] on PostgreSQL. Fails outside a Tokio runtime.
    pub fn open(store: Arc<dyn Store>) -> Result<Self, AuditError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| AuditError(format!("the audit table writer needs a runtime: {e}")))?;
        let batches = if store.backend() == "postgres" {
            DB_SINK_PG_BATCHES
        } else {
            DB_SINK_SQLITE_BATCHES
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        runtime.spawn(db_writer(store, rx, batches));
        Ok(Self { tx })
    }
}

async fn db_writer(
    store: Arc<dyn Store>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<DbPending>,
    batches: usize,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(batches.max(1)));
    loop {
        // Wait for a free slot first: records arriving meanwhile queue up for this batch.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < keyward_store::AUDIT_BATCH_ROWS {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let store = store.clone();
        tokio::spawn(async move {
            let (rows, acks): (Vec<AuditRow>, Vec<_>) = batch.into_iter().unzip();
            let result = store.append_audit(&rows).await.map_err(|e| {
                let mut msg = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    msg.push_str(&format!(": {s}"));
                    src = s.source();
                }
                format!("the audit table: {msg}")
            });
            for ack in acks {
                let _ = ack.send(result.clone());
            }
            drop(slot);
        });
    }
}

#[async_trait::async_trait]
impl AuditSink for DbSink {
    async fn append(&self, rec: AuditRecord) -> Result<(), AuditError> {
        let (ack, wait) = tokio::sync::oneshot::channel();
        self.tx
            .send((rec.to_row(), ack))
            .map_err(|_| AuditError("audit table writer stopped".into()))?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(AuditError(e)),
            Err(_) => Err(AuditError("audit table writer stopped".into())),
        }
    }

    fn writes_table(&self) -> bool {
        true
    }
}

/// Two sinks written at once (e.g. the file and the table). A record counts as written only
/// when both wrote it; if either fails the request fails, though the other may hold the
/// record (as with a change that fails after its record was written).
#[derive(Debug)]
pub struct TeeSink {
    pub first: Arc<dyn AuditSink>,
    pub second: Arc<dyn AuditSink>,
}

#[async_trait::async_trait]
impl AuditSink for TeeSink {
    async fn append(&self, rec: AuditRecord) -> Result<(), AuditError> {
        let (a, b) = tokio::join!(self.first.append(rec.clone()), self.second.append(rec));
        a.and(b)
    }

    async fn append_outcome(&self, rec: AuditRecord) -> Result<(), AuditError> {
        let (a, b) = tokio::join!(
            self.first.append_outcome(rec.clone()),
            self.second.append_outcome(rec)
        );
        a.and(b)
    }

    fn writes_table(&self) -> bool {
        self.first.writes_table() || self.second.writes_table()
    }
}

pub(crate) fn record(
    caller: &Caller,
    action: Action,
    key: Option<KeyId>,
    outcome: &'static str,
    reason: Option<&'static str>,
    now: i64,
) -> AuditRecord {
    AuditRecord {
        time: format_time(now),
        time_unix: now,
        request_id: caller.meta.request_id.clone(),
        correlation_id: caller.meta.correlation_id.clone(),
        principal: caller.iam_id.clone(),
        instance: caller.instance.to_string(),
        action: action.audit_name(),
        key_id: key.map(|k| k.to_string()),
        outcome,
        reason,
        source: caller.meta.source.map(|s| s.to_string()),
    }
}

impl KeyService {
    /// Records the `attempt` of a request that is about to act. Call it right before the write
    /// (or, for reads of key material and key use, right before answering). An error means:
    /// answer 503 and change nothing. The outcome is recorded when the request ends
    /// ([`KeyService::audit_outcome`]).
    pub(crate) async fn audit(
        &self,
        caller: &Caller,
        action: Action,
        key: Option<KeyId>,
    ) -> ServiceResult<()> {
        let Some(sink) = &self.audit else {
            return Ok(());
        };
        match sink
            .append(record(caller, action, key, "attempt", None, self.now()))
            .await
        {
            Ok(()) => {
                *caller.meta.audited.lock() = Some(Attempt { action, key });
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "audit record not written: request refused");
                Err(ServiceError {
                    code: ErrorCode::Unavailable,
                    message: "The audit log is unavailable; the request was not performed".into(),
                    target: None,
                    source: Some(Box::new(e)),
                })
            }
        }
    }

    /// Records how an audited request ended: for a request with an attempt, its outcome under
    /// the attempt's action and key; for a request refused before it acted, one `failure`
    /// under `action` and `key`. `reason` is `None` for a success. Best-effort: the outcome is
    /// already decided, so a failed write is logged, not returned.
    pub async fn audit_outcome(
        &self,
        caller: &Caller,
        action: Action,
        key: Option<KeyId>,
        reason: Option<&'static str>,
    ) {
        let Some(sink) = &self.audit else { return };
        let attempt = caller.meta.audited.lock().take();
        let rec = match (attempt, reason) {
            (Some(a), None) => record(caller, a.action, a.key, "success", None, self.now()),
            (Some(a), Some(r)) => record(caller, a.action, a.key, "failure", Some(r), self.now()),
            (None, Some(r)) => record(caller, action, key, "failure", Some(r), self.now()),
            // Nothing was attempted and nothing failed: nothing happened to record.
            (None, None) => return,
        };
        if let Err(e) = sink.append_outcome(rec).await {
            tracing::warn!(error = %e, "audit outcome record not written");
        }
    }

    /// Whether an audit sink is configured.
    pub fn auditing(&self) -> bool {
        self.audit.is_some()
    }

    /// The audit records of the caller's instance in the `audit_log` table matching `q`
    /// (its `instance` is replaced by the caller's): Manager only; 404 `NOT_FOUND_ERR` when
    /// the server does not write the table (`--audit-sink database`, docs/audit.md).
    pub async fn read_audit(
        &self,
        caller: &Caller,
        mut q: keyward_store::AuditQuery,
    ) -> ServiceResult<Vec<keyward_store::AuditEntry>> {
        if !caller
            .roles
            .iter()
            .any(|r| r.covers(keyward_domain::Role::Manager))
        {
            return Err(ServiceError::forbidden());
        }
        if !self.audit.as_ref().is_some_and(|s| s.writes_table()) {
            return Err(ServiceError::new(
                ErrorCode::NotFound,
                "The audit log table is not enabled on this server: start it with --audit-sink database (docs/audit.md)",
            ));
        }
        q.instance = Some(caller.instance.to_string());
        Ok(self.store.audit_records(&q).await?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use keyward_store::{AuditQuery, DatabaseUrl, SqlStore};

    fn rec(n: usize) -> AuditRecord {
        AuditRecord {
            time: format_time(1_700_000_000),
            time_unix: 1_700_000_000,
            request_id: format!("req-{n}"),
            correlation_id: None,
            principal: "iam-ServiceId-t".into(),
            instance: "inst".into(),
            action: "kms.secrets.wrap",
            key_id: Some("k".into()),
            outcome: "success",
            reason: None,
            source: Some("127.0.0.1".into()),
        }
    }

    async fn sqlite(dir: &tempfile::TempDir) -> Arc<SqlStore> {
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("kw.db").display());
        Arc::new(SqlStore::connect(&DatabaseUrl::new(url)).await.unwrap())
    }

    /// Many concurrent appends: each acknowledged record is in the table exactly once, and
    /// the JSON field values and the row agree.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn db_sink_stores_every_acknowledged_record_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite(&dir).await;
        let sink = Arc::new(DbSink::open(store.clone()).unwrap());
        let mut tasks = Vec::new();
        for n in 0..500 {
            let sink = sink.clone();
            tasks.push(tokio::spawn(async move { sink.append(rec(n)).await }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let rows = store.audit_records(&AuditQuery::default()).await.unwrap();
        assert_eq!(rows.len(), 500);
        let mut reqs: Vec<&str> = rows.iter().map(|e| e.row.request_id.as_str()).collect();
        reqs.sort_unstable();
        reqs.dedup();
        assert_eq!(reqs.len(), 500);
        let r = rec(7);
        let json = serde_json::to_value(&r).unwrap();
        assert!(
            json.get("time_unix").is_none(),
            "the file format is unchanged"
        );
        assert_eq!(r.to_row().time, json["time"]);
        assert_eq!(r.to_row().action, json["action"]);
    }

    /// A table that refuses the insert fails the append; both sinks fail if either does.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_insert_fails_the_append_and_the_tee() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite(&dir).await;
        let db: Arc<dyn AuditSink> = Arc::new(DbSink::open(store.clone()).unwrap());
        let file: Arc<dyn AuditSink> =
            Arc::new(FileSink::open(&dir.path().join("audit.jsonl"), 0, 0).unwrap());
        let tee = TeeSink {
            first: file,
            second: db.clone(),
        };
        tee.append(rec(1)).await.unwrap();
        let url = format!("sqlite://{}", dir.path().join("kw.db").display());
        {
            use sqlx::Connection;
            let mut c = sqlx::AnyConnection::connect(&url).await.unwrap();
            sqlx::query("CREATE TRIGGER refuse BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'no'); END")
                .execute(&mut c)
                .await
                .unwrap();
            c.close().await.unwrap();
        }
        let e = db.append(rec(2)).await.unwrap_err();
        assert!(e.to_string().contains("audit table"), "{e}");
        assert!(tee.append(rec(3)).await.is_err());
        let lines = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
        assert_eq!(lines.lines().count(), 2, "the file took its record");
        assert_eq!(
            store
                .audit_records(&AuditQuery::default())
                .await
                .unwrap()
                .len(),
            1
        );
    }

    fn file_lines(paths: &[PathBuf]) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        for p in paths {
            let Ok(text) = std::fs::read_to_string(p) else {
                continue;
            };
            for line in text.lines() {
                out.push(serde_json::from_str(line).expect("every line is one whole record"));
            }
        }
        out
    }

    /// Concurrent attempts and outcomes, with rotation every few records: every record is in
    /// the files exactly once, as one whole line, and an outcome is in the file when its
    /// `append_outcome` returns.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn file_sink_keeps_every_record_once_across_rotations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let sink = Arc::new(FileSink::open(&path, 4096, 1000).unwrap());
        // In waves, so that several batches (each rotating the file) form.
        for wave in 0..8usize {
            let mut tasks = Vec::new();
            for n in wave * 50..(wave + 1) * 50 {
                let sink = sink.clone();
                tasks.push(tokio::spawn(async move {
                    // A record the syncer never acknowledges fails the test, not hangs it.
                    tokio::time::timeout(std::time::Duration::from_secs(10), sink.append(rec(n)))
                        .await
                        .expect("acknowledged")
                        .unwrap();
                    let mut outcome = rec(n);
                    outcome.request_id = format!("out-{n}");
                    sink.append_outcome(outcome).await.unwrap();
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        }
        // An outcome written last is readable at once (the syncer makes it durable later).
        sink.append_outcome(rec(9999)).await.unwrap();
        let last = std::fs::read_to_string(&path).unwrap();
        assert!(last.lines().last().unwrap().contains("req-9999"));
        Arc::into_inner(sink).unwrap().close();
        let mut paths: Vec<PathBuf> = (1..1000)
            .map(|i| PathBuf::from(format!("{}.{i}", path.display())))
            .filter(|p| p.exists())
            .collect();
        assert!(paths.len() >= 4, "the file rotated: {}", paths.len());
        paths.push(path.clone());
        let recs = file_lines(&paths);
        let mut ids: Vec<String> = recs
            .iter()
            .map(|r| r["request_id"].as_str().unwrap().to_string())
            .collect();
        ids.sort_unstable();
        assert_eq!(ids.len(), 801);
        ids.dedup();
        assert_eq!(ids.len(), 801, "no record twice");
    }

    /// A file that refuses writes fails attempts and outcomes alike.
    #[tokio::test]
    async fn file_sink_fails_when_the_file_refuses_writes() {
        let full = Path::new("/dev/full");
        if !full.exists() {
            if std::env::var("KEYWARD_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("/dev/full is missing");
            }
            eprintln!("skipped: no /dev/full");
            return;
        }
        let sink = FileSink::open(full, 0, 0).unwrap();
        assert!(sink.append(rec(1)).await.is_err());
        assert!(sink.append_outcome(rec(2)).await.is_err());
    }

    /// Attempts wait for an `fdatasync`: the syncer is started by the first line of a batch,
    /// so a lone record is acknowledged without any other traffic, and records written while
    /// one batch syncs go into the next.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn file_sink_acknowledges_a_lone_record_and_later_batches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let sink = FileSink::open(&path, 0, 0).unwrap();
        for n in 0..5 {
            tokio::time::timeout(std::time::Duration::from_secs(10), sink.append(rec(n)))
                .await
                .expect("a lone attempt is acknowledged")
                .unwrap();
        }
        sink.append_outcome(rec(5)).await.unwrap();
        sink.close();
        assert_eq!(file_lines(&[path]).len(), 6);
    }

    #[test]
    fn db_sink_needs_a_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = rt.block_on(sqlite(&dir));
        assert!(DbSink::open(store).is_err());
    }
}

//! The audit log: one record per request that reads key material, uses a key or changes
//! anything.
//!
//! What must hold:
//! - A successful change is recorded **before** it is committed. If the record cannot be
//!   written, the request fails with 503 and nothing changes.
//! - Records never hold a secret: no key material, plaintext, ciphertext, token, API key or
//!   nonce. Only ids, names of actions, outcomes and addresses.
//! - Failed requests are recorded after the fact, best-effort (their failure changed nothing).
//!
//! [`FileSink`] appends JSON lines and fsyncs them. It uses group commit: a writer thread takes
//! every record queued meanwhile, writes them, fsyncs once, then acknowledges them all. It
//! rotates the file by size.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use keyward_domain::{format_time, Action, KeyId};
use serde::Serialize;

use crate::{Caller, ErrorCode, KeyService, ServiceError, ServiceResult};

/// Where a request came from and how it is tracked; part of every [`Caller`].
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    pub request_id: String,
    pub correlation_id: Option<String>,
    pub source: Option<IpAddr>,
    /// Set once the service has recorded this request (so the failure path does not again).
    pub audited: Arc<AtomicBool>,
}

/// One audit record.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    pub time: String,
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
}

type Pending = (
    AuditRecord,
    tokio::sync::oneshot::Sender<Result<(), String>>,
);

/// JSON lines in a file, fsync'd with group commit, rotated at `max_bytes` keeping `keep` old
/// files (`FILE.1` is the newest).
#[derive(Debug)]
pub struct FileSink {
    tx: std::sync::Mutex<mpsc::Sender<Pending>>,
}

impl FileSink {
    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> Result<Self, AuditError> {
        let file = open_append(path).map_err(|e| AuditError(format!("{}: {e}", path.display())))?;
        let (tx, rx) = mpsc::channel::<Pending>();
        let path = path.to_path_buf();
        std::thread::Builder::new()
            .name("keyward-audit".into())
            .spawn(move || writer(path, file, rx, max_bytes, keep))
            .map_err(|e| AuditError(e.to_string()))?;
        Ok(Self {
            tx: std::sync::Mutex::new(tx),
        })
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

fn writer(path: PathBuf, mut file: File, rx: mpsc::Receiver<Pending>, max_bytes: u64, keep: usize) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let mut buf = Vec::with_capacity(256 * batch.len());
        for (rec, _) in &batch {
            if serde_json::to_writer(&mut buf, rec).is_ok() {
                buf.push(b'\n');
            }
        }
        let result = file
            .write_all(&buf)
            .and_then(|()| file.sync_data())
            .map_err(|e| e.to_string());
        let failed = result.is_err();
        for (_, ack) in batch {
            let _ = ack.send(result.clone());
        }
        if !failed
            && max_bytes > 0
            && file
                .metadata()
                .map(|m| m.len() >= max_bytes)
                .unwrap_or(false)
        {
            match rotate(&path, keep) {
                Ok(f) => file = f,
                Err(e) => tracing::error!(error = %e, "audit log rotation failed"),
            }
        }
    }
}

#[async_trait::async_trait]
impl AuditSink for FileSink {
    async fn append(&self, rec: AuditRecord) -> Result<(), AuditError> {
        let (ack, wait) = tokio::sync::oneshot::channel();
        self.tx
            .lock()
            .map_err(|_| AuditError("audit writer lock poisoned".into()))?
            .send((rec, ack))
            .map_err(|_| AuditError("audit writer stopped".into()))?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(AuditError(e)),
            Err(_) => Err(AuditError("audit writer stopped".into())),
        }
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
    /// Records a request that is about to succeed. Call it right before the write (or, for
    /// reads of key material and key use, right before answering). An error means: answer
    /// 503 and change nothing.
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
            .append(record(caller, action, key, "success", None, self.now()))
            .await
        {
            Ok(()) => {
                caller.meta.audited.store(true, Ordering::SeqCst);
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

    /// Records a failed request (best-effort: the failure changed nothing). Skipped when the
    /// request was already recorded.
    pub async fn audit_failure(
        &self,
        caller: &Caller,
        action: Action,
        key: Option<KeyId>,
        reason: &'static str,
    ) {
        let Some(sink) = &self.audit else { return };
        if caller.meta.audited.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Err(e) = sink
            .append(record(
                caller,
                action,
                key,
                "failure",
                Some(reason),
                self.now(),
            ))
            .await
        {
            tracing::warn!(error = %e, "audit record of a failed request not written");
        }
    }

    /// Whether an audit sink is configured.
    pub fn auditing(&self) -> bool {
        self.audit.is_some()
    }
}

//! Error classification and the retry policy of write transactions.

use std::time::Duration;

use crate::{ConflictKind, StoreError, StoreResult};

pub(crate) fn classify(e: sqlx::Error) -> StoreError {
    use super::failover::{note_error, ErrorClass};
    match &e {
        sqlx::Error::RowNotFound => StoreError::NotFound,
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => {
            // The connection broke (reset, EOF, refused, or a message stream cut off so the
            // driver lost its place in the protocol), or no connection could be had in time:
            // the database is not serving us.
            note_error(ErrorClass::Connection);
            StoreError::Unavailable(e)
        }
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            if db.is_unique_violation() {
                StoreError::Conflict(ConflictKind::AlreadyExists)
            } else if code == "25006" {
                // read_only_sql_transaction: a write reached a server that cannot take it (a
                // standby behind a stale route, a primary still finishing its promotion, a
                // database set read-only). Another server, or this one a moment later, can.
                note_error(ErrorClass::ReadOnly);
                StoreError::Unavailable(e)
            } else if code.starts_with("57P")
                || code.starts_with("08")
                || code.starts_with("53")
                || code == "40003"
            {
                // Shutdown/admin termination (57P*), connection failures (08*), the server out
                // of connections or resources (53*), and CockroachDB's "statement completion
                // unknown" (40003, an ambiguous commit): the database is not serving us.
                note_error(ErrorClass::Connection);
                StoreError::Unavailable(e)
            } else {
                note_error(ErrorClass::Other);
                StoreError::Backend(e)
            }
        }
        _ => {
            note_error(ErrorClass::Other);
            StoreError::Backend(e)
        }
    }
}

/// Whether a connection that returned `e` must be closed rather than go back to the pool:
/// after a connection-class error it may be broken, and after 25006 it leads to a server that
/// cannot write.
pub(crate) fn poisons_connection(e: &StoreError) -> bool {
    matches!(e, StoreError::Unavailable(_))
}

/// Attempts of one write transaction that keeps hitting serialization failures.
pub const WRITE_ATTEMPTS: u32 = 8;

static SERIALIZATION_RETRIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many write transactions were retried after a serialization failure since the process
/// started (for tests and diagnostics).
pub fn serialization_retries() -> u64 {
    SERIALIZATION_RETRIES.load(std::sync::atomic::Ordering::Relaxed)
}

/// True for the errors after which the whole transaction may simply run again: SQLSTATE 40001
/// (serialization failure; what CockroachDB and YugabyteDB report for any transaction conflict,
/// and PostgreSQL under `REPEATABLE READ`/`SERIALIZABLE`) and 40P01 (deadlock detected). Both
/// mean the database rolled the transaction back, so nothing of it was applied.
pub fn is_serialization_failure(e: &StoreError) -> bool {
    match e {
        StoreError::Backend(sqlx::Error::Database(db)) => {
            matches!(db.code().as_deref(), Some("40001") | Some("40P01"))
        }
        _ => false,
    }
}

/// Exponential backoff with jitter (each delay is uniform in [d/2, d]), doubling up to `cap`.
pub(crate) struct Backoff {
    next: Duration,
    cap: Duration,
}

impl Backoff {
    pub(crate) fn new(first: Duration, cap: Duration) -> Self {
        Self { next: first, cap }
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.cap);
        // Jitter from the OS RNG (via a v4 UUID): nodes that collided should not retry in step.
        let r = (uuid::Uuid::new_v4().as_u128() & 0xffff) as u32;
        let half = d / 2;
        half + half.mul_f64(f64::from(r) / 65535.0)
    }
}

/// Runs `attempt` (one whole write transaction) and runs it again, with bounded exponential
/// backoff, while it fails with a serialization failure ([`is_serialization_failure`]). Every
/// other outcome, including `Conflict` and `Unavailable`, is returned as is: a lost connection
/// may have lost a commit that succeeded, so it is never retried blindly.
///
/// At most [`WRITE_ATTEMPTS`] attempts; the sleeps between them add up to well under a second.
pub async fn retry_write<T, F, Fut>(what: &'static str, mut attempt: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = StoreResult<T>>,
{
    let mut backoff = Backoff::new(Duration::from_millis(5), Duration::from_millis(250));
    let mut n = 1;
    loop {
        match attempt().await {
            Err(e) if n < WRITE_ATTEMPTS && is_serialization_failure(&e) => {
                SERIALIZATION_RETRIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::debug!(
                    what,
                    attempt = n,
                    "serialization failure; retrying the transaction"
                );
                n += 1;
                tokio::time::sleep(backoff.next_delay()).await;
            }
            other => return other,
        }
    }
}

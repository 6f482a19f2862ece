//! Group commit of SQLite's writes (`docs/group-commit.md`).
//!
//! Every write of [`SqlStore`] on SQLite is a job queued here. One batch at a time runs on the
//! single writer connection inside ONE transaction: `BEGIN`, then per job `SAVEPOINT`, its
//! statements, `RELEASE` (or `ROLLBACK TO` + `RELEASE` when it failed, so a failing job undoes
//! only itself), then one `COMMIT`: one fsync for the whole batch. Only after the `COMMIT`
//! returns is each job answered with its own result; if the `COMMIT` fails, every job of the
//! batch gets `Unavailable` and none is acknowledged.
//!
//! - No timer: a lone write starts a batch at once; the writes arriving while a batch commits
//!   form the next one. A batch holds at most [`MAX_BATCH_JOBS`] jobs and [`MAX_BATCH_COST`]
//!   units of cost (an audit append costs one unit per row), so its latency stays bounded.
//! - A batch of one job runs without a savepoint (its failure rolls the transaction back).
//! - A batch runs in its own task: a caller that stops waiting (a dropped request) neither
//!   aborts the batch nor its neighbours; its own job still runs and commits or fails.
//! - Jobs own their inputs (`'static`) and must use only the connection they are given: the
//!   writer pool has one connection, held by the batch.
//! - PostgreSQL does not use this (see `SqlStore::write_tx`).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use sqlx::{AnyConnection, AnyPool, Connection, Executor};

use crate::{AuditRow, StoreError, StoreResult};

use super::audit::insert_rows;

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Most jobs in one batch.
pub const MAX_BATCH_JOBS: usize = 256;
/// Most cost units in one batch (a write costs 1, an audit append one per row); a single job
/// above it still runs, alone.
pub const MAX_BATCH_COST: usize = 1024;

/// Sends a job's answer once its batch is decided: `None` when the batch committed (the job's
/// own result is sent), `Some(why)` when it did not (`Unavailable` is sent).
type Deliver = Box<dyn FnOnce(Option<&str>) + Send>;
type RunFn =
    Box<dyn for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, (Outcome, Deliver)> + Send>;

/// How a job ended, before its batch is decided.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    /// An error that leaves the transaction intact (a conflict, a lost condition, a failed
    /// row check): SQLite undid the failing statement itself.
    Failed,
    /// A database error: the transaction may be gone (SQLite rolls it back on some errors).
    Broken,
}

impl Outcome {
    fn of<T>(r: &StoreResult<T>) -> Outcome {
        match r {
            Ok(_) => Outcome::Ok,
            Err(StoreError::Backend(_) | StoreError::Unavailable(_)) => Outcome::Broken,
            Err(_) => Outcome::Failed,
        }
    }
}

struct Job {
    cost: usize,
    /// One statement (or none): it needs no savepoint, since SQLite undoes a failing
    /// statement by itself.
    atomic: bool,
    kind: Kind,
}

enum Kind {
    /// Statements run by a closure.
    Run(RunFn),
    /// Audit rows: every audit job of a batch goes into one multi-row `INSERT` (in one
    /// savepoint) and shares its result.
    Audit(Vec<AuditRow>, tokio::sync::oneshot::Sender<StoreResult<()>>),
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    /// A drain task is running (it takes batches until the queue is empty).
    running: bool,
}

/// The group-commit queue of one SQLite store.
pub(crate) struct Batcher {
    pool: AnyPool,
    state: parking_lot::Mutex<State>,
    /// Batches whose `COMMIT` succeeded, and the jobs they held (for tests and diagnostics).
    committed: std::sync::atomic::AtomicU64,
    committed_jobs: std::sync::atomic::AtomicU64,
}

fn make_run<F>(f: F) -> RunFn
where
    F: for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, (Outcome, Deliver)> + Send + 'static,
{
    Box::new(f)
}

/// The error of a job whose batch did not commit.
fn batch_failed(why: &str) -> StoreError {
    StoreError::Unavailable(sqlx::Error::Io(std::io::Error::other(format!(
        "the write batch did not commit: {why}"
    ))))
}

impl Batcher {
    pub(crate) fn new(pool: AnyPool) -> Arc<Self> {
        Arc::new(Self {
            pool,
            state: Default::default(),
            committed: Default::default(),
            committed_jobs: Default::default(),
        })
    }

    /// (batches committed, jobs they held) since the store connected.
    pub(crate) fn committed(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.committed.load(Relaxed),
            self.committed_jobs.load(Relaxed),
        )
    }

    /// Jobs waiting for a batch, and whether a batch is running.
    #[cfg(test)]
    pub(crate) fn queued(&self) -> (usize, bool) {
        let s = self.state.lock();
        (s.queue.len(), s.running)
    }

    /// Queues `f` as one job and waits until its batch is decided. `f` runs inside a
    /// savepoint of the batch's transaction (unless it is `atomic`: at most one statement);
    /// its result is returned only once that transaction committed.
    pub(crate) async fn submit<T, F>(
        self: &Arc<Self>,
        cost: usize,
        atomic: bool,
        f: F,
    ) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, StoreResult<T>> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel::<StoreResult<T>>();
        let run = make_run(move |conn| {
            Box::pin(async move {
                let result = f(conn).await;
                let ok = Outcome::of(&result);
                let deliver: Deliver = Box::new(move |failed| {
                    let _ = tx.send(match failed {
                        None => result,
                        Some(why) => Err(batch_failed(why)),
                    });
                });
                (ok, deliver)
            })
        });
        self.push(Job {
            cost,
            atomic,
            kind: Kind::Run(run),
        });
        // A dropped sender means the batch was abandoned (its task panicked): nothing of it
        // was committed.
        rx.await
            .unwrap_or_else(|_| Err(batch_failed("the batch was abandoned")))
    }

    /// Queues audit rows; they are inserted together with the other audit rows of their batch
    /// and the call returns once that batch committed.
    pub(crate) async fn submit_audit(self: &Arc<Self>, rows: Vec<AuditRow>) -> StoreResult<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.push(Job {
            cost: rows.len(),
            atomic: false,
            kind: Kind::Audit(rows, tx),
        });
        rx.await
            .unwrap_or_else(|_| Err(batch_failed("the batch was abandoned")))
    }

    fn push(self: &Arc<Self>, job: Job) {
        let start = {
            let mut s = self.state.lock();
            s.queue.push_back(job);
            !std::mem::replace(&mut s.running, true)
        };
        if start {
            tokio::spawn(self.clone().drain());
        }
    }

    /// The next batch, or `None` (and no longer running) when the queue is empty.
    fn take_batch(&self) -> Option<Vec<Job>> {
        let mut s = self.state.lock();
        if s.queue.is_empty() {
            s.running = false;
            return None;
        }
        let mut batch = Vec::with_capacity(s.queue.len().min(MAX_BATCH_JOBS));
        let mut cost = 0;
        while let Some(job) = s.queue.front() {
            if !batch.is_empty()
                && (batch.len() == MAX_BATCH_JOBS || cost + job.cost > MAX_BATCH_COST)
            {
                break;
            }
            cost += job.cost;
            batch.extend(s.queue.pop_front());
        }
        Some(batch)
    }

    async fn drain(self: Arc<Self>) {
        // If this task is cancelled (its runtime shutting down), the next write starts a new
        // one instead of queueing behind a drain that will never run.
        // (`take_batch` itself clears `running` when it finds the queue empty.)
        struct Running<'a>(&'a Batcher, bool);
        impl Drop for Running<'_> {
            fn drop(&mut self) {
                if !self.1 {
                    self.0.state.lock().running = false;
                }
            }
        }
        let mut running = Running(&self, false);
        while let Some(batch) = self.take_batch() {
            // Its own task, so that a panic in a job abandons only this batch (its answers are
            // dropped, its transaction rolled back) and the queue keeps draining.
            let this = self.clone();
            if let Err(e) = tokio::spawn(async move { this.run_batch(batch).await }).await {
                tracing::error!(error = %e, "a write batch was abandoned");
            }
        }
        running.1 = true;
    }

    async fn run_batch(&self, jobs: Vec<Job>) {
        let jobs = merge_audits(jobs);
        let mut conn = match self.pool.acquire().await {
            Ok(c) => c,
            Err(e) => return fail_all(Vec::new(), jobs, &e),
        };
        let mut tx = match conn.begin().await {
            Ok(tx) => tx,
            Err(e) => return fail_all(Vec::new(), jobs, &e),
        };
        if jobs.len() == 1 {
            let Some(job) = jobs.into_iter().next() else {
                return;
            };
            let (ok, deliver) = (job.run)(&mut tx).await;
            if ok != Outcome::Ok {
                // Its own error is the answer; nothing of it stays.
                let rolled_back = tx.rollback().await.is_ok();
                if !rolled_back {
                    conn.close_on_drop();
                }
                return deliver(None);
            }
            return match tx.commit().await {
                Ok(()) => {
                    self.count_commit(1);
                    deliver(None)
                }
                Err(e) => {
                    conn.close_on_drop();
                    deliver(Some(&e.to_string()))
                }
            };
        }
        let mut done: Vec<Deliver> = Vec::with_capacity(jobs.len());
        // The savepoint of the last job that ran in one stays open until the next job that
        // needs one: `RELEASE` and the next `SAVEPOINT` then go in one round trip. The
        // `COMMIT` releases what is left.
        let mut open = false;
        let mut jobs = jobs.into_iter();
        while let Some(job) = jobs.next() {
            if !job.atomic {
                let sql = if open {
                    "RELEASE kw_job; SAVEPOINT kw_job"
                } else {
                    "SAVEPOINT kw_job"
                };
                if let Err(e) = (&mut *tx).execute(sql).await {
                    drop(tx);
                    conn.close_on_drop();
                    return fail_all(done, jobs.collect(), &e);
                }
                open = true;
            }
            let (outcome, deliver) = (job.run)(&mut tx).await;
            let end = match (outcome, job.atomic) {
                (Outcome::Ok, _) | (Outcome::Failed, true) => Ok(()),
                (_, false) => {
                    open = false;
                    (&mut *tx)
                        .execute("ROLLBACK TO kw_job; RELEASE kw_job")
                        .await
                        .map(drop)
                }
                // A lone statement that failed in the database: whether the transaction
                // survived is unknown, so the batch is given up.
                (Outcome::Broken, true) => Err(sqlx::Error::Io(std::io::Error::other(
                    "a statement of the batch failed in the database",
                ))),
            };
            if let Err(e) = end {
                // The transaction is not what the jobs left it (SQLite rolls a whole transaction
                // back on some errors): nothing of the batch may be acknowledged.
                drop(tx);
                conn.close_on_drop();
                done.push(deliver);
                return fail_all(done, jobs.collect(), &e);
            }
            done.push(deliver);
        }
        match tx.commit().await {
            Ok(()) => {
                self.count_commit(done.len());
                for d in done {
                    d(None);
                }
            }
            Err(e) => {
                // A fresh connection for the next batch, whatever state this one was left in.
                conn.close_on_drop();
                let why = e.to_string();
                tracing::warn!(jobs = done.len(), error = %why, "a write batch failed to commit");
                for d in done {
                    d(Some(&why));
                }
            }
        }
    }

    fn count_commit(&self, jobs: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        self.committed.fetch_add(1, Relaxed);
        self.committed_jobs.fetch_add(jobs as u64, Relaxed);
    }
}

/// Answers every job of a batch that will not commit: those that ran (`done`) and those that
/// did not (`rest`, dropped unrun: their answer is the same error).
fn fail_all(done: Vec<Deliver>, rest: Vec<Batched>, e: &sqlx::Error) {
    let why = e.to_string();
    tracing::warn!(jobs = done.len() + rest.len(), error = %why, "a write batch failed");
    for d in done {
        d(Some(&why));
    }
    // An unrun job's sender is dropped with it: its caller gets `batch_failed` too.
    drop(rest);
}

/// The jobs of a batch as closures: the audit jobs merged into one (first), then the others in
/// their order.
fn merge_audits(jobs: Vec<Job>) -> Vec<Batched> {
    let mut runs = Vec::with_capacity(jobs.len());
    let mut rows: Vec<AuditRow> = Vec::new();
    let mut acks = Vec::new();
    for job in jobs {
        match job.kind {
            Kind::Run(run) => runs.push(Batched {
                atomic: job.atomic,
                run,
            }),
            Kind::Audit(mut r, ack) => {
                rows.append(&mut r);
                acks.push(ack);
            }
        }
    }
    if acks.is_empty() {
        return runs;
    }
    let n_rows = rows.len();
    let merged = make_run(move |conn| {
        Box::pin(async move {
            let result = insert_rows(conn, &rows).await;
            let ok = Outcome::of(&result);
            let result = result.map_err(|e| describe(&e));
            let deliver: Deliver = Box::new(move |failed| {
                for ack in acks {
                    let _ = ack.send(match (failed, &result) {
                        (Some(why), _) => Err(batch_failed(why)),
                        (None, Ok(())) => Ok(()),
                        (None, Err(why)) => Err(batch_failed(why)),
                    });
                }
            });
            (ok, deliver)
        })
    });
    runs.insert(
        0,
        Batched {
            // One `INSERT` up to `AUDIT_BATCH_ROWS` rows.
            atomic: n_rows <= super::AUDIT_BATCH_ROWS,
            run: merged,
        },
    );
    runs
}

/// A job as a batch runs it.
struct Batched {
    atomic: bool,
    run: RunFn,
}

/// An error with its sources (for the answer of several jobs at once).
fn describe(e: &StoreError) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    msg
}

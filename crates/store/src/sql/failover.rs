//! PostgreSQL failover: which server of a (possibly multi-host) URL is the writable primary,
//! keeping standbys out of the pool, the synchronous-standby gate of `--require-sync-replica`,
//! and the process-wide counters behind the `keyward_database_*` metrics.
//!
//! - Every new pooled connection is checked before use (`after_connect`): a server in recovery
//!   (a standby), or a read-only session when the URL asks for `target_session_attrs=read-write`,
//!   is refused, so the pool never hands out a connection that cannot write.
//! - A URL may name several hosts (`postgres://u@h1:5432,h2:5432/db`, as libpq accepts it).
//!   sqlx takes one host, so the store points the pool at one of them and, whenever the
//!   database stops answering (a connection-class error, a refused connection, a standby),
//!   a watcher tries the hosts again in order and moves the pool to the first writable one.
//! - The first database failure of an outage starts a clock that the next committed write
//!   stops: the seconds in between are `keyward_database_unwritable_seconds_total`.
//! - A change of the server's identity (its address and port as it sees them, or the host of
//!   the URL the pool uses) seen on a new connection counts as one failover.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use sqlx::any::AnyConnectOptions;
use sqlx::{AnyConnection, AnyPool, Connection, Row};

use crate::{StoreError, StoreResult};

/// How a database error is counted (`keyward_database_errors_total{class}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The connection or the server went away: I/O errors, 08*, 57P*, 53*, pool timeouts.
    Connection,
    /// The server refused a write because it is (or the session is) read-only: 25006, or a
    /// standby reached where a primary was expected.
    ReadOnly,
    /// Any other database error (a constraint, a bad statement, ...).
    Other,
}

static ERRORS_CONNECTION: AtomicU64 = AtomicU64::new(0);
static ERRORS_READ_ONLY: AtomicU64 = AtomicU64::new(0);
static ERRORS_OTHER: AtomicU64 = AtomicU64::new(0);
static FAILOVERS: AtomicU64 = AtomicU64::new(0);
static UNWRITABLE_MICROS: AtomicU64 = AtomicU64::new(0);
/// Set from the first failure of an outage until the next committed write.
static DOWN: AtomicBool = AtomicBool::new(false);
static DOWN_SINCE: parking_lot::Mutex<Option<Instant>> = parking_lot::Mutex::new(None);

/// The process-wide database health counters, as `/metrics` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DatabaseHealth {
    pub errors_connection: u64,
    pub errors_read_only: u64,
    pub errors_other: u64,
    /// Changes of the server a new connection reached (see the module documentation).
    pub failovers: u64,
    /// Seconds between a first database failure and the next committed write, summed (an
    /// outage still going on counts up to now).
    pub unwritable_seconds: f64,
}

/// The counters now.
pub fn database_health() -> DatabaseHealth {
    let ongoing = DOWN_SINCE
        .lock()
        .map_or(Duration::ZERO, |since| since.elapsed());
    DatabaseHealth {
        errors_connection: ERRORS_CONNECTION.load(Relaxed),
        errors_read_only: ERRORS_READ_ONLY.load(Relaxed),
        errors_other: ERRORS_OTHER.load(Relaxed),
        failovers: FAILOVERS.load(Relaxed),
        unwritable_seconds: Duration::from_micros(UNWRITABLE_MICROS.load(Relaxed))
            .saturating_add(ongoing)
            .as_secs_f64(),
    }
}

/// Counts one database error; a connection or read-only error starts the unwritable clock.
pub(crate) fn note_error(class: ErrorClass) {
    match class {
        ErrorClass::Connection => ERRORS_CONNECTION.fetch_add(1, Relaxed),
        ErrorClass::ReadOnly => ERRORS_READ_ONLY.fetch_add(1, Relaxed),
        ErrorClass::Other => ERRORS_OTHER.fetch_add(1, Relaxed),
    };
    if class != ErrorClass::Other && !DOWN.swap(true, Relaxed) {
        let mut since = DOWN_SINCE.lock();
        if since.is_none() {
            *since = Some(Instant::now());
        }
    }
}

/// A write committed: stops the unwritable clock if it runs.
pub(crate) fn note_write_ok() {
    if DOWN.load(Relaxed) {
        let since = DOWN_SINCE.lock().take();
        DOWN.store(false, Relaxed);
        if let Some(since) = since {
            let us = u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX);
            UNWRITABLE_MICROS.fetch_add(us, Relaxed);
            tracing::warn!(
                seconds = since.elapsed().as_secs_f64(),
                "the database accepts writes again"
            );
        }
    }
}

/// The SQLSTATE (when the server sent one) and the message of the database error behind `e`
/// (a [`StoreError`] anywhere in its source chain), for the log line of a 5xx answer. The
/// message is the server's or the driver's own text: it names no password (sqlx never puts
/// the URL in an error) and no row values (PostgreSQL puts those in DETAIL, not read here).
pub fn database_error_detail(
    e: &(dyn std::error::Error + 'static),
) -> Option<(Option<String>, String)> {
    let store = find_store_error(e)?;
    let sqlx_err = match store {
        StoreError::Unavailable(s) | StoreError::Backend(s) => s,
        _ => return None,
    };
    Some(match sqlx_err {
        sqlx::Error::Database(db) => (db.code().map(|c| c.into_owned()), db.message().to_string()),
        other => (None, other.to_string()),
    })
}

/// Whether `e` (or an error in its source chain) is a [`StoreError::Unavailable`].
pub fn is_store_unavailable(e: &(dyn std::error::Error + 'static)) -> bool {
    matches!(find_store_error(e), Some(StoreError::Unavailable(_)))
}

fn find_store_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a StoreError> {
    let mut cur: Option<&'a (dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(s) = err.downcast_ref::<StoreError>() {
            return Some(s);
        }
        cur = err.source();
    }
    None
}

/// An error made here (a refused standby, no synchronous standby): `Unavailable`, 503.
pub(crate) fn unavailable(why: impl Into<String>) -> StoreError {
    StoreError::Unavailable(sqlx::Error::Io(std::io::Error::other(why.into())))
}

/// A PostgreSQL URL split around its host list: `postgres://USERINFO@H1:P1,H2:P2/DB?QUERY`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct PgHosts {
    /// `postgres://` plus the user info and `@` (or nothing).
    prefix: String,
    /// `host:port` (or `host`, or `[v6]:port`) as written.
    pub(crate) hosts: Vec<String>,
    /// From the `/` of the database name on, without `target_session_attrs`.
    rest: String,
    /// `target_session_attrs=read-write` (or `primary`): only a writable session will do.
    pub(crate) read_write: bool,
}

impl std::fmt::Debug for PgHosts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgHosts")
            .field("hosts", &self.hosts)
            .field("read_write", &self.read_write)
            .finish_non_exhaustive()
    }
}

impl PgHosts {
    /// Splits a `postgres://` URL; an error (said in words, no password) for a URL whose host
    /// list or `target_session_attrs` Keyward cannot use.
    pub(crate) fn parse(url: &str) -> Result<PgHosts, String> {
        let (scheme, after) = url
            .split_once("://")
            .ok_or_else(|| "a PostgreSQL URL starts with postgres://".to_string())?;
        let cut = after.find(['/', '?']).unwrap_or(after.len());
        let (authority, rest) = after.split_at(cut);
        let (userinfo, hostlist) = match authority.rsplit_once('@') {
            Some((u, h)) => (format!("{u}@"), h),
            None => (String::new(), authority),
        };
        let hosts: Vec<String> = hostlist.split(',').map(|h| h.trim().to_string()).collect();
        // One empty host is libpq's default (a Unix socket, or `?host=` in the query).
        if hosts.len() > 1 && hosts.iter().any(String::is_empty) {
            return Err("the host list of the database URL has an empty entry".into());
        }
        // A port, where one is written, is a number: a host left unreachable by a typo would
        // only show up at the failover that needs it.
        for h in &hosts {
            let port = match h.rsplit_once(']') {
                Some((_, after)) => after.strip_prefix(':'),
                None => h.rsplit_once(':').map(|(_, p)| p),
            };
            if port.is_some_and(|p| !p.is_empty() && p.parse::<u16>().is_err()) {
                return Err(format!(
                    "the database URL's host `{h}` has a port that is not a number from 0 to 65535"
                ));
            }
        }
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut read_write = false;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("target_session_attrs", v)) => match v {
                    "read-write" | "primary" => read_write = true,
                    "any" => read_write = false,
                    other => {
                        return Err(format!(
                            "target_session_attrs={other} is not supported: Keyward writes, so \
                             it takes read-write, primary or any"
                        ))
                    }
                },
                _ => kept.push(pair),
            }
        }
        let rest = if kept.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{}", kept.join("&"))
        };
        Ok(PgHosts {
            prefix: format!("{scheme}://{userinfo}"),
            hosts,
            rest,
            read_write,
        })
    }

    /// The single-host URL of host `i`, for sqlx.
    pub(crate) fn url_for(&self, i: usize) -> String {
        let host = self.hosts.get(i).map_or("", String::as_str);
        format!("{}{host}{}", self.prefix, self.rest)
    }
}

/// What a new connection found: whether it can write, and who the server is.
struct Probe {
    in_recovery: bool,
    read_only: bool,
    identity: String,
}

impl Probe {
    /// A primary, and (when `read_write` is asked for) a session that may write.
    fn usable(&self, read_write: bool) -> bool {
        let refused = self.in_recovery || (read_write && self.read_only);
        !refused
    }
}

async fn probe(conn: &mut AnyConnection) -> Result<Probe, sqlx::Error> {
    let row = match sqlx::query(
        "SELECT pg_is_in_recovery(), current_setting('transaction_read_only'), \
         coalesce(host(inet_server_addr()), 'local'), coalesce(inet_server_port(), 0)",
    )
    .fetch_one(&mut *conn)
    .await
    {
        Ok(row) => row,
        // Class 42 (an undefined function, a syntax error): a PostgreSQL-compatible server
        // without these functions. Nothing is known about it, so nothing is refused.
        Err(sqlx::Error::Database(db)) if db.code().is_some_and(|c| c.starts_with("42")) => {
            tracing::debug!(error = %db, "the server cannot say whether it is a standby");
            return Ok(Probe {
                in_recovery: false,
                read_only: false,
                identity: "unknown".into(),
            });
        }
        Err(e) => return Err(e),
    };
    let in_recovery: bool = row.try_get(0)?;
    let read_only: String = row.try_get(1)?;
    let addr: String = row.try_get(2)?;
    let port: i32 = row.try_get(3)?;
    Ok(Probe {
        in_recovery,
        read_only: read_only == "on",
        identity: format!("{addr}:{port}"),
    })
}

/// The PostgreSQL side of one store: its hosts, the one the pool uses, the last server seen,
/// and the synchronous-standby gate.
pub(crate) struct PgHealth {
    pub(crate) hosts: PgHosts,
    current: AtomicUsize,
    /// (host index, server identity) of the last connection that passed its check.
    seen: parking_lot::Mutex<Option<(usize, String)>>,
    /// Set when a new connection was refused or the database stopped answering: the watcher
    /// looks for the writable host again.
    pub(crate) resolve: AtomicBool,
    require_sync: AtomicBool,
    sync_checked: parking_lot::Mutex<Option<(Instant, bool)>>,
}

impl std::fmt::Debug for PgHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgHealth")
            .field("hosts", &self.hosts)
            .field("current", &self.current.load(Relaxed))
            .finish_non_exhaustive()
    }
}

/// How long a connection attempt to one host of a multi-host URL may take while looking for
/// the primary.
const HOST_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the watcher of a multi-host URL looks whether it must look for the primary.
const WATCH_INTERVAL: Duration = Duration::from_millis(250);
/// How long a `--require-sync-replica` answer is reused.
const SYNC_CHECK_TTL: Duration = Duration::from_secs(1);

impl PgHealth {
    pub(crate) fn new(hosts: PgHosts) -> Arc<Self> {
        Arc::new(Self {
            hosts,
            current: AtomicUsize::new(0),
            seen: Default::default(),
            resolve: AtomicBool::new(false),
            require_sync: AtomicBool::new(false),
            sync_checked: Default::default(),
        })
    }

    /// The index of the host the pool connects to.
    pub(crate) fn current(&self) -> usize {
        self.current.load(Relaxed)
    }

    /// The pool's URL now.
    pub(crate) fn current_url(&self) -> String {
        self.hosts.url_for(self.current())
    }

    /// The `after_connect` check of a new pooled connection: refuses a standby (and a
    /// read-only session under `target_session_attrs=read-write`), and counts a failover when
    /// the server differs from the last one seen.
    pub(crate) async fn check_new(&self, conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
        let p = match probe(conn).await {
            Ok(p) => p,
            Err(e) => {
                self.resolve.store(true, Relaxed);
                return Err(e);
            }
        };
        if !p.usable(self.hosts.read_write) {
            self.resolve.store(true, Relaxed);
            note_error(ErrorClass::ReadOnly);
            let what = if p.in_recovery {
                "in recovery (a standby)"
            } else {
                "read-only (target_session_attrs=read-write)"
            };
            return Err(sqlx::Error::Io(std::io::Error::other(format!(
                "the database server at {} is {what}: connection not used",
                p.identity
            ))));
        }
        let here = (self.current(), p.identity);
        let mut seen = self.seen.lock();
        if let Some(before) = seen.as_ref() {
            if *before != here {
                FAILOVERS.fetch_add(1, Relaxed);
                tracing::warn!(
                    from = %before.1,
                    to = %here.1,
                    host = here.0,
                    "the database server changed (failover)"
                );
            }
        }
        *seen = Some(here);
        Ok(())
    }

    /// Tries the hosts in order and returns the first one that accepts a connection and can
    /// write (without `target_session_attrs=read-write`, the first that is not a standby).
    pub(crate) async fn find_writable(&self) -> Option<usize> {
        for i in 0..self.hosts.hosts.len() {
            let Ok(opts) = AnyConnectOptions::from_str(&self.hosts.url_for(i)) else {
                continue;
            };
            let attempt = async {
                let mut c = AnyConnection::connect_with(&opts).await?;
                let p = probe(&mut c).await;
                let _ = c.close().await;
                p
            };
            match tokio::time::timeout(HOST_CONNECT_TIMEOUT, attempt).await {
                Ok(Ok(p)) if p.usable(self.hosts.read_write) => return Some(i),
                Ok(Ok(_)) => tracing::info!(host = i, "database host is not writable"),
                Ok(Err(e)) => tracing::info!(host = i, error = %e, "database host unreachable"),
                Err(_) => tracing::info!(host = i, "database host did not answer in time"),
            }
        }
        None
    }

    /// Before the pool exists: it will connect to host `i`.
    pub(crate) fn start_at(&self, i: usize) {
        self.current.store(i, Relaxed);
    }

    /// Points `pool` at host `i`.
    pub(crate) fn switch_to(&self, i: usize, pool: &AnyPool) {
        if i == self.current() {
            return;
        }
        match AnyConnectOptions::from_str(&self.hosts.url_for(i)) {
            Ok(opts) => {
                self.current.store(i, Relaxed);
                pool.set_connect_options(opts);
                tracing::warn!(host = i, "the database pool now connects to another host");
            }
            Err(e) => tracing::error!(host = i, error = %e, "unusable database host"),
        }
    }

    /// Turns the synchronous-standby gate on or off.
    pub(crate) fn set_require_sync(&self, on: bool) {
        self.require_sync.store(on, Relaxed);
        *self.sync_checked.lock() = None;
    }

    /// With the gate on, `Unavailable` unless a synchronous standby is attached (asked at most
    /// once per [`SYNC_CHECK_TTL`]).
    pub(crate) async fn check_sync(&self, pool: &AnyPool) -> StoreResult<()> {
        if !self.require_sync.load(Relaxed) {
            return Ok(());
        }
        let cached = *self.sync_checked.lock();
        let ok = match cached {
            Some((at, ok)) if at.elapsed() < SYNC_CHECK_TTL => ok,
            _ => {
                // A server that cannot say (an error that is not the database going away)
                // cannot show a synchronous standby either: the write is refused all the same.
                let ok = sync_standby_attached(pool)
                    .await
                    .map_err(|e| match e {
                        StoreError::Backend(e) => unavailable(format!(
                            "--require-sync-replica: the replication state could not be read: {e}"
                        )),
                        other => other,
                    })?
                    .attached();
                *self.sync_checked.lock() = Some((Instant::now(), ok));
                ok
            }
        };
        if ok {
            Ok(())
        } else {
            Err(unavailable(
                "no synchronous standby is attached and --require-sync-replica is set: \
                 writes are refused",
            ))
        }
    }
}

/// What the server says about synchronous replication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replication {
    /// The server is a primary (not in recovery).
    pub primary: bool,
    /// `synchronous_standby_names` (empty: commits wait for no standby).
    pub synchronous_standby_names: String,
    /// Standbys `pg_stat_replication` shows as `sync` or `quorum`. (A role without
    /// `pg_monitor`/`pg_read_all_stats` sees no `sync_state`: none are counted.)
    pub sync_standbys: i64,
}

impl Replication {
    /// A primary whose commits wait for at least one attached synchronous standby.
    pub fn attached(&self) -> bool {
        self.primary && !self.synchronous_standby_names.trim().is_empty() && self.sync_standbys > 0
    }
}

pub(crate) async fn sync_standby_attached(pool: &AnyPool) -> StoreResult<Replication> {
    let row = sqlx::query(
        "SELECT NOT pg_is_in_recovery(), current_setting('synchronous_standby_names'), \
         (SELECT count(*) FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum'))",
    )
    .fetch_one(pool)
    .await
    .map_err(super::classify)?;
    let get = |e: sqlx::Error| StoreError::Backend(e);
    Ok(Replication {
        primary: row.try_get(0).map_err(get)?,
        synchronous_standby_names: row.try_get(1).map_err(get)?,
        sync_standbys: row.try_get(2).map_err(get)?,
    })
}

/// A token held by every clone of a store: the watcher ends once the store is gone.
pub(crate) struct Alive;

/// Watches a multi-host store: when its pool hit trouble (a refused standby, an unreachable
/// server), finds the writable host and moves the pool there. Ends when the store is dropped
/// or its pool closed.
pub(crate) fn spawn_watcher(health: Arc<PgHealth>, pool: AnyPool, alive: Weak<Alive>) {
    tokio::spawn(async move {
        let mut seen_errors = ERRORS_CONNECTION.load(Relaxed);
        loop {
            tokio::time::sleep(WATCH_INTERVAL).await;
            if alive.upgrade().is_none() || pool.is_closed() {
                return;
            }
            let errors = ERRORS_CONNECTION.load(Relaxed);
            let trouble = health.resolve.swap(false, Relaxed) || errors != seen_errors;
            seen_errors = errors;
            if !trouble {
                continue;
            }
            match health.find_writable().await {
                Some(i) => health.switch_to(i, &pool),
                None => {
                    tracing::warn!("no writable database host: looking again");
                    health.resolve.store(true, Relaxed);
                }
            }
        }
    });
}

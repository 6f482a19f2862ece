//! Connecting: the database URL, the pools (SQLite: one writer and a reader pool;
//! PostgreSQL: one pool) and their settings.

use std::fmt;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::Executor;

use super::*;
use crate::{StoreError, StoreResult};

/// Creates the file behind a `sqlite:` URL with mode 0600 when it does not exist yet (with
/// `mode=rwc` SQLite would create it with the umask's mode, typically 0644). SQLite gives its
/// `-wal` and `-shm` files the database file's mode, so they are private too.
pub(crate) fn create_private_sqlite_file(url: &str) {
    use std::os::unix::fs::OpenOptionsExt;
    let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return;
    };
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() || path == ":memory:" || !query.split('&').any(|p| p == "mode=rwc") {
        return;
    }
    // An existing file is left alone; a missing directory or a permission problem is left for
    // SQLite to report in its own words.
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
}

/// A database URL whose `Debug`/`Display` never show a password.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The full URL, password included: only for handing to the driver.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_sqlite(&self) -> bool {
        self.0.starts_with("sqlite:")
    }

    pub fn is_postgres(&self) -> bool {
        self.0.starts_with("postgres://") || self.0.starts_with("postgresql://")
    }

    pub(crate) fn masked(&self) -> String {
        // scheme://user:password@host/... → scheme://user:****@host/...
        if let Some((scheme, rest)) = self.0.split_once("://") {
            if let Some((creds, host)) = rest.split_once('@') {
                if let Some((user, _)) = creds.split_once(':') {
                    return format!("{scheme}://{user}:****@{host}");
                }
            }
        }
        self.0.clone()
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({:?})", self.masked())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// 100: leave room for several nodes and the operator).
pub const PG_MAX_CONNECTIONS: u32 = 10;
/// How long a request waits for a PostgreSQL connection before the store reports
/// `Unavailable` (the API's 503). While the database is down, this is how fast requests fail.
pub const PG_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

impl SqlStore {
    /// Connects, applies pragmas (SQLite: WAL, `synchronous=FULL`, busy timeout, foreign keys)
    /// and runs the embedded migrations.
    pub async fn connect(url: &DatabaseUrl) -> StoreResult<Self> {
        sqlx::any::install_default_drivers();
        let Some(dialect) = Dialect::of(url) else {
            return Err(StoreError::Corrupt(format!(
                "unsupported database URL {url}: expected sqlite:... or postgres://..."
            )));
        };
        let store = match dialect {
            Dialect::Sqlite => {
                create_private_sqlite_file(url.expose());
                let pragmas = |opts: AnyPoolOptions| {
                    opts.after_connect(|conn, _meta| {
                        Box::pin(async move {
                            for stmt in Dialect::Sqlite.connection_settings() {
                                conn.execute(*stmt).await?;
                            }
                            Ok(())
                        })
                    })
                };
                let write = pragmas(AnyPoolOptions::new())
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect(url.expose())
                    .await
                    .map_err(classify)?;
                let read = pragmas(AnyPoolOptions::new())
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect(url.expose())
                    .await
                    .map_err(classify)?;
                Self {
                    dialect,
                    read,
                    batch: Some(Batcher::new(write.clone())),
                    write,
                    url: url.clone(),
                    auth: Default::default(),
                    pg: None,
                    _alive: std::sync::Arc::new(failover::Alive),
                }
            }
            Dialect::Postgres => {
                // One pool for reads and writes. `test_before_acquire` (on by default) pings an
                // idle connection before handing it out, so connections left dead by a database
                // restart are replaced instead of failing a request; while the database is down,
                // acquiring gives up after `PG_ACQUIRE_TIMEOUT` (the API answers 503).
                // TLS follows the URL's `sslmode` (`require`, `verify-ca`, `verify-full`, with
                // `sslrootcert=PATH` for a private CA).
                //
                // Failover (`failover.rs`): every new connection is checked and a standby is
                // never used; a URL may list several hosts (libpq's `h1:p1,h2:p2` and
                // `target_session_attrs`), of which the pool uses the first writable one and
                // moves to another when that one stops answering.
                let hosts = failover::PgHosts::parse(url.expose())
                    .map_err(|why| StoreError::Corrupt(format!("database URL {url}: {why}")))?;
                let health = failover::PgHealth::new(hosts);
                if health.hosts.hosts.len() > 1 {
                    match health.find_writable().await {
                        Some(i) => health.start_at(i),
                        None => {
                            return Err(failover::unavailable(format!(
                                "none of the {} hosts of {url} accepts writes",
                                health.hosts.hosts.len()
                            )))
                        }
                    }
                }
                let check = health.clone();
                let pool = AnyPoolOptions::new()
                    .max_connections(PG_MAX_CONNECTIONS)
                    .min_connections(0)
                    .acquire_timeout(PG_ACQUIRE_TIMEOUT)
                    .idle_timeout(Some(Duration::from_secs(60)))
                    .max_lifetime(Some(Duration::from_secs(30 * 60)))
                    .test_before_acquire(true)
                    .after_connect(move |conn, _meta| {
                        let check = check.clone();
                        Box::pin(async move { check.check_new(conn).await })
                    })
                    .connect(&health.current_url())
                    .await
                    .map_err(classify)?;
                let alive = std::sync::Arc::new(failover::Alive);
                if health.hosts.hosts.len() > 1 {
                    failover::spawn_watcher(
                        health.clone(),
                        pool.clone(),
                        std::sync::Arc::downgrade(&alive),
                    );
                }
                Self {
                    dialect,
                    read: pool.clone(),
                    write: pool,
                    url: url.clone(),
                    auth: Default::default(),
                    // PostgreSQL groups concurrent commits itself (`commit_delay`, many
                    // connections): each write keeps its own transaction.
                    batch: None,
                    pg: Some(health),
                    _alive: alive,
                }
            }
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Closes both pools.
    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }
}

/// Folds the write-ahead log of the SQLite database file at `path` into the file and empties
/// the log (`PRAGMA wal_checkpoint(TRUNCATE)`), from a connection of its own. For a database
/// whose pools were closed: SQLite does this when the last connection closes, but a pool can
/// leave an idle connection open a while after `close()`. `Err` when a reader held the log.
pub async fn checkpoint_sqlite_file(path: &std::path::Path) -> StoreResult<()> {
    use sqlx::{ConnectOptions, Connection};
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(false)
        .connect()
        .await
        .map_err(classify)?;
    let (busy, log, done): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
        .fetch_one(&mut conn)
        .await
        .map_err(classify)?;
    conn.close().await.map_err(classify)?;
    if busy != 0 || log != done {
        return Err(StoreError::Corrupt(format!(
            "the write-ahead log of {} could not be checkpointed ({done} of {log} frames)",
            path.display()
        )));
    }
    Ok(())
}

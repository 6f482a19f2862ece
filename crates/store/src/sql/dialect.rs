//! [`Dialect`]: the one place where the SQL of SQLite and PostgreSQL differs. Every other
//! module writes portable SQL (`$n` placeholders, `INSERT … ON CONFLICT`, `UPDATE …
//! RETURNING`, integers for times and booleans) and asks the dialect for the rest: the
//! migrations, per-connection settings, catalog queries and snapshot reads of
//! `keyward admin copy-db` (`crate::copy`).

use std::sync::atomic::{AtomicU32, Ordering};

use super::DatabaseUrl;

/// Default of [`set_sqlite_cache_kib`]: SQLite's page cache per connection, in KiB.
///
/// SQLite's own default is 2,000 KiB per connection; with 9 connections (1 writer, 8
/// readers) each caching its own copy of the pages it read, that is up to 18 MiB, and it fills
/// as the database grows (`BENCHMARKS.md`, "Memory"). The pages stay in the kernel's file
/// cache, so a page not in SQLite's cache costs one `pread` of memory, not a disk read.
pub const DEFAULT_SQLITE_CACHE_KIB: u32 = 256;

static SQLITE_CACHE_KIB: AtomicU32 = AtomicU32::new(DEFAULT_SQLITE_CACHE_KIB);

/// Sets the page cache of every SQLite connection opened from now on (`PRAGMA cache_size`, in
/// KiB, at least 16): a process-wide setting (`--sqlite-cache-kib`), made once at startup.
pub fn set_sqlite_cache_kib(kib: u32) {
    SQLITE_CACHE_KIB.store(kib.max(16), Ordering::Relaxed);
}

/// The SQLite settings for a page cache of `kib`: built once per distinct value (a process
/// sets one, tests a few), and kept for the life of the process.
fn sqlite_settings(kib: u32) -> &'static [&'static str] {
    static BUILT: parking_lot::Mutex<Vec<(u32, &'static [&'static str])>> =
        parking_lot::Mutex::new(Vec::new());
    let mut built = BUILT.lock();
    if let Some((_, s)) = built.iter().find(|(k, _)| *k == kib) {
        return s;
    }
    let cache: &'static str = Box::leak(format!("PRAGMA cache_size = -{kib}").into_boxed_str());
    let s: &'static [&'static str] = Box::leak(Box::new([
        "PRAGMA busy_timeout = 5000",
        "PRAGMA journal_mode = WAL",
        "PRAGMA synchronous = FULL",
        "PRAGMA foreign_keys = ON",
        cache,
    ]));
    built.push((kib, s));
    s
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

const SQLITE_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/sqlite/0001_init.sql")),
    (
        2,
        include_str!("../../migrations/sqlite/0002_lifecycle.sql"),
    ),
    (3, include_str!("../../migrations/sqlite/0003_audit.sql")),
    (
        4,
        include_str!("../../migrations/sqlite/0004_sealed_index.sql"),
    ),
    (
        5,
        include_str!("../../migrations/sqlite/0005_import_failures.sql"),
    ),
    (6, include_str!("../../migrations/sqlite/0006_row_auth.sql")),
    (7, include_str!("../../migrations/sqlite/0007_listing.sql")),
    (8, include_str!("../../migrations/sqlite/0008_kmip.sql")),
    (
        9,
        include_str!("../../migrations/sqlite/0009_key_usage.sql"),
    ),
];
const POSTGRES_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_init.sql")),
    (
        2,
        include_str!("../../migrations/postgres/0002_lifecycle.sql"),
    ),
    (3, include_str!("../../migrations/postgres/0003_audit.sql")),
    (
        4,
        include_str!("../../migrations/postgres/0004_sealed_index.sql"),
    ),
    (
        5,
        include_str!("../../migrations/postgres/0005_import_failures.sql"),
    ),
    (
        6,
        include_str!("../../migrations/postgres/0006_row_auth.sql"),
    ),
    (
        7,
        include_str!("../../migrations/postgres/0007_listing.sql"),
    ),
    (8, include_str!("../../migrations/postgres/0008_kmip.sql")),
    (
        9,
        include_str!("../../migrations/postgres/0009_key_usage.sql"),
    ),
];

impl Dialect {
    /// The dialect of a database URL (`None`: neither `sqlite:` nor `postgres://`).
    pub(crate) fn of(url: &DatabaseUrl) -> Option<Self> {
        if url.is_sqlite() {
            Some(Self::Sqlite)
        } else if url.is_postgres() {
            Some(Self::Postgres)
        } else {
            None
        }
    }

    /// `"sqlite"` or `"postgres"` ([`crate::Store::backend`]).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }

    /// The embedded migrations, by version.
    pub(crate) fn migrations(self) -> &'static [(i64, &'static str)] {
        match self {
            Self::Sqlite => SQLITE_MIGRATIONS,
            Self::Postgres => POSTGRES_MIGRATIONS,
        }
    }

    /// Statements run on every new connection: SQLite's WAL with `synchronous=FULL` (every
    /// acknowledged write durable), busy timeout, foreign keys, and the page cache bound
    /// ([`set_sqlite_cache_kib`]). PostgreSQL needs none.
    pub(crate) fn connection_settings(self) -> &'static [&'static str] {
        match self {
            Self::Sqlite => sqlite_settings(SQLITE_CACHE_KIB.load(Ordering::Relaxed)),
            Self::Postgres => &[],
        }
    }

    /// The tables of the database (one `TEXT` column), by name, without the derived
    /// `key_counts` (migration 0007: triggers rebuild it from `keys`, so a copy leaves it out).
    pub(crate) fn tables_sql(self) -> &'static str {
        match self {
            Self::Sqlite => {
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name <> 'key_counts' ORDER BY name"
            }
            Self::Postgres => {
                "SELECT CAST(table_name AS TEXT) FROM information_schema.tables
         WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'
           AND table_name <> 'key_counts' ORDER BY 1"
            }
        }
    }

    /// The columns of table `$1`: `name`, declared `type`, and `pk` (its position in the
    /// primary key, 0 if none), in declaration order.
    pub(crate) fn columns_sql(self) -> &'static str {
        match self {
            Self::Sqlite => "SELECT name, type, pk FROM pragma_table_info($1) ORDER BY cid",
            Self::Postgres => {
                "SELECT CAST(c.column_name AS TEXT) AS name, CAST(c.data_type AS TEXT) AS type,
                    CAST(COALESCE((
                        SELECT k.ordinal_position FROM information_schema.table_constraints t
                        JOIN information_schema.key_column_usage k
                          ON k.constraint_name = t.constraint_name
                         AND k.table_schema = t.table_schema AND k.table_name = t.table_name
                        WHERE t.table_schema = c.table_schema AND t.table_name = c.table_name
                          AND t.constraint_type = 'PRIMARY KEY' AND k.column_name = c.column_name
                    ), 0) AS BIGINT) AS pk
             FROM information_schema.columns c
             WHERE c.table_schema = current_schema() AND c.table_name = $1
             ORDER BY c.ordinal_position"
            }
        }
    }

    /// The statement that makes a read transaction one snapshot (`None`: SQLite's read
    /// transaction is one already).
    pub(crate) fn snapshot_read(self) -> Option<&'static str> {
        match self {
            Self::Sqlite => None,
            Self::Postgres => Some("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"),
        }
    }

    /// Whether serial columns draw from sequences that a copy must move past the copied ids.
    pub(crate) fn has_sequences(self) -> bool {
        self == Self::Postgres
    }

    /// A literal of `bytes` as a blob (for tests that write rows behind the store's back).
    #[cfg(test)]
    pub(crate) fn blob_literal(self, bytes: &[u8]) -> String {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        match self {
            Self::Sqlite => format!("X'{hex}'"),
            Self::Postgres => format!("'\\x{hex}'::bytea"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::SqlStore;

    /// Every SQLite connection of both pools runs with the bounded page cache.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_connections_use_the_bounded_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("kw.db").display());
        let store = SqlStore::connect(&DatabaseUrl::new(url)).await.unwrap();
        for pool in [&store.read, &store.write] {
            let (size,): (i64,) = sqlx::query_as("PRAGMA cache_size")
                .fetch_one(pool)
                .await
                .unwrap();
            // Negative: KiB (SQLite's default is -2000).
            assert_eq!(size, -i64::from(DEFAULT_SQLITE_CACHE_KIB));
        }
        store.close().await;
        assert!(sqlite_settings(1000).contains(&"PRAGMA cache_size = -1000"));
        assert!(std::ptr::eq(sqlite_settings(1000), sqlite_settings(1000)));
    }
}

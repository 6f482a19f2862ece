//! [`SqlStore`]: the [`Store`] over SQLite or PostgreSQL through sqlx's `Any` driver.
//!
//! SQL here stays portable: `$n` placeholders (SQLite accepts them too), `INSERT … ON CONFLICT`,
//! `UPDATE … RETURNING`, integers for times and booleans, no advisory locks. SQLite gets a
//! single-connection writer pool, so write transactions never contend for the write lock, and
//! a reader pool for everything else (WAL lets readers run beside the writer).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use keyward_domain::{InstanceId, KeyId, KeyState, Role, TokenId, VersionId};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};

use crate::rowtag::{self, RowAuth, TagInput};
use crate::{
    AliasRow, ApiKeyRow, AuditEntry, AuditQuery, AuditRow, GrantRow, InstanceRow, KeyQuery,
    KeyRingRow, KeyRow, PolicyRow, PrincipalRow, RegistrationRow, SealedPlace, SealedRow,
    SortField, Store, StoreError, StoreResult, TokenGuard, TokenRow, VersionRow,
};

const SQLITE_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../migrations/sqlite/0002_lifecycle.sql")),
    (3, include_str!("../migrations/sqlite/0003_audit.sql")),
    (
        4,
        include_str!("../migrations/sqlite/0004_sealed_index.sql"),
    ),
    (
        5,
        include_str!("../migrations/sqlite/0005_import_failures.sql"),
    ),
    (6, include_str!("../migrations/sqlite/0006_row_auth.sql")),
];
const POSTGRES_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/postgres/0001_init.sql")),
    (2, include_str!("../migrations/postgres/0002_lifecycle.sql")),
    (3, include_str!("../migrations/postgres/0003_audit.sql")),
    (
        4,
        include_str!("../migrations/postgres/0004_sealed_index.sql"),
    ),
    (
        5,
        include_str!("../migrations/postgres/0005_import_failures.sql"),
    ),
    (6, include_str!("../migrations/postgres/0006_row_auth.sql")),
];

/// Creates the file behind a `sqlite:` URL with mode 0600 when it does not exist yet (with
/// `mode=rwc` SQLite would create it with the umask's mode, typically 0644). SQLite gives its
/// `-wal` and `-shm` files the database file's mode, so they are private too.
fn create_private_sqlite_file(url: &str) {
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

    fn masked(&self) -> String {
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// The SQL store. Cheap to clone (pools are shared).
#[derive(Clone)]
pub struct SqlStore {
    backend: Backend,
    pub(crate) read: AnyPool,
    pub(crate) write: AnyPool,
    url: DatabaseUrl,
    /// The row authenticator, once installed (`None`: authenticated tables can be neither read
    /// nor written).
    pub(crate) auth: std::sync::Arc<parking_lot::RwLock<Option<std::sync::Arc<dyn RowAuth>>>>,
}

impl fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlStore")
            .field("backend", &self.backend)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

pub(crate) fn classify(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::RowNotFound => StoreError::NotFound,
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e),
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            if db.is_unique_violation() {
                StoreError::Conflict("already exists")
            } else if code.starts_with("57P")
                || code.starts_with("08")
                || code.starts_with("53")
                || code == "40003"
            {
                // Shutdown/admin termination (57P*), connection failures (08*), the server out
                // of connections or resources (53*), and CockroachDB's "statement completion
                // unknown" (40003, an ambiguous commit): the database is not serving us.
                StoreError::Unavailable(e)
            } else {
                StoreError::Backend(e)
            }
        }
        _ => StoreError::Backend(e),
    }
}

/// Most connections one node opens to PostgreSQL (PostgreSQL's default `max_connections` is
/// 100: leave room for several nodes and the operator).
pub const PG_MAX_CONNECTIONS: u32 = 10;
/// How long a request waits for a PostgreSQL connection before the store reports
/// `Unavailable` (the API's 503). While the database is down, this is how fast requests fail.
pub const PG_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// Attempts of one write transaction that keeps hitting serialization failures.
pub const WRITE_ATTEMPTS: u32 = 8;
/// Attempts of one migration (or of creating the migrations table) before startup gives up.
const MIGRATION_ATTEMPTS: u32 = 10;

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

impl SqlStore {
    /// Connects, applies pragmas (SQLite: WAL, `synchronous=FULL`, busy timeout, foreign keys)
    /// and runs the embedded migrations.
    pub async fn connect(url: &DatabaseUrl) -> StoreResult<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.is_sqlite() {
            Backend::Sqlite
        } else if url.is_postgres() {
            Backend::Postgres
        } else {
            return Err(StoreError::Corrupt(format!(
                "unsupported database URL {url}: expected sqlite:... or postgres://..."
            )));
        };
        let store = match backend {
            Backend::Sqlite => {
                create_private_sqlite_file(url.expose());
                let pragmas = |opts: AnyPoolOptions| {
                    opts.after_connect(|conn, _meta| {
                        Box::pin(async move {
                            conn.execute("PRAGMA busy_timeout = 5000").await?;
                            conn.execute("PRAGMA journal_mode = WAL").await?;
                            conn.execute("PRAGMA synchronous = FULL").await?;
                            conn.execute("PRAGMA foreign_keys = ON").await?;
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
                    backend,
                    read,
                    write,
                    url: url.clone(),
                    auth: Default::default(),
                }
            }
            Backend::Postgres => {
                // One pool for reads and writes. `test_before_acquire` (on by default) pings an
                // idle connection before handing it out, so connections left dead by a database
                // restart are replaced instead of failing a request; while the database is down,
                // acquiring gives up after `PG_ACQUIRE_TIMEOUT` (the API answers 503).
                // TLS follows the URL's `sslmode` (`require`, `verify-ca`, `verify-full`, with
                // `sslrootcert=PATH` for a private CA).
                let pool = AnyPoolOptions::new()
                    .max_connections(PG_MAX_CONNECTIONS)
                    .min_connections(0)
                    .acquire_timeout(PG_ACQUIRE_TIMEOUT)
                    .idle_timeout(Some(Duration::from_secs(60)))
                    .max_lifetime(Some(Duration::from_secs(30 * 60)))
                    .test_before_acquire(true)
                    .connect(url.expose())
                    .await
                    .map_err(classify)?;
                Self {
                    backend,
                    read: pool.clone(),
                    write: pool,
                    url: url.clone(),
                    auth: Default::default(),
                }
            }
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies the embedded migrations; safe when several nodes start at once on one database,
    /// without advisory locks (missing, or no-ops, on CockroachDB and older YugabyteDB).
    ///
    /// Each migration runs in one transaction that first *claims* its version by inserting the
    /// `schema_migrations` row (`ON CONFLICT DO NOTHING`). A second node's claim waits on the
    /// first node's uncommitted row: when the first commits, the claim inserts nothing and the
    /// second node moves on; when the first rolls back, the second applies the migration. Any
    /// failure (a DDL collision, a serialization failure, a lost connection) rolls the
    /// transaction back; the node then re-checks whether the version got applied meanwhile and
    /// otherwise retries with bounded backoff.
    async fn migrate(&self) -> StoreResult<()> {
        let migrations = match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS,
            Backend::Postgres => POSTGRES_MIGRATIONS,
        };
        self.ensure_migrations_table().await?;
        let known = migrations.iter().map(|(v, _)| *v).max().unwrap_or(0);
        for (version, sql) in migrations {
            let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
            let mut attempt = 1;
            loop {
                match self.apply_migration(*version, sql).await {
                    Ok(applied) => {
                        if applied {
                            tracing::info!(version, "applied database migration");
                        }
                        break;
                    }
                    Err(e) => {
                        if self.migration_applied(*version).await.unwrap_or(false) {
                            break;
                        }
                        if attempt >= MIGRATION_ATTEMPTS {
                            return Err(e);
                        }
                        tracing::warn!(version, attempt, error = %e, "migration attempt failed; retrying");
                        attempt += 1;
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
            }
        }
        let newest: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations")
            .fetch_one(&self.write)
            .await
            .map_err(classify)?;
        if newest.unwrap_or(0) > known {
            return Err(StoreError::Corrupt(format!(
                "the database schema (version {}) is newer than this Keyward (version {known})",
                newest.unwrap_or(0)
            )));
        }
        Ok(())
    }

    /// `CREATE TABLE IF NOT EXISTS` is not race-free on PostgreSQL (two sessions can both pass
    /// the existence check; the loser fails on the catalog's unique index), so a failure counts
    /// only if the table is still missing after bounded retries.
    async fn ensure_migrations_table(&self) -> StoreResult<()> {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        let mut attempt = 1;
        loop {
            let created = self
                .write
                .execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
                )
                .await
                .map_err(classify);
            match created {
                Ok(_) => return Ok(()),
                Err(e) => {
                    let exists =
                        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM schema_migrations")
                            .fetch_one(&self.write)
                            .await
                            .is_ok();
                    if exists {
                        return Ok(());
                    }
                    if attempt >= MIGRATION_ATTEMPTS {
                        return Err(e);
                    }
                    attempt += 1;
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }

    async fn migration_applied(&self, version: i64) -> StoreResult<bool> {
        let done: Option<i64> =
            sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                .bind(version)
                .fetch_optional(&self.write)
                .await
                .map_err(classify)?;
        Ok(done.is_some())
    }

    /// One attempt at one migration: `Ok(false)` when it was applied already (by this node
    /// earlier, or by another node, possibly while this one waited on its claim).
    async fn apply_migration(&self, version: i64, sql: &str) -> StoreResult<bool> {
        if self.migration_applied(version).await? {
            return Ok(false);
        }
        let mut tx = self.write.begin().await.map_err(classify)?;
        let claimed = sqlx::query(
            "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2) ON CONFLICT (version) DO NOTHING",
        )
        .bind(version)
        .bind(time::OffsetDateTime::now_utc().unix_timestamp())
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        if claimed.rows_affected() == 0 {
            tx.rollback().await.map_err(classify)?;
            return Ok(false);
        }
        for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            sqlx::query(stmt)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
        }
        tx.commit().await.map_err(classify)?;
        Ok(true)
    }

    /// Closes both pools.
    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }

    fn row_auth(&self) -> StoreResult<std::sync::Arc<dyn RowAuth>> {
        self.auth.read().clone().ok_or(StoreError::RowAuthMissing)
    }

    /// The tag of a row about to be written.
    pub(crate) fn tag_of(&self, input: &TagInput) -> StoreResult<Vec<u8>> {
        Ok(self.row_auth()?.tag(input.as_bytes()))
    }

    /// Checks a row just read against its stored tag. A row that fails is logged (table and
    /// id, never a value), counted, and refused with [`StoreError::Integrity`].
    pub(crate) fn check_tag(
        &self,
        table: &'static str,
        id: &str,
        input: &TagInput,
        tag: Option<&[u8]>,
    ) -> StoreResult<()> {
        let auth = self.row_auth()?;
        let ok = match tag {
            Some(t) => auth.verify(input.as_bytes(), t),
            None => auth.accept_untagged(),
        };
        if ok {
            return Ok(());
        }
        rowtag::count_failure(table);
        tracing::error!(
            table,
            id,
            tagged = tag.is_some(),
            "a stored row failed its integrity check and was refused: the database may have been tampered with"
        );
        Err(StoreError::Integrity {
            table,
            id: id.to_string(),
        })
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

pub(crate) fn get<'r, T>(row: &'r AnyRow, col: &str) -> StoreResult<T>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get::<T, _>(col)
        .map_err(|e| StoreError::Corrupt(format!("column {col}: {e}")))
}

pub(crate) fn uuid_col<T>(
    row: &AnyRow,
    col: &str,
    f: fn(&str) -> Result<T, keyward_domain::DomainError>,
) -> StoreResult<T> {
    let s: String = get(row, col)?;
    f(&s).map_err(|_| corrupt(col))
}

pub(crate) const KEY_COLS: &str = "id, instance_id, name, description, tags, state, extractable, imported, key_ring_id, expiration_date, created_at, created_by, updated_at, last_rotate_date, deletion_date, deleted_by, state_changed_at, current_version, attrs, row_version, next_rotation_at, auth_tag";

pub(crate) fn key_from_row(row: &AnyRow) -> StoreResult<KeyRow> {
    let tags: String = get(row, "tags")?;
    let attrs: String = get(row, "attrs")?;
    Ok(KeyRow {
        id: uuid_col(row, "id", KeyId::parse)?,
        instance_id: uuid_col(row, "instance_id", InstanceId::parse)?,
        name: get(row, "name")?,
        description: get(row, "description")?,
        tags: serde_json::from_str(&tags).map_err(|_| corrupt("tags"))?,
        state: KeyState::from_code(get(row, "state")?).ok_or_else(|| corrupt("state"))?,
        extractable: get::<i64>(row, "extractable")? != 0,
        imported: get::<i64>(row, "imported")? != 0,
        key_ring_id: get(row, "key_ring_id")?,
        expiration_date: get(row, "expiration_date")?,
        created_at: get(row, "created_at")?,
        created_by: get(row, "created_by")?,
        updated_at: get(row, "updated_at")?,
        last_rotate_date: get(row, "last_rotate_date")?,
        deletion_date: get(row, "deletion_date")?,
        deleted_by: get(row, "deleted_by")?,
        state_changed_at: get(row, "state_changed_at")?,
        current_version: uuid_col(row, "current_version", VersionId::parse)?,
        attrs: serde_json::from_str(&attrs).map_err(|_| corrupt("attrs"))?,
        row_version: get(row, "row_version")?,
        next_rotation_at: get(row, "next_rotation_at")?,
    })
}

const VERSION_COLS: &str =
    "id, key_id, instance_id, seq, created_at, sealed, master_key_id, auth_tag";

fn version_from_row(row: &AnyRow) -> StoreResult<VersionRow> {
    Ok(VersionRow {
        id: uuid_col(row, "id", VersionId::parse)?,
        key_id: uuid_col(row, "key_id", KeyId::parse)?,
        instance_id: uuid_col(row, "instance_id", InstanceId::parse)?,
        seq: get(row, "seq")?,
        created_at: get(row, "created_at")?,
        sealed: get(row, "sealed")?,
        master_key_id: get(row, "master_key_id")?,
    })
}

const TOKEN_COLS: &str = "instance_id, token_id, created_at, expires_at, expiration_secs, max_retrievals, remaining, nonce, public_pem, sealed_private, master_key_id, auth_tag";

fn token_from_row(row: &AnyRow) -> StoreResult<TokenRow> {
    Ok(TokenRow {
        instance_id: uuid_col(row, "instance_id", InstanceId::parse)?,
        token_id: uuid_col(row, "token_id", TokenId::parse)?,
        created_at: get(row, "created_at")?,
        expires_at: get(row, "expires_at")?,
        expiration_secs: get(row, "expiration_secs")?,
        max_retrievals: get(row, "max_retrievals")?,
        remaining: get(row, "remaining")?,
        nonce: get(row, "nonce")?,
        public_pem: get(row, "public_pem")?,
        sealed_private: get(row, "sealed_private")?,
        master_key_id: get(row, "master_key_id")?,
    })
}

/// The columns of an API key row as every read selects them.
const API_KEY_COLS: &str = "id, iam_id, key_hash, name, created_at, auth_tag";

fn api_key_from_row(row: &AnyRow) -> StoreResult<ApiKeyRow> {
    Ok(ApiKeyRow {
        id: get(row, "id")?,
        iam_id: get(row, "iam_id")?,
        name: get(row, "name")?,
        created_at: get(row, "created_at")?,
    })
}

/// The `auth_tag` column of a row.
pub(crate) fn tag_col(row: &AnyRow) -> StoreResult<Option<Vec<u8>>> {
    get(row, "auth_tag")
}

impl SqlStore {
    /// Parses a row of `table` and checks it against its tag.
    pub(crate) fn checked<T>(
        &self,
        table: &'static str,
        row: &AnyRow,
        parse: impl Fn(&AnyRow) -> StoreResult<T>,
        id: impl Fn(&T) -> String,
        input: impl Fn(&T) -> TagInput,
    ) -> StoreResult<T> {
        let v = parse(row)?;
        self.check_tag(table, &id(&v), &input(&v), tag_col(row)?.as_deref())?;
        Ok(v)
    }

    /// As [`SqlStore::checked`] for rows that grant access: a row that fails its check (logged
    /// and counted) is `None`, so a row inserted without the master key grants nothing.
    fn checked_or_absent<T>(
        &self,
        table: &'static str,
        row: &AnyRow,
        parse: impl Fn(&AnyRow) -> StoreResult<T>,
        id: impl Fn(&T) -> String,
        input: impl Fn(&T) -> TagInput,
    ) -> StoreResult<Option<T>> {
        match self.checked(table, row, parse, id, input) {
            Ok(v) => Ok(Some(v)),
            Err(StoreError::Integrity { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A key row, checked against its tag.
    pub(crate) fn key_checked(&self, row: &AnyRow) -> StoreResult<KeyRow> {
        self.checked(
            "keys",
            row,
            key_from_row,
            |k| k.id.to_string(),
            rowtag::key_input,
        )
    }

    fn version_checked(&self, row: &AnyRow) -> StoreResult<VersionRow> {
        self.checked(
            "key_versions",
            row,
            version_from_row,
            |v| v.id.to_string(),
            rowtag::version_input,
        )
    }

    fn token_checked(&self, row: &AnyRow) -> StoreResult<TokenRow> {
        self.checked(
            "import_tokens",
            row,
            token_from_row,
            |t| t.instance_id.to_string(),
            rowtag::token_input,
        )
    }

    fn api_key_checked(&self, row: &AnyRow) -> StoreResult<Option<ApiKeyRow>> {
        let hash: Vec<u8> = get(row, "key_hash")?;
        self.checked_or_absent(
            "api_keys",
            row,
            api_key_from_row,
            |k| k.id.clone(),
            |k| rowtag::api_key_input(k, &hash),
        )
    }

    fn grant_checked(&self, row: &AnyRow) -> StoreResult<Option<GrantRow>> {
        self.checked_or_absent(
            "role_grants",
            row,
            |r| {
                Ok(GrantRow {
                    instance_id: uuid_col(r, "instance_id", InstanceId::parse)?,
                    iam_id: get(r, "iam_id")?,
                    role: Role::from_str(&get::<String>(r, "role")?)
                        .map_err(|_| corrupt("role"))?,
                    created_at: get(r, "created_at")?,
                })
            },
            |g| format!("{}/{}/{}", g.instance_id, g.iam_id, g.role.as_str()),
            rowtag::grant_input,
        )
    }

    fn instance_checked(&self, row: &AnyRow) -> StoreResult<Option<InstanceRow>> {
        self.checked_or_absent(
            "instances",
            row,
            |r| {
                Ok(InstanceRow {
                    id: uuid_col(r, "id", InstanceId::parse)?,
                    name: get(r, "name")?,
                    created_at: get(r, "created_at")?,
                })
            },
            |i| i.id.to_string(),
            rowtag::instance_input,
        )
    }
}

fn json_text<T: serde::Serialize>(v: &T) -> StoreResult<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The state a key shows at "now", which every key query binds as `$2`: expiry turns Active
/// into Deactivated.
const EFFECTIVE_STATE: &str =
    "(CASE WHEN state = 1 AND expiration_date IS NOT NULL AND expiration_date <= $2 THEN 3 ELSE state END)";

/// A value bound by a key query, after `$1` (instance) and `$2` (now).
enum Bind {
    Int(i64),
    Text(String),
}

/// The WHERE clause (after `instance_id = $1`) and its values, numbered from `$3` as they are
/// written: one placeholder per value, built in one pass. Only fixed SQL fragments are
/// concatenated; every value is bound. States are deduplicated.
fn key_filter(q: &KeyQuery) -> (String, Vec<Bind>) {
    use std::fmt::Write;
    let mut sql = String::with_capacity(256);
    let mut binds = Vec::new();
    let mut seen = [false; 6];
    let states = if q.states.is_empty() {
        &[
            KeyState::PreActivation,
            KeyState::Active,
            KeyState::Suspended,
            KeyState::Deactivated,
        ][..]
    } else {
        &q.states[..]
    };
    sql.push_str(" AND ");
    sql.push_str(EFFECTIVE_STATE);
    sql.push_str(" IN (");
    for s in states {
        let code = s.code();
        match usize::try_from(code).ok().and_then(|i| seen.get_mut(i)) {
            Some(seen) if !*seen => *seen = true,
            _ => continue,
        }
        if !binds.is_empty() {
            sql.push(',');
        }
        binds.push(Bind::Int(code));
        let _ = write!(sql, "${}", binds.len() + 2);
    }
    sql.push(')');
    if let Some(e) = q.extractable {
        binds.push(Bind::Int(i64::from(e)));
        let _ = write!(sql, " AND extractable = ${}", binds.len() + 2);
    }
    if let Some(r) = &q.key_ring_id {
        binds.push(Bind::Text(r.clone()));
        let _ = write!(sql, " AND key_ring_id = ${}", binds.len() + 2);
    }
    (sql, binds)
}

/// The ORDER BY list: each field once (the first mention wins, as SQL would), then `id`.
fn sort_sql(q: &KeyQuery) -> String {
    let mut sql = String::with_capacity(64);
    let mut seen: Vec<SortField> = Vec::with_capacity(9);
    for (f, desc) in &q.sort {
        if seen.contains(f) {
            continue;
        }
        seen.push(*f);
        let col = match f {
            SortField::Id => "id",
            SortField::State => EFFECTIVE_STATE,
            SortField::Extractable => "extractable",
            SortField::Imported => "imported",
            SortField::CreationDate => "created_at",
            SortField::LastUpdateDate => "updated_at",
            SortField::LastRotateDate => "last_rotate_date",
            SortField::DeletionDate => "deletion_date",
            SortField::ExpirationDate => "expiration_date",
        };
        sql.push_str(col);
        sql.push_str(if *desc { " DESC, " } else { " ASC, " });
    }
    if seen.contains(&SortField::Id) {
        sql.truncate(sql.len() - 2);
    } else {
        sql.push_str("id ASC");
    }
    sql
}

#[async_trait]
impl Store for SqlStore {
    fn backend(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    fn install_row_auth(&self, auth: std::sync::Arc<dyn RowAuth>) {
        self.install_row_auth_impl(auth);
    }

    async fn row_auth_state(&self) -> StoreResult<crate::RowAuthState> {
        self.row_auth_state_impl().await
    }

    async fn tag_untagged(&self, limit: i64) -> StoreResult<u64> {
        retry_write("tag_untagged", || self.tag_untagged_impl(limit)).await
    }

    async fn sealed_rows(&self) -> StoreResult<(i64, Vec<String>)> {
        let rows = sqlx::query(
            "SELECT master_key_id, COUNT(*) AS n FROM (
                SELECT master_key_id FROM key_versions
                UNION ALL SELECT master_key_id FROM import_tokens
                UNION ALL SELECT master_key_id FROM secrets WHERE master_key_id <> '') AS s GROUP BY master_key_id",
        )
        .fetch_all(&self.read)
        .await
        .map_err(classify)?;
        let mut total = 0;
        let mut ids = Vec::new();
        for r in &rows {
            total += get::<i64>(r, "n")?;
            ids.push(get::<String>(r, "master_key_id")?);
        }
        Ok((total, ids))
    }

    async fn get_secret(&self, name: &str) -> StoreResult<Option<(Vec<u8>, String)>> {
        let row = sqlx::query("SELECT sealed, master_key_id FROM secrets WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.read)
            .await
            .map_err(classify)?;
        row.map(|r| Ok((get(&r, "sealed")?, get(&r, "master_key_id")?)))
            .transpose()
    }

    async fn put_secret_if_absent(
        &self,
        name: &str,
        sealed: &[u8],
        master_key_id: &str,
        now: i64,
    ) -> StoreResult<bool> {
        retry_write("put_secret_if_absent", || async move {
            let r = sqlx::query(
                "INSERT INTO secrets (name, sealed, master_key_id, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(sealed.to_vec())
            .bind(master_key_id)
            .bind(now)
            .execute(&self.write)
            .await
            .map_err(classify)?;
            Ok(r.rows_affected() == 1)
        })
        .await
    }

    async fn put_secret(
        &self,
        name: &str,
        sealed: &[u8],
        master_key_id: &str,
        now: i64,
    ) -> StoreResult<()> {
        retry_write("put_secret", || async move {
            sqlx::query(
                "INSERT INTO secrets (name, sealed, master_key_id, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (name) DO UPDATE SET sealed = excluded.sealed, master_key_id = excluded.master_key_id",
            )
            .bind(name)
            .bind(sealed.to_vec())
            .bind(master_key_id)
            .bind(now)
            .execute(&self.write)
            .await
            .map_err(classify)?;
            Ok(())
        })
        .await
    }

    async fn sealed_counts(&self) -> StoreResult<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT master_key_id, COUNT(*) AS n FROM (
                SELECT master_key_id FROM key_versions
                UNION ALL SELECT master_key_id FROM import_tokens
                UNION ALL SELECT master_key_id FROM secrets WHERE master_key_id <> '') AS s
             GROUP BY master_key_id ORDER BY master_key_id",
        )
        .fetch_all(&self.read)
        .await
        .map_err(classify)?;
        rows.iter()
            .map(|r| Ok((get::<String>(r, "master_key_id")?, get::<i64>(r, "n")?)))
            .collect()
    }

    async fn sealed_batch(&self, keep: &str, limit: i64) -> StoreResult<Vec<SealedRow>> {
        let rows = sqlx::query(
            "SELECT * FROM (
                SELECT 'v' AS kind, instance_id AS a, key_id AS b, id AS c, sealed, master_key_id
                  FROM key_versions WHERE master_key_id <> $1
                UNION ALL
                SELECT 't' AS kind, instance_id AS a, token_id AS b, '' AS c, sealed_private AS sealed, master_key_id
                  FROM import_tokens WHERE master_key_id <> $2
                UNION ALL
                SELECT 's' AS kind, '' AS a, name AS b, '' AS c, sealed, master_key_id
                  FROM secrets WHERE master_key_id <> '' AND master_key_id <> $3
             ) AS s LIMIT $4",
        )
        .bind(keep)
        .bind(keep)
        .bind(keep)
        .bind(limit)
        .fetch_all(&self.read)
        .await
        .map_err(classify)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let (a, b, c) = (
                get::<String>(r, "a")?,
                get::<String>(r, "b")?,
                get::<String>(r, "c")?,
            );
            let place = match get::<String>(r, "kind")?.as_str() {
                "v" => SealedPlace::KeyVersion {
                    instance: a,
                    key: b,
                    version: c,
                },
                "t" => SealedPlace::ImportToken {
                    instance: a,
                    token: b,
                },
                _ => SealedPlace::Secret { name: b },
            };
            out.push(SealedRow {
                place,
                sealed: get(r, "sealed")?,
                master_key_id: get(r, "master_key_id")?,
            });
        }
        Ok(out)
    }

    async fn reseal(
        &self,
        row: &SealedRow,
        sealed: &[u8],
        master_key_id: &str,
    ) -> StoreResult<bool> {
        retry_write("reseal", || async move {
            let q = match &row.place {
                SealedPlace::KeyVersion {
                    instance,
                    key,
                    version,
                } => sqlx::query(
                    "UPDATE key_versions SET sealed = $1, master_key_id = $2
                     WHERE id = $3 AND key_id = $4 AND instance_id = $5 AND master_key_id = $6 AND sealed = $7",
                )
                .bind(sealed.to_vec())
                .bind(master_key_id)
                .bind(version.as_str())
                .bind(key.as_str())
                .bind(instance.as_str()),
                SealedPlace::ImportToken { instance, token } => sqlx::query(
                    "UPDATE import_tokens SET sealed_private = $1, master_key_id = $2
                     WHERE instance_id = $3 AND token_id = $4 AND master_key_id = $5 AND sealed_private = $6",
                )
                .bind(sealed.to_vec())
                .bind(master_key_id)
                .bind(instance.as_str())
                .bind(token.as_str()),
                SealedPlace::Secret { name } => sqlx::query(
                    "UPDATE secrets SET sealed = $1, master_key_id = $2
                     WHERE name = $3 AND master_key_id <> '' AND master_key_id = $4 AND sealed = $5",
                )
                .bind(sealed.to_vec())
                .bind(master_key_id)
                .bind(name.as_str()),
            };
            let r = q
                .bind(row.master_key_id.as_str())
                .bind(row.sealed.clone())
                .execute(&self.write)
                .await
                .map_err(classify)?;
            Ok(r.rows_affected() == 1)
        })
        .await
    }

    async fn create_instance(&self, row: &InstanceRow) -> StoreResult<()> {
        retry_write("create_instance", || async move {
            let tag = self.tag_of(&rowtag::instance_input(row))?;
            sqlx::query(
                "INSERT INTO instances (id, name, created_at, auth_tag) VALUES ($1, $2, $3, $4)",
            )
            .bind(row.id.to_string())
            .bind(row.name.as_str())
            .bind(row.created_at)
            .bind(tag)
            .execute(&self.write)
            .await
            .map_err(classify)?;
            Ok(())
        })
        .await
    }

    async fn get_instance(&self, id: InstanceId) -> StoreResult<Option<InstanceRow>> {
        let row = sqlx::query("SELECT id, name, created_at, auth_tag FROM instances WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.read)
            .await
            .map_err(classify)?;
        Ok(match row {
            Some(r) => self.instance_checked(&r)?,
            None => None,
        })
    }

    async fn list_instances(&self) -> StoreResult<Vec<InstanceRow>> {
        let rows = sqlx::query(
            "SELECT id, name, created_at, auth_tag FROM instances ORDER BY created_at, id",
        )
        .fetch_all(&self.read)
        .await
        .map_err(classify)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.extend(self.instance_checked(r)?);
        }
        Ok(out)
    }

    async fn delete_instance(&self, id: InstanceId) -> StoreResult<()> {
        retry_write("delete_instance", || async move {
            let mut tx = self.write.begin().await.map_err(classify)?;
            let id_s = id.to_string();
            let live: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM keys WHERE instance_id = $1 AND state <> 5",
            )
            .bind(id_s.as_str())
            .fetch_one(&mut *tx)
            .await
            .map_err(classify)?;
            if live > 0 {
                return Err(StoreError::Conflict(
                    "instance has keys that are not deleted",
                ));
            }
            for stmt in [
                "DELETE FROM role_grants WHERE instance_id = $1",
                "DELETE FROM import_tokens WHERE instance_id = $1",
            ] {
                sqlx::query(stmt)
                    .bind(id_s.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
            }
            let r = sqlx::query("DELETE FROM instances WHERE id = $1")
                .bind(id_s.as_str())
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
            if r.rows_affected() == 0 {
                return Err(StoreError::NotFound);
            }
            tx.commit().await.map_err(classify)?;
            Ok(())
        })
        .await
    }

    async fn create_api_key(
        &self,
        principal: &PrincipalRow,
        key: &ApiKeyRow,
        key_hash: &[u8],
    ) -> StoreResult<()> {
        retry_write("create_api_key", || async move {
            let mut tx = self.write.begin().await.map_err(classify)?;
            sqlx::query(
                "INSERT INTO principals (iam_id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT (iam_id) DO NOTHING",
            )
            .bind(principal.iam_id.as_str())
            .bind(principal.name.as_str())
            .bind(principal.created_at)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
            let tag = self.tag_of(&rowtag::api_key_input(key, key_hash))?;
            sqlx::query(
                "INSERT INTO api_keys (id, iam_id, key_hash, name, created_at, auth_tag) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(key.id.as_str())
            .bind(key.iam_id.as_str())
            .bind(key_hash.to_vec())
            .bind(key.name.as_str())
            .bind(key.created_at)
            .bind(tag)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
            tx.commit().await.map_err(classify)?;
            Ok(())
        })
        .await
    }

    async fn find_api_key(&self, key_hash: &[u8]) -> StoreResult<Option<ApiKeyRow>> {
        let row = sqlx::query(&format!(
            "SELECT {API_KEY_COLS} FROM api_keys WHERE key_hash = $1"
        ))
        .bind(key_hash.to_vec())
        .fetch_optional(&self.read)
        .await
        .map_err(classify)?;
        Ok(match row {
            Some(r) => self.api_key_checked(&r)?,
            None => None,
        })
    }

    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {API_KEY_COLS} FROM api_keys ORDER BY created_at, id"
        ))
        .fetch_all(&self.read)
        .await
        .map_err(classify)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.extend(self.api_key_checked(r)?);
        }
        Ok(out)
    }

    async fn delete_api_key(&self, id: &str) -> StoreResult<()> {
        retry_write("delete_api_key", || async move {
            let r = sqlx::query("DELETE FROM api_keys WHERE id = $1")
                .bind(id)
                .execute(&self.write)
                .await
                .map_err(classify)?;
            if r.rows_affected() == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })
        .await
    }

    async fn api_key_exists(&self, id: &str) -> StoreResult<bool> {
        // A row that fails its check does not exist: a deleted key re-inserted into the
        // database brings its tokens back only as a replay of its genuine row.
        let row = sqlx::query(&format!(
            "SELECT {API_KEY_COLS} FROM api_keys WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.read)
        .await
        .map_err(classify)?;
        Ok(match row {
            Some(r) => self.api_key_checked(&r)?.is_some(),
            None => false,
        })
    }

    async fn principal_exists(&self, iam_id: &str) -> StoreResult<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM principals WHERE iam_id = $1")
            .bind(iam_id)
            .fetch_one(&self.read)
            .await
            .map_err(classify)?;
        Ok(n > 0)
    }

    async fn grant(&self, g: &GrantRow) -> StoreResult<()> {
        retry_write("grant", || async move {
            // Granting again re-stamps the row (and replaces a tag that no longer verifies).
            let tag = self.tag_of(&rowtag::grant_input(g))?;
            sqlx::query(
                "INSERT INTO role_grants (instance_id, iam_id, role, created_at, auth_tag) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (instance_id, iam_id, role) DO UPDATE SET created_at = excluded.created_at, auth_tag = excluded.auth_tag",
            )
            .bind(g.instance_id.to_string())
            .bind(g.iam_id.as_str())
            .bind(g.role.as_str())
            .bind(g.created_at)
            .bind(tag)
            .execute(&self.write)
            .await
            .map_err(classify)?;
            Ok(())
        })
        .await
    }

    async fn revoke(&self, instance: InstanceId, iam_id: &str, role: Role) -> StoreResult<()> {
        retry_write("revoke", || async move {
            let r = sqlx::query(
                "DELETE FROM role_grants WHERE instance_id = $1 AND iam_id = $2 AND role = $3",
            )
            .bind(instance.to_string())
            .bind(iam_id)
            .bind(role.as_str())
            .execute(&self.write)
            .await
            .map_err(classify)?;
            if r.rows_affected() == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })
        .await
    }

    async fn roles_of(&self, instance: InstanceId, iam_id: &str) -> StoreResult<Vec<Role>> {
        let rows = sqlx::query(
            "SELECT instance_id, iam_id, role, created_at, auth_tag FROM role_grants WHERE instance_id = $1 AND iam_id = $2",
        )
        .bind(instance.to_string())
        .bind(iam_id)
        .fetch_all(&self.read)
        .await
        .map_err(classify)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.extend(self.grant_checked(r)?.map(|g| g.role));
        }
        Ok(out)
    }

    async fn list_grants(&self) -> StoreResult<Vec<GrantRow>> {
        let rows = sqlx::query(
            "SELECT instance_id, iam_id, role, created_at, auth_tag FROM role_grants ORDER BY instance_id, iam_id, role",
        )
        .fetch_all(&self.read)
        .await
        .map_err(classify)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.extend(self.grant_checked(r)?);
        }
        Ok(out)
    }

    async fn insert_key(
        &self,
        key: &KeyRow,
        version: &VersionRow,
        guard: Option<TokenGuard>,
    ) -> StoreResult<()> {
        retry_write("insert_key", || async move {
            let mut tx = self.write.begin().await.map_err(classify)?;
            if let Some(g) = guard {
                check_guard(&mut tx, key.instance_id, g).await?;
            }
            let tag = self.tag_of(&rowtag::key_input(key))?;
            sqlx::query(&format!(
                "INSERT INTO keys ({KEY_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,$22)"
            ))
            .bind(key.id.to_string())
            .bind(key.instance_id.to_string())
            .bind(key.name.as_str())
            .bind(key.description.clone())
            .bind(json_text(&key.tags)?)
            .bind(key.state.code())
            .bind(i64::from(key.extractable))
            .bind(i64::from(key.imported))
            .bind(key.key_ring_id.as_str())
            .bind(key.expiration_date)
            .bind(key.created_at)
            .bind(key.created_by.as_str())
            .bind(key.updated_at)
            .bind(key.last_rotate_date)
            .bind(key.deletion_date)
            .bind(key.deleted_by.clone())
            .bind(key.state_changed_at)
            .bind(key.current_version.to_string())
            .bind(json_text(&key.attrs)?)
            .bind(key.row_version)
            .bind(key.next_rotation_at)
            .bind(tag)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
            self.insert_version(&mut tx, version).await?;
            tx.commit().await.map_err(classify)?;
            Ok(())
        })
        .await
    }

    async fn get_key(&self, instance: InstanceId, id: KeyId) -> StoreResult<Option<KeyRow>> {
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLS} FROM keys WHERE instance_id = $1 AND id = $2"
        ))
        .bind(instance.to_string())
        .bind(id.to_string())
        .fetch_optional(&self.read)
        .await
        .map_err(classify)?;
        row.as_ref().map(|r| self.key_checked(r)).transpose()
    }

    async fn list_keys(&self, instance: InstanceId, q: &KeyQuery) -> StoreResult<Vec<KeyRow>> {
        let (filter, binds) = key_filter(q);
        let n = binds.len() + 2;
        let sql = format!(
            "SELECT {KEY_COLS} FROM keys WHERE instance_id = $1{filter} ORDER BY {} LIMIT ${} OFFSET ${}",
            sort_sql(q),
            n + 1,
            n + 2
        );
        let mut query = sqlx::query(&sql).bind(instance.to_string()).bind(q.now);
        for b in binds {
            query = match b {
                Bind::Int(i) => query.bind(i),
                Bind::Text(t) => query.bind(t),
            };
        }
        let rows = query
            .bind(q.limit)
            .bind(q.offset)
            .fetch_all(&self.read)
            .await
            .map_err(classify)?;
        rows.iter().map(|r| self.key_checked(r)).collect()
    }

    async fn count_keys(&self, instance: InstanceId, q: &KeyQuery) -> StoreResult<i64> {
        let (filter, binds) = key_filter(q);
        let sql = format!("SELECT COUNT(*) FROM keys WHERE instance_id = $1{filter}");
        let mut query = sqlx::query_scalar::<_, i64>(&sql)
            .bind(instance.to_string())
            .bind(q.now);
        for b in binds {
            query = match b {
                Bind::Int(i) => query.bind(i),
                Bind::Text(t) => query.bind(t),
            };
        }
        query.fetch_one(&self.read).await.map_err(classify)
    }

    async fn update_key(&self, key: &KeyRow) -> StoreResult<()> {
        retry_write("update_key", || async move {
            let mut tx = self.write.begin().await.map_err(classify)?;
            self.update_key_in(&mut tx, key).await?;
            tx.commit().await.map_err(classify)?;
            Ok(())
        })
        .await
    }

    async fn rotate_key(
        &self,
        key: &KeyRow,
        version: &VersionRow,
        guard: Option<TokenGuard>,
    ) -> StoreResult<()> {
        retry_write("rotate_key", || async move {
            let mut tx = self.write.begin().await.map_err(classify)?;
            if let Some(g) = guard {
                check_guard(&mut tx, key.instance_id, g).await?;
            }
            self.update_key_in(&mut tx, key).await?;
            self.insert_version(&mut tx, version).await?;
            tx.commit().await.map_err(classify)?;
            Ok(())
        })
        .await
    }

    async fn versions(&self, instance: InstanceId, key: KeyId) -> StoreResult<Vec<VersionRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {VERSION_COLS} FROM key_versions WHERE instance_id = $1 AND key_id = $2 ORDER BY seq DESC"
        ))
        .bind(instance.to_string())
        .bind(key.to_string())
        .fetch_all(&self.read)
        .await
        .map_err(classify)?;
        rows.iter().map(|r| self.version_checked(r)).collect()
    }

    async fn purge_key(&self, key: &KeyRow) -> StoreResult<()> {
        retry_write("purge_key", || self.purge_key_impl(key)).await
    }

    async fn due_rotations(&self, now: i64, limit: i64) -> StoreResult<Vec<KeyRow>> {
        self.keys_where(
            "next_rotation_at IS NOT NULL AND next_rotation_at <= $1 AND state IN (1, 3)",
            now,
            limit,
        )
        .await
    }

    async fn due_purges(&self, deleted_before: i64, limit: i64) -> StoreResult<Vec<KeyRow>> {
        self.keys_where("state = 5 AND deletion_date < $1", deleted_before, limit)
            .await
    }

    async fn create_alias(&self, row: &AliasRow) -> StoreResult<()> {
        retry_write("create_alias", || self.create_alias_impl(row)).await
    }

    async fn delete_alias(&self, instance: InstanceId, alias: &str, key: KeyId) -> StoreResult<()> {
        retry_write("delete_alias", || {
            self.delete_alias_impl(instance, alias, key)
        })
        .await
    }

    async fn aliases_of(&self, instance: InstanceId, key: KeyId) -> StoreResult<Vec<AliasRow>> {
        self.aliases_of_impl(instance, key).await
    }

    async fn aliases_of_keys(
        &self,
        instance: InstanceId,
        keys: &[KeyId],
    ) -> StoreResult<Vec<AliasRow>> {
        self.aliases_of_keys_impl(instance, keys).await
    }

    async fn resolve_alias(&self, instance: InstanceId, alias: &str) -> StoreResult<Option<KeyId>> {
        self.resolve_alias_impl(instance, alias).await
    }

    async fn create_key_ring(&self, row: &KeyRingRow) -> StoreResult<()> {
        retry_write("create_key_ring", || self.create_key_ring_impl(row)).await
    }

    async fn list_key_rings(&self, instance: InstanceId) -> StoreResult<Vec<KeyRingRow>> {
        self.list_key_rings_impl(instance).await
    }

    async fn delete_key_ring(
        &self,
        instance: InstanceId,
        id: &str,
        force: bool,
    ) -> StoreResult<()> {
        retry_write("delete_key_ring", || {
            self.delete_key_ring_impl(instance, id, force)
        })
        .await
    }

    async fn put_instance_policy(&self, row: &PolicyRow) -> StoreResult<()> {
        retry_write("put_instance_policy", || self.put_instance_policy_impl(row)).await
    }

    async fn instance_policies(&self, instance: InstanceId) -> StoreResult<Vec<PolicyRow>> {
        self.instance_policies_impl(instance).await
    }

    async fn add_registration(&self, row: &RegistrationRow) -> StoreResult<()> {
        retry_write("add_registration", || self.add_registration_impl(row)).await
    }

    async fn registrations(
        &self,
        instance: InstanceId,
        key: Option<KeyId>,
    ) -> StoreResult<Vec<RegistrationRow>> {
        self.registrations_impl(instance, key).await
    }

    async fn put_token(&self, t: &TokenRow) -> StoreResult<()> {
        retry_write("put_token", || async move {
            let tag = self.tag_of(&rowtag::token_input(t))?;
            sqlx::query(&format!(
                "INSERT INTO import_tokens ({TOKEN_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)
                 ON CONFLICT (instance_id) DO UPDATE SET token_id = excluded.token_id,
                   created_at = excluded.created_at, expires_at = excluded.expires_at,
                   expiration_secs = excluded.expiration_secs, max_retrievals = excluded.max_retrievals,
                   remaining = excluded.remaining, nonce = excluded.nonce, public_pem = excluded.public_pem,
                   sealed_private = excluded.sealed_private, master_key_id = excluded.master_key_id,
                   auth_tag = excluded.auth_tag"
            ))
            .bind(t.instance_id.to_string())
            .bind(t.token_id.to_string())
            .bind(t.created_at)
            .bind(t.expires_at)
            .bind(t.expiration_secs)
            .bind(t.max_retrievals)
            .bind(t.remaining)
            .bind(t.nonce.clone())
            .bind(t.public_pem.as_str())
            .bind(t.sealed_private.clone())
            .bind(t.master_key_id.as_str())
            .bind(tag)
            .execute(&self.write)
            .await
            .map_err(classify)?;
            Ok(())
        })
        .await
    }

    async fn get_token(&self, instance: InstanceId) -> StoreResult<Option<TokenRow>> {
        let row = sqlx::query(&format!(
            "SELECT {TOKEN_COLS} FROM import_tokens WHERE instance_id = $1"
        ))
        .bind(instance.to_string())
        .fetch_optional(&self.read)
        .await
        .map_err(classify)?;
        row.as_ref().map(|r| self.token_checked(r)).transpose()
    }

    async fn take_token_retrieval(
        &self,
        instance: InstanceId,
        now: i64,
    ) -> StoreResult<Option<TokenRow>> {
        retry_write("take_token_retrieval", || async move {
            let row = sqlx::query(&format!(
                "UPDATE import_tokens SET remaining = remaining - 1
                 WHERE instance_id = $1 AND remaining > 0 AND expires_at > $2
                 RETURNING {TOKEN_COLS}"
            ))
            .bind(instance.to_string())
            .bind(now)
            // `fetch_all`, not `fetch_optional`: the whole response must be read. An error the
            // database reports after the returned row (a serialization failure at the
            // statement's implicit commit) means the decrement did not happen; stopping after
            // the first row would hand out a retrieval that was never counted.
            .fetch_all(&self.write)
            .await
            .map_err(classify)?;
            row.first().map(|r| self.token_checked(r)).transpose()
        })
        .await
    }

    async fn import_failures(&self, instance: InstanceId, token: TokenId) -> StoreResult<i64> {
        let n: Option<i64> = sqlx::query_scalar(
            "SELECT CASE WHEN import_failures_token = $2 THEN import_failures ELSE 0 END
             FROM import_tokens WHERE instance_id = $1",
        )
        .bind(instance.to_string())
        .bind(token.to_string())
        .fetch_optional(&self.read)
        .await
        .map_err(classify)?;
        Ok(n.unwrap_or(0))
    }

    async fn record_import_failure(
        &self,
        instance: InstanceId,
        token: TokenId,
    ) -> StoreResult<i64> {
        retry_write("record_import_failure", || async move {
            // `fetch_all`: the statement's own completion (where a serializable database
            // reports a conflict) is read before the count is trusted.
            let n: Vec<i64> = sqlx::query_scalar(
                "UPDATE import_tokens SET
                   import_failures = CASE WHEN import_failures_token = $2 THEN import_failures + 1 ELSE 1 END,
                   import_failures_token = $2
                 WHERE instance_id = $1 AND token_id = $2
                 RETURNING import_failures",
            )
            .bind(instance.to_string())
            .bind(token.to_string())
            .fetch_all(&self.write)
            .await
            .map_err(classify)?;
            Ok(n.first().copied().unwrap_or(0))
        })
        .await
    }

    async fn append_audit(&self, rows: &[AuditRow]) -> StoreResult<()> {
        retry_write("append_audit", || self.append_audit_impl(rows)).await
    }

    async fn audit_records(&self, q: &AuditQuery) -> StoreResult<Vec<AuditEntry>> {
        self.audit_records_impl(q).await
    }
}

type Tx<'a> = sqlx::Transaction<'a, sqlx::Any>;

/// Holds the instance's token row for the rest of the transaction (a no-op update takes its
/// row lock on PostgreSQL; SQLite has a single writer) and fails unless it is still `g.token_id`
/// and unexpired.
async fn check_guard(tx: &mut Tx<'_>, instance: InstanceId, g: TokenGuard) -> StoreResult<()> {
    let r = sqlx::query(
        "UPDATE import_tokens SET remaining = remaining WHERE instance_id = $1 AND token_id = $2 AND expires_at > $3",
    )
    .bind(instance.to_string())
    .bind(g.token_id.to_string())
    .bind(g.now)
    .execute(&mut **tx)
    .await
    .map_err(classify)?;
    if r.rows_affected() == 1 {
        Ok(())
    } else {
        Err(StoreError::Conflict("import token"))
    }
}

impl SqlStore {
    async fn insert_version(&self, tx: &mut Tx<'_>, v: &VersionRow) -> StoreResult<()> {
        let tag = self.tag_of(&rowtag::version_input(v))?;
        sqlx::query(&format!(
            "INSERT INTO key_versions ({VERSION_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)"
        ))
        .bind(v.id.to_string())
        .bind(v.key_id.to_string())
        .bind(v.instance_id.to_string())
        .bind(v.seq)
        .bind(v.created_at)
        .bind(v.sealed.clone())
        .bind(v.master_key_id.as_str())
        .bind(tag)
        .execute(&mut **tx)
        .await
        .map_err(classify)?;
        Ok(())
    }

    async fn update_key_in(&self, tx: &mut Tx<'_>, key: &KeyRow) -> StoreResult<()> {
        let tag = self.tag_of(&rowtag::key_input(key))?;
        let r = sqlx::query(
            "UPDATE keys SET name = $3, description = $4, tags = $5, state = $6, extractable = $7,
           imported = $8, key_ring_id = $9, expiration_date = $10, updated_at = $11,
           last_rotate_date = $12, deletion_date = $13, deleted_by = $14, state_changed_at = $15,
           current_version = $16, attrs = $17, next_rotation_at = $19, auth_tag = $20,
           row_version = row_version + 1
         WHERE instance_id = $1 AND id = $2 AND row_version = $18",
        )
        .bind(key.instance_id.to_string())
        .bind(key.id.to_string())
        .bind(key.name.as_str())
        .bind(key.description.clone())
        .bind(json_text(&key.tags)?)
        .bind(key.state.code())
        .bind(i64::from(key.extractable))
        .bind(i64::from(key.imported))
        .bind(key.key_ring_id.as_str())
        .bind(key.expiration_date)
        .bind(key.updated_at)
        .bind(key.last_rotate_date)
        .bind(key.deletion_date)
        .bind(key.deleted_by.clone())
        .bind(key.state_changed_at)
        .bind(key.current_version.to_string())
        .bind(json_text(&key.attrs)?)
        .bind(key.row_version)
        .bind(key.next_rotation_at)
        .bind(tag)
        .execute(&mut **tx)
        .await
        .map_err(classify)?;
        if r.rows_affected() == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict("key changed"))
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::sync::Arc;

    /// A real HMAC row authenticator for store tests (the service's in miniature).
    #[derive(Debug)]
    pub(crate) struct TestAuth {
        key: keyward_crypto::rowauth::RowAuthKey,
        pub(crate) untagged: std::sync::atomic::AtomicBool,
    }

    impl RowAuth for TestAuth {
        fn tag(&self, input: &[u8]) -> Vec<u8> {
            self.key.tag(input)
        }
        fn verify(&self, input: &[u8], tag: &[u8]) -> bool {
            self.key.verify(input, tag)
        }
        fn accept_untagged(&self) -> bool {
            self.untagged.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    /// Installs a [`TestAuth`] into `store` and returns it.
    pub(crate) fn install_test_auth(store: &SqlStore) -> Arc<TestAuth> {
        let key = keyward_crypto::rowauth::RowAuthKey::from_secret(
            &keyward_crypto::SecretBytes::from_vec(vec![3; 32]),
        )
        .unwrap();
        let a = Arc::new(TestAuth {
            key,
            untagged: Default::default(),
        });
        store.install_row_auth(a.clone());
        a
    }

    /// A fresh database on the server at `KEYWARD_TEST_DATABASE_URL` (`None` when unset, and
    /// the caller skips; a failure instead under `KEYWARD_REQUIRE_SERVICES=1`, as in CI), with
    /// `settings` (`ALTER DATABASE … SET …` clauses) applied.
    pub(crate) async fn fresh_postgres(settings: &[&str]) -> Option<String> {
        use sqlx::Connection;
        let Ok(base) = std::env::var("KEYWARD_TEST_DATABASE_URL") else {
            let required =
                std::env::var("KEYWARD_REQUIRE_SERVICES").is_ok_and(|v| !v.is_empty() && v != "0");
            assert!(
                !required,
                "PostgreSQL is missing (KEYWARD_TEST_DATABASE_URL unset), and \
                 KEYWARD_REQUIRE_SERVICES is set: a test may not be skipped here"
            );
            return None;
        };
        let name = format!("kw_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&base).await.unwrap();
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap();
        for s in settings {
            conn.execute(format!("ALTER DATABASE {name} SET {s}").as_str())
                .await
                .unwrap();
        }
        conn.close().await.unwrap();
        let (prefix, _) = base.rsplit_once('/').unwrap();
        Some(format!("{prefix}/{name}"))
    }

    /// Drops a database made by [`fresh_postgres`] (closing its other connections).
    pub(crate) async fn drop_postgres(url: &str) {
        use sqlx::Connection;
        let Ok(base) = std::env::var("KEYWARD_TEST_DATABASE_URL") else {
            return;
        };
        let (_, name) = url.rsplit_once('/').unwrap();
        let name = name.split('?').next().unwrap();
        let mut conn = sqlx::PgConnection::connect(&base).await.unwrap();
        let _ = conn
            .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
            .await;
        let _ = conn.close().await;
    }

    async fn applied_versions(store: &SqlStore) -> Vec<(i64, i64)> {
        sqlx::query("SELECT version, COUNT(*) AS n FROM schema_migrations GROUP BY version ORDER BY version")
            .fetch_all(&store.read)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get::<i64, _>("version"), r.get::<i64, _>("n")))
            .collect()
    }

    async fn race_connects(url: &str, nodes: usize) {
        let mut tasks = Vec::new();
        for _ in 0..nodes {
            let url = DatabaseUrl::new(url);
            tasks.push(tokio::spawn(async move { SqlStore::connect(&url).await }));
        }
        let mut stores = Vec::new();
        for t in tasks {
            stores.push(t.await.unwrap().unwrap());
        }
        let expected: Vec<(i64, i64)> = POSTGRES_MIGRATIONS.iter().map(|(v, _)| (*v, 1)).collect();
        for s in &stores {
            assert_eq!(applied_versions(s).await, expected);
            // The schema is complete: the newest migration's column is there.
            let n: i64 = sqlx::query_scalar("SELECT COUNT(next_rotation_at) FROM keys")
                .fetch_one(&s.read)
                .await
                .unwrap();
            assert_eq!(n, 0);
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
                .fetch_one(&s.read)
                .await
                .unwrap();
            assert_eq!(n, 0);
        }
        for s in stores {
            s.close().await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn nodes_starting_at_once_migrate_once_on_postgres() {
        for _ in 0..3 {
            let Some(url) = fresh_postgres(&[]).await else {
                eprintln!("KEYWARD_TEST_DATABASE_URL unset: PostgreSQL migration race not run");
                return;
            };
            race_connects(&url, 8).await;
            drop_postgres(&url).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn nodes_starting_at_once_migrate_once_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("kw.db").display());
        race_connects(&url, 4).await;
    }

    /// Under `SERIALIZABLE` (what CockroachDB always runs) concurrent writers of one row get
    /// SQLSTATE 40001; the retry helper must turn that into the same outcomes as under
    /// `READ COMMITTED`, so the whole conformance suite passes unchanged.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn conformance_suite_passes_under_serializable_isolation() {
        let Some(url) = fresh_postgres(&["default_transaction_isolation = 'serializable'"]).await
        else {
            eprintln!("KEYWARD_TEST_DATABASE_URL unset: serializable suite not run");
            return;
        };
        let store = SqlStore::connect(&DatabaseUrl::new(url.clone()))
            .await
            .unwrap();
        let iso: String = sqlx::query_scalar("SHOW transaction_isolation")
            .fetch_one(&store.read)
            .await
            .unwrap();
        assert_eq!(iso, "serializable");
        install_test_auth(&store);
        let before = serialization_retries();
        crate::testsuite::run_all(Arc::new(store.clone())).await;
        assert!(
            serialization_retries() > before,
            "the suite never hit a serialization failure"
        );
        store.close().await;
        drop_postgres(&url).await;
    }

    /// Racing compare-and-set updates of one key under `SERIALIZABLE`: exactly one wins, the
    /// others see `Conflict` (after their serialization failures were retried), none errors.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racing_key_updates_under_serializable_isolation() {
        let Some(url) = fresh_postgres(&["default_transaction_isolation = 'serializable'"]).await
        else {
            eprintln!("KEYWARD_TEST_DATABASE_URL unset: serializable race not run");
            return;
        };
        let store = Arc::new(
            SqlStore::connect(&DatabaseUrl::new(url.clone()))
                .await
                .unwrap(),
        );
        install_test_auth(&store);
        let inst = crate::testsuite::instance("race");
        store.create_instance(&inst).await.unwrap();
        for round in 0..5 {
            let (key, version) = crate::testsuite::key_row(inst.id, &format!("k{round}"));
            store.insert_key(&key, &version, None).await.unwrap();
            let barrier = Arc::new(tokio::sync::Barrier::new(8));
            let mut tasks = Vec::new();
            for i in 0..8 {
                let (store, barrier, mut row) = (store.clone(), barrier.clone(), key.clone());
                tasks.push(tokio::spawn(async move {
                    row.name = format!("writer-{i}");
                    barrier.wait().await;
                    store.update_key(&row).await
                }));
            }
            let (mut ok, mut conflict) = (0, 0);
            for t in tasks {
                match t.await.unwrap() {
                    Ok(()) => ok += 1,
                    Err(StoreError::Conflict(_)) => conflict += 1,
                    Err(e) => panic!("unexpected error: {e:?}"),
                }
            }
            assert_eq!((ok, conflict), (1, 7));
            let stored = store.get_key(inst.id, key.id).await.unwrap().unwrap();
            assert_eq!(stored.row_version, key.row_version + 1);
        }
        store.close().await;
        drop_postgres(&url).await;
    }

    /// A failed attempt that is not a serialization failure is returned at once; a
    /// serialization failure is retried, boundedly.
    #[tokio::test]
    async fn retry_write_retries_only_serialization_failures() {
        let calls = std::sync::atomic::AtomicU32::new(0);
        let r: StoreResult<()> = retry_write("test", || async {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err(StoreError::Conflict("no"))
        })
        .await;
        assert!(matches!(r, Err(StoreError::Conflict(_))));
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);

        // A real 40001 needs a server; without one, check the bound with a synthetic loop.
        let Some(url) = fresh_postgres(&[]).await else {
            return;
        };
        let store = SqlStore::connect(&DatabaseUrl::new(url.clone()))
            .await
            .unwrap();
        let calls = std::sync::atomic::AtomicU32::new(0);
        let started = std::time::Instant::now();
        let r: StoreResult<()> = retry_write("test", || async {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            sqlx::query("DO $$ BEGIN RAISE EXCEPTION 'synthetic' USING ERRCODE = '40001'; END $$")
                .execute(&store.write)
                .await
                .map_err(classify)?;
            Ok(())
        })
        .await;
        assert!(r.as_ref().is_err_and(is_serialization_failure), "{r:?}");
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::SeqCst),
            WRITE_ATTEMPTS
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        store.close().await;
        drop_postgres(&url).await;
    }

    async fn uses_tls(store: &SqlStore) -> bool {
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&store.read)
            .await
            .unwrap()
    }

    /// `sslmode` in the URL decides TLS; with `KEYWARD_TEST_DATABASE_CA` (the server's CA or
    /// self-signed certificate, issued for `localhost`) certificate and host checks are tested.
    #[tokio::test]
    async fn tls_follows_the_url() {
        let Some(url) = fresh_postgres(&[]).await else {
            eprintln!("KEYWARD_TEST_DATABASE_URL unset: TLS test not run");
            return;
        };
        let with = |q: &str| DatabaseUrl::new(format!("{url}?{q}"));
        let plain = SqlStore::connect(&with("sslmode=disable")).await.unwrap();
        assert!(!uses_tls(&plain).await);
        plain.close().await;
        let tls = SqlStore::connect(&with("sslmode=require")).await.unwrap();
        assert!(uses_tls(&tls).await);
        tls.close().await;
        let Ok(ca) = std::env::var("KEYWARD_TEST_DATABASE_CA") else {
            eprintln!("KEYWARD_TEST_DATABASE_CA unset: certificate verification not tested");
            drop_postgres(&url).await;
            return;
        };
        let (_, db) = url.rsplit_once('/').unwrap();
        let host_url = |host: &str, mode: &str| {
            let rest = url.split_once('@').unwrap().1; // host:port/db
            let port = rest
                .split_once('/')
                .unwrap()
                .0
                .rsplit_once(':')
                .map(|(_, p)| p)
                .unwrap_or("5432");
            let user = url.split_once("://").unwrap().1.split_once('@').unwrap().0;
            DatabaseUrl::new(format!(
                "postgres://{user}@{host}:{port}/{db}?sslmode={mode}&sslrootcert={ca}"
            ))
        };
        let verified = SqlStore::connect(&host_url("localhost", "verify-full"))
            .await
            .unwrap();
        assert!(uses_tls(&verified).await);
        verified.close().await;
        // The certificate names `localhost`, not 127.0.0.1: full verification must refuse.
        let wrong_host = SqlStore::connect(&host_url("127.0.0.1", "verify-full")).await;
        assert!(
            wrong_host.is_err(),
            "verify-full accepted a certificate for another host"
        );
        // verify-ca checks the chain only. (With sqlx 0.8.6 and rustls 0.23.3x it still refuses a
        // host name mismatch: sqlx matches the older `NotValidForName` error only. See
        // docs/postgres.md: use verify-full.)
        let ca_only = SqlStore::connect(&host_url("localhost", "verify-ca"))
            .await
            .unwrap();
        assert!(uses_tls(&ca_only).await);
        ca_only.close().await;
        drop_postgres(&url).await;
    }

    #[test]
    fn database_url_debug_masks_password() {
        let u = DatabaseUrl::new("postgres://kw:s3cr3t-pw@db.example:5432/keyward");
        assert!(!format!("{u:?}").contains("s3cr3t-pw"));
        assert!(!u.to_string().contains("s3cr3t-pw"));
        assert!(format!("{u:?}").contains("kw:****@db.example"));
        assert_eq!(
            u.expose(),
            "postgres://kw:s3cr3t-pw@db.example:5432/keyward"
        );
    }

    #[test]
    fn placeholders_are_numbered_in_one_pass_and_deduplicated() {
        let q = KeyQuery {
            states: [KeyState::Active, KeyState::Destroyed]
                .into_iter()
                .cycle()
                .take(10_000)
                .collect(),
            extractable: Some(true),
            key_ring_id: Some("r".into()),
            sort: vec![(SortField::State, true), (SortField::Id, false)]
                .into_iter()
                .cycle()
                .take(10_000)
                .collect(),
            ..KeyQuery::default()
        };
        let (sql, binds) = key_filter(&q);
        assert!(sql.contains("IN ($3,$4)"), "{sql}");
        assert!(
            sql.contains("extractable = $5") && sql.contains("key_ring_id = $6"),
            "{sql}"
        );
        assert_eq!(binds.len(), 4);
        assert!(sql.contains("<= $2"));
        let sort = sort_sql(&q);
        assert_eq!(sort.matches("DESC").count(), 1, "{sort}");
        assert_eq!(sort.matches("id ASC").count(), 1, "{sort}");
        assert!(!sort.ends_with(", "), "{sort}");
    }

    #[tokio::test]
    async fn sqlite_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("kw.db");
        let url = format!("sqlite://{}?mode=rwc", db.display());
        let store = SqlStore::connect(&DatabaseUrl::new(url)).await.unwrap();
        store
            .put_secret_if_absent("x", &[1], "mk", 1)
            .await
            .unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&db), 0o600);
        let wal = dir.path().join("kw.db-wal");
        assert!(wal.exists());
        assert_eq!(mode(&wal), 0o600);
        assert_eq!(mode(&dir.path().join("kw.db-shm")), 0o600);
        store.close().await;
    }
}

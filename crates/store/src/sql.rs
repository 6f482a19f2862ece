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

use crate::{
    AliasRow, ApiKeyRow, GrantRow, InstanceRow, KeyQuery, KeyRingRow, KeyRow, PolicyRow,
    PrincipalRow, RegistrationRow, SortField, Store, StoreError, StoreResult, TokenGuard,
    TokenRow, VersionRow,
};

const SQLITE_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../migrations/sqlite/0002_lifecycle.sql")),
];
const POSTGRES_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/postgres/0001_init.sql")),
    (2, include_str!("../migrations/postgres/0002_lifecycle.sql")),
];

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
            } else if code.starts_with("57P") || code.starts_with("08") {
                StoreError::Unavailable(e)
            } else {
                StoreError::Backend(e)
            }
        }
        _ => StoreError::Backend(e),
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
                }
            }
            Backend::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect(url.expose())
                    .await
                    .map_err(classify)?;
                Self {
                    backend,
                    read: pool.clone(),
                    write: pool,
                    url: url.clone(),
                }
            }
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> StoreResult<()> {
        let migrations = match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS,
            Backend::Postgres => POSTGRES_MIGRATIONS,
        };
        self.write
            .execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
            )
            .await
            .map_err(classify)?;
        let known = migrations.iter().map(|(v, _)| *v).max().unwrap_or(0);
        for (version, sql) in migrations {
            let mut tx = self.write.begin().await.map_err(classify)?;
            let done: Option<i64> =
                sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                    .bind(*version)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(classify)?;
            if done.is_some() {
                tx.rollback().await.map_err(classify)?;
                continue;
            }
            for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                sqlx::query(stmt).execute(&mut *tx).await.map_err(classify)?;
            }
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
                .bind(*version)
                .bind(time::OffsetDateTime::now_utc().unix_timestamp())
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
            tx.commit().await.map_err(classify)?;
        }
        let newest: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations")
            .fetch_one(&self.read)
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

    /// Closes both pools.
    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
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

pub(crate) fn uuid_col<T>(row: &AnyRow, col: &str, f: fn(&str) -> Result<T, keyward_domain::DomainError>) -> StoreResult<T> {
    let s: String = get(row, col)?;
    f(&s).map_err(|_| corrupt(col))
}

pub(crate) const KEY_COLS: &str = "id, instance_id, name, description, tags, state, extractable, imported, key_ring_id, expiration_date, created_at, created_by, updated_at, last_rotate_date, deletion_date, deleted_by, state_changed_at, current_version, attrs, row_version, next_rotation_at";

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

const VERSION_COLS: &str = "id, key_id, instance_id, seq, created_at, sealed, master_key_id";

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

const TOKEN_COLS: &str = "instance_id, token_id, created_at, expires_at, expiration_secs, max_retrievals, remaining, nonce, public_pem, sealed_private, master_key_id";

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

fn api_key_from_row(row: &AnyRow) -> StoreResult<ApiKeyRow> {
    Ok(ApiKeyRow {
        id: get(row, "id")?,
        iam_id: get(row, "iam_id")?,
        name: get(row, "name")?,
        created_at: get(row, "created_at")?,
    })
}

fn json_text<T: serde::Serialize>(v: &T) -> StoreResult<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The WHERE clause (after `instance_id = $1`) and binds for a key query. Only fixed SQL
/// fragments are concatenated; every value is bound.
fn key_filter(q: &KeyQuery) -> (String, Vec<i64>, Option<String>) {
    let mut sql = String::new();
    let mut ints = Vec::new();
    let states: Vec<i64> = if q.states.is_empty() {
        vec![0, 1, 2, 3]
    } else {
        q.states.iter().map(|s| s.code()).collect()
    };
    sql.push_str(" AND state IN (");
    for (i, s) in states.iter().enumerate() {
        if i > 0 {
            sql.push(',');
        }
        ints.push(*s);
        sql.push_str(&format!("$S{}", ints.len()));
    }
    sql.push(')');
    if let Some(e) = q.extractable {
        ints.push(i64::from(e));
        sql.push_str(&format!(" AND extractable = $S{}", ints.len()));
    }
    let ring = q.key_ring_id.clone();
    if ring.is_some() {
        sql.push_str(" AND key_ring_id = $R");
    }
    (sql, ints, ring)
}

fn sort_sql(q: &KeyQuery) -> String {
    let mut parts: Vec<String> = q
        .sort
        .iter()
        .map(|(f, desc)| {
            let col = match f {
                SortField::Id => "id",
                SortField::State => "state",
                SortField::Extractable => "extractable",
                SortField::Imported => "imported",
                SortField::CreationDate => "created_at",
                SortField::LastUpdateDate => "updated_at",
                SortField::LastRotateDate => "last_rotate_date",
                SortField::DeletionDate => "deletion_date",
                SortField::ExpirationDate => "expiration_date",
            };
            format!("{col} {}", if *desc { "DESC" } else { "ASC" })
        })
        .collect();
    parts.push("id ASC".to_string());
    parts.join(", ")
}

/// Renumbers the `$S<n>` / `$R` markers of [`key_filter`] after `first` fixed parameters.
fn number_params(sql: &str, first: usize, n_ints: usize) -> String {
    let mut out = sql.to_string();
    // Replace from the highest index down so `$S1` does not clobber `$S10`.
    for i in (1..=n_ints).rev() {
        out = out.replace(&format!("$S{i}"), &format!("${}", first + i));
    }
    out.replace("$R", &format!("${}", first + n_ints + 1))
}

#[async_trait]
impl Store for SqlStore {
    fn backend(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    async fn sealed_rows(&self) -> StoreResult<(i64, Vec<String>)> {
        let rows = sqlx::query(
            "SELECT master_key_id, COUNT(*) AS n FROM (
                SELECT master_key_id FROM key_versions
                UNION ALL SELECT master_key_id FROM import_tokens
                UNION ALL SELECT master_key_id FROM secrets) AS s GROUP BY master_key_id",
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
    }

    async fn create_instance(&self, row: &InstanceRow) -> StoreResult<()> {
        sqlx::query("INSERT INTO instances (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(row.id.to_string())
            .bind(row.name.as_str())
            .bind(row.created_at)
            .execute(&self.write)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn get_instance(&self, id: InstanceId) -> StoreResult<Option<InstanceRow>> {
        let row = sqlx::query("SELECT id, name, created_at FROM instances WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.read)
            .await
            .map_err(classify)?;
        row.map(|r| {
            Ok(InstanceRow {
                id: uuid_col(&r, "id", InstanceId::parse)?,
                name: get(&r, "name")?,
                created_at: get(&r, "created_at")?,
            })
        })
        .transpose()
    }

    async fn list_instances(&self) -> StoreResult<Vec<InstanceRow>> {
        let rows = sqlx::query("SELECT id, name, created_at FROM instances ORDER BY created_at, id")
            .fetch_all(&self.read)
            .await
            .map_err(classify)?;
        rows.iter()
            .map(|r| {
                Ok(InstanceRow {
                    id: uuid_col(r, "id", InstanceId::parse)?,
                    name: get(r, "name")?,
                    created_at: get(r, "created_at")?,
                })
            })
            .collect()
    }

    async fn delete_instance(&self, id: InstanceId) -> StoreResult<()> {
        let mut tx = self.write.begin().await.map_err(classify)?;
        let id_s = id.to_string();
        let live: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM keys WHERE instance_id = $1 AND state <> 5")
                .bind(id_s.as_str())
                .fetch_one(&mut *tx)
                .await
                .map_err(classify)?;
        if live > 0 {
            return Err(StoreError::Conflict("instance has keys that are not deleted"));
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
    }

    async fn create_api_key(
        &self,
        principal: &PrincipalRow,
        key: &ApiKeyRow,
        key_hash: &[u8],
    ) -> StoreResult<()> {
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
        sqlx::query(
            "INSERT INTO api_keys (id, iam_id, key_hash, name, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(key.id.as_str())
        .bind(key.iam_id.as_str())
        .bind(key_hash.to_vec())
        .bind(key.name.as_str())
        .bind(key.created_at)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        Ok(())
    }

    async fn find_api_key(&self, key_hash: &[u8]) -> StoreResult<Option<ApiKeyRow>> {
        let row =
            sqlx::query("SELECT id, iam_id, name, created_at FROM api_keys WHERE key_hash = $1")
                .bind(key_hash.to_vec())
                .fetch_optional(&self.read)
                .await
                .map_err(classify)?;
        row.as_ref().map(api_key_from_row).transpose()
    }

    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyRow>> {
        let rows = sqlx::query("SELECT id, iam_id, name, created_at FROM api_keys ORDER BY created_at, id")
            .fetch_all(&self.read)
            .await
            .map_err(classify)?;
        rows.iter().map(api_key_from_row).collect()
    }

    async fn delete_api_key(&self, id: &str) -> StoreResult<()> {
        let r = sqlx::query("DELETE FROM api_keys WHERE id = $1")
            .bind(id)
            .execute(&self.write)
            .await
            .map_err(classify)?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
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
        sqlx::query(
            "INSERT INTO role_grants (instance_id, iam_id, role, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (instance_id, iam_id, role) DO NOTHING",
        )
        .bind(g.instance_id.to_string())
        .bind(g.iam_id.as_str())
        .bind(g.role.as_str())
        .bind(g.created_at)
        .execute(&self.write)
        .await
        .map_err(classify)?;
        Ok(())
    }

    async fn revoke(&self, instance: InstanceId, iam_id: &str, role: Role) -> StoreResult<()> {
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
    }

    async fn roles_of(&self, instance: InstanceId, iam_id: &str) -> StoreResult<Vec<Role>> {
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT role FROM role_grants WHERE instance_id = $1 AND iam_id = $2")
                .bind(instance.to_string())
                .bind(iam_id)
                .fetch_all(&self.read)
                .await
                .map_err(classify)?;
        rows.iter()
            .map(|r| Role::from_str(r).map_err(|_| corrupt("role")))
            .collect()
    }

    async fn list_grants(&self) -> StoreResult<Vec<GrantRow>> {
        let rows = sqlx::query(
            "SELECT instance_id, iam_id, role, created_at FROM role_grants ORDER BY instance_id, iam_id, role",
        )
        .fetch_all(&self.read)
        .await
        .map_err(classify)?;
        rows.iter()
            .map(|r| {
                Ok(GrantRow {
                    instance_id: uuid_col(r, "instance_id", InstanceId::parse)?,
                    iam_id: get(r, "iam_id")?,
                    role: Role::from_str(&get::<String>(r, "role")?).map_err(|_| corrupt("role"))?,
                    created_at: get(r, "created_at")?,
                })
            })
            .collect()
    }

    async fn insert_key(
        &self,
        key: &KeyRow,
        version: &VersionRow,
        guard: Option<TokenGuard>,
    ) -> StoreResult<()> {
        let mut tx = self.write.begin().await.map_err(classify)?;
        if let Some(g) = guard {
            check_guard(&mut tx, key.instance_id, g).await?;
        }
        sqlx::query(&format!(
            "INSERT INTO keys ({KEY_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21)"
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
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        insert_version(&mut tx, version).await?;
        tx.commit().await.map_err(classify)?;
        Ok(())
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
        row.as_ref().map(key_from_row).transpose()
    }

    async fn list_keys(&self, instance: InstanceId, q: &KeyQuery) -> StoreResult<Vec<KeyRow>> {
        let (filter, ints, ring) = key_filter(q);
        let n = ints.len() + usize::from(ring.is_some());
        let sql = format!(
            "SELECT {KEY_COLS} FROM keys WHERE instance_id = $1{} ORDER BY {} LIMIT ${} OFFSET ${}",
            number_params(&filter, 1, ints.len()),
            sort_sql(q),
            n + 2,
            n + 3
        );
        let mut query = sqlx::query(&sql).bind(instance.to_string());
        for i in ints {
            query = query.bind(i);
        }
        if let Some(r) = ring {
            query = query.bind(r);
        }
        let rows = query
            .bind(q.limit)
            .bind(q.offset)
            .fetch_all(&self.read)
            .await
            .map_err(classify)?;
        rows.iter().map(key_from_row).collect()
    }

    async fn count_keys(&self, instance: InstanceId, q: &KeyQuery) -> StoreResult<i64> {
        let (filter, ints, ring) = key_filter(q);
        let sql = format!(
            "SELECT COUNT(*) FROM keys WHERE instance_id = $1{}",
            number_params(&filter, 1, ints.len())
        );
        let mut query = sqlx::query_scalar::<_, i64>(&sql).bind(instance.to_string());
        for i in ints {
            query = query.bind(i);
        }
        if let Some(r) = ring {
            query = query.bind(r);
        }
        query.fetch_one(&self.read).await.map_err(classify)
    }

    async fn update_key(&self, key: &KeyRow) -> StoreResult<()> {
        let mut tx = self.write.begin().await.map_err(classify)?;
        update_key_in(&mut tx, key).await?;
        tx.commit().await.map_err(classify)?;
        Ok(())
    }

    async fn rotate_key(
        &self,
        key: &KeyRow,
        version: &VersionRow,
        guard: Option<TokenGuard>,
    ) -> StoreResult<()> {
        let mut tx = self.write.begin().await.map_err(classify)?;
        if let Some(g) = guard {
            check_guard(&mut tx, key.instance_id, g).await?;
        }
        update_key_in(&mut tx, key).await?;
        insert_version(&mut tx, version).await?;
        tx.commit().await.map_err(classify)?;
        Ok(())
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
        rows.iter().map(version_from_row).collect()
    }

    async fn purge_key(&self, key: &KeyRow) -> StoreResult<()> {
        self.purge_key_impl(key).await
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
        self.create_alias_impl(row).await
    }

    async fn delete_alias(&self, instance: InstanceId, alias: &str, key: KeyId) -> StoreResult<()> {
        self.delete_alias_impl(instance, alias, key).await
    }

    async fn aliases_of(&self, instance: InstanceId, key: KeyId) -> StoreResult<Vec<AliasRow>> {
        self.aliases_of_impl(instance, key).await
    }

    async fn resolve_alias(&self, instance: InstanceId, alias: &str) -> StoreResult<Option<KeyId>> {
        self.resolve_alias_impl(instance, alias).await
    }

    async fn create_key_ring(&self, row: &KeyRingRow) -> StoreResult<()> {
        self.create_key_ring_impl(row).await
    }

    async fn list_key_rings(&self, instance: InstanceId) -> StoreResult<Vec<KeyRingRow>> {
        self.list_key_rings_impl(instance).await
    }

    async fn delete_key_ring(&self, instance: InstanceId, id: &str, force: bool) -> StoreResult<()> {
        self.delete_key_ring_impl(instance, id, force).await
    }

    async fn put_instance_policy(&self, row: &PolicyRow) -> StoreResult<()> {
        self.put_instance_policy_impl(row).await
    }

    async fn instance_policies(&self, instance: InstanceId) -> StoreResult<Vec<PolicyRow>> {
        self.instance_policies_impl(instance).await
    }

    async fn add_registration(&self, row: &RegistrationRow) -> StoreResult<()> {
        self.add_registration_impl(row).await
    }

    async fn registrations(
        &self,
        instance: InstanceId,
        key: Option<KeyId>,
    ) -> StoreResult<Vec<RegistrationRow>> {
        self.registrations_impl(instance, key).await
    }

    async fn put_token(&self, t: &TokenRow) -> StoreResult<()> {
        sqlx::query(&format!(
            "INSERT INTO import_tokens ({TOKEN_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)
             ON CONFLICT (instance_id) DO UPDATE SET token_id = excluded.token_id,
               created_at = excluded.created_at, expires_at = excluded.expires_at,
               expiration_secs = excluded.expiration_secs, max_retrievals = excluded.max_retrievals,
               remaining = excluded.remaining, nonce = excluded.nonce, public_pem = excluded.public_pem,
               sealed_private = excluded.sealed_private, master_key_id = excluded.master_key_id"
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
        .execute(&self.write)
        .await
        .map_err(classify)?;
        Ok(())
    }

    async fn get_token(&self, instance: InstanceId) -> StoreResult<Option<TokenRow>> {
        let row = sqlx::query(&format!(
            "SELECT {TOKEN_COLS} FROM import_tokens WHERE instance_id = $1"
        ))
        .bind(instance.to_string())
        .fetch_optional(&self.read)
        .await
        .map_err(classify)?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn take_token_retrieval(
        &self,
        instance: InstanceId,
        now: i64,
    ) -> StoreResult<Option<TokenRow>> {
        let row = sqlx::query(&format!(
            "UPDATE import_tokens SET remaining = remaining - 1
             WHERE instance_id = $1 AND remaining > 0 AND expires_at > $2
             RETURNING {TOKEN_COLS}"
        ))
        .bind(instance.to_string())
        .bind(now)
        .fetch_optional(&self.write)
        .await
        .map_err(classify)?;
        row.as_ref().map(token_from_row).transpose()
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

async fn insert_version(tx: &mut Tx<'_>, v: &VersionRow) -> StoreResult<()> {
    sqlx::query(&format!(
        "INSERT INTO key_versions ({VERSION_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7)"
    ))
    .bind(v.id.to_string())
    .bind(v.key_id.to_string())
    .bind(v.instance_id.to_string())
    .bind(v.seq)
    .bind(v.created_at)
    .bind(v.sealed.clone())
    .bind(v.master_key_id.as_str())
    .execute(&mut **tx)
    .await
    .map_err(classify)?;
    Ok(())
}

async fn update_key_in(tx: &mut Tx<'_>, key: &KeyRow) -> StoreResult<()> {
    let r = sqlx::query(
        "UPDATE keys SET name = $3, description = $4, tags = $5, state = $6, extractable = $7,
           imported = $8, key_ring_id = $9, expiration_date = $10, updated_at = $11,
           last_rotate_date = $12, deletion_date = $13, deleted_by = $14, state_changed_at = $15,
           current_version = $16, attrs = $17, next_rotation_at = $19, row_version = row_version + 1
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
    .execute(&mut **tx)
    .await
    .map_err(classify)?;
    if r.rows_affected() == 1 {
        Ok(())
    } else {
        Err(StoreError::Conflict("key changed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_debug_masks_password() {
        let u = DatabaseUrl::new("postgres://kw:s3cr3t-pw@db.example:5432/keyward");
        assert!(!format!("{u:?}").contains("s3cr3t-pw"));
        assert!(!u.to_string().contains("s3cr3t-pw"));
        assert!(format!("{u:?}").contains("kw:****@db.example"));
        assert_eq!(u.expose(), "postgres://kw:s3cr3t-pw@db.example:5432/keyward");
    }

    #[test]
    fn params_renumber_without_clobbering() {
        let q = KeyQuery {
            states: vec![KeyState::Active; 11],
            extractable: Some(true),
            key_ring_id: Some("r".into()),
            ..KeyQuery::default()
        };
        let (sql, ints, _) = key_filter(&q);
        let out = number_params(&sql, 1, ints.len());
        assert!(out.contains("$2,") && out.contains("$12)") && out.contains("extractable = $13"));
        assert!(out.contains("key_ring_id = $14"));
        assert!(!out.contains("$S") && !out.contains("$R"));
    }
}

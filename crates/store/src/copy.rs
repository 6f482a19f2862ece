//! Copying a whole deployment from one database into another, row for row: what
//! `keyward admin migrate --from sqlite:PATH --to postgres://...` runs to move a single-node
//! deployment onto the PostgreSQL a cluster shares.
//!
//! - Generic over [`COPY_TABLES`]: the columns of each table and their kinds (integer, text,
//!   bytes) are read from the databases' own catalogs, so a column added by a later migration
//!   is copied without a change here. A table that is not in the list (or a column that exists
//!   on one side only) makes the copy refuse instead of silently dropping data.
//! - Rows are copied as they are: sealed material stays sealed under the same master key (the
//!   copy never opens it), so the new nodes need the same master key file.
//! - The source is read in one read transaction (a consistent snapshot even if something still
//!   writes to it), page by page along the primary key; the target is written in one
//!   transaction, so a failed copy leaves it empty. A target that holds any row is refused.
//! - Both stores are opened with [`SqlStore::connect`], which migrates both to this build's
//!   schema; the copy then requires the same applied migrations on both sides.
//! - The audit trail (`audit_log`) is copied like every other table, ids included. On a
//!   PostgreSQL target the id sequences are then moved past the copied ids, so the next record
//!   the new deployment writes does not collide with a copied one (SQLite's `AUTOINCREMENT`
//!   follows explicit ids by itself).
//! - Progress and interruption: [`SqlStore::copy_into`] counts every table's rows inside the
//!   source snapshot first (`COUNT(*)`, so the total is exact), then reports the rows copied
//!   after every page to a callback, which may ask the copy to stop. A stopped copy (like a
//!   failed one, or a process killed at any point) never commits: the target stays empty and the
//!   same copy can simply be run again.

use sqlx::any::AnyRow;
use sqlx::{Any, Row};

use crate::sql::{classify, SqlStore};
use crate::{ConflictKind, StoreError, StoreResult};

/// Every table of the schema except `schema_migrations`, parents before children (so
/// foreign keys hold at every insert).
pub const COPY_TABLES: &[&str] = &[
    "instances",
    "principals",
    "api_keys",
    "role_grants",
    "secrets",
    "keys",
    "key_versions",
    "import_tokens",
    "key_aliases",
    "key_rings",
    "instance_policies",
    "registrations",
    "key_usage",
    "audit_log",
    "kmip_adapters",
    "kmip_client_certs",
    "kmip_objects",
];

/// Most bind parameters in one INSERT (SQLite allows 32766, PostgreSQL 65535).
const MAX_PARAMS: usize = 30_000;
/// Most rows read from the source per page.
const PAGE_ROWS: usize = 500;

/// Rows copied per table, in copy order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    pub tables: Vec<(String, u64)>,
}

impl CopyReport {
    pub fn total_rows(&self) -> u64 {
        self.tables.iter().map(|(_, n)| n).sum()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Text,
    Bytes,
}

#[derive(Debug, Clone)]
struct Column {
    name: String,
    kind: Kind,
    /// Position in the primary key (1-based), 0 if not part of it.
    pk: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Cell {
    Int(Option<i64>),
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
}

fn refuse(msg: String) -> StoreError {
    StoreError::Corrupt(msg)
}

/// Table and column names go into SQL text, so they must be plain identifiers.
fn plain_ident(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !s.as_bytes().first().is_some_and(u8::is_ascii_digit)
}

fn kind_of(declared: &str) -> Option<Kind> {
    let t = declared.to_ascii_lowercase();
    if t.contains("int") {
        Some(Kind::Int)
    } else if t.contains("text") || t.contains("char") {
        Some(Kind::Text)
    } else if t.contains("blob") || t.contains("bytea") {
        Some(Kind::Bytes)
    } else {
        None
    }
}

async fn tables_of(store: &SqlStore) -> StoreResult<Vec<String>> {
    sqlx::query_scalar::<_, String>(store.dialect.tables_sql())
        .fetch_all(&store.read)
        .await
        .map_err(classify)
}

async fn columns_of(store: &SqlStore, table: &str) -> StoreResult<Vec<Column>> {
    let rows = sqlx::query(store.dialect.columns_sql())
        .bind(table)
        .fetch_all(&store.read)
        .await
        .map_err(classify)?;
    rows.iter()
        .map(|r| {
            let name: String = r.try_get("name").map_err(classify)?;
            let declared: String = r.try_get("type").map_err(classify)?;
            let pk: i64 = r.try_get("pk").map_err(classify)?;
            if !plain_ident(&name) {
                return Err(refuse(format!(
                    "column {table}.{name}: not a plain identifier"
                )));
            }
            let kind = kind_of(&declared).ok_or_else(|| {
                refuse(format!(
                    "column {table}.{name}: type {declared} cannot be copied"
                ))
            })?;
            Ok(Column { name, kind, pk })
        })
        .collect()
}

async fn migrations_of(store: &SqlStore) -> StoreResult<Vec<i64>> {
    sqlx::query_scalar::<_, i64>("SELECT version FROM schema_migrations ORDER BY version")
        .fetch_all(&store.read)
        .await
        .map_err(classify)
}

/// The columns to copy for `table`: the target's, after checking the source has exactly the
/// same names and kinds.
async fn plan_table(from: &SqlStore, to: &SqlStore, table: &str) -> StoreResult<Vec<Column>> {
    let src = columns_of(from, table).await?;
    let dst = columns_of(to, table).await?;
    let names = |cols: &[Column]| {
        let mut v: Vec<(String, Kind)> = cols.iter().map(|c| (c.name.clone(), c.kind)).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    if dst.is_empty() || names(&src) != names(&dst) {
        return Err(refuse(format!(
            "table {table} differs between source and target (source columns {:?}, target columns {:?})",
            src.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            dst.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        )));
    }
    // The key to page along: the source's primary key (every copied table has one).
    let mut cols = dst;
    for c in &mut cols {
        c.pk = src
            .iter()
            .find(|s| s.name == c.name)
            .map(|s| s.pk)
            .unwrap_or(0);
    }
    if !cols.iter().any(|c| c.pk > 0) {
        return Err(refuse(format!(
            "table {table} has no primary key to page along"
        )));
    }
    Ok(cols)
}

fn read_cell(row: &AnyRow, i: usize, kind: Kind) -> StoreResult<Cell> {
    Ok(match kind {
        Kind::Int => Cell::Int(row.try_get(i).map_err(classify)?),
        Kind::Text => Cell::Text(row.try_get(i).map_err(classify)?),
        Kind::Bytes => Cell::Bytes(row.try_get(i).map_err(classify)?),
    })
}

type AnyQuery<'q> = sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>;

fn bind_cell<'q>(q: AnyQuery<'q>, cell: &Cell) -> AnyQuery<'q> {
    match cell {
        Cell::Int(v) => q.bind(*v),
        Cell::Text(v) => q.bind(v.clone()),
        Cell::Bytes(v) => q.bind(v.clone()),
    }
}

/// Moves the sequence behind each serial column of `table` (PostgreSQL) past the largest
/// copied value: rows were inserted with their ids, which does not advance a sequence.
async fn advance_sequences(
    dst: &mut sqlx::Transaction<'_, Any>,
    table: &str,
    cols: &[Column],
) -> StoreResult<()> {
    for c in cols.iter().filter(|c| c.kind == Kind::Int) {
        let seq: Option<String> = sqlx::query_scalar("SELECT pg_get_serial_sequence($1, $2)")
            .bind(table)
            .bind(c.name.as_str())
            .fetch_one(&mut **dst)
            .await
            .map_err(classify)?;
        let Some(seq) = seq else { continue };
        // The next value is MAX + 1 (or 1 for an empty table).
        sqlx::query(&format!(
            "SELECT setval(CAST($1 AS regclass), COALESCE(MAX({col}), 0) + 1, false) FROM {table}",
            col = c.name
        ))
        .bind(seq)
        .execute(&mut **dst)
        .await
        .map_err(classify)?;
    }
    Ok(())
}

/// Copies every row of every table in [`COPY_TABLES`] from `from` into `to`, which must be
/// empty. Returns the rows copied per table.
pub async fn copy_database(from: &SqlStore, to: &SqlStore) -> StoreResult<CopyReport> {
    copy_observed(from, to, &|_, _, _| true).await
}

/// The message of the error a copy returns when its progress callback asked it to stop.
pub const COPY_STOPPED: &str = "the copy was stopped before the end; nothing was written";

impl SqlStore {
    /// [`copy_database`] from this store into `to`, reporting progress: `progress(table, done,
    /// total)` is called once the source's rows are counted (`done` 0) and after every page
    /// copied, with the rows copied so far and the rows in the snapshot, over all tables. When
    /// it returns `false`, the copy stops without committing anything to `to` and returns
    /// [`StoreError::Corrupt`] with [`COPY_STOPPED`].
    pub async fn copy_into(
        &self,
        to: &SqlStore,
        progress: &(dyn Fn(&str, u64, u64) -> bool + Sync),
    ) -> StoreResult<CopyReport> {
        copy_observed(self, to, progress).await
    }
}

async fn copy_observed(
    from: &SqlStore,
    to: &SqlStore,
    progress: &(dyn Fn(&str, u64, u64) -> bool + Sync),
) -> StoreResult<CopyReport> {
    let stopped = || refuse(COPY_STOPPED.to_string());
    let (src_mig, dst_mig) = (migrations_of(from).await?, migrations_of(to).await?);
    if src_mig != dst_mig {
        return Err(refuse(format!(
            "schema versions differ (source {src_mig:?}, target {dst_mig:?})"
        )));
    }
    for (side, store) in [("source", from), ("target", to)] {
        let mut tables = tables_of(store).await?;
        tables.retain(|t| t != "schema_migrations");
        let mut expected: Vec<String> = COPY_TABLES.iter().map(|t| t.to_string()).collect();
        expected.sort();
        if tables != expected {
            return Err(refuse(format!(
                "the {side} database has tables {tables:?}; this Keyward copies {expected:?}"
            )));
        }
    }
    let mut plans = Vec::with_capacity(COPY_TABLES.len());
    for table in COPY_TABLES {
        plans.push((*table, plan_table(from, to, table).await?));
    }

    let mut dst = to.write.begin().await.map_err(classify)?;
    for (table, _) in &plans {
        let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&mut *dst)
            .await
            .map_err(classify)?;
        if n > 0 {
            return Err(StoreError::Conflict(ConflictKind::TargetNotEmpty));
        }
    }

    let mut src = from.read.begin().await.map_err(classify)?;
    if let Some(snapshot) = from.dialect.snapshot_read() {
        // One snapshot for the whole read.
        sqlx::query(snapshot)
            .execute(&mut *src)
            .await
            .map_err(classify)?;
    }

    // The rows to copy, counted in the same snapshot as they are read: an exact total.
    let mut total: u64 = 0;
    for (table, _) in &plans {
        let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&mut *src)
            .await
            .map_err(classify)?;
        total = total.saturating_add(u64::try_from(n).unwrap_or(0));
    }
    if !progress(COPY_TABLES.first().copied().unwrap_or_default(), 0, total) {
        return Err(stopped());
    }
    let mut done: u64 = 0;

    let mut report = Vec::with_capacity(plans.len());
    for (table, cols) in &plans {
        let mut pk: Vec<(usize, &Column)> =
            cols.iter().enumerate().filter(|(_, c)| c.pk > 0).collect();
        pk.sort_by_key(|(_, c)| c.pk);
        let col_list = cols
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let pk_list = pk
            .iter()
            .map(|(_, c)| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let pk_params = (1..=pk.len())
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let first_page =
            format!("SELECT {col_list} FROM {table} ORDER BY {pk_list} LIMIT {PAGE_ROWS}");
        let next_page = format!(
            "SELECT {col_list} FROM {table} WHERE ({pk_list}) > ({pk_params}) ORDER BY {pk_list} LIMIT {PAGE_ROWS}"
        );
        let rows_per_insert = (MAX_PARAMS / cols.len().max(1)).clamp(1, PAGE_ROWS);

        let mut copied: u64 = 0;
        let mut last_key: Option<Vec<Cell>> = None;
        loop {
            let page = match &last_key {
                None => sqlx::query(&first_page).fetch_all(&mut *src).await,
                Some(key) => {
                    let q = key.iter().fold(sqlx::query(&next_page), bind_cell);
                    q.fetch_all(&mut *src).await
                }
            }
            .map_err(classify)?;
            if page.is_empty() {
                break;
            }
            let mut cells = Vec::with_capacity(page.len());
            for row in &page {
                let mut r = Vec::with_capacity(cols.len());
                for (i, c) in cols.iter().enumerate() {
                    r.push(read_cell(row, i, c.kind)?);
                }
                cells.push(r);
            }
            for chunk in cells.chunks(rows_per_insert) {
                let mut sql = format!("INSERT INTO {table} ({col_list}) VALUES ");
                let mut p = 0;
                for (ri, _) in chunk.iter().enumerate() {
                    if ri > 0 {
                        sql.push_str(", ");
                    }
                    sql.push('(');
                    for ci in 0..cols.len() {
                        if ci > 0 {
                            sql.push_str(", ");
                        }
                        p += 1;
                        sql.push_str(&format!("${p}"));
                    }
                    sql.push(')');
                }
                let q = chunk.iter().flatten().fold(sqlx::query(&sql), bind_cell);
                let r = q.execute(&mut *dst).await.map_err(classify)?;
                if r.rows_affected() != chunk.len() as u64 {
                    return Err(refuse(format!(
                        "table {table}: an insert did not store every row"
                    )));
                }
            }
            copied += cells.len() as u64;
            done += cells.len() as u64;
            if !progress(table, done, total.max(done)) {
                return Err(stopped());
            }
            let short = page.len() < PAGE_ROWS;
            last_key = cells
                .last()
                .map(|r| pk.iter().filter_map(|(i, _)| r.get(*i).cloned()).collect());
            if short {
                break;
            }
        }
        let in_target: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&mut *dst)
            .await
            .map_err(classify)?;
        if u64::try_from(in_target).ok() != Some(copied) {
            return Err(refuse(format!(
                "table {table}: copied {copied} rows but the target holds {in_target}"
            )));
        }
        if to.dialect.has_sequences() {
            advance_sequences(&mut dst, table, cols).await?;
        }
        tracing::info!(table, rows = copied, "copied table");
        report.push((table.to_string(), copied));
    }
    src.rollback().await.map_err(classify)?;
    if !progress("", done, total.max(done)) {
        return Err(stopped());
    }
    dst.commit().await.map_err(classify)?;
    Ok(CopyReport { tables: report })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    use crate::{DatabaseUrl, Store};
    use std::sync::Arc;

    /// Every row of every copied table, in primary-key order, as cells.
    async fn dump(store: &SqlStore) -> Vec<(String, Vec<Vec<Cell>>)> {
        let mut out = Vec::new();
        for table in COPY_TABLES {
            let cols = plan_table(store, store, table).await.unwrap();
            let mut pk: Vec<&Column> = cols.iter().filter(|c| c.pk > 0).collect();
            pk.sort_by_key(|c| c.pk);
            let sql = format!(
                "SELECT {} FROM {table} ORDER BY {}",
                cols.iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                pk.iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let rows = sqlx::query(&sql).fetch_all(&store.read).await.unwrap();
            let cells = rows
                .iter()
                .map(|r| {
                    cols.iter()
                        .enumerate()
                        .map(|(i, c)| read_cell(r, i, c.kind).unwrap())
                        .collect()
                })
                .collect();
            out.push((table.to_string(), cells));
        }
        out
    }

    async fn sqlite_store(dir: &tempfile::TempDir, name: &str) -> SqlStore {
        let url = format!("sqlite://{}?mode=rwc", dir.path().join(name).display());
        let store = SqlStore::connect(&DatabaseUrl::new(url)).await.unwrap();
        crate::sql::tests::install_test_auth(&store);
        store
    }

    /// A source filled by the conformance suite (every table gets rows), with more rows than
    /// one page in `keys` and `key_versions`.
    async fn filled_source(dir: &tempfile::TempDir) -> SqlStore {
        let src = sqlite_store(dir, "src.db").await;
        crate::testsuite::run_all(Arc::new(src.clone())).await;
        let inst = crate::testsuite::instance("bulk");
        src.create_instance(&inst).await.unwrap();
        let principal = crate::PrincipalRow {
            iam_id: "iam-ServiceId-copy".into(),
            name: "copy".into(),
            created_at: 1_700_000_000,
        };
        let key = crate::ApiKeyRow {
            id: "ak-copy".into(),
            iam_id: principal.iam_id.clone(),
            name: "copy".into(),
            created_at: 1_700_000_000,
        };
        src.create_api_key(&principal, &key, &[0xAB; 32])
            .await
            .unwrap();
        src.grant(&crate::GrantRow {
            instance_id: inst.id,
            iam_id: principal.iam_id.clone(),
            role: keyward_domain::Role::Manager,
            created_at: 1_700_000_000,
        })
        .await
        .unwrap();
        src.put_token(&crate::testsuite::token_row(inst.id, 5, 1_700_000_600))
            .await
            .unwrap();
        for i in 0..(PAGE_ROWS + 17) {
            let (k, v) = crate::testsuite::key_row(inst.id, &format!("bulk-{i}"));
            src.insert_key(&k, &v, None).await.unwrap();
            if i == 0 {
                src.create_alias(&crate::AliasRow {
                    instance_id: inst.id,
                    alias: "bulk-alias".into(),
                    key_id: k.id,
                    created_at: 1_700_000_000,
                    created_by: "iam-test".into(),
                })
                .await
                .unwrap();
                src.add_registration(&crate::RegistrationRow {
                    instance_id: inst.id,
                    key_id: k.id,
                    resource_crn: "crn:v1:bluemix:public:cloud-object-storage:global:a/1::bucket:b"
                        .into(),
                    prevent_key_deletion: true,
                    description: Some("copied".into()),
                    created_at: 1_700_000_000,
                    created_by: "iam-test".into(),
                })
                .await
                .unwrap();
            }
        }
        src.create_key_ring(&crate::KeyRingRow {
            instance_id: inst.id,
            id: "bulk-ring".into(),
            created_at: 1_700_000_000,
            created_by: "iam-test".into(),
        })
        .await
        .unwrap();
        src.put_instance_policy(&crate::PolicyRow {
            instance_id: inst.id,
            policy_type: "dualAuthDelete".into(),
            data: serde_json::json!({"enabled": true}),
            created_at: 1_700_000_000,
            created_by: "iam-test".into(),
            updated_at: 1_700_000_000,
            updated_by: "iam-test".into(),
        })
        .await
        .unwrap();
        src
    }

    async fn copy_and_compare(src: &SqlStore, dst: &SqlStore) {
        let report = copy_database(src, dst).await.unwrap();
        let before = dump(src).await;
        assert_eq!(
            dump(dst).await,
            before,
            "the target differs from the source"
        );
        for ((t, n), (t2, rows)) in report.tables.iter().zip(&before) {
            assert_eq!(t, t2);
            assert_eq!(*n as usize, rows.len(), "{t}");
            assert!(
                *n > 0,
                "table {t} had no rows to copy: the test data should cover it"
            );
        }
        // Copying again is refused: the target is not empty any more.
        assert!(matches!(
            copy_database(src, dst).await,
            Err(StoreError::Conflict(ConflictKind::TargetNotEmpty))
        ));
        assert_eq!(dump(dst).await, before);

        // The audit trail came along, ids included, and the target's next record gets a new
        // id after them (on PostgreSQL, the copy moved the id sequence along).
        let all = crate::AuditQuery::default();
        let copied = dst.audit_records(&all).await.unwrap();
        assert_eq!(copied, src.audit_records(&all).await.unwrap());
        let last = copied.last().unwrap().id;
        let next = crate::testsuite::audit_row(9999, "kms.secrets.wrap", "success");
        dst.append_audit(std::slice::from_ref(&next)).await.unwrap();
        let after = dst.audit_records(&all).await.unwrap();
        assert_eq!(after.len(), copied.len() + 1);
        let newest = after.last().unwrap();
        assert!(newest.id > last, "{} <= {last}", newest.id);
        assert_eq!(newest.row, next);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_to_sqlite_copies_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let src = filled_source(&dir).await;
        let dst = sqlite_store(&dir, "dst.db").await;
        copy_and_compare(&src, &dst).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_to_postgres_copies_every_row() {
        let Some(url) = crate::sql::tests::fresh_postgres(&[]).await else {
            eprintln!("KEYWARD_TEST_DATABASE_URL unset: SQLite → PostgreSQL copy not run");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let src = filled_source(&dir).await;
        let dst = SqlStore::connect(&DatabaseUrl::new(url.clone()))
            .await
            .unwrap();
        copy_and_compare(&src, &dst).await;
        dst.close().await;
        crate::sql::tests::drop_postgres(&url).await;
    }

    /// A copy reports exact totals and monotonic progress; one stopped part-way commits
    /// nothing, and the same copy then runs again into the same target.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stopped_copy_leaves_the_target_empty_and_runs_again() {
        let dir = tempfile::tempdir().unwrap();
        let src = filled_source(&dir).await;
        let dst = sqlite_store(&dir, "dst.db").await;
        let total: u64 = dump(&src)
            .await
            .iter()
            .map(|(_, rows)| rows.len() as u64)
            .sum();
        assert!(total > PAGE_ROWS as u64);
        let seen = std::sync::Mutex::new(Vec::new());
        let e = src
            .copy_into(&dst, &|_, done, t| {
                seen.lock().unwrap().push((done, t));
                done < PAGE_ROWS as u64
            })
            .await
            .unwrap_err();
        assert!(e.to_string().contains(COPY_STOPPED), "{e}");
        let seen = seen.into_inner().unwrap();
        assert_eq!(seen.first(), Some(&(0, total)), "{seen:?}");
        assert!(seen.len() >= 2, "{seen:?}");
        assert!(dump(&dst).await.iter().all(|(_, rows)| rows.is_empty()));

        let seen = std::sync::Mutex::new(Vec::new());
        let report = src
            .copy_into(&dst, &|_, done, t| {
                seen.lock().unwrap().push((done, t));
                true
            })
            .await
            .unwrap();
        assert_eq!(report.total_rows(), total);
        let seen = seen.into_inner().unwrap();
        assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "{seen:?}");
        assert!(seen.iter().all(|(_, t)| *t == total), "{seen:?}");
        assert_eq!(seen.last(), Some(&(total, total)));
        assert_eq!(dump(&dst).await, dump(&src).await);
    }

    #[tokio::test]
    async fn a_target_with_unknown_tables_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let src = sqlite_store(&dir, "src.db").await;
        let dst = sqlite_store(&dir, "dst.db").await;
        sqlx::query("CREATE TABLE surprise (id TEXT PRIMARY KEY)")
            .execute(&dst.write)
            .await
            .unwrap();
        let e = copy_database(&src, &dst).await.unwrap_err();
        assert!(e.to_string().contains("surprise"), "{e}");
    }

    #[test]
    fn identifiers_and_kinds() {
        assert!(plain_ident("key_versions") && plain_ident("c1"));
        assert!(!plain_ident("1c") && !plain_ident("a;b") && !plain_ident("A") && !plain_ident(""));
        assert_eq!(kind_of("BIGINT"), Some(Kind::Int));
        assert_eq!(kind_of("bigint"), Some(Kind::Int));
        assert_eq!(kind_of("TEXT"), Some(Kind::Text));
        assert_eq!(kind_of("bytea"), Some(Kind::Bytes));
        assert_eq!(kind_of("BLOB"), Some(Kind::Bytes));
        assert_eq!(kind_of("jsonb"), None);
    }
}

//! The audit half of [`SqlStore`]: the `audit_log` table (migration 0003), written by the
//! service's database audit sink and read by `keyward admin audit tail|search`.
//!
//! - An append is its own committed write, never part of the change it records: the service
//!   writes the record, and only then the change. On PostgreSQL it is one statement, or one
//!   transaction for more than [`AUDIT_BATCH_ROWS`] rows. On SQLite it is one job of the group
//!   commit (`batch.rs`), sharing the transaction and fsync of the writes batched with it (the
//!   change it records runs only after the append returned, so in a later batch); the audit
//!   jobs of a batch are inserted together, and succeed or fail together.
//! - Only fixed SQL fragments are concatenated; every value is bound.

use sqlx::any::AnyRow;

use super::{classify, get, SqlStore};
use crate::{AuditEntry, AuditQuery, AuditRow, StoreError, StoreResult};

const AUDIT_COLS: &str =
    "time_unix, time, request_id, correlation_id, principal, instance, action, key_id, outcome, reason, source";
const AUDIT_COL_COUNT: usize = 11;
/// Most rows in one `INSERT` (11 parameters each: far below SQLite's 32766 and PostgreSQL's
/// 65535).
pub const AUDIT_BATCH_ROWS: usize = 256;

fn insert_sql(rows: usize) -> String {
    let mut sql = String::with_capacity(64 + rows * AUDIT_COL_COUNT * 5);
    sql.push_str("INSERT INTO audit_log (");
    sql.push_str(AUDIT_COLS);
    sql.push_str(") VALUES ");
    let mut p = 0;
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..AUDIT_COL_COUNT {
            if c > 0 {
                sql.push(',');
            }
            p += 1;
            sql.push_str(&format!("${p}"));
        }
        sql.push(')');
    }
    sql
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

fn bind_row<'q>(q: AnyQuery<'q>, r: &'q AuditRow) -> AnyQuery<'q> {
    q.bind(r.time_unix)
        .bind(r.time.as_str())
        .bind(r.request_id.as_str())
        .bind(r.correlation_id.as_deref())
        .bind(r.principal.as_str())
        .bind(r.instance.as_str())
        .bind(r.action.as_str())
        .bind(r.key_id.as_deref())
        .bind(r.outcome.as_str())
        .bind(r.reason.as_deref())
        .bind(r.source.as_deref())
}

fn entry_from_row(r: &AnyRow) -> StoreResult<AuditEntry> {
    Ok(AuditEntry {
        id: get(r, "id")?,
        row: AuditRow {
            time_unix: get(r, "time_unix")?,
            time: get(r, "time")?,
            request_id: get(r, "request_id")?,
            correlation_id: get(r, "correlation_id")?,
            principal: get(r, "principal")?,
            instance: get(r, "instance")?,
            action: get(r, "action")?,
            key_id: get(r, "key_id")?,
            outcome: get(r, "outcome")?,
            reason: get(r, "reason")?,
            source: get(r, "source")?,
        },
    })
}

enum Param<'a> {
    Text(&'a str),
    Int(i64),
}

impl SqlStore {
    /// One attempt at appending `rows` (the caller retries serialization failures). On SQLite
    /// the rows are one job of the group commit (`batch.rs`): they commit with the writes
    /// batched beside them, and the call returns once that batch committed.
    pub(crate) async fn append_audit_impl(&self, rows: &[AuditRow]) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let rows = rows.to_vec();
        if let Some(b) = &self.batch {
            return b.submit_audit(rows).await;
        }
        if rows.len() <= AUDIT_BATCH_ROWS {
            // One statement: atomic, committed on its own.
            self.write_one(rows.len(), move |c| {
                Box::pin(async move { insert_rows(c, &rows).await })
            })
            .await
        } else {
            self.write_tx(move |c| Box::pin(async move { insert_rows(c, &rows).await }))
                .await
        }
    }

    pub(crate) async fn audit_records_impl(&self, q: &AuditQuery) -> StoreResult<Vec<AuditEntry>> {
        let mut sql = format!("SELECT id, {AUDIT_COLS} FROM audit_log WHERE 1 = 1");
        let mut params: Vec<Param<'_>> = Vec::new();
        fn cond<'a>(
            sql: &mut String,
            params: &mut Vec<Param<'a>>,
            col: &str,
            op: &str,
            p: Param<'a>,
        ) {
            params.push(p);
            sql.push_str(&format!(" AND {col} {op} ${}", params.len()));
        }
        // (column, value) pairs; the column names are fixed literals.
        for (col, v) in [
            ("action", &q.action),
            ("key_id", &q.key_id),
            ("principal", &q.principal),
            ("instance", &q.instance),
            ("outcome", &q.outcome),
            ("request_id", &q.request_id),
        ] {
            if let Some(v) = v {
                cond(&mut sql, &mut params, col, "=", Param::Text(v.as_str()));
            }
        }
        if let Some(t) = q.since {
            cond(&mut sql, &mut params, "time_unix", ">=", Param::Int(t));
        }
        if let Some(t) = q.until {
            cond(&mut sql, &mut params, "time_unix", "<=", Param::Int(t));
        }
        if let Some(id) = q.after_id {
            cond(&mut sql, &mut params, "id", ">", Param::Int(id));
        }
        sql.push_str(if q.newest_first {
            " ORDER BY id DESC"
        } else {
            " ORDER BY id ASC"
        });
        if let Some(n) = q.limit {
            params.push(Param::Int(n.max(0)));
            sql.push_str(&format!(" LIMIT ${}", params.len()));
            if let Some(o) = q.offset {
                params.push(Param::Int(o.max(0)));
                sql.push_str(&format!(" OFFSET ${}", params.len()));
            }
        }
        let mut query = sqlx::query(&sql);
        for p in params {
            query = match p {
                Param::Text(s) => query.bind(s),
                Param::Int(i) => query.bind(i),
            };
        }
        let rows = query.fetch_all(&self.read).await.map_err(classify)?;
        rows.iter().map(entry_from_row).collect()
    }
}

/// Inserts `rows`, [`AUDIT_BATCH_ROWS`] per statement.
pub(super) async fn insert_rows(c: &mut sqlx::AnyConnection, rows: &[AuditRow]) -> StoreResult<()> {
    for chunk in rows.chunks(AUDIT_BATCH_ROWS) {
        let sql = insert_sql(chunk.len());
        let q = chunk.iter().fold(sqlx::query(&sql), bind_row);
        let r = q.execute(&mut *c).await.map_err(classify)?;
        check_count(r.rows_affected(), chunk.len())?;
    }
    Ok(())
}

fn check_count(affected: u64, expected: usize) -> StoreResult<()> {
    if affected == expected as u64 {
        Ok(())
    } else {
        Err(StoreError::Corrupt(format!(
            "an audit insert stored {affected} of {expected} rows"
        )))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn insert_sql_numbers_every_parameter() {
        let s = insert_sql(2);
        assert!(s.starts_with("INSERT INTO audit_log (time_unix,"));
        assert!(s.contains("($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11), ($12,"));
        assert!(s.ends_with("$22)"));
        assert_eq!(AUDIT_COLS.split(',').count(), AUDIT_COL_COUNT);
    }
}

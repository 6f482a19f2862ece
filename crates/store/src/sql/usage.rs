//! Key usage (`key_usage`, migration 0009): the service's batched last-used records.

use keyward_domain::{InstanceId, KeyId};
use sqlx::{AnyConnection, Row};

use super::retry::classify;
use super::SqlStore;
use crate::{KeyUsageRow, StoreResult, UsageOp};

/// Keys per SELECT of [`SqlStore::key_usage_impl`] (a listing page is at most 200).
const CHUNK: usize = 500;

/// Keeps the stored row when it is newer, and writes nothing for a key that is gone (purged
/// while its usage waited for the flush).
const UPSERT: &str = "INSERT INTO key_usage (instance_id, key_id, op, last_at, last_by)
     SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM keys WHERE instance_id = $1 AND id = $2)
     ON CONFLICT (key_id, op) DO UPDATE SET last_at = excluded.last_at, last_by = excluded.last_by
     WHERE excluded.last_at >= key_usage.last_at";

async fn upsert_rows(c: &mut AnyConnection, rows: &[KeyUsageRow]) -> StoreResult<()> {
    for r in rows {
        sqlx::query(UPSERT)
            .bind(r.instance_id.to_string())
            .bind(r.key_id.to_string())
            .bind(r.op.as_str())
            .bind(r.at)
            .bind(r.by.as_str())
            .execute(&mut *c)
            .await
            .map_err(classify)?;
    }
    Ok(())
}

impl SqlStore {
    pub(crate) async fn record_key_usage_impl(&self, rows: &[KeyUsageRow]) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let rows = rows.to_vec();
        self.write_tx(move |c| Box::pin(async move { upsert_rows(c, &rows).await }))
            .await
    }

    pub(crate) async fn key_usage_impl(
        &self,
        instance: InstanceId,
        keys: &[KeyId],
    ) -> StoreResult<Vec<KeyUsageRow>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for chunk in keys.chunks(CHUNK) {
            let mut sql = String::from(
                "SELECT key_id, op, last_at, last_by FROM key_usage WHERE instance_id = $1 AND key_id IN (",
            );
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push(',');
                }
                sql.push_str(&format!("${}", i + 2));
            }
            sql.push(')');
            let mut q = sqlx::query(&sql).bind(instance.to_string());
            for k in chunk {
                q = q.bind(k.to_string());
            }
            for r in q.fetch_all(&self.read).await.map_err(classify)? {
                let key: String = r.try_get(0).map_err(classify)?;
                let op: String = r.try_get(1).map_err(classify)?;
                // A row this version cannot read (an unknown op, a malformed id) is skipped:
                // the table is not authenticated and only reports.
                let (Ok(key_id), Some(op)) = (KeyId::parse(&key), UsageOp::parse(&op)) else {
                    continue;
                };
                out.push(KeyUsageRow {
                    instance_id: instance,
                    key_id,
                    op,
                    at: r.try_get(2).map_err(classify)?,
                    by: r.try_get(3).map_err(classify)?,
                });
            }
        }
        Ok(out)
    }
}

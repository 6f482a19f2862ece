//! Sealed rows: named service secrets, and the master-key inventory and re-seal of every
//! sealed row (key versions, import tokens, secrets).

use super::*;
use crate::{SealedPlace, SealedRow, StoreResult};

impl SqlStore {
    pub(crate) async fn sealed_rows_impl(&self) -> StoreResult<(i64, Vec<String>)> {
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

    pub(crate) async fn get_secret_impl(
        &self,
        name: &str,
    ) -> StoreResult<Option<(Vec<u8>, String)>> {
        let row = sqlx::query("SELECT sealed, master_key_id FROM secrets WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.read)
            .await
            .map_err(classify)?;
        row.map(|r| Ok((get(&r, "sealed")?, get(&r, "master_key_id")?)))
            .transpose()
    }

    pub(crate) async fn put_secret_if_absent_impl(
        &self,
        name: &str,
        sealed: &[u8],
        master_key_id: &str,
        now: i64,
    ) -> StoreResult<bool> {
        let (name, sealed, master_key_id) =
            (name.to_string(), sealed.to_vec(), master_key_id.to_string());
        self.write_one(1, move |c| Box::pin(async move {
        let r = sqlx::query(
            "INSERT INTO secrets (name, sealed, master_key_id, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name.as_str())
        .bind(sealed)
        .bind(master_key_id.as_str())
        .bind(now)
        .execute(&mut *c)
        .await
        .map_err(classify)?;
        Ok(r.rows_affected() == 1)
        }))
        .await
    }

    pub(crate) async fn put_secret_impl(
        &self,
        name: &str,
        sealed: &[u8],
        master_key_id: &str,
        now: i64,
    ) -> StoreResult<()> {
        let (name, sealed, master_key_id) =
            (name.to_string(), sealed.to_vec(), master_key_id.to_string());
        self.write_one(1, move |c| Box::pin(async move {
        sqlx::query(
            "INSERT INTO secrets (name, sealed, master_key_id, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO UPDATE SET sealed = excluded.sealed, master_key_id = excluded.master_key_id",
        )
        .bind(name.as_str())
        .bind(sealed)
        .bind(master_key_id.as_str())
        .bind(now)
        .execute(&mut *c)
        .await
        .map_err(classify)?;
        Ok(())
        }))
        .await
    }

    pub(crate) async fn sealed_counts_impl(&self) -> StoreResult<Vec<(String, i64)>> {
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

    pub(crate) async fn sealed_key_ids_impl(&self) -> StoreResult<Vec<String>> {
        let mut ids: Vec<String> = Vec::new();
        // A loose index scan (`key_versions_master_key`, `import_tokens_master_key`): each
        // step seeks the next distinct id, where `DISTINCT` would read every row.
        for table in ["key_versions", "import_tokens"] {
            let sql = format!(
                "WITH RECURSIVE d(id) AS (
                    SELECT MIN(master_key_id) FROM {table}
                    UNION ALL
                    SELECT (SELECT MIN(master_key_id) FROM {table} WHERE master_key_id > d.id)
                    FROM d WHERE d.id IS NOT NULL)
                 SELECT id FROM d WHERE id IS NOT NULL"
            );
            for r in sqlx::query(&sql)
                .fetch_all(&self.read)
                .await
                .map_err(classify)?
            {
                ids.push(get::<String>(&r, "id")?);
            }
        }
        for r in sqlx::query(
            "SELECT DISTINCT master_key_id AS id FROM secrets WHERE master_key_id <> ''",
        )
        .fetch_all(&self.read)
        .await
        .map_err(classify)?
        {
            ids.push(get::<String>(&r, "id")?);
        }
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    pub(crate) async fn sealed_batch_impl(
        &self,
        keep: &str,
        limit: i64,
    ) -> StoreResult<Vec<SealedRow>> {
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

    pub(crate) async fn reseal_impl(
        &self,
        row: &SealedRow,
        sealed: &[u8],
        master_key_id: &str,
    ) -> StoreResult<bool> {
        let (row, sealed, master_key_id) =
            (row.clone(), sealed.to_vec(), master_key_id.to_string());
        self.write_one(1, move |c| Box::pin(async move {
        let q = match &row.place {
            SealedPlace::KeyVersion {
                instance,
                key,
                version,
            } => sqlx::query(
                "UPDATE key_versions SET sealed = $1, master_key_id = $2
                 WHERE id = $3 AND key_id = $4 AND instance_id = $5 AND master_key_id = $6 AND sealed = $7",
            )
            .bind(sealed.clone())
            .bind(master_key_id.as_str())
            .bind(version.as_str())
            .bind(key.as_str())
            .bind(instance.as_str()),
            SealedPlace::ImportToken { instance, token } => sqlx::query(
                "UPDATE import_tokens SET sealed_private = $1, master_key_id = $2
                 WHERE instance_id = $3 AND token_id = $4 AND master_key_id = $5 AND sealed_private = $6",
            )
            .bind(sealed.clone())
            .bind(master_key_id.as_str())
            .bind(instance.as_str())
            .bind(token.as_str()),
            SealedPlace::Secret { name } => sqlx::query(
                "UPDATE secrets SET sealed = $1, master_key_id = $2
                 WHERE name = $3 AND master_key_id <> '' AND master_key_id = $4 AND sealed = $5",
            )
            .bind(sealed.clone())
            .bind(master_key_id.as_str())
            .bind(name.as_str()),
        };
        let r = q
            .bind(row.master_key_id.as_str())
            .bind(row.sealed.clone())
            .execute(&mut *c)
            .await
            .map_err(classify)?;
        Ok(r.rows_affected() == 1)
        }))
        .await
    }
}

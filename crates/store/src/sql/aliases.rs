//! Aliases and key rings.

use keyward_domain::{InstanceId, KeyId};
use sqlx::any::AnyRow;

use super::*;
use crate::rowtag;
use crate::{AliasRow, ConflictKind, KeyRingRow, StoreError, StoreResult};

/// Most ids bound in one `IN (...)` list (SQLite allows 32,766 parameters, PostgreSQL 65,535).
pub(crate) const MAX_IDS_PER_STATEMENT: usize = 8_192;

pub(crate) fn alias_from_row(r: &AnyRow) -> StoreResult<AliasRow> {
    Ok(AliasRow {
        instance_id: uuid_col(r, "instance_id", InstanceId::parse)?,
        alias: get(r, "alias")?,
        key_id: uuid_col(r, "key_id", KeyId::parse)?,
        created_at: get(r, "created_at")?,
        created_by: get(r, "created_by")?,
    })
}

impl SqlStore {
    pub(crate) fn alias_checked(&self, r: &AnyRow) -> StoreResult<AliasRow> {
        self.checked(
            "key_aliases",
            r,
            alias_from_row,
            |a| format!("{}/{}", a.instance_id, a.alias),
            rowtag::alias_input,
        )
    }

    pub(crate) async fn create_alias_impl(&self, a: &AliasRow) -> StoreResult<()> {
        let (me, a) = (self.clone(), a.clone());
        self.write_one(1, move |c| {
            Box::pin(async move { me.insert_alias_in(c, &a).await })
        })
        .await
    }

    /// One alias row (with its tag) on `c`: in its own write or in a key's creation.
    pub(crate) async fn insert_alias_in(
        &self,
        c: &mut AnyConnection,
        a: &AliasRow,
    ) -> StoreResult<()> {
        let tag = self.tag_of(&rowtag::alias_input(a))?;
        sqlx::query(
            "INSERT INTO key_aliases (instance_id, alias, key_id, created_at, created_by, auth_tag) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(a.instance_id.to_string())
        .bind(a.alias.as_str())
        .bind(a.key_id.to_string())
        .bind(a.created_at)
        .bind(a.created_by.as_str())
        .bind(tag)
        .execute(&mut *c)
        .await
        .map_err(classify)?;
        Ok(())
    }

    pub(crate) async fn delete_alias_impl(
        &self,
        instance: InstanceId,
        alias: &str,
        key: KeyId,
    ) -> StoreResult<()> {
        self.delete_exactly_one(
            "DELETE FROM key_aliases WHERE instance_id = $1 AND alias = $2 AND key_id = $3",
            vec![instance.to_string(), alias.to_string(), key.to_string()],
        )
        .await
    }

    pub(crate) async fn aliases_of_impl(
        &self,
        instance: InstanceId,
        key: KeyId,
    ) -> StoreResult<Vec<AliasRow>> {
        let rows = sqlx::query(
            "SELECT instance_id, alias, key_id, created_at, created_by, auth_tag FROM key_aliases WHERE instance_id = $1 AND key_id = $2 ORDER BY created_at, alias",
        )
        .bind(instance.to_string())
        .bind(key.to_string())
        .fetch_all(&self.read)
        .await
        .map_err(classify)?;
        rows.iter().map(|r| self.alias_checked(r)).collect()
    }

    /// The aliases of `keys` (all of one instance) in one statement with one placeholder per
    /// key, `MAX_IDS_PER_STATEMENT` keys per statement (a key search passes at most 5,001).
    pub(crate) async fn aliases_of_keys_impl(
        &self,
        instance: InstanceId,
        keys: &[KeyId],
    ) -> StoreResult<Vec<AliasRow>> {
        let mut out = Vec::new();
        for chunk in keys.chunks(MAX_IDS_PER_STATEMENT) {
            let mut sql = String::with_capacity(160 + chunk.len() * 8);
            sql.push_str(
                "SELECT instance_id, alias, key_id, created_at, created_by, auth_tag FROM key_aliases WHERE instance_id = $1 AND key_id IN (",
            );
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push(',');
                }
                sql.push('$');
                sql.push_str(&(i + 2).to_string());
            }
            sql.push_str(") ORDER BY key_id, created_at, alias");
            // The statement's text varies with the number of keys: not worth a cached
            // prepared statement per length.
            let mut q = sqlx::query(&sql)
                .persistent(false)
                .bind(instance.to_string());
            for k in chunk {
                q = q.bind(k.to_string());
            }
            let rows = q.fetch_all(&self.read).await.map_err(classify)?;
            for r in &rows {
                out.push(self.alias_checked(r)?);
            }
        }
        Ok(out)
    }

    pub(crate) async fn resolve_alias_impl(
        &self,
        instance: InstanceId,
        alias: &str,
    ) -> StoreResult<Option<KeyId>> {
        let row = sqlx::query(
            "SELECT instance_id, alias, key_id, created_at, created_by, auth_tag FROM key_aliases WHERE instance_id = $1 AND alias = $2",
        )
        .bind(instance.to_string())
        .bind(alias)
        .fetch_optional(&self.read)
        .await
        .map_err(classify)?;
        row.as_ref()
            .map(|r| self.alias_checked(r).map(|a| a.key_id))
            .transpose()
    }

    pub(crate) async fn create_key_ring_impl(&self, r: &KeyRingRow) -> StoreResult<()> {
        let r = r.clone();
        self.write_one(1, move |c| Box::pin(async move {
        sqlx::query("INSERT INTO key_rings (instance_id, id, created_at, created_by) VALUES ($1, $2, $3, $4)")
            .bind(r.instance_id.to_string())
            .bind(r.id.as_str())
            .bind(r.created_at)
            .bind(r.created_by.as_str())
            .execute(&mut *c)
            .await
            .map_err(classify)?;
        Ok(())
        }))
        .await
    }

    pub(crate) async fn list_key_rings_impl(
        &self,
        instance: InstanceId,
    ) -> StoreResult<Vec<KeyRingRow>> {
        let rows = sqlx::query(
            "SELECT instance_id, id, created_at, created_by FROM key_rings WHERE instance_id = $1 ORDER BY created_at, id",
        )
        .bind(instance.to_string())
        .fetch_all(&self.read)
        .await
        .map_err(classify)?;
        rows.iter()
            .map(|r| {
                Ok(KeyRingRow {
                    instance_id: uuid_col(r, "instance_id", InstanceId::parse)?,
                    id: get(r, "id")?,
                    created_at: get(r, "created_at")?,
                    created_by: get(r, "created_by")?,
                })
            })
            .collect()
    }

    pub(crate) async fn delete_key_ring_impl(
        &self,
        instance: InstanceId,
        id: &str,
        force: bool,
    ) -> StoreResult<()> {
        let (me, id) = (self.clone(), id.to_string());
        self.write_tx(move |c| {
            Box::pin(async move { me.delete_key_ring_in(c, instance, &id, force).await })
        })
        .await
    }

    async fn delete_key_ring_in(
        &self,
        c: &mut AnyConnection,
        instance: InstanceId,
        id: &str,
        force: bool,
    ) -> StoreResult<()> {
        let inst = instance.to_string();
        let live: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM keys WHERE instance_id = $1 AND key_ring_id = $2 AND state <> 5",
        )
        .bind(inst.as_str())
        .bind(id)
        .fetch_one(&mut *c)
        .await
        .map_err(classify)?;
        let all: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM keys WHERE instance_id = $1 AND key_ring_id = $2",
        )
        .bind(inst.as_str())
        .bind(id)
        .fetch_one(&mut *c)
        .await
        .map_err(classify)?;
        if live > 0 || (all > 0 && !force) {
            return Err(StoreError::Conflict(ConflictKind::KeyRingHasKeys));
        }
        // The (destroyed) keys left in the ring move to `default`, each re-tagged.
        let moving = sqlx::query(&format!(
            "SELECT {KEY_COLS} FROM keys WHERE instance_id = $1 AND key_ring_id = $2"
        ))
        .bind(inst.as_str())
        .bind(id)
        .fetch_all(&mut *c)
        .await
        .map_err(classify)?;
        for row in &moving {
            let mut k = self.key_checked(row)?;
            k.key_ring_id = "default".to_string();
            let tag = self.tag_of(&rowtag::key_input(&k))?;
            sqlx::query(
                "UPDATE keys SET key_ring_id = 'default', auth_tag = $3, row_version = row_version + 1 WHERE instance_id = $1 AND id = $2",
            )
            .bind(inst.as_str())
            .bind(k.id.to_string())
            .bind(tag)
            .execute(&mut *c)
            .await
            .map_err(classify)?;
        }
        let r = sqlx::query("DELETE FROM key_rings WHERE instance_id = $1 AND id = $2")
            .bind(inst.as_str())
            .bind(id)
            .execute(&mut *c)
            .await
            .map_err(classify)?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}

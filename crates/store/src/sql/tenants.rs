//! Instances, principals, API keys and role grants.

use keyward_domain::{InstanceId, Role};

use super::*;
use crate::rowtag;
use crate::{
    ApiKeyRow, ConflictKind, GrantRow, InstanceRow, PrincipalRow, StoreError, StoreResult,
};

impl SqlStore {
    pub(crate) async fn create_instance_impl(&self, row: &InstanceRow) -> StoreResult<()> {
        let tag = self.tag_of(&rowtag::instance_input(row))?;
        let row = row.clone();
        self.write_one(1, move |c| {
            Box::pin(async move {
                sqlx::query(
            "INSERT INTO instances (id, name, created_at, auth_tag) VALUES ($1, $2, $3, $4)",
        )
        .bind(row.id.to_string())
        .bind(row.name.as_str())
        .bind(row.created_at)
        .bind(tag)
        .execute(&mut *c)
        .await
        .map_err(classify)?;
                Ok(())
            })
        })
        .await
    }

    pub(crate) async fn get_instance_impl(
        &self,
        id: InstanceId,
    ) -> StoreResult<Option<InstanceRow>> {
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

    pub(crate) async fn list_instances_impl(&self) -> StoreResult<Vec<InstanceRow>> {
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

    pub(crate) async fn delete_instance_impl(&self, id: InstanceId) -> StoreResult<()> {
        self.write_tx(move |c| Box::pin(async move { delete_instance_in(c, id).await }))
            .await
    }

    pub(crate) async fn create_api_key_impl(
        &self,
        principal: &PrincipalRow,
        key: &ApiKeyRow,
        key_hash: &[u8],
    ) -> StoreResult<()> {
        let tag = self.tag_of(&rowtag::api_key_input(key, key_hash))?;
        let (principal, key, key_hash) = (principal.clone(), key.clone(), key_hash.to_vec());
        self.write_tx(move |c| Box::pin(async move {
        sqlx::query(
            "INSERT INTO principals (iam_id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT (iam_id) DO NOTHING",
        )
        .bind(principal.iam_id.as_str())
        .bind(principal.name.as_str())
        .bind(principal.created_at)
        .execute(&mut *c)
        .await
        .map_err(classify)?;
        sqlx::query(
            "INSERT INTO api_keys (id, iam_id, key_hash, name, created_at, auth_tag) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(key.id.as_str())
        .bind(key.iam_id.as_str())
        .bind(key_hash)
        .bind(key.name.as_str())
        .bind(key.created_at)
        .bind(tag)
        .execute(&mut *c)
        .await
        .map_err(classify)?;
        Ok(())
        }))
        .await
    }

    pub(crate) async fn find_api_key_impl(
        &self,
        key_hash: &[u8],
    ) -> StoreResult<Option<ApiKeyRow>> {
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

    pub(crate) async fn list_api_keys_impl(&self) -> StoreResult<Vec<ApiKeyRow>> {
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

    pub(crate) async fn delete_api_key_impl(&self, id: &str) -> StoreResult<()> {
        self.delete_exactly_one("DELETE FROM api_keys WHERE id = $1", vec![id.to_string()])
            .await
    }

    pub(crate) async fn api_key_exists_impl(&self, id: &str) -> StoreResult<bool> {
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

    pub(crate) async fn principal_exists_impl(&self, iam_id: &str) -> StoreResult<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM principals WHERE iam_id = $1")
            .bind(iam_id)
            .fetch_one(&self.read)
            .await
            .map_err(classify)?;
        Ok(n > 0)
    }

    pub(crate) async fn grant_impl(&self, g: &GrantRow) -> StoreResult<()> {
        // Granting again re-stamps the row (and replaces a tag that no longer verifies).
        let tag = self.tag_of(&rowtag::grant_input(g))?;
        let g = g.clone();
        self.write_one(1, move |c| Box::pin(async move {
        sqlx::query(
            "INSERT INTO role_grants (instance_id, iam_id, role, created_at, auth_tag) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (instance_id, iam_id, role) DO UPDATE SET created_at = excluded.created_at, auth_tag = excluded.auth_tag",
        )
        .bind(g.instance_id.to_string())
        .bind(g.iam_id.as_str())
        .bind(g.role.as_str())
        .bind(g.created_at)
        .bind(tag)
        .execute(&mut *c)
        .await
        .map_err(classify)?;
        Ok(())
        }))
        .await
    }

    pub(crate) async fn revoke_impl(
        &self,
        instance: InstanceId,
        iam_id: &str,
        role: Role,
    ) -> StoreResult<()> {
        self.delete_exactly_one(
            "DELETE FROM role_grants WHERE instance_id = $1 AND iam_id = $2 AND role = $3",
            vec![
                instance.to_string(),
                iam_id.to_string(),
                role.as_str().to_string(),
            ],
        )
        .await
    }

    pub(crate) async fn roles_of_impl(
        &self,
        instance: InstanceId,
        iam_id: &str,
    ) -> StoreResult<Vec<Role>> {
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

    pub(crate) async fn list_grants_impl(&self) -> StoreResult<Vec<GrantRow>> {
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
}

/// Deletes an instance without live keys, with its grants and import token.
async fn delete_instance_in(c: &mut AnyConnection, id: InstanceId) -> StoreResult<()> {
    let id_s = id.to_string();
    let live: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM keys WHERE instance_id = $1 AND state <> 5")
            .bind(id_s.as_str())
            .fetch_one(&mut *c)
            .await
            .map_err(classify)?;
    if live > 0 {
        return Err(StoreError::Conflict(ConflictKind::InstanceHasKeys));
    }
    for stmt in [
        "DELETE FROM role_grants WHERE instance_id = $1",
        "DELETE FROM import_tokens WHERE instance_id = $1",
    ] {
        sqlx::query(stmt)
            .bind(id_s.as_str())
            .execute(&mut *c)
            .await
            .map_err(classify)?;
    }
    let r = sqlx::query("DELETE FROM instances WHERE id = $1")
        .bind(id_s.as_str())
        .execute(&mut *c)
        .await
        .map_err(classify)?;
    if r.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

//! Key versions: one row per version of a key's material, sealed.

use keyward_domain::{InstanceId, KeyId};

use super::*;
use crate::rowtag;
use crate::{StoreResult, VersionRow};

impl SqlStore {
    pub(crate) async fn versions_impl(
        &self,
        instance: InstanceId,
        key: KeyId,
    ) -> StoreResult<Vec<VersionRow>> {
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

    pub(crate) async fn insert_version(
        &self,
        c: &mut AnyConnection,
        v: &VersionRow,
    ) -> StoreResult<()> {
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
        .execute(&mut *c)
        .await
        .map_err(classify)?;
        Ok(())
    }
}

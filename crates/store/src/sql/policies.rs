//! Instance policies and registrations.

use keyward_domain::{InstanceId, KeyId};
use sqlx::any::AnyRow;

use super::*;
use crate::rowtag;
use crate::{PolicyRow, RegistrationRow, StoreError, StoreResult};

pub(crate) fn registration_from_row(r: &AnyRow) -> StoreResult<RegistrationRow> {
    Ok(RegistrationRow {
        instance_id: uuid_col(r, "instance_id", InstanceId::parse)?,
        key_id: uuid_col(r, "key_id", KeyId::parse)?,
        resource_crn: get(r, "resource_crn")?,
        prevent_key_deletion: get::<i64>(r, "prevent_key_deletion")? != 0,
        description: get(r, "description")?,
        created_at: get(r, "created_at")?,
        created_by: get(r, "created_by")?,
    })
}

impl SqlStore {
    pub(crate) async fn put_instance_policy_impl(&self, p: &PolicyRow) -> StoreResult<()> {
        let data =
            serde_json::to_string(&p.data).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let tag = self.tag_of(&rowtag::policy_input(p))?;
        let p = p.clone();
        self.write_one(1, move |c| Box::pin(async move {
        sqlx::query(
            "INSERT INTO instance_policies (instance_id, policy_type, data, created_at, created_by, updated_at, updated_by, auth_tag)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (instance_id, policy_type) DO UPDATE SET data = excluded.data,
               updated_at = excluded.updated_at, updated_by = excluded.updated_by,
               auth_tag = excluded.auth_tag",
        )
        .bind(p.instance_id.to_string())
        .bind(p.policy_type.as_str())
        .bind(data)
        .bind(p.created_at)
        .bind(p.created_by.as_str())
        .bind(p.updated_at)
        .bind(p.updated_by.as_str())
        .bind(tag)
        .execute(&mut *c)
        .await
        .map_err(classify)?;
        Ok(())
        }))
        .await
    }

    pub(crate) async fn instance_policies_impl(
        &self,
        instance: InstanceId,
    ) -> StoreResult<Vec<PolicyRow>> {
        let rows = sqlx::query(
            "SELECT instance_id, policy_type, data, created_at, created_by, updated_at, updated_by, auth_tag FROM instance_policies WHERE instance_id = $1 ORDER BY policy_type",
        )
        .bind(instance.to_string())
        .fetch_all(&self.read)
        .await
        .map_err(classify)?;
        rows.iter()
            .map(|r| {
                let data: String = get(r, "data")?;
                let p = PolicyRow {
                    instance_id: uuid_col(r, "instance_id", InstanceId::parse)?,
                    policy_type: get(r, "policy_type")?,
                    data: serde_json::from_str(&data)
                        .map_err(|_| StoreError::Corrupt("policy data".into()))?,
                    created_at: get(r, "created_at")?,
                    created_by: get(r, "created_by")?,
                    updated_at: get(r, "updated_at")?,
                    updated_by: get(r, "updated_by")?,
                };
                self.check_tag(
                    "instance_policies",
                    &format!("{}/{}", p.instance_id, p.policy_type),
                    &rowtag::policy_input(&p),
                    tag_col(r)?.as_deref(),
                )?;
                Ok(p)
            })
            .collect()
    }

    pub(crate) async fn add_registration_impl(&self, r: &RegistrationRow) -> StoreResult<()> {
        let r = r.clone();
        self.write_one(1, move |c| Box::pin(async move {
        sqlx::query(
            "INSERT INTO registrations (instance_id, key_id, resource_crn, prevent_key_deletion, description, created_at, created_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(r.instance_id.to_string())
        .bind(r.key_id.to_string())
        .bind(r.resource_crn.as_str())
        .bind(i64::from(r.prevent_key_deletion))
        .bind(r.description.clone())
        .bind(r.created_at)
        .bind(r.created_by.as_str())
        .execute(&mut *c)
        .await
        .map_err(classify)?;
        Ok(())
        }))
        .await
    }

    pub(crate) async fn registrations_impl(
        &self,
        instance: InstanceId,
        key: Option<KeyId>,
    ) -> StoreResult<Vec<RegistrationRow>> {
        const COLS: &str = "instance_id, key_id, resource_crn, prevent_key_deletion, description, created_at, created_by";
        let rows = match key {
            Some(k) => sqlx::query(&format!(
                "SELECT {COLS} FROM registrations WHERE instance_id = $1 AND key_id = $2 ORDER BY created_at, resource_crn"
            ))
            .bind(instance.to_string())
            .bind(k.to_string())
            .fetch_all(&self.read)
            .await,
            None => sqlx::query(&format!(
                "SELECT {COLS} FROM registrations WHERE instance_id = $1 ORDER BY created_at, resource_crn"
            ))
            .bind(instance.to_string())
            .fetch_all(&self.read)
            .await,
        }
        .map_err(classify)?;
        rows.iter().map(registration_from_row).collect()
    }
}

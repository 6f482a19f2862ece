//! KMIP adapters, their client certificates and their objects (migration `0008_kmip.sql`,
//! docs/kmip.md). Every query names the instance (and the adapter below it), so no call
//! reaches another tenant's rows; a certificate is found by its fingerprint alone, which is
//! how the KMIP listener learns the adapter (and instance) of a client.

use keyward_domain::{InstanceId, KeyId};
use sqlx::any::AnyRow;

use super::*;
use crate::rowtag;
use crate::{ConflictKind, KmipAdapterRow, KmipCertRow, KmipObjectRow, StoreError, StoreResult};

const ADAPTER_COLS: &str =
    "id, instance_id, name, description, profile, crk_id, created_by, created_at, updated_by, updated_at, auth_tag";
const CERT_COLS: &str =
    "id, instance_id, adapter_id, name, certificate, fingerprint, created_by, created_at, auth_tag";
const OBJECT_COLS: &str = "id, instance_id, adapter_id, object_type, state, meta, wrapped, row_version, created_by_cert_id, created_by, created_at, updated_by_cert_id, updated_by, updated_at, destroyed_by_cert_id, destroyed_by, destroyed_at, auth_tag";

fn adapter_from_row(r: &AnyRow) -> StoreResult<KmipAdapterRow> {
    Ok(KmipAdapterRow {
        id: get(r, "id")?,
        instance_id: uuid_col(r, "instance_id", InstanceId::parse)?,
        name: get(r, "name")?,
        description: get(r, "description")?,
        profile: get(r, "profile")?,
        crk_id: uuid_col(r, "crk_id", KeyId::parse)?,
        created_by: get(r, "created_by")?,
        created_at: get(r, "created_at")?,
        updated_by: get(r, "updated_by")?,
        updated_at: get(r, "updated_at")?,
    })
}

fn cert_from_row(r: &AnyRow) -> StoreResult<KmipCertRow> {
    Ok(KmipCertRow {
        id: get(r, "id")?,
        instance_id: uuid_col(r, "instance_id", InstanceId::parse)?,
        adapter_id: get(r, "adapter_id")?,
        name: get(r, "name")?,
        certificate: get(r, "certificate")?,
        fingerprint: get(r, "fingerprint")?,
        created_by: get(r, "created_by")?,
        created_at: get(r, "created_at")?,
    })
}

fn object_from_row(r: &AnyRow) -> StoreResult<KmipObjectRow> {
    Ok(KmipObjectRow {
        id: get(r, "id")?,
        instance_id: uuid_col(r, "instance_id", InstanceId::parse)?,
        adapter_id: get(r, "adapter_id")?,
        object_type: get(r, "object_type")?,
        state: get(r, "state")?,
        meta: get(r, "meta")?,
        wrapped: get(r, "wrapped")?,
        row_version: get(r, "row_version")?,
        created_by_cert_id: get(r, "created_by_cert_id")?,
        created_by: get(r, "created_by")?,
        created_at: get(r, "created_at")?,
        updated_by_cert_id: get(r, "updated_by_cert_id")?,
        updated_by: get(r, "updated_by")?,
        updated_at: get(r, "updated_at")?,
        destroyed_by_cert_id: get(r, "destroyed_by_cert_id")?,
        destroyed_by: get(r, "destroyed_by")?,
        destroyed_at: get(r, "destroyed_at")?,
    })
}

impl SqlStore {
    fn adapter_checked(&self, r: &AnyRow) -> StoreResult<KmipAdapterRow> {
        let a = adapter_from_row(r)?;
        self.check_tag(
            "kmip_adapters",
            &a.id,
            &rowtag::kmip_adapter_input(&a),
            tag_col(r)?.as_deref(),
        )?;
        Ok(a)
    }

    fn cert_checked(&self, r: &AnyRow) -> StoreResult<KmipCertRow> {
        let c = cert_from_row(r)?;
        self.check_tag(
            "kmip_client_certs",
            &c.id,
            &rowtag::kmip_cert_input(&c),
            tag_col(r)?.as_deref(),
        )?;
        Ok(c)
    }

    fn object_checked(&self, r: &AnyRow) -> StoreResult<KmipObjectRow> {
        let o = object_from_row(r)?;
        self.check_tag(
            "kmip_objects",
            &o.id,
            &rowtag::kmip_object_input(&o),
            tag_col(r)?.as_deref(),
        )?;
        Ok(o)
    }

    pub(crate) async fn create_kmip_adapter_impl(&self, a: &KmipAdapterRow) -> StoreResult<()> {
        let tag = self.tag_of(&rowtag::kmip_adapter_input(a))?;
        let a = a.clone();
        self.write_one(1, move |c| {
            Box::pin(async move {
                sqlx::query(&format!(
                    "INSERT INTO kmip_adapters ({ADAPTER_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)"
                ))
                .bind(a.id.as_str())
                .bind(a.instance_id.to_string())
                .bind(a.name.as_str())
                .bind(a.description.as_str())
                .bind(a.profile.as_str())
                .bind(a.crk_id.to_string())
                .bind(a.created_by.as_str())
                .bind(a.created_at)
                .bind(a.updated_by.as_str())
                .bind(a.updated_at)
                .bind(tag)
                .execute(&mut *c)
                .await
                .map_err(classify)?;
                Ok(())
            })
        })
        .await
    }

    pub(crate) async fn kmip_adapters_impl(
        &self,
        instance: InstanceId,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(Vec<KmipAdapterRow>, i64)> {
        let rows = sqlx::query(&format!(
            "SELECT {ADAPTER_COLS} FROM kmip_adapters WHERE instance_id = $1
             ORDER BY created_at, id LIMIT $2 OFFSET $3"
        ))
        .bind(instance.to_string())
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.read)
        .await
        .map_err(classify)?;
        let total: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM kmip_adapters WHERE instance_id = $1")
                .bind(instance.to_string())
                .fetch_one(&self.read)
                .await
                .map_err(classify)?;
        Ok((
            rows.iter()
                .map(|r| self.adapter_checked(r))
                .collect::<StoreResult<_>>()?,
            total,
        ))
    }

    pub(crate) async fn get_kmip_adapter_impl(
        &self,
        instance: InstanceId,
        id_or_name: &str,
    ) -> StoreResult<Option<KmipAdapterRow>> {
        let row = sqlx::query(&format!(
            "SELECT {ADAPTER_COLS} FROM kmip_adapters WHERE instance_id = $1 AND (id = $2 OR name = $2)
             ORDER BY CASE WHEN id = $2 THEN 0 ELSE 1 END LIMIT 1"
        ))
        .bind(instance.to_string())
        .bind(id_or_name)
        .fetch_optional(&self.read)
        .await
        .map_err(classify)?;
        row.as_ref().map(|r| self.adapter_checked(r)).transpose()
    }

    pub(crate) async fn delete_kmip_adapter_impl(
        &self,
        instance: InstanceId,
        id: &str,
    ) -> StoreResult<()> {
        let (inst, id) = (instance.to_string(), id.to_string());
        self.write_tx(move |c| {
            Box::pin(async move {
                // Objects that are not destroyed keep their adapter.
                let live: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM kmip_objects WHERE instance_id = $1 AND adapter_id = $2 AND wrapped IS NOT NULL",
                )
                .bind(inst.as_str())
                .bind(id.as_str())
                .fetch_one(&mut *c)
                .await
                .map_err(classify)?;
                if live > 0 {
                    return Err(StoreError::Conflict(ConflictKind::AdapterHasObjects));
                }
                let r = sqlx::query("DELETE FROM kmip_adapters WHERE instance_id = $1 AND id = $2")
                    .bind(inst.as_str())
                    .bind(id.as_str())
                    .execute(&mut *c)
                    .await
                    .map_err(classify)?;
                if r.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                for table in ["kmip_client_certs", "kmip_objects"] {
                    sqlx::query(&format!(
                        "DELETE FROM {table} WHERE instance_id = $1 AND adapter_id = $2"
                    ))
                    .bind(inst.as_str())
                    .bind(id.as_str())
                    .execute(&mut *c)
                    .await
                    .map_err(classify)?;
                }
                Ok(())
            })
        })
        .await
    }

    pub(crate) async fn create_kmip_cert_impl(&self, k: &KmipCertRow) -> StoreResult<()> {
        let tag = self.tag_of(&rowtag::kmip_cert_input(k))?;
        let k = k.clone();
        self.write_tx(move |c| {
            Box::pin(async move {
                // Only on an adapter that exists (it may be deleted meanwhile).
                let r = sqlx::query(&format!(
                    "INSERT INTO kmip_client_certs ({CERT_COLS})
                     SELECT $1,$2,$3,$4,$5,$6,$7,$8,$9 WHERE EXISTS
                       (SELECT 1 FROM kmip_adapters WHERE instance_id = $2 AND id = $3)"
                ))
                .bind(k.id.as_str())
                .bind(k.instance_id.to_string())
                .bind(k.adapter_id.as_str())
                .bind(k.name.as_str())
                .bind(k.certificate.as_str())
                .bind(k.fingerprint.clone())
                .bind(k.created_by.as_str())
                .bind(k.created_at)
                .bind(tag)
                .execute(&mut *c)
                .await
                .map_err(classify)?;
                if r.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            })
        })
        .await
    }

    /// A page of one adapter's rows of `table` (oldest first) with `cols`, and their total.
    /// `table` and `cols` are this module's constants, never input.
    async fn adapter_page(
        &self,
        table: &str,
        cols: &str,
        instance: InstanceId,
        adapter: &str,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(Vec<AnyRow>, i64)> {
        let rows = sqlx::query(&format!(
            "SELECT {cols} FROM {table} WHERE instance_id = $1 AND adapter_id = $2
             ORDER BY created_at, id LIMIT $3 OFFSET $4"
        ))
        .bind(instance.to_string())
        .bind(adapter)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.read)
        .await
        .map_err(classify)?;
        let total: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM {table} WHERE instance_id = $1 AND adapter_id = $2"
        ))
        .bind(instance.to_string())
        .bind(adapter)
        .fetch_one(&self.read)
        .await
        .map_err(classify)?;
        Ok((rows, total))
    }

    pub(crate) async fn kmip_certs_impl(
        &self,
        instance: InstanceId,
        adapter: &str,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(Vec<KmipCertRow>, i64)> {
        let (rows, total) = self
            .adapter_page(
                "kmip_client_certs",
                CERT_COLS,
                instance,
                adapter,
                limit,
                offset,
            )
            .await?;
        Ok((
            rows.iter()
                .map(|r| self.cert_checked(r))
                .collect::<StoreResult<_>>()?,
            total,
        ))
    }

    pub(crate) async fn get_kmip_cert_impl(
        &self,
        instance: InstanceId,
        adapter: &str,
        id_or_name: &str,
    ) -> StoreResult<Option<KmipCertRow>> {
        let row = sqlx::query(&format!(
            "SELECT {CERT_COLS} FROM kmip_client_certs
             WHERE instance_id = $1 AND adapter_id = $2 AND (id = $3 OR name = $3)
             ORDER BY CASE WHEN id = $3 THEN 0 ELSE 1 END LIMIT 1"
        ))
        .bind(instance.to_string())
        .bind(adapter)
        .bind(id_or_name)
        .fetch_optional(&self.read)
        .await
        .map_err(classify)?;
        row.as_ref().map(|r| self.cert_checked(r)).transpose()
    }

    pub(crate) async fn find_kmip_cert_impl(
        &self,
        fingerprint: &[u8],
    ) -> StoreResult<Option<KmipCertRow>> {
        let row = sqlx::query(&format!(
            "SELECT {CERT_COLS} FROM kmip_client_certs WHERE fingerprint = $1"
        ))
        .bind(fingerprint.to_vec())
        .fetch_optional(&self.read)
        .await
        .map_err(classify)?;
        row.as_ref().map(|r| self.cert_checked(r)).transpose()
    }

    pub(crate) async fn insert_kmip_object_impl(&self, o: &KmipObjectRow) -> StoreResult<()> {
        let tag = self.tag_of(&rowtag::kmip_object_input(o))?;
        let o = o.clone();
        self.write_tx(move |c| {
            Box::pin(async move {
                let r = sqlx::query(&format!(
                    "INSERT INTO kmip_objects ({OBJECT_COLS})
                     SELECT $1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18 WHERE EXISTS
                       (SELECT 1 FROM kmip_adapters WHERE instance_id = $2 AND id = $3)"
                ))
                .bind(o.id.as_str())
                .bind(o.instance_id.to_string())
                .bind(o.adapter_id.as_str())
                .bind(o.object_type)
                .bind(o.state)
                .bind(o.meta.clone())
                .bind(o.wrapped.clone())
                .bind(o.row_version)
                .bind(o.created_by_cert_id.clone())
                .bind(o.created_by.as_str())
                .bind(o.created_at)
                .bind(o.updated_by_cert_id.clone())
                .bind(o.updated_by.as_str())
                .bind(o.updated_at)
                .bind(o.destroyed_by_cert_id.clone())
                .bind(o.destroyed_by.clone())
                .bind(o.destroyed_at)
                .bind(tag)
                .execute(&mut *c)
                .await
                .map_err(classify)?;
                if r.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            })
        })
        .await
    }

    pub(crate) async fn get_kmip_object_impl(
        &self,
        instance: InstanceId,
        adapter: &str,
        id: &str,
    ) -> StoreResult<Option<KmipObjectRow>> {
        let row = sqlx::query(&format!(
            "SELECT {OBJECT_COLS} FROM kmip_objects WHERE instance_id = $1 AND adapter_id = $2 AND id = $3"
        ))
        .bind(instance.to_string())
        .bind(adapter)
        .bind(id)
        .fetch_optional(&self.read)
        .await
        .map_err(classify)?;
        row.as_ref().map(|r| self.object_checked(r)).transpose()
    }

    pub(crate) async fn kmip_objects_impl(
        &self,
        instance: InstanceId,
        adapter: &str,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(Vec<KmipObjectRow>, i64)> {
        let (rows, total) = self
            .adapter_page(
                "kmip_objects",
                OBJECT_COLS,
                instance,
                adapter,
                limit,
                offset,
            )
            .await?;
        Ok((
            rows.iter()
                .map(|r| self.object_checked(r))
                .collect::<StoreResult<_>>()?,
            total,
        ))
    }

    /// Writes `o` (whose `row_version` is one past the stored one) only if the stored row
    /// still has `o.row_version - 1`: `Conflict(KeyChanged)` otherwise.
    pub(crate) async fn update_kmip_object_impl(&self, o: &KmipObjectRow) -> StoreResult<()> {
        let tag = self.tag_of(&rowtag::kmip_object_input(o))?;
        let o = o.clone();
        self.write_one(1, move |c| {
            Box::pin(async move {
                let r = sqlx::query(
                    "UPDATE kmip_objects SET state = $4, meta = $5, wrapped = $6, row_version = $7,
                       updated_by_cert_id = $8, updated_by = $9, updated_at = $10,
                       destroyed_by_cert_id = $11, destroyed_by = $12, destroyed_at = $13, auth_tag = $15
                     WHERE instance_id = $1 AND adapter_id = $2 AND id = $3 AND row_version = $14",
                )
                .bind(o.instance_id.to_string())
                .bind(o.adapter_id.as_str())
                .bind(o.id.as_str())
                .bind(o.state)
                .bind(o.meta.clone())
                .bind(o.wrapped.clone())
                .bind(o.row_version)
                .bind(o.updated_by_cert_id.clone())
                .bind(o.updated_by.as_str())
                .bind(o.updated_at)
                .bind(o.destroyed_by_cert_id.clone())
                .bind(o.destroyed_by.clone())
                .bind(o.destroyed_at)
                .bind(o.row_version - 1)
                .bind(tag)
                .execute(&mut *c)
                .await
                .map_err(classify)?;
                if r.rows_affected() == 0 {
                    return Err(StoreError::Conflict(ConflictKind::KeyChanged));
                }
                Ok(())
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::sql::tests::install_test_auth;
    use crate::{DatabaseUrl, Store};

    async fn exec(store: &SqlStore, sql: &str) {
        let r = sqlx::query(sql).execute(&store.write).await.unwrap();
        assert!(r.rows_affected() >= 1, "{sql} changed nothing");
    }

    fn integrity<T: std::fmt::Debug>(r: StoreResult<T>, table: &str) {
        match r {
            Err(StoreError::Integrity { table: t, .. }) => assert_eq!(t, table),
            other => panic!("expected an integrity failure of {table}, got {other:?}"),
        }
    }

    /// A certificate moved to another adapter, an adapter pointed at another root key, an
    /// object's state or wrapped material edited, or a certificate row inserted without the
    /// row-authentication key: each is refused on read.
    #[tokio::test]
    async fn edited_kmip_rows_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let url = DatabaseUrl::new(format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("k.db").display()
        ));
        let store = SqlStore::connect(&url).await.unwrap();
        install_test_auth(&store);
        let inst = InstanceId::new();
        for (id, name) in [("ad-1", "one"), ("ad-2", "two")] {
            store
                .create_kmip_adapter(&KmipAdapterRow {
                    id: id.into(),
                    instance_id: inst,
                    name: name.into(),
                    description: String::new(),
                    profile: "native_1.0".into(),
                    crk_id: KeyId::new(),
                    created_by: "me".into(),
                    created_at: 1,
                    updated_by: "me".into(),
                    updated_at: 1,
                })
                .await
                .unwrap();
        }
        store
            .create_kmip_cert(&KmipCertRow {
                id: "c-1".into(),
                instance_id: inst,
                adapter_id: "ad-1".into(),
                name: "c1".into(),
                certificate: "pem".into(),
                fingerprint: vec![1; 32],
                created_by: "me".into(),
                created_at: 2,
            })
            .await
            .unwrap();
        store
            .insert_kmip_object(&KmipObjectRow {
                id: "o-1".into(),
                instance_id: inst,
                adapter_id: "ad-1".into(),
                object_type: 2,
                state: 3,
                meta: vec![1],
                wrapped: Some("w".into()),
                row_version: 1,
                created_by_cert_id: Some("c-1".into()),
                created_by: "k".into(),
                created_at: 3,
                updated_by_cert_id: None,
                updated_by: "k".into(),
                updated_at: 3,
                destroyed_by_cert_id: None,
                destroyed_by: None,
                destroyed_at: None,
            })
            .await
            .unwrap();
        exec(&store, "UPDATE kmip_client_certs SET adapter_id = 'ad-2'").await;
        integrity(store.find_kmip_cert(&[1; 32]).await, "kmip_client_certs");
        exec(&store, "UPDATE kmip_client_certs SET adapter_id = 'ad-1'").await;
        assert!(store.find_kmip_cert(&[1; 32]).await.unwrap().is_some());
        // a certificate row copied with another fingerprint (its tag copied too)
        exec(
            &store,
            "INSERT INTO kmip_client_certs SELECT 'c-2', instance_id, adapter_id, 'c2', certificate, X'0202020202020202020202020202020202020202020202020202020202020202', created_by, created_at, auth_tag FROM kmip_client_certs",
        )
        .await;
        integrity(store.find_kmip_cert(&[2; 32]).await, "kmip_client_certs");
        exec(
            &store,
            &format!(
                "UPDATE kmip_adapters SET crk_id = '{}' WHERE id = 'ad-1'",
                KeyId::new()
            ),
        )
        .await;
        integrity(store.get_kmip_adapter(inst, "ad-1").await, "kmip_adapters");
        exec(&store, "UPDATE kmip_objects SET state = 2").await;
        integrity(
            store.get_kmip_object(inst, "ad-1", "o-1").await,
            "kmip_objects",
        );
        integrity(
            store.kmip_objects(inst, "ad-1", 10, 0).await,
            "kmip_objects",
        );
    }
}

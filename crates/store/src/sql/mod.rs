//! [`SqlStore`]: the [`Store`] over SQLite or PostgreSQL through sqlx's `Any` driver.
//!
//! SQL here stays portable: `$n` placeholders (SQLite accepts them too), `INSERT … ON CONFLICT`,
//! `UPDATE … RETURNING`, integers for times and booleans, no advisory locks; the few fragments
//! that differ come from [`Dialect`] (`dialect.rs`). SQLite gets a single-connection writer
//! pool, so write transactions never contend for the write lock, and a reader pool for
//! everything else (WAL lets readers run beside the writer). On SQLite every write is a job of
//! the group commit (`batch`: one transaction and one fsync per batch of concurrent writes,
//! `docs/group-commit.md`); on PostgreSQL each write keeps its own transaction.
//!
//! Layout: `conn` (URL, pools), `batch` (group commit), `migrate`, `retry` (error
//! classification, retried writes),
//! `rows` (column lists, row parsing, tag checks), then one module per entity: `tenants`
//! (instances, principals, API keys, grants), `keys`, `versions`, `tokens`, `sealed`
//! (secrets and re-sealing), `aliases` (aliases, key rings), `policies` (instance policies,
//! registrations), `audit`, `rowauth`. The [`Store`] impl below only delegates.

use std::fmt;

use async_trait::async_trait;
use keyward_domain::{InstanceId, KeyId, Role, TokenId};

use sqlx::{AnyConnection, AnyPool, Connection};

use crate::rowtag::RowAuth;
use crate::{
    AliasRow, ApiKeyRow, AuditEntry, AuditQuery, AuditRow, GrantRow, InstanceRow, KeyQuery,
    KeyRingRow, KeyRow, PolicyRow, PrincipalRow, RegistrationRow, SealedRow, Store, StoreResult,
    TokenGuard, TokenRow, VersionRow,
};

mod aliases;
mod audit;
mod batch;
mod conn;
mod dialect;
mod failover;
mod keys;
mod kmip;
mod listing;
mod migrate;
mod policies;
mod retry;
mod rowauth;
mod rows;
mod sealed;
mod tenants;
mod tokens;
mod usage;
mod versions;

#[cfg(test)]
mod listing_tests;
#[cfg(test)]
pub(crate) mod tests;

pub use audit::AUDIT_BATCH_ROWS;
pub(crate) use batch::{Batcher, BoxFuture};
pub use batch::{MAX_BATCH_COST, MAX_BATCH_JOBS};
pub use conn::{checkpoint_sqlite_file, DatabaseUrl, PG_ACQUIRE_TIMEOUT, PG_MAX_CONNECTIONS};
pub(crate) use dialect::Dialect;
pub use dialect::{set_sqlite_cache_kib, DEFAULT_SQLITE_CACHE_KIB};
pub use failover::{
    database_error_detail, database_health, is_store_unavailable, DatabaseHealth, ErrorClass,
    Replication,
};
pub(crate) use retry::classify;
pub use retry::{is_serialization_failure, retry_write, serialization_retries, WRITE_ATTEMPTS};
pub(crate) use rows::{get, key_from_row, tag_col, uuid_col, KEY_COLS};

use retry::*;
use rows::*;

pub(crate) type Tx<'a> = sqlx::Transaction<'a, sqlx::Any>;

/// The SQL store. Cheap to clone (pools are shared).
#[derive(Clone)]
pub struct SqlStore {
    pub(crate) dialect: Dialect,
    pub(crate) read: AnyPool,
    pub(crate) write: AnyPool,
    pub(crate) url: DatabaseUrl,
    /// The row authenticator, once installed (`None`: authenticated tables can be neither read
    /// nor written).
    pub(crate) auth: std::sync::Arc<parking_lot::RwLock<Option<std::sync::Arc<dyn RowAuth>>>>,
    /// SQLite's group-commit queue (`batch.rs`); `None` on PostgreSQL.
    pub(crate) batch: Option<std::sync::Arc<Batcher>>,
    /// PostgreSQL: the hosts, the server seen, the synchronous-standby gate (`failover.rs`).
    pub(crate) pg: Option<std::sync::Arc<failover::PgHealth>>,
    /// Held by every clone: the failover watcher ends when the last one is dropped.
    pub(crate) _alive: std::sync::Arc<failover::Alive>,
}

impl SqlStore {
    /// On SQLite, the batches of the group commit that committed since the store connected
    /// and the writes they held (their ratio is the mean batch size); `None` on PostgreSQL.
    pub fn group_commit_stats(&self) -> Option<(u64, u64)> {
        self.batch.as_ref().map(|b| b.committed())
    }

    /// Runs `f` as one write transaction. On SQLite it is a job of the group commit
    /// (`batch.rs`): it runs inside a savepoint of a shared transaction and its result is
    /// returned once that transaction committed. On PostgreSQL it is its own transaction.
    pub(crate) async fn write_tx<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, StoreResult<T>> + Send + 'static,
    {
        if let Some(b) = &self.batch {
            let r = b.submit(1, false, f).await;
            if r.is_ok() {
                failover::note_write_ok();
            }
            return r;
        }
        if let Some(pg) = &self.pg {
            pg.check_sync(&self.write).await?;
        }
        let mut conn = self.write.acquire().await.map_err(classify)?;
        let r = within_tx_deadline(async {
            let mut tx = conn.begin().await.map_err(classify)?;
            let r = f(&mut tx).await?;
            // A connection lost during COMMIT leaves its outcome unknown: `Unavailable` (503),
            // never success, and `retry_write` does not run it again.
            tx.commit().await.map_err(classify)?;
            Ok(r)
        })
        .await;
        self.settle(&mut conn, &r);
        r
    }

    /// Runs `f`, a single statement (or none), as one write. On SQLite a job of the group commit
    /// costing `cost` (see [`MAX_BATCH_COST`]); on PostgreSQL the statement commits on its
    /// own (no explicit transaction).
    /// One `DELETE` (or other statement) of one row, its values bound as text in order, as a
    /// single write: `NotFound` when it touched no row.
    pub(crate) async fn delete_exactly_one(
        &self,
        sql: &'static str,
        binds: Vec<String>,
    ) -> StoreResult<()> {
        self.write_one(1, move |c| {
            Box::pin(async move {
                let mut q = sqlx::query(sql);
                for b in binds {
                    q = q.bind(b);
                }
                let r = q.execute(&mut *c).await.map_err(classify)?;
                if r.rows_affected() == 0 {
                    return Err(crate::StoreError::NotFound);
                }
                Ok(())
            })
        })
        .await
    }

    pub(crate) async fn write_one<T, F>(&self, cost: usize, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, StoreResult<T>> + Send + 'static,
    {
        if let Some(b) = &self.batch {
            let r = b.submit(cost, true, f).await;
            if r.is_ok() {
                failover::note_write_ok();
            }
            return r;
        }
        if let Some(pg) = &self.pg {
            pg.check_sync(&self.write).await?;
        }
        let mut conn = self.write.acquire().await.map_err(classify)?;
        let r = within_tx_deadline(f(&mut conn)).await;
        self.settle(&mut conn, &r);
        r
    }

    /// After a PostgreSQL write: a connection that failed with a connection-class error or
    /// 25006 is closed instead of going back to the pool (and a multi-host store looks for
    /// the primary again); a success stops the unwritable clock.
    fn settle<T>(&self, conn: &mut sqlx::pool::PoolConnection<sqlx::Any>, r: &StoreResult<T>) {
        match r {
            Ok(_) => failover::note_write_ok(),
            Err(e) if poisons_connection(e) => {
                conn.close_on_drop();
                if let Some(pg) = &self.pg {
                    pg.resolve.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
            Err(_) => {}
        }
    }

    /// PostgreSQL: runs one store call within [`PG_CALL_DEADLINE`] (waiting for a connection
    /// included), so that a request never hangs on a database that stopped answering without
    /// closing its connections (a network partition, a paused server): past it the call is
    /// `Unavailable`. Calls that scan whole tables (scheduler, administration, re-sealing,
    /// audit queries) are not bounded. SQLite: no bound.
    pub(crate) async fn bounded<T, F>(&self, f: F) -> StoreResult<T>
    where
        F: std::future::Future<Output = StoreResult<T>> + Send,
        T: Send,
    {
        let Some(pg) = &self.pg else {
            return f.await;
        };
        match tokio::time::timeout(PG_CALL_DEADLINE, f).await {
            Ok(r) => r,
            Err(_) => {
                failover::note_error(failover::ErrorClass::Connection);
                pg.resolve.store(true, std::sync::atomic::Ordering::Relaxed);
                Err(failover::unavailable(format!(
                    "the database did not answer within {} s",
                    PG_CALL_DEADLINE.as_secs()
                )))
            }
        }
    }

    /// With `on`, PostgreSQL writes are refused (`Unavailable`) while no synchronous standby
    /// is attached, asked at most once a second (`--require-sync-replica`). No effect on
    /// SQLite.
    pub fn set_require_sync_replica(&self, on: bool) {
        if let Some(pg) = &self.pg {
            pg.set_require_sync(on);
        }
    }

    /// What the PostgreSQL server says about synchronous replication (`None` on SQLite).
    pub async fn replication(&self) -> StoreResult<Option<Replication>> {
        if self.pg.is_none() {
            return Ok(None);
        }
        failover::sync_standby_attached(&self.write).await.map(Some)
    }

    /// PostgreSQL: the index in the URL's host list of the host the pool connects to.
    pub fn current_host(&self) -> Option<usize> {
        self.pg.as_ref().map(|pg| pg.current())
    }
}

/// PostgreSQL: the most one store call may take, the wait for a connection
/// ([`PG_ACQUIRE_TIMEOUT`]) included (see [`SqlStore::bounded`]).
pub const PG_CALL_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// The most one PostgreSQL write may take once it has its connection: shorter than what is left
/// of [`PG_CALL_DEADLINE`] after the longest wait for a connection, so that a write that runs
/// out of time is ended here, where its connection is closed (its outcome unknown:
/// `Unavailable`), and not by the call's deadline, which would leave that connection to the
/// pool.
const PG_TX_DEADLINE: std::time::Duration = std::time::Duration::from_secs(6);

async fn within_tx_deadline<T>(
    f: impl std::future::Future<Output = StoreResult<T>>,
) -> StoreResult<T> {
    match tokio::time::timeout(PG_TX_DEADLINE, f).await {
        Ok(r) => r,
        Err(_) => {
            failover::note_error(failover::ErrorClass::Connection);
            Err(failover::unavailable(format!(
                "the database did not finish the write within {} s; its outcome is unknown",
                PG_TX_DEADLINE.as_secs()
            )))
        }
    }
}

impl fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlStore")
            .field("dialect", &self.dialect)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Store for SqlStore {
    fn backend(&self) -> &'static str {
        self.dialect.name()
    }

    fn install_row_auth(&self, auth: std::sync::Arc<dyn RowAuth>) {
        self.install_row_auth_impl(auth);
    }

    async fn row_auth_state(&self) -> StoreResult<crate::RowAuthState> {
        self.row_auth_state_impl().await
    }

    async fn tag_untagged(&self, limit: i64) -> StoreResult<u64> {
        retry_write("tag_untagged", || self.tag_untagged_impl(limit)).await
    }

    async fn sealed_rows(&self) -> StoreResult<(i64, Vec<String>)> {
        self.sealed_rows_impl().await
    }

    async fn get_secret(&self, name: &str) -> StoreResult<Option<(Vec<u8>, String)>> {
        self.bounded(self.get_secret_impl(name)).await
    }

    async fn put_secret_if_absent(
        &self,
        name: &str,
        sealed: &[u8],
        master_key_id: &str,
        now: i64,
    ) -> StoreResult<bool> {
        self.bounded(retry_write("put_secret_if_absent", || {
            self.put_secret_if_absent_impl(name, sealed, master_key_id, now)
        }))
        .await
    }

    async fn put_secret(
        &self,
        name: &str,
        sealed: &[u8],
        master_key_id: &str,
        now: i64,
    ) -> StoreResult<()> {
        self.bounded(retry_write("put_secret", || {
            self.put_secret_impl(name, sealed, master_key_id, now)
        }))
        .await
    }

    async fn sealed_counts(&self) -> StoreResult<Vec<(String, i64)>> {
        self.sealed_counts_impl().await
    }

    async fn sealed_key_ids(&self) -> StoreResult<Vec<String>> {
        self.sealed_key_ids_impl().await
    }

    async fn sealed_batch(&self, keep: &str, limit: i64) -> StoreResult<Vec<SealedRow>> {
        self.sealed_batch_impl(keep, limit).await
    }

    async fn reseal(
        &self,
        row: &SealedRow,
        sealed: &[u8],
        master_key_id: &str,
    ) -> StoreResult<bool> {
        retry_write("reseal", || self.reseal_impl(row, sealed, master_key_id)).await
    }

    async fn create_instance(&self, row: &InstanceRow) -> StoreResult<()> {
        self.bounded(retry_write("create_instance", || {
            self.create_instance_impl(row)
        }))
        .await
    }

    async fn get_instance(&self, id: InstanceId) -> StoreResult<Option<InstanceRow>> {
        self.bounded(self.get_instance_impl(id)).await
    }

    async fn list_instances(&self) -> StoreResult<Vec<InstanceRow>> {
        self.list_instances_impl().await
    }

    async fn delete_instance(&self, id: InstanceId) -> StoreResult<()> {
        self.bounded(retry_write("delete_instance", || {
            self.delete_instance_impl(id)
        }))
        .await
    }

    async fn create_api_key(
        &self,
        principal: &PrincipalRow,
        key: &ApiKeyRow,
        key_hash: &[u8],
    ) -> StoreResult<()> {
        self.bounded(retry_write("create_api_key", || {
            self.create_api_key_impl(principal, key, key_hash)
        }))
        .await
    }

    async fn find_api_key(&self, key_hash: &[u8]) -> StoreResult<Option<ApiKeyRow>> {
        self.bounded(self.find_api_key_impl(key_hash)).await
    }

    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyRow>> {
        self.list_api_keys_impl().await
    }

    async fn delete_api_key(&self, id: &str) -> StoreResult<()> {
        self.bounded(retry_write("delete_api_key", || {
            self.delete_api_key_impl(id)
        }))
        .await
    }

    async fn api_key_exists(&self, id: &str) -> StoreResult<bool> {
        self.bounded(self.api_key_exists_impl(id)).await
    }

    async fn principal_exists(&self, iam_id: &str) -> StoreResult<bool> {
        self.bounded(self.principal_exists_impl(iam_id)).await
    }

    async fn grant(&self, g: &GrantRow) -> StoreResult<()> {
        self.bounded(retry_write("grant", || self.grant_impl(g)))
            .await
    }

    async fn revoke(&self, instance: InstanceId, iam_id: &str, role: Role) -> StoreResult<()> {
        self.bounded(retry_write("revoke", || {
            self.revoke_impl(instance, iam_id, role)
        }))
        .await
    }

    async fn roles_of(&self, instance: InstanceId, iam_id: &str) -> StoreResult<Vec<Role>> {
        self.bounded(self.roles_of_impl(instance, iam_id)).await
    }

    async fn list_grants(&self) -> StoreResult<Vec<GrantRow>> {
        self.list_grants_impl().await
    }

    async fn insert_key_with_aliases(
        &self,
        key: &KeyRow,
        version: &VersionRow,
        guard: Option<TokenGuard>,
        aliases: &[AliasRow],
    ) -> StoreResult<()> {
        self.bounded(retry_write("insert_key", || {
            self.insert_key_impl(key, version, guard, aliases)
        }))
        .await
    }

    async fn get_key(&self, instance: InstanceId, id: KeyId) -> StoreResult<Option<KeyRow>> {
        self.bounded(self.get_key_impl(instance, id)).await
    }

    async fn list_keys(&self, instance: InstanceId, q: &KeyQuery) -> StoreResult<Vec<KeyRow>> {
        self.bounded(self.list_keys_impl(instance, q)).await
    }

    async fn count_keys(&self, instance: InstanceId, q: &KeyQuery) -> StoreResult<i64> {
        self.bounded(self.count_keys_impl(instance, q)).await
    }

    async fn update_key(&self, key: &KeyRow) -> StoreResult<()> {
        self.bounded(retry_write("update_key", || self.update_key_impl(key)))
            .await
    }

    async fn rotate_key(
        &self,
        key: &KeyRow,
        version: &VersionRow,
        guard: Option<TokenGuard>,
    ) -> StoreResult<()> {
        self.bounded(retry_write("rotate_key", || {
            self.rotate_key_impl(key, version, guard)
        }))
        .await
    }

    async fn versions(&self, instance: InstanceId, key: KeyId) -> StoreResult<Vec<VersionRow>> {
        self.bounded(self.versions_impl(instance, key)).await
    }

    async fn purge_key(&self, key: &KeyRow) -> StoreResult<()> {
        self.bounded(retry_write("purge_key", || self.purge_key_impl(key)))
            .await
    }

    async fn due_rotations(&self, now: i64, limit: i64) -> StoreResult<Vec<KeyRow>> {
        self.keys_where(
            "next_rotation_at IS NOT NULL AND next_rotation_at <= $1 AND +state IN (1, 3)",
            // `keys_next_rotation` serves it (`+state`: not the state index, which would walk
            // every Active key; ordered by id, SQLite walked every key).
            "next_rotation_at, id",
            now,
            limit,
        )
        .await
    }

    async fn due_purges(&self, deleted_before: i64, limit: i64) -> StoreResult<Vec<KeyRow>> {
        self.keys_where(
            "state = 5 AND deletion_date < $1",
            "deletion_date, id",
            deleted_before,
            limit,
        )
        .await
    }

    async fn create_alias(&self, row: &AliasRow) -> StoreResult<()> {
        self.bounded(retry_write("create_alias", || self.create_alias_impl(row)))
            .await
    }

    async fn delete_alias(&self, instance: InstanceId, alias: &str, key: KeyId) -> StoreResult<()> {
        self.bounded(retry_write("delete_alias", || {
            self.delete_alias_impl(instance, alias, key)
        }))
        .await
    }

    async fn aliases_of(&self, instance: InstanceId, key: KeyId) -> StoreResult<Vec<AliasRow>> {
        self.bounded(self.aliases_of_impl(instance, key)).await
    }

    async fn aliases_of_keys(
        &self,
        instance: InstanceId,
        keys: &[KeyId],
    ) -> StoreResult<Vec<AliasRow>> {
        self.bounded(self.aliases_of_keys_impl(instance, keys))
            .await
    }

    async fn resolve_alias(&self, instance: InstanceId, alias: &str) -> StoreResult<Option<KeyId>> {
        self.bounded(self.resolve_alias_impl(instance, alias)).await
    }

    async fn create_key_ring(&self, row: &KeyRingRow) -> StoreResult<()> {
        self.bounded(retry_write("create_key_ring", || {
            self.create_key_ring_impl(row)
        }))
        .await
    }

    async fn list_key_rings(&self, instance: InstanceId) -> StoreResult<Vec<KeyRingRow>> {
        self.bounded(self.list_key_rings_impl(instance)).await
    }

    async fn delete_key_ring(
        &self,
        instance: InstanceId,
        id: &str,
        force: bool,
    ) -> StoreResult<()> {
        self.bounded(retry_write("delete_key_ring", || {
            self.delete_key_ring_impl(instance, id, force)
        }))
        .await
    }

    async fn put_instance_policy(&self, row: &PolicyRow) -> StoreResult<()> {
        self.bounded(retry_write("put_instance_policy", || {
            self.put_instance_policy_impl(row)
        }))
        .await
    }

    async fn instance_policies(&self, instance: InstanceId) -> StoreResult<Vec<PolicyRow>> {
        self.bounded(self.instance_policies_impl(instance)).await
    }

    async fn add_registration(&self, row: &RegistrationRow) -> StoreResult<()> {
        self.bounded(retry_write("add_registration", || {
            self.add_registration_impl(row)
        }))
        .await
    }

    async fn registrations(
        &self,
        instance: InstanceId,
        key: Option<KeyId>,
    ) -> StoreResult<Vec<RegistrationRow>> {
        self.bounded(self.registrations_impl(instance, key)).await
    }

    async fn put_token(&self, t: &TokenRow) -> StoreResult<()> {
        self.bounded(retry_write("put_token", || self.put_token_impl(t)))
            .await
    }

    async fn get_token(&self, instance: InstanceId) -> StoreResult<Option<TokenRow>> {
        self.bounded(self.get_token_impl(instance)).await
    }

    async fn take_token_retrieval(
        &self,
        instance: InstanceId,
        now: i64,
    ) -> StoreResult<Option<TokenRow>> {
        self.bounded(retry_write("take_token_retrieval", || {
            self.take_token_retrieval_impl(instance, now)
        }))
        .await
    }

    async fn create_kmip_adapter(&self, row: &crate::KmipAdapterRow) -> StoreResult<()> {
        self.bounded(retry_write("create_kmip_adapter", || {
            self.create_kmip_adapter_impl(row)
        }))
        .await
    }

    async fn kmip_adapters(
        &self,
        instance: InstanceId,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(Vec<crate::KmipAdapterRow>, i64)> {
        self.bounded(self.kmip_adapters_impl(instance, limit, offset))
            .await
    }

    async fn get_kmip_adapter(
        &self,
        instance: InstanceId,
        id_or_name: &str,
    ) -> StoreResult<Option<crate::KmipAdapterRow>> {
        self.bounded(self.get_kmip_adapter_impl(instance, id_or_name))
            .await
    }

    async fn delete_kmip_adapter(&self, instance: InstanceId, id: &str) -> StoreResult<()> {
        self.bounded(retry_write("delete_kmip_adapter", || {
            self.delete_kmip_adapter_impl(instance, id)
        }))
        .await
    }

    async fn create_kmip_cert(&self, row: &crate::KmipCertRow) -> StoreResult<()> {
        self.bounded(retry_write("create_kmip_cert", || {
            self.create_kmip_cert_impl(row)
        }))
        .await
    }

    async fn kmip_certs(
        &self,
        instance: InstanceId,
        adapter: &str,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(Vec<crate::KmipCertRow>, i64)> {
        self.bounded(self.kmip_certs_impl(instance, adapter, limit, offset))
            .await
    }

    async fn get_kmip_cert(
        &self,
        instance: InstanceId,
        adapter: &str,
        id_or_name: &str,
    ) -> StoreResult<Option<crate::KmipCertRow>> {
        self.bounded(self.get_kmip_cert_impl(instance, adapter, id_or_name))
            .await
    }

    async fn delete_kmip_cert(
        &self,
        instance: InstanceId,
        adapter: &str,
        id: &str,
    ) -> StoreResult<()> {
        self.bounded(retry_write("delete_kmip_cert", || {
            self.delete_exactly_one(
                "DELETE FROM kmip_client_certs WHERE instance_id = $1 AND adapter_id = $2 AND id = $3",
                vec![instance.to_string(), adapter.to_string(), id.to_string()],
            )
        }))
        .await
    }

    async fn find_kmip_cert(&self, fingerprint: &[u8]) -> StoreResult<Option<crate::KmipCertRow>> {
        self.bounded(self.find_kmip_cert_impl(fingerprint)).await
    }

    async fn insert_kmip_object(&self, row: &crate::KmipObjectRow) -> StoreResult<()> {
        self.bounded(retry_write("insert_kmip_object", || {
            self.insert_kmip_object_impl(row)
        }))
        .await
    }

    async fn get_kmip_object(
        &self,
        instance: InstanceId,
        adapter: &str,
        id: &str,
    ) -> StoreResult<Option<crate::KmipObjectRow>> {
        self.bounded(self.get_kmip_object_impl(instance, adapter, id))
            .await
    }

    async fn kmip_objects(
        &self,
        instance: InstanceId,
        adapter: &str,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(Vec<crate::KmipObjectRow>, i64)> {
        self.bounded(self.kmip_objects_impl(instance, adapter, limit, offset))
            .await
    }

    async fn update_kmip_object(&self, row: &crate::KmipObjectRow) -> StoreResult<()> {
        self.bounded(retry_write("update_kmip_object", || {
            self.update_kmip_object_impl(row)
        }))
        .await
    }

    async fn import_failures(&self, instance: InstanceId, token: TokenId) -> StoreResult<i64> {
        self.bounded(self.import_failures_impl(instance, token))
            .await
    }

    async fn record_import_failure(
        &self,
        instance: InstanceId,
        token: TokenId,
    ) -> StoreResult<i64> {
        self.bounded(retry_write("record_import_failure", || {
            self.record_import_failure_impl(instance, token)
        }))
        .await
    }

    async fn record_key_usage(&self, rows: &[crate::KeyUsageRow]) -> StoreResult<()> {
        self.bounded(retry_write("record_key_usage", || {
            self.record_key_usage_impl(rows)
        }))
        .await
    }

    async fn key_usage(
        &self,
        instance: InstanceId,
        keys: &[KeyId],
    ) -> StoreResult<Vec<crate::KeyUsageRow>> {
        self.bounded(self.key_usage_impl(instance, keys)).await
    }

    async fn append_audit(&self, rows: &[AuditRow]) -> StoreResult<()> {
        self.bounded(retry_write("append_audit", || self.append_audit_impl(rows)))
            .await
    }

    async fn audit_records(&self, q: &AuditQuery) -> StoreResult<Vec<AuditEntry>> {
        self.audit_records_impl(q).await
    }
}

//! Key rows: insert, read, list and count (`GET /keys` filters and sorts), conditional
//! update and rotation, purge, and the scheduler's queries.

use keyward_domain::{InstanceId, KeyId};

use super::*;
use crate::rowtag;
use crate::{
    ConflictKind, KeyQuery, KeyRow, SortField, StoreError, StoreResult, TokenGuard, VersionRow,
};

/// The state a key shows at "now", which every key query binds as `$2`: expiry turns Active
/// into Deactivated.
pub(crate) const EFFECTIVE_STATE: &str =
    "(CASE WHEN state = 1 AND expiration_date IS NOT NULL AND expiration_date <= $2 THEN 3 ELSE state END)";

/// A value bound by a key query, after `$1` (instance) and `$2` (now).
pub(crate) enum Bind {
    Int(i64),
    Text(String),
}

/// The WHERE clause (after `instance_id = $1`) and its values, numbered from `$3` as they are
/// written: one placeholder per value, built in one pass. Only fixed SQL fragments are
/// concatenated; every value is bound. States are deduplicated; the state rule is written so that
/// an index serves it (`listing::Clause::state_in`), and the `filter` terms follow in SQL.
pub(crate) fn key_filter(q: &KeyQuery) -> (String, Vec<Bind>) {
    let mut c = super::listing::Clause::default();
    c.sql.reserve(256);
    c.state_in(&super::listing::state_codes(q));
    if let Some(e) = q.extractable {
        c.sql.push_str(" AND extractable = ");
        c.binds.push(Bind::Int(i64::from(e)));
        c.sql.push_str(&format!("${}", c.binds.len() + 2));
    }
    if let Some(r) = &q.key_ring_id {
        c.sql.push_str(" AND key_ring_id = ");
        c.binds.push(Bind::Text(r.clone()));
        c.sql.push_str(&format!("${}", c.binds.len() + 2));
    }
    c.filter(q);
    (c.sql, c.binds)
}

/// The ORDER BY list: each field once (the first mention wins, as SQL would), then `id`.
pub(crate) fn sort_sql(q: &KeyQuery) -> String {
    let mut sql = String::with_capacity(64);
    let mut seen: Vec<SortField> = Vec::with_capacity(9);
    for (f, desc) in &q.sort {
        if seen.contains(f) {
            continue;
        }
        seen.push(*f);
        let col = match f {
            SortField::Id => "id",
            SortField::State => EFFECTIVE_STATE,
            SortField::Extractable => "extractable",
            SortField::Imported => "imported",
            SortField::CreationDate => "created_at",
            SortField::LastUpdateDate => "updated_at",
            SortField::LastRotateDate => "last_rotate_date",
            SortField::DeletionDate => "deletion_date",
            SortField::ExpirationDate => "expiration_date",
        };
        sql.push_str(col);
        sql.push_str(if *desc { " DESC, " } else { " ASC, " });
    }
    if seen.contains(&SortField::Id) {
        sql.truncate(sql.len() - 2);
    } else {
        sql.push_str("id ASC");
    }
    sql
}

/// Holds the instance's token row for the rest of the transaction (a no-op update takes its
/// row lock on PostgreSQL; SQLite has a single writer) and fails unless it is still `g.token_id`
/// and unexpired.
pub(crate) async fn check_guard(
    c: &mut AnyConnection,
    instance: InstanceId,
    g: TokenGuard,
) -> StoreResult<()> {
    let r = sqlx::query(
        "UPDATE import_tokens SET remaining = remaining WHERE instance_id = $1 AND token_id = $2 AND expires_at > $3",
    )
    .bind(instance.to_string())
    .bind(g.token_id.to_string())
    .bind(g.now)
    .execute(&mut *c)
    .await
    .map_err(classify)?;
    if r.rows_affected() == 1 {
        Ok(())
    } else {
        Err(StoreError::Conflict(ConflictKind::ImportToken))
    }
}

impl SqlStore {
    pub(crate) async fn insert_key_impl(
        &self,
        key: &KeyRow,
        version: &VersionRow,
        guard: Option<TokenGuard>,
        aliases: &[AliasRow],
    ) -> StoreResult<()> {
        let (me, key, version) = (self.clone(), key.clone(), version.clone());
        let aliases = aliases.to_vec();
        self.write_tx(move |c| {
            Box::pin(async move {
                me.insert_key_in(c, &key, &version, guard).await?;
                for a in &aliases {
                    me.insert_alias_in(c, a).await?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn insert_key_in(
        &self,
        c: &mut AnyConnection,
        key: &KeyRow,
        version: &VersionRow,
        guard: Option<TokenGuard>,
    ) -> StoreResult<()> {
        if let Some(g) = guard {
            check_guard(c, key.instance_id, g).await?;
        }
        let tag = self.tag_of(&rowtag::key_input(key))?;
        sqlx::query(&format!(
            "INSERT INTO keys ({KEY_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,$22)"
        ))
        .bind(key.id.to_string())
        .bind(key.instance_id.to_string())
        .bind(key.name.as_str())
        .bind(key.description.clone())
        .bind(json_text(&key.tags)?)
        .bind(key.state.code())
        .bind(i64::from(key.extractable))
        .bind(i64::from(key.imported))
        .bind(key.key_ring_id.as_str())
        .bind(key.expiration_date)
        .bind(key.created_at)
        .bind(key.created_by.as_str())
        .bind(key.updated_at)
        .bind(key.last_rotate_date)
        .bind(key.deletion_date)
        .bind(key.deleted_by.clone())
        .bind(key.state_changed_at)
        .bind(key.current_version.to_string())
        .bind(json_text(&key.attrs)?)
        .bind(key.row_version)
        .bind(key.next_rotation_at)
        .bind(tag)
        .execute(&mut *c)
        .await
        .map_err(classify)?;
        self.insert_version(c, version).await
    }

    pub(crate) async fn get_key_impl(
        &self,
        instance: InstanceId,
        id: KeyId,
    ) -> StoreResult<Option<KeyRow>> {
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLS} FROM keys WHERE instance_id = $1 AND id = $2"
        ))
        .bind(instance.to_string())
        .bind(id.to_string())
        .fetch_optional(&self.read)
        .await
        .map_err(classify)?;
        row.as_ref().map(|r| self.key_checked(r)).transpose()
    }

    pub(crate) async fn list_keys_impl(
        &self,
        instance: InstanceId,
        q: &KeyQuery,
    ) -> StoreResult<Vec<KeyRow>> {
        if q.search.is_some() {
            let ids = self.search_matches(instance, q).await?;
            let page: Vec<KeyId> = ids
                .into_iter()
                .skip(usize::try_from(q.offset).unwrap_or(usize::MAX))
                .take(usize::try_from(q.limit).unwrap_or(0))
                .collect();
            return self.keys_by_ids(instance, &page).await;
        }
        let (filter, binds) = key_filter(q);
        let n = binds.len() + 2;
        let end = q.offset.saturating_add(q.limit);
        let parts = (end <= super::listing::SEGMENTED_UP_TO)
            .then(|| super::listing::segments(q, self.dialect.name() == "sqlite"))
            .flatten();
        let sort = sort_sql(q);
        // The page's ids first, from an index that holds every column the WHERE and ORDER BY
        // read (migration 0007), however deep the offset; then only the page's rows.
        let ids = match parts {
            // Each part yields its first offset + limit ids from an index, in order; the
            // middle query orders at most that many per part.
            Some(parts) => {
                // Within a part where the first field is constant (one state, extractable or
                // imported value, or NULL), the part orders by the rest, which an index serves.
                let rest = match q.sort.first() {
                    Some((f, _)) => sort_sql(&KeyQuery {
                        sort: q.sort.iter().filter(|(g, _)| g != f).copied().collect(),
                        ..KeyQuery::default()
                    }),
                    None => sort.clone(),
                };
                let cols = super::listing::sort_columns(q);
                let mut union = String::with_capacity(512 * parts.len());
                let sqlite = self.dialect.name() == "sqlite";
                for (i, part) in parts.iter().enumerate() {
                    if i > 0 {
                        union.push_str(" UNION ALL ");
                    }
                    let inner = if part.constant { &rest } else { &sort };
                    let inner = if part.small && sqlite {
                        super::listing::unindexed_order(inner)
                    } else {
                        inner.clone()
                    };
                    let (rank, cond) = (part.rank, &part.cond);
                    union.push_str(&format!(
                        "SELECT * FROM (SELECT {cols}, {rank} AS part FROM keys WHERE instance_id = $1{filter}{cond} ORDER BY {inner} LIMIT ${}) AS p{i}",
                        n + 3
                    ));
                }
                format!(
                    "SELECT id AS pid FROM ({union}) AS parts ORDER BY part, {sort} LIMIT ${} OFFSET ${}",
                    n + 1,
                    n + 2
                )
            }
            None => format!(
                "SELECT id AS pid FROM keys WHERE instance_id = $1{filter} ORDER BY {sort} LIMIT ${} OFFSET ${}",
                n + 1,
                n + 2
            ),
        };
        // Then the page's rows, joined from the ids: `CROSS JOIN` makes SQLite read the ids first
        // (PostgreSQL plans it as any join). With `id IN (ids) ORDER BY f`, SQLite preferred
        // walking the whole `f` index in order and probing the id list: a second at a million
        // keys (BENCHMARKS.md, "A million keys").
        let sql = format!(
            "SELECT {KEY_COLS} FROM ({ids}) AS p CROSS JOIN keys WHERE keys.id = p.pid AND keys.instance_id = $1 ORDER BY {sort}"
        );
        let rows = super::listing::bind_all!(sqlx::query(&sql), instance, q.now, binds)
            .bind(q.limit)
            .bind(q.offset)
            .bind(end)
            .fetch_all(&self.read)
            .await
            .map_err(classify)?;
        rows.iter().map(|r| self.key_checked(r)).collect()
    }

    /// How many keys `q` selects (its limit and offset aside): from `key_counts` without
    /// `filter` and `search`, else by counting.
    pub(crate) async fn count_keys_impl(
        &self,
        instance: InstanceId,
        q: &KeyQuery,
    ) -> StoreResult<i64> {
        if q.search.is_some() {
            let n = self.search_matches(instance, q).await?.len();
            return Ok(i64::try_from(n).unwrap_or(i64::MAX));
        }
        if q.filter.is_empty() {
            return self.count_from_counters(instance, q).await;
        }
        let (filter, binds) = key_filter(q);
        let sql = format!("SELECT COUNT(*) FROM keys WHERE instance_id = $1{filter}");
        super::listing::bind_all!(sqlx::query_scalar::<_, i64>(&sql), instance, q.now, binds)
            .fetch_one(&self.read)
            .await
            .map_err(classify)
    }

    pub(crate) async fn update_key_impl(&self, key: &KeyRow) -> StoreResult<()> {
        let (me, key) = (self.clone(), key.clone());
        self.write_one(1, move |c| {
            Box::pin(async move { me.update_key_in(c, &key).await })
        })
        .await
    }

    pub(crate) async fn rotate_key_impl(
        &self,
        key: &KeyRow,
        version: &VersionRow,
        guard: Option<TokenGuard>,
    ) -> StoreResult<()> {
        let (me, key, version) = (self.clone(), key.clone(), version.clone());
        self.write_tx(move |c| {
            Box::pin(async move {
                if let Some(g) = guard {
                    check_guard(c, key.instance_id, g).await?;
                }
                me.update_key_in(c, &key).await?;
                me.insert_version(c, &version).await
            })
        })
        .await
    }

    pub(crate) async fn update_key_in(
        &self,
        c: &mut AnyConnection,
        key: &KeyRow,
    ) -> StoreResult<()> {
        let tag = self.tag_of(&rowtag::key_input(key))?;
        let r = sqlx::query(
            "UPDATE keys SET name = $3, description = $4, tags = $5, state = $6, extractable = $7,
           imported = $8, key_ring_id = $9, expiration_date = $10, updated_at = $11,
           last_rotate_date = $12, deletion_date = $13, deleted_by = $14, state_changed_at = $15,
           current_version = $16, attrs = $17, next_rotation_at = $19, auth_tag = $20,
           row_version = row_version + 1
         WHERE instance_id = $1 AND id = $2 AND row_version = $18",
        )
        .bind(key.instance_id.to_string())
        .bind(key.id.to_string())
        .bind(key.name.as_str())
        .bind(key.description.clone())
        .bind(json_text(&key.tags)?)
        .bind(key.state.code())
        .bind(i64::from(key.extractable))
        .bind(i64::from(key.imported))
        .bind(key.key_ring_id.as_str())
        .bind(key.expiration_date)
        .bind(key.updated_at)
        .bind(key.last_rotate_date)
        .bind(key.deletion_date)
        .bind(key.deleted_by.clone())
        .bind(key.state_changed_at)
        .bind(key.current_version.to_string())
        .bind(json_text(&key.attrs)?)
        .bind(key.row_version)
        .bind(key.next_rotation_at)
        .bind(tag)
        .execute(&mut *c)
        .await
        .map_err(classify)?;
        if r.rows_affected() == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict(ConflictKind::KeyChanged))
        }
    }

    pub(crate) async fn purge_key_impl(&self, key: &KeyRow) -> StoreResult<()> {
        let key = key.clone();
        self.write_tx(move |c| Box::pin(async move { purge_key_in(c, &key).await }))
            .await
    }

    pub(crate) async fn keys_where(
        &self,
        cond: &str,
        order: &str,
        a: i64,
        limit: i64,
    ) -> StoreResult<Vec<KeyRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLS} FROM keys WHERE {cond} ORDER BY {order} LIMIT $2"
        ))
        .bind(a)
        .bind(limit)
        .fetch_all(&self.read)
        .await
        .map_err(classify)?;
        // The scheduler skips a row that fails its check (it is logged and counted) rather than
        // let one tampered row stop every rotation and purge.
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            match self.key_checked(r) {
                Ok(k) => out.push(k),
                Err(StoreError::Integrity { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

/// Deletes a key (if still at its `row_version`) and everything that hangs off it.
async fn purge_key_in(c: &mut AnyConnection, key: &KeyRow) -> StoreResult<()> {
    let (inst, id) = (key.instance_id.to_string(), key.id.to_string());
    let r = sqlx::query("DELETE FROM keys WHERE instance_id = $1 AND id = $2 AND row_version = $3")
        .bind(inst.as_str())
        .bind(id.as_str())
        .bind(key.row_version)
        .execute(&mut *c)
        .await
        .map_err(classify)?;
    if r.rows_affected() != 1 {
        return Err(StoreError::Conflict(ConflictKind::KeyChanged));
    }
    for stmt in [
        "DELETE FROM key_versions WHERE instance_id = $1 AND key_id = $2",
        "DELETE FROM key_aliases WHERE instance_id = $1 AND key_id = $2",
        "DELETE FROM registrations WHERE instance_id = $1 AND key_id = $2",
        "DELETE FROM key_usage WHERE instance_id = $1 AND key_id = $2",
    ] {
        sqlx::query(stmt)
            .bind(inst.as_str())
            .bind(id.as_str())
            .execute(&mut *c)
            .await
            .map_err(classify)?;
    }
    Ok(())
}

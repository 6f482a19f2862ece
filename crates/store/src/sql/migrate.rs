//! The embedded migrations and their race-free application when several nodes start at once.

use std::time::Duration;

use sqlx::Executor;

use super::*;
use crate::{StoreError, StoreResult};

/// Attempts of one migration (or of creating the migrations table) before startup gives up.
pub(crate) const MIGRATION_ATTEMPTS: u32 = 10;

impl SqlStore {
    /// Applies the embedded migrations; safe when several nodes start at once on one database,
    /// without advisory locks (missing, or no-ops, on CockroachDB and older YugabyteDB).
    ///
    /// Each migration runs in one transaction that first *claims* its version by inserting the
    /// `schema_migrations` row (`ON CONFLICT DO NOTHING`). A second node's claim waits on the
    /// first node's uncommitted row: when the first commits, the claim inserts nothing and the
    /// second node moves on; when the first rolls back, the second applies the migration. Any
    /// failure (a DDL collision, a serialization failure, a lost connection) rolls the
    /// transaction back; the node then re-checks whether the version got applied meanwhile and
    /// otherwise retries with bounded backoff.
    pub(crate) async fn migrate(&self) -> StoreResult<()> {
        let migrations = self.dialect.migrations();
        self.ensure_migrations_table().await?;
        let known = migrations.iter().map(|(v, _)| *v).max().unwrap_or(0);
        for (version, sql) in migrations {
            let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
            let mut attempt = 1;
            loop {
                match self.apply_migration(*version, sql).await {
                    Ok(applied) => {
                        if applied {
                            tracing::info!(version, "applied database migration");
                        }
                        break;
                    }
                    Err(e) => {
                        if self.migration_applied(*version).await.unwrap_or(false) {
                            break;
                        }
                        if attempt >= MIGRATION_ATTEMPTS {
                            return Err(e);
                        }
                        tracing::warn!(version, attempt, error = %e, "migration attempt failed; retrying");
                        attempt += 1;
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
            }
        }
        let newest: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations")
            .fetch_one(&self.write)
            .await
            .map_err(classify)?;
        if newest.unwrap_or(0) > known {
            return Err(StoreError::Corrupt(format!(
                "the database schema (version {}) is newer than this Keyward (version {known})",
                newest.unwrap_or(0)
            )));
        }
        Ok(())
    }

    /// `CREATE TABLE IF NOT EXISTS` is not race-free on PostgreSQL (two sessions can both pass
    /// the existence check; the loser fails on the catalog's unique index), so a failure counts
    /// only if the table is still missing after bounded retries.
    pub(crate) async fn ensure_migrations_table(&self) -> StoreResult<()> {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        let mut attempt = 1;
        loop {
            let created = self
                .write
                .execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
                )
                .await
                .map_err(classify);
            match created {
                Ok(_) => return Ok(()),
                Err(e) => {
                    let exists =
                        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM schema_migrations")
                            .fetch_one(&self.write)
                            .await
                            .is_ok();
                    if exists {
                        return Ok(());
                    }
                    if attempt >= MIGRATION_ATTEMPTS {
                        return Err(e);
                    }
                    attempt += 1;
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }

    pub(crate) async fn migration_applied(&self, version: i64) -> StoreResult<bool> {
        let done: Option<i64> =
            sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                .bind(version)
                .fetch_optional(&self.write)
                .await
                .map_err(classify)?;
        Ok(done.is_some())
    }

    /// One attempt at one migration: `Ok(false)` when it was applied already (by this node
    /// earlier, or by another node, possibly while this one waited on its claim).
    pub(crate) async fn apply_migration(&self, version: i64, sql: &str) -> StoreResult<bool> {
        if self.migration_applied(version).await? {
            return Ok(false);
        }
        let mut tx = self.write.begin().await.map_err(classify)?;
        let claimed = sqlx::query(
            "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2) ON CONFLICT (version) DO NOTHING",
        )
        .bind(version)
        .bind(time::OffsetDateTime::now_utc().unix_timestamp())
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        if claimed.rows_affected() == 0 {
            tx.rollback().await.map_err(classify)?;
            return Ok(false);
        }
        for stmt in statements(sql) {
            sqlx::query(stmt)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
        }
        tx.commit().await.map_err(classify)?;
        Ok(true)
    }
}

/// The statements of a migration file: split at `;`, except inside a `$$`-quoted PostgreSQL
/// function body and inside a SQLite trigger's `BEGIN … END` (a `CREATE TRIGGER` statement with
/// a `BEGIN` ends at the `;` after its `END`). Comments must not contain `;`.
pub(crate) fn statements(sql: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut dollar = false;
    let bytes = sql.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'$') => {
                dollar = !dollar;
                i += 1;
            }
            b';' if !dollar => {
                let stmt = sql[start..i].trim();
                let upper = stmt.to_ascii_uppercase();
                let in_trigger = upper
                    .lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty() && !l.starts_with("--"))
                    .is_some_and(|l| l.starts_with("CREATE TRIGGER"))
                    && upper.split_whitespace().any(|w| w == "BEGIN")
                    && !upper.ends_with("END");
                if !in_trigger {
                    if !stmt.is_empty() {
                        out.push(stmt);
                    }
                    start = i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    let rest = sql[start..].trim();
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::statements;

    #[test]
    fn statements_keep_function_and_trigger_bodies_whole() {
        let sql = "CREATE TABLE t (a INT);\nCREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n  UPDATE t SET a = 1;\n  RETURN NULL;\nEND\n$$;\n-- a comment\nCREATE TRIGGER g AFTER INSERT ON t\nBEGIN\n  UPDATE t SET a = 2;\n  DELETE FROM t;\nEND;\nCREATE TRIGGER h AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION f();\nDROP TABLE t\n";
        let s = statements(sql);
        assert_eq!(s.len(), 5, "{s:#?}");
        assert!(s[1].ends_with("$$") && s[1].contains("RETURN NULL;"));
        assert!(s[2].starts_with("-- a comment") && s[2].ends_with("END"));
        assert!(s[3].starts_with("CREATE TRIGGER h") && s[3].ends_with("f()"));
        assert_eq!(s[4], "DROP TABLE t");
    }
}

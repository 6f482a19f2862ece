//! The import token of each instance, its retrieval counter and failed-import counter.

use keyward_domain::{InstanceId, TokenId};

use super::*;
use crate::rowtag;
use crate::{StoreResult, TokenRow};

impl SqlStore {
    pub(crate) async fn put_token_impl(&self, t: &TokenRow) -> StoreResult<()> {
        let tag = self.tag_of(&rowtag::token_input(t))?;
        let t = t.clone();
        self.write_one(1, move |c| Box::pin(async move {
        sqlx::query(&format!(
            "INSERT INTO import_tokens ({TOKEN_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)
             ON CONFLICT (instance_id) DO UPDATE SET token_id = excluded.token_id,
               created_at = excluded.created_at, expires_at = excluded.expires_at,
               expiration_secs = excluded.expiration_secs, max_retrievals = excluded.max_retrievals,
               remaining = excluded.remaining, nonce = excluded.nonce, public_pem = excluded.public_pem,
               sealed_private = excluded.sealed_private, master_key_id = excluded.master_key_id,
               auth_tag = excluded.auth_tag"
        ))
        .bind(t.instance_id.to_string())
        .bind(t.token_id.to_string())
        .bind(t.created_at)
        .bind(t.expires_at)
        .bind(t.expiration_secs)
        .bind(t.max_retrievals)
        .bind(t.remaining)
        .bind(t.nonce.clone())
        .bind(t.public_pem.as_str())
        .bind(t.sealed_private.clone())
        .bind(t.master_key_id.as_str())
        .bind(tag)
        .execute(&mut *c)
        .await
        .map_err(classify)?;
        Ok(())
        }))
        .await
    }

    pub(crate) async fn get_token_impl(
        &self,
        instance: InstanceId,
    ) -> StoreResult<Option<TokenRow>> {
        let row = sqlx::query(&format!(
            "SELECT {TOKEN_COLS} FROM import_tokens WHERE instance_id = $1"
        ))
        .bind(instance.to_string())
        .fetch_optional(&self.read)
        .await
        .map_err(classify)?;
        row.as_ref().map(|r| self.token_checked(r)).transpose()
    }

    pub(crate) async fn take_token_retrieval_impl(
        &self,
        instance: InstanceId,
        now: i64,
    ) -> StoreResult<Option<TokenRow>> {
        // On SQLite the decrement is a job of the group commit: the row is handed out only
        // after the batch holding the decrement committed.
        let me = self.clone();
        self.write_one(1, move |c| {
            Box::pin(async move {
                let row = sqlx::query(&format!(
                    "UPDATE import_tokens SET remaining = remaining - 1
             WHERE instance_id = $1 AND remaining > 0 AND expires_at > $2
             RETURNING {TOKEN_COLS}"
                ))
                .bind(instance.to_string())
                .bind(now)
                // `fetch_all`, not `fetch_optional`: the whole response must be read. An error the
                // database reports after the returned row (a serialization failure at the
                // statement's implicit commit) means the decrement did not happen; stopping after
                // the first row would hand out a retrieval that was never counted.
                .fetch_all(&mut *c)
                .await
                .map_err(classify)?;
                row.first().map(|r| me.token_checked(r)).transpose()
            })
        })
        .await
    }

    pub(crate) async fn import_failures_impl(
        &self,
        instance: InstanceId,
        token: TokenId,
    ) -> StoreResult<i64> {
        let n: Option<i64> = sqlx::query_scalar(
            "SELECT CASE WHEN import_failures_token = $2 THEN import_failures ELSE 0 END
             FROM import_tokens WHERE instance_id = $1",
        )
        .bind(instance.to_string())
        .bind(token.to_string())
        .fetch_optional(&self.read)
        .await
        .map_err(classify)?;
        Ok(n.unwrap_or(0))
    }

    pub(crate) async fn record_import_failure_impl(
        &self,
        instance: InstanceId,
        token: TokenId,
    ) -> StoreResult<i64> {
        self.write_one(1, move |c| Box::pin(async move {
        // `fetch_all`: the statement's own completion (where a serializable database
        // reports a conflict) is read before the count is trusted.
        let n: Vec<i64> = sqlx::query_scalar(
            "UPDATE import_tokens SET
               import_failures = CASE WHEN import_failures_token = $2 THEN import_failures + 1 ELSE 1 END,
               import_failures_token = $2
             WHERE instance_id = $1 AND token_id = $2
             RETURNING import_failures",
        )
        .bind(instance.to_string())
        .bind(token.to_string())
        .fetch_all(&mut *c)
        .await
        .map_err(classify)?;
        Ok(n.first().copied().unwrap_or(0))
        }))
        .await
    }
}

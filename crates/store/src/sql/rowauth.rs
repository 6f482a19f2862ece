//! The row-authentication half of [`SqlStore`]: installing the authenticator, telling a
//! database written before row authentication from one whose tags were stripped, and the
//! upgrade that tags existing rows (`crates/store/src/rowtag.rs`).

use std::str::FromStr;
use std::sync::Arc;

use keyward_domain::{InstanceId, Role};
use sqlx::any::AnyRow;

use super::{classify, get, key_from_row, uuid_col, SqlStore, Tx, KEY_COLS};
use crate::rowtag::{self, RowAuth, TagInput, TAGGED_TABLES};
use crate::{
    AliasRow, ApiKeyRow, GrantRow, InstanceRow, PolicyRow, RowAuthState, StoreError, StoreResult,
};

/// One untagged row, ready to be tagged: its canonical input and the conditional update that
/// stores the tag (binds after the tag: the values that must still hold).
struct Pending {
    input: TagInput,
    update: &'static str,
    binds: Vec<Bind>,
}

enum Bind {
    Text(String),
    Int(i64),
}

impl SqlStore {
    pub(crate) fn install_row_auth_impl(&self, auth: Arc<dyn RowAuth>) {
        *self.auth.write() = Some(auth);
    }

    pub(crate) async fn row_auth_state_impl(&self) -> StoreResult<RowAuthState> {
        let mut st = RowAuthState::default();
        for table in TAGGED_TABLES {
            for (cond, flag) in [
                ("IS NOT NULL", &mut st.tagged),
                ("IS NULL", &mut st.untagged),
            ] {
                if *flag {
                    continue;
                }
                let hit: Option<i64> = sqlx::query_scalar(&format!(
                    "SELECT 1 FROM {table} WHERE auth_tag {cond} LIMIT 1"
                ))
                .fetch_optional(&self.read)
                .await
                .map_err(classify)?;
                *flag = hit.is_some();
            }
        }
        Ok(st)
    }

    pub(crate) async fn tag_untagged_impl(&self, limit: i64) -> StoreResult<u64> {
        let mut done = 0u64;
        for table in TAGGED_TABLES {
            let left = limit - i64::try_from(done).unwrap_or(i64::MAX);
            if left <= 0 {
                break;
            }
            let mut tx = self.write.begin().await.map_err(classify)?;
            let rows = select_untagged(&mut tx, table, left).await?;
            for row in &rows {
                let p = pending(table, row)?;
                let tag = self.tag_of(&p.input)?;
                let mut q = sqlx::query(p.update).bind(tag);
                for b in p.binds {
                    q = match b {
                        Bind::Text(s) => q.bind(s),
                        Bind::Int(i) => q.bind(i),
                    };
                }
                let r = q.execute(&mut *tx).await.map_err(classify)?;
                done += r.rows_affected();
            }
            tx.commit().await.map_err(classify)?;
        }
        Ok(done)
    }
}

async fn select_untagged(tx: &mut Tx<'_>, table: &str, limit: i64) -> StoreResult<Vec<AnyRow>> {
    let cols = match table {
        "keys" => KEY_COLS,
        "instances" => "id, name, created_at",
        "api_keys" => "id, iam_id, key_hash, name, created_at",
        "role_grants" => "instance_id, iam_id, role, created_at",
        "key_versions" => "id, key_id, instance_id, seq, created_at",
        "import_tokens" => {
            "instance_id, token_id, created_at, expires_at, expiration_secs, max_retrievals, nonce, public_pem"
        }
        "key_aliases" => "instance_id, alias, key_id, created_at, created_by",
        "instance_policies" => "instance_id, policy_type, data, updated_at, updated_by",
        other => return Err(StoreError::Corrupt(format!("no such tagged table {other}"))),
    };
    sqlx::query(&format!(
        "SELECT {cols} FROM {table} WHERE auth_tag IS NULL LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(&mut **tx)
    .await
    .map_err(classify)
}

fn text(s: impl ToString) -> Bind {
    Bind::Text(s.to_string())
}

/// How to tag one untagged row of `table`: the same input the store builds on write, and an
/// update that applies only while the row is still untagged and unchanged.
fn pending(table: &str, r: &AnyRow) -> StoreResult<Pending> {
    Ok(match table {
        "keys" => {
            let k = key_from_row(r)?;
            Pending {
                input: rowtag::key_input(&k),
                update: "UPDATE keys SET auth_tag = $1 WHERE instance_id = $2 AND id = $3 AND row_version = $4 AND auth_tag IS NULL",
                binds: vec![text(k.instance_id), text(k.id), Bind::Int(k.row_version)],
            }
        }
        "instances" => {
            let i = InstanceRow {
                id: uuid_col(r, "id", InstanceId::parse)?,
                name: get(r, "name")?,
                created_at: get(r, "created_at")?,
            };
            Pending {
                input: rowtag::instance_input(&i),
                update: "UPDATE instances SET auth_tag = $1 WHERE id = $2 AND name = $3 AND created_at = $4 AND auth_tag IS NULL",
                binds: vec![text(i.id), text(&i.name), Bind::Int(i.created_at)],
            }
        }
        "api_keys" => {
            let k = ApiKeyRow {
                id: get(r, "id")?,
                iam_id: get(r, "iam_id")?,
                name: get(r, "name")?,
                created_at: get(r, "created_at")?,
            };
            let hash: Vec<u8> = get(r, "key_hash")?;
            Pending {
                input: rowtag::api_key_input(&k, &hash),
                update: "UPDATE api_keys SET auth_tag = $1 WHERE id = $2 AND iam_id = $3 AND name = $4 AND created_at = $5 AND auth_tag IS NULL",
                binds: vec![
                    text(&k.id),
                    text(&k.iam_id),
                    text(&k.name),
                    Bind::Int(k.created_at),
                ],
            }
        }
        "role_grants" => {
            let g = GrantRow {
                instance_id: uuid_col(r, "instance_id", InstanceId::parse)?,
                iam_id: get(r, "iam_id")?,
                role: Role::from_str(&get::<String>(r, "role")?)
                    .map_err(|_| StoreError::Corrupt("role".into()))?,
                created_at: get(r, "created_at")?,
            };
            Pending {
                input: rowtag::grant_input(&g),
                update: "UPDATE role_grants SET auth_tag = $1 WHERE instance_id = $2 AND iam_id = $3 AND role = $4 AND created_at = $5 AND auth_tag IS NULL",
                binds: vec![
                    text(g.instance_id),
                    text(&g.iam_id),
                    text(g.role.as_str()),
                    Bind::Int(g.created_at),
                ],
            }
        }
        "key_versions" => {
            let v = crate::VersionRow {
                id: uuid_col(r, "id", keyward_domain::VersionId::parse)?,
                key_id: uuid_col(r, "key_id", keyward_domain::KeyId::parse)?,
                instance_id: uuid_col(r, "instance_id", InstanceId::parse)?,
                seq: get(r, "seq")?,
                created_at: get(r, "created_at")?,
                sealed: Vec::new(),
                master_key_id: String::new(),
            };
            Pending {
                input: rowtag::version_input(&v),
                update: "UPDATE key_versions SET auth_tag = $1 WHERE id = $2 AND key_id = $3 AND instance_id = $4 AND seq = $5 AND created_at = $6 AND auth_tag IS NULL",
                binds: vec![
                    text(v.id),
                    text(v.key_id),
                    text(v.instance_id),
                    Bind::Int(v.seq),
                    Bind::Int(v.created_at),
                ],
            }
        }
        "import_tokens" => {
            let t = crate::TokenRow {
                instance_id: uuid_col(r, "instance_id", InstanceId::parse)?,
                token_id: uuid_col(r, "token_id", keyward_domain::TokenId::parse)?,
                created_at: get(r, "created_at")?,
                expires_at: get(r, "expires_at")?,
                expiration_secs: get(r, "expiration_secs")?,
                max_retrievals: get(r, "max_retrievals")?,
                remaining: 0,
                nonce: get(r, "nonce")?,
                public_pem: get(r, "public_pem")?,
                sealed_private: Vec::new(),
                master_key_id: String::new(),
            };
            Pending {
                input: rowtag::token_input(&t),
                update: "UPDATE import_tokens SET auth_tag = $1 WHERE instance_id = $2 AND token_id = $3 AND created_at = $4 AND expires_at = $5 AND max_retrievals = $6 AND auth_tag IS NULL",
                binds: vec![
                    text(t.instance_id),
                    text(t.token_id),
                    Bind::Int(t.created_at),
                    Bind::Int(t.expires_at),
                    Bind::Int(t.max_retrievals),
                ],
            }
        }
        "key_aliases" => {
            let a = AliasRow {
                instance_id: uuid_col(r, "instance_id", InstanceId::parse)?,
                alias: get(r, "alias")?,
                key_id: uuid_col(r, "key_id", keyward_domain::KeyId::parse)?,
                created_at: get(r, "created_at")?,
                created_by: get(r, "created_by")?,
            };
            Pending {
                input: rowtag::alias_input(&a),
                update: "UPDATE key_aliases SET auth_tag = $1 WHERE instance_id = $2 AND alias = $3 AND key_id = $4 AND auth_tag IS NULL",
                binds: vec![text(a.instance_id), text(&a.alias), text(a.key_id)],
            }
        }
        "instance_policies" => {
            let data: String = get(r, "data")?;
            let p = PolicyRow {
                instance_id: uuid_col(r, "instance_id", InstanceId::parse)?,
                policy_type: get(r, "policy_type")?,
                data: serde_json::from_str(&data)
                    .map_err(|_| StoreError::Corrupt("policy data".into()))?,
                created_at: 0,
                created_by: String::new(),
                updated_at: get(r, "updated_at")?,
                updated_by: get(r, "updated_by")?,
            };
            Pending {
                input: rowtag::policy_input(&p),
                update: "UPDATE instance_policies SET auth_tag = $1 WHERE instance_id = $2 AND policy_type = $3 AND data = $4 AND updated_at = $5 AND auth_tag IS NULL",
                binds: vec![
                    text(p.instance_id),
                    text(&p.policy_type),
                    Bind::Text(data),
                    Bind::Int(p.updated_at),
                ],
            }
        }
        other => return Err(StoreError::Corrupt(format!("no such tagged table {other}"))),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use std::sync::atomic::Ordering;

    use keyward_domain::Role;

    use crate::sql::tests::{drop_postgres, fresh_postgres, install_test_auth};
    use crate::testsuite::{instance, key_row, token_row};
    use crate::{
        AliasRow, ApiKeyRow, DatabaseUrl, GrantRow, KeyQuery, PolicyRow, PrincipalRow, SqlStore,
        Store, StoreError,
    };

    fn integrity<T: std::fmt::Debug>(r: crate::StoreResult<T>, table: &str) {
        match r {
            Err(StoreError::Integrity { table: t, .. }) => assert_eq!(t, table),
            other => panic!("expected an integrity failure of {table}, got {other:?}"),
        }
    }

    async fn exec(store: &SqlStore, sql: &str) {
        let r = sqlx::query(sql).execute(&store.write).await.unwrap();
        assert!(r.rows_affected() >= 1, "{sql} changed nothing");
    }

    /// Rows edited, inserted or moved in the database without the row-authentication key are
    /// refused (or, for rows that grant access, ignored), on every read path.
    async fn edited_rows_are_refused(store: SqlStore) {
        let auth = install_test_auth(&store);
        let (a, b) = (instance("a"), instance("b"));
        store.create_instance(&a).await.unwrap();
        store.create_instance(&b).await.unwrap();
        let now = 1_000_000;
        let principal = PrincipalRow {
            iam_id: "IBMid-alice".into(),
            name: "alice".into(),
            created_at: now,
        };
        let key = ApiKeyRow {
            id: "ak-1".into(),
            iam_id: "IBMid-alice".into(),
            name: "alice".into(),
            created_at: now,
        };
        store
            .create_api_key(&principal, &key, &[1u8; 32])
            .await
            .unwrap();
        store
            .grant(&GrantRow {
                instance_id: a.id,
                iam_id: "IBMid-alice".into(),
                role: Role::Reader,
                created_at: now,
            })
            .await
            .unwrap();
        assert_eq!(
            store.row_auth_state().await.unwrap(),
            crate::RowAuthState {
                tagged: true,
                untagged: false
            }
        );

        // An API key and a grant inserted directly grant nothing.
        exec(
            &store,
            "INSERT INTO principals (iam_id, name, created_at) VALUES ('IBMid-mallory', 'm', 1)",
        )
        .await;
        let blob = store.dialect.blob_literal(&[2u8; 32]);
        exec(&store, &format!("INSERT INTO api_keys (id, iam_id, key_hash, name, created_at) VALUES ('ak-evil', 'IBMid-mallory', {blob}, 'm', 1)")).await;
        assert!(store.find_api_key(&[2u8; 32]).await.unwrap().is_none());
        assert_eq!(store.list_api_keys().await.unwrap().len(), 1);
        exec(&store, &format!("INSERT INTO role_grants (instance_id, iam_id, role, created_at) VALUES ('{}', 'IBMid-mallory', 'Manager', 1)", a.id)).await;
        assert!(store
            .roles_of(a.id, "IBMid-mallory")
            .await
            .unwrap()
            .is_empty());
        // A forged grant beside a genuine one: the genuine one still counts, the forged not.
        exec(&store, &format!("INSERT INTO role_grants (instance_id, iam_id, role, created_at) VALUES ('{}', 'IBMid-alice', 'Manager', 1)", a.id)).await;
        assert_eq!(
            store.roles_of(a.id, "IBMid-alice").await.unwrap(),
            vec![Role::Reader]
        );
        // An edited API key (moved to another principal) stops working.
        exec(
            &store,
            "UPDATE api_keys SET iam_id = 'IBMid-mallory' WHERE id = 'ak-1'",
        )
        .await;
        assert!(store.find_api_key(&[1u8; 32]).await.unwrap().is_none());
        // An edited instance row is gone.
        exec(
            &store,
            &format!("UPDATE instances SET name = 'x' WHERE id = '{}'", b.id),
        )
        .await;
        assert!(store.get_instance(b.id).await.unwrap().is_none());

        // Keys: each edit of a deciding column is refused on every read path.
        for (n, edit) in [
            "extractable = 1 - extractable",
            "imported = 1",
            "state = 2",
            "key_ring_id = 'other'",
            "deletion_date = 5",
            "attrs = '{\"policies\":{}}'",
            "expiration_date = 99999999999",
        ]
        .iter()
        .enumerate()
        {
            let (k, v) = key_row(a.id, &format!("k{n}"));
            store.insert_key(&k, &v, None).await.unwrap();
            assert_eq!(store.get_key(a.id, k.id).await.unwrap().unwrap(), k);
            exec(
                &store,
                &format!("UPDATE keys SET {edit} WHERE id = '{}'", k.id),
            )
            .await;
            integrity(store.get_key(a.id, k.id).await, "keys");
            integrity(store.list_keys(a.id, &KeyQuery::default()).await, "keys");
            exec(&store, &format!("DELETE FROM keys WHERE id = '{}'", k.id)).await;
        }
        // A key moved into another instance is refused there.
        let (k, v) = key_row(a.id, "moved");
        store.insert_key(&k, &v, None).await.unwrap();
        exec(
            &store,
            &format!(
                "UPDATE keys SET instance_id = '{}' WHERE id = '{}'",
                b.id, k.id
            ),
        )
        .await;
        integrity(store.get_key(b.id, k.id).await, "keys");
        exec(
            &store,
            &format!(
                "UPDATE keys SET instance_id = '{}' WHERE id = '{}'",
                a.id, k.id
            ),
        )
        .await;
        assert!(
            store.get_key(a.id, k.id).await.unwrap().is_some(),
            "moved back, valid again"
        );
        // Another key's tag copied onto this row does not fit it.
        let (k2, v2) = key_row(a.id, "donor");
        store.insert_key(&k2, &v2, None).await.unwrap();
        exec(&store, &format!("UPDATE keys SET auth_tag = (SELECT auth_tag FROM keys WHERE id = '{}') WHERE id = '{}'", k2.id, k.id)).await;
        integrity(store.get_key(a.id, k.id).await, "keys");
        // Versions.
        exec(
            &store,
            &format!("UPDATE key_versions SET seq = 7 WHERE id = '{}'", v2.id),
        )
        .await;
        integrity(store.versions(a.id, k2.id).await, "key_versions");

        // The import token: a swapped public key, or more retrievals, or a later expiry.
        let t = token_row(a.id, 3, now + 600);
        store.put_token(&t).await.unwrap();
        assert!(store.get_token(a.id).await.unwrap().is_some());
        exec(
            &store,
            &format!(
                "UPDATE import_tokens SET public_pem = 'EVIL' WHERE instance_id = '{}'",
                a.id
            ),
        )
        .await;
        integrity(store.get_token(a.id).await, "import_tokens");
        integrity(store.take_token_retrieval(a.id, now).await, "import_tokens");
        store.put_token(&t).await.unwrap();
        exec(
            &store,
            &format!(
                "UPDATE import_tokens SET max_retrievals = 500 WHERE instance_id = '{}'",
                a.id
            ),
        )
        .await;
        integrity(store.get_token(a.id).await, "import_tokens");

        // Aliases and instance policies.
        let (k3, v3) = key_row(a.id, "aliased");
        store.insert_key(&k3, &v3, None).await.unwrap();
        store
            .create_alias(&AliasRow {
                instance_id: a.id,
                alias: "prod".into(),
                key_id: k3.id,
                created_at: now,
                created_by: "x".into(),
            })
            .await
            .unwrap();
        assert_eq!(
            store.resolve_alias(a.id, "prod").await.unwrap(),
            Some(k3.id)
        );
        exec(
            &store,
            &format!(
                "UPDATE key_aliases SET key_id = '{}' WHERE alias = 'prod'",
                k2.id
            ),
        )
        .await;
        integrity(store.resolve_alias(a.id, "prod").await, "key_aliases");
        integrity(store.aliases_of(a.id, k2.id).await, "key_aliases");
        store
            .put_instance_policy(&PolicyRow {
                instance_id: a.id,
                policy_type: "allowedIP".into(),
                data: serde_json::json!({"enabled": true, "attributes": {"allowed_ip": ["10.0.0.0/8"]}}),
                created_at: now,
                created_by: "x".into(),
                updated_at: now,
                updated_by: "x".into(),
            })
            .await
            .unwrap();
        assert_eq!(store.instance_policies(a.id).await.unwrap().len(), 1);
        exec(&store, &format!("UPDATE instance_policies SET data = '{{\"enabled\":false}}' WHERE instance_id = '{}'", a.id)).await;
        integrity(store.instance_policies(a.id).await, "instance_policies");

        // Untagged rows: refused unless the upgrade grace accepts them; the upgrade tags them.
        let (k4, v4) = key_row(a.id, "legacy");
        store.insert_key(&k4, &v4, None).await.unwrap();
        exec(
            &store,
            &format!("UPDATE keys SET auth_tag = NULL WHERE id = '{}'", k4.id),
        )
        .await;
        integrity(store.get_key(a.id, k4.id).await, "keys");
        auth.untagged.store(true, Ordering::SeqCst);
        assert!(store.get_key(a.id, k4.id).await.unwrap().is_some());
        assert!(store.row_auth_state().await.unwrap().untagged);
        let tagged = store.tag_untagged(1000).await.unwrap();
        assert!(tagged >= 1, "the upgrade tagged the untagged rows");
        auth.untagged.store(false, Ordering::SeqCst);
        assert_eq!(store.get_key(a.id, k4.id).await.unwrap().unwrap(), k4);
        assert!(!store.row_auth_state().await.unwrap().untagged);
        // Every read of an authenticated table fails closed without the authenticator.
        let bare = store.clone();
        *bare.auth.write() = None;
        assert!(matches!(
            bare.get_key(a.id, k4.id).await,
            Err(StoreError::RowAuthMissing)
        ));
        store.close().await;
    }

    #[tokio::test]
    async fn edited_rows_are_refused_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let store = SqlStore::connect(&DatabaseUrl::new(url)).await.unwrap();
        edited_rows_are_refused(store).await;
    }

    #[tokio::test]
    async fn edited_rows_are_refused_on_postgres() {
        let Some(url) = fresh_postgres(&[]).await else {
            eprintln!(
                "KEYWARD_TEST_DATABASE_URL unset: PostgreSQL row-authentication test not run"
            );
            return;
        };
        let store = SqlStore::connect(&DatabaseUrl::new(url.clone()))
            .await
            .unwrap();
        edited_rows_are_refused(store).await;
        drop_postgres(&url).await;
    }
}

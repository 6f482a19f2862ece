//! Runs the store conformance suite on SQLite (always) and on PostgreSQL when
//! `KEYWARD_TEST_DATABASE_URL` points at a server (each run in a fresh database).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../testsupport/src/services.rs"]
mod services;

use std::sync::Arc;

use keyward_crypto::rowauth::RowAuthKey;
use keyward_crypto::SecretBytes;
use keyward_store::{testsuite, DatabaseUrl, RowAuth, SqlStore, Store};

/// The service's row authenticator in miniature: a real HMAC key, untagged rows refused.
#[derive(Debug)]
struct Auth(RowAuthKey);

impl RowAuth for Auth {
    fn tag(&self, input: &[u8]) -> Vec<u8> {
        self.0.tag(input)
    }
    fn verify(&self, input: &[u8], tag: &[u8]) -> bool {
        self.0.verify(input, tag)
    }
    fn accept_untagged(&self) -> bool {
        false
    }
}

fn with_auth(store: SqlStore) -> Arc<dyn Store> {
    let key = RowAuthKey::from_secret(&SecretBytes::from_vec(vec![9; 32])).unwrap();
    store.install_row_auth(Arc::new(Auth(key)));
    Arc::new(store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_passes_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    let url = DatabaseUrl::new(format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("kw.db").display()
    ));
    let store = SqlStore::connect(&url).await.unwrap();
    testsuite::run_all(with_auth(store)).await;
}

/// A fresh database on the server at `KEYWARD_TEST_DATABASE_URL`, or `None` when unset.
async fn fresh_postgres() -> Option<DatabaseUrl> {
    use sqlx::Connection;
    let base = std::env::var("KEYWARD_TEST_DATABASE_URL").ok()?;
    let name = format!("kw_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&base).await.unwrap();
    sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    let (prefix, _) = base.rsplit_once('/').unwrap();
    Some(DatabaseUrl::new(format!("{prefix}/{name}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_passes_the_suite() {
    let Some(url) = fresh_postgres().await else {
        services::missing(
            "postgres_passes_the_suite",
            "PostgreSQL (KEYWARD_TEST_DATABASE_URL unset)",
            "set KEYWARD_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres",
        );
        return;
    };
    let store = SqlStore::connect(&url).await.unwrap();
    testsuite::run_all(with_auth(store)).await;
}

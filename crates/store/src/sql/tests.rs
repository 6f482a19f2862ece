#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use super::*;
use std::time::Duration;

use keyward_domain::KeyState;
use sqlx::{Executor, Row};

use super::keys::{key_filter, sort_sql};
use crate::{ConflictKind, SortField, StoreError};
use std::sync::Arc;

/// A real HMAC row authenticator for store tests (the service's in miniature).
#[derive(Debug)]
pub(crate) struct TestAuth {
    key: keyward_crypto::rowauth::RowAuthKey,
    pub(crate) untagged: std::sync::atomic::AtomicBool,
}

impl RowAuth for TestAuth {
    fn tag(&self, input: &[u8]) -> Vec<u8> {
        self.key.tag(input)
    }
    fn verify(&self, input: &[u8], tag: &[u8]) -> bool {
        self.key.verify(input, tag)
    }
    fn accept_untagged(&self) -> bool {
        self.untagged.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Installs a [`TestAuth`] into `store` and returns it.
pub(crate) fn install_test_auth(store: &SqlStore) -> Arc<TestAuth> {
    let key = keyward_crypto::rowauth::RowAuthKey::from_secret(
        &keyward_crypto::SecretBytes::from_vec(vec![3; 32]),
    )
    .unwrap();
    let a = Arc::new(TestAuth {
        key,
        untagged: Default::default(),
    });
    store.install_row_auth(a.clone());
    a
}

/// A fresh database on the server at `KEYWARD_TEST_DATABASE_URL` (`None` when unset, and
/// the caller skips; a failure instead under `KEYWARD_REQUIRE_SERVICES=1`, as in CI), with
/// `settings` (`ALTER DATABASE … SET …` clauses) applied.
pub(crate) async fn fresh_postgres(settings: &[&str]) -> Option<String> {
    use sqlx::Connection;
    let Ok(base) = std::env::var("KEYWARD_TEST_DATABASE_URL") else {
        let required =
            std::env::var("KEYWARD_REQUIRE_SERVICES").is_ok_and(|v| !v.is_empty() && v != "0");
        assert!(
            !required,
            "PostgreSQL is missing (KEYWARD_TEST_DATABASE_URL unset), and \
             KEYWARD_REQUIRE_SERVICES is set: a test may not be skipped here"
        );
        return None;
    };
    let name = format!("kw_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&base).await.unwrap();
    conn.execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    for s in settings {
        conn.execute(format!("ALTER DATABASE {name} SET {s}").as_str())
            .await
            .unwrap();
    }
    conn.close().await.unwrap();
    let (prefix, _) = base.rsplit_once('/').unwrap();
    Some(format!("{prefix}/{name}"))
}

/// Drops a database made by [`fresh_postgres`] (closing its other connections).
pub(crate) async fn drop_postgres(url: &str) {
    use sqlx::Connection;
    let Ok(base) = std::env::var("KEYWARD_TEST_DATABASE_URL") else {
        return;
    };
    let (_, name) = url.rsplit_once('/').unwrap();
    let name = name.split('?').next().unwrap();
    let mut conn = sqlx::PgConnection::connect(&base).await.unwrap();
    let _ = conn
        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
        .await;
    let _ = conn.close().await;
}

async fn applied_versions(store: &SqlStore) -> Vec<(i64, i64)> {
    sqlx::query(
        "SELECT version, COUNT(*) AS n FROM schema_migrations GROUP BY version ORDER BY version",
    )
    .fetch_all(&store.read)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get::<i64, _>("version"), r.get::<i64, _>("n")))
    .collect()
}

async fn race_connects(url: &str, nodes: usize) {
    let mut tasks = Vec::new();
    for _ in 0..nodes {
        let url = DatabaseUrl::new(url);
        tasks.push(tokio::spawn(async move { SqlStore::connect(&url).await }));
    }
    let mut stores = Vec::new();
    for t in tasks {
        stores.push(t.await.unwrap().unwrap());
    }
    let expected: Vec<(i64, i64)> = Dialect::Postgres
        .migrations()
        .iter()
        .map(|(v, _)| (*v, 1))
        .collect();
    for s in &stores {
        assert_eq!(applied_versions(s).await, expected);
        // The schema is complete: the newest migration's column is there.
        let n: i64 = sqlx::query_scalar("SELECT COUNT(next_rotation_at) FROM keys")
            .fetch_one(&s.read)
            .await
            .unwrap();
        assert_eq!(n, 0);
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
            .fetch_one(&s.read)
            .await
            .unwrap();
        assert_eq!(n, 0);
    }
    for s in stores {
        s.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_starting_at_once_migrate_once_on_postgres() {
    for _ in 0..3 {
        let Some(url) = fresh_postgres(&[]).await else {
            eprintln!("KEYWARD_TEST_DATABASE_URL unset: PostgreSQL migration race not run");
            return;
        };
        race_connects(&url, 8).await;
        drop_postgres(&url).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_starting_at_once_migrate_once_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("kw.db").display());
    race_connects(&url, 4).await;
}

/// Under `SERIALIZABLE` (what CockroachDB always runs) concurrent writers of one row get
/// SQLSTATE 40001; the retry helper must turn that into the same outcomes as under
/// `READ COMMITTED`, so the whole conformance suite passes unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_suite_passes_under_serializable_isolation() {
    let Some(url) = fresh_postgres(&["default_transaction_isolation = 'serializable'"]).await
    else {
        eprintln!("KEYWARD_TEST_DATABASE_URL unset: serializable suite not run");
        return;
    };
    let store = SqlStore::connect(&DatabaseUrl::new(url.clone()))
        .await
        .unwrap();
    let iso: String = sqlx::query_scalar("SHOW transaction_isolation")
        .fetch_one(&store.read)
        .await
        .unwrap();
    assert_eq!(iso, "serializable");
    install_test_auth(&store);
    let before = serialization_retries();
    crate::testsuite::run_all(Arc::new(store.clone())).await;
    assert!(
        serialization_retries() > before,
        "the suite never hit a serialization failure"
    );
    store.close().await;
    drop_postgres(&url).await;
}

/// Racing compare-and-set updates of one key under `SERIALIZABLE`: exactly one wins, the
/// others see `Conflict` (after their serialization failures were retried), none errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_key_updates_under_serializable_isolation() {
    let Some(url) = fresh_postgres(&["default_transaction_isolation = 'serializable'"]).await
    else {
        eprintln!("KEYWARD_TEST_DATABASE_URL unset: serializable race not run");
        return;
    };
    let store = Arc::new(
        SqlStore::connect(&DatabaseUrl::new(url.clone()))
            .await
            .unwrap(),
    );
    install_test_auth(&store);
    let inst = crate::testsuite::instance("race");
    store.create_instance(&inst).await.unwrap();
    for round in 0..5 {
        let (key, version) = crate::testsuite::key_row(inst.id, &format!("k{round}"));
        store.insert_key(&key, &version, None).await.unwrap();
        let barrier = Arc::new(tokio::sync::Barrier::new(8));
        let mut tasks = Vec::new();
        for i in 0..8 {
            let (store, barrier, mut row) = (store.clone(), barrier.clone(), key.clone());
            tasks.push(tokio::spawn(async move {
                row.name = format!("writer-{i}");
                barrier.wait().await;
                store.update_key(&row).await
            }));
        }
        let (mut ok, mut conflict) = (0, 0);
        for t in tasks {
            match t.await.unwrap() {
                Ok(()) => ok += 1,
                Err(StoreError::Conflict(_)) => conflict += 1,
                Err(e) => panic!("unexpected error: {e:?}"),
            }
        }
        assert_eq!((ok, conflict), (1, 7));
        let stored = store.get_key(inst.id, key.id).await.unwrap().unwrap();
        assert_eq!(stored.row_version, key.row_version + 1);
    }
    store.close().await;
    drop_postgres(&url).await;
}

/// A failed attempt that is not a serialization failure is returned at once; a
/// serialization failure is retried, boundedly.
#[tokio::test]
async fn retry_write_retries_only_serialization_failures() {
    let calls = std::sync::atomic::AtomicU32::new(0);
    let r: StoreResult<()> = retry_write("test", || async {
        calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Err(StoreError::Conflict(ConflictKind::KeyChanged))
    })
    .await;
    assert!(matches!(r, Err(StoreError::Conflict(_))));
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);

    // A real 40001 needs a server; without one, check the bound with a synthetic loop.
    let Some(url) = fresh_postgres(&[]).await else {
        return;
    };
    let store = SqlStore::connect(&DatabaseUrl::new(url.clone()))
        .await
        .unwrap();
    let calls = std::sync::atomic::AtomicU32::new(0);
    let started = std::time::Instant::now();
    let r: StoreResult<()> = retry_write("test", || async {
        calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        sqlx::query("DO $$ BEGIN RAISE EXCEPTION 'synthetic' USING ERRCODE = '40001'; END $$")
            .execute(&store.write)
            .await
            .map_err(classify)?;
        Ok(())
    })
    .await;
    assert!(r.as_ref().is_err_and(is_serialization_failure), "{r:?}");
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        WRITE_ATTEMPTS
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    store.close().await;
    drop_postgres(&url).await;
}

async fn uses_tls(store: &SqlStore) -> bool {
    sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&store.read)
        .await
        .unwrap()
}

/// `sslmode` in the URL decides TLS; with `KEYWARD_TEST_DATABASE_CA` (the server's CA or
/// self-signed certificate, issued for `localhost`) certificate and host checks are tested.
#[tokio::test]
async fn tls_follows_the_url() {
    let Some(url) = fresh_postgres(&[]).await else {
        eprintln!("KEYWARD_TEST_DATABASE_URL unset: TLS test not run");
        return;
    };
    let with = |q: &str| DatabaseUrl::new(format!("{url}?{q}"));
    let plain = SqlStore::connect(&with("sslmode=disable")).await.unwrap();
    assert!(!uses_tls(&plain).await);
    plain.close().await;
    let tls = SqlStore::connect(&with("sslmode=require")).await.unwrap();
    assert!(uses_tls(&tls).await);
    tls.close().await;
    let Ok(ca) = std::env::var("KEYWARD_TEST_DATABASE_CA") else {
        eprintln!("KEYWARD_TEST_DATABASE_CA unset: certificate verification not tested");
        drop_postgres(&url).await;
        return;
    };
    let (_, db) = url.rsplit_once('/').unwrap();
    let host_url = |host: &str, mode: &str| {
        let rest = url.split_once('@').unwrap().1; // host:port/db
        let port = rest
            .split_once('/')
            .unwrap()
            .0
            .rsplit_once(':')
            .map(|(_, p)| p)
            .unwrap_or("5432");
        let user = url.split_once("://").unwrap().1.split_once('@').unwrap().0;
        DatabaseUrl::new(format!(
            "postgres://{user}@{host}:{port}/{db}?sslmode={mode}&sslrootcert={ca}"
        ))
    };
    let verified = SqlStore::connect(&host_url("localhost", "verify-full"))
        .await
        .unwrap();
    assert!(uses_tls(&verified).await);
    verified.close().await;
    // The certificate names `localhost`, not 127.0.0.1: full verification must refuse.
    let wrong_host = SqlStore::connect(&host_url("127.0.0.1", "verify-full")).await;
    assert!(
        wrong_host.is_err(),
        "verify-full accepted a certificate for another host"
    );
    // verify-ca checks the chain only. (With sqlx 0.8.6 and rustls 0.23.3x it still refuses a
    // host name mismatch: sqlx matches the older `NotValidForName` error only. See
    // docs/postgres.md: use verify-full.)
    let ca_only = SqlStore::connect(&host_url("localhost", "verify-ca"))
        .await
        .unwrap();
    assert!(uses_tls(&ca_only).await);
    ca_only.close().await;
    drop_postgres(&url).await;
}

#[test]
fn database_url_debug_masks_password() {
    let u = DatabaseUrl::new("postgres://kw:s3cr3t-pw@db.example:5432/keyward");
    assert!(!format!("{u:?}").contains("s3cr3t-pw"));
    assert!(!u.to_string().contains("s3cr3t-pw"));
    assert!(format!("{u:?}").contains("kw:****@db.example"));
    assert_eq!(
        u.expose(),
        "postgres://kw:s3cr3t-pw@db.example:5432/keyward"
    );
}

#[test]
fn placeholders_are_numbered_in_one_pass_and_deduplicated() {
    let q = KeyQuery {
        states: [KeyState::Active, KeyState::Destroyed]
            .into_iter()
            .cycle()
            .take(10_000)
            .collect(),
        extractable: Some(true),
        key_ring_id: Some("r".into()),
        sort: vec![(SortField::State, true), (SortField::Id, false)]
            .into_iter()
            .cycle()
            .take(10_000)
            .collect(),
        ..KeyQuery::default()
    };
    let (sql, binds) = key_filter(&q);
    assert!(sql.contains("IN ($3,$4)"), "{sql}");
    assert!(
        sql.contains("extractable = $5") && sql.contains("key_ring_id = $6"),
        "{sql}"
    );
    assert_eq!(binds.len(), 4);
    assert!(sql.contains("<= $2"));
    let sort = sort_sql(&q);
    assert_eq!(sort.matches("DESC").count(), 1, "{sort}");
    assert_eq!(sort.matches("id ASC").count(), 1, "{sort}");
    assert!(!sort.ends_with(", "), "{sort}");
}

#[tokio::test]
async fn sqlite_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kw.db");
    let url = format!("sqlite://{}?mode=rwc", db.display());
    let store = SqlStore::connect(&DatabaseUrl::new(url)).await.unwrap();
    store
        .put_secret_if_absent("x", &[1], "mk", 1)
        .await
        .unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&db), 0o600);
    let wal = dir.path().join("kw.db-wal");
    assert!(wal.exists());
    assert_eq!(mode(&wal), 0o600);
    assert_eq!(mode(&dir.path().join("kw.db-shm")), 0o600);
    store.close().await;
}

/// A SQLite store in `dir`.
async fn sqlite_store(dir: &tempfile::TempDir) -> SqlStore {
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("kw.db").display());
    SqlStore::connect(&DatabaseUrl::new(url)).await.unwrap()
}

/// Holds the writer connection, lets a first job take it into a batch of its own (it waits
/// for the connection), then queues `jobs` (each spawned) and waits until all of them are
/// queued: releasing the connection then runs them as ONE batch.
async fn queue_as_one_batch<T: Send + 'static>(
    store: &SqlStore,
    jobs: Vec<BoxFuture<'static, StoreResult<T>>>,
) -> Vec<StoreResult<T>> {
    let batcher = store.batch.clone().unwrap();
    let held = store.write.acquire().await.unwrap();
    let (before, _) = batcher.committed();
    let first = {
        let s = store.clone();
        tokio::spawn(async move {
            s.write_one(1, |c| {
                Box::pin(async move {
                    c.execute("SELECT 1").await.map_err(classify)?;
                    Ok(())
                })
            })
            .await
        })
    };
    let wait_queued = |n: usize| {
        let batcher = batcher.clone();
        async move {
            for _ in 0..10_000 {
                if batcher.queued() == (n, true) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            panic!("the jobs were never queued");
        }
    };
    wait_queued(0).await; // the first job was taken into its own batch
    let n = jobs.len();
    let handles: Vec<_> = jobs.into_iter().map(tokio::spawn).collect();
    wait_queued(n).await;
    drop(held);
    first.await.unwrap().unwrap();
    let mut out = Vec::with_capacity(n);
    for h in handles {
        out.push(h.await.unwrap());
    }
    // The first job's batch, then exactly one more (or none, if the batch failed).
    let (after, _) = batcher.committed();
    assert!(after - before <= 2, "{} batches", after - before);
    out
}

async fn ring_ids(store: &SqlStore, instance: InstanceId) -> Vec<String> {
    store
        .list_key_rings_impl(instance)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect()
}

fn ring(instance: InstanceId, id: &str) -> crate::KeyRingRow {
    crate::KeyRingRow {
        instance_id: instance,
        id: id.to_string(),
        created_at: 1,
        created_by: "test".into(),
    }
}

#[tokio::test]
async fn a_failing_job_in_a_batch_fails_only_itself() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir).await;
    install_test_auth(&store);
    let inst = InstanceId::new();
    let (_, jobs_before) = store.batch.as_ref().unwrap().committed();
    let job = |f: BoxFuture<'static, StoreResult<()>>| f;
    let s = store.clone();
    let a = job(Box::pin(async move {
        s.create_key_ring(&ring(inst, "ring-a")).await
    }));
    // Writes a row, then fails on a unique violation against its neighbour's row: its own
    // row must go, the neighbours' stay.
    let s = store.clone();
    let b = job(Box::pin(async move {
        s.write_tx(move |c| {
            Box::pin(async move {
                for id in ["ring-b-partial", "ring-a"] {
                    sqlx::query(
                        "INSERT INTO key_rings (instance_id, id, created_at, created_by) VALUES ($1, $2, 1, 'test')",
                    )
                    .bind(inst.to_string())
                    .bind(id)
                    .execute(&mut *c)
                    .await
                    .map_err(classify)?;
                }
                Ok(())
            })
        })
        .await
    }));
    let s = store.clone();
    let c = job(Box::pin(async move {
        s.create_key_ring(&ring(inst, "ring-c")).await
    }));
    // A conditional update that loses (no such key at that row_version).
    let s = store.clone();
    let d = job(Box::pin(async move {
        let (k, _) = crate::testsuite::key_row(inst, "ghost");
        s.update_key(&k).await
    }));
    // A lone statement that fails (no savepoint: SQLite undoes it by itself).
    let s = store.clone();
    let e = job(Box::pin(async move {
        s.create_key_ring(&ring(inst, "ring-c")).await
    }));
    let r = queue_as_one_batch(&store, vec![a, b, c, d, e]).await;
    assert!(r[0].is_ok(), "{:?}", r[0]);
    assert!(
        matches!(r[1], Err(StoreError::Conflict(ConflictKind::AlreadyExists))),
        "{:?}",
        r[1]
    );
    assert!(r[2].is_ok(), "{:?}", r[2]);
    assert!(
        matches!(r[3], Err(StoreError::Conflict(ConflictKind::KeyChanged))),
        "{:?}",
        r[3]
    );
    assert!(
        matches!(r[4], Err(StoreError::Conflict(ConflictKind::AlreadyExists))),
        "{:?}",
        r[4]
    );
    assert_eq!(ring_ids(&store, inst).await, ["ring-a", "ring-c"]);
    // One batch for the first job, one for all five.
    let (_, jobs_after) = store.batch.as_ref().unwrap().committed();
    assert_eq!(jobs_after - jobs_before, 6);
    store.close().await;
}

/// A job whose statements succeed but whose batch's COMMIT fails: a foreign key checked only
/// at COMMIT (`PRAGMA defer_foreign_keys`) that the job violates.
fn commit_breaker(store: &SqlStore) -> BoxFuture<'static, StoreResult<()>> {
    let s = store.clone();
    Box::pin(async move {
        s.write_tx(move |c| {
            Box::pin(async move {
                c.execute("PRAGMA defer_foreign_keys = ON")
                    .await
                    .map_err(classify)?;
                sqlx::query(
                    "INSERT INTO role_grants (instance_id, iam_id, role, created_at) VALUES ('no-such-instance', 'no-such-principal', 'Reader', 1)",
                )
                .execute(&mut *c)
                .await
                .map_err(classify)?;
                Ok(())
            })
        })
        .await
    })
}

#[tokio::test]
async fn a_failed_commit_acknowledges_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir).await;
    let inst = InstanceId::new();
    let s = store.clone();
    let a: BoxFuture<'static, StoreResult<()>> =
        Box::pin(async move { s.create_key_ring(&ring(inst, "ring-a")).await });
    let r = queue_as_one_batch(&store, vec![a, commit_breaker(&store)]).await;
    for r in &r {
        assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    }
    assert!(ring_ids(&store, inst).await.is_empty());
    // Alone (a batch of one), the same.
    let r = commit_breaker(&store).await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM role_grants")
        .fetch_one(&store.read)
        .await
        .unwrap();
    assert_eq!(n, 0);
    // The store writes on.
    store.create_key_ring(&ring(inst, "ring-b")).await.unwrap();
    assert_eq!(ring_ids(&store, inst).await, ["ring-b"]);
    store.close().await;
}

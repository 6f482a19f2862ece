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

// ---- Failover (`failover.rs`): what the store does when PostgreSQL goes away or cannot write.

/// The database name at the end of a URL.
fn db_name(url: &str) -> String {
    let (_, name) = url.rsplit_once('/').unwrap();
    name.split('?').next().unwrap().to_string()
}

/// `url` with its host list replaced by `hosts`, and `query` (`?...` or empty) appended.
fn with_hosts(url: &str, hosts: &[String], query: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (authority, path) = rest.split_at(rest.find('/').unwrap());
    let user = authority
        .rsplit_once('@')
        .map(|(u, _)| format!("{u}@"))
        .unwrap_or_default();
    let path = path.split('?').next().unwrap();
    format!("{scheme}://{user}{}{path}{query}", hosts.join(","))
}

/// The `host:port` of a single-host URL.
fn host_of(url: &str) -> String {
    let (_, rest) = url.split_once("://").unwrap();
    let authority = &rest[..rest.find('/').unwrap()];
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:5432")
    }
}

/// Runs one statement on the test server's maintenance database.
async fn admin_exec(sql: &str) {
    use sqlx::Connection;
    let base = std::env::var("KEYWARD_TEST_DATABASE_URL").unwrap();
    let mut c = sqlx::PgConnection::connect(&base).await.unwrap();
    c.execute(sql).await.unwrap();
    c.close().await.unwrap();
}

/// Ends every session on database `db` (as an operator or a failing server would).
async fn terminate_backends(db: &str) {
    admin_exec(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = '{db}' AND pid <> pg_backend_pid()"
    ))
    .await;
}

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn sqlstate(e: &StoreError) -> Option<String> {
    crate::database_error_detail(e).and_then(|(code, _)| code)
}

#[test]
fn multi_host_urls_are_split_as_libpq_writes_them() {
    let h = failover::PgHosts::parse(
        "postgres://kw:p%40ss@db1:5432,db2:5433,[::1]:5434/keyward?sslmode=require&target_session_attrs=read-write&application_name=kw",
    )
    .unwrap();
    assert_eq!(h.hosts, ["db1:5432", "db2:5433", "[::1]:5434"]);
    assert!(h.read_write);
    assert_eq!(
        h.url_for(1),
        "postgres://kw:p%40ss@db2:5433/keyward?sslmode=require&application_name=kw"
    );
    assert_eq!(
        h.url_for(2),
        "postgres://kw:p%40ss@[::1]:5434/keyward?sslmode=require&application_name=kw"
    );
    // Debug output names the hosts, never the password.
    assert!(!format!("{h:?}").contains("p%40ss"));
    let one = failover::PgHosts::parse("postgresql://db/kw").unwrap();
    assert_eq!(one.hosts, ["db"]);
    assert!(!one.read_write);
    assert_eq!(one.url_for(0), "postgresql://db/kw");
    let socket = failover::PgHosts::parse("postgres:///kw?host=/var/run/postgresql").unwrap();
    assert_eq!(socket.url_for(0), "postgres:///kw?host=/var/run/postgresql");
    let any = failover::PgHosts::parse("postgres://u@a,b/kw?target_session_attrs=any").unwrap();
    assert_eq!(any.url_for(1), "postgres://u@b/kw");
    assert!(!any.read_write);
    for bad in [
        "postgres://u@a,,b/kw",
        "postgres://u@a:5432,b:notaport/kw",
        "postgres://u@a:5432,[::1]:99999/kw",
        "postgres://u@a/kw?target_session_attrs=read-only",
        "postgres://u@a/kw?target_session_attrs=standby",
    ] {
        assert!(failover::PgHosts::parse(bad).is_err(), "{bad}");
    }
    // The masked form of a multi-host URL hides the password too.
    let u = DatabaseUrl::new("postgres://kw:s3cr3t@db1:5432,db2:5432/keyward");
    assert!(!format!("{u} {u:?}").contains("s3cr3t"));
}

/// 25006: a write on a session that cannot write (here the database is set read-only, as a
/// standby behind a stale route would answer) is `Unavailable`, the connection is dropped, and
/// once the server can write again the same store writes, without reconnecting by hand.
#[tokio::test]
async fn a_read_only_server_is_unavailable_and_its_connection_is_dropped() {
    let Some(url) = fresh_postgres(&[]).await else {
        return;
    };
    let db = db_name(&url);
    let store = SqlStore::connect(&DatabaseUrl::new(url.clone()))
        .await
        .unwrap();
    store.put_secret("a", b"x", "mk", 1).await.unwrap();
    let before = crate::database_health();
    admin_exec(&format!(
        "ALTER DATABASE {db} SET default_transaction_read_only = on"
    ))
    .await;
    terminate_backends(&db).await;
    let e = store.put_secret("b", b"x", "mk", 1).await.unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    assert_eq!(sqlstate(&e).as_deref(), Some("25006"), "{e:?}");
    let after = crate::database_health();
    assert!(after.errors_read_only > before.errors_read_only);
    // The read-only connection did not go back to the pool: the server has no session left.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sessions: i64 = {
        use sqlx::Connection;
        let base = std::env::var("KEYWARD_TEST_DATABASE_URL").unwrap();
        let mut c = sqlx::PgConnection::connect(&base).await.unwrap();
        let n = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = '{db}'"
        ))
        .fetch_one(&mut c)
        .await
        .unwrap();
        c.close().await.unwrap();
        n
    };
    // (The pool may still hold a connection killed above: its ping fails when it is next
    // taken, and it is replaced.)
    assert_eq!(sessions, 0);
    // Reads keep working.
    assert!(store.get_secret("a").await.unwrap().is_some());
    admin_exec(&format!(
        "ALTER DATABASE {db} RESET default_transaction_read_only"
    ))
    .await;
    // The read above left one read-only session idle: the first write may meet it (and
    // drop it); the next one writes.
    let mut wrote = false;
    for _ in 0..2 {
        match store.put_secret("b", b"x", "mk", 1).await {
            Ok(()) => {
                wrote = true;
                break;
            }
            Err(e) => assert_eq!(sqlstate(&e).as_deref(), Some("25006"), "{e:?}"),
        }
    }
    assert!(wrote);
    assert!(crate::database_health().unwritable_seconds > before.unwritable_seconds);
    store.close().await;
    drop_postgres(&url).await;
}

/// A connection killed in the middle of a statement: `Unavailable` (not a 500), and the next
/// write gets a fresh connection.
#[tokio::test]
async fn a_connection_killed_mid_statement_is_unavailable_and_replaced() {
    let Some(url) = fresh_postgres(&[]).await else {
        return;
    };
    let db = db_name(&url);
    let store = SqlStore::connect(&DatabaseUrl::new(url.clone()))
        .await
        .unwrap();
    let s = store.clone();
    let slow = tokio::spawn(async move {
        s.write_tx(|c| {
            Box::pin(async move {
                sqlx::query("SELECT pg_sleep(20)")
                    .execute(&mut *c)
                    .await
                    .map_err(classify)?;
                Ok(())
            })
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    terminate_backends(&db).await;
    let r = tokio::time::timeout(Duration::from_secs(10), slow)
        .await
        .expect("a killed connection must not hang the request")
        .unwrap();
    let e = r.unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    store.put_secret("after", b"x", "mk", 1).await.unwrap();
    store.close().await;
    drop_postgres(&url).await;
}

/// A connection that dies during COMMIT leaves the outcome unknown to the client: the store
/// says `Unavailable`, never success, and does not run the transaction again. (Here the
/// server had not committed: the row is absent.)
#[tokio::test]
async fn a_connection_lost_during_commit_is_never_a_success() {
    let Some(url) = fresh_postgres(&[]).await else {
        return;
    };
    let db = db_name(&url);
    let store = SqlStore::connect(&DatabaseUrl::new(url.clone()))
        .await
        .unwrap();
    for stmt in [
        "CREATE TABLE commit_probe (v INT)",
        "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN PERFORM pg_sleep(20); RETURN NULL; END $$",
        "CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON commit_probe \
         DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit()",
    ] {
        store.write.execute(stmt).await.unwrap();
    }
    let attempts = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let (s, n) = (store.clone(), attempts.clone());
    let w = tokio::spawn(async move {
        retry_write("commit_probe", || {
            let (s, n) = (s.clone(), n.clone());
            async move {
                n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                s.write_tx(|c| {
                    Box::pin(async move {
                        sqlx::query("INSERT INTO commit_probe VALUES (1)")
                            .execute(&mut *c)
                            .await
                            .map_err(classify)?;
                        Ok(())
                    })
                })
                .await
            }
        })
        .await
    });
    // The INSERT is done at once; the COMMIT runs the deferred trigger, which sleeps.
    tokio::time::sleep(Duration::from_millis(700)).await;
    terminate_backends(&db).await;
    let r = tokio::time::timeout(Duration::from_secs(10), w)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    assert_eq!(attempts.load(std::sync::atomic::Ordering::SeqCst), 1);
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM commit_probe")
        .fetch_one(&store.read)
        .await
        .unwrap();
    assert_eq!(n, 0);
    store.close().await;
    drop_postgres(&url).await;
}

/// A URL whose server does not listen: `Unavailable`, within the acquire timeout.
#[tokio::test]
async fn a_closed_port_is_unavailable() {
    let Some(url) = fresh_postgres(&[]).await else {
        return;
    };
    let dead = with_hosts(&url, &[format!("127.0.0.1:{}", closed_port())], "");
    let started = std::time::Instant::now();
    let e = SqlStore::connect(&DatabaseUrl::new(dead))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    assert!(
        started.elapsed() < PG_ACQUIRE_TIMEOUT + Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    drop_postgres(&url).await;
}

/// A multi-host URL whose first host is down: the store uses the second.
#[tokio::test]
async fn a_multi_host_url_skips_a_dead_host() {
    let Some(url) = fresh_postgres(&[]).await else {
        return;
    };
    let hosts = [format!("127.0.0.1:{}", closed_port()), host_of(&url)];
    let multi = with_hosts(&url, &hosts, "?target_session_attrs=read-write");
    let store = SqlStore::connect(&DatabaseUrl::new(multi)).await.unwrap();
    assert_eq!(store.current_host(), Some(1));
    store.put_secret("a", b"x", "mk", 1).await.unwrap();
    store.close().await;
    drop_postgres(&url).await;
}

/// A TCP forwarder standing in for a primary that can die (every connection through it cut,
/// new ones refused) or stop answering without closing anything (a partition, a paused
/// server: bytes are held, not forwarded).
struct Forwarder {
    port: u16,
    tasks: Arc<parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    stalled: Arc<std::sync::atomic::AtomicBool>,
}

/// Copies one direction, holding the bytes while `stalled`.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    stalled: Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while stalled.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Forwarder {
    async fn start(target: String) -> Forwarder {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let tasks: Arc<parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let stalled: Arc<std::sync::atomic::AtomicBool> = Arc::default();
        let (t, st) = (tasks.clone(), stalled.clone());
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = l.accept().await {
                let Ok(out) = tokio::net::TcpStream::connect(&target).await else {
                    continue;
                };
                let (ir, iw) = inbound.into_split();
                let (or, ow) = out.into_split();
                let mut t = t.lock();
                t.push(tokio::spawn(pump(ir, ow, st.clone())));
                t.push(tokio::spawn(pump(or, iw, st.clone())));
            }
        });
        tasks.lock().push(accept);
        Forwarder {
            port,
            tasks,
            stalled,
        }
    }

    fn kill(&self) {
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
    }

    fn stall(&self, on: bool) {
        self.stalled.store(on, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A database that stops answering without closing its connections (a partition, a paused
/// server): reads and writes are `Unavailable` within [`PG_CALL_DEADLINE`], never a hang; when
/// it answers again, so does the store.
#[tokio::test]
async fn a_silent_database_is_unavailable_within_the_call_deadline() {
    let Some(url) = fresh_postgres(&[]).await else {
        return;
    };
    let fwd = Forwarder::start(host_of(&url)).await;
    let via = with_hosts(&url, &[format!("127.0.0.1:{}", fwd.port)], "");
    let store = SqlStore::connect(&DatabaseUrl::new(via)).await.unwrap();
    store.put_secret("a", b"x", "mk", 1).await.unwrap();
    // Statements already sent when the server falls silent: a write and a read.
    let s = store.clone();
    let write = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let r = s
            .write_tx(|c| {
                Box::pin(async move {
                    sqlx::query("SELECT pg_sleep(1)")
                        .execute(&mut *c)
                        .await
                        .map_err(classify)?;
                    Ok(())
                })
            })
            .await;
        (r, started.elapsed())
    });
    let s = store.clone();
    let read = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let r = s
            .bounded(async {
                sqlx::query("SELECT pg_sleep(1)")
                    .execute(&s.read)
                    .await
                    .map_err(classify)
            })
            .await;
        (r.map(drop), started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    fwd.stall(true);
    for task in [write, read] {
        let (r, took) = task.await.unwrap();
        assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
        assert!(took < PG_CALL_DEADLINE + Duration::from_secs(1), "{took:?}");
    }
    // New calls while it stays silent.
    for write in [true, false] {
        let started = std::time::Instant::now();
        let r = if write {
            store.put_secret("b", b"x", "mk", 1).await.map(drop)
        } else {
            store.get_secret("a").await.map(drop)
        };
        assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
        assert!(
            started.elapsed() < PG_CALL_DEADLINE + Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }
    fwd.stall(false);
    let started = std::time::Instant::now();
    loop {
        if store.put_secret("c", b"x", "mk", 1).await.is_ok() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30));
    }
    assert!(store.get_secret("a").await.unwrap().is_some());
    fwd.kill();
    store.close().await;
    drop_postgres(&url).await;
}

/// The primary of a multi-host URL dies: requests fail `Unavailable` for a moment, then the
/// store writes through the next host, counts one failover, and never needed a restart.
#[tokio::test]
async fn a_multi_host_store_moves_to_the_next_host_when_the_first_dies() {
    let Some(url) = fresh_postgres(&[]).await else {
        return;
    };
    let fwd = Forwarder::start(host_of(&url)).await;
    let hosts = [format!("127.0.0.1:{}", fwd.port), host_of(&url)];
    let multi = with_hosts(&url, &hosts, "?target_session_attrs=read-write");
    let store = SqlStore::connect(&DatabaseUrl::new(multi)).await.unwrap();
    assert_eq!(store.current_host(), Some(0));
    store.put_secret("a", b"x", "mk", 1).await.unwrap();
    let before = crate::database_health();
    fwd.kill();
    let started = std::time::Instant::now();
    let mut failures = 0;
    loop {
        match store.put_secret("b", b"x", "mk", 1).await {
            Ok(()) => break,
            Err(e) => {
                assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
                failures += 1;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the store never moved to the second host"
        );
    }
    // (The first write may already succeed: the watcher can move the pool while that write
    // waits for a connection.)
    eprintln!("writes refused while the first host was gone: {failures}");
    assert_eq!(store.current_host(), Some(1));
    let after = crate::database_health();
    assert!(after.failovers > before.failovers);
    assert!(after.errors_connection > before.errors_connection);
    assert!(store.get_secret("a").await.unwrap().is_some());
    store.close().await;
    drop_postgres(&url).await;
}

/// `--require-sync-replica` on a server without a synchronous standby: writes are refused
/// (`Unavailable`), reads work; off again, writes work.
#[tokio::test]
async fn writes_wait_for_a_synchronous_standby_when_required() {
    let Some(url) = fresh_postgres(&[]).await else {
        return;
    };
    let store = SqlStore::connect(&DatabaseUrl::new(url.clone()))
        .await
        .unwrap();
    store.put_secret("a", b"x", "mk", 1).await.unwrap();
    let r = store.replication().await.unwrap().unwrap();
    assert!(r.primary);
    assert!(!r.attached(), "{r:?}");
    store.set_require_sync_replica(true);
    let e = store.put_secret("b", b"x", "mk", 1).await.unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    let (_, msg) = crate::database_error_detail(&e).unwrap();
    assert!(msg.contains("synchronous standby"), "{msg}");
    assert!(store.get_secret("a").await.unwrap().is_some());
    store.set_require_sync_replica(false);
    store.put_secret("b", b"x", "mk", 1).await.unwrap();
    store.close().await;
    drop_postgres(&url).await;
}

/// A PostgreSQL instance of the test's own, in recovery (a standby that follows no primary:
/// `standby.signal` and no `primary_conninfo`), holding a database named like the test's
/// fresh one. Started with initdb/pg_ctl as the `postgres` user (`runuser`), in a directory
/// under /tmp; stopped and removed when dropped. `KEYWARD_TEST_PG_BIN` names the server's
/// bin directory (default `/usr/lib/postgresql/15/bin`).
struct Standby {
    dir: std::path::PathBuf,
    port: u16,
    bin: String,
    /// More server settings (`-c ...`).
    extra: String,
}

impl Standby {
    /// In recovery.
    fn start(db: &str) -> Option<Standby> {
        Self::start_as(db, true, "")
    }

    /// A primary (not in recovery) whose sessions are read-only.
    fn start_read_only(db: &str) -> Option<Standby> {
        Self::start_as(db, false, "-c default_transaction_read_only=on")
    }

    fn start_as(db: &str, recovery: bool, extra: &str) -> Option<Standby> {
        use std::process::Command;
        let bin = std::env::var("KEYWARD_TEST_PG_BIN")
            .unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
        let required =
            std::env::var("KEYWARD_REQUIRE_SERVICES").is_ok_and(|v| !v.is_empty() && v != "0");
        let usable = std::path::Path::new(&format!("{bin}/initdb")).is_file()
            && Command::new("runuser")
                .args(["-u", "postgres", "--", "true"])
                .status()
                .is_ok_and(|s| s.success());
        if !usable {
            assert!(
                !required,
                "a second PostgreSQL instance (initdb in {bin}, runuser -u postgres) is missing, \
                 and KEYWARD_REQUIRE_SERVICES is set: a test may not be skipped here \
                 (set KEYWARD_TEST_PG_BIN)"
            );
            eprintln!("NOTE: no initdb/runuser: the standby test is skipped");
            return None;
        }
        let dir =
            std::env::temp_dir().join(format!("kw-standby-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir(&dir).unwrap();
        let mut s = Standby {
            dir,
            port: closed_port(),
            bin,
            extra: String::new(),
        };
        assert!(Command::new("chown")
            .arg("postgres")
            .arg(&s.dir)
            .status()
            .unwrap()
            .success());
        s.pg(&[
            "initdb",
            "-D",
            &s.data(),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ]);
        s.ctl("start");
        let url = format!("postgres://postgres@127.0.0.1:{}/postgres", s.port);
        let out = Command::new("psql")
            .args([url.as_str(), "-Atqc", &format!("CREATE DATABASE {db}")])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        s.pg(&["pg_ctl", "-D", &s.data(), "-w", "-m", "fast", "stop"]);
        if recovery {
            let signal = format!("{}/standby.signal", s.data());
            s.pg(&["touch", &signal]);
        }
        s.extra = extra.to_string();
        s.ctl("start");
        Some(s)
    }

    fn data(&self) -> String {
        format!("{}/data", self.dir.display())
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn pg(&self, args: &[&str]) {
        let prog = if args[0] == "touch" {
            "touch".to_string()
        } else {
            format!("{}/{}", self.bin, args[0])
        };
        let out = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--", prog.as_str()])
            .args(&args[1..])
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
    }

    fn ctl(&self, what: &str) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off {}",
            self.port,
            self.dir.display(),
            self.extra
        );
        let log = format!("{}/log", self.dir.display());
        self.pg(&[
            "pg_ctl",
            "-D",
            &self.data(),
            "-o",
            &opts,
            "-l",
            &log,
            "-w",
            what,
        ]);
    }
}

impl Drop for Standby {
    fn drop(&mut self) {
        let _ = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(format!("{}/pg_ctl", self.bin))
            .args(["-D", &self.data(), "-w", "-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A server in recovery is never used: alone in the URL it is `Unavailable` (the pool refuses
/// its connections); listed before the primary in a multi-host URL, it is skipped.
#[tokio::test]
async fn a_standby_is_never_used() {
    let Some(url) = fresh_postgres(&[]).await else {
        return;
    };
    let Some(standby) = Standby::start(&db_name(&url)) else {
        drop_postgres(&url).await;
        return;
    };
    let before = crate::database_health();
    let only = with_hosts(&url, &[standby.host()], "");
    let e = SqlStore::connect(&DatabaseUrl::new(only))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    assert!(crate::database_health().errors_read_only > before.errors_read_only);
    for query in ["", "?target_session_attrs=read-write"] {
        let multi = with_hosts(&url, &[standby.host(), host_of(&url)], query);
        let store = SqlStore::connect(&DatabaseUrl::new(multi)).await.unwrap();
        assert_eq!(store.current_host(), Some(1), "{query}");
        store.put_secret("a", b"x", "mk", 1).await.unwrap();
        store.close().await;
    }
    drop(standby);
    drop_postgres(&url).await;
}

/// `target_session_attrs=read-write` skips a server whose sessions are read-only (though it is
/// not in recovery); without it that server is used, and its writes are `Unavailable` (25006).
#[tokio::test]
async fn read_write_session_attrs_skip_a_read_only_server() {
    let Some(url) = fresh_postgres(&[]).await else {
        return;
    };
    let Some(ro) = Standby::start_read_only(&db_name(&url)) else {
        drop_postgres(&url).await;
        return;
    };
    let hosts = [ro.host(), host_of(&url)];
    let multi = with_hosts(&url, &hosts, "?target_session_attrs=read-write");
    let store = SqlStore::connect(&DatabaseUrl::new(multi)).await.unwrap();
    assert_eq!(store.current_host(), Some(1));
    store.put_secret("a", b"x", "mk", 1).await.unwrap();
    store.close().await;
    // Without the attribute the first server that is not a standby is taken: there the
    // migrations cannot even run, and the store says the database is unavailable.
    let any = with_hosts(&url, &hosts, "");
    let e = SqlStore::connect(&DatabaseUrl::new(any)).await.unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    assert_eq!(sqlstate(&e).as_deref(), Some("25006"), "{e:?}");
    drop(ro);
    drop_postgres(&url).await;
}

/// Which SQLSTATEs are `Unavailable` (503) and which stay errors (500), as the server raises
/// them, and how each is counted.
#[tokio::test]
async fn sqlstates_are_classified_for_failover() {
    let Some(url) = fresh_postgres(&[]).await else {
        return;
    };
    let store = SqlStore::connect(&DatabaseUrl::new(url.clone()))
        .await
        .unwrap();
    for (code, unavailable, class) in [
        ("25006", true, crate::ErrorClass::ReadOnly),
        ("57P01", true, crate::ErrorClass::Connection),
        ("57P02", true, crate::ErrorClass::Connection),
        ("57P03", true, crate::ErrorClass::Connection),
        ("08006", true, crate::ErrorClass::Connection),
        ("53300", true, crate::ErrorClass::Connection),
        ("53100", true, crate::ErrorClass::Connection),
        ("22012", false, crate::ErrorClass::Other),
        ("XX000", false, crate::ErrorClass::Other),
    ] {
        let before = crate::database_health();
        let e = sqlx::query(&format!(
            "DO $$ BEGIN RAISE EXCEPTION 'synthetic' USING ERRCODE = '{code}'; END $$"
        ))
        .execute(&store.read)
        .await
        .map_err(classify)
        .unwrap_err();
        assert_eq!(
            matches!(e, StoreError::Unavailable(_)),
            unavailable,
            "{code}: {e:?}"
        );
        assert_eq!(sqlstate(&e).as_deref(), Some(code));
        let after = crate::database_health();
        let counted = match class {
            crate::ErrorClass::Connection => after.errors_connection > before.errors_connection,
            crate::ErrorClass::ReadOnly => after.errors_read_only > before.errors_read_only,
            crate::ErrorClass::Other => after.errors_other > before.errors_other,
        };
        assert!(counted, "{code}");
    }
    store.close().await;
    drop_postgres(&url).await;
}

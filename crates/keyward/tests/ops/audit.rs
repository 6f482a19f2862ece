//! Audit log, over real HTTP, for both sinks:
//!
//! - the JSON-lines file: an `attempt` and an outcome per audited request that acted (one
//!   `failure` for a request refused before it acted), none of the secrets the test
//!   used, and with the file failing (`/dev/full`) every state-changing request gets 503 and
//!   changes nothing;
//! - the database table (`--audit-sink database`, SQLite; and PostgreSQL when
//!   `KEYWARD_TEST_DATABASE_URL` is set, in a fresh database): the same one row per audited
//!   request (the same records as the file when both sinks run), no secret in any column, and
//!   with the table refusing inserts (a real trigger on SQLite, a renamed table on
//!   PostgreSQL) every audited request gets 503 and nothing changes; once the table takes
//!   inserts again, so does the service;
//! - `keyward admin audit tail|search` reading the file and the table, and a real `keyward
//!   serve` configured through `KEYWARD_AUDIT_SINK`.
//!
//! Run: `cargo test -p keyward --test ops audit::`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use keyward::auditcmd::{AuditCmd, AuditFilter, AuditSource};
use keyward::config::ServeArgs;
use keyward_domain::{InstanceId, KeyState, Role};
use keyward_service::admin;
use keyward_store::{AuditQuery, KeyQuery, Store};
use serde_json::{json, Value};

use super::base_args as args;

/// A server started by [`super::start`], with the addresses these tests use.
struct Srv {
    base: String,
    store: Arc<dyn Store>,
    /// The server's database URL.
    url: String,
    _running: super::Running,
}

async fn start_with(args: ServeArgs) -> Srv {
    let url = args.resolve().unwrap().database_url.expose().to_string();
    let running = super::start(args, None).await;
    Srv {
        base: format!("http://{}", running.addr),
        store: running.store.clone(),
        url,
        _running: running,
    }
}

async fn start(dir: &Path, audit: PathBuf) -> Srv {
    start_with(ServeArgs {
        audit_log: Some(audit),
        ..args(dir)
    })
    .await
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    instance: String,
}

impl Client {
    async fn new(srv: &Srv, role: Role) -> (Self, String, InstanceId) {
        let inst = admin::create_instance(&*srv.store, "audit", 1)
            .await
            .unwrap();
        let k = admin::create_api_key(&*srv.store, inst.id, role, "a", None, 1)
            .await
            .unwrap();
        let http = reqwest::Client::new();
        let token = keyward_testsupport::token(&http, &srv.base, &k.apikey).await;
        (
            Self {
                http,
                base: srv.base.clone(),
                token,
                instance: inst.id.to_string(),
            },
            k.apikey,
            inst.id,
        )
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = self
            .http
            .request(method, format!("{}/api/v2/{path}", self.base))
            .bearer_auth(&self.token)
            .header("bluemix-instance", &self.instance)
            .header("correlation-id", "test-corr-1");
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

fn key_body(name: &str, payload: Option<&str>) -> Value {
    let mut r =
        json!({"type": "application/vnd.ibm.kms.key+json", "name": name, "extractable": false});
    if let Some(p) = payload {
        r["payload"] = json!(p);
    }
    json!({"metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1}, "resources": [r]})
}

fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// What [`exercise`] must leave in the audit log, in order.
/// A request that acted leaves its `attempt` (written before it acted) and its outcome
/// (written after it committed); the wrap refused before acting leaves one `failure`.
const EXPECTED: &[(&str, &str)] = &[
    ("kms.secrets.create", "attempt"),
    ("kms.secrets.create", "success"),
    ("kms.secrets.wrap", "attempt"),
    ("kms.secrets.wrap", "success"),
    ("kms.secrets.unwrap", "attempt"),
    ("kms.secrets.unwrap", "success"),
    ("kms.secrets.createalias", "attempt"),
    ("kms.secrets.createalias", "success"),
    ("kms.secrets.disable", "attempt"),
    ("kms.secrets.disable", "success"),
    ("kms.secrets.wrap", "failure"),
    ("kms.importtoken.create", "attempt"),
    ("kms.importtoken.create", "success"),
    ("kms.importtoken.read", "attempt"),
    ("kms.importtoken.read", "success"),
    ("kms.secrets.delete", "attempt"),
    ("kms.secrets.delete", "success"),
];

/// Index in [`EXPECTED`] of the one failure.
const FAILURE: usize = 10;

/// The key [`exercise`] worked on, and every secret that crossed the wire.
struct Exercised {
    key_id: String,
    secrets: Vec<String>,
}

/// Audited requests (and two plain reads that are not audited), one of them failing.
async fn exercise(c: &Client, apikey: &str) -> Exercised {
    use reqwest::Method as M;
    let material = B64.encode([7u8; 32]);
    let (s, k) = c
        .call(M::POST, "keys", Some(key_body("imp", Some(&material))))
        .await;
    assert_eq!(s, 201);
    let id = k["resources"][0]["id"].as_str().unwrap().to_string();
    let dek = B64.encode([9u8; 32]);
    let (s, w) = c
        .call(
            M::POST,
            &format!("keys/{id}/actions/wrap"),
            Some(json!({"plaintext": dek})),
        )
        .await;
    assert_eq!(s, 200);
    let ct = w["ciphertext"].as_str().unwrap().to_string();
    assert_eq!(
        c.call(
            M::POST,
            &format!("keys/{id}/actions/unwrap"),
            Some(json!({"ciphertext": ct}))
        )
        .await
        .0,
        200
    );
    // plain reads are not audited
    assert_eq!(
        c.call(M::GET, &format!("keys/{id}/metadata"), None).await.0,
        200
    );
    assert_eq!(c.call(M::GET, "keys", None).await.0, 200);
    assert_eq!(
        c.call(M::POST, &format!("keys/{id}/aliases/audited-alias"), None)
            .await
            .0,
        201
    );
    assert_eq!(
        c.call(M::POST, &format!("keys/{id}/actions/disable"), None)
            .await
            .0,
        204
    );
    // a failed audited request: one failure record with its reason code
    assert_eq!(
        c.call(M::POST, &format!("keys/{id}/actions/wrap"), Some(json!({})))
            .await
            .0,
        409
    );
    assert_eq!(
        c.call(M::POST, "import_token", Some(json!({"expiration": 300})))
            .await
            .0,
        200
    );
    let (s, tok) = c.call(M::GET, "import_token", None).await;
    assert_eq!(s, 200);
    let nonce = tok["nonce"].as_str().unwrap().to_string();
    assert!(!nonce.is_empty());
    assert_eq!(c.call(M::DELETE, &format!("keys/{id}"), None).await.0, 204);
    Exercised {
        key_id: id,
        secrets: vec![
            material,
            dek,
            ct,
            nonce,
            apikey.to_string(),
            c.token.clone(),
        ],
    }
}

/// The records of [`exercise`], as JSON objects (file lines, or table rows as `audit tail`
/// prints them).
fn check_records(recs: &[Value], key_id: &str) {
    let actions: Vec<(&str, &str)> = recs
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap(),
                r["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(actions, EXPECTED);
    let failure = &recs[FAILURE];
    assert_eq!(failure["reason"], "KEY_ACTION_INVALID_STATE_ERR");
    for r in recs {
        assert_eq!(r["correlation_id"], "test-corr-1");
        assert_eq!(r["source"], "127.0.0.1");
        assert!(r["request_id"].as_str().unwrap().len() == 36);
        assert!(r["principal"]
            .as_str()
            .unwrap()
            .starts_with("iam-ServiceId-"));
        assert!(keyward_domain::parse_time(r["time"].as_str().unwrap()).is_some());
    }
    assert_eq!(recs[1]["key_id"], key_id);
    // Each attempt is followed by the outcome of the same request; the refused wrap has only
    // its failure; no request id appears anywhere else.
    let mut i = 0;
    let mut ids = Vec::new();
    while i < recs.len() {
        let id = recs[i]["request_id"].as_str().unwrap();
        if recs[i]["outcome"] == "attempt" {
            assert_eq!(recs[i + 1]["request_id"], id, "outcome of {id}");
            assert_ne!(recs[i + 1]["outcome"], "attempt");
            i += 2;
        } else {
            i += 1;
        }
        ids.push(id);
    }
    let n = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n, "one attempt and one outcome per request");
}

/// The table's records as `keyward admin audit tail` prints them, without their ids.
async fn table_records(srv: &Srv) -> Vec<Value> {
    srv.store
        .audit_records(&AuditQuery::default())
        .await
        .unwrap()
        .iter()
        .map(|e| {
            let mut v = keyward::auditcmd::entry_json(e);
            v.as_object_mut().unwrap().remove("id");
            v
        })
        .collect()
}

/// The table's columns every row must have: a new column must be added here, after checking
/// it can never hold a secret.
const COLUMNS: &[&str] = &[
    "id",
    "time_unix",
    "time",
    "request_id",
    "correlation_id",
    "principal",
    "instance",
    "action",
    "key_id",
    "outcome",
    "reason",
    "source",
];

/// Every cell of `audit_log` as text, read with plain SQL (whatever the columns are).
async fn raw_table(url: &str) -> (Vec<String>, Vec<Vec<String>>) {
    use sqlx::{Column, Connection, Row};
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    let rows = sqlx::query("SELECT * FROM audit_log ORDER BY id")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let cols = rows
        .first()
        .map(|r| r.columns().iter().map(|c| c.name().to_string()).collect())
        .unwrap_or_default();
    let cells = rows
        .iter()
        .map(|r| {
            (0..r.len())
                .map(|i| match r.try_get::<Option<String>, _>(i) {
                    Ok(s) => s.unwrap_or_default(),
                    Err(_) => r
                        .try_get::<Option<i64>, _>(i)
                        .unwrap()
                        .map(|n| n.to_string())
                        .unwrap_or_default(),
                })
                .collect()
        })
        .collect();
    conn.close().await.unwrap();
    (cols, cells)
}

async fn assert_no_secret_in_table(url: &str, rows: usize, secrets: &[String]) {
    let (cols, cells) = raw_table(url).await;
    assert_eq!(cols, COLUMNS);
    assert_eq!(cells.len(), rows);
    for row in &cells {
        for cell in row {
            for s in secrets {
                assert!(
                    !cell.contains(s.as_str()),
                    "the audit table holds a secret: {cell:?}"
                );
            }
        }
    }
}

/// Runs a SQL statement on the server's database through a connection of its own.
async fn sql(url: &str, stmt: &str) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    sqlx::query(stmt).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

fn all_states() -> KeyQuery {
    KeyQuery {
        states: vec![
            KeyState::Active,
            KeyState::Suspended,
            KeyState::Deactivated,
            KeyState::Destroyed,
        ],
        ..KeyQuery::default()
    }
}

fn search(source: AuditSource, filter: AuditFilter) -> AuditCmd {
    AuditCmd::Search { source, filter }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_record_per_audited_request_and_no_secrets() {
    let _shared = super::EXCLUSIVE.read().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let srv = start(&dir.path().join("data"), log.clone()).await;
    let (c, apikey, _) = Client::new(&srv, Role::Manager).await;
    let ex = exercise(&c, &apikey).await;

    let recs = records(&log);
    check_records(&recs, &ex.key_id);
    let text = std::fs::read_to_string(&log).unwrap();
    for secret in &ex.secrets {
        assert!(
            !text.contains(secret.as_str()),
            "the audit log holds a secret"
        );
    }
    // The file sink alone writes no table rows.
    assert!(table_records(&srv).await.is_empty());

    let file = AuditSource {
        file: Some(log.clone()),
        sink: None,
    };
    let found = keyward::auditcmd::run(
        search(
            file.clone(),
            AuditFilter {
                action: Some("kms.secrets.wrap".into()),
                outcome: Some("failure".into()),
                ..AuditFilter::default()
            },
        ),
        None,
        None,
    )
    .await
    .unwrap();
    assert_eq!(found.len(), 1);
    let tail = keyward::auditcmd::run(
        AuditCmd::Tail {
            source: file,
            lines: 2,
        },
        None,
        None,
    )
    .await
    .unwrap();
    assert_eq!(tail.len(), 2);
    assert_eq!(tail[0]["action"], "kms.secrets.delete");
    assert_eq!(tail[0]["outcome"], "attempt");
    assert_eq!(tail[1]["action"], "kms.secrets.delete");
    assert_eq!(tail[1]["outcome"], "success");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&log).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_audit_sink_refuses_changes_with_503_and_changes_nothing() {
    let _shared = super::EXCLUSIVE.read().await;
    use reqwest::Method as M;
    if !Path::new("/dev/full").exists() {
        keyward_testsupport::services::missing(
            "a_failing_audit_sink_refuses_changes_with_503_and_changes_nothing",
            "/dev/full",
            "a Linux /dev",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), PathBuf::from("/dev/full")).await;
    let (c, _, inst) = Client::new(&srv, Role::Manager).await;
    let all = all_states();
    let before = srv.store.count_keys(inst, &all).await.unwrap();
    let (s, body) = c.call(M::POST, "keys", Some(key_body("nope", None))).await;
    assert_eq!(s, 503);
    assert_eq!(
        body["resources"][0]["reasons"][0]["code"],
        "SERVICE_UNAVAILABLE_ERR"
    );
    assert_eq!(
        c.call(M::POST, "import_token", Some(json!({}))).await.0,
        503
    );
    assert_eq!(c.call(M::POST, "key_rings/ring-x", None).await.0, 503);
    assert_eq!(
        srv.store.count_keys(inst, &all).await.unwrap(),
        before,
        "no key was stored"
    );
    assert!(
        srv.store.get_token(inst).await.unwrap().is_none(),
        "no token was stored"
    );
    assert!(
        srv.store.list_key_rings(inst).await.unwrap().is_empty(),
        "no ring was stored"
    );
    // reads that use no key material still work
    assert_eq!(c.call(M::GET, "keys", None).await.0, 200);
}

/// `--audit-sink database` on SQLite: one row per audited request, the same records the file
/// gets, no secret in any column; `admin audit tail|search` read the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_sink_holds_one_row_per_audited_request_and_no_secrets() {
    let _shared = super::EXCLUSIVE.read().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let srv = start_with(ServeArgs {
        audit_sink: Some("database".into()),
        ..args(&data)
    })
    .await;
    let (c, apikey, inst) = Client::new(&srv, Role::Manager).await;
    let ex = exercise(&c, &apikey).await;

    let recs = table_records(&srv).await;
    check_records(&recs, &ex.key_id);
    for r in &recs {
        assert_eq!(r["instance"], inst.to_string());
    }
    assert_no_secret_in_table(&srv.url, EXPECTED.len(), &ex.secrets).await;

    // `admin audit` reads the table of the data dir when no file is given.
    let table = AuditSource::default();
    let d = Some(data.as_path());
    let tail = keyward::auditcmd::run(
        AuditCmd::Tail {
            source: table.clone(),
            lines: 2,
        },
        d,
        None,
    )
    .await
    .unwrap();
    assert_eq!(tail.len(), 2);
    assert_eq!(tail[0]["action"], "kms.secrets.delete");
    assert_eq!(tail[1]["action"], "kms.secrets.delete");
    assert_eq!(tail[1]["outcome"], "success");
    assert!(tail[0]["id"].as_i64().unwrap() < tail[1]["id"].as_i64().unwrap());
    let run = |f: AuditFilter| keyward::auditcmd::run(search(table.clone(), f), d, None);
    let found = run(AuditFilter {
        action: Some("kms.secrets.wrap".into()),
        outcome: Some("failure".into()),
        ..AuditFilter::default()
    })
    .await
    .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["reason"], "KEY_ACTION_INVALID_STATE_ERR");
    let by_key = run(AuditFilter {
        key_id: Some(ex.key_id.clone()),
        ..AuditFilter::default()
    })
    .await
    .unwrap();
    // Every record but the four import-token ones names the key.
    assert_eq!(by_key.len(), EXPECTED.len() - 4);
    let principal = recs[0]["principal"].as_str().unwrap().to_string();
    let since = recs[0]["time"].as_str().unwrap().to_string();
    let mine = run(AuditFilter {
        principal: Some(principal),
        since: Some(since),
        until: Some("2999-01-01T00:00:00Z".into()),
        ..AuditFilter::default()
    })
    .await
    .unwrap();
    assert_eq!(mine.len(), EXPECTED.len());
    let none = run(AuditFilter {
        until: Some("2000-01-01T00:00:00Z".into()),
        ..AuditFilter::default()
    })
    .await
    .unwrap();
    assert!(none.is_empty());
    let limited = run(AuditFilter {
        limit: Some(3),
        ..AuditFilter::default()
    })
    .await
    .unwrap();
    assert_eq!(limited.len(), 3);
    assert_eq!(limited[0]["action"], "kms.secrets.create");
    let one = run(AuditFilter {
        request_id: Some(recs[8]["request_id"].as_str().unwrap().to_string()),
        ..AuditFilter::default()
    })
    .await
    .unwrap();
    assert_eq!(one.len(), 2, "the attempt and the outcome");
    assert_eq!(one[0]["action"], "kms.secrets.disable");
    assert_eq!(one[1]["outcome"], "success");
    assert!(run(AuditFilter {
        since: Some("yesterday".into()),
        ..AuditFilter::default()
    })
    .await
    .is_err());
}

/// Both sinks at once write the same records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sinks_write_the_same_records() {
    let _shared = super::EXCLUSIVE.read().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let srv = start_with(ServeArgs {
        audit_log: Some(log.clone()),
        audit_sink: Some("file,database".into()),
        ..args(&dir.path().join("data"))
    })
    .await;
    let (c, apikey, _) = Client::new(&srv, Role::Manager).await;
    let ex = exercise(&c, &apikey).await;
    let file = records(&log);
    check_records(&file, &ex.key_id);
    assert_eq!(table_records(&srv).await, file);
}

/// The table refusing inserts (a real `BEFORE INSERT` trigger that raises): every audited
/// request, key use included, gets 503 and nothing changes; plain reads still work; once the
/// trigger is gone, requests succeed again without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_audit_table_refuses_audited_requests_with_503_and_changes_nothing() {
    let _shared = super::EXCLUSIVE.read().await;
    let dir = tempfile::tempdir().unwrap();
    let srv = start_with(ServeArgs {
        audit_sink: Some("database".into()),
        ..args(dir.path())
    })
    .await;
    refuses_while_the_table_refuses(
        &srv,
        "CREATE TRIGGER audit_refuse BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'audit table refuses writes'); END",
        "DROP TRIGGER audit_refuse",
    )
    .await;
}

/// Makes the table refuse inserts with `break_sql`, checks that audited requests fail with
/// 503 and change nothing, then repairs it with `fix_sql` and checks they work again.
async fn refuses_while_the_table_refuses(srv: &Srv, break_sql: &str, fix_sql: &str) {
    use reqwest::Method as M;
    let (c, _, inst) = Client::new(srv, Role::Manager).await;
    let (s, k) = c
        .call(M::POST, "keys", Some(key_body("before", None)))
        .await;
    assert_eq!(s, 201);
    let id = k["resources"][0]["id"].as_str().unwrap().to_string();
    let (s, w) = c
        .call(
            M::POST,
            &format!("keys/{id}/actions/wrap"),
            Some(json!({"plaintext": B64.encode([1u8; 32])})),
        )
        .await;
    assert_eq!(s, 200);
    let ct = w["ciphertext"].as_str().unwrap().to_string();
    let all = all_states();
    let keys_before = srv.store.count_keys(inst, &all).await.unwrap();
    let rows_before = srv
        .store
        .audit_records(&AuditQuery::default())
        .await
        .unwrap();
    assert_eq!(
        rows_before.len(),
        4,
        "create and wrap: attempts and outcomes"
    );

    sql(&srv.url, break_sql).await;

    let (s, body) = c.call(M::POST, "keys", Some(key_body("nope", None))).await;
    assert_eq!(s, 503, "{body}");
    assert_eq!(
        body["resources"][0]["reasons"][0]["code"],
        "SERVICE_UNAVAILABLE_ERR"
    );
    assert_eq!(
        c.call(M::POST, "import_token", Some(json!({}))).await.0,
        503
    );
    assert_eq!(c.call(M::POST, "key_rings/ring-x", None).await.0, 503);
    assert_eq!(
        c.call(M::POST, &format!("keys/{id}/actions/disable"), None)
            .await
            .0,
        503
    );
    assert_eq!(
        c.call(M::POST, &format!("keys/{id}/aliases/nope"), None)
            .await
            .0,
        503
    );
    // Key use is refused too: no material leaves without its record.
    assert_eq!(
        c.call(
            M::POST,
            &format!("keys/{id}/actions/wrap"),
            Some(json!({"plaintext": B64.encode([2u8; 32])}))
        )
        .await
        .0,
        503
    );
    let (s, body) = c
        .call(
            M::POST,
            &format!("keys/{id}/actions/unwrap"),
            Some(json!({"ciphertext": ct})),
        )
        .await;
    assert_eq!(s, 503);
    assert!(body.get("plaintext").is_none());
    assert_eq!(c.call(M::DELETE, &format!("keys/{id}"), None).await.0, 503);

    assert_eq!(
        srv.store.count_keys(inst, &all).await.unwrap(),
        keys_before,
        "no key was stored"
    );
    let key = srv
        .store
        .get_key(inst, keyward_domain::KeyId::parse(&id).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        key.state,
        KeyState::Active,
        "the key was not disabled or deleted"
    );
    assert!(srv.store.get_token(inst).await.unwrap().is_none());
    assert!(srv.store.list_key_rings(inst).await.unwrap().is_empty());
    assert!(srv.store.aliases_of(inst, key.id).await.unwrap().is_empty());
    // reads that use no key material still work
    assert_eq!(c.call(M::GET, "keys", None).await.0, 200);
    assert_eq!(
        c.call(M::GET, &format!("keys/{id}/metadata"), None).await.0,
        200
    );

    sql(&srv.url, fix_sql).await;
    let (s, _) = c.call(M::POST, "keys", Some(key_body("after", None))).await;
    assert_eq!(s, 201);
    assert_eq!(
        srv.store.count_keys(inst, &all).await.unwrap(),
        keys_before + 1
    );
    let rows_after = srv
        .store
        .audit_records(&AuditQuery::default())
        .await
        .unwrap();
    assert_eq!(
        rows_after.len(),
        6,
        "nothing was recorded while the table refused"
    );
    assert_eq!(rows_after[..4], rows_before[..]);
    assert_eq!(rows_after[4].row.action, "kms.secrets.create");
    assert_eq!(rows_after[4].row.outcome, "attempt");
    assert_eq!(rows_after[5].row.outcome, "success");
}

/// The table sink on PostgreSQL (a fresh database): both sinks write the same records, no
/// secret in any column; with the table gone (renamed), audited requests get 503 and change
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_sink_on_postgres() {
    let _shared = super::EXCLUSIVE.read().await;
    let Some(base) = keyward_testsupport::pg_base("the_table_sink_on_postgres") else {
        return;
    };
    let db = keyward_testsupport::Db::fresh(&base);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    // The data dirs hold only the master keys (the server creates a data dir for SQLite only).
    for d in ["a", "b"] {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    {
        let srv = start_with(ServeArgs {
            database_url: Some(db.url.clone()),
            audit_log: Some(log.clone()),
            audit_sink: Some("file,database".into()),
            ..args(&dir.path().join("a"))
        })
        .await;
        let (c, apikey, _) = Client::new(&srv, Role::Manager).await;
        let ex = exercise(&c, &apikey).await;
        let file = records(&log);
        check_records(&file, &ex.key_id);
        assert_eq!(table_records(&srv).await, file);
        assert_no_secret_in_table(&db.url, EXPECTED.len(), &ex.secrets).await;
        let tail = keyward::auditcmd::run(
            AuditCmd::Tail {
                source: AuditSource {
                    file: None,
                    sink: Some("database".into()),
                },
                lines: 1,
            },
            None,
            Some(&db.url),
        )
        .await
        .unwrap();
        assert_eq!(tail.len(), 1);
        assert_eq!(tail[0]["action"], "kms.secrets.delete");
    }
    let db2 = keyward_testsupport::Db::fresh(&base);
    let srv = start_with(ServeArgs {
        database_url: Some(db2.url.clone()),
        audit_sink: Some("database".into()),
        ..args(&dir.path().join("b"))
    })
    .await;
    refuses_while_the_table_refuses(
        &srv,
        "ALTER TABLE audit_log RENAME TO audit_log_away",
        "ALTER TABLE audit_log_away RENAME TO audit_log",
    )
    .await;
}

/// A real `keyward serve` configured by `KEYWARD_AUDIT_SINK=database` alone, and the real
/// `keyward admin audit tail|search` reading its table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_and_admin_audit_read_the_table_through_the_binary() {
    let _shared = super::EXCLUSIVE.read().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let port = keyward_testsupport::free_port();
    let out = std::fs::File::create(dir.path().join("serve.out")).unwrap();
    let mut child = keyward_testsupport::keyward()
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("KEYWARD_DATA_DIR", &data)
        .env("KEYWARD_TOKEN_POOL_SIZE", "0")
        .env("KEYWARD_AUDIT_SINK", "database")
        .stdout(out)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let base = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let (inst, apikey) = loop {
        let up = reqwest::get(format!("{base}/healthz")).await.is_ok();
        let text = std::fs::read_to_string(dir.path().join("serve.out")).unwrap_or_default();
        if let (true, Some((i, k))) = (up, keyward_testsupport::banner_of(&text)) {
            break (i, k);
        }
        assert!(child.try_wait().unwrap().is_none(), "keyward serve exited");
        assert!(
            std::time::Instant::now() < deadline,
            "keyward serve never came up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let child = Kill(child);
    let api = keyward_testsupport::Api::login(&base, &apikey, &inst).await;
    let key = api.root_key("cli").await;
    let ct = api.wrap_ok(&key, b"0123456789abcdef").await;
    api.unwrap_ok(&key, &ct).await;

    let admin = |args: &[&str]| {
        let out = keyward_testsupport::keyward()
            .arg("admin")
            .arg("--data-dir")
            .arg(&data)
            .arg("audit")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "admin audit {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    let tail = admin(&["tail", "-n", "4"]);
    let actions: Vec<(&str, &str)> = tail
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap(),
                r["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("kms.secrets.wrap", "attempt"),
            ("kms.secrets.wrap", "success"),
            ("kms.secrets.unwrap", "attempt"),
            ("kms.secrets.unwrap", "success")
        ]
    );
    assert!(tail.iter().all(|r| r["key_id"] == key.as_str()));
    let created = admin(&[
        "search",
        "--action",
        "kms.secrets.create",
        "--key-id",
        &key,
        "--outcome",
        "success",
    ]);
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["instance"], inst.as_str());
    let text = tail
        .iter()
        .chain(&created)
        .map(Value::to_string)
        .collect::<String>();
    assert!(!text.contains(&ct) && !text.contains(&apikey) && !text.contains(&api.token));
    drop(child);
}

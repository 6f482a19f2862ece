//! The database is not trusted (docs/threat-model.md, attacker A3): someone who can write the
//! database but lacks the master key edits or inserts rows directly, in SQLite and in
//! PostgreSQL, and the real binary refuses to reveal, use or grant anything from them.
//!
//! Each test stops the server, edits the database with plain SQL, starts it again (so no cache
//! hides the edit) and checks the answers over HTTP.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use keyward_domain::InstanceId;
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::{AnyConnection, Connection};

use crate::common::*;
use crate::durability::{admin, start_with, Proc};
use keyward_testsupport::{pg_base, Db, Node, NodeOpts};

/// The deciding columns of a key row that an attacker flips, each on its own root key.
const KEY_EDITS: &[(&str, &str)] = &[
    ("extractable", "extractable = 1"),
    ("imported", "imported = 1"),
    ("state", "state = 2"),
    ("key_ring_id", "key_ring_id = 'elsewhere'"),
    ("deletion_date", "deletion_date = 1"),
    ("attrs", "attrs = '{\"dualAuthDelete\":false}'"),
    ("expiration_date", "expiration_date = 99999999999"),
    ("current_version", "current_version = id"),
];

/// One deployment of the real binary on SQLite or PostgreSQL, stopped and started around
/// direct edits of its database.
struct Deployment {
    flags: Vec<String>,
    /// Flags for `serve` only.
    serve_flags: Vec<String>,
    sql_url: String,
    data: PathBuf,
    proc: Option<Proc>,
    /// The PostgreSQL database (dropped after the server stops).
    _db: Option<Db>,
    _dir: tempfile::TempDir,
}

impl Deployment {
    async fn sqlite() -> Deployment {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        Deployment {
            flags: Vec::new(),
            serve_flags: Vec::new(),
            sql_url: format!("sqlite://{}", data.join("keyward.db").display()),
            data,
            proc: None,
            _db: None,
            _dir: dir,
        }
    }

    /// On a fresh PostgreSQL database, or `None` when `KEYWARD_TEST_DATABASE_URL` is unset
    /// (a failure under `KEYWARD_REQUIRE_SERVICES`, see [`keyward_testsupport::services`]).
    fn postgres(test: &str) -> Option<Deployment> {
        let db = Db::fresh(&pg_base(test)?);
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        Some(Deployment {
            flags: vec!["--database-url".into(), db.url.clone()],
            serve_flags: Vec::new(),
            sql_url: db.url.clone(),
            data: dir.path().join("data"),
            proc: None,
            _db: Some(db),
            _dir: dir,
        })
    }

    fn flags(&self) -> Vec<&str> {
        self.flags.iter().map(String::as_str).collect()
    }

    fn base(&self) -> &str {
        &self.proc.as_ref().expect("running").base
    }

    async fn start(&mut self) {
        assert!(self.proc.is_none());
        let mut flags = self.flags();
        flags.extend(self.serve_flags.iter().map(String::as_str));
        self.proc = Some(start_with(&self.data, &flags).await);
    }

    fn stop(&mut self) {
        if let Some(p) = self.proc.take() {
            p.terminate();
        }
    }

    fn admin(&self, args: &[&str]) -> Value {
        let mut all = self.flags();
        all.extend_from_slice(args);
        admin(&self.data, &all)
    }

    /// A new instance and a principal with `role` in it, logged in.
    async fn principal(&self, role: &str) -> Client {
        let inst = self.admin(&["instance", "create", "--name", "untrusted"]);
        let inst = inst["id"].as_str().unwrap().to_string();
        self.principal_in(&inst, role).await
    }

    async fn principal_in(&self, inst: &str, role: &str) -> Client {
        let k = self.admin(&["apikey", "create", "--instance", inst, "--role", role]);
        Client::login(
            self.base(),
            InstanceId::parse(inst).unwrap(),
            k["apikey"].as_str().unwrap(),
            k["iam_id"].as_str().unwrap(),
        )
        .await
    }

    /// The same principal against the restarted server.
    async fn relogin(&self, c: &Client) -> Client {
        Client::login(self.base(), c.instance_id, &c.apikey, &c.iam_id).await
    }

    /// Runs one SQL statement against the database; returns the rows it changed.
    async fn exec(&self, sql: &str) -> u64 {
        sqlx::any::install_default_drivers();
        let mut conn = AnyConnection::connect(&self.sql_url).await.unwrap();
        let n = sqlx::query(sql)
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .rows_affected();
        conn.close().await.unwrap();
        n
    }

    /// Stops the server, runs each statement (each must change a row), starts it again.
    async fn edit(&mut self, statements: &[String]) {
        self.stop();
        for sql in statements {
            assert!(self.exec(sql).await >= 1, "{sql} changed nothing");
        }
        self.start().await;
    }

    /// One integer from a query.
    async fn int(&self, sql: &str) -> i64 {
        sqlx::any::install_default_drivers();
        let mut conn = AnyConnection::connect(&self.sql_url).await.unwrap();
        let v: i64 = sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap();
        conn.close().await.unwrap();
        v
    }

    fn blob(&self, bytes: &[u8]) -> String {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        if self.sql_url.starts_with("sqlite") {
            format!("X'{hex}'")
        } else {
            format!("'\\x{hex}'::bytea")
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.data.with_extension("log")).unwrap_or_default()
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A request whose answer may be a 5xx (the integrity refusal is one): (status, body).
async fn raw(c: &Client, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut rb = c
        .http
        .request(method, format!("{}{path}", c.base))
        .bearer_auth(&c.token)
        .header("bluemix-instance", &c.instance)
        .header("content-type", "application/json");
    if let Some(b) = body {
        rb = rb.body(b.to_string());
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn assert_refused(status: u16, body: &Value, what: &str) {
    assert_eq!(status, 500, "{what}: {body}");
    assert_eq!(
        body["resources"][0]["reasons"][0]["code"], "ROW_INTEGRITY_ERR",
        "{what}: {body}"
    );
    assert!(!body.to_string().contains("payload"), "{what}: {body}");
}

async fn metric(base: &str, line_prefix: &str) -> u64 {
    let text = http_client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .unwrap_or_else(|| panic!("no {line_prefix} in {text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Every authenticated attribute of a root key, edited directly in the database, makes the
/// key refused: no material, no wrap, no unwrap. A key moved into another instance (where the
/// attacker holds a role) and an edited version row are refused too; unedited keys keep
/// working.
async fn edited_key_attributes_are_refused(mut d: Deployment) {
    d.start().await;
    let c = d.principal("Manager").await;
    let other = d.principal("Manager").await;
    let mut victims = Vec::new();
    for (col, edit) in KEY_EDITS {
        let id = c.create_root_key().await["id"]
            .as_str()
            .unwrap()
            .to_string();
        let ct = c.wrap_bytes(&id, b"attribute", None).await;
        victims.push((
            col.to_string(),
            format!("UPDATE keys SET {edit} WHERE id = '{id}'"),
            id,
            ct,
        ));
    }
    let moved = c.create_root_key().await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let moved_ct = c.wrap_bytes(&moved, b"moved", None).await;
    let versioned = c.create_root_key().await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let versioned_ct = c.wrap_bytes(&versioned, b"versioned", None).await;
    let control = c.create_root_key().await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let control_ct = c.wrap_bytes(&control, b"control", None).await;

    let mut edits: Vec<String> = victims.iter().map(|v| v.1.clone()).collect();
    edits.push(format!(
        "UPDATE keys SET instance_id = '{}' WHERE id = '{moved}'",
        other.instance
    ));
    edits.push(format!(
        "UPDATE key_versions SET seq = 9 WHERE key_id = '{versioned}'"
    ));
    d.edit(&edits).await;
    let c = d.relogin(&c).await;
    let other = d.relogin(&other).await;

    let cases = victims
        .iter()
        .map(|(col, _, id, ct)| (&c, col.clone(), id.clone(), ct.clone()))
        .chain([
            (&other, "instance_id".to_string(), moved.clone(), moved_ct),
            (&c, "key_versions.seq".to_string(), versioned, versioned_ct),
        ]);
    for (who, col, id, ct) in cases {
        if col != "key_versions.seq" {
            let (s, b) = raw(who, Method::GET, &format!("/api/v2/keys/{id}"), None).await;
            assert_refused(s, &b, &format!("GET after editing {col}"));
            let (s, b) = raw(
                who,
                Method::POST,
                &format!("/api/v2/keys/{id}/actions/wrap"),
                Some(&json!({"plaintext": B64.encode(b"x")})),
            )
            .await;
            assert_refused(s, &b, &format!("wrap after editing {col}"));
        }
        let (s, b) = raw(
            who,
            Method::POST,
            &format!("/api/v2/keys/{id}/actions/unwrap"),
            Some(&json!({ "ciphertext": ct })),
        )
        .await;
        assert_refused(s, &b, &format!("unwrap after editing {col}"));
    }
    // The moved key is gone from its own instance, not refused there.
    assert_error(
        &c.get(&format!("/api/v2/keys/{moved}")).await,
        404,
        "KEY_NOT_FOUND_ERR",
    );
    // The untouched key still works: the refusal is about the edited rows only.
    assert_eq!(
        c.unwrap_bytes(&control, &control_ct, None).await,
        b"control"
    );
    let refused = metric(
        d.base(),
        "keyward_row_integrity_failures_total{table=\"keys\"}",
    )
    .await;
    assert!(
        refused >= KEY_EDITS.len() as u64,
        "{refused} refusals counted"
    );
    assert!(
        metric(
            d.base(),
            "keyward_row_integrity_failures_total{table=\"key_versions\"}"
        )
        .await
            >= 1
    );
    assert!(d.log().contains("failed its integrity check"));
}

/// An API key or a role grant inserted (or edited) directly in the database grants nothing:
/// the answers are exactly those without the row.
async fn inserted_access_rows_grant_nothing(mut d: Deployment) {
    d.start().await;
    let owner = d.principal("Manager").await;
    let victim = d.principal("Manager").await;
    let reader = d.principal_in(&owner.instance, "Reader").await;
    let key = owner.create_root_key().await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let http = http_client();
    let unknown = iam_token(
        &http,
        d.base(),
        &[
            ("grant_type", APIKEY_GRANT),
            ("apikey", "kw_no-such-key-anywhere"),
        ],
    )
    .await;
    assert_eq!(unknown.status, 400);
    let forbidden = raw(&owner, Method::GET, "/api/v2/keys", None).await;
    assert_eq!(forbidden.0, 200);
    let mut as_owner_in_victim = owner.clone();
    as_owner_in_victim.instance = victim.instance.clone();
    let before = raw(&as_owner_in_victim, Method::GET, "/api/v2/keys", None).await;
    assert_eq!(before.0, 403, "{}", before.1);

    // The attacker's own API key for the owner's principal, a Manager grant for the owner in
    // the victim's instance, and the reader promoted to Manager.
    let secret = "kw_attacker-chosen-api-key-0000000000000000000";
    let hash = keyward_auth::hash_api_key(secret);
    d.edit(&[
        format!(
            "INSERT INTO api_keys (id, iam_id, key_hash, name, created_at) VALUES ('forged', '{}', {}, 'x', 1)",
            owner.iam_id,
            d.blob(&hash)
        ),
        format!(
            "INSERT INTO role_grants (instance_id, iam_id, role, created_at) VALUES ('{}', '{}', 'Manager', 1)",
            victim.instance, owner.iam_id
        ),
        format!(
            "UPDATE role_grants SET role = 'Manager' WHERE iam_id = '{}'",
            reader.iam_id
        ),
    ])
    .await;
    let forged = iam_token(
        &http,
        d.base(),
        &[("grant_type", APIKEY_GRANT), ("apikey", secret)],
    )
    .await;
    assert_eq!(forged.status, unknown.status);
    assert_eq!(
        forged.body, unknown.body,
        "a forged API key answers as an unknown one"
    );
    let owner = d.relogin(&owner).await;
    let mut as_owner_in_victim = owner.clone();
    as_owner_in_victim.instance = victim.instance.clone();
    let after = raw(&as_owner_in_victim, Method::GET, "/api/v2/keys", None).await;
    assert_eq!(after, before, "a forged grant changes nothing");
    let reader = d.relogin(&reader).await;
    let (s, b) = raw(
        &reader,
        Method::DELETE,
        &format!("/api/v2/keys/{key}"),
        None,
    )
    .await;
    assert_eq!(s, 403, "a promoted grant is no grant at all: {b}");
    assert!(
        metric(
            d.base(),
            "keyward_row_integrity_failures_total{table=\"api_keys\"}"
        )
        .await
            >= 1
    );
    assert!(
        metric(
            d.base(),
            "keyward_row_integrity_failures_total{table=\"role_grants\"}"
        )
        .await
            >= 1
    );
    // The owner's genuine access is untouched.
    owner.get(&format!("/api/v2/keys/{key}")).await.expect(200);
}

/// The import token's public key, nonce, limits and expiry, an alias and an instance policy,
/// edited in the database, are refused.
async fn edited_token_alias_and_policy_are_refused(mut d: Deployment) {
    d.start().await;
    let a = d.principal("Manager").await;
    let b = d.principal("Manager").await;
    let c = d.principal("Manager").await;
    for who in [&a, &b] {
        who.create_token(&json!({"expiration": 600, "maxAllowedRetrievals": 5}))
            .await
            .expect(200);
    }
    let k1 = a.create_root_key().await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let k2 = a.create_root_key().await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = a
        .post(&format!("/api/v2/keys/{k1}/aliases/payments"), &json!(null))
        .await;
    assert!(r.status == 201 || r.status == 200, "{}", r.text());
    let k3 = c.create_root_key().await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = c
        .http
        .put(format!("{}/api/v2/instance/policies?policy=dualAuthDelete", c.base))
        .bearer_auth(&c.token)
        .header("bluemix-instance", &c.instance)
        .header("content-type", "application/json")
        .body(
            json!({"metadata": {"collectionType": "application/vnd.ibm.kms.policy+json", "collectionTotal": 1},
                   "resources": [{"policy_type": "dualAuthDelete", "policy_data": {"enabled": true}}]})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204, "{}", r.text().await.unwrap());
    d.edit(&[
        // The attacker's public key (here: the other instance's) in place of the token's.
        format!(
            "UPDATE import_tokens SET public_pem = (SELECT public_pem FROM import_tokens WHERE instance_id = '{}') WHERE instance_id = '{}'",
            b.instance, a.instance
        ),
        format!(
            "UPDATE import_tokens SET max_retrievals = 500, expires_at = expires_at + 86400 WHERE instance_id = '{}'",
            b.instance
        ),
        format!("UPDATE key_aliases SET key_id = '{k2}' WHERE key_id = '{k1}'"),
        format!(
            "UPDATE instance_policies SET data = '{{\"enabled\":false}}' WHERE instance_id = '{}'",
            c.instance
        ),
    ])
    .await;
    let a = d.relogin(&a).await;
    let b = d.relogin(&b).await;
    let c = d.relogin(&c).await;
    for (who, what) in [
        (&a, "swapped public key"),
        (&b, "more retrievals, later expiry"),
    ] {
        let (s, body) = raw(who, Method::GET, "/api/v2/import_token", None).await;
        assert_refused(s, &body, what);
    }
    let (s, body) = raw(&a, Method::GET, "/api/v2/keys/payments", None).await;
    assert_refused(s, &body, "a redirected alias");
    // The alias's key is intact; the key the alias was moved to shows the forged alias in
    // its metadata, so it is refused too.
    a.get(&format!("/api/v2/keys/{k1}/metadata"))
        .await
        .expect(200);
    let (s, body) = raw(
        &a,
        Method::GET,
        &format!("/api/v2/keys/{k2}/metadata"),
        None,
    )
    .await;
    assert_refused(s, &body, "metadata listing a forged alias");
    // Instance policies are read on every request of the instance (allowedIP): a tampered one
    // shuts the instance, and a delete that the (weakened) dual-authorisation policy would
    // now allow is refused, and deletes nothing.
    let (s, body) = raw(&c, Method::GET, "/api/v2/instance/policies", None).await;
    assert_refused(s, &body, "a weakened instance policy");
    let (s, body) = raw(&c, Method::DELETE, &format!("/api/v2/keys/{k3}"), None).await;
    assert_refused(s, &body, "delete under a tampered policy");
    assert_eq!(
        d.int(&format!("SELECT state FROM keys WHERE id = '{k3}'"))
            .await,
        1
    );
}

/// A database written before row authentication (no tags, no key) is upgraded in place at
/// start; afterwards an untagged row is refused. A database whose rows carry tags but whose
/// row-authentication key was removed does not serve at all.
async fn existing_database_is_upgraded_in_place(mut d: Deployment) {
    d.start().await;
    let c = d.principal("Manager").await;
    let mut kept = Vec::new();
    for i in 0..5 {
        let id = c.create_root_key().await["id"]
            .as_str()
            .unwrap()
            .to_string();
        let ct = c.wrap_bytes(&id, format!("old-{i}").as_bytes(), None).await;
        kept.push((id, ct, format!("old-{i}")));
    }
    d.stop();
    for t in keyward_store::TAGGED_TABLES {
        d.exec(&format!("UPDATE {t} SET auth_tag = NULL")).await;
    }
    assert_eq!(
        d.exec("DELETE FROM secrets WHERE name = 'row-auth-key'")
            .await,
        1
    );
    d.start().await;
    assert!(
        d.log().contains("row authentication enabled for"),
        "{}",
        d.log()
    );
    let c = d.relogin(&c).await;
    for (id, ct, plain) in &kept {
        assert_eq!(c.unwrap_bytes(id, ct, None).await, plain.as_bytes());
    }
    // The upgrade is over (no grace period): an untagged row is now refused.
    let (victim, ct, _) = kept[0].clone();
    d.edit(&[format!(
        "UPDATE keys SET auth_tag = NULL WHERE id = '{victim}'"
    )])
    .await;
    let c = d.relogin(&c).await;
    let (s, body) = raw(
        &c,
        Method::POST,
        &format!("/api/v2/keys/{victim}/actions/unwrap"),
        Some(&json!({ "ciphertext": ct })),
    )
    .await;
    assert_refused(s, &body, "an untagged row after the upgrade");

    // Tags without their key: the node refuses to serve.
    d.stop();
    assert_eq!(
        d.exec("DELETE FROM secrets WHERE name = 'row-auth-key'")
            .await,
        1
    );
    let mut node = Node::spawn_appending(
        "no-row-key",
        &NodeOpts::sqlite(&d.data),
        &d.flags(),
        &[],
        &d.data.with_extension("log"),
    );
    let status = loop {
        if let Ok(r) = http_client()
            .get(format!("{}/healthz", node.base))
            .send()
            .await
        {
            break r.status().as_u16();
        }
        assert!(node.alive(), "keyward exited:\n{}", node.log());
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    drop(node);
    assert_eq!(
        status, 503,
        "a database with tags but no row-authentication key is refused"
    );
}

/// A rolling upgrade of a cluster: with `--row-auth-upgrade-grace`, rows still written without
/// a tag (by nodes of the earlier version) are accepted during the grace period, and tagged by
/// the upgraded node within seconds.
async fn rolling_upgrade_grace_accepts_and_tags(mut d: Deployment) {
    d.serve_flags
        .extend(["--row-auth-upgrade-grace".to_string(), "600".to_string()]);
    d.start().await;
    let c = d.principal("Manager").await;
    let id = c.create_root_key().await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let ct = c.wrap_bytes(&id, b"rolling", None).await;
    d.stop();
    for t in keyward_store::TAGGED_TABLES {
        d.exec(&format!("UPDATE {t} SET auth_tag = NULL")).await;
    }
    d.exec("DELETE FROM secrets WHERE name = 'row-auth-key'")
        .await;
    d.start().await;
    let c = d.relogin(&c).await;
    // An "old node" writes a row without a tag while the upgraded node runs.
    assert_eq!(
        d.exec(&format!(
            "UPDATE keys SET auth_tag = NULL WHERE id = '{id}'"
        ))
        .await,
        1
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while d
        .int(&format!(
            "SELECT COUNT(*) FROM keys WHERE id = '{id}' AND auth_tag IS NULL"
        ))
        .await
        > 0
    {
        assert!(
            Instant::now() < deadline,
            "the untagged row was never tagged"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(c.unwrap_bytes(&id, &ct, None).await, b"rolling");
}

macro_rules! on_both {
    ($name:ident, $sqlite:ident, $postgres:ident) => {
        #[tokio::test]
        async fn $sqlite() {
            $name(Deployment::sqlite().await).await;
        }

        #[tokio::test]
        async fn $postgres() {
            let Some(d) = Deployment::postgres(stringify!($postgres)) else {
                return;
            };
            $name(d).await;
        }
    };
}

on_both!(
    edited_key_attributes_are_refused,
    edited_key_attributes_are_refused_sqlite,
    edited_key_attributes_are_refused_postgres
);
on_both!(
    inserted_access_rows_grant_nothing,
    inserted_access_rows_grant_nothing_sqlite,
    inserted_access_rows_grant_nothing_postgres
);
on_both!(
    edited_token_alias_and_policy_are_refused,
    edited_token_alias_and_policy_are_refused_sqlite,
    edited_token_alias_and_policy_are_refused_postgres
);
on_both!(
    existing_database_is_upgraded_in_place,
    existing_database_is_upgraded_in_place_sqlite,
    existing_database_is_upgraded_in_place_postgres
);
on_both!(
    rolling_upgrade_grace_accepts_and_tags,
    rolling_upgrade_grace_accepts_and_tags_sqlite,
    rolling_upgrade_grace_accepts_and_tags_postgres
);

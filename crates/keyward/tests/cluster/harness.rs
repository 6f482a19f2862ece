//! The cluster harness: fresh PostgreSQL databases (through `psql`), real `keyward serve`
//! processes, a small HTTP client, and a guard that brings PostgreSQL back after restart tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use keyward_domain::{InstanceId, KeyId};
use keyward_store::SqlStore;
use reqwest::Method;
use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_keyward");
pub const KEY_TYPE: &str = "application/vnd.ibm.kms.key+json";
pub const POLICY_TYPE: &str = "application/vnd.ibm.kms.policy+json";
pub const ERROR_TYPE: &str = "application/vnd.ibm.kms.error+json";
pub const APIKEY_GRANT: &str = "urn:ibm:params:oauth:grant-type:apikey";

/// The tests run one at a time: several of them measure latencies or restart the shared
/// PostgreSQL server, and each starts two or three processes on a 2-core machine.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[path = "../support/services.rs"]
pub mod services;

/// `KEYWARD_TEST_DATABASE_URL`, or `None` after printing why the test is skipped (a failure
/// under `KEYWARD_REQUIRE_SERVICES`, see [`services`]).
pub fn pg_base(test: &str) -> Option<String> {
    match std::env::var("KEYWARD_TEST_DATABASE_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            services::missing(
                test,
                "PostgreSQL (KEYWARD_TEST_DATABASE_URL unset)",
                "set KEYWARD_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres",
            );
            None
        }
    }
}

/// Runs `sql` through `psql` against `url`; returns its unaligned, tuples-only output.
pub fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-Atq", "-c", sql])
        .output()
        .expect("psql must be installed for the cluster tests");
    assert!(
        out.status.success(),
        "psql {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A fresh database on the test server, dropped (with its connections) at the end.
pub struct Db {
    pub url: String,
    base: String,
    name: String,
}

impl Db {
    pub fn fresh(base: &str) -> Db {
        let name = format!("kw_cluster_{}", uuid::Uuid::new_v4().simple());
        psql(base, &format!("CREATE DATABASE {name}"));
        let (prefix, _) = base
            .rsplit_once('/')
            .expect("a database URL ends in /dbname");
        Db {
            url: format!("{prefix}/{name}"),
            base: base.to_string(),
            name,
        }
    }

    pub fn query(&self, sql: &str) -> String {
        psql(&self.url, sql)
    }

    /// The store on this database (opened on the calling runtime), reading and writing
    /// authenticated rows with the deployment's master key file.
    pub async fn store(&self, master_key_file: &Path) -> SqlStore {
        let settings = keyward::config::ServeArgs {
            database_url: Some(self.url.clone()),
            master_key_file: Some(master_key_file.to_path_buf()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        keyward::admin::open_store(&settings).await.unwrap()
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                self.base.as_str(),
                "-Atq",
                "-c",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `keyward` command with no inherited `KEYWARD_*` settings.
pub fn keyward() -> Command {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("KEYWARD_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("KEYWARD_LOG", "info,sqlx=warn")
        .env("NO_COLOR", "1");
    cmd
}

/// 32 random bytes, mode 0600: a master key file as an operator would prepare it.
pub fn write_master_key(path: &Path) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let key = keyward_crypto::random_bytes(32).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(&key).unwrap();
}

/// One `keyward serve` process; killed when dropped.
pub struct Node {
    pub name: String,
    pub base: String,
    child: Option<Child>,
    stdout: PathBuf,
    stderr: PathBuf,
}

pub struct NodeOpts<'a> {
    pub database_url: Option<&'a str>,
    pub data_dir: &'a Path,
    pub master_key_file: &'a Path,
    pub token_pool_size: usize,
    pub scheduler_interval: u64,
}

impl Node {
    pub fn spawn(name: &str, o: &NodeOpts<'_>) -> Node {
        Self::spawn_with(name, o, &[])
    }

    /// As [`Node::spawn`], with more `serve` flags.
    pub fn spawn_with(name: &str, o: &NodeOpts<'_>, extra: &[&str]) -> Node {
        std::fs::create_dir_all(o.data_dir).unwrap();
        let port = free_port();
        let stdout = o.data_dir.join(format!("{name}.out"));
        let stderr = o.data_dir.join(format!("{name}.log"));
        let mut cmd = keyward();
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(o.data_dir)
            .arg("--master-key-file")
            .arg(o.master_key_file)
            .args(["--token-pool-size", &o.token_pool_size.to_string()])
            .args(["--scheduler-interval", &o.scheduler_interval.to_string()]);
        if let Some(u) = o.database_url {
            cmd.args(["--database-url", u]);
        }
        cmd.args(extra);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Node {
            name: name.to_string(),
            base: format!("http://127.0.0.1:{port}"),
            child: Some(child),
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Still running (not exited)?
    pub fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Polls `/healthz` until it answers `status`; returns its JSON body.
    pub async fn wait_health(&mut self, status: u16) -> Value {
        let http = http();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http.get(format!("{}/healthz", self.base)).send().await {
                if r.status().as_u16() == status {
                    return r.json().await.unwrap_or(Value::Null);
                }
            }
            assert!(
                self.alive(),
                "node {} exited before becoming healthy:\n{}",
                self.name,
                self.log()
            );
            assert!(
                Instant::now() < deadline,
                "node {} never answered /healthz {status}:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The first-start banner: (instance id, API key), if this node printed one. Its stdout is
    /// a file, not a terminal, so the banner names the private file the key went to.
    pub fn banner(&self) -> Option<(String, String)> {
        let out = std::fs::read_to_string(&self.stdout).ok()?;
        banner_of(&out)
    }

    /// SIGTERM, and wait for a clean exit.
    pub fn terminate(mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let st = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                assert!(status.success(), "node {} exited with {status}", self.name);
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {} ignored SIGTERM",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- log of node {} ----\n{}", self.name, self.log());
        }
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A response: status and JSON body (Null when empty or not JSON).
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub text: String,
}

impl Resp {
    pub fn expect(&self, status: u16) -> &Value {
        assert_eq!(self.status, status, "unexpected status: {}", self.text);
        &self.body
    }

    /// The reason code of a Key Protect error envelope (asserting its shape).
    pub fn error_code(&self) -> String {
        let v = &self.body;
        assert_eq!(
            v["metadata"]["collectionType"], ERROR_TYPE,
            "not an error envelope: {}",
            self.text
        );
        let r = &v["resources"][0]["reasons"][0];
        assert_eq!(r["status"], self.status, "{}", self.text);
        r["code"].as_str().unwrap_or_default().to_string()
    }
}

/// A logged-in caller (bearer token + instance) talking to one node.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
    pub instance: String,
}

impl Api {
    pub async fn login(base: &str, apikey: &str, instance: &str) -> Api {
        let http = http();
        let r = http
            .post(format!("{base}/identity/token"))
            .form(&[("grant_type", APIKEY_GRANT), ("apikey", apikey)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "login failed");
        let v: Value = r.json().await.unwrap();
        Api {
            http,
            base: base.to_string(),
            token: v["access_token"].as_str().unwrap().to_string(),
            instance: instance.to_string(),
        }
    }

    /// The same caller (same bearer token) talking to another node.
    pub fn on(&self, node: &Node) -> Api {
        Api {
            base: node.base.clone(),
            ..self.clone()
        }
    }

    pub fn instance_id(&self) -> InstanceId {
        InstanceId::parse(&self.instance).unwrap()
    }

    /// Sends; `Err` only when no HTTP response came back at all.
    pub async fn try_call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Resp, reqwest::Error> {
        let mut rb = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .header("authorization", format!("Bearer {}", self.token))
            .header("bluemix-instance", &self.instance);
        if let Some(b) = body {
            rb = rb
                .header("content-type", "application/json")
                .body(serde_json::to_vec(b).unwrap());
        }
        let r = rb.send().await?;
        let status = r.status().as_u16();
        let text = r.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Resp { status, body, text })
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Resp {
        self.try_call(method, path, body).await.unwrap()
    }

    pub async fn create_root_key(&self, name: &str) -> Resp {
        self.call(
            Method::POST,
            "/api/v2/keys",
            Some(&key_envelope(
                json!({"type": KEY_TYPE, "name": name, "extractable": false}),
            )),
        )
        .await
    }

    /// A new root key's id.
    pub async fn root_key(&self, name: &str) -> String {
        let r = self.create_root_key(name).await;
        r.expect(201)["resources"][0]["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub async fn wrap(&self, id: &str, plaintext: &[u8]) -> Resp {
        self.call(
            Method::POST,
            &format!("/api/v2/keys/{id}/actions/wrap"),
            Some(&json!({"plaintext": B64.encode(plaintext)})),
        )
        .await
    }

    pub async fn wrap_ok(&self, id: &str, plaintext: &[u8]) -> String {
        let r = self.wrap(id, plaintext).await;
        r.expect(200)["ciphertext"].as_str().unwrap().to_string()
    }

    pub async fn unwrap_ok(&self, id: &str, ciphertext: &str) -> Vec<u8> {
        let r = self
            .call(
                Method::POST,
                &format!("/api/v2/keys/{id}/actions/unwrap"),
                Some(&json!({"ciphertext": ciphertext})),
            )
            .await;
        B64.decode(r.expect(200)["plaintext"].as_str().unwrap())
            .unwrap()
    }

    pub async fn action(&self, id: &str, action: &str) -> Resp {
        self.call(
            Method::POST,
            &format!("/api/v2/keys/{id}/actions/{action}"),
            None,
        )
        .await
    }

    pub async fn put_rotation_policy(&self, id: &str, months: i64) -> Resp {
        self.call(
            Method::PUT,
            &format!("/api/v2/keys/{id}/policies?policy=rotation"),
            Some(&json!({
                "metadata": {"collectionType": POLICY_TYPE, "collectionTotal": 1},
                "resources": [{"type": POLICY_TYPE, "rotation": {"enabled": true, "interval_month": months}}],
            })),
        )
        .await
    }
}

pub fn key_envelope(resource: Value) -> Value {
    json!({
        "metadata": {"collectionType": KEY_TYPE, "collectionTotal": 1},
        "resources": [resource],
    })
}

pub fn key_id(s: &str) -> KeyId {
    KeyId::parse(s).unwrap()
}

/// Runs `pg_ctlcluster VERSION NAME ...` (cluster from `KEYWARD_TEST_PG_CLUSTER`, default
/// "15 main").
pub fn pg_ctlcluster(args: &[&str]) -> std::process::Output {
    let cluster = std::env::var("KEYWARD_TEST_PG_CLUSTER").unwrap_or_else(|_| "15 main".into());
    let mut parts = cluster.split_whitespace();
    let (v, n) = (parts.next().unwrap_or("15"), parts.next().unwrap_or("main"));
    Command::new("pg_ctlcluster")
        .args([v, n])
        .args(args)
        .output()
        .expect("pg_ctlcluster")
}

pub fn pg_running() -> bool {
    pg_ctlcluster(&["status"]).status.success()
}

/// Makes sure PostgreSQL runs again when the test ends, whether it passed or not.
pub struct PgGuard;

impl Drop for PgGuard {
    fn drop(&mut self) {
        for _ in 0..3 {
            if pg_running() {
                return;
            }
            let out = pg_ctlcluster(&["start"]);
            eprintln!(
                "PgGuard: started PostgreSQL again: {} {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// (instance id, API key) from a first-start banner: the key itself (printed on a terminal) or
/// read from the file the banner names (anywhere else).
pub fn banner_of(out: &str) -> Option<(String, String)> {
    let field = |label: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .map(|v| v.trim_start_matches([' ', ':']).trim().to_string())
    };
    let key = match field("api key file") {
        Some(path) => std::fs::read_to_string(path).ok()?.trim().to_string(),
        None => field("api key")?,
    };
    Some((field("instance id")?, key))
}

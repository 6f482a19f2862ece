//! The real `keyward serve` binary with its master key in an HSM (SoftHSM2 through PKCS#11;
//! docs/hsm.md): keys made before a restart still unwrap after it, the database
//! never holds imported material in the clear, and a missing HSM, a wrong PIN or a missing
//! master key object leaves the service sealed (503) without writing anything.
//!
//! Skips, with a note on stderr, when `/usr/lib/softhsm/libsofthsm2.so` or `softhsm2-util` is
//! absent (install: `apt-get install -y softhsm2`).
//!
//! Run: `cargo test -p keyward --test masterkey hsm::`.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use keyward_crypto::SecretBytes;
use keyward_testsupport::{
    contains_bytes as find, keyward, random, softhsm_token, Node, NodeOpts, ERROR_TYPE, KEY_TYPE,
    SOFTHSM_MODULE,
};
use serde_json::{json, Value};

const MODULE: &str = SOFTHSM_MODULE;
const TOKEN: &str = "keyward-hsm";
const PIN: &str = "hsm-user-pin-1";

fn softhsm_present() -> bool {
    keyward_testsupport::softhsm_present("the hsm tests")
}

/// A temporary SoftHSM token directory with one fresh token, and a data directory.
struct Env {
    _dir: tempfile::TempDir,
    root: PathBuf,
    conf: PathBuf,
    data: PathBuf,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let conf = softhsm_token(&root, TOKEN, "hsm-so-pin-1", PIN);
        Env {
            data: root.join("data"),
            _dir: dir,
            root,
            conf,
        }
    }

    fn pin_file(&self, name: &str, pin: &str) -> PathBuf {
        let p = self.root.join(name);
        std::fs::write(&p, format!("{pin}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    }

    fn cmd(&self) -> Command {
        let mut cmd = keyward();
        cmd.env("SOFTHSM2_CONF", &self.conf)
            .env("KEYWARD_LOG", "warn");
        cmd
    }

    /// `keyward serve` with the pkcs11 provider; `extra` adds or overrides flags.
    fn serve(&self, extra: &[&str], pin_env: Option<&str>) -> Proc {
        let ops = format!("127.0.0.1:{}", keyward_testsupport::free_port());
        let mut args = vec!["--metrics-listen", &ops, "--pkcs11-token-label", TOKEN];
        if !extra.contains(&"--master-key-provider") {
            args.extend(["--master-key-provider", "pkcs11"]);
        }
        if !extra.contains(&"--pkcs11-module") {
            args.extend(["--pkcs11-module", MODULE]);
        }
        args.extend(extra);
        let mut env = vec![
            ("SOFTHSM2_CONF", self.conf.as_os_str()),
            ("KEYWARD_LOG", "warn".as_ref()),
        ];
        if let Some(pin) = pin_env {
            env.push(("KEYWARD_PKCS11_PIN", pin.as_ref()));
        }
        let node = Node::spawn_env("hsm", &NodeOpts::sqlite(&self.data), &args, &env);
        Proc {
            base: node.base.clone(),
            ops: format!("http://{ops}"),
            node,
        }
    }

    fn admin(&self, args: &[&str]) -> Value {
        let out = self
            .cmd()
            .arg("admin")
            .arg("--data-dir")
            .arg(&self.data)
            .args(["--output", "json"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "admin {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Opens the database directly and closes it again, which folds a WAL left by the last
    /// server into the main file; returns the sealed-row count and master key ids.
    async fn checkpoint(&self) -> (i64, Vec<String>) {
        let url = keyward::config::sqlite_url(&self.data.join("keyward.db"));
        let wal = self.data.join("keyward.db-wal");
        let mut rows = None;
        // SQLite folds and removes the WAL when its last connection closes. sqlx closes
        // connections on their own threads, and two closing at once may each leave that to the
        // other, so try again (with fewer connections open) until the WAL is gone.
        for _ in 0..10 {
            let store = keyward_store::SqlStore::connect(&url).await.unwrap();
            rows = Some(keyward_store::Store::sealed_rows(&store).await.unwrap());
            store.close().await;
            drop(store);
            let deadline = Instant::now() + Duration::from_secs(2);
            while wal.exists() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if !wal.exists() {
                break;
            }
        }
        rows.unwrap()
    }

    /// The database's files (main file and, while it exists, the WAL).
    fn db_bytes(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for name in ["keyward.db", "keyward.db-wal"] {
            if let Ok(b) = std::fs::read(self.data.join(name)) {
                out.push((name.to_string(), b));
            }
        }
        assert!(!out.is_empty(), "no database in {}", self.data.display());
        out
    }
}

struct Proc {
    node: Node,
    base: String,
    /// The operator-facing listener (`--metrics-listen`): it says why a node is sealed.
    ops: String,
}

impl Proc {
    /// Waits until `/healthz` answers, which must be `want` (200 when open, 503 when sealed);
    /// returns its body.
    async fn ready(&mut self, want: u16) -> Value {
        let http = http();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.get(format!("{}/healthz", self.base)).send().await {
                let status = r.status().as_u16();
                let body: Value = r.json().await.unwrap_or(Value::Null);
                assert_eq!(status, want, "healthz: {body}");
                return body;
            }
            assert!(self.node.alive(), "keyward exited early");
            assert!(Instant::now() < deadline, "keyward did not answer /healthz");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// SIGTERM, and wait for a clean exit.
    fn terminate(self) {
        self.node.terminate();
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// A logged-in caller for one instance.
struct Client {
    http: reqwest::Client,
    base: String,
    instance: String,
    token: String,
}

impl Client {
    async fn login(base: &str, instance: &str, apikey: &str) -> Client {
        let http = http();
        let token = keyward_testsupport::token(&http, base, apikey).await;
        Client {
            http,
            base: base.to_string(),
            instance: instance.to_string(),
            token,
        }
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("bluemix-instance", &self.instance)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("bluemix-instance", &self.instance)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn create(&self, resource: Value) -> Value {
        let body = json!({"metadata": {"collectionType": KEY_TYPE, "collectionTotal": 1}, "resources": [resource]});
        let (status, v) = self.post("/api/v2/keys", &body).await;
        assert_eq!(status, 201, "{v}");
        v["resources"][0].clone()
    }

    async fn wrap(&self, id: &str, dek: &[u8]) -> String {
        let (status, v) = self
            .post(
                &format!("/api/v2/keys/{id}/actions/wrap"),
                &json!({"plaintext": B64.encode(dek)}),
            )
            .await;
        assert_eq!(status, 200, "{v}");
        v["ciphertext"].as_str().unwrap().to_string()
    }

    async fn unwrap(&self, id: &str, ciphertext: &str) -> Vec<u8> {
        let (status, v) = self
            .post(
                &format!("/api/v2/keys/{id}/actions/unwrap"),
                &json!({"ciphertext": ciphertext}),
            )
            .await;
        assert_eq!(status, 200, "{v}");
        B64.decode(v["plaintext"].as_str().unwrap()).unwrap()
    }
}

/// A ciphertext made on the client side under known material, in the wire blob format the
/// server's unwrap reads: it unwraps only if the server holds exactly that material.
fn client_side_wrap(material: &[u8], key_id: &str, version: &str, dek: &[u8]) -> String {
    let ad = keyward_crypto::dek::dek_aad(key_id, version, &[]);
    let (iv, ct) = keyward_crypto::dek::seal(&SecretBytes::copy_from(material), &ad, dek).unwrap();
    let blob = json!({"ciphertext": B64.encode(ct), "iv": B64.encode(iv), "version": "4.0.0", "handle": version});
    B64.encode(serde_json::to_vec(&blob).unwrap())
}

/// Asserts that no database file holds any of `materials`, raw or base64-encoded (one pass
/// over each file, looking up every 8-byte window among the needles' first 8 bytes).
fn assert_no_material_in_db(env: &Env, materials: &[Vec<u8>]) {
    let mut needles: Vec<Vec<u8>> = materials.to_vec();
    needles.extend(materials.iter().map(|m| B64.encode(m).into_bytes()));
    let heads: std::collections::HashMap<&[u8], Vec<&[u8]>> =
        needles
            .iter()
            .fold(std::collections::HashMap::new(), |mut map, n| {
                map.entry(&n[..8])
                    .or_insert_with(Vec::new)
                    .push(n.as_slice());
                map
            });
    for (name, bytes) in env.db_bytes() {
        for (i, w) in bytes.windows(8).enumerate() {
            if let Some(cands) = heads.get(w) {
                for n in cands {
                    assert!(
                        !bytes[i..].starts_with(n),
                        "imported material found in {name} at offset {i}"
                    );
                }
            }
        }
    }
}

async fn sealed_checks(p: &mut Proc, reason_has: &str) {
    let h = p.ready(503).await;
    // The public listener says only that it is sealed; the ops listener says why.
    assert_eq!(h, json!({"status": "sealed"}));
    let r = http()
        .get(format!("{}/readyz", p.ops))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let h: Value = r.json().await.unwrap();
    assert_eq!(h["status"], "sealed", "{h}");
    let reason = h["reason"].as_str().unwrap_or_default().to_string();
    assert!(
        reason.contains(reason_has),
        "reason {reason:?} lacks {reason_has:?}"
    );
    assert!(
        !reason.contains(PIN) && !reason.contains("wrong-pin"),
        "a PIN in the reason: {reason}"
    );
    let r = http()
        .post(format!("{}/api/v2/keys", p.base))
        .header("bluemix-instance", "00000000-0000-4000-8000-000000000000")
        .header("authorization", "Bearer x")
        .json(
            &json!({"metadata": {"collectionType": KEY_TYPE, "collectionTotal": 1},
                      "resources": [{"type": KEY_TYPE, "name": "k", "extractable": false}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["metadata"]["collectionType"], ERROR_TYPE, "{body}");
    let token = http()
        .post(format!("{}/identity/token", p.base))
        .form(&[
            ("grant_type", "urn:ibm:params:oauth:grant-type:apikey"),
            ("apikey", "kw_x"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), 503);
}

#[tokio::test]
async fn hsm_master_key_restart_secrecy_and_sealed_starts() {
    if !softhsm_present() {
        return;
    }
    let env = Env::new();
    let pin_file = env.pin_file("pin", PIN);
    let pin_arg = ["--pkcs11-pin-file", pin_file.to_str().unwrap()];
    let started = Instant::now();

    // First start: the master key is generated inside the HSM.
    let mut p = env.serve(&pin_arg, None);
    p.ready(200).await;
    assert!(
        !env.data.join("master.key").exists(),
        "a master key file was written"
    );
    // Instances, API keys and grants are authenticated under a key the HSM's master key
    // seals, so the admin commands need the HSM too.
    let hsm: Vec<&str> = vec![
        "--master-key-provider",
        "pkcs11",
        "--pkcs11-module",
        MODULE,
        "--pkcs11-token-label",
        TOKEN,
        "--pkcs11-pin-file",
        pin_file.to_str().unwrap(),
    ];
    let inst = env.admin(&[&["instance", "create", "--name", "hsm"], &hsm[..]].concat());
    let inst = inst["id"].as_str().unwrap().to_string();
    let key = env.admin(
        &[
            &["apikey", "create", "--instance", &inst, "--role", "Manager"],
            &hsm[..],
        ]
        .concat(),
    );
    let apikey = key["apikey"].as_str().unwrap().to_string();
    let c = Client::login(&p.base, &inst, &apikey).await;

    // 100 plain imports of random 32-byte materials; a server-side wrap for each, and a
    // client-side one (made with the known material) for some.
    let mut materials = Vec::new();
    let mut checks: Vec<(String, String, Vec<u8>)> = Vec::new();
    for i in 0..100 {
        let m = random(32);
        let k = c
            .create(json!({"type": KEY_TYPE, "name": format!("imported-{i}"), "extractable": false, "payload": B64.encode(&m)}))
            .await;
        let id = k["id"].as_str().unwrap().to_string();
        let dek = random(32);
        checks.push((id.clone(), c.wrap(&id, &dek).await, dek));
        if i % 10 == 0 {
            let dek = random(16);
            let ct = client_side_wrap(&m, &id, k["keyVersion"]["id"].as_str().unwrap(), &dek);
            assert_eq!(c.unwrap(&id, &ct).await, dek);
            checks.push((id, ct, dek));
        }
        materials.push(m);
    }
    let generated = c
        .create(json!({"type": KEY_TYPE, "name": "generated", "extractable": false}))
        .await;
    let gid = generated["id"].as_str().unwrap().to_string();
    let dek = random(32);
    checks.push((gid.clone(), c.wrap(&gid, &dek).await, dek));

    // While the server runs (the WAL holds the recent writes) and after it stopped.
    assert_no_material_in_db(&env, &materials);
    p.terminate();
    assert_no_material_in_db(&env, &materials);
    // The rows are sealed under the HSM key: its id is recorded on them.
    let key_id_prefix = format!("pkcs11:{TOKEN}:keyward-master-key:");
    assert!(
        env.db_bytes()
            .iter()
            .any(|(_, b)| find(b, key_id_prefix.as_bytes())),
        "no row names the HSM key"
    );

    // Restart, this time with the PIN from the environment: everything unwraps.
    let mut p = env.serve(&[], Some(PIN));
    p.ready(200).await;
    let c = Client::login(&p.base, &inst, &apikey).await;
    for (id, ct, dek) in &checks {
        assert_eq!(&c.unwrap(id, ct).await, dek, "{id}");
    }
    let (status, listed) = c.get("/api/v2/keys?limit=5000").await;
    assert_eq!(status, 200);
    assert_eq!(listed["metadata"]["collectionTotal"], 101, "{listed}");
    p.terminate();

    // Wrong PIN, missing HSM module, missing master key object: sealed, nothing written.
    let rows_before = env.checkpoint().await;
    let before = env.db_bytes();
    assert_eq!(before.len(), 1, "the WAL was not folded into the database");
    let wrong = env.pin_file("wrong-pin", "wrong-pin");
    let mut p = env.serve(&["--pkcs11-pin-file", wrong.to_str().unwrap()], None);
    sealed_checks(&mut p, "PinIncorrect").await;
    p.terminate();
    let mut p = env.serve(
        &[
            "--pkcs11-module",
            "/nonexistent/libsofthsm2.so",
            "--pkcs11-pin-file",
            pin_file.to_str().unwrap(),
        ],
        None,
    );
    sealed_checks(&mut p, "/nonexistent/libsofthsm2.so").await;
    p.terminate();
    // Another key label over this database: no new master key is created over existing data
    // (twice, so a key made by the first start would show in the second).
    for _ in 0..2 {
        let mut p = env.serve(
            &[
                "--pkcs11-key-label",
                "another-master",
                "--pkcs11-pin-file",
                pin_file.to_str().unwrap(),
            ],
            None,
        );
        sealed_checks(&mut p, "refusing to create a new master key").await;
        p.terminate();
    }
    // A PIN file others can read is refused too.
    std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut p = env.serve(&pin_arg, None);
    sealed_checks(&mut p, "chmod 600").await;
    p.terminate();
    std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    // The database file is byte for byte the same, and no WAL frame was written.
    let after = env.db_bytes();
    assert!(
        before[0].1 == after[0].1,
        "keyward.db changed during the sealed starts"
    );
    if let Some((_, wal)) = after.get(1) {
        assert!(
            wal.is_empty(),
            "the sealed starts wrote {} WAL bytes",
            wal.len()
        );
    }
    assert_eq!(env.checkpoint().await, rows_before);

    // And the right PIN opens it all again.
    let mut p = env.serve(&pin_arg, None);
    p.ready(200).await;
    let c = Client::login(&p.base, &inst, &apikey).await;
    let (id, ct, dek) = &checks[0];
    assert_eq!(&c.unwrap(id, ct).await, dek);
    p.terminate();
    eprintln!("hsm test: {:?}", started.elapsed());
}

/// Keeps unwrapping `old` ciphertexts and creating, wrapping and unwrapping new keys until
/// stopped; returns the number of rounds and every failure.
fn load(
    base: String,
    inst: String,
    apikey: String,
    old: Vec<(String, String, Vec<u8>)>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<(usize, Vec<String>)> {
    tokio::spawn(async move {
        let c = Client::login(&base, &inst, &apikey).await;
        let (mut rounds, mut bad) = (0usize, Vec::new());
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let (id, ct, dek) = &old[rounds % old.len()];
            rounds += 1;
            let (s, v) = c
                .post(
                    &format!("/api/v2/keys/{id}/actions/unwrap"),
                    &json!({"ciphertext": ct}),
                )
                .await;
            if s != 200
                || B64
                    .decode(v["plaintext"].as_str().unwrap_or(""))
                    .ok()
                    .as_ref()
                    != Some(dek)
            {
                bad.push(format!("unwrap: {s} {v}"));
            }
            let body = json!({"metadata": {"collectionType": KEY_TYPE, "collectionTotal": 1},
                              "resources": [{"type": KEY_TYPE, "name": format!("load-{rounds}"), "extractable": false}]});
            let (s, v) = c.post("/api/v2/keys", &body).await;
            if s != 201 {
                bad.push(format!("create: {s} {v}"));
            }
        }
        (rounds, bad)
    })
}

/// Issue 6.1: a deployment on the file master key moves into the HSM while a node serves
/// (`admin master-key migrate --to pkcs11`), then rotates the HSM key (`admin master-key
/// rotate` makes `keyward-master-key.2` inside the HSM), with no failed request during either;
/// after each, a restarted node without the old key opens every row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn master_key_moves_from_file_into_hsm_then_rotates_there_online() {
    if !softhsm_present() {
        return;
    }
    let env = Env::new();
    let pin_file = env.pin_file("pin", PIN);
    let pin = pin_file.to_str().unwrap();
    let mk = |args: &[&str]| -> Value {
        let mut all = vec![
            "master-key",
            "--pkcs11-module",
            MODULE,
            "--pkcs11-token-label",
            TOKEN,
            "--pkcs11-pin-file",
            pin,
        ];
        all.extend_from_slice(args);
        env.admin(&all)
    };

    // A node on the file master key that also reaches the HSM (which holds no key yet).
    // The load loop creates keys as fast as it can: no key-creation limit here.
    let mut p = env.serve(
        &[
            "--master-key-provider",
            "file",
            "--pkcs11-pin-file",
            pin,
            "--master-key-watch",
            "1",
            "--rate-limit-key-create",
            "0",
        ],
        None,
    );
    p.ready(200).await;
    assert!(env.data.join("master.key").exists());
    let inst = env.admin(&["instance", "create", "--name", "move"]);
    let inst = inst["id"].as_str().unwrap().to_string();
    let key = env.admin(&["apikey", "create", "--instance", &inst, "--role", "Manager"]);
    let apikey = key["apikey"].as_str().unwrap().to_string();
    let c = Client::login(&p.base, &inst, &apikey).await;
    let mut materials = Vec::new();
    let mut checks = Vec::new();
    for i in 0..20 {
        let m = random(32);
        let k = c
            .create(json!({"type": KEY_TYPE, "name": format!("moved-{i}"), "extractable": false, "payload": B64.encode(&m)}))
            .await;
        let id = k["id"].as_str().unwrap().to_string();
        let dek = random(32);
        checks.push((id, c.wrap(k["id"].as_str().unwrap(), &dek).await, dek));
        materials.push(m);
    }
    let before = mk(&["status"]);
    let file_id = before["sealing"].as_str().unwrap().to_string();
    assert!(file_id.starts_with("file:"), "{before}");

    // Into the HSM, online.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let l = load(
        p.base.clone(),
        inst.clone(),
        apikey.clone(),
        checks.clone(),
        stop.clone(),
    );
    let moved = mk(&["migrate", "--to", "pkcs11", "--settle", "3", "--batch", "7"]);
    assert_eq!(moved["complete"], true, "{moved}");
    let hsm1 = moved["sealing"].as_str().unwrap().to_string();
    assert!(
        hsm1.starts_with(&format!("pkcs11:{TOKEN}:keyward-master-key:")),
        "{moved}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (rounds, bad) = l.await.unwrap();
    assert!(rounds > 0);
    assert!(
        bad.is_empty(),
        "{} failures during the move, first: {:?}",
        bad.len(),
        bad.first()
    );
    let st = mk(&["status"]);
    assert_eq!(st["rows_not_under_sealing_key"], 0, "{st}");
    assert_eq!(st["sealing"], hsm1.as_str(), "{st}");
    p.terminate();

    // Without the key file, on the pkcs11 provider: everything opens.
    std::fs::rename(env.data.join("master.key"), env.root.join("old-master.key")).unwrap();
    let mut p = env.serve(
        &[
            "--pkcs11-pin-file",
            pin,
            "--master-key-watch",
            "1",
            "--rate-limit-key-create",
            "0",
        ],
        None,
    );
    p.ready(200).await;
    let c = Client::login(&p.base, &inst, &apikey).await;
    for (id, ct, dek) in &checks {
        assert_eq!(&c.unwrap(id, ct).await, dek, "{id}");
    }

    // Rotation inside the HSM, online.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let l = load(
        p.base.clone(),
        inst.clone(),
        apikey.clone(),
        checks.clone(),
        stop.clone(),
    );
    let rotated = mk(&["--master-key-provider", "pkcs11", "rotate", "--settle", "3"]);
    assert_eq!(rotated["complete"], true, "{rotated}");
    assert_eq!(rotated["name"], "keyward-master-key.2", "{rotated}");
    let hsm2 = rotated["sealing"].as_str().unwrap().to_string();
    assert_ne!(hsm2, hsm1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (_, bad) = l.await.unwrap();
    assert!(
        bad.is_empty(),
        "{} failures during the rotation, first: {:?}",
        bad.len(),
        bad.first()
    );
    p.terminate();

    let (_, ids) = env.checkpoint().await;
    assert_eq!(ids, vec![hsm2.clone()], "rows under other keys remain");
    assert_no_material_in_db(&env, &materials);
    let mut p = env.serve(&["--pkcs11-pin-file", pin], None);
    p.ready(200).await;
    let c = Client::login(&p.base, &inst, &apikey).await;
    for (id, ct, dek) in &checks {
        assert_eq!(&c.unwrap(id, ct).await, dek, "{id}");
    }
    p.terminate();
}

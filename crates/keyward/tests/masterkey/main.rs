//! Online master key rotation with the real `keyward` binary (docs/master-key.md):
//!
//! - a node keeps serving (creates, wraps, unwraps, all 2xx) while `admin master-key rotate`
//!   re-seals every row under a new key generation;
//! - a rotation stopped part-way (`--limit`) is resumed by running the command again, which
//!   creates no further generation;
//! - afterwards every row is under the new key: with the old key file gone, a restarted node
//!   opens every key (all ciphertexts made before unwrap), bearer tokens issued before still
//!   work (the token-signing key was re-sealed, not replaced), and a secure import against the
//!   import token made before the rotation succeeds;
//! - a node given only the old key is sealed (503) and says which key is missing.
//!
//! The HSM side (rotation inside the HSM, migration from the file key into it) is in
//! module `hsm` (SoftHSM2). Module `interrupt`: a rotation killed (SIGKILL) or stopped
//! (SIGTERM) part-way resumes to a complete result; its JSON progress on stderr. Run:
//! `cargo test -p keyward --test masterkey`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod hsm;
mod interrupt;
#[path = "../backup/running.rs"]
mod running;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use reqwest::Method;
use serde_json::{json, Value};

use keyward_testsupport::*;

fn admin(data_dir: &Path, args: &[&str]) -> Output {
    keyward()
        .arg("admin")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--output", "json", "master-key"])
        .arg("--master-key-file")
        .arg(data_dir.join("master.key"))
        .args(args)
        .output()
        .unwrap()
}

fn status(dir: &Path) -> Value {
    ok_json(&admin(dir, &["status"]), "master-key status")
}

fn rows_of(status: &Value, id: &str) -> i64 {
    status["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id)
        .map_or(0, |k| k["rows"].as_i64().unwrap())
}

fn opts(dir: &Path) -> NodeOpts<'_> {
    NodeOpts {
        database_url: None,
        data_dir: dir,
        master_key_file: Some(Box::leak(dir.join("master.key").into_boxed_path())),
        token_pool_size: 0,
        scheduler_interval: 0,
    }
}

type Made = Vec<(String, String, Vec<u8>)>;

/// Keeps creating keys, wrapping and unwrapping (its own ciphertexts and those in `old`, whose
/// keys' rows the rotation re-seals) until stopped; records every response that was not a
/// success, and the ciphertexts it made.
fn load(
    a: Api,
    old: Made,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(usize, Vec<String>, Made)> {
    tokio::spawn(async move {
        let (mut ok, mut bad, mut made) = (0usize, Vec::new(), Vec::new());
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            let (id, ct, pt) = &old[i % old.len()];
            let u = a
                .call(
                    Method::POST,
                    &format!("/api/v2/keys/{id}/actions/unwrap"),
                    Some(&json!({"ciphertext": ct})),
                )
                .await;
            if u.status != 200
                || B64
                    .decode(u.body["plaintext"].as_str().unwrap_or(""))
                    .ok()
                    .as_ref()
                    != Some(pt)
            {
                bad.push(format!("unwrap old: {} {}", u.status, u.text));
            }
            let r = a.create_root_key(&format!("load-{i}")).await;
            if r.status != 201 {
                bad.push(format!("create: {} {}", r.status, r.text));
                continue;
            }
            let id = r.body["resources"][0]["id"].as_str().unwrap().to_string();
            let pt = keyward_crypto::random_bytes(32).unwrap();
            let w = a.wrap(&id, &pt).await;
            if w.status != 200 {
                bad.push(format!("wrap: {} {}", w.status, w.text));
                continue;
            }
            let ct = w.body["ciphertext"].as_str().unwrap().to_string();
            let u = a
                .call(
                    Method::POST,
                    &format!("/api/v2/keys/{id}/actions/unwrap"),
                    Some(&json!({"ciphertext": ct})),
                )
                .await;
            if u.status != 200 {
                bad.push(format!("unwrap: {} {}", u.status, u.text));
                continue;
            }
            ok += 1;
            made.push((id, ct, pt));
        }
        (ok, bad, made)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_master_key_rotation_is_online_and_resumable() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let key1 = data.join("master.key");
    write_master_key(&key1);
    let o = opts(&data);
    let mut node = Node::spawn_with(
        "a",
        &o,
        &["--master-key-watch", "1", "--rate-limit-key-create", "0"],
    );
    node.wait_health(200).await;
    let (instance, apikey) = node.banner().unwrap();
    let a = Api::login(&node.base, &apikey, &instance).await;

    // Keys, ciphertexts and an import token made under the first key.
    let mut made = Vec::new();
    for i in 0..12 {
        let id = a.root_key(&format!("before-{i}")).await;
        if i % 3 == 0 {
            a.action(&id, "rotate").await.expect(204);
        }
        for j in 0..3 {
            let pt = format!("secret {i}/{j}").into_bytes();
            made.push((id.clone(), a.wrap_ok(&id, &pt).await, pt));
        }
    }
    a.call(
        Method::POST,
        "/api/v2/import_token",
        Some(&json!({"expiration": 3600, "maxAllowedRetrievals": 5})),
    )
    .await
    .expect(200);

    let before = status(&data);
    let gen1 = before["sealing"].as_str().unwrap().to_string();
    assert!(gen1.starts_with("file:"), "{before}");
    assert_eq!(before["keys"].as_array().unwrap().len(), 1, "{before}");
    let total = rows_of(&before, &gen1);
    // 12 keys + 4 rotations, the import token, the token-signing and row-authentication keys
    assert_eq!(total, 12 + 4 + 1 + 2, "{before}");

    let stop = Arc::new(AtomicBool::new(false));
    let loader = load(a.clone(), made.clone(), stop.clone());

    // A rotation stopped after 5 rows: the new generation exists and seals, 5 rows moved.
    let first = ok_json(
        &admin(
            &data,
            &["rotate", "--settle", "3", "--batch", "2", "--limit", "5"],
        ),
        "rotate --limit 5",
    );
    assert_eq!(first["complete"], false, "{first}");
    assert_eq!(first["resealed"], 5, "{first}");
    let gen2 = first["sealing"].as_str().unwrap().to_string();
    assert_ne!(gen2, gen1);
    assert!(data.join("master.key.2").exists());
    let mid = status(&data);
    assert_eq!(mid["sealing"], gen2.as_str(), "{mid}");
    assert!(rows_of(&mid, &gen1) > 0, "{mid}");
    assert!(rows_of(&mid, &gen2) >= 5, "{mid}");

    // Run again: it resumes (no third generation) and finishes.
    let second = ok_json(
        &admin(&data, &["rotate", "--settle", "3"]),
        "rotate (resume)",
    );
    assert_eq!(second["complete"], true, "{second}");
    assert_eq!(second["sealing"], gen2.as_str(), "{second}");
    assert!(!data.join("master.key.3").exists());
    assert_eq!(
        second["retirable"],
        json!([key1.display().to_string()]),
        "{second}"
    );

    stop.store(true, Ordering::Relaxed);
    let (ok, bad, during) = loader.await.unwrap();
    assert!(
        bad.is_empty(),
        "{} requests failed during the rotation, first: {:?}",
        bad.len(),
        bad.first()
    );
    assert!(ok > 0, "the load made no request");

    let after = status(&data);
    assert_eq!(after["rows_not_under_sealing_key"], 0, "{after}");
    assert_eq!(rows_of(&after, &gen1), 0, "{after}");
    assert!(rows_of(&after, &gen2) >= total + ok as i64, "{after}");

    // Retire the old key: a node started without it opens everything.
    node.terminate();
    let retired = dir.path().join("retired-master.key");
    std::fs::rename(&key1, &retired).unwrap();
    let mut node = Node::spawn_with(
        "b",
        &o,
        &["--master-key-watch", "1", "--rate-limit-key-create", "0"],
    );
    node.wait_health(200).await;
    let b = a.on(&node);
    for (id, ct, pt) in made.iter().chain(during.iter()) {
        assert_eq!(&b.unwrap_ok(id, ct).await, pt);
    }
    // The import token made before the rotation still takes a secure import.
    let token = b.call(Method::GET, "/api/v2/import_token", None).await;
    let token = token.expect(200).clone();
    let material = keyward_crypto::random_bytes(32).unwrap();
    let imported = b
        .create_key(secure_import_resource(&token, &material, "after-rotation"))
        .await;
    let ct = b.wrap_ok(&imported, b"x").await;
    assert_eq!(b.unwrap_ok(&imported, &ct).await, b"x");
    node.terminate();

    // A backup taken now restores into a data dir that holds only generation 2 (generation 1
    // retired), and a node there unwraps what was made under generation 1.
    let file = dir.path().join("after-rotation.bak");
    ok_json(
        &keyward()
            .arg("admin")
            .arg("--data-dir")
            .arg(&data)
            .args(["--output", "json", "backup", "--to"])
            .arg(&file)
            .output()
            .unwrap(),
        "backup",
    );
    let restored = dir.path().join("restored");
    std::fs::create_dir_all(&restored).unwrap();
    std::fs::copy(data.join("master.key.2"), restored.join("master.key.2")).unwrap();
    let out = ok_json(
        &keyward()
            .arg("admin")
            .arg("--data-dir")
            .arg(&restored)
            .args(["--output", "json", "restore", "--from"])
            .arg(&file)
            .output()
            .unwrap(),
        "restore with only generation 2",
    );
    // The restore found and checked generation 2 (not "put the master key at ...").
    assert_eq!(
        out["next"],
        format!("start the server with the master key {gen2}"),
        "{out}"
    );
    let ro = opts(&restored);
    let mut node = Node::spawn_with("r", &ro, &[]);
    node.wait_health(200).await;
    let r = a.on(&node);
    for (id, ct, pt) in made.iter().take(6) {
        assert_eq!(&r.unwrap_ok(id, ct).await, pt);
    }
    node.terminate();

    // Only the old key: sealed, naming the key it lacks; nothing is written.
    std::fs::rename(data.join("master.key.2"), dir.path().join("gen2")).unwrap();
    std::fs::rename(&retired, &key1).unwrap();
    let mut node = Node::spawn_with("c", &o, &[]);
    let h = node.wait_health(503).await;
    assert_eq!(h["status"], "sealed", "{h}");
    let reason = node.log();
    assert!(
        reason.contains("does not match") && reason.contains(&gen2),
        "{reason}"
    );
    node.terminate();
    let still = status(&data);
    assert_eq!(
        still["rows_under_keys_not_found"][0]["id"],
        gen2.as_str(),
        "{still}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_refuses_clearly_without_a_database_or_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("nothing");
    let out = admin(&data, &["rotate", "--settle", "0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no database"), "{err}");
    assert!(!data.join("master.key").exists());
    let out = admin(&data, &["migrate", "--to", "cloud"]);
    assert!(!out.status.success());
}

/// A staged generation is loaded by the running node but does not seal until `rotate` runs
/// again; that second run switches to it instead of making yet another one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_generation_waits_for_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_master_key(&data.join("master.key"));
    let o = opts(&data);
    let mut node = Node::spawn_with(
        "s",
        &o,
        &["--master-key-watch", "1", "--rate-limit-key-create", "0"],
    );
    node.wait_health(200).await;
    let (instance, apikey) = node.banner().unwrap();
    let a = Api::login(&node.base, &apikey, &instance).await;
    let k = a.root_key("staged-k1").await;
    let ct = a.wrap_ok(&k, b"p").await;
    let gen1 = status(&data)["sealing"].as_str().unwrap().to_string();

    let staged = ok_json(&admin(&data, &["rotate", "--stage"]), "rotate --stage");
    let gen2 = staged["staged"].as_str().unwrap().to_string();
    // New rows are still sealed under generation 1.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    a.root_key("staged-k2").await;
    let s = status(&data);
    assert_eq!(s["sealing"], gen1.as_str(), "{s}");
    assert_eq!(rows_of(&s, &gen2), 0, "{s}");

    let done = ok_json(
        &admin(&data, &["rotate", "--settle", "3"]),
        "rotate after stage",
    );
    assert_eq!(done["sealing"], gen2.as_str(), "{done}");
    assert_eq!(done["complete"], true, "{done}");
    assert!(!data.join("master.key.3").exists());
    // The node seals new rows with generation 2 now, and still opens everything.
    a.root_key("staged-k3").await;
    assert_eq!(a.unwrap_ok(&k, &ct).await, b"p");
    let s = status(&data);
    assert_eq!(s["rows_not_under_sealing_key"], 0, "{s}");
    node.terminate();
}

/// No core dumps (docs/design.md): the server that holds the master key runs with core dumps off
/// (`RLIMIT_CORE` 0, soft and hard), so a crash writes no key material to disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_without_core_dumps() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let o = opts(&data);
    let mut node = Node::spawn("core", &o);
    node.wait_health(200).await;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", node.pid())).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    let fields: Vec<&str> = core.split_whitespace().collect();
    assert_eq!(&fields[4..6], ["0", "0"], "{core}");
    assert!(
        !node.log().contains("process hardening failed"),
        "{}",
        node.log()
    );
    // The database files the server created are private.
    for f in ["keyward.db", "keyward.db-wal", "master.key"] {
        let mode = std::fs::metadata(data.join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    node.terminate();

    // A migration into an HSM that is not configured: a clear refusal, nothing changed.
    let before = status(&data);
    let out = admin(&data, &["migrate", "--to", "pkcs11", "--settle", "0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no HSM is configured"), "{err}");
    assert_eq!(status(&data), before);
}

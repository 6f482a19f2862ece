//! Backups (docs/backup.md) with the real `keyward` binary:
//!
//! - an online backup of a running SQLite node (while another client keeps creating keys)
//!   restored into a fresh data dir: every sampled ciphertext unwraps, keys, versions,
//!   policies, the alias, API keys, bearer tokens and the import token are intact, and the
//!   snapshot is consistent (the keys created during the backup are a prefix of their order);
//! - restore into a non-empty data dir, or with another master key, is refused;
//! - backups are encrypted and authenticated under the master key: an edit anywhere (with or
//!   without a recomputed checksum) is refused and the target stays empty, an intact backup
//!   restores and its ciphertexts unwrap, and no name chosen by a client is readable in the
//!   file;
//! - version-1 (unauthenticated) backups are refused unless `--allow-unauthenticated-v1`;
//! - PostgreSQL → backup → SQLite (and → another PostgreSQL database), when
//!   `KEYWARD_TEST_DATABASE_URL` is set (skipped with a note otherwise);
//! - the audit table (`--audit-sink database`) is in the backup, restored row for row, and a
//!   node on the restored database (SQLite, and PostgreSQL when available) appends to it with
//!   new ids.
//!
//! `interrupt`: backup, restore and migrate killed (SIGKILL) or stopped (SIGTERM) part-way,
//! then run again; their JSON progress on stderr.
//!
//! `fuzz_regressions`: inputs that once crashed a fuzz target.
//!
//! Run: `cargo test -p keyward --test backup`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod fuzz_regressions;
mod interrupt;
mod running;

use std::collections::BTreeSet;
use std::ops::Range;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use keyward_crypto::master::{FileMasterKey, MasterKeyProvider};
use reqwest::Method;
use serde_json::{json, Value};

use keyward_testsupport::*;

/// Ciphertexts wrapped before the backup and unwrapped after the restore (T17 samples 1,000).
const CIPHERTEXTS: usize = 1000;

/// Runs `keyward admin ARGS...`.
fn admin(args: &[&str]) -> Output {
    keyward().arg("admin").args(args).output().unwrap()
}

/// Asserts the command failed; returns its stderr without its progress reports (which say
/// how far the command got before it failed, docs/backup.md "Progress").
fn failed(out: Output, what: &str) -> String {
    let err: String = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !serde_json::from_str::<Value>(l).is_ok_and(|v| v.get("progress").is_some()))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        !out.status.success(),
        "{what} should have been refused; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    err
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn backup(data_dir: &Path, file: &Path) -> Output {
    admin(&[
        "--data-dir",
        path_str(data_dir),
        "--output",
        "json",
        "backup",
        "--to",
        path_str(file),
    ])
}

fn restore(data_dir: &Path, file: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "--data-dir",
        path_str(data_dir),
        "--output",
        "json",
        "restore",
        "--from",
        path_str(file),
    ];
    args.extend_from_slice(extra);
    admin(&args)
}

/// The target of a refused restore must still hold nothing: no database file at all.
fn assert_untouched(dir: &Path, what: &str) {
    if !dir.exists() {
        return;
    }
    let entries: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n != "master.key")
        .collect();
    assert!(
        entries.is_empty(),
        "{what}: the target now holds {entries:?}"
    );
}

/// An operator's copy of the master key: same bytes, mode 0600.
fn copy_master_key(from: &Path, to: &Path) {
    use std::io::Write;
    std::fs::DirBuilder::new()
        .recursive(true)
        .create(to.parent().unwrap())
        .unwrap();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .unwrap();
    f.write_all(&std::fs::read(from).unwrap()).unwrap();
}

fn mode_of(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn node_opts<'a>(data_dir: &'a Path, key: &'a Path, db: Option<&'a str>) -> NodeOpts<'a> {
    NodeOpts {
        database_url: db,
        data_dir,
        master_key_file: Some(key),
        token_pool_size: 0,
        scheduler_interval: 0,
    }
}

/// One wrapped sample: key, ciphertext, plaintext, AAD.
#[derive(Clone, Debug)]
struct Sample {
    key: String,
    ct: String,
    pt: Vec<u8>,
    aad: Option<Vec<String>>,
}

async fn wrap_with(api: &Api, key: &str, pt: &[u8], aad: Option<&[String]>) -> String {
    let mut body = json!({"plaintext": B64.encode(pt)});
    if let Some(a) = aad {
        body["aad"] = json!(a);
    }
    let r = api
        .call(
            Method::POST,
            &format!("/api/v2/keys/{key}/actions/wrap"),
            Some(&body),
        )
        .await;
    r.expect(200)["ciphertext"].as_str().unwrap().to_string()
}

async fn try_unwrap(api: &Api, s: &Sample) -> Result<Vec<u8>, String> {
    let mut body = json!({"ciphertext": s.ct});
    if let Some(a) = &s.aad {
        body["aad"] = json!(a);
    }
    let r = api
        .call(
            Method::POST,
            &format!("/api/v2/keys/{}/actions/unwrap", s.key),
            Some(&body),
        )
        .await;
    if r.status != 200 {
        return Err(format!("{} {}", r.status, r.text));
    }
    Ok(B64.decode(r.body["plaintext"].as_str().unwrap()).unwrap())
}

/// Wraps `n` random plaintexts round-robin over `keys` (every third with AAD), 8 at a time.
async fn wrap_many(api: &Api, keys: &[String], n: usize, tag: &str) -> Vec<Sample> {
    let mut set = tokio::task::JoinSet::new();
    let per = n.div_ceil(8);
    for w in 0..8 {
        let (api, keys, tag) = (api.clone(), keys.to_vec(), tag.to_string());
        set.spawn(async move {
            let mut out = Vec::new();
            for i in (w * per)..((w + 1) * per).min(n) {
                let key = keys[i % keys.len()].clone();
                let pt = keyward_crypto::random_bytes(16 + i % 48).unwrap();
                let aad = (i % 3 == 0).then(|| vec![format!("{tag}-{i}"), "backup".to_string()]);
                let ct = wrap_with(&api, &key, &pt, aad.as_deref()).await;
                out.push(Sample { key, ct, pt, aad });
            }
            out
        });
    }
    let mut all = Vec::new();
    while let Some(r) = set.join_next().await {
        all.extend(r.unwrap());
    }
    all
}

/// Unwraps every sample on `api`, 8 at a time; returns the failures.
async fn unwrap_all(api: &Api, samples: &[Sample]) -> Vec<String> {
    let mut set = tokio::task::JoinSet::new();
    for chunk in samples.chunks(samples.len().div_ceil(8).max(1)) {
        let (api, chunk) = (api.clone(), chunk.to_vec());
        set.spawn(async move {
            let mut bad = Vec::new();
            for s in &chunk {
                match try_unwrap(&api, s).await {
                    Ok(pt) if pt == s.pt => {}
                    Ok(_) => bad.push(format!("{}: wrong plaintext", s.key)),
                    Err(e) => bad.push(format!("{}: {e}", s.key)),
                }
            }
            bad
        });
    }
    let mut bad = Vec::new();
    while let Some(r) = set.join_next().await {
        bad.extend(r.unwrap());
    }
    bad
}

/// (id, name, state, extractable, imported) of every key of the caller's instance that is
/// not destroyed, sorted.
async fn key_list(api: &Api) -> BTreeSet<(String, String, i64, bool, bool)> {
    let r = api.call(Method::GET, "/api/v2/keys?limit=5000", None).await;
    r.expect(200)["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["id"].as_str().unwrap().to_string(),
                k["name"].as_str().unwrap().to_string(),
                k["state"].as_i64().unwrap(),
                k["extractable"].as_bool().unwrap(),
                k["imported"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

async fn version_ids(api: &Api, key: &str) -> Vec<String> {
    let r = api
        .call(Method::GET, &format!("/api/v2/keys/{key}/versions"), None)
        .await;
    r.expect(200)["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect()
}

/// Keys the concurrent writer created: (name, id, request sent, response received).
type Created = Vec<(String, String, Instant, Instant)>;

/// An online backup: its command's output, and what a concurrent writer did around it.
struct Online {
    out: Output,
    created: Created,
    /// Just before the backup command started, and just after it ended.
    t0: Instant,
    t1: Instant,
}

/// Runs `run_backup` (a blocking `keyward admin ... backup`) while a client keeps creating
/// keys named `during-NNNN` through `api`, from before the backup starts until after it ends.
async fn backup_while_writing(
    api: &Api,
    run_backup: impl FnOnce() -> Output + Send + 'static,
) -> Online {
    let stop = Arc::new(AtomicBool::new(false));
    let created: Arc<Mutex<Created>> = Arc::default();
    let writer = {
        let (api, stop, created) = (api.clone(), stop.clone(), created.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let name = format!("during-{i:04}");
                let sent = Instant::now();
                let id = api.root_key(&name).await;
                created
                    .lock()
                    .unwrap()
                    .push((name, id, sent, Instant::now()));
                i += 1;
            }
        })
    };
    while created.lock().unwrap().len() < 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let t0 = Instant::now();
    let out = tokio::task::spawn_blocking(run_backup).await.unwrap();
    let t1 = Instant::now();
    // Let the writer be seen after the backup too.
    while !created.lock().unwrap().iter().any(|c| c.2 > t1) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    let created = created.lock().unwrap().clone();
    Online {
        out,
        created,
        t0,
        t1,
    }
}

/// The restored keys from the writer show one point in time: every key acknowledged before
/// the backup began is there, none requested after it ended, and those present are a prefix
/// of the creation order. Returns how many are present.
fn assert_point_in_time(
    keys_after: &BTreeSet<(String, String, i64, bool, bool)>,
    online: &Online,
) -> usize {
    let present: Vec<bool> = online
        .created
        .iter()
        .map(|(_, id, _, _)| keys_after.iter().any(|k| &k.0 == id))
        .collect();
    for ((name, _, sent, acked), here) in online.created.iter().zip(&present) {
        if *acked < online.t0 {
            assert!(
                here,
                "{name} was acknowledged before the backup began but is missing"
            );
        }
        if *sent > online.t1 {
            assert!(
                !here,
                "{name} was created after the backup ended but is in it"
            );
        }
    }
    let n = present.iter().filter(|p| **p).count();
    assert!(
        present.iter().take(n).all(|p| *p),
        "the restored keys from the backup window are not a prefix: {present:?}"
    );
    eprintln!(
        "{} keys created by the concurrent writer ({} overlapping the backup), {n} in the snapshot",
        online.created.len(),
        online
            .created
            .iter()
            .filter(|c| c.3 >= online.t0 && c.2 <= online.t1)
            .count(),
    );
    n
}

const METRICS_POLICY: &str = "/api/v2/instance/policies?policy=metrics";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_online_sqlite_backup_restores_everything() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let a_dir = dir.path().join("a");
    std::fs::create_dir_all(&a_dir).unwrap();
    let a_key = a_dir.join("master.key");
    write_master_key(&a_key);
    let mut na = Node::spawn("a", &node_opts(&a_dir, &a_key, None));
    na.wait_health(200).await;
    let (inst, apikey) = na.banner().unwrap();
    let a = Api::login(&na.base, &apikey, &inst).await;

    // A second instance and a Writer API key, made with the admin command while A runs.
    let second = ok_json(
        &admin(&[
            "--data-dir",
            path_str(&a_dir),
            "--output",
            "json",
            "instance",
            "create",
            "--name",
            "second",
        ]),
        "instance create",
    );
    let inst2 = second["id"].as_str().unwrap().to_string();
    let writer = ok_json(
        &admin(&[
            "--data-dir",
            path_str(&a_dir),
            "--output",
            "json",
            "apikey",
            "create",
            "--instance",
            &inst2,
            "--role",
            "Writer",
            "--name",
            "second-writer",
        ]),
        "apikey create",
    );
    let writer_key = writer["apikey"].as_str().unwrap().to_string();
    let a2 = Api::login(&na.base, &writer_key, &inst2).await;

    // Keys: generated roots, an imported root, a securely imported root (through an import
    // token), a standard key, a deleted key; in the second instance a generated root.
    let r1 = a.root_key("root-1").await;
    let r2 = a.root_key("root-2").await;
    let imported = a
        .create_key(
            json!({"type": KEY_TYPE, "name": "imported", "extractable": false,
               "payload": B64.encode(keyward_crypto::random_bytes(32).unwrap())}),
        )
        .await;
    let standard = a
        .create_key(json!({"type": KEY_TYPE, "name": "standard", "extractable": true}))
        .await;
    let standard_payload = a
        .call(Method::GET, &format!("/api/v2/keys/{standard}"), None)
        .await
        .expect(200)["resources"][0]["payload"]
        .as_str()
        .unwrap()
        .to_string();
    a.call(
        Method::POST,
        "/api/v2/import_token",
        Some(&json!({"expiration": 3600, "maxAllowedRetrievals": 5})),
    )
    .await
    .expect(200);
    let token = a.call(Method::GET, "/api/v2/import_token", None).await;
    let token = token.expect(200).clone();
    assert_eq!(token["remainingRetrievals"], 4);
    let secure_import =
        |material: &[u8], name: &str| secure_import_resource(&token, material, name);
    let secure = a
        .create_key(secure_import(
            &keyward_crypto::random_bytes(32).unwrap(),
            "secure",
        ))
        .await;
    let doomed = a.root_key("doomed").await;
    let del = a
        .call(Method::DELETE, &format!("/api/v2/keys/{doomed}"), None)
        .await;
    assert!(
        del.status == 200 || del.status == 204,
        "delete: {}",
        del.text
    );
    let doomed_a = a
        .call(Method::GET, &format!("/api/v2/keys/{doomed}"), None)
        .await;
    let doomed_a = doomed_a.expect(200)["resources"][0].clone();
    assert_eq!(doomed_a["state"], 5);
    let other = a2.root_key("second-root").await;

    // Ciphertexts across keys and versions: half before and half after a rotation of root-1.
    let roots = vec![r1.clone(), r2.clone(), imported.clone(), secure.clone()];
    let mut samples = wrap_many(&a, &roots, CIPHERTEXTS / 2 - 20, "v1").await;
    a.action(&r1, "rotate").await.expect(204);
    samples.extend(wrap_many(&a, &roots, CIPHERTEXTS / 2 - 20, "v2").await);
    samples.extend(wrap_many(&a2, std::slice::from_ref(&other), 40, "i2").await);
    assert_eq!(samples.len(), CIPHERTEXTS);

    // Policies and an alias.
    a.put_rotation_policy(&r2, 3).await.expect(200);
    a.call(
        Method::PUT,
        METRICS_POLICY,
        Some(&json!({
            "metadata": {"collectionType": POLICY_TYPE, "collectionTotal": 1},
            "resources": [{"policy_type": "metrics", "policy_data": {"enabled": true}}],
        })),
    )
    .await
    .expect(204);
    a.call(
        Method::POST,
        &format!("/api/v2/keys/{r2}/aliases/root-2-alias"),
        None,
    )
    .await
    .expect(201);
    let keys_before = key_list(&a).await;
    let r1_versions = version_ids(&a, &r1).await;
    assert_eq!(r1_versions.len(), 2);
    let setup_done = started.elapsed();

    // The backup, online: A keeps serving and another client keeps creating keys meanwhile.
    let file = dir.path().join("backups").join("a.kwb");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let online = {
        let (a_dir, file) = (a_dir.clone(), file.clone());
        backup_while_writing(&a, move || backup(&a_dir, &file)).await
    };
    let out = online.out.clone();
    let report = ok_json(&out, "backup");
    eprintln!("backup took {:?}: {report}", online.t1 - online.t0);
    assert_eq!(mode_of(&file), 0o600, "the backup file must be private");
    let leftovers: Vec<_> = std::fs::read_dir(file.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        1,
        "temporary files left behind: {leftovers:?}"
    );
    assert_eq!(report["source_backend"], "sqlite");
    assert_eq!(report["tables"]["import_tokens"], 1);
    assert_eq!(report["tables"]["instances"], 2);
    assert_eq!(report["tables"]["instance_policies"], 1);
    let master_id = report["master_key_ids"][0].as_str().unwrap().to_string();
    assert!(master_id.starts_with("file:"), "{report}");
    let bytes = std::fs::read(&file).unwrap();
    assert!(bytes.starts_with(b"KEYWARD-BACKUP\n"));

    // An operator restores into a fresh data dir, with a copy of the master key.
    let b_dir = dir.path().join("b");
    let b_key = b_dir.join("master.key");
    copy_master_key(&a_key, &b_key);
    let restored = ok_json(&restore(&b_dir, &file, &[]), "restore");
    eprintln!("restore: {restored}");
    assert_eq!(restored["rows"], report["rows"]);
    assert_eq!(restored["tables"], report["tables"]);
    assert!(
        restored["next"].as_str().unwrap().contains(&master_id),
        "{restored}"
    );
    let mut nb = Node::spawn("b", &node_opts(&b_dir, &b_key, None));
    nb.wait_health(200).await;
    assert!(
        nb.banner().is_none(),
        "a restored deployment must not bootstrap again"
    );

    // The old bearer token works on B (signing secret restored), and so do the API keys.
    let b_old_token = a.on(&nb);
    let b = Api::login(&nb.base, &apikey, &inst).await;
    let b2 = Api::login(&nb.base, &writer_key, &inst2).await;

    // 100% of the sampled ciphertexts unwrap to their plaintexts.
    let bad = unwrap_all(&b, &samples[..samples.len() - 40]).await;
    assert!(
        bad.is_empty(),
        "{} of {} failed: {:?}",
        bad.len(),
        samples.len(),
        &bad[..bad.len().min(5)]
    );
    let bad = unwrap_all(&b2, &samples[samples.len() - 40..]).await;
    assert!(bad.is_empty(), "second instance: {bad:?}");
    assert!(unwrap_all(&b_old_token, &samples[..5]).await.is_empty());

    // The snapshot is a point in time, taken while A was being written to.
    let keys_after = key_list(&b).await;
    let n_present = assert_point_in_time(&keys_after, &online);
    let without_during = |s: &BTreeSet<(String, String, i64, bool, bool)>| {
        s.iter()
            .filter(|k| !k.1.starts_with("during-"))
            .cloned()
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(without_during(&keys_after), keys_before);
    assert_eq!(keys_after.len(), keys_before.len() + n_present);
    // A key from the backup window is whole (its version came with it).
    if let Some((_, id, _, _)) = online.created.first() {
        let ct = b.wrap_ok(id, b"whole").await;
        assert_eq!(b.unwrap_ok(id, &ct).await, b"whole");
    }

    // Versions, the standard key's material, the deleted key, policies, the alias.
    assert_eq!(version_ids(&b, &r1).await, r1_versions);
    let std_b = b
        .call(Method::GET, &format!("/api/v2/keys/{standard}"), None)
        .await;
    assert_eq!(
        std_b.expect(200)["resources"][0]["payload"],
        standard_payload.as_str()
    );
    let gone = b
        .call(Method::GET, &format!("/api/v2/keys/{doomed}"), None)
        .await;
    let gone = &gone.expect(200)["resources"][0];
    assert_eq!(gone["state"], 5, "{gone}");
    assert_eq!(gone["deletionDate"], doomed_a["deletionDate"]);
    assert_eq!(gone["keyVersion"], doomed_a["keyVersion"]);
    let pol = b
        .call(
            Method::GET,
            &format!("/api/v2/keys/{r2}/policies?policy=rotation"),
            None,
        )
        .await;
    assert_eq!(
        pol.expect(200)["resources"][0]["rotation"]["interval_month"],
        3
    );
    let ipol = b.call(Method::GET, METRICS_POLICY, None).await;
    assert_eq!(
        ipol.expect(200)["resources"][0]["policy_data"]["enabled"],
        true
    );
    let alias = b.call(Method::GET, "/api/v2/keys/root-2-alias", None).await;
    assert_eq!(alias.expect(200)["resources"][0]["id"], r2.as_str());

    // The import token: same key pair and nonce, its retrieval count as at the backup, and its
    // private key restored (a secure import against it works on B).
    let tb = b.call(Method::GET, "/api/v2/import_token", None).await;
    let tb = tb.expect(200);
    assert_eq!(tb["payload"], token["payload"]);
    assert_eq!(tb["nonce"], token["nonce"]);
    assert_eq!(tb["remainingRetrievals"], 3);
    let m = keyward_crypto::random_bytes(32).unwrap();
    let imported_on_b = b.create_key(secure_import(&m, "secure-on-b")).await;
    let ct = b.wrap_ok(&imported_on_b, b"after restore").await;
    assert_eq!(b.unwrap_ok(&imported_on_b, &ct).await, b"after restore");
    // B keeps working: a rotation of a restored key, old ciphertexts still unwrap.
    b.action(&r2, "rotate").await.expect(204);
    assert!(unwrap_all(&b, &samples[..20]).await.is_empty());

    // Restoring again into B's data dir (not empty) is refused, and changes nothing.
    let count_before = key_list(&b).await.len();
    let err = failed(
        restore(&b_dir, &file, &[]),
        "restore into a non-empty data dir",
    );
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(key_list(&b).await.len(), count_before);
    // So is restoring into A's (running) data dir.
    let err = failed(restore(&a_dir, &file, &[]), "restore into A's data dir");
    assert!(err.contains("not empty"), "{err}");

    // The wrong master key is caught before anything is written.
    let c_dir = dir.path().join("c");
    let wrong = dir.path().join("wrong.key");
    write_master_key(&wrong);
    let err = failed(
        restore(&c_dir, &file, &["--master-key-file", path_str(&wrong)]),
        "restore with the wrong master key",
    );
    assert!(
        err.contains(&format!("sealed under the master key {master_id}")),
        "{err}"
    );
    assert!(
        !c_dir.exists(),
        "a refused restore created {}",
        c_dir.display()
    );

    nb.terminate();
    na.terminate();
    eprintln!("setup {:?}, whole test {:?}", setup_done, started.elapsed());
}

/// A small deployment made with the admin command alone (no server needed). Its rows are
/// authenticated under the master key, so the admin command creates the master key file in
/// the data dir, as the server would.
fn small_deployment(dir: &Path) -> PathBuf {
    let data = dir.join("small");
    let inst = ok_json(
        &admin(&[
            "--data-dir",
            path_str(&data),
            "--output",
            "json",
            "instance",
            "create",
            "--name",
            "x",
        ]),
        "instance create",
    );
    ok_json(
        &admin(&[
            "--data-dir",
            path_str(&data),
            "--output",
            "json",
            "apikey",
            "create",
            "--instance",
            inst["id"].as_str().unwrap(),
            "--role",
            "Manager",
        ]),
        "apikey create",
    );
    assert!(data.join("master.key").is_file());
    data
}

/// The one message for any edited, damaged or foreign file.
const NOT_INTACT: &str = "is not an intact Keyward backup";

/// Where the sections of a format-2 backup file are, found as a reader finds them (from the
/// header length and the header's `plaintext_bytes`), without the crate's decoder.
struct Layout {
    header: Range<usize>,
    header_json: Value,
    chunks: Vec<Range<usize>>,
    trailer: Range<usize>,
}

fn layout(b: &[u8]) -> Layout {
    assert!(b.starts_with(b"KEYWARD-BACKUP\n"), "not a backup file");
    let hlen = u32::from_be_bytes(b[15..19].try_into().unwrap()) as usize;
    let header = 19..19 + hlen;
    let header_json: Value = serde_json::from_slice(&b[header.clone()]).unwrap();
    assert_eq!(header_json["format"], 2, "{header_json}");
    let mut left = header_json["plaintext_bytes"].as_u64().unwrap() as usize;
    let mut at = header.end;
    let mut chunks = Vec::new();
    loop {
        let n = left.min(64 * 1024);
        chunks.push(at..at + n + 16);
        at += n + 16;
        left -= n;
        if left == 0 {
            break;
        }
    }
    assert_eq!(at + 32, b.len(), "chunks and checksum do not fill the file");
    Layout {
        header,
        header_json,
        chunks,
        trailer: at..b.len(),
    }
}

fn flipped(b: &[u8], at: usize, mask: u8) -> Vec<u8> {
    let mut c = b.to_vec();
    c[at] ^= mask;
    c
}

/// `body` followed by its SHA-256: a file whose checksum was recomputed after an edit.
fn with_checksum(mut body: Vec<u8>) -> Vec<u8> {
    let sum = keyward_crypto::sha256(&body);
    body.extend_from_slice(&sum);
    body
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn backup_files_are_private_verified_and_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_deployment(dir.path());
    let file = dir.path().join("small.kwb");
    let report = ok_json(&backup(&data, &file), "backup");
    assert_eq!(report["format"], 2);
    assert_eq!(report["tables"]["instances"], 1);
    assert_eq!(report["tables"]["api_keys"], 1);
    assert_eq!(mode_of(&file), 0o600);
    let good = std::fs::read(&file).unwrap();
    assert_eq!(
        report["sha256"],
        hex(&keyward_crypto::sha256(&good)).as_str(),
        "`sha256` is what sha256sum prints"
    );
    assert_eq!(report["bytes"], good.len());

    // The backup command refuses to overwrite, to read a data dir with no database, and to
    // run without the master key.
    let err = failed(backup(&data, &file), "backup over an existing file");
    assert!(err.contains("exists") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), good);
    let err = failed(
        backup(&dir.path().join("nothing-here"), &dir.path().join("x.kwb")),
        "backup of a missing data dir",
    );
    assert!(err.contains("no database"), "{err}");
    assert!(!dir.path().join("nothing-here").exists());
    assert!(!dir.path().join("x.kwb").exists());
    let err = failed(
        admin(&[
            "--data-dir",
            path_str(&data),
            "backup",
            "--to",
            path_str(&dir.path().join("x.kwb")),
            "--master-key-file",
            path_str(&dir.path().join("no.key")),
        ]),
        "backup without a master key",
    );
    assert!(
        err.contains("no master key could be loaded") && err.contains("no.key"),
        "{err}"
    );
    assert!(!dir.path().join("x.kwb").exists());
    let forced = admin(&[
        "--data-dir",
        path_str(&data),
        "--output",
        "json",
        "backup",
        "--to",
        path_str(&file),
        "--force",
    ]);
    ok_json(&forced, "backup --force");
    assert_eq!(mode_of(&file), 0o600);
    assert_ne!(
        std::fs::read(&file).unwrap(),
        good,
        "a new file key each time"
    );

    // --check verifies (with the master key) and writes nothing.
    let check_dir = dir.path().join("check");
    let key = data.join("master.key");
    let checked = ok_json(
        &restore(
            &check_dir,
            &file,
            &["--check", "--master-key-file", path_str(&key)],
        ),
        "restore --check",
    );
    assert_eq!(checked["verified"], true);
    assert_eq!(checked["authenticated"], true);
    assert!(!check_dir.exists());

    // Files that are not backups at all.
    let sqlite = std::fs::read(data.join("keyward.db")).unwrap();
    for (what, bytes) in [
        ("an empty file", Vec::new()),
        ("a SQLite database", sqlite),
        ("the first line only", b"KEYWARD-BACKUP\n".to_vec()),
    ] {
        let bad = dir.path().join("foreign.kwb");
        std::fs::write(&bad, bytes).unwrap();
        let target = dir.path().join("foreign-target");
        let err = failed(
            restore(&target, &bad, &["--master-key-file", path_str(&key)]),
            what,
        );
        assert!(err.contains(NOT_INTACT), "{what}: {err}");
        assert!(err.contains("nothing was written"), "{what}: {err}");
        assert!(!target.exists(), "{what}");
    }

    // The backup restores, and the result holds the same rows.
    let target = dir.path().join("good-target");
    let restored = ok_json(
        &restore(&target, &file, &["--master-key-file", path_str(&key)]),
        "restore of the good backup",
    );
    assert_eq!(restored["tables"], report["tables"]);
    let list = ok_json(
        &admin(&[
            "--data-dir",
            path_str(&target),
            "--output",
            "json",
            "apikey",
            "list",
            // API keys are authenticated rows: reading them needs the master key.
            "--master-key-file",
            path_str(&key),
        ]),
        "apikey list",
    );
    assert_eq!(list["apikeys"].as_array().unwrap().len(), 1);
    // No scratch files are left next to the backup.
    let hidden: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");
}

/// (what, the file edited with its old checksum, the same edit with the checksum
/// recomputed: `None` where that would give back the intact file)
type EditCase = (&'static str, Vec<u8>, Option<Vec<u8>>);

#[test]
fn edited_backup_is_refused_in_every_section() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_deployment(dir.path());
    let key = data.join("master.key");
    let file = dir.path().join("small.kwb");
    ok_json(&backup(&data, &file), "backup");
    let good = std::fs::read(&file).unwrap();
    let l = layout(&good);
    assert!(
        l.chunks.len() >= 3,
        "the test needs a first, a middle and a last chunk: {} chunks",
        l.chunks.len()
    );
    let body = good[..l.trailer.start].to_vec();
    let (first, middle, last) = (
        l.chunks[0].clone(),
        l.chunks[l.chunks.len() / 2].clone(),
        l.chunks[l.chunks.len() - 1].clone(),
    );
    let mid = |r: &Range<usize>| r.start + (r.end - r.start) / 2;
    let header_text = std::str::from_utf8(&good[l.header.clone()]).unwrap();
    // A header edit that keeps valid JSON: the last digit of `created_unix` (d ^ 1 is a digit).
    let field = header_text.find("\"created_unix\":").unwrap() + "\"created_unix\":".len();
    let digits = header_text[field..]
        .find(|c: char| !c.is_ascii_digit())
        .unwrap();
    let created_digit = l.header.start + field + digits - 1;
    // The sealed file key with one bit flipped, re-encoded to the same length.
    let sealed_b64 = l.header_json["sealed_file_key"].as_str().unwrap();
    let mut sealed = B64.decode(sealed_b64).unwrap();
    let n = sealed.len();
    sealed[n / 2] ^= 0x04;
    let resealed_b64 = B64.encode(&sealed);
    assert_eq!(resealed_b64.len(), sealed_b64.len());
    let key_at = l.header.start + header_text.find(sealed_b64).unwrap();
    let edit_sealed_key = |b: &[u8]| {
        let mut c = b.to_vec();
        c[key_at..key_at + sealed_b64.len()].copy_from_slice(resealed_b64.as_bytes());
        c
    };
    let chunk = |i: usize| good[l.chunks[i].clone()].to_vec();
    let rebuilt = |order: &[usize]| {
        let mut c = good[..l.header.end].to_vec();
        for i in order {
            c.extend_from_slice(&chunk(*i));
        }
        c
    };
    let all: Vec<usize> = (0..l.chunks.len()).collect();
    let mut swapped = all.clone();
    swapped.swap(0, 1);
    let mut dropped = all.clone();
    dropped.remove(l.chunks.len() / 2);
    let mut duplicated = all.clone();
    duplicated.insert(1, 0);

    let mut cases: Vec<EditCase> = vec![
        (
            "magic",
            flipped(&good, 3, 0x20),
            Some(flipped(&body, 3, 0x20)),
        ),
        (
            "header length",
            flipped(&good, 18, 0x01),
            Some(flipped(&body, 18, 0x01)),
        ),
        (
            "header JSON (created_unix)",
            flipped(&good, created_digit, 0x01),
            Some(flipped(&body, created_digit, 0x01)),
        ),
        (
            "header JSON (backup id)",
            flipped(
                &good,
                l.header.start + header_text.find("\"backup_id\":\"").unwrap() + 14,
                0x01,
            ),
            Some(flipped(
                &body,
                l.header.start + header_text.find("\"backup_id\":\"").unwrap() + 14,
                0x01,
            )),
        ),
        (
            "sealed file key",
            edit_sealed_key(&good),
            Some(edit_sealed_key(&body)),
        ),
        (
            "first chunk",
            flipped(&good, mid(&first), 0x01),
            Some(flipped(&body, mid(&first), 0x01)),
        ),
        (
            "middle chunk",
            flipped(&good, mid(&middle), 0x80),
            Some(flipped(&body, mid(&middle), 0x80)),
        ),
        (
            "last chunk",
            flipped(&good, mid(&last), 0x10),
            Some(flipped(&body, mid(&last), 0x10)),
        ),
        (
            "a chunk's tag",
            flipped(&good, first.end - 1, 0x01),
            Some(flipped(&body, first.end - 1, 0x01)),
        ),
        ("trailer", flipped(&good, l.trailer.start + 7, 0x01), None),
        (
            "truncated by 100 bytes",
            good[..good.len() - 100].to_vec(),
            Some(body[..body.len() - 100].to_vec()),
        ),
        (
            "truncated to half",
            good[..good.len() / 2].to_vec(),
            Some(body[..body.len() / 2].to_vec()),
        ),
        (
            "truncated inside the header",
            good[..l.header.start + 10].to_vec(),
            Some(good[..l.header.start + 10].to_vec()),
        ),
        (
            "truncated at a chunk boundary (last chunk dropped)",
            [&good[..last.start], &good[l.trailer.clone()]].concat(),
            Some(good[..last.start].to_vec()),
        ),
        (
            "bytes appended",
            [good.as_slice(), b"junk"].concat(),
            Some([body.as_slice(), b"junk"].concat()),
        ),
        (
            "a chunk appended",
            [&body[..], &chunk(0), &good[l.trailer.clone()]].concat(),
            Some([&body[..], &chunk(0)].concat()),
        ),
        (
            "two chunks swapped",
            [rebuilt(&swapped), good[l.trailer.clone()].to_vec()].concat(),
            Some(rebuilt(&swapped)),
        ),
        (
            "a chunk dropped",
            [rebuilt(&dropped), good[l.trailer.clone()].to_vec()].concat(),
            Some(rebuilt(&dropped)),
        ),
        (
            "a chunk duplicated",
            [rebuilt(&duplicated), good[l.trailer.clone()].to_vec()].concat(),
            Some(rebuilt(&duplicated)),
        ),
    ];
    assert_eq!(rebuilt(&all), body, "the layout is read right");
    let mut messages = BTreeSet::new();
    let mut n = 0;
    for (what, plain, recomputed) in cases.drain(..) {
        let variants = [Some(plain), recomputed.map(with_checksum)];
        for (v, bytes) in variants.into_iter().enumerate() {
            let Some(bytes) = bytes else { continue };
            let what = format!(
                "{what}{}",
                if v == 1 { ", checksum recomputed" } else { "" }
            );
            assert_ne!(bytes, good, "{what}: not an edit");
            n += 1;
            let bad = dir.path().join(format!("bad-{n}.kwb"));
            std::fs::write(&bad, &bytes).unwrap();
            // Into a new data dir (key given) and into a prepared one (key in it); --check too.
            let fresh = dir.path().join(format!("fresh-{n}"));
            let prepared = dir.path().join(format!("prepared-{n}"));
            copy_master_key(&key, &prepared.join("master.key"));
            for (target, extra, check) in [
                (&fresh, vec!["--master-key-file", path_str(&key)], false),
                (&prepared, vec![], false),
                (&prepared, vec!["--check"], true),
            ] {
                let err = failed(restore(target, &bad, &extra), &what);
                assert!(err.contains(NOT_INTACT), "{what} (--check: {check}): {err}");
                assert!(err.contains("nothing was written"), "{what}: {err}");
                messages.insert(err.replace(path_str(&bad), "FILE"));
            }
            assert!(
                !fresh.exists(),
                "{what}: the refused restore created its data dir"
            );
            assert_untouched(&prepared, &what);
        }
    }
    assert_eq!(
        messages.len(),
        1,
        "every edit must get the same message, whatever byte changed: {messages:?}"
    );
    eprintln!("{n} edited files refused with: {messages:?}");

    // The intact file still restores.
    let target = dir.path().join("intact");
    let restored = ok_json(
        &restore(&target, &file, &["--master-key-file", path_str(&key)]),
        "restore of the intact file",
    );
    assert_eq!(restored["authenticated"], true);
}

#[test]
fn restore_under_another_master_key_names_the_key_it_needs() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_deployment(dir.path());
    let file = dir.path().join("small.kwb");
    let report = ok_json(&backup(&data, &file), "backup");
    let needed = report["sealed_under"].as_str().unwrap().to_string();
    assert!(needed.starts_with("file:"), "{report}");
    let other = dir.path().join("other.key");
    write_master_key(&other);

    // Another key given, for a restore and for --check.
    for extra in [vec![], vec!["--check"]] {
        let target = dir.path().join("t1");
        let mut args = vec!["--master-key-file", path_str(&other)];
        args.extend(extra);
        let err = failed(restore(&target, &file, &args), "another master key");
        assert!(
            err.contains(&format!("sealed under the master key {needed}"))
                && err.contains("not among the master keys found"),
            "{err}"
        );
        assert!(err.contains("nothing was written"), "{err}");
        assert!(!target.exists());
    }
    // A data dir prepared with another key.
    let prepared = dir.path().join("t2");
    write_master_key_in(&prepared);
    let err = failed(
        restore(&prepared, &file, &[]),
        "another key in the data dir",
    );
    assert!(err.contains(&needed), "{err}");
    assert_untouched(&prepared, "another key in the data dir");
    // No master key at all.
    let bare = dir.path().join("t3");
    let err = failed(restore(&bare, &file, &[]), "no master key");
    assert!(
        err.contains(&needed) && err.contains("no master key could be loaded"),
        "{err}"
    );
    assert!(!bare.exists());
    // The right key restores the same file.
    ok_json(
        &restore(
            &bare,
            &file,
            &["--master-key-file", path_str(&data.join("master.key"))],
        ),
        "restore with the right key",
    );
}

fn write_master_key_in(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    write_master_key(&dir.join("master.key"));
}

#[test]
fn version_1_backups_need_the_escape_hatch() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_deployment(dir.path());
    let file = dir.path().join("small.kwb");
    let report = ok_json(&backup(&data, &file), "backup");
    // A version-1 file as an earlier Keyward wrote it: magic, header, SQLite payload, SHA-256.
    let mk = FileMasterKey::load_or_create(&data.join("master.key"), false).unwrap();
    let opened = keyward::backup::open_backup(&std::fs::read(&file).unwrap(), &mk).unwrap();
    let payload = opened.payload;
    let header = json!({
        "format": 1, "created": "2026-01-01T00:00:00Z", "created_unix": 1_767_225_600,
        "keyward_version": "0.1.0 (old)", "source_backend": "sqlite", "source": "sqlite://old",
        "payload_format": "sqlite3", "payload_bytes": payload.len(),
        "payload_sha256": hex(&keyward_crypto::sha256(&payload)),
        "tables": report["tables"], "rows": report["rows"],
        "sealed_rows": 0, "master_key_ids": [],
    });
    let h = serde_json::to_vec(&header).unwrap();
    let mut v1 = b"KEYWARD-BACKUP\n".to_vec();
    v1.extend_from_slice(&(h.len() as u32).to_be_bytes());
    v1.extend_from_slice(&h);
    v1.extend_from_slice(&payload);
    let v1 = with_checksum(v1);
    let old = dir.path().join("old.kwb");
    std::fs::write(&old, &v1).unwrap();

    // Refused by default, saying why and what to pass.
    let target = dir.path().join("t");
    for extra in [vec![], vec!["--check"]] {
        let err = failed(restore(&target, &old, &extra), "a version-1 backup");
        assert!(
            err.contains("version-1") && err.contains("--allow-unauthenticated-v1"),
            "{err}"
        );
        assert!(!target.exists());
    }
    // The flag's help says such a file cannot be verified.
    let help = keyward()
        .args(["admin", "restore", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--allow-unauthenticated-v1") && help.contains("CANNOT be verified"),
        "{help}"
    );
    // A damaged version-1 file is still refused with the flag.
    let bad = dir.path().join("old-bad.kwb");
    std::fs::write(&bad, flipped(&v1, v1.len() - 40, 1)).unwrap();
    let err = failed(
        restore(&target, &bad, &["--allow-unauthenticated-v1"]),
        "a damaged version-1 file",
    );
    assert!(err.contains("checksum"), "{err}");
    assert!(!target.exists());
    // With the flag it restores, and says it was not authenticated.
    let out = restore(&target, &old, &["--allow-unauthenticated-v1"]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let restored = ok_json(&out, "restore of a version-1 backup with the flag");
    assert_eq!(restored["authenticated"], false);
    assert_eq!(restored["format"], 1);
    assert_eq!(restored["tables"], report["tables"]);
    assert!(stderr.contains("cannot be authenticated"), "{stderr}");
}

/// Ciphertexts wrapped through the API on a deployment whose backup is restored elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn intact_backup_restores_and_unwraps() {
    let dir = tempfile::tempdir().unwrap();
    let a_dir = dir.path().join("a");
    std::fs::create_dir_all(&a_dir).unwrap();
    let a_key = a_dir.join("master.key");
    write_master_key(&a_key);
    let mut na = Node::spawn("a", &node_opts(&a_dir, &a_key, None));
    na.wait_health(200).await;
    let (inst, apikey) = na.banner().unwrap();
    let a = Api::login(&na.base, &apikey, &inst).await;
    let mut keys = Vec::new();
    for i in 0..3 {
        keys.push(a.root_key(&format!("intact-{i}")).await);
    }
    let samples = wrap_many(&a, &keys, CIPHERTEXTS, "intact").await;
    assert_eq!(samples.len(), CIPHERTEXTS);
    let file = dir.path().join("intact.kwb");
    let report = ok_json(&backup(&a_dir, &file), "backup");
    na.terminate();

    // The file is format 2, its file key sealed under A's master key.
    let bytes = std::fs::read(&file).unwrap();
    let l = layout(&bytes);
    let mk = FileMasterKey::load_or_create(&a_key, false).unwrap();
    assert_eq!(l.header_json["master_key_id"], mk.key_id());
    assert_eq!(report["sealed_under"], mk.key_id());

    // The operator restores into a fresh data dir with a copy of the master key kept elsewhere.
    let kept = dir.path().join("vault").join("keyward-master.key");
    copy_master_key(&a_key, &kept);
    let b_dir = dir.path().join("b");
    let checked = ok_json(
        &restore(
            &b_dir,
            &file,
            &["--check", "--master-key-file", path_str(&kept)],
        ),
        "restore --check",
    );
    assert_eq!(checked["verified"], true);
    assert!(!b_dir.exists());
    let restored = ok_json(
        &restore(&b_dir, &file, &["--master-key-file", path_str(&kept)]),
        "restore",
    );
    assert_eq!(restored["authenticated"], true);
    assert_eq!(restored["format"], 2);
    assert_eq!(restored["tables"], report["tables"]);
    assert_eq!(restored["backup_id"], l.header_json["backup_id"]);

    // Served there, every one of the 1,000 ciphertexts unwraps to its plaintext.
    let mut nb = Node::spawn("b", &node_opts(&b_dir, &kept, None));
    nb.wait_health(200).await;
    assert!(
        nb.banner().is_none(),
        "a restored deployment must not bootstrap again"
    );
    let b = Api::login(&nb.base, &apikey, &inst).await;
    let bad = unwrap_all(&b, &samples).await;
    assert!(
        bad.is_empty(),
        "{} of {} failed: {:?}",
        bad.len(),
        samples.len(),
        &bad[..bad.len().min(5)]
    );
    nb.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_reveals_no_names() {
    let tag = hex(&keyward_crypto::random_bytes(4).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let a_dir = dir.path().join("a");
    std::fs::create_dir_all(&a_dir).unwrap();
    let a_key = a_dir.join("master.key");
    write_master_key(&a_key);
    let mut na = Node::spawn_with(
        "a",
        &node_opts(&a_dir, &a_key, None),
        &["--audit-sink", "database"],
    );
    na.wait_health(200).await;
    let db_args = |cmd: &[&str]| {
        let mut args = vec!["--data-dir", path_str(&a_dir), "--output", "json"];
        args.extend_from_slice(cmd);
        ok_json(&admin(&args), "admin")
    };
    let tenant = format!("tenant-acme-{tag}");
    let robot = format!("ops-robot-{tag}");
    let inst = db_args(&["instance", "create", "--name", &tenant]);
    let inst = inst["id"].as_str().unwrap().to_string();
    let created = db_args(&[
        "apikey",
        "create",
        "--instance",
        &inst,
        "--role",
        "Manager",
        "--name",
        &robot,
    ]);
    let iam_id = created["iam_id"].as_str().unwrap().to_string();
    let api = Api::login(&na.base, created["apikey"].as_str().unwrap(), &inst).await;
    let root_name = format!("payroll-root-{tag}");
    let std_name = format!("ledger-standard-{tag}");
    let alias = format!("billing-alias-{tag}");
    let ring = format!("vault-ring-{tag}");
    let root = api.root_key(&root_name).await;
    let standard = api
        .create_key(json!({"type": KEY_TYPE, "name": std_name, "extractable": true}))
        .await;
    api.call(
        Method::POST,
        &format!("/api/v2/keys/{root}/aliases/{alias}"),
        None,
    )
    .await
    .expect(201);
    let r = api
        .call(Method::POST, &format!("/api/v2/key_rings/{ring}"), None)
        .await;
    assert!(r.status == 201 || r.status == 204, "key ring: {}", r.text);
    for _ in 0..5 {
        api.wrap_ok(&root, b"audited wrap").await;
    }
    let file = dir.path().join("names.kwb");
    ok_json(&backup(&a_dir, &file), "backup");
    na.terminate();

    let needles = [
        tenant.as_str(),
        robot.as_str(),
        iam_id.as_str(),
        root_name.as_str(),
        std_name.as_str(),
        alias.as_str(),
        ring.as_str(),
        root.as_str(),
        standard.as_str(),
        inst.as_str(),
        tag.as_str(),
    ];
    let contains =
        |hay: &[u8], needle: &str| hay.windows(needle.len()).any(|w| w == needle.as_bytes());
    // They are in the database (so the test looks for something real) ...
    let mut db = std::fs::read(a_dir.join("keyward.db")).unwrap();
    db.extend(std::fs::read(a_dir.join("keyward.db-wal")).unwrap_or_default());
    for n in &needles {
        assert!(contains(&db, n), "{n} is not in the database");
    }
    // ... and in the audit table ...
    let audit = admin(&["--data-dir", path_str(&a_dir), "audit", "search"]);
    assert!(
        contains(&audit.stdout, &iam_id),
        "the audit table names the principal"
    );
    // ... and nowhere in the backup file.
    let bytes = std::fs::read(&file).unwrap();
    for n in &needles {
        assert!(!contains(&bytes, n), "{n} is readable in the backup file");
    }
    for n in [
        "instances",
        "audit_log",
        "kms.secrets.wrap",
        "SQLite format 3",
    ] {
        assert!(!contains(&bytes, n), "{n} is readable in the backup file");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_backup_restores_into_sqlite_and_postgres() {
    let Some(base) = pg_base("a_postgres_backup_restores_into_sqlite_and_postgres") else {
        eprintln!(
            "(set KEYWARD_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres to run it)"
        );
        return;
    };
    let db = Db::fresh(&base);
    let dir = tempfile::tempdir().unwrap();
    let p_dir = dir.path().join("pg-node");
    std::fs::create_dir_all(&p_dir).unwrap();
    let key = p_dir.join("master.key");
    write_master_key(&key);
    let mut np = Node::spawn("pg", &node_opts(&p_dir, &key, Some(&db.url)));
    np.wait_health(200).await;
    let (inst, apikey) = np.banner().unwrap();
    let p = Api::login(&np.base, &apikey, &inst).await;
    let k1 = p.root_key("pg-1").await;
    let k2 = p.root_key("pg-2").await;
    let keys = vec![k1.clone(), k2.clone()];
    let mut samples = wrap_many(&p, &keys, 100, "pg1").await;
    p.action(&k1, "rotate").await.expect(204);
    samples.extend(wrap_many(&p, &keys, 100, "pg2").await);
    p.call(
        Method::POST,
        "/api/v2/import_token",
        Some(&json!({"expiration": 3600, "maxAllowedRetrievals": 3})),
    )
    .await
    .expect(200);
    let token = p.call(Method::GET, "/api/v2/import_token", None).await;
    let token = token.expect(200).clone();

    // Online backup of the PostgreSQL database while the node runs and is written to.
    let file = dir.path().join("pg.kwb");
    let online = {
        let (url, file, key) = (db.url.clone(), file.clone(), key.clone());
        backup_while_writing(&p, move || {
            admin(&[
                "--database-url",
                &url,
                "--output",
                "json",
                "backup",
                "--to",
                path_str(&file),
                "--master-key-file",
                path_str(&key),
            ])
        })
        .await
    };
    let report = ok_json(&online.out.clone(), "backup of PostgreSQL");
    assert_eq!(report["source_backend"], "postgres");
    assert_eq!(report["format"], 2);
    assert_eq!(
        layout(&std::fs::read(&file).unwrap()).header_json["master_key_id"],
        report["sealed_under"]
    );
    // Without the master key there is no backup.
    let err = failed(
        admin(&[
            "--database-url",
            &db.url,
            "backup",
            "--to",
            path_str(&dir.path().join("x.kwb")),
            "--master-key-file",
            path_str(&dir.path().join("none.key")),
        ]),
        "a PostgreSQL backup without a master key",
    );
    assert!(err.contains("no master key could be loaded"), "{err}");
    assert!(!dir.path().join("x.kwb").exists());
    assert_eq!(mode_of(&file), 0o600);
    let in_snapshot = report["tables"]["keys"].as_u64().unwrap() - 2;
    assert_eq!(report["tables"]["key_versions"], 3 + in_snapshot);

    // → SQLite, served by a node with the same master key.
    let s_dir = dir.path().join("sqlite-node");
    let s_key = s_dir.join("master.key");
    copy_master_key(&key, &s_key);
    ok_json(&restore(&s_dir, &file, &[]), "restore into SQLite");
    let mut ns = Node::spawn("sqlite", &node_opts(&s_dir, &s_key, None));
    ns.wait_health(200).await;
    assert!(ns.banner().is_none());
    let s = Api::login(&ns.base, &apikey, &inst).await;
    let bad = unwrap_all(&s, &samples).await;
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(
        assert_point_in_time(&key_list(&s).await, &online) as u64,
        in_snapshot
    );
    let t = s.call(Method::GET, "/api/v2/import_token", None).await;
    let t = t.expect(200);
    assert_eq!(t["payload"], token["payload"]);
    assert_eq!(t["remainingRetrievals"], 1);
    assert_eq!(version_ids(&s, &k1).await, version_ids(&p, &k1).await);
    ns.terminate();

    // → another (empty) PostgreSQL database; a second restore into it is refused.
    let db2 = Db::fresh(&base);
    let restore_pg = || {
        admin(&[
            "--database-url",
            &db2.url,
            "--output",
            "json",
            "restore",
            "--from",
            path_str(&file),
            "--master-key-file",
            path_str(&key),
        ])
    };
    let restored = ok_json(&restore_pg(), "restore into PostgreSQL");
    assert_eq!(restored["tables"], report["tables"]);
    assert_eq!(
        db2.query("SELECT COUNT(*) FROM key_versions"),
        (3 + in_snapshot).to_string()
    );
    let err = failed(restore_pg(), "second restore into PostgreSQL");
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(
        db2.query("SELECT COUNT(*) FROM key_versions"),
        (3 + in_snapshot).to_string()
    );
    np.terminate();
}

/// Every row of the audit table of the node's database, through `keyward admin audit`.
fn audit_rows(db_args: &[&str]) -> Vec<Value> {
    let mut args = db_args.to_vec();
    args.extend_from_slice(&["audit", "search"]);
    let out = admin(&args);
    assert!(
        out.status.success(),
        "admin audit search: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A node on the restored database appends audit rows after the restored ones: two more rows
/// per wrap (its attempt and outcome), ids above every restored id (a collision would fail
/// the request with 503).
async fn appends_after_restore(
    node: &mut Node,
    apikey: &str,
    inst: &str,
    key: &str,
    before: &[Value],
    db_args: &[&str],
) {
    node.wait_health(200).await;
    let api = Api::login(&node.base, apikey, inst).await;
    for _ in 0..3 {
        api.wrap_ok(key, b"after the restore").await;
    }
    let after = audit_rows(db_args);
    assert_eq!(after.len(), before.len() + 6);
    assert_eq!(
        after[..before.len()],
        before[..],
        "the restored rows are unchanged"
    );
    let last = before.last().unwrap()["id"].as_i64().unwrap();
    for r in &after[before.len()..] {
        assert!(r["id"].as_i64().unwrap() > last, "{r}");
        assert_eq!(r["action"], "kms.secrets.wrap");
        assert_eq!(r["key_id"], key);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_table_is_backed_up_and_restored() {
    let dir = tempfile::tempdir().unwrap();
    let a_dir = dir.path().join("a");
    std::fs::create_dir_all(&a_dir).unwrap();
    let key_file = a_dir.join("master.key");
    write_master_key(&key_file);
    let audited = ["--audit-sink", "database"];
    let mut na = Node::spawn_with("a", &node_opts(&a_dir, &key_file, None), &audited);
    na.wait_health(200).await;
    let (inst, apikey) = na.banner().unwrap();
    let a = Api::login(&na.base, &apikey, &inst).await;
    let key = a.root_key("audited").await;
    for _ in 0..20 {
        a.wrap_ok(&key, b"0123456789abcdef").await;
    }
    let a_args = ["--data-dir", path_str(&a_dir)];
    let before = audit_rows(&a_args);
    assert_eq!(
        before.len(),
        42,
        "one create and twenty wraps, each an attempt and an outcome"
    );
    na.terminate();

    let file = dir.path().join("audited.kwb");
    let report = ok_json(&backup(&a_dir, &file), "backup");
    assert_eq!(report["tables"]["audit_log"], 42);

    // → SQLite.
    let b_dir = dir.path().join("b");
    let b_key = b_dir.join("master.key");
    copy_master_key(&key_file, &b_key);
    let restored = ok_json(&restore(&b_dir, &file, &[]), "restore into SQLite");
    assert_eq!(restored["tables"]["audit_log"], 42);
    let b_args = ["--data-dir", path_str(&b_dir)];
    assert_eq!(audit_rows(&b_args), before);
    let mut nb = Node::spawn_with("b", &node_opts(&b_dir, &b_key, None), &audited);
    appends_after_restore(&mut nb, &apikey, &inst, &key, &before, &b_args).await;
    nb.terminate();

    // → PostgreSQL: the copy moves the id sequence past the restored ids.
    let Some(base) = pg_base("the_audit_table_is_backed_up_and_restored (PostgreSQL part)") else {
        return;
    };
    let db = Db::fresh(&base);
    ok_json(
        &admin(&[
            "--database-url",
            &db.url,
            "--output",
            "json",
            "restore",
            "--from",
            path_str(&file),
            "--master-key-file",
            path_str(&key_file),
        ]),
        "restore into PostgreSQL",
    );
    let p_args = ["--database-url", db.url.as_str()];
    assert_eq!(audit_rows(&p_args), before);
    let p_dir = dir.path().join("p");
    let mut np = Node::spawn_with("p", &node_opts(&p_dir, &key_file, Some(&db.url)), &audited);
    appends_after_restore(&mut np, &apikey, &inst, &key, &before, &p_args).await;
    np.terminate();
}

const HSM_TOKEN: &str = "keyward-backup-hsm";

/// A fresh SoftHSM2 token in `root`; returns its configuration file and a PIN file, or `None`
/// (with a note) when SoftHSM2 is not installed.
/// A SoftHSM token for this test and its PIN file, or `None` (after saying why) without
/// SoftHSM2.
fn hsm_token(root: &Path) -> Option<(PathBuf, PathBuf)> {
    if !softhsm_present("an_hsm_deployment_backs_up_and_restores") {
        return None;
    }
    let pin = "backup-hsm-pin-1";
    let conf = softhsm_token(root, HSM_TOKEN, "backup-hsm-so-1", pin);
    let pin_file = root.join("pin");
    std::fs::write(&pin_file, format!("{pin}\n")).unwrap();
    std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    Some((conf, pin_file))
}

/// A healthy `keyward serve` on `data` with the HSM flags `hsm`; its log is `DATA.log`.
async fn hsm_node(conf: &Path, data: &Path, hsm: &[&str]) -> Node {
    let mut node = Node::spawn_appending(
        "hsm",
        &NodeOpts::sqlite(data),
        hsm,
        &[("SOFTHSM2_CONF", conf.as_os_str())],
        &data.with_extension("log"),
    );
    node.wait_health(200).await;
    node
}

/// A deployment whose master key is in an HSM: the backup's file key is sealed inside the HSM,
/// and a restore configured with the same HSM settings as the server opens it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hsm_deployment_backs_up_and_restores() {
    let dir = tempfile::tempdir().unwrap();
    let Some((conf, pin_file)) = hsm_token(dir.path()) else {
        return;
    };
    let hsm = [
        "--master-key-provider",
        "pkcs11",
        "--pkcs11-module",
        SOFTHSM_MODULE,
        "--pkcs11-token-label",
        HSM_TOKEN,
        "--pkcs11-pin-file",
        path_str(&pin_file),
    ];
    let with_hsm = |args: &[&str]| {
        let mut cmd = keyward();
        cmd.env("SOFTHSM2_CONF", &conf).arg("admin").args(args);
        cmd.output().unwrap()
    };
    let a_dir = dir.path().join("a");
    // Instances and API keys are authenticated under the HSM's master key: the admin
    // commands need the HSM too.
    let inst = ok_json(
        &with_hsm(
            &[
                &[
                    "--data-dir",
                    path_str(&a_dir),
                    "--output",
                    "json",
                    "instance",
                    "create",
                ][..],
                &hsm[..],
            ]
            .concat(),
        ),
        "instance create",
    );
    let inst = inst["id"].as_str().unwrap().to_string();
    let created = ok_json(
        &with_hsm(
            &[
                &[
                    "--data-dir",
                    path_str(&a_dir),
                    "--output",
                    "json",
                    "apikey",
                    "create",
                    "--instance",
                    &inst,
                    "--role",
                    "Manager",
                ][..],
                &hsm[..],
            ]
            .concat(),
        ),
        "apikey create",
    );
    let apikey = created["apikey"].as_str().unwrap().to_string();
    let a = hsm_node(&conf, &a_dir, &hsm).await;
    let api = Api::login(&a.base, &apikey, &inst).await;
    let keys = vec![api.root_key("hsm-1").await, api.root_key("hsm-2").await];
    let samples = wrap_many(&api, &keys, 100, "hsm").await;

    // The backup needs the HSM, as the server does.
    let file = dir.path().join("hsm.kwb");
    let mut args = vec![
        "--data-dir",
        path_str(&a_dir),
        "--output",
        "json",
        "backup",
        "--to",
        path_str(&file),
    ];
    let err = failed(with_hsm(&args), "a backup without the HSM settings");
    assert!(err.contains("no master key could be loaded"), "{err}");
    args.extend_from_slice(&hsm);
    let report = ok_json(&with_hsm(&args), "backup");
    let sealed_under = report["sealed_under"].as_str().unwrap().to_string();
    assert!(sealed_under.starts_with("pkcs11:"), "{report}");
    assert_eq!(
        layout(&std::fs::read(&file).unwrap()).header_json["master_key_id"],
        sealed_under.as_str()
    );
    drop(a);

    // Restore without the HSM: refused, naming the HSM key it needs; with it: restored.
    let b_dir = dir.path().join("b");
    let restore_args = |extra: &[&str]| {
        let mut v = vec![
            "--data-dir",
            path_str(&b_dir),
            "--output",
            "json",
            "restore",
            "--from",
            path_str(&file),
        ];
        v.extend_from_slice(extra);
        v.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let no_hsm = restore_args(&[]);
    let err = failed(
        with_hsm(&no_hsm.iter().map(String::as_str).collect::<Vec<_>>()),
        "a restore without the HSM",
    );
    assert!(err.contains(&sealed_under), "{err}");
    assert!(!b_dir.exists());
    let with = restore_args(&hsm);
    let restored = ok_json(
        &with_hsm(&with.iter().map(String::as_str).collect::<Vec<_>>()),
        "restore with the HSM settings",
    );
    assert_eq!(restored["authenticated"], true);
    assert_eq!(restored["tables"], report["tables"]);

    // A server on the restored data dir, on the same HSM key, unwraps every sample.
    let b = hsm_node(&conf, &b_dir, &hsm).await;
    let api_b = Api::login(&b.base, &apikey, &inst).await;
    let bad = unwrap_all(&api_b, &samples).await;
    assert!(bad.is_empty(), "{bad:?}");
}

//! Interrupted `admin backup`, `restore` and `migrate` (docs/backup.md, "Interrupted runs"):
//! each is killed part-way (SIGKILL, at a progress report) on a deployment of a few thousand
//! keys, and stopped with SIGTERM; nothing half-done is ever left under a final name, and
//! running the same command again gives the complete, correct result. With `--output json`,
//! stderr holds well-formed progress objects only, and no secret.

use std::process::Command;

use super::running::{assert_well_formed_progress, finished_phase, Running};
use super::*;

/// Keys in the deployment: enough rows that every phase reports part-way progress.
const KEYS: usize = 2000;

fn admin_cmd(args: &[&str], tmpdir: &Path) -> Command {
    let mut c = keyward();
    c.arg("admin")
        .args(["--output", "json", "--progress-every", "0"])
        .args(args)
        .env("TMPDIR", tmpdir);
    c
}

/// Names in `dir` that start with `prefix`.
fn leftovers(dir: &Path, prefix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// Keys of the deployment through the API, 8 clients at a time.
async fn make_keys(a: &Api, n: usize) -> Vec<String> {
    let mut set = tokio::task::JoinSet::new();
    for w in 0..8 {
        let a = a.clone();
        set.spawn(async move {
            let mut ids = Vec::new();
            for i in (w..n).step_by(8) {
                ids.push(a.root_key(&format!("bulk-{i}")).await);
            }
            ids
        });
    }
    let mut ids = Vec::new();
    while let Some(r) = set.join_next().await {
        ids.extend(r.unwrap());
    }
    ids
}

async fn key_count(a: &Api) -> u64 {
    let r = a.get("/api/v2/keys?limit=5000").await;
    r.expect(200)["resources"].as_array().unwrap().len() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn interrupted_backup_restore_and_migrate_rerun_to_complete_results() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let tmp = root.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let data = root.join("src");
    std::fs::create_dir_all(&data).unwrap();
    let key = data.join("master.key");
    write_master_key(&key);
    let o = node_opts(&data, &key, None);
    let mut node = Node::spawn_with("src", &o, &["--rate-limit-key-create", "0"]);
    node.wait_health(200).await;
    let (instance, apikey) = node.banner().unwrap();
    let a = Api::login(&node.base, &apikey, &instance).await;
    let started = Instant::now();
    let ids = make_keys(&a, KEYS).await;
    let samples = wrap_many(&a, &ids[..50], 100, "interrupt").await;
    eprintln!("{KEYS} keys made in {:?}", started.elapsed());
    node.terminate();
    let key_b64 = B64.encode(std::fs::read(&key).unwrap());
    let key_hex = hex(&std::fs::read(&key).unwrap());
    let secrets: Vec<String> = [apikey.clone(), key_b64, key_hex]
        .into_iter()
        .chain(samples.iter().map(|s| B64.encode(&s.pt)))
        .collect();
    let no_secret = |text: &str, what: &str| {
        for s in &secrets {
            assert!(!text.contains(s.as_str()), "{what} shows a secret");
        }
    };

    let file = root.join("keyward.bak");
    let backup_args = [
        "--data-dir",
        path_str(&data),
        "backup",
        "--to",
        path_str(&file),
    ];

    // SIGKILL during the snapshot: no backup file, the scratch copy stays behind.
    let mut run = Running::spawn(admin_cmd(&backup_args, &tmp));
    run.wait_midway("snapshot");
    run.signal("KILL");
    let f = run.finish();
    assert_eq!(f.killed_by(), Some(9), "{}", f.stderr_text());
    assert!(!file.exists());
    assert_eq!(leftovers(root, ".keyward-backup-").len(), 1);

    // SIGKILL while encrypting: the temporary file is there, the backup file is not.
    let mut run = Running::spawn(admin_cmd(&backup_args, &tmp));
    run.wait_midway("encrypt");
    run.signal("KILL");
    let f = run.finish();
    assert_eq!(f.killed_by(), Some(9), "{}", f.stderr_text());
    assert!(!file.exists());
    assert_eq!(
        leftovers(root, ".keyward.bak.").len(),
        1,
        "the temporary file"
    );

    // SIGTERM: the backup stops at its next page, says so, and removes its own scratch copy;
    // it removed those of the killed runs when it started.
    let mut run = Running::spawn(admin_cmd(&backup_args, &tmp));
    run.wait_midway("snapshot");
    run.signal("TERM");
    let f = run.finish();
    assert_eq!(f.status.code(), Some(1), "{}", f.stderr_text());
    let err = f.stderr_text();
    assert!(
        err.contains("interrupted by SIGTERM") && err.contains("no backup file was written"),
        "{err}"
    );
    assert!(f.stdout.is_empty(), "{}", f.stdout);
    assert!(!file.exists());
    assert!(leftovers(root, ".keyward-backup-").is_empty());
    assert!(leftovers(root, ".keyward.bak.").is_empty());

    // The same command again: a complete backup, with well-formed progress and no secret.
    let run = Running::spawn(admin_cmd(&backup_args, &tmp));
    let f = run.finish();
    assert!(f.status.success(), "{}", f.stderr_text());
    let out: Value = serde_json::from_str(&f.stdout).unwrap();
    let reports = assert_well_formed_progress(&f.stderr);
    let snap = finished_phase(&reports, "snapshot");
    assert_eq!(snap["done"], out["rows"], "{snap} {out}");
    assert_eq!(snap["total"], out["rows"], "{snap} {out}");
    assert!(
        out["tables"]["keys"].as_u64().unwrap() >= KEYS as u64,
        "{out}"
    );
    let enc = finished_phase(&reports, "encrypt");
    assert_eq!(enc["done"], enc["total"], "{enc}");
    let ver = finished_phase(&reports, "verify");
    assert_eq!(ver["done"], out["bytes"], "{ver} {out}");
    assert!(
        reports.iter().any(|p| p["phase"] == "snapshot"
            && p["finished"] == false
            && p["done"].as_u64().unwrap() > 0
            && p["eta_seconds"].is_u64()),
        "no part-way snapshot report with an ETA: {reports:?}"
    );
    no_secret(&f.stderr_text(), "backup progress");
    assert!(leftovers(root, ".keyward").is_empty());
    assert!(file.exists());
    let rows = out["rows"].as_u64().unwrap();

    // Restore: SIGKILL while copying into the target, then the same command again.
    let target = root.join("restored");
    let restore_args = [
        "--data-dir",
        path_str(&target),
        "restore",
        "--from",
        path_str(&file),
        "--master-key-file",
        path_str(&key),
    ];
    let mut run = Running::spawn(admin_cmd(&restore_args, &tmp));
    run.wait_midway("restore");
    run.signal("KILL");
    let f = run.finish();
    assert_eq!(f.killed_by(), Some(9), "{}", f.stderr_text());
    assert_eq!(leftovers(&tmp, ".keyward-restore-").len(), 1);
    let run = Running::spawn(admin_cmd(&restore_args, &tmp));
    let f = run.finish();
    assert!(f.status.success(), "{}", f.stderr_text());
    let restored: Value = serde_json::from_str(&f.stdout).unwrap();
    assert_eq!(restored["rows"], rows, "{restored}");
    let reports = assert_well_formed_progress(&f.stderr);
    for phase in ["verify", "trial", "restore"] {
        finished_phase(&reports, phase);
    }
    assert_eq!(finished_phase(&reports, "restore")["done"], rows);
    no_secret(&f.stderr_text(), "restore progress");
    assert!(leftovers(&tmp, ".keyward-restore-").is_empty());

    // SIGTERM into a new data dir: refused part-way, and the dir it created is gone again.
    let other = root.join("restored-term");
    let term_args = [
        "--data-dir",
        path_str(&other),
        "restore",
        "--from",
        path_str(&file),
        "--master-key-file",
        path_str(&key),
    ];
    let mut run = Running::spawn(admin_cmd(&term_args, &tmp));
    run.wait_midway("restore");
    run.signal("TERM");
    let f = run.finish();
    assert_eq!(f.status.code(), Some(1), "{}", f.stderr_text());
    assert!(
        f.stderr_text().contains("interrupted by SIGTERM"),
        "{}",
        f.stderr_text()
    );
    assert!(!other.exists(), "the interrupted restore left its data dir");
    assert!(leftovers(&tmp, ".keyward-restore-").is_empty());

    // Migrate into a new SQLite file: SIGKILL part-way, then again.
    let m_db = root.join("migrated.db");
    let m_url = format!("sqlite://{}?mode=rwc", m_db.display());
    let from = format!("sqlite://{}", data.join("keyward.db").display());
    let migrate_args = ["migrate", "--from", from.as_str(), "--to", m_url.as_str()];
    let mut run = Running::spawn(admin_cmd(&migrate_args, &tmp));
    run.wait_midway("copy");
    run.signal("KILL");
    assert_eq!(run.finish().killed_by(), Some(9));
    let f = Running::spawn(admin_cmd(&migrate_args, &tmp)).finish();
    assert!(f.status.success(), "{}", f.stderr_text());
    let migrated: Value = serde_json::from_str(&f.stdout).unwrap();
    assert_eq!(migrated["rows"], rows, "{migrated}");
    assert_eq!(migrated["tables"], out["tables"], "{migrated}");
    let reports = assert_well_formed_progress(&f.stderr);
    assert_eq!(finished_phase(&reports, "copy")["done"], rows);
    no_secret(&f.stderr_text(), "migrate progress");

    // And into PostgreSQL (a killed client's transaction is rolled back by the server).
    if let Some(base) = pg_base("interrupted migrate into PostgreSQL") {
        let db = Db::fresh(&base);
        let pg_args = ["migrate", "--from", from.as_str(), "--to", db.url.as_str()];
        let mut run = Running::spawn(admin_cmd(&pg_args, &tmp));
        run.wait_midway("copy");
        run.signal("KILL");
        assert_eq!(run.finish().killed_by(), Some(9));
        let f = Running::spawn(admin_cmd(&pg_args, &tmp)).finish();
        assert!(f.status.success(), "{}", f.stderr_text());
        let pg: Value = serde_json::from_str(&f.stdout).unwrap();
        assert_eq!(pg["tables"], out["tables"], "{pg}");
        assert_eq!(
            db.query("SELECT COUNT(*) FROM keys"),
            out["tables"]["keys"].to_string()
        );
    }

    // The restored and the migrated deployments serve every key and unwrap every sample.
    for (name, opts) in [
        ("restored", node_opts(&target, &key, None)),
        ("migrated", node_opts(&target, &key, Some(m_url.as_str()))),
    ] {
        let mut n = Node::spawn(name, &opts);
        n.wait_health(200).await;
        let r = a.on(&n);
        assert_eq!(key_count(&r).await, KEYS as u64, "{name}");
        let failed = unwrap_all(&r, &samples).await;
        assert!(failed.is_empty(), "{name}: {failed:?}");
        n.terminate();
    }
}

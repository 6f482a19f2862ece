//! An interrupted `admin master-key rotate` (docs/master-key.md, "Interrupted runs resume"):
//! killed (SIGKILL) and stopped (SIGTERM) part-way through the re-seal of a few thousand keys,
//! and killed while it waits for the nodes after creating a generation; each rerun resumes,
//! creates no extra generation, and ends with every row under the new key, which alone opens
//! every key. With `--output json`, stderr holds well-formed progress objects and notes only,
//! and no secret.

use std::process::Command;

use super::running::{assert_well_formed_progress, finished_phase, Running};
use super::*;

const KEYS: usize = 2000;

fn rotate_cmd(data: &Path, args: &[&str]) -> Command {
    let mut c = keyward();
    c.arg("admin")
        .arg("--data-dir")
        .arg(data)
        .args(["--output", "json", "--progress-every", "0", "master-key"])
        .arg("--master-key-file")
        .arg(data.join("master.key"))
        .arg("rotate")
        .args(args);
    c
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn interrupted_rotation_resumes_to_a_complete_result() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let key1 = data.join("master.key");
    write_master_key(&key1);
    let o = opts(&data);
    let mut node = Node::spawn_with("a", &o, &["--rate-limit-key-create", "0"]);
    node.wait_health(200).await;
    let (instance, apikey) = node.banner().unwrap();
    let a = Api::login(&node.base, &apikey, &instance).await;
    let mut set = tokio::task::JoinSet::new();
    for w in 0..8 {
        let a = a.clone();
        set.spawn(async move {
            let mut made = Vec::new();
            for i in (w..KEYS).step_by(8) {
                let id = a.root_key(&format!("bulk-{i}")).await;
                if i % 40 == 0 {
                    let pt = keyward_crypto::random_bytes(32).unwrap();
                    made.push((id.clone(), a.wrap_ok(&id, &pt).await, pt));
                }
            }
            made
        });
    }
    let mut made = Vec::new();
    while let Some(r) = set.join_next().await {
        made.extend(r.unwrap());
    }
    node.terminate();
    let before = status(&data);
    let gen1 = before["sealing"].as_str().unwrap().to_string();
    let total = rows_of(&before, &gen1);
    assert!(total > KEYS as i64, "{before}");

    // SIGKILL part-way through the re-seal: some rows under each generation.
    let mut run = Running::spawn(rotate_cmd(&data, &["--settle", "0", "--batch", "25"]));
    run.wait_midway("reseal");
    run.signal("KILL");
    let f = run.finish();
    assert_eq!(f.killed_by(), Some(9), "{}", f.stderr_text());
    let mid = status(&data);
    let gen2 = mid["sealing"].as_str().unwrap().to_string();
    assert_ne!(gen2, gen1, "{mid}");
    assert!(rows_of(&mid, &gen1) > 0, "{mid}");
    assert!(rows_of(&mid, &gen2) > 0, "{mid}");

    // SIGTERM: stops between batches, says how to go on, and the re-sealed rows stay.
    let mut run = Running::spawn(rotate_cmd(&data, &["--settle", "0", "--batch", "25"]));
    run.wait_midway("reseal");
    run.signal("TERM");
    let f = run.finish();
    assert_eq!(f.status.code(), Some(1), "{}", f.stderr_text());
    let err = f.stderr_text();
    assert!(
        err.contains("interrupted by SIGTERM") && err.contains("again to resume"),
        "{err}"
    );
    let later = status(&data);
    assert!(
        rows_of(&later, &gen2) > rows_of(&mid, &gen2),
        "{mid} {later}"
    );
    assert!(rows_of(&later, &gen1) > 0, "{later}");

    // Again: it resumes, finishes, and makes no third generation.
    let f = Running::spawn(rotate_cmd(&data, &["--settle", "0"])).finish();
    assert!(f.status.success(), "{}", f.stderr_text());
    let out: Value = serde_json::from_str(&f.stdout).unwrap();
    assert_eq!(out["complete"], true, "{out}");
    assert_eq!(out["sealing"], gen2.as_str(), "{out}");
    assert!(!data.join("master.key.3").exists());
    let reports = assert_well_formed_progress(&f.stderr);
    let reseal = finished_phase(&reports, "reseal");
    assert_eq!(reseal["done"], out["resealed"], "{reseal} {out}");
    assert_eq!(reseal["total"], out["resealed"], "{reseal} {out}");
    assert!(
        f.stderr.iter().any(|l| l.contains("\"note\":\"resuming: ")),
        "{}",
        f.stderr_text()
    );
    let after = status(&data);
    assert_eq!(after["rows_not_under_sealing_key"], 0, "{after}");
    assert_eq!(rows_of(&after, &gen2), total, "{after}");

    // Killed while it waits for the nodes to load a generation it just made: the rerun
    // switches to that generation, waiting for the nodes first as well.
    let mut run = Running::spawn(rotate_cmd(&data, &["--settle", "60"]));
    run.wait_for("the wait for the nodes", |v| {
        v["note"]
            .as_str()
            .is_some_and(|n| n.contains("for running nodes to load"))
    });
    run.signal("KILL");
    assert_eq!(run.finish().killed_by(), Some(9));
    assert!(data.join("master.key.3").exists());
    assert_eq!(status(&data)["sealing"], gen2.as_str());
    let f = Running::spawn(rotate_cmd(&data, &["--settle", "1"])).finish();
    assert!(f.status.success(), "{}", f.stderr_text());
    let out: Value = serde_json::from_str(&f.stdout).unwrap();
    let err = f.stderr_text();
    assert!(
        err.contains("switching to the already created generation 3")
            && err.contains("waiting 1s for running nodes to load the new key"),
        "{err}"
    );
    assert_eq!(out["complete"], true, "{out}");
    let gen3 = out["sealing"].as_str().unwrap().to_string();
    assert_ne!(gen3, gen2, "{out}");
    assert_eq!(status(&data)["rows_not_under_sealing_key"], 0);
    assert!(!data.join("master.key.4").exists());
    assert_well_formed_progress(&f.stderr);

    // Nothing on stderr of any run was a secret.
    let mut secrets = vec![apikey.clone()];
    for k in ["master.key", "master.key.2", "master.key.3"] {
        let b = std::fs::read(data.join(k)).unwrap();
        secrets.push(B64.encode(&b));
        secrets.push(hex(&b));
    }
    secrets.extend(made.iter().map(|(_, _, pt)| B64.encode(pt)));
    for s in &secrets {
        assert!(
            !err.contains(s.as_str()),
            "the rotation's stderr shows a secret"
        );
    }

    // Only the newest generation left: a node opens every key.
    let old = dir.path().join("old");
    std::fs::create_dir_all(&old).unwrap();
    for k in ["master.key", "master.key.2"] {
        std::fs::rename(data.join(k), old.join(k)).unwrap();
    }
    let mut node = Node::spawn("b", &o);
    node.wait_health(200).await;
    let b = a.on(&node);
    for (id, ct, pt) in &made {
        assert_eq!(&b.unwrap_ok(id, ct).await, pt);
    }
    node.terminate();
}

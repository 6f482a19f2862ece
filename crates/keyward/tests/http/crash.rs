//! Crash safety of SQLite's group commit (docs/group-commit.md) with the real binary: 16
//! clients create keys, disable them, rotate them and give them aliases at once; the server
//! gets SIGKILL at a random moment mid-load and starts again on the same data dir, several
//! times. Every acknowledged write must be there, nothing unacknowledged may be half there (a
//! key without its version row, a version or an alias without its key), and the service must
//! serve.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use sqlx::{Connection, Row};

use crate::common::*;
use crate::durability::{relogin, setup, start_with};

const WORKERS: usize = 16;
const KILLS: usize = 3;

/// What the clients saw of one key. `state`/`versions` are what the acknowledged writes left;
/// `maybe_*` what the one write that got no answer would leave, if it committed.
#[derive(Debug, Clone)]
struct KeyFacts {
    state: i64,
    maybe_state: Option<i64>,
    versions: i64,
    maybe_rotated: bool,
}

#[derive(Debug, Default, Clone)]
struct Seen {
    keys: BTreeMap<String, KeyFacts>,
    /// alias → key, acknowledged.
    aliases: BTreeMap<String, String>,
    /// alias → key, sent without an answer.
    maybe_aliases: BTreeMap<String, String>,
    /// Creations sent without an answer (the key may or may not exist).
    maybe_keys: usize,
}

/// Sends and reads the whole answer; `None` when the server went away before answering.
async fn try_send(rb: reqwest::RequestBuilder) -> Option<(u16, Value)> {
    let r = rb.send().await.ok()?;
    let status = r.status().as_u16();
    let body = r.bytes().await.ok()?;
    Some((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

fn post(c: &Client, path: &str, body: &Value) -> reqwest::RequestBuilder {
    c.req(reqwest::Method::POST, path)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body).unwrap())
}

/// One client: creates keys and gives every key one more write (by turn: disable, rotate, an
/// alias, none) until the server stops answering. Every answer it gets must be a success.
async fn worker(c: Client, w: usize, round: usize, seen: Arc<parking_lot::Mutex<Seen>>) {
    for n in 0.. {
        let name = format!("crash-{round}-{w}-{n}");
        let create = key_envelope(json!({"type": KEY_TYPE, "name": name, "extractable": false}));
        let Some((status, body)) = try_send(post(&c, "/api/v2/keys", &create)).await else {
            seen.lock().maybe_keys += 1;
            return;
        };
        assert_eq!(status, 201, "{body}");
        let id = body["resources"][0]["id"].as_str().unwrap().to_string();
        seen.lock().keys.insert(
            id.clone(),
            KeyFacts {
                state: 1,
                maybe_state: None,
                versions: 1,
                maybe_rotated: false,
            },
        );
        match n % 4 {
            0 => {
                let r = try_send(post(
                    &c,
                    &format!("/api/v2/keys/{id}/actions/disable"),
                    &json!({}),
                ))
                .await;
                let mut s = seen.lock();
                let k = s.keys.get_mut(&id).unwrap();
                match r {
                    Some((status, body)) => {
                        assert_eq!(status, 204, "{body}");
                        k.state = 2;
                    }
                    None => {
                        k.maybe_state = Some(2);
                        return;
                    }
                }
            }
            1 => {
                let r = try_send(post(
                    &c,
                    &format!("/api/v2/keys/{id}/actions/rotate"),
                    &json!({}),
                ))
                .await;
                let mut s = seen.lock();
                let k = s.keys.get_mut(&id).unwrap();
                match r {
                    Some((status, body)) => {
                        assert_eq!(status, 204, "{body}");
                        k.versions = 2;
                    }
                    None => {
                        k.maybe_rotated = true;
                        return;
                    }
                }
            }
            2 => {
                let alias = format!("alias-{round}-{w}-{n}");
                let r = try_send(post(
                    &c,
                    &format!("/api/v2/keys/{id}/aliases/{alias}"),
                    &Value::Null,
                ))
                .await;
                let mut s = seen.lock();
                match r {
                    Some((status, body)) => {
                        assert!(status == 201 || status == 200, "{status} {body}");
                        s.aliases.insert(alias, id);
                    }
                    None => {
                        s.maybe_aliases.insert(alias, id);
                        return;
                    }
                }
            }
            _ => {}
        }
    }
}

/// The database as the restart will find it: no half-written change, every acknowledged one.
async fn check_database(db: &Path, seen: &Seen) {
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    for (what, sql) in [
        (
            "keys without their current version",
            "SELECT COUNT(*) FROM keys k WHERE NOT EXISTS (SELECT 1 FROM key_versions v
               WHERE v.instance_id = k.instance_id AND v.key_id = k.id AND v.id = k.current_version)",
        ),
        (
            "versions without their key",
            "SELECT COUNT(*) FROM key_versions v WHERE NOT EXISTS (SELECT 1 FROM keys k
               WHERE k.instance_id = v.instance_id AND k.id = v.key_id)",
        ),
        (
            "aliases without their key",
            "SELECT COUNT(*) FROM key_aliases a WHERE NOT EXISTS (SELECT 1 FROM keys k
               WHERE k.instance_id = a.instance_id AND k.id = a.key_id)",
        ),
    ] {
        let n: i64 = sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap();
        assert_eq!(n, 0, "{what}");
    }
    let rows = sqlx::query(
        "SELECT k.id, k.state, (SELECT COUNT(*) FROM key_versions v WHERE v.key_id = k.id) AS n FROM keys k",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let stored: BTreeMap<String, (i64, i64)> = rows
        .iter()
        .map(|r| (r.get::<String, _>("id"), (r.get("state"), r.get("n"))))
        .collect();
    for (id, k) in &seen.keys {
        let Some(&(state, versions)) = stored.get(id) else {
            panic!("acknowledged key {id} is missing");
        };
        assert!(
            state == k.state || Some(state) == k.maybe_state,
            "key {id}: state {state}, expected {k:?}"
        );
        assert!(
            versions == k.versions || (k.maybe_rotated && versions == k.versions + 1),
            "key {id}: {versions} versions, expected {k:?}"
        );
    }
    // Keys nobody was told about: only creations that got no answer.
    let unknown = stored.len() - seen.keys.len();
    assert!(
        unknown <= seen.maybe_keys,
        "{unknown} keys beyond the acknowledged ones, {} creations unanswered",
        seen.maybe_keys
    );
    let aliases: BTreeMap<String, String> = sqlx::query("SELECT alias, key_id FROM key_aliases")
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get("alias"), r.get("key_id")))
        .collect();
    for (alias, key) in &seen.aliases {
        assert_eq!(aliases.get(alias), Some(key), "acknowledged alias {alias}");
    }
    for (alias, key) in &aliases {
        assert!(
            seen.aliases.get(alias) == Some(key) || seen.maybe_aliases.get(alias) == Some(key),
            "alias {alias} → {key} was never sent"
        );
    }
    conn.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_load_loses_no_acknowledged_write_and_leaves_nothing_half_written() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut p = start_with(&data, &["--rate-limit-key-create=0"]).await;
    let mut c = setup(&p, &data).await;
    let seen = Arc::new(parking_lot::Mutex::new(Seen::default()));
    for round in 0..KILLS {
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| tokio::spawn(worker(c.clone(), w, round, seen.clone())))
            .collect();
        // A random moment mid-load: 300 ms to 1.3 s in.
        let r = random(2);
        let ms = 300 + u64::from(u16::from_le_bytes([r[0], r[1]])) % 1000;
        tokio::time::sleep(Duration::from_millis(ms)).await;
        p.kill();
        for w in workers {
            w.await.unwrap();
        }
        let snapshot = seen.lock().clone();
        assert!(
            !snapshot.keys.is_empty(),
            "no write was acknowledged before the kill"
        );
        check_database(&data.join("keyward.db"), &snapshot).await;
        p.restart();
        p.wait_health(200).await;
        c = relogin(&c, &p).await;
        // Serves: the acknowledged keys and aliases through the API, and new writes.
        let Seen { keys, aliases, .. } = snapshot;
        for (alias, key) in aliases.iter().rev().take(20) {
            let m = c
                .get(&format!("/api/v2/keys/{alias}/metadata"))
                .await
                .resource(200);
            assert_eq!(m["id"], key.as_str());
        }
        for (id, _) in keys.iter().rev().take(20) {
            c.get(&format!("/api/v2/keys/{id}/metadata"))
                .await
                .resource(200);
        }
        let k = c.create_root_key().await;
        c.wrap_bytes(&id_of(&k), &random(32), None).await;
        seen.lock().keys.insert(
            id_of(&k),
            KeyFacts {
                state: 1,
                maybe_state: None,
                versions: 1,
                maybe_rotated: false,
            },
        );
    }
    let s = seen.lock();
    eprintln!(
        "crash test: {} keys and {} aliases acknowledged over {KILLS} kills",
        s.keys.len(),
        s.aliases.len()
    );
}

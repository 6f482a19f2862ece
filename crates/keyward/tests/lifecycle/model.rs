//! The model-based property test: random sequences of create (generated root,
//! plain-imported root, standard), rotate, wrap, unwrap, rewrap, disable, enable, delete,
//! restore, purge, clock advances and scheduler passes, run through the HTTP API of an
//! in-process server and checked step by step against a small model of states, versions,
//! wrapped ciphertexts and the time rules (30 s, 1 h, 4 h, 30 days, 90 days, expiration).
//!
//! Driven over HTTP (not `KeyService` directly): a step costs a few milliseconds, so the
//! default 64 cases × 40 steps stay well inside the time budget and the test covers the
//! routes, the error envelope and the status codes as well. `PROPTEST_CASES` overrides the
//! number of cases.
//!
//! One server serves every case (each case gets a fresh instance). Scheduler passes act on
//! the whole server, so each case begins by moving the clock 91 days and purging whatever
//! deleted keys earlier cases left behind; the model can then predict the pass's counts
//! exactly. The model's rules are those of spec §6 as Keyward decides them (boundaries
//! inclusive: enable/restore at exactly 30 s, purge at exactly 4 h, restore at exactly 30
//! days are allowed; auto-purge strictly after 90 days; expiry at `expirationDate`).

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use keyward_domain::Role;
use proptest::prelude::*;
use serde_json::json;

use crate::common::*;

/// Clock moves the model draws from (boundaries of every time rule and their neighbours).
const ADVANCES: [i64; 14] = [
    1,
    29,
    30,
    31,
    600,
    HOUR - 1,
    HOUR,
    4 * HOUR - 1,
    4 * HOUR,
    DAY,
    7 * DAY,
    30 * DAY,
    60 * DAY,
    91 * DAY,
];

/// `expirationDate` offsets from creation.
const EXPIRIES: [i64; 3] = [31, HOUR, 40 * DAY];

#[derive(Debug, Clone)]
enum Op {
    CreateRoot { exp: Option<usize> },
    ImportRoot { len: usize, exp: Option<usize> },
    CreateStandard,
    Rotate { k: usize, payload: bool },
    Wrap { k: usize, generate: bool },
    Unwrap { k: usize, c: usize },
    Rewrap { k: usize, c: usize },
    Disable { k: usize },
    Enable { k: usize },
    Delete { k: usize },
    Restore { k: usize },
    Purge { k: usize },
    Advance { secs: i64 },
    Scheduler,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let k = || 0usize..8;
    let exp = || proptest::option::weighted(0.3, 0usize..EXPIRIES.len());
    prop_oneof![
        3 => exp().prop_map(|exp| Op::CreateRoot { exp }),
        2 => (prop_oneof![Just(16usize), Just(24), Just(32)], exp())
            .prop_map(|(len, exp)| Op::ImportRoot { len, exp }),
        1 => Just(Op::CreateStandard),
        3 => (k(), proptest::bool::weighted(0.8)).prop_map(|(k, payload)| Op::Rotate { k, payload }),
        4 => (k(), any::<bool>()).prop_map(|(k, generate)| Op::Wrap { k, generate }),
        4 => (k(), 0usize..64).prop_map(|(k, c)| Op::Unwrap { k, c }),
        1 => (k(), 0usize..64).prop_map(|(k, c)| Op::Rewrap { k, c }),
        2 => k().prop_map(|k| Op::Disable { k }),
        3 => k().prop_map(|k| Op::Enable { k }),
        2 => k().prop_map(|k| Op::Delete { k }),
        3 => k().prop_map(|k| Op::Restore { k }),
        2 => k().prop_map(|k| Op::Purge { k }),
        6 => proptest::sample::select(ADVANCES.to_vec()).prop_map(|secs| Op::Advance { secs }),
        1 => Just(Op::Scheduler),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Generated,
    Imported,
    Standard,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Active,
    Suspended,
    Destroyed,
    Purged,
}

#[derive(Debug, Clone)]
struct MKey {
    id: String,
    kind: Kind,
    st: St,
    exp: Option<i64>,
    /// Version ids, oldest first (learned from the server when created, checked after).
    versions: Vec<String>,
    last_rotate: Option<i64>,
    /// Time of the last disable / enable / delete / restore (the 30 s rules).
    changed_at: i64,
    deleted_at: Option<i64>,
}

impl MKey {
    /// The state code the API must show at `now` (expiry turns Active into Deactivated).
    fn code(&self, now: i64) -> i64 {
        match self.st {
            St::Active if self.exp.is_some_and(|e| e <= now) => 3,
            St::Active => 1,
            St::Suspended => 2,
            St::Destroyed | St::Purged => 5,
        }
    }
}

#[derive(Debug, Clone)]
struct Ct {
    owner: usize,
    ct: String,
    pt: Vec<u8>,
    version: usize,
}

#[derive(Debug, Default)]
struct Model {
    keys: Vec<MKey>,
    cts: Vec<Ct>,
}

/// What a request must answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exp {
    Ok(u16),
    Err(u16, &'static str),
}

const NOT_FOUND: Exp = Exp::Err(404, "KEY_NOT_FOUND_ERR");
const ROOT_REQ: Exp = Exp::Err(400, "KEY_ROOT_REQ_ERR");
const BAD_STATE: Exp = Exp::Err(409, "KEY_ACTION_INVALID_STATE_ERR");
const TOO_EARLY: Exp = Exp::Err(409, "REQ_TOO_EARLY_ERR");

/// (operation, expected outcome) → how often the property test met it (printed with
/// `--nocapture`, to see that the random walks reach every rule).
static SEEN: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());

fn check(resp: &Resp, want: Exp, ctx: &str) {
    if ctx.starts_with("step ") {
        let op = ctx.split_whitespace().nth(2).unwrap_or("?");
        *SEEN
            .lock()
            .unwrap()
            .entry(format!("{op} -> {want:?}"))
            .or_default() += 1;
    }
    match want {
        Exp::Ok(status) => assert_eq!(
            resp.status,
            status,
            "{ctx}: expected {status}, got {}: {}",
            resp.status,
            resp.text()
        ),
        Exp::Err(status, code) => {
            assert_eq!(
                (resp.status, reason(resp).as_deref()),
                (status, Some(code)),
                "{ctx}: expected {status} {code}, got {}: {}",
                resp.status,
                resp.text()
            );
            assert_error(resp, status, code);
        }
    }
}

/// The property test's server (only that test may move its clock).
fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(TestServer::start)
}

/// Checks the API's view of key `i` against the model.
async fn verify_key(c: &Client, m: &Model, i: usize, now: i64, ctx: &str) {
    let k = &m.keys[i];
    let r = c.metadata(&k.id).await;
    if k.st == St::Purged {
        check(&r, NOT_FOUND, &format!("{ctx}: metadata of purged key {i}"));
        return;
    }
    let v = r.resource(200);
    let ctx = format!("{ctx}: key {i} {v}");
    assert_eq!(v["state"], k.code(now), "{ctx}: state");
    assert_eq!(v["deleted"], k.st == St::Destroyed, "{ctx}: deleted");
    assert_eq!(
        v["keyVersion"]["id"].as_str(),
        k.versions.last().map(String::as_str),
        "{ctx}: keyVersion"
    );
    assert_eq!(
        v["extractable"],
        k.kind == Kind::Standard,
        "{ctx}: extractable"
    );
    assert_eq!(v["imported"], k.kind == Kind::Imported, "{ctx}: imported");
    assert_eq!(
        v["lastRotateDate"].as_str().map(str::to_string),
        k.last_rotate.map(time_str),
        "{ctx}: lastRotateDate"
    );
    assert_eq!(
        v["deletionDate"].as_str().map(str::to_string),
        k.deleted_at.map(time_str),
        "{ctx}: deletionDate"
    );
    assert_eq!(
        v["expirationDate"].as_str().map(str::to_string),
        k.exp.map(time_str),
        "{ctx}: expirationDate"
    );
}

/// Runs one step; returns the keys whose view must be re-checked (None: all of them).
async fn step(s: &TestServer, c: &Client, m: &mut Model, n: usize, op: &Op) -> Option<Vec<usize>> {
    let now = s.now();
    let ctx = format!("step {n} {op:?}");
    let pick = |k: usize| (!m.keys.is_empty()).then(|| k % m.keys.len());
    match *op {
        Op::CreateRoot { exp } | Op::ImportRoot { exp, .. } => {
            let exp = exp.map(|e| now + EXPIRIES[e]);
            let mut res = json!({"type": KEY_TYPE, "name": "model-root", "extractable": false});
            if let Op::ImportRoot { len, .. } = op {
                res["payload"] = json!(b64(&random(*len)));
            }
            if let Some(e) = exp {
                res["expirationDate"] = json!(time_str(e));
            }
            let v = c.create(res).await.resource(201);
            let imported = matches!(op, Op::ImportRoot { .. });
            assert_eq!(v["state"], 1, "{ctx}: {v}");
            assert_eq!(v["imported"], imported, "{ctx}: {v}");
            if let Op::ImportRoot { len, .. } = op {
                assert_eq!(v["algorithmBitSize"], *len as i64 * 8, "{ctx}: {v}");
            }
            m.keys.push(MKey {
                id: id_of(&v),
                kind: if imported {
                    Kind::Imported
                } else {
                    Kind::Generated
                },
                st: St::Active,
                exp,
                versions: vec![v["keyVersion"]["id"].as_str().unwrap().to_string()],
                last_rotate: None,
                changed_at: now,
                deleted_at: None,
            });
            Some(vec![m.keys.len() - 1])
        }
        Op::CreateStandard => {
            let v = c.create_standard("model-std").await;
            assert_eq!(
                unb64(v["payload"].as_str().unwrap()).len(),
                32,
                "{ctx}: {v}"
            );
            m.keys.push(MKey {
                id: id_of(&v),
                kind: Kind::Standard,
                st: St::Active,
                exp: None,
                versions: vec![v["keyVersion"]["id"].as_str().unwrap().to_string()],
                last_rotate: None,
                changed_at: now,
                deleted_at: None,
            });
            Some(vec![m.keys.len() - 1])
        }
        Op::Rotate { k, payload } => {
            let i = pick(k)?;
            let key = &m.keys[i];
            let body = if key.kind == Kind::Imported && payload {
                json!({"payload": b64(&random(32))})
            } else {
                json!({})
            };
            let code = key.code(now);
            let want = if key.st == St::Purged {
                NOT_FOUND
            } else if key.kind == Kind::Standard {
                ROOT_REQ
            } else if !matches!(code, 1 | 3) {
                BAD_STATE
            } else if key.kind == Kind::Imported && !payload {
                Exp::Err(400, "KEY_PAYLOAD_REQ_ERR")
            } else if key.last_rotate.is_some_and(|t| now - t < HOUR) {
                Exp::Err(409, "KEY_ROTATION_NOT_PERMITTED")
            } else {
                Exp::Ok(204)
            };
            let r = c.rotate(&key.id, &body).await;
            check(&r, want, &ctx);
            if want == Exp::Ok(204) {
                let (ids, total) = c.versions(&key.id).await;
                let key = &mut m.keys[i];
                assert_eq!(
                    total as usize,
                    key.versions.len() + 1,
                    "{ctx}: totalCount {ids:?}"
                );
                let mut older: Vec<String> = ids[1..].to_vec();
                older.reverse();
                assert_eq!(older, key.versions, "{ctx}: versions newest first");
                assert!(
                    !key.versions.contains(&ids[0]),
                    "{ctx}: new version id reused"
                );
                key.versions.push(ids[0].clone());
                key.last_rotate = Some(now);
            }
            Some(vec![i])
        }
        Op::Wrap { k, generate } => {
            let i = pick(k)?;
            let key = &m.keys[i];
            let pt = random(32);
            let body = if generate {
                json!({})
            } else {
                json!({"plaintext": b64(&pt)})
            };
            let want = if key.st == St::Purged {
                NOT_FOUND
            } else if key.kind == Kind::Standard {
                ROOT_REQ
            } else if key.code(now) != 1 {
                BAD_STATE
            } else {
                Exp::Ok(200)
            };
            let r = c.action(&key.id, "wrap", &body).await;
            check(&r, want, &ctx);
            if want == Exp::Ok(200) {
                let v = r.json();
                assert_eq!(
                    v["keyVersion"]["id"].as_str(),
                    key.versions.last().map(String::as_str),
                    "{ctx}: {v}"
                );
                let ct = v["ciphertext"].as_str().unwrap().to_string();
                assert_eq!(
                    Some(&handle_of(&ct)),
                    key.versions.last(),
                    "{ctx}: blob handle"
                );
                let pt = if generate {
                    let p = unb64(v["plaintext"].as_str().unwrap());
                    assert_eq!(p.len(), 32, "{ctx}: generated DEK");
                    p
                } else {
                    assert!(v.get("plaintext").is_none(), "{ctx}: {v}");
                    pt
                };
                let version = key.versions.len() - 1;
                m.cts.push(Ct {
                    owner: i,
                    ct,
                    pt,
                    version,
                });
            }
            Some(vec![i])
        }
        Op::Unwrap { k, c: ci } | Op::Rewrap { k, c: ci } => {
            let i = pick(k)?;
            if m.cts.is_empty() {
                return Some(vec![]);
            }
            let ct = m.cts[ci % m.cts.len()].clone();
            let key = &m.keys[i];
            let unwrap = matches!(op, Op::Unwrap { .. });
            let want = if key.st == St::Purged {
                NOT_FOUND
            } else if key.kind == Kind::Standard {
                ROOT_REQ
            } else if !matches!(key.code(now), 1 | 3) {
                BAD_STATE
            } else if ct.owner != i {
                Exp::Err(422, "UNPROCESSABLE_CIPHERTEXT_ERR")
            } else {
                Exp::Ok(200)
            };
            let action = if unwrap { "unwrap" } else { "rewrap" };
            let r = c
                .action(&key.id, action, &json!({"ciphertext": ct.ct}))
                .await;
            check(&r, want, &ctx);
            if want == Exp::Ok(200) {
                let v = r.json();
                let latest = key.versions.len() - 1;
                assert_eq!(
                    v["keyVersion"]["id"].as_str(),
                    Some(key.versions[ct.version].as_str()),
                    "{ctx}: {v}"
                );
                if unwrap {
                    assert_eq!(
                        unb64(v["plaintext"].as_str().unwrap()),
                        ct.pt,
                        "{ctx}: plaintext"
                    );
                }
                let rewrapped = !unwrap || ct.version != latest;
                if rewrapped {
                    assert_eq!(
                        v["rewrappedKeyVersion"]["id"].as_str(),
                        Some(key.versions[latest].as_str()),
                        "{ctx}: {v}"
                    );
                    let new_ct = v["ciphertext"].as_str().unwrap().to_string();
                    assert_eq!(
                        handle_of(&new_ct),
                        key.versions[latest],
                        "{ctx}: rewrapped blob handle"
                    );
                    m.cts.push(Ct {
                        owner: i,
                        ct: new_ct,
                        pt: ct.pt.clone(),
                        version: latest,
                    });
                } else {
                    assert!(
                        v.get("ciphertext").is_none() && v.get("rewrappedKeyVersion").is_none(),
                        "{ctx}: {v}"
                    );
                }
            }
            Some(vec![i])
        }
        Op::Disable { k } | Op::Enable { k } => {
            let i = pick(k)?;
            let key = &m.keys[i];
            let disable = matches!(op, Op::Disable { .. });
            let want = if key.st == St::Purged {
                NOT_FOUND
            } else if key.kind == Kind::Standard {
                ROOT_REQ
            } else if disable {
                if key.code(now) != 1 {
                    BAD_STATE
                } else {
                    Exp::Ok(204)
                }
            } else if key.st != St::Suspended {
                BAD_STATE
            } else if now - key.changed_at < 30 {
                TOO_EARLY
            } else {
                Exp::Ok(204)
            };
            let r = c
                .act(&key.id, if disable { "disable" } else { "enable" })
                .await;
            check(&r, want, &ctx);
            if want == Exp::Ok(204) {
                let key = &mut m.keys[i];
                key.st = if disable { St::Suspended } else { St::Active };
                key.changed_at = now;
            }
            Some(vec![i])
        }
        Op::Delete { k } => {
            let i = pick(k)?;
            let key = &m.keys[i];
            let want = match key.st {
                St::Purged => NOT_FOUND,
                St::Destroyed => Exp::Err(410, "KEY_DELETED_ERR"),
                _ => Exp::Ok(204),
            };
            let r = c.delete_key(&key.id).await;
            check(&r, want, &ctx);
            if want == Exp::Ok(204) {
                assert!(r.body.is_empty(), "{ctx}: 204 with a body");
                let key = &mut m.keys[i];
                key.st = St::Destroyed;
                key.deleted_at = Some(now);
                key.changed_at = now;
            }
            Some(vec![i])
        }
        Op::Restore { k } => {
            let i = pick(k)?;
            let key = &m.keys[i];
            let want = if key.st == St::Purged {
                NOT_FOUND
            } else if key.st != St::Destroyed {
                BAD_STATE
            } else if key.deleted_at.is_some_and(|d| now - d > 30 * DAY) {
                Exp::Err(400, "KEY_RESTORE_EXPIRED")
            } else if key.exp.is_some_and(|e| e <= now) {
                Exp::Err(400, "KEY_EXPIRED_ERR")
            } else if now - key.changed_at < 30 {
                TOO_EARLY
            } else {
                Exp::Ok(201)
            };
            let r = c.restore(&key.id).await;
            check(&r, want, &ctx);
            if want == Exp::Ok(201) {
                let v = r.resource(201);
                assert_eq!(v["state"], 1, "{ctx}: {v}");
                assert_eq!(v["deleted"], false, "{ctx}: {v}");
                let key = &mut m.keys[i];
                key.st = St::Active;
                key.deleted_at = None;
                key.changed_at = now;
            }
            Some(vec![i])
        }
        Op::Purge { k } => {
            let i = pick(k)?;
            let key = &m.keys[i];
            let want = if key.st == St::Purged {
                NOT_FOUND
            } else if key.st != St::Destroyed {
                BAD_STATE
            } else if key.deleted_at.is_some_and(|d| now - d < 4 * HOUR) {
                TOO_EARLY
            } else {
                Exp::Ok(200)
            };
            let r = c.purge(&key.id).await;
            check(&r, want, &ctx);
            if want == Exp::Ok(200) {
                let v = r.resource(200);
                assert_eq!(v["id"], key.id.as_str(), "{ctx}: {v}");
                assert_eq!(v["state"], 5, "{ctx}: {v}");
                m.keys[i].st = St::Purged;
            }
            Some(vec![i])
        }
        Op::Advance { secs } => {
            s.advance(secs);
            None
        }
        Op::Scheduler => {
            let due: Vec<usize> = (0..m.keys.len())
                .filter(|&i| {
                    let k = &m.keys[i];
                    k.st == St::Destroyed && k.deleted_at.is_some_and(|d| d < now - 90 * DAY)
                })
                .collect();
            let (rotated, purged) = s.scheduler().await;
            assert_eq!(
                (rotated, purged),
                (0, due.len()),
                "{ctx}: scheduler pass (rotated, purged)"
            );
            for i in due {
                m.keys[i].st = St::Purged;
            }
            None
        }
    }
}

/// Listing agrees with the model: the default list (everything but state 5), `state=5`, and
/// `HEAD` counts.
async fn verify_listing(c: &Client, m: &Model) {
    let mut live: Vec<String> = m
        .keys
        .iter()
        .filter(|k| matches!(k.st, St::Active | St::Suspended))
        .map(|k| k.id.clone())
        .collect();
    let mut dead: Vec<String> = m
        .keys
        .iter()
        .filter(|k| k.st == St::Destroyed)
        .map(|k| k.id.clone())
        .collect();
    live.sort();
    dead.sort();
    let mut got = c.list_ids("?limit=5000").await;
    got.sort();
    assert_eq!(got, live, "GET /keys (default states)");
    assert_eq!(c.key_total("").await, live.len() as i64, "HEAD /keys");
    let mut got = c.list_ids("?state=5&limit=5000").await;
    got.sort();
    assert_eq!(got, dead, "GET /keys?state=5");
    assert_eq!(
        c.key_total("?state=5").await,
        dead.len() as i64,
        "HEAD /keys?state=5"
    );
}

async fn run_case(s: &TestServer, ops: Vec<Op>) {
    // Purge whatever deleted keys earlier cases left, so scheduler counts are predictable.
    s.advance(91 * DAY + 1);
    while s.scheduler().await.1 > 0 {}
    let inst = s.create_instance().await;
    let (apikey, iam) = s.create_api_key(inst, Role::Manager).await;
    s.grant(inst, &iam, Role::KeyPurge).await;
    let c = Client::login(&s.base, s.clock.clone(), inst, &apikey, &iam).await;
    let mut m = Model::default();
    for (n, op) in ops.iter().enumerate() {
        let touched = step(s, &c, &mut m, n, op).await;
        let now = s.now();
        let ctx = format!("after step {n} {op:?}");
        match touched {
            Some(list) => {
                for i in list {
                    verify_key(&c, &m, i, now, &ctx).await;
                }
            }
            None => {
                for i in 0..m.keys.len() {
                    verify_key(&c, &m, i, now, &ctx).await;
                }
            }
        }
    }
    verify_listing(&c, &m).await;
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

#[test]
fn lifecycle_matches_model() {
    let config = ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        max_shrink_iters: 300,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let result = runner.run(&proptest::collection::vec(op_strategy(), 40), |ops| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(run_case(server(), ops));
        Ok(())
    });
    let seen = SEEN.lock().unwrap().clone();
    eprintln!("model outcomes seen:");
    for (k, n) in &seen {
        eprintln!("  {n:6}  {k}");
    }
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// A fixed walk through every rule once, so a regression shows up without luck.
#[test]
fn lifecycle_fixed_walk() {
    use Op::*;
    let ops = vec![
        CreateRoot { exp: None },
        ImportRoot { len: 16, exp: None },
        CreateStandard,
        Wrap {
            k: 0,
            generate: false,
        },
        Rotate {
            k: 0,
            payload: false,
        },
        Rotate {
            k: 0,
            payload: false,
        },
        Advance { secs: HOUR - 1 },
        Rotate {
            k: 0,
            payload: false,
        },
        Advance { secs: 1 },
        Rotate {
            k: 0,
            payload: false,
        },
        Unwrap { k: 0, c: 0 },
        Rewrap { k: 0, c: 0 },
        Rotate {
            k: 1,
            payload: false,
        },
        Rotate {
            k: 1,
            payload: true,
        },
        Wrap {
            k: 2,
            generate: true,
        },
        Disable { k: 2 },
        Disable { k: 0 },
        Wrap {
            k: 0,
            generate: true,
        },
        Unwrap { k: 0, c: 0 },
        Enable { k: 0 },
        Advance { secs: 29 },
        Enable { k: 0 },
        Advance { secs: 1 },
        Enable { k: 0 },
        Enable { k: 0 },
        Delete { k: 1 },
        Delete { k: 1 },
        Restore { k: 1 },
        Purge { k: 1 },
        Advance { secs: 30 },
        Restore { k: 1 },
        Delete { k: 1 },
        Advance { secs: 4 * HOUR - 1 },
        Purge { k: 1 },
        Advance { secs: 1 },
        Purge { k: 1 },
        Purge { k: 1 },
        Unwrap { k: 1, c: 0 },
        CreateRoot { exp: Some(0) },
        Advance { secs: 31 },
        Wrap {
            k: 3,
            generate: true,
        },
        Rotate {
            k: 3,
            payload: false,
        },
        Disable { k: 3 },
        Delete { k: 3 },
        Advance { secs: 30 },
        Restore { k: 3 },
        Delete { k: 0 },
        Advance { secs: 30 * DAY },
        Restore { k: 0 },
        Delete { k: 0 },
        Advance { secs: 30 * DAY + 1 },
        Restore { k: 0 },
        Advance { secs: 60 * DAY - 1 },
        Scheduler,
        Advance { secs: 1 },
        Scheduler,
    ];
    // Its own server: the shared one's clock is being moved by the property test.
    let s = TestServer::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run_case(&s, ops));
}

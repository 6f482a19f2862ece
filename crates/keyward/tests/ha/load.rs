//! A mixed load on several Keyward nodes (key creation, wrap, unwrap, rotation, import-token
//! creation and retrieval) that records every acknowledged result, every refusal and every
//! failure with its time, then checks that nothing acknowledged was lost.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use parking_lot::Mutex;
use reqwest::Method;
use serde_json::{json, Value};

use keyward_testsupport::*;

/// How long a client waits for one answer; a request still unanswered then is a failure.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);

/// What one request came to.
#[derive(Debug)]
pub enum Outcome {
    /// A 2xx answer.
    Ok(Resp),
    /// A 4xx the load expects at times (an exhausted or missing import token, a rotation refused
    /// after an earlier attempt whose answer was lost).
    Expected,
    /// 503: the node could not reach a writable primary and said so.
    Refused,
    /// Anything else: a 500, another 5xx, an unexpected 4xx, a timeout, a dropped connection.
    Failed(String),
}

/// One request's record.
#[derive(Debug, Clone, Copy)]
pub struct Event {
    pub node: usize,
    pub start: Instant,
    pub end: Instant,
    /// 0 success (or an expected 4xx), 1 refused (503), 2 failed.
    pub kind: u8,
}

/// Everything the load saw.
#[derive(Default)]
pub struct Ledger {
    /// Acknowledged key creations.
    pub keys: BTreeSet<String>,
    /// Acknowledged wraps: (key, plaintext, ciphertext).
    pub wraps: Vec<(String, Vec<u8>, String)>,
    /// Keys whose rotation was acknowledged (204).
    pub rotated: BTreeSet<String>,
    /// Keys whose rotation was sent but not acknowledged (503 or no answer).
    pub rotation_unknown: BTreeSet<String>,
    /// Acknowledged import-token retrievals per token (payload): (count, maxAllowedRetrievals).
    pub retrievals: BTreeMap<String, (u64, u64)>,
    pub failures: Vec<String>,
    pub events: Vec<Event>,
}

/// A client with the load's deadline, for the caller `api` on `base`.
pub fn client_for(api: &Api, base: &str) -> Api {
    Api {
        http: reqwest::Client::builder()
            .no_proxy()
            .timeout(CLIENT_TIMEOUT)
            .build()
            .unwrap(),
        base: base.to_string(),
        ..api.clone()
    }
}

/// Sends one request and classifies its answer; `expected` lists the (status, code) pairs that
/// count as an expected refusal.
pub async fn send(
    api: &Api,
    method: Method,
    path: &str,
    body: Option<&Value>,
    expected: &[(u16, &str)],
) -> Outcome {
    match api.try_call(method.clone(), path, body).await {
        Err(e) if e.is_timeout() => Outcome::Failed(format!(
            "{method} {path}: no answer within {CLIENT_TIMEOUT:?}"
        )),
        Err(e) => Outcome::Failed(format!("{method} {path}: {e}")),
        Ok(r) if (200..300).contains(&r.status) => Outcome::Ok(r),
        Ok(r) if r.status == 503 => Outcome::Refused,
        Ok(r) => {
            let code = r.body["resources"][0]["reasons"][0]["code"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if expected.iter().any(|(s, c)| *s == r.status && *c == code) {
                Outcome::Expected
            } else {
                Outcome::Failed(format!("{method} {path}: {} {}", r.status, r.text))
            }
        }
    }
}

/// The load: `apis[n]` talks to node n; it runs until `stop` is set.
pub struct Load {
    pub ledger: Arc<Mutex<Ledger>>,
    pub stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// `per_node` key/wrap/rotation workers per node, and one import-token worker per node
    /// (the one on node 0 creates the tokens).
    pub fn start(apis: &[Api], per_node: usize) -> Load {
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for (node, api) in apis.iter().enumerate() {
            for w in 0..per_node {
                let (api, ledger, stop) = (api.clone(), ledger.clone(), stop.clone());
                tasks.push(tokio::spawn(async move {
                    key_worker(node, w, api, ledger, stop).await
                }));
            }
            let (api, ledger, stop) = (api.clone(), ledger.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                token_worker(node, node == 0, api, ledger, stop).await
            }));
        }
        Load {
            ledger,
            stop,
            tasks,
        }
    }

    /// Stops the workers and waits for them (each finishes its request in flight).
    pub async fn finish(self) -> Ledger {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.unwrap();
        }
        Arc::try_unwrap(self.ledger)
            .ok()
            .expect("every worker has ended")
            .into_inner()
    }
}

fn record(ledger: &Mutex<Ledger>, node: usize, start: Instant, o: &Outcome) {
    let kind = match o {
        Outcome::Ok(_) | Outcome::Expected => 0,
        Outcome::Refused => 1,
        Outcome::Failed(_) => 2,
    };
    let mut l = ledger.lock();
    l.events.push(Event {
        node,
        start,
        end: Instant::now(),
        kind,
    });
    if let Outcome::Failed(f) = o {
        l.failures.push(format!("node {node}: {f}"));
    }
}

async fn key_worker(
    node: usize,
    w: usize,
    api: Api,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
) {
    // Keys this worker created (acknowledged) and has not rotated yet, and all of its keys.
    let mut fresh: Vec<String> = Vec::new();
    let mut mine: Vec<String> = Vec::new();
    let mut wrapped: Vec<(String, Vec<u8>, String)> = Vec::new();
    let mut i = 0u64;
    while !stop.load(Ordering::SeqCst) {
        i += 1;
        let start = Instant::now();
        if mine.len() < 2 || i % 8 == 0 {
            let body = key_envelope(json!({
                "type": KEY_TYPE, "name": format!("ha-{node}-{w}-{i}"), "extractable": false,
            }));
            let o = send(&api, Method::POST, "/api/v2/keys", Some(&body), &[]).await;
            record(&ledger, node, start, &o);
            if let Outcome::Ok(r) = o {
                let id = r.body["resources"][0]["id"].as_str().unwrap().to_string();
                ledger.lock().keys.insert(id.clone());
                fresh.push(id.clone());
                mine.push(id);
            }
        } else if i % 8 == 3 && !fresh.is_empty() {
            let id = fresh.remove(0);
            let path = format!("/api/v2/keys/{id}/actions/rotate");
            let o = send(&api, Method::POST, &path, None, &[]).await;
            record(&ledger, node, start, &o);
            let mut l = ledger.lock();
            match o {
                Outcome::Ok(_) => {
                    l.rotated.insert(id);
                }
                _ => {
                    l.rotation_unknown.insert(id);
                }
            }
        } else if i % 2 == 0 || wrapped.is_empty() {
            let id = mine[(i as usize / 2) % mine.len()].clone();
            let pt = random(32);
            let path = format!("/api/v2/keys/{id}/actions/wrap");
            let body = json!({"plaintext": B64.encode(&pt)});
            let o = send(&api, Method::POST, &path, Some(&body), &[]).await;
            record(&ledger, node, start, &o);
            if let Outcome::Ok(r) = o {
                let ct = r.body["ciphertext"].as_str().unwrap().to_string();
                ledger
                    .lock()
                    .wraps
                    .push((id.clone(), pt.clone(), ct.clone()));
                wrapped.push((id, pt, ct));
            }
        } else {
            let (id, pt, ct) = wrapped[(i as usize / 2) % wrapped.len()].clone();
            let path = format!("/api/v2/keys/{id}/actions/unwrap");
            let o = send(
                &api,
                Method::POST,
                &path,
                Some(&json!({"ciphertext": ct})),
                &[],
            )
            .await;
            let o = match o {
                Outcome::Ok(r) if r.body["plaintext"].as_str() != Some(&B64.encode(&pt)) => {
                    Outcome::Failed(format!("unwrap of {id} gave another plaintext"))
                }
                o => o,
            };
            record(&ledger, node, start, &o);
        }
    }
}

async fn token_worker(
    node: usize,
    creator: bool,
    api: Api,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
) {
    const EXHAUSTED: (u16, &str) = (409, "IMPORT_TOKEN_RETRIEVALS_EXHAUSTED_ERR");
    const NONE: (u16, &str) = (404, "IMPORT_TOKEN_NOT_FOUND_ERR");
    let mut need_token = creator;
    while !stop.load(Ordering::SeqCst) {
        let start = Instant::now();
        if need_token {
            let body = json!({"expiration": 600, "maxAllowedRetrievals": 4});
            let o = send(&api, Method::POST, "/api/v2/import_token", Some(&body), &[]).await;
            record(&ledger, node, start, &o);
            need_token = !matches!(o, Outcome::Ok(_));
            continue;
        }
        let o = send(
            &api,
            Method::GET,
            "/api/v2/import_token",
            None,
            &[EXHAUSTED, NONE],
        )
        .await;
        record(&ledger, node, start, &o);
        match o {
            Outcome::Ok(r) => {
                let payload = r.body["payload"].as_str().unwrap().to_string();
                let max = r.body["maxAllowedRetrievals"].as_u64().unwrap();
                let mut l = ledger.lock();
                let e = l.retrievals.entry(payload).or_insert((0, max));
                e.0 += 1;
            }
            Outcome::Expected => {
                // Exhausted or none yet: the creator makes the next one, a while later (each
                // creation takes a fresh RSA key pair).
                need_token = creator;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            _ => {}
        }
    }
}

/// Per node: (first refusal or failure at or after `from`, first success after the last
/// refusal or failure, number refused, number failed), from the events.
pub fn gaps(events: &[Event], nodes: usize, from: Instant) -> Vec<Gap> {
    (0..nodes)
        .map(|n| {
            let ev: Vec<&Event> = events
                .iter()
                .filter(|e| e.node == n && e.end >= from)
                .collect();
            let bad: Vec<&&Event> = ev.iter().filter(|e| e.kind != 0).collect();
            let first_bad = bad.iter().map(|e| e.start).min();
            let last_bad = bad.iter().map(|e| e.end).max();
            let recovered = match last_bad {
                Some(t) => ev
                    .iter()
                    .filter(|e| e.kind == 0 && e.start >= t)
                    .map(|e| e.end)
                    .min(),
                None => ev.iter().filter(|e| e.kind == 0).map(|e| e.end).min(),
            };
            Gap {
                first_bad,
                recovered,
                refused: bad.iter().filter(|e| e.kind == 1).count(),
                failed: bad.iter().filter(|e| e.kind == 2).count(),
                ok: ev.iter().filter(|e| e.kind == 0).count(),
            }
        })
        .collect()
}

#[derive(Debug)]
pub struct Gap {
    pub first_bad: Option<Instant>,
    pub recovered: Option<Instant>,
    pub refused: usize,
    pub failed: usize,
    pub ok: usize,
}

impl Gap {
    /// From the first refusal to the first success after the last one (zero without any).
    pub fn length(&self) -> Duration {
        match (self.first_bad, self.recovered) {
            (Some(a), Some(b)) => b.saturating_duration_since(a),
            _ => Duration::ZERO,
        }
    }
}

/// Checks, through `api` on a healthy deployment, that everything the load saw acknowledged is
/// there: every key, every rotation (two versions), every ciphertext unwraps to its plaintext;
/// and that no import token was retrieved more often than it allows.
pub async fn verify(api: &Api, l: &Ledger) {
    let api = client_for(api, &api.base);
    for id in &l.keys {
        let r = api.get(&format!("/api/v2/keys/{id}")).await;
        assert_eq!(r.status, 200, "acknowledged key {id} is gone: {}", r.text);
    }
    for id in &l.rotated {
        let v = api
            .get(&format!(
                "/api/v2/keys/{id}/versions?allKeyStates=true&totalCount=true"
            ))
            .await;
        assert_eq!(
            v.expect(200)["metadata"]["totalCount"].as_i64(),
            Some(2),
            "acknowledged rotation of {id} is gone: {}",
            v.text
        );
    }
    let mut tasks = tokio::task::JoinSet::new();
    let chunk = l.wraps.len().div_ceil(4).max(1);
    for part in l.wraps.chunks(chunk) {
        let part = part.to_vec();
        let api = api.clone();
        tasks.spawn(async move {
            for (id, pt, ct) in part {
                let got = api.unwrap_ok(&id, &ct).await;
                assert_eq!(
                    got, pt,
                    "an acknowledged ciphertext of {id} unwraps to other bytes"
                );
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    for (payload, (count, max)) in &l.retrievals {
        assert!(
            count <= max,
            "an import token was retrieved {count} times, more than its {max} ({}...)",
            &payload[..payload.len().min(24)]
        );
    }
}

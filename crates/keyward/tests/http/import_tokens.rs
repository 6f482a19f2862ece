//! Import tokens (docs/import-tokens.md): creation bounds and
//! types, defaults, retrieval counting (exact under 200 parallel GETs), exhaustion, expiry,
//! replacement.

use std::sync::Arc;
use std::time::Instant;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use keyward_crypto::import::OaepHash;
use keyward_domain::format_time;
use serde_json::{json, Value};

use crate::common::*;

fn token_meta(v: &Value, now: i64, expiration: i64, max: i64, remaining: i64) {
    assert_eq!(v["creationDate"], format_time(now), "{v}");
    assert_eq!(v["expirationDate"], format_time(now + expiration), "{v}");
    assert_eq!(v["expiration"], expiration, "{v}");
    assert_eq!(v["maxAllowedRetrievals"], max, "{v}");
    assert_eq!(v["remainingRetrievals"], remaining, "{v}");
}

/// Every invalid creation body: 400 INVALID_FIELD_ERR naming the field (or BAD_BODY_ERR for a
/// body that is not an object), nothing stored, and a previous token untouched.
#[tokio::test]
async fn create_rejects_out_of_range_and_wrong_types() {
    // Some forty creations by one caller in a row: more than the default import-token creation
    // burst (`ops/main.rs: creation_limits_are_on_by_default`), so this server lifts it.
    let s = &TestServer::start_with(1, |a| a.rate_limit_import_token_create = Some("0".into()));
    let c = s.tenant().await;
    let big = "9223372036854775808"; // 2^63
    let field_cases: Vec<(String, &str)> = vec![
        (r#"{"expiration": 299}"#.into(), "expiration"),
        (r#"{"expiration": 86401}"#.into(), "expiration"),
        (r#"{"expiration": 0}"#.into(), "expiration"),
        (r#"{"expiration": -1}"#.into(), "expiration"),
        (r#"{"expiration": 600.5}"#.into(), "expiration"),
        (r#"{"expiration": 600.0}"#.into(), "expiration"),
        (r#"{"expiration": 6e2}"#.into(), "expiration"),
        (r#"{"expiration": "600"}"#.into(), "expiration"),
        (r#"{"expiration": null}"#.into(), "expiration"),
        (format!(r#"{{"expiration": {big}}}"#), "expiration"),
        (
            r#"{"expiration": -9223372036854775808}"#.into(),
            "expiration",
        ),
        (r#"{"expiration": true}"#.into(), "expiration"),
        (r#"{"expiration": [600]}"#.into(), "expiration"),
        (r#"{"expiration": {"v": 600}}"#.into(), "expiration"),
        (
            r#"{"maxAllowedRetrievals": 0}"#.into(),
            "maxAllowedRetrievals",
        ),
        (
            r#"{"maxAllowedRetrievals": 501}"#.into(),
            "maxAllowedRetrievals",
        ),
        (
            r#"{"maxAllowedRetrievals": -1}"#.into(),
            "maxAllowedRetrievals",
        ),
        (
            r#"{"maxAllowedRetrievals": 1.5}"#.into(),
            "maxAllowedRetrievals",
        ),
        (
            r#"{"maxAllowedRetrievals": true}"#.into(),
            "maxAllowedRetrievals",
        ),
        (
            r#"{"maxAllowedRetrievals": "5"}"#.into(),
            "maxAllowedRetrievals",
        ),
        (
            r#"{"maxAllowedRetrievals": [1]}"#.into(),
            "maxAllowedRetrievals",
        ),
        (
            r#"{"maxAllowedRetrievals": null}"#.into(),
            "maxAllowedRetrievals",
        ),
        (
            format!(r#"{{"maxAllowedRetrievals": {big}}}"#),
            "maxAllowedRetrievals",
        ),
        (
            r#"{"expiration": 600, "maxAllowedRetrievals": 501}"#.into(),
            "maxAllowedRetrievals",
        ),
        (
            r#"{"expiration": 299, "maxAllowedRetrievals": 5}"#.into(),
            "expiration",
        ),
        // Field names match case-insensitively, so these are checked too.
        (r#"{"EXPIRATION": 1}"#.into(), "expiration"),
        (
            r#"{"maxallowedretrievals": 0}"#.into(),
            "maxAllowedRetrievals",
        ),
    ];
    let body_cases = [
        r#"[]"#,
        r#""x""#,
        "5",
        "true",
        "{",
        r#"{"expiration": 600"#,
        "\u{0}",
        r#"{"expiration": 1e400}"#,
    ];

    // Without a token: nothing gets stored.
    check_all(&c, &field_cases, &body_cases).await;
    assert!(s.snapshot(c.instance_id).await.token.is_none());
    assert_error(&c.get_token().await, 404, "IMPORT_TOKEN_NOT_FOUND_ERR");
    // With a token: it is left exactly as it was (id, counter, expiry, nonce).
    c.create_token(&json!({"expiration": 900, "maxAllowedRetrievals": 3}))
        .await
        .expect(200);
    let snap = s.snapshot(c.instance_id).await;
    check_all(&c, &field_cases, &body_cases).await;
    assert_eq!(s.snapshot(c.instance_id).await, snap);
    let g = c.get_token().await.expect(200);
    assert_eq!(g["remainingRetrievals"], 2);
}

async fn check_all(c: &Client, field_cases: &[(String, &str)], body_cases: &[&str]) {
    let before = shared().snapshot(c.instance_id).await;
    for (body, field) in field_cases {
        let r = c
            .post_raw(
                "/api/v2/import_token",
                body.clone().into_bytes(),
                Some("application/json"),
            )
            .await;
        assert_field_error(&r, 400, "INVALID_FIELD_ERR", field);
    }
    for body in body_cases {
        let r = c
            .post_raw(
                "/api/v2/import_token",
                body.as_bytes().to_vec(),
                Some("application/json"),
            )
            .await;
        assert_error(&r, 400, "BAD_BODY_ERR");
    }
    let r = c
        .post_raw("/api/v2/import_token", b"{}".to_vec(), Some("text/plain"))
        .await;
    assert_error(&r, 415, "UNSUPPORTED_MEDIA_TYPE_ERR");
    assert_eq!(shared().snapshot(c.instance_id).await, before);
}

/// The boundary pairs (300 / 86400 s, 1 / 500 retrievals) and the defaults (600 s, 1).
#[tokio::test]
async fn create_boundaries_and_defaults() {
    let s = shared();
    let c = s.tenant().await;
    let r = c
        .create_token(&json!({"expiration": 300, "maxAllowedRetrievals": 500}))
        .await;
    let v = r.expect(200);
    token_meta(&v, s.now(), 300, 500, 500);
    assert!(
        v.get("payload").is_none() && v.get("nonce").is_none(),
        "POST returns no key: {v}"
    );
    let g = c.get_token().await.expect(200);
    token_meta(&g, s.now(), 300, 500, 499);

    let v = c
        .create_token(&json!({"expiration": 86400, "maxAllowedRetrievals": 1}))
        .await
        .expect(200);
    token_meta(&v, s.now(), 86400, 1, 1);

    // No body at all (and `{}` / `null`): the defaults.
    let v = send(c.req(reqwest::Method::POST, "/api/v2/import_token"))
        .await
        .expect(200);
    token_meta(&v, s.now(), 600, 1, 1);
    let g = c.get_token().await.expect(200);
    token_meta(&g, s.now(), 600, 1, 0);
}

/// GET: same nonce and public key on every retrieval; payload is a PEM SPKI of RSA-4096;
/// exhaustion is 409 and the counter stays at 0; an exhausted (unexpired) token still imports.
#[tokio::test]
async fn get_counts_exhausts_and_still_imports() {
    let s = shared();
    let c = s.tenant().await;
    assert_error(&c.get_token().await, 404, "IMPORT_TOKEN_NOT_FOUND_ERR");
    c.create_token(&json!({"maxAllowedRetrievals": 3}))
        .await
        .expect(200);
    let mut seen = Vec::new();
    for want in [2, 1, 0] {
        let g = c.get_token().await.expect(200);
        assert_eq!(g["remainingRetrievals"], want);
        seen.push((
            g["payload"].as_str().unwrap().to_string(),
            g["nonce"].as_str().unwrap().to_string(),
        ));
    }
    assert!(
        seen.windows(2).all(|w| w[0] == w[1]),
        "payload and nonce must not change between GETs"
    );
    let t = ImportToken::from_get(&json!({"payload": seen[0].0, "nonce": seen[0].1}));
    assert_eq!(t.pem.len(), 800, "RSA-4096 SPKI PEM is 800 bytes");
    assert!(t.pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
    assert!(t.pem.ends_with("-----END PUBLIC KEY-----\n"));
    assert!(t.pem.lines().all(|l| l.len() <= 64));
    assert_eq!(t.spki_der().len(), 550);
    assert_eq!(t.nonce.len(), 12);

    let before = s.snapshot(c.instance_id).await;
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let r = c.get_token().await;
        assert_error(&r, 409, "IMPORT_TOKEN_RETRIEVALS_EXHAUSTED_ERR");
        bodies.push(r.body);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(s.snapshot(c.instance_id).await, before);
    assert_eq!(before.token.as_ref().unwrap().remaining, 0);

    // Exhausted but unexpired: imports are accepted, any number of them.
    for n in [16usize, 32] {
        let m = random(n);
        let k = c
            .create(t.secure_fields(&m, OaepHash::Sha256).resource())
            .await
            .resource(201);
        let id = id_of(&k);
        let dek = random(32);
        let ct = c.wrap_bytes(&id, &dek, None).await;
        assert_eq!(open_blob_with(&m, &id, &ct, &[]), dek);
    }
    assert_eq!(s.snapshot(c.instance_id).await.token.unwrap().remaining, 0);
}

/// Expiry with the manual clock: GET and import at `expirationDate` are 409
/// IMPORT_TOKEN_EXPIRED_ERR; one second before, both work. Nothing changes on refusal.
#[tokio::test]
async fn expiry_of_get_and_import() {
    let s = TestServer::start(0);
    let c = s.tenant().await;
    c.create_token(&json!({"expiration": 300, "maxAllowedRetrievals": 3}))
        .await
        .expect(200);
    let t = ImportToken::from_get(&c.get_token().await.expect(200));
    s.clock.advance(299);
    let g = c.get_token().await.expect(200);
    assert_eq!(g["remainingRetrievals"], 1);
    let k = c
        .create(t.secure_fields(&random(32), OaepHash::Sha256).resource())
        .await
        .resource(201);
    assert_eq!(k["imported"], true);

    // The token expires between the GET and the import.
    s.clock.advance(1);
    let before = s.snapshot(c.instance_id).await;
    let r = c.get_token().await;
    assert_error(&r, 409, "IMPORT_TOKEN_EXPIRED_ERR");
    for m in [random(32), random(16)] {
        let r = c
            .create(t.secure_fields(&m, OaepHash::Sha256).resource())
            .await;
        assert_error(&r, 409, "IMPORT_TOKEN_EXPIRED_ERR");
    }
    // Expiry is reported before any other check of the secure fields.
    let mut bad = t.secure_fields(&random(32), OaepHash::Sha256);
    bad.payload[0] ^= 1;
    assert_error(
        &c.create(bad.resource()).await,
        409,
        "IMPORT_TOKEN_EXPIRED_ERR",
    );
    // A secure rotate too.
    let r = c
        .rotate(
            &id_of(&k),
            &t.secure_fields(&random(32), OaepHash::Sha256).rotate_body(),
        )
        .await;
    assert_error(&r, 409, "IMPORT_TOKEN_EXPIRED_ERR");
    s.clock.advance(10_000);
    // (bearer tokens last an hour; get a new one)
    let mut c = c;
    c.refresh().await;
    assert_error(&c.get_token().await, 409, "IMPORT_TOKEN_EXPIRED_ERR");
    assert_eq!(s.snapshot(c.instance_id).await, before);
    // A new token works again.
    let t2 = c.fresh_token(300, 1).await;
    assert_ne!(t2.nonce, t.nonce);
    c.create(t2.secure_fields(&random(24), OaepHash::Sha256).resource())
        .await
        .resource(201);
}

/// A new POST replaces the token: the old public key and nonce stop working at once, the GET
/// shows the new one, and nothing is stored from a refused import.
#[tokio::test]
async fn post_replaces_the_token() {
    let s = shared();
    let c = s.tenant().await;
    let t1 = c.fresh_token(600, 5).await;
    let old_row = s.snapshot(c.instance_id).await.token.unwrap();
    c.create_token(&json!({"expiration": 600, "maxAllowedRetrievals": 2}))
        .await
        .expect(200);
    let new_row = s.snapshot(c.instance_id).await.token.unwrap();
    assert_ne!(old_row.token_id, new_row.token_id);
    assert_eq!(new_row.remaining, 2);

    let before = s.snapshot(c.instance_id).await;
    let m = random(32);
    // Material for the old public key: the uniform OAEP 400.
    let r = c
        .create(t1.secure_fields(&m, OaepHash::Sha256).resource())
        .await;
    assert_field_error(&r, 400, "INVALID_FIELD_ERR", "payload");
    assert_eq!(s.snapshot(c.instance_id).await, before);

    let t2 = ImportToken::from_get(&c.get_token().await.expect(200));
    assert_ne!(t2.nonce, t1.nonce);
    assert_ne!(t2.pem, t1.pem);
    let before = s.snapshot(c.instance_id).await;
    // New public key with the old nonce: INCORRECT_NONCE_ERR.
    let mixed = ImportToken {
        pem: t2.pem.clone(),
        nonce: t1.nonce.clone(),
    };
    let r = c
        .create(mixed.secure_fields(&m, OaepHash::Sha256).resource())
        .await;
    assert_field_error(&r, 400, "INCORRECT_NONCE_ERR", "encryptedNonce");
    assert_eq!(s.snapshot(c.instance_id).await, before);
    c.create(t2.secure_fields(&m, OaepHash::Sha256).resource())
        .await
        .resource(201);
}

/// T3: 200 parallel GETs on a token with maxAllowedRetrievals=50: exactly 50 succeed, with
/// remainingRetrievals 49..0 each once; the other 150 are one identical 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_gets_count_exactly() {
    let s = shared();
    for round in 0..3 {
        let c = s.tenant().await;
        c.create_token(&json!({"expiration": 600, "maxAllowedRetrievals": 50}))
            .await
            .expect(200);
        let c = Arc::new(c);
        let mut set = tokio::task::JoinSet::new();
        let barrier = Arc::new(tokio::sync::Barrier::new(200));
        for _ in 0..200 {
            let c = c.clone();
            let b = barrier.clone();
            set.spawn(async move {
                b.wait().await;
                c.get_token().await
            });
        }
        let mut remaining = Vec::new();
        let mut refused = Vec::new();
        let mut nonces = std::collections::HashSet::new();
        while let Some(r) = set.join_next().await {
            let r = r.unwrap();
            match r.status {
                200 => {
                    let v = r.json();
                    remaining.push(v["remainingRetrievals"].as_i64().unwrap());
                    nonces.insert(v["nonce"].as_str().unwrap().to_string());
                }
                _ => {
                    assert_error(&r, 409, "IMPORT_TOKEN_RETRIEVALS_EXHAUSTED_ERR");
                    refused.push(r.body);
                }
            }
        }
        remaining.sort_unstable();
        assert_eq!(remaining, (0..50).collect::<Vec<i64>>(), "round {round}");
        assert_eq!(refused.len(), 150, "round {round}");
        assert!(
            refused.windows(2).all(|w| w[0] == w[1]),
            "409 bodies differ"
        );
        assert_eq!(nonces.len(), 1);
        assert_eq!(s.snapshot(c.instance_id).await.token.unwrap().remaining, 0);
    }
}

/// A POST replacing the token while GETs and imports race: afterwards exactly one live token
/// (the new one, its nonce on GET); no import that started after the replacement returned is
/// accepted against the old nonce; every accepted import is stored, and only those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacement_racing_gets_and_imports() {
    let s = shared();
    let c = Arc::new(s.tenant().await);
    let t1 = c.fresh_token(600, 500).await;
    // Prepare the imports up front (client-side crypto off the clock).
    let bodies: Vec<Value> = (0..40)
        .map(|_| key_envelope(t1.secure_fields(&random(32), OaepHash::Sha256).resource()))
        .collect();
    let start = Instant::now();
    let replaced_at: Arc<std::sync::Mutex<Option<std::time::Duration>>> = Arc::default();

    let mut set = tokio::task::JoinSet::new();
    for (i, body) in bodies.into_iter().enumerate() {
        let c = c.clone();
        let replaced_at = replaced_at.clone();
        set.spawn(async move {
            // Spread the imports over the replacement window.
            tokio::time::sleep(std::time::Duration::from_millis((i as u64 % 20) * 15)).await;
            let started = start.elapsed();
            let after_replacement = replaced_at.lock().unwrap().is_some_and(|t| t <= started);
            let r = c.post("/api/v2/keys", &body).await;
            ("import", started, after_replacement, r)
        });
    }
    for i in 0..40u64 {
        let c = c.clone();
        set.spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis((i % 20) * 15)).await;
            let started = start.elapsed();
            ("get", started, false, c.get_token().await)
        });
    }
    {
        let c = c.clone();
        let replaced_at = replaced_at.clone();
        set.spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let r = c
                .create_token(&json!({"expiration": 600, "maxAllowedRetrievals": 500}))
                .await;
            *replaced_at.lock().unwrap() = Some(start.elapsed());
            ("post", std::time::Duration::ZERO, false, r)
        });
    }
    let mut accepted = Vec::new();
    let mut late_imports = 0;
    while let Some(r) = set.join_next().await {
        let (kind, _started, after_replacement, r) = r.unwrap();
        match kind {
            "post" => {
                r.expect(200);
            }
            "get" => assert!(
                r.status == 200,
                "GET during replacement: {} {}",
                r.status,
                r.text()
            ),
            _ => {
                if after_replacement {
                    late_imports += 1;
                    assert_ne!(r.status, 201, "an import against the old nonce, sent after the replacement returned, was accepted");
                }
                if r.status == 201 {
                    accepted.push(id_of(&r.resource(201)));
                } else {
                    let code = r.json()["resources"][0]["reasons"][0]["code"]
                        .as_str()
                        .unwrap()
                        .to_string();
                    // Imports encrypted for the old token fail against the new one, and ten
                    // such failures lock it (409: `failed_imports_per_token_are_capped`).
                    assert!(
                        (r.status == 400
                            && (code == "INVALID_FIELD_ERR" || code == "INCORRECT_NONCE_ERR"))
                            || (r.status == 409 && code == "IMPORT_TOKEN_EXPIRED_ERR"),
                        "refused import: {} {}",
                        r.status,
                        r.text()
                    );
                }
            }
        }
    }
    let snap = s.snapshot(c.instance_id).await;
    let mut stored: Vec<String> = snap.keys.iter().map(|(k, _)| k.id.to_string()).collect();
    stored.sort();
    accepted.sort();
    assert_eq!(
        stored, accepted,
        "stored keys are exactly the accepted imports"
    );
    // Exactly one live token: the new one, which GET returns.
    let live = snap.token.unwrap();
    let g = c.get_token().await.expect(200);
    assert_eq!(
        B64.decode(g["nonce"].as_str().unwrap()).unwrap(),
        live.nonce
    );
    assert_ne!(live.nonce, t1.nonce);
    // Old-nonce imports after the race are all refused (400, or 409 once the failures
    // against the new token reached the cap).
    let r = c
        .create(t1.secure_fields(&random(32), OaepHash::Sha256).resource())
        .await;
    assert!(matches!(r.status, 400 | 409), "{}", r.text());
    eprintln!(
        "replacement race: {} of 40 imports accepted, {late_imports} sent after the replacement",
        accepted.len()
    );
}

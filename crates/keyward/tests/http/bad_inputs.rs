//! Bad inputs for the key endpoints (docs/threat-model.md, attacker A1): each gets a clear 4xx
//! with its code and changes nothing; no 5xx anywhere (every response passes `send`).

use std::time::Duration;

use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE};
use base64::Engine;
use keyward_domain::format_time;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

/// Every call that takes a key id, with a well-formed body.
async fn id_calls(c: &Client, id: &str, ct: &str) -> Vec<(&'static str, Resp)> {
    vec![
        ("get", c.get(&format!("/api/v2/keys/{id}")).await),
        (
            "metadata",
            c.get(&format!("/api/v2/keys/{id}/metadata")).await,
        ),
        ("delete", c.delete(&format!("/api/v2/keys/{id}")).await),
        (
            "wrap",
            c.post(&format!("/api/v2/keys/{id}/actions/wrap"), &json!({}))
                .await,
        ),
        (
            "unwrap",
            c.post(
                &format!("/api/v2/keys/{id}/actions/unwrap"),
                &json!({"ciphertext": ct}),
            )
            .await,
        ),
        (
            "rewrap",
            c.post(
                &format!("/api/v2/keys/{id}/actions/rewrap"),
                &json!({"ciphertext": ct}),
            )
            .await,
        ),
        (
            "rotate",
            c.post(&format!("/api/v2/keys/{id}/actions/rotate"), &json!({}))
                .await,
        ),
        (
            "legacy",
            c.post(
                &format!("/api/v2/keys/{id}?action=unwrap"),
                &json!({"ciphertext": ct}),
            )
            .await,
        ),
    ]
}

#[tokio::test]
async fn unknown_and_malformed_key_ids() {
    let s = shared();
    let c = s.tenant().await;
    let k = id_of(&c.create_root_key().await);
    let ct = c.wrap_bytes(&k, &random(32), None).await;
    let before = s.snapshot(c.instance_id).await;
    for id in [
        random_uuid(),
        "my-alias".into(),
        "ab".into(),
        "a".repeat(90),
        random_uuid().replace('-', ""),
        format!("{k}x"),
    ] {
        for (name, r) in id_calls(&c, &id, &ct).await {
            assert_eq!(r.status, 404, "{name} {id}: {}", r.text());
            assert_error(&r, 404, "KEY_NOT_FOUND_ERR");
        }
    }
    let long = "a".repeat(200);
    for id in [
        "%20x",
        "a",
        long.as_str(),
        "x%00y",
        "..%2F..",
        "a.b",
        "%E2%9C%93%E2%9C%93",
        &format!("{{{k}}}"),
        &format!("{k}%0A"),
    ] {
        for (name, r) in id_calls(&c, id, &ct).await {
            assert_eq!(r.status, 400, "{name} {id}: {}", r.text());
            assert_field_error(&r, 400, "INVALID_FIELD_ERR", "id");
        }
    }
    assert_eq!(s.snapshot(c.instance_id).await, before);
}

#[tokio::test]
async fn standard_and_deleted_keys_refuse_wrap_unwrap() {
    let s = shared();
    let c = s.tenant().await;
    let std = id_of(&c.create_standard_key().await);
    let root = id_of(&c.create_root_key().await);
    let dek = random(32);
    let ct = c.wrap_bytes(&root, &dek, None).await;
    let before = s.snapshot(c.instance_id).await;
    for r in [
        c.wrap(&std, &json!({})).await,
        c.wrap(&std, &json!({"plaintext": B64.encode(&dek)})).await,
        c.unwrap(&std, &ct, None).await,
        c.action(&std, "rewrap", &json!({"ciphertext": ct})).await,
        c.post(&format!("/api/v2/keys/{std}?action=wrap"), &json!({}))
            .await,
    ] {
        assert_error(&r, 400, "KEY_ROOT_REQ_ERR");
    }
    assert_eq!(s.snapshot(c.instance_id).await, before);

    c.delete(&format!("/api/v2/keys/{root}")).await.expect(204);
    let before = s.snapshot(c.instance_id).await;
    for r in [
        c.wrap(&root, &json!({})).await,
        c.wrap(&root, &json!({"plaintext": B64.encode(&dek)})).await,
        c.unwrap(&root, &ct, None).await,
        c.action(&root, "rewrap", &json!({"ciphertext": ct})).await,
        c.rotate(&root, &json!({})).await,
        c.post(
            &format!("/api/v2/keys/{root}?action=unwrap"),
            &json!({"ciphertext": ct}),
        )
        .await,
    ] {
        assert_error(&r, 409, "KEY_ACTION_INVALID_STATE_ERR");
    }
    assert_error(
        &c.delete(&format!("/api/v2/keys/{root}")).await,
        410,
        "KEY_DELETED_ERR",
    );
    assert_eq!(s.snapshot(c.instance_id).await, before);
}

#[tokio::test]
async fn wrap_plaintext_and_aad_validation() {
    let s = shared();
    let c = s.tenant().await;
    let id = id_of(&c.create_root_key().await);
    let before = s.snapshot(c.instance_id).await;
    let url_safe = loop {
        let r = random(30);
        let u = URL_SAFE.encode(&r);
        if u.contains('-') || u.contains('_') {
            break u;
        }
    };
    let pt_cases = [
        json!("@@@not base64"),
        json!(url_safe),
        json!(B64.encode(random(7501))),
        json!(B64.encode(random(10_000))),
        json!(""),
        json!("AAA"),
        json!("AAAAA==="),
        json!(5),
        json!(true),
        json!(["AAAA"]),
        json!({"a": "AAAA"}),
    ];
    for pt in pt_cases {
        let r = c.wrap(&id, &json!({"plaintext": pt})).await;
        assert_field_error(&r, 400, "INVALID_FIELD_ERR", "plaintext");
    }
    let long = "x".repeat(256);
    let many: Vec<String> = (0..101).map(|i| i.to_string()).collect();
    let aad_cases = [
        json!("x"),
        json!([1]),
        json!([null]),
        json!([["a"]]),
        json!([{"a": "b"}]),
        json!({"a": "b"}),
        json!(true),
        json!(1),
        json!([long]),
        json!(many),
    ];
    let ct = c.wrap_bytes(&id, &random(32), None).await;
    for aad in &aad_cases {
        let r = c
            .wrap(
                &id,
                &json!({"plaintext": B64.encode(random(32)), "aad": aad}),
            )
            .await;
        assert_field_error(&r, 400, "INVALID_FIELD_ERR", "aad");
        let r = c.wrap(&id, &json!({"aad": aad})).await;
        assert_field_error(&r, 400, "INVALID_FIELD_ERR", "aad");
        let r = c
            .action(&id, "unwrap", &json!({"ciphertext": ct, "aad": aad}))
            .await;
        assert_field_error(&r, 400, "INVALID_FIELD_ERR", "aad");
        let r = c
            .action(&id, "rewrap", &json!({"ciphertext": ct, "aad": aad}))
            .await;
        assert_field_error(&r, 400, "INVALID_FIELD_ERR", "aad");
    }
    // Non-JSON bodies and non-object JSON.
    for body in [&b"{"[..], b"plaintext=AAAA", b"[]", b"\"x\"", b"7"] {
        let r = c
            .post_raw(
                &format!("/api/v2/keys/{id}/actions/wrap"),
                body.to_vec(),
                Some("application/json"),
            )
            .await;
        assert_error(&r, 400, "BAD_BODY_ERR");
    }
    assert_eq!(s.snapshot(c.instance_id).await, before);

    // The limits themselves are accepted: 100 entries of 255 characters (also non-ASCII).
    let max: Vec<String> = (0..100)
        .map(|i| format!("{i:03}{}", "é".repeat(252)))
        .collect();
    let maxr: Vec<&str> = max.iter().map(String::as_str).collect();
    let dek = random(1);
    let ct = c.wrap_bytes(&id, &dek, Some(&maxr)).await;
    assert_eq!(c.unwrap_bytes(&id, &ct, Some(&maxr)).await, dek);
    let empty: [&str; 1] = [""];
    let ct = c.wrap_bytes(&id, &dek, Some(&empty)).await;
    assert_eq!(c.unwrap_bytes(&id, &ct, Some(&empty)).await, dek);
    // `[""]` is not `[]`.
    assert_error(
        &c.unwrap(&id, &ct, Some(&[])).await,
        422,
        "UNPROCESSABLE_CIPHERTEXT_ERR",
    );
}

/// Item 23: every ciphertext that does not open is the one 422, byte for byte; a ciphertext
/// that is not base64 is 400 INVALID_FIELD_ERR.
#[tokio::test]
async fn unwrap_of_bad_ciphertexts_is_one_422() {
    let s = shared();
    let c = s.tenant().await;
    let id = id_of(&c.create_root_key().await);
    let other = id_of(&c.create_root_key().await);
    let dek = random(32);
    let ct = c.wrap_bytes(&id, &dek, Some(&["a"])).await;
    let other_ct = c.wrap_bytes(&other, &dek, Some(&["a"])).await;
    let other_version = decode_blob(&other_ct)["handle"].clone();
    let blob = decode_blob(&ct);
    let inner = unb64(blob["ciphertext"].as_str().unwrap());
    let iv = unb64(blob["iv"].as_str().unwrap());
    let edit = |f: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut b = blob.clone();
        f(b.as_object_mut().unwrap());
        encode_blob(&b)
    };
    let flip = |v: &[u8], bit: usize| {
        let mut v = v.to_vec();
        v[bit / 8] ^= 1 << (bit % 8);
        B64.encode(v)
    };
    let raw = unb64(&ct);
    let mut cases: Vec<(&str, String)> = vec![
        (
            "flip ct bit 0",
            edit(&|b| {
                b.insert("ciphertext".into(), json!(flip(&inner, 0)));
            }),
        ),
        (
            "flip ct last bit",
            edit(&|b| {
                b.insert(
                    "ciphertext".into(),
                    json!(flip(&inner, inner.len() * 8 - 1)),
                );
            }),
        ),
        (
            "flip ct middle",
            edit(&|b| {
                b.insert("ciphertext".into(), json!(flip(&inner, 8 * 20 + 3)));
            }),
        ),
        (
            "flip iv",
            edit(&|b| {
                b.insert("iv".into(), json!(flip(&iv, 5)));
            }),
        ),
        (
            "truncated ct",
            edit(&|b| {
                b.insert(
                    "ciphertext".into(),
                    json!(B64.encode(&inner[..inner.len() - 1])),
                );
            }),
        ),
        (
            "tag only",
            edit(&|b| {
                b.insert(
                    "ciphertext".into(),
                    json!(B64.encode(&inner[inner.len() - 16..])),
                );
            }),
        ),
        (
            "empty ct",
            edit(&|b| {
                b.insert("ciphertext".into(), json!(""));
            }),
        ),
        (
            "iv 11 bytes",
            edit(&|b| {
                b.insert("iv".into(), json!(B64.encode(&iv[..11])));
            }),
        ),
        (
            "iv empty",
            edit(&|b| {
                b.insert("iv".into(), json!(""));
            }),
        ),
        (
            "iv 16 bytes",
            edit(&|b| {
                b.insert(
                    "iv".into(),
                    json!(B64.encode([iv.clone(), vec![0; 4]].concat())),
                );
            }),
        ),
        (
            "inner ct not base64",
            edit(&|b| {
                b.insert("ciphertext".into(), json!("@@"));
            }),
        ),
        (
            "version 3.0.0",
            edit(&|b| {
                b.insert("version".into(), json!("3.0.0"));
            }),
        ),
        (
            "version number",
            edit(&|b| {
                b.insert("version".into(), json!(4));
            }),
        ),
        (
            "no version",
            edit(&|b| {
                b.remove("version");
            }),
        ),
        (
            "no handle",
            edit(&|b| {
                b.remove("handle");
            }),
        ),
        (
            "random handle",
            edit(&|b| {
                b.insert("handle".into(), json!(random_uuid()));
            }),
        ),
        (
            "garbage handle",
            edit(&|b| {
                b.insert("handle".into(), json!("x"));
            }),
        ),
        (
            "other key's version",
            edit(&|b| {
                b.insert("handle".into(), other_version.clone());
            }),
        ),
        (
            "extra field",
            edit(&|b| {
                b.insert("extra".into(), json!(1));
            }),
        ),
        ("other key's ciphertext", other_ct.clone()),
        ("truncated outer", B64.encode(&raw[..raw.len() / 2])),
        ("outer minus one byte", B64.encode(&raw[..raw.len() - 1])),
        ("random bytes", B64.encode(random(200))),
        ("json null", B64.encode("null")),
        ("json array", B64.encode("[]")),
        ("json object", B64.encode("{}")),
        ("empty", String::new()),
    ];
    // A 1-bit flip anywhere in the outer JSON that keeps it base64: also 422 (or the
    // unchanged plaintext if the flip hit insignificant whitespace — there is none).
    for bit in [8 * 2, 8 * 15 + 1, 8 * (raw.len() - 2) + 2] {
        let mut r = raw.clone();
        r[bit / 8] ^= 1 << (bit % 8);
        cases.push(("flip outer", B64.encode(r)));
    }
    for action in ["unwrap", "rewrap"] {
        let before = s.snapshot(c.instance_id).await;
        let mut first: Option<Vec<u8>> = None;
        for (name, bad) in &cases {
            let r = c
                .action(&id, action, &json!({"ciphertext": bad, "aad": ["a"]}))
                .await;
            assert_eq!(r.status, 422, "{action} {name}: {}", r.text());
            assert_error(&r, 422, "UNPROCESSABLE_CIPHERTEXT_ERR");
            match &first {
                None => first = Some(r.body.clone()),
                Some(b) => assert_eq!(&r.body, b, "{action} {name}: body differs"),
            }
        }
        // Different aad, or none.
        for aad in [json!(["b"]), json!([]), json!(["a", ""]), json!(["A"])] {
            let r = c
                .action(&id, action, &json!({"ciphertext": ct, "aad": aad}))
                .await;
            assert_eq!(r.body, *first.as_ref().unwrap(), "{action} aad {aad}");
        }
        let r = c.action(&id, action, &json!({"ciphertext": ct})).await;
        assert_eq!(r.body, *first.as_ref().unwrap());
        // Not base64, missing, or not a string: 400 naming `ciphertext`.
        for bad in [
            json!("@@@"),
            json!(URL_SAFE.encode(random(60)) + "-_"),
            json!(5),
            json!(null),
            json!(["x"]),
        ] {
            let r = c.action(&id, action, &json!({"ciphertext": bad})).await;
            assert_field_error(&r, 400, "INVALID_FIELD_ERR", "ciphertext");
        }
        let r = c.action(&id, action, &json!({})).await;
        assert_field_error(&r, 400, "INVALID_FIELD_ERR", "ciphertext");
        let r = c
            .post_raw(
                &format!("/api/v2/keys/{id}/actions/{action}"),
                Vec::new(),
                None,
            )
            .await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert_eq!(s.snapshot(c.instance_id).await, before);
    }
    // The good ciphertext still works.
    assert_eq!(c.unwrap_bytes(&id, &ct, Some(&["a"])).await, dek);
}

/// Sends a POST with a large body over a raw socket (optionally chunked, so without
/// Content-Length) and returns (status, body). The server may answer before reading it all.
async fn raw_post(
    s: &TestServer,
    c: &Client,
    path: &str,
    size: usize,
    chunked: bool,
    content_type: &str,
) -> (u16, Vec<u8>) {
    let stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let len_header = if chunked {
        "transfer-encoding: chunked\r\n".to_string()
    } else {
        format!("content-length: {size}\r\n")
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\nbluemix-instance: {}\r\ncontent-type: {content_type}\r\n{len_header}connection: close\r\n\r\n",
        s.addr, c.token, c.instance
    );
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        let chunk = vec![b'A'; 64 * 1024];
        let mut sent = 0;
        while sent < size {
            let n = chunk.len().min(size - sent);
            if chunked {
                wr.write_all(format!("{n:x}\r\n").as_bytes()).await?;
                wr.write_all(&chunk[..n]).await?;
                wr.write_all(b"\r\n").await?;
            } else {
                wr.write_all(&chunk[..n]).await?;
            }
            sent += n;
        }
        if chunked {
            wr.write_all(b"0\r\n\r\n").await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        let mut tmp = [0u8; 8192];
        loop {
            match rd.read(&mut tmp).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    break;
                }
            }
        }
    })
    .await;
    writer.abort();
    assert!(read.is_ok(), "no response to a {size}-byte body");
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let status_line = String::from_utf8_lossy(&buf[..end])
        .lines()
        .next()
        .unwrap()
        .to_string();
    let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    (status, buf[end + 4..].to_vec())
}

/// Item 25: a 10 MB body is 413 (before parsing), with or without Content-Length; the 64 KiB
/// cap is exact. Item 28: text/plain is 415.
#[tokio::test]
async fn body_size_cap_and_media_type() {
    let s = shared();
    let c = s.tenant().await;
    let id = id_of(&c.create_root_key().await);
    let before = s.snapshot(c.instance_id).await;
    let paths = [
        "/api/v2/keys".to_string(),
        format!("/api/v2/keys/{id}/actions/wrap"),
        format!("/api/v2/keys/{id}/actions/unwrap"),
        format!("/api/v2/keys/{id}/actions/rotate"),
        format!("/api/v2/keys/{id}?action=wrap"),
        "/api/v2/import_token".to_string(),
    ];
    for p in &paths {
        for chunked in [false, true] {
            let (status, body) =
                raw_post(s, &c, p, 10 * 1024 * 1024, chunked, "application/json").await;
            assert_eq!(
                status,
                413,
                "{p} chunked={chunked}: {}",
                String::from_utf8_lossy(&body)
            );
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(
                v["resources"][0]["reasons"][0]["code"],
                "REQUEST_TOO_LARGE_ERR"
            );
        }
    }
    let (status, _) = raw_post(
        s,
        &c,
        "/identity/token",
        10 * 1024 * 1024,
        false,
        "application/x-www-form-urlencoded",
    )
    .await;
    assert_eq!(status, 413);
    let (status, _) = raw_post(
        s,
        &c,
        "/identity/token",
        10 * 1024 * 1024,
        true,
        "application/x-www-form-urlencoded",
    )
    .await;
    assert_eq!(status, 413);

    // Exactly 64 KiB is read; one byte more is 413.
    let dek = random(32);
    let mut body = json!({"plaintext": B64.encode(&dek), "pad": ""});
    let base = serde_json::to_vec(&body).unwrap().len();
    body["pad"] = json!("p".repeat(64 * 1024 - base));
    let bytes = serde_json::to_vec(&body).unwrap();
    assert_eq!(bytes.len(), 64 * 1024);
    let r = c
        .post_raw(
            &format!("/api/v2/keys/{id}/actions/wrap"),
            bytes.clone(),
            Some("application/json"),
        )
        .await;
    r.expect(200);
    let mut more = bytes;
    more.insert(1, b' ');
    let r = c
        .post_raw(
            &format!("/api/v2/keys/{id}/actions/wrap"),
            more,
            Some("application/json"),
        )
        .await;
    assert_error(&r, 413, "REQUEST_TOO_LARGE_ERR");

    // Media types: text/plain and other non-JSON types are 415; JSON variants and none are fine.
    let root_body = serde_json::to_vec(&key_envelope(
        json!({"type": KEY_TYPE, "name": "mt", "extractable": false}),
    ))
    .unwrap();
    for ct in [
        "text/plain",
        "application/xml",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "text/html; charset=utf-8",
    ] {
        for p in &paths {
            let b = if p == "/api/v2/keys" {
                root_body.clone()
            } else {
                b"{}".to_vec()
            };
            let r = c.post_raw(p, b, Some(ct)).await;
            assert_error(&r, 415, "UNSUPPORTED_MEDIA_TYPE_ERR");
        }
    }
    assert_eq!(s.snapshot(c.instance_id).await, before);
    for ct in [
        None,
        Some("application/json"),
        Some("application/json; charset=utf-8"),
        Some("application/vnd.ibm.kms.key+json"),
        Some("APPLICATION/JSON"),
    ] {
        let r = c.post_raw("/api/v2/keys", root_body.clone(), ct).await;
        assert_eq!(r.status, 201, "{ct:?}: {}", r.text());
        let r = c
            .post_raw(
                &format!("/api/v2/keys/{id}/actions/wrap"),
                b"{}".to_vec(),
                ct.map(|_| "application/vnd.ibm.kms.key_action_wrap+json"),
            )
            .await;
        assert_eq!(r.status, 200, "{ct:?}: {}", r.text());
    }
}

/// T9: fields the server owns are ignored on create, never stored.
#[tokio::test]
async fn mass_assignment_is_ignored() {
    let s = shared();
    let c = s.tenant().await;
    let fake_id = random_uuid();
    let r = c
        .create(json!({
            "type": KEY_TYPE, "name": "mass", "extractable": false,
            "id": fake_id, "state": 5, "creationDate": "2000-01-01T00:00:00Z",
            "createdBy": "iam-ServiceId-evil", "imported": true, "deleted": true,
            "crn": "crn:v1:evil", "keyVersion": {"id": fake_id}, "lastRotateDate": "2000-01-01T00:00:00Z",
            "deletionDate": "2000-01-01T00:00:00Z", "instance_id": random_uuid(), "algorithmBitSize": 128,
            "dualAuthDelete": {"enabled": true}, "keyRingID": "default",
        }))
        .await;
    let k = r.resource(201);
    assert_ne!(k["id"], fake_id.as_str());
    assert_eq!(k["state"], 1);
    assert_eq!(k["imported"], false);
    assert_eq!(k["deleted"], false);
    assert_eq!(k["createdBy"], c.iam_id.as_str());
    assert_eq!(k["creationDate"], format_time(s.now()));
    assert_eq!(k["algorithmBitSize"], 256);
    assert_ne!(k["keyVersion"]["id"], fake_id.as_str());
    assert!(
        k.get("lastRotateDate").is_none() && k.get("deletionDate").is_none(),
        "{k}"
    );
    let m = c
        .get(&format!("/api/v2/keys/{}/metadata", id_of(&k)))
        .await
        .resource(200);
    for f in [
        "state",
        "imported",
        "createdBy",
        "creationDate",
        "crn",
        "keyVersion",
        "deleted",
    ] {
        assert_eq!(m[f], k[f], "{f}");
    }
    assert_error(
        &c.get(&format!("/api/v2/keys/{fake_id}")).await,
        404,
        "KEY_NOT_FOUND_ERR",
    );
    let snap = s.snapshot(c.instance_id).await;
    assert_eq!(snap.keys.len(), 1);
    let row = &snap.keys[0].0;
    assert_eq!(row.instance_id, c.instance_id);
    assert!(!row.imported);
    assert_eq!(row.created_by, c.iam_id);
}

/// Create-key field validation (name, description, tags, expirationDate, extractable, key ring).
#[tokio::test]
async fn create_key_field_validation() {
    let s = shared();
    let c = s.tenant().await;
    let before = s.snapshot(c.instance_id).await;
    let base = || json!({"type": KEY_TYPE, "name": "ok-name", "extractable": false});
    let set = |k: &str, v: Value| {
        let mut b = base();
        b[k] = v;
        b
    };
    let tags31: Vec<String> = (0..31).map(|i| format!("t{i}")).collect();
    let cases: Vec<(Value, &str)> = vec![
        (json!({"type": KEY_TYPE, "extractable": false}), "name"),
        (set("name", json!("")), "name"),
        (set("name", json!("a")), "name"),
        (set("name", json!("a".repeat(91))), "name"),
        (set("name", json!("tab\there")), "name"),
        (set("name", json!(5)), "name"),
        (set("description", json!("d")), "description"),
        (set("description", json!("d".repeat(241))), "description"),
        (set("description", json!(["d"])), "description"),
        (set("tags", json!(tags31)), "tags"),
        (set("tags", json!(["a<b"])), "tags"),
        (set("tags", json!(["a,b"])), "tags"),
        (set("tags", json!(["t".repeat(31)])), "tags"),
        (set("tags", json!("a")), "tags"),
        (set("tags", json!([1])), "tags"),
        (
            set("expirationDate", json!("2000-01-01T00:00:00Z")),
            "expirationDate",
        ),
        (
            set("expirationDate", json!(format_time(s.now()))),
            "expirationDate",
        ),
        (set("expirationDate", json!("tomorrow")), "expirationDate"),
        (
            set("expirationDate", json!(1_900_000_000)),
            "expirationDate",
        ),
        (set("extractable", json!("false")), "extractable"),
        (set("extractable", json!(0)), "extractable"),
        (set("encryptedNonce", json!("AAAA")), "payload"),
        (set("iv", json!("AAAAAAAAAAAAAAAA")), "payload"),
    ];
    for (res, field) in cases {
        let r = c.create(res.clone()).await;
        assert_eq!(r.status, 400, "{res}: {}", r.text());
        assert_field_error(&r, 400, "INVALID_FIELD_ERR", field);
    }
    let r = send(
        c.req(Method::POST, "/api/v2/keys")
            .header("x-kms-key-ring", "x")
            .json(&key_envelope(base())),
    )
    .await;
    assert_field_error(&r, 400, "INVALID_FIELD_ERR", "keyRingID");
    assert_eq!(s.snapshot(c.instance_id).await, before);

    // The accepted edges.
    c.create(set("name", json!("ab"))).await.resource(201);
    c.create(set("name", json!("n".repeat(90))))
        .await
        .resource(201);
    let tags30: Vec<String> = (0..30).map(|i| format!("{i}{}", "t".repeat(28))).collect();
    c.create(set("tags", json!(tags30))).await.resource(201);
    let exp = format_time(s.now() + 86_400);
    let k = c
        .create(set("expirationDate", json!(exp)))
        .await
        .resource(201);
    assert_eq!(k["expirationDate"], exp.as_str());
}

/// A systematic sweep (T4, small): each JSON-body endpoint × each field × awkward values.
/// No 5xx, and every refused request leaves the instance unchanged.
#[tokio::test]
async fn sweep_of_awkward_field_values() {
    let s = shared();
    let c = s.tenant().await;
    let root = id_of(&c.create_root_key().await);
    let ct = c.wrap_bytes(&root, &random(32), None).await;
    let values = vec![
        Value::Null,
        json!(true),
        json!(0),
        json!(-1),
        json!(1.5),
        json!(9_223_372_036_854_775_807i64),
        json!(18_446_744_073_709_551_615u64),
        json!(""),
        json!(" "),
        json!("a"),
        json!("AAAA"),
        json!("@@"),
        json!("\u{0}"),
        json!("\u{202e}rtl"),
        json!("💥".repeat(100)),
        json!("x".repeat(20_000)),
        json!([]),
        json!([""]),
        json!([null]),
        json!({}),
        json!({"": ""}),
        serde_json::from_str::<Value>(&format!("{}{}", "[".repeat(40), "]".repeat(40))).unwrap(),
    ];
    let endpoints: Vec<(String, Vec<&str>, Value)> = vec![
        (
            "/api/v2/keys".into(),
            vec![
                "name",
                "description",
                "tags",
                "extractable",
                "payload",
                "encryptedNonce",
                "iv",
                "encryptionAlgorithm",
                "expirationDate",
                "type",
            ],
            json!({"type": KEY_TYPE, "name": "sweep", "extractable": false}),
        ),
        (
            format!("/api/v2/keys/{root}/actions/wrap"),
            vec!["plaintext", "aad"],
            json!({}),
        ),
        (
            format!("/api/v2/keys/{root}/actions/unwrap"),
            vec!["ciphertext", "aad"],
            json!({"ciphertext": ct}),
        ),
        (
            format!("/api/v2/keys/{root}/actions/rewrap"),
            vec!["ciphertext", "aad"],
            json!({"ciphertext": ct}),
        ),
        (
            format!("/api/v2/keys/{root}/actions/rotate"),
            vec!["payload", "encryptedNonce", "iv", "encryptionAlgorithm"],
            json!({}),
        ),
        (
            "/api/v2/import_token".into(),
            vec!["expiration", "maxAllowedRetrievals"],
            json!({}),
        ),
    ];
    let mut n = 0;
    for (path, fields, base) in &endpoints {
        for f in fields {
            for v in &values {
                let mut body = base.clone();
                body[*f] = v.clone();
                let body = if path == "/api/v2/keys" {
                    key_envelope(body)
                } else {
                    body
                };
                let before = s.quick_snapshot(c.instance_id).await;
                let r = c.post(path, &body).await;
                n += 1;
                assert!(r.status < 500, "{path} {f}={v}: {}", r.status);
                if r.status >= 400 {
                    assert_eq!(r.content_type(), Some("application/json"), "{path} {f}={v}");
                    let code = r.json()["resources"][0]["reasons"][0]["code"]
                        .as_str()
                        .unwrap_or("")
                        .to_string();
                    assert_error(&r, r.status, &code);
                    assert_eq!(
                        s.quick_snapshot(c.instance_id).await,
                        before,
                        "{path} {f}={v}: refused but changed state"
                    );
                } else if path.ends_with("/rotate") {
                    // A successful rotate (payload null etc.) is fine; later ones are 409.
                } else if path == "/api/v2/import_token" {
                    panic!("import_token accepted {f}={v}");
                }
            }
        }
    }
    // The header-borne field of create: key ring ids.
    for ring in ["", " ", "a", "x".repeat(101).as_str(), "ring\u{7f}"] {
        let before = s.snapshot(c.instance_id).await;
        let Ok(hv) = reqwest::header::HeaderValue::from_str(ring) else {
            continue;
        };
        let r = send(
            c.req(Method::POST, "/api/v2/keys")
                .header("x-kms-key-ring", hv)
                .json(&key_envelope(
                    json!({"type": KEY_TYPE, "name": "ring", "extractable": false}),
                )),
        )
        .await;
        if r.status >= 400 {
            assert_eq!(s.snapshot(c.instance_id).await, before);
        }
    }
    assert!(n >= 480, "{n} requests");
}

/// Query strings of `GET/HEAD /keys` and `?action=`: odd values are 200 or a 4xx with the
/// envelope, never a 5xx, and change nothing.
#[tokio::test]
async fn sweep_of_query_strings() {
    let s = shared();
    let c = s.tenant().await;
    let root = id_of(&c.create_root_key().await);
    c.create_standard_key().await;
    let before = s.quick_snapshot(c.instance_id).await;
    let long = "a".repeat(3000);
    let values = [
        "",
        "0",
        "-1",
        "1",
        "5001",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775808",
        "1e3",
        "0x10",
        "%00",
        "%FF",
        "%27",
        "%22",
        "%25",
        "_",
        "*",
        "a,b",
        ",",
        "1,,5",
        "%E2%9C%93",
        "-id",
        "id,-id",
        "creationDate",
        "not:x",
        "exact:",
        "escape:%25",
        "alias:",
        "name:",
        "state=1",
        "state%3D1",
        "creationDate%3Dlt%3A%222020-01-01T00%3A00%3A00Z%22",
        "state=lt:x",
        "none",
        long.as_str(),
    ];
    let params = [
        "limit",
        "offset",
        "state",
        "extractable",
        "sort",
        "search",
        "filter",
        "totalCount",
    ];
    let mut n = 0;
    for p in params {
        for v in values {
            for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
                let r = send(c.req(method.clone(), &format!("/api/v2/keys?{p}={v}"))).await;
                n += 1;
                assert!(
                    r.status == 200 || (400..500).contains(&r.status),
                    "{method} ?{p}={v}: {}",
                    r.status
                );
                if method == reqwest::Method::GET && r.status != 200 {
                    let code = r.json()["resources"][0]["reasons"][0]["code"]
                        .as_str()
                        .unwrap()
                        .to_string();
                    assert_error(&r, r.status, &code);
                }
            }
        }
    }
    for v in values {
        let r = c
            .post(&format!("/api/v2/keys/{root}?action={v}"), &json!({}))
            .await;
        assert_eq!(r.status, 400, "?action={v}: {}", r.text());
    }
    assert_eq!(s.quick_snapshot(c.instance_id).await, before);
    assert!(n > 500);
}

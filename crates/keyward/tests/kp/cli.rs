//! `keyward kp` imports, wrap/unwrap, offline tools, token auth and errors.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::Value;

use crate::{rt, Server};

fn has_reason_code(stderr: &str) -> bool {
    stderr
        .split(|c: char| !(c.is_ascii_uppercase() || c == '_'))
        .any(|w| w.len() > 4 && w.ends_with("_ERR"))
}

#[test]
fn secure_import_then_wrap_unwrap() {
    let s = Server::start(2);
    for n in [16usize, 24, 32] {
        let material = keyward_crypto::random_bytes(n).unwrap();
        let file = s.write(&format!("m{n}.bin"), &material);
        let name = format!("secure-{n}");
        let key = s.kp(&[
            "key",
            "import",
            "--name",
            &name,
            "--material-file",
            &file,
            "--secure",
        ]);
        assert_eq!(key["name"], name.as_str(), "{key}");
        assert_eq!(key["imported"], true, "{key}");
        assert_eq!(key["extractable"], false, "{key}");
        assert_eq!(key["state"], 1, "{key}");
        assert!(key.get("payload").is_none(), "{key}");
        let id = key["id"].as_str().unwrap().to_owned();
        s.wrap_unwrap(&id, &["tenant-1", "disk-7"]);
        s.wrap_unwrap(&id, &[]);
    }

    // Base64 text material and --reuse-token: the token made by the last import has used its
    // single retrieval, so --reuse-token falls back to creating a new one.
    let material = keyward_crypto::random_bytes(24).unwrap();
    let file = s.write("m24.b64", format!("{}\n", B64.encode(&material)).as_bytes());
    let key = s.kp(&[
        "key",
        "import",
        "--name",
        "secure-b64",
        "--material-file",
        &file,
        "--secure",
        "--reuse-token",
    ]);
    assert_eq!(key["imported"], true);
    let id = key["id"].as_str().unwrap().to_owned();

    // AAD is checked: the wrong order fails with a reason code.
    let w = s.kp(&["key", "wrap", &id, "--aad", "a", "--aad", "b"]);
    let ct = w["ciphertext"].as_str().unwrap();
    let (_, err) = s.kp_fail(&[
        "key",
        "unwrap",
        &id,
        "--ciphertext",
        ct,
        "--aad",
        "b",
        "--aad",
        "a",
    ]);
    assert!(err.contains("UNPROCESSABLE_CIPHERTEXT_ERR"), "{err}");

    // Secure rotation of an imported key, then the old ciphertext still unwraps.
    let new_material = keyward_crypto::random_bytes(32).unwrap();
    let file = s.write("rot.bin", &new_material);
    let before = s.kp(&["key", "show", &id]);
    let after = s.kp(&["key", "rotate", &id, "--material-file", &file, "--secure"]);
    assert_ne!(
        before["keyVersion"]["id"], after["keyVersion"]["id"],
        "{after}"
    );
    let u = s.kp(&[
        "key",
        "unwrap",
        &id,
        "--ciphertext",
        ct,
        "--aad",
        "a",
        "--aad",
        "b",
    ]);
    assert_eq!(
        B64.decode(u["plaintext"].as_str().unwrap()).unwrap().len(),
        32
    );
}

#[test]
fn plain_import_standard_key_and_lifecycle() {
    let s = Server::start(2);
    let material = keyward_crypto::random_bytes(32).unwrap();
    let file = s.write("root.bin", &material);
    let key = s.kp(&[
        "key",
        "import",
        "--name",
        "plain-root",
        "--material-file",
        &file,
    ]);
    assert_eq!(key["imported"], true, "{key}");
    assert_eq!(key["extractable"], false, "{key}");
    let id = key["id"].as_str().unwrap().to_owned();
    s.wrap_unwrap(&id, &["x"]);

    // generated root key
    let gen = s.kp(&["key", "create", "--name", "generated-root"]);
    assert_eq!(gen["imported"], false, "{gen}");
    s.wrap_unwrap(gen["id"].as_str().unwrap(), &[]);

    // standard import: payload only with --with-payload
    let std_material = keyward_crypto::random_bytes(100).unwrap();
    let file = s.write("std.bin", &std_material);
    let sk = s.kp(&[
        "key",
        "import",
        "--name",
        "plain-std",
        "--material-file",
        &file,
        "--standard",
    ]);
    assert_eq!(sk["extractable"], true, "{sk}");
    let sid = sk["id"].as_str().unwrap().to_owned();
    let shown = s.kp(&["key", "show", &sid]);
    assert!(shown.get("payload").is_none(), "{shown}");
    let shown = s.kp(&["key", "show", &sid, "--with-payload"]);
    assert_eq!(
        shown["payload"].as_str().unwrap(),
        B64.encode(&std_material)
    );

    // list (json = server envelope) and the human table
    let list = s.kp(&["key", "list"]);
    let ids: Vec<&str> = list["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["id"].as_str())
        .collect();
    assert!(
        ids.contains(&id.as_str()) && ids.contains(&sid.as_str()),
        "{list}"
    );
    let human = s.kp_raw(&["key", "list", "--output", "human"], &[]);
    assert!(human.status.success());
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.starts_with("ID "), "{text}");
    assert!(text.contains(&id), "{text}");
    let human = s.kp_raw(&["key", "show", &id, "--output", "human"], &[]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("id:") && text.contains("imported:") && text.contains("true"),
        "{text}"
    );

    // plain rotation of the imported root key
    let w = s.kp(&["key", "wrap", &id]);
    let new_material = keyward_crypto::random_bytes(16).unwrap();
    let file = s.write("rot16.bin", &new_material);
    let after = s.kp(&["key", "rotate", &id, "--material-file", &file]);
    assert_ne!(
        after["keyVersion"]["id"], key["keyVersion"]["id"],
        "{after}"
    );
    let u = s.kp(&[
        "key",
        "unwrap",
        &id,
        "--ciphertext",
        w["ciphertext"].as_str().unwrap(),
    ]);
    assert_eq!(u["plaintext"], w["plaintext"]);

    // delete
    let d = s.kp(&["key", "delete", &id]);
    assert_eq!(d["state"], 5, "{d}");
    let (_, err) = s.kp_fail(&["key", "wrap", &id]);
    assert!(has_reason_code(&err), "{err}");
}

#[test]
fn bad_material_and_errors_exit_non_zero() {
    let s = Server::start(2);
    // plain root import of 20 bytes: the server refuses it with a reason code
    let file = s.write("m20.bin", &keyward_crypto::random_bytes(20).unwrap());
    let (code, err) = s.kp_fail(&[
        "key",
        "import",
        "--name",
        "bad-len",
        "--material-file",
        &file,
    ]);
    assert_ne!(code, 0);
    assert!(has_reason_code(&err), "no reason code on stderr: {err}");
    // secure import of 20 bytes: refused locally before anything is sent
    let (code, err) = s.kp_fail(&[
        "key",
        "import",
        "--name",
        "bad-len",
        "--material-file",
        &file,
        "--secure",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("16, 24 or 32"), "{err}");
    // nothing was created
    let list = s.kp(&["key", "list"]);
    assert_eq!(
        list["resources"].as_array().map_or(0, Vec::len),
        0,
        "{list}"
    );

    // --secure with --standard is a usage error
    let file = s.write("m32.bin", &keyward_crypto::random_bytes(32).unwrap());
    let (code, _) = s.kp_fail(&[
        "key",
        "import",
        "--name",
        "x",
        "--material-file",
        &file,
        "--secure",
        "--standard",
    ]);
    assert_eq!(code, 2);

    // unknown key
    let (_, err) = s.kp_fail(&["key", "show", "3f8b2a5e-7c1d-4e6f-9a0b-1c2d3e4f5a6b"]);
    assert!(err.contains("KEY_NOT_FOUND_ERR"), "{err}");

    // wrong API key: fails, and prints neither key
    let out = s.kp_raw(
        &["--output", "json", "key", "list"],
        &[("KP_APIKEY", "kw_not-a-real-key-0123456789")],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("kw_not-a-real-key-0123456789"), "{err}");
}

#[test]
fn offline_tools_and_token_auth() {
    let s = Server::start(2);
    let created = s.kp(&[
        "import-token",
        "create",
        "--max-retrievals",
        "2",
        "--expiration",
        "900",
    ]);
    assert_eq!(created["maxAllowedRetrievals"], 2, "{created}");
    let pem_file = s.path("token.pem");
    let tok = s.kp(&[
        "import-token",
        "show",
        "--pubkey-out",
        pem_file.to_str().unwrap(),
    ]);
    assert_eq!(tok["remainingRetrievals"], 1, "{tok}");
    let payload = tok["payload"].as_str().unwrap();
    let nonce = tok["nonce"].as_str().unwrap();
    let pem = std::fs::read_to_string(&pem_file).unwrap();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");

    let token = s.iam_token();
    for (i, pubkey_flag, pubkey) in [
        (0, "--pubkey", payload.to_owned()),
        (1, "--pubkey-file", pem_file.to_str().unwrap().to_owned()),
    ] {
        let material = keyward_crypto::random_bytes(32).unwrap();
        let file = s.write(&format!("off{i}.bin"), &material);
        let enc = s.kp(&[
            "import-token",
            "key-encrypt",
            "--key-material-file",
            &file,
            pubkey_flag,
            &pubkey,
        ]);
        let b64m = B64.encode(&material);
        let n = s.kp(&[
            "import-token",
            "nonce-encrypt",
            "--key-material",
            &b64m,
            "--nonce",
            nonce,
        ]);
        // A hand-made secure import with the offline outputs.
        let body = serde_json::json!({
            "metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
            "resources": [{
                "type": "application/vnd.ibm.kms.key+json", "name": format!("offline-{i}"),
                "extractable": false, "payload": enc["payload"], "encryptionAlgorithm": enc["encryptionAlgorithm"],
                "encryptedNonce": n["encryptedNonce"], "iv": n["iv"],
            }]
        });
        let (status, v) = rt().block_on(async {
            let r = reqwest::Client::new()
                .post(format!("{}/api/v2/keys", s.url))
                .bearer_auth(&token)
                .header("bluemix-instance", &s.instance)
                .header("content-type", "application/vnd.ibm.kms.key+json")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            let st = r.status().as_u16();
            (st, r.json::<Value>().await.unwrap())
        });
        assert_eq!(status, 201, "{v}");
        let id = v["resources"][0]["id"].as_str().unwrap().to_owned();
        s.wrap_unwrap(&id, &[]);
    }

    // --token instead of --apikey (with and without the "Bearer " prefix)
    for t in [token.clone(), format!("Bearer {token}")] {
        let out = s.kp_raw(
            &["--output", "json", "key", "list"],
            &[("KP_TOKEN", &t), ("KP_APIKEY", "")],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["resources"].as_array().unwrap().len(), 2, "{v}");
        assert!(!String::from_utf8_lossy(&out.stderr).contains(&token));
    }
    // the retrieval counter: one retrieval left, then exhausted
    s.kp(&["import-token", "show"]);
    let (_, err) = s.kp_fail(&["import-token", "show"]);
    assert!(
        err.contains("IMPORT_TOKEN_RETRIEVALS_EXHAUSTED_ERR"),
        "{err}"
    );
}

/// The hybrid post-quantum path (docs/import-tokens.md): `import-token create --pq`, and
/// `key import` / `key rotate` with `--secure --pq`.
#[test]
fn pq_secure_import_and_rotation() {
    let s = Server::start(0);
    let t = s.kp(&["import-token", "create", "--pq", "--max-retrievals", "2"]);
    assert_eq!(t["algorithm"], "XWING_MLKEM768_X25519", "{t}");
    let shown = s.kp(&["import-token", "show"]);
    assert_eq!(shown["algorithm"], "XWING_MLKEM768_X25519", "{shown}");
    assert_eq!(
        B64.decode(shown["payload"].as_str().unwrap())
            .unwrap()
            .len(),
        1216
    );
    // --reuse-token uses that token's last retrieval.
    let material = keyward_crypto::random_bytes(32).unwrap();
    let file = s.write("pq.bin", &material);
    let key = s.kp(&[
        "key",
        "import",
        "--name",
        "pq-1",
        "--material-file",
        &file,
        "--secure",
        "--pq",
        "--reuse-token",
    ]);
    assert_eq!(key["imported"], true, "{key}");
    let id = key["id"].as_str().unwrap().to_owned();
    s.wrap_unwrap(&id, &["pq"]);
    // Without --reuse-token: a fresh X-Wing token per command.
    let material = keyward_crypto::random_bytes(16).unwrap();
    let file = s.write("pq16.bin", &material);
    let after = s.kp(&[
        "key",
        "rotate",
        &id,
        "--material-file",
        &file,
        "--secure",
        "--pq",
    ]);
    assert_eq!(after["algorithmBitSize"], 128, "{after}");
    s.wrap_unwrap(&id, &[]);
    // An RSA token with retrievals left is not silently used for --pq, nor the other way round.
    s.kp(&["import-token", "create", "--max-retrievals", "5"]);
    let (_, err) = s.kp_fail(&[
        "key",
        "import",
        "--name",
        "pq-2",
        "--material-file",
        &file,
        "--secure",
        "--pq",
        "--reuse-token",
    ]);
    assert!(err.contains("RSA-4096"), "{err}");
    s.kp(&["import-token", "create", "--pq", "--max-retrievals", "5"]);
    let (_, err) = s.kp_fail(&[
        "key",
        "import",
        "--name",
        "rsa-2",
        "--material-file",
        &file,
        "--secure",
        "--reuse-token",
    ]);
    assert!(err.contains("X-Wing"), "{err}");
}

//! Durability with the real binary (a small crash-consistency run): keys, versions, import tokens and
//! ciphertexts survive a graceful restart (SIGTERM), and `kill -9` right after an acknowledged
//! write loses nothing. API keys come from `keyward admin` while the server runs.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use keyward_crypto::import::OaepHash;
use keyward_crypto::SecretBytes;
use keyward_domain::InstanceId;
use serde_json::{json, Value};

use crate::common::*;
use keyward_testsupport::{Node, NodeOpts};

/// A `keyward serve` on a data dir; every start on one data dir appends to `DATA.log`.
pub(crate) type Proc = Node;

async fn start(data: &Path) -> Proc {
    start_with(data, &[]).await
}

/// SIGKILL, at once, and the same command again on the same port (the log goes on); waits
/// until it is healthy.
async fn restart(p: &mut Proc) {
    p.restart();
    p.wait_health(200).await;
}

/// Starts the binary on `data` with more `serve` flags (e.g. `--database-url`); waits until it
/// is healthy.
pub(crate) async fn start_with(data: &Path, extra: &[&str]) -> Proc {
    let mut p = Node::spawn_appending(
        "keyward",
        &NodeOpts::sqlite(data),
        extra,
        &[],
        &data.with_extension("log"),
    );
    p.wait_health(200).await;
    p
}

pub(crate) use keyward_testsupport::admin_json as admin;

/// An instance and a Manager key made with the admin CLI; returns a logged-in client.
pub(crate) async fn setup(p: &Proc, data: &Path) -> Client {
    let inst = admin(data, &["instance", "create", "--name", "durability"]);
    let inst_id = inst["id"].as_str().unwrap().to_string();
    let key = admin(
        data,
        &[
            "apikey",
            "create",
            "--instance",
            &inst_id,
            "--role",
            "Manager",
        ],
    );
    assert_eq!(key["instance"], inst_id.as_str());
    assert_eq!(key["role"], "Manager");
    let apikey = key["apikey"].as_str().unwrap();
    assert!(apikey.starts_with("kw_"));
    Client::login(
        &p.base,
        InstanceId::parse(&inst_id).unwrap(),
        apikey,
        key["iam_id"].as_str().unwrap(),
    )
    .await
}

/// The same principal against a restarted server (a fresh HTTP client, a fresh token).
pub(crate) async fn relogin(c: &Client, p: &Proc) -> Client {
    Client::login(&p.base, c.instance_id, &c.apikey, &c.iam_id).await
}

/// A wrapped DEK made on the client side for an imported key: proves after a crash that the
/// stored version holds exactly that material.
fn client_side_wrap(material: &[u8], key_id: &str, version: &str, dek: &[u8]) -> String {
    let ad = keyward_crypto::dek::dek_aad(key_id, version, &[]);
    let (iv, ct) = keyward_crypto::dek::seal(&SecretBytes::copy_from(material), &ad, dek).unwrap();
    encode_blob(
        &json!({"ciphertext": B64.encode(ct), "iv": B64.encode(iv), "version": "4.0.0", "handle": version}),
    )
}

struct Expect {
    id: String,
    meta: Value,
    checks: Vec<(String, Vec<u8>)>,
}

async fn verify(c: &Client, want: &[Expect]) {
    let listed = c
        .get("/api/v2/keys?state=0,1,2,3,5&limit=5000")
        .await
        .expect(200);
    assert_eq!(
        listed["metadata"]["collectionTotal"],
        want.len(),
        "{listed}"
    );
    for e in want {
        let m = c
            .get(&format!("/api/v2/keys/{}/metadata", e.id))
            .await
            .resource(200);
        for f in [
            "id",
            "name",
            "state",
            "extractable",
            "imported",
            "creationDate",
            "crn",
        ] {
            assert_eq!(m[f], e.meta[f], "{} {f}", e.id);
        }
        assert_eq!(
            m["keyVersion"]["id"], e.meta["keyVersion"]["id"],
            "{}",
            e.id
        );
        for (ct, dek) in &e.checks {
            assert_eq!(&c.unwrap_bytes(&e.id, ct, None).await, dek, "{}", e.id);
        }
    }
}

#[tokio::test]
async fn graceful_restart_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let data: PathBuf = dir.path().join("data");
    let p = start(&data).await;
    let c = setup(&p, &data).await;
    let mut want = Vec::new();
    for i in 0..3 {
        let k = if i == 1 {
            c.import_root_key(&random(24)).await
        } else {
            c.create_root_key().await
        };
        let id = id_of(&k);
        let dek = random(32);
        let ct = c.wrap_bytes(&id, &dek, None).await;
        want.push(Expect {
            id,
            meta: k,
            checks: vec![(ct, dek)],
        });
    }
    let std = c.create_standard_key().await;
    let std_payload = std["payload"].clone();
    want.push(Expect {
        id: id_of(&std),
        meta: std.clone(),
        checks: vec![],
    });
    // A rotation: the key's new version and the old ciphertext both survive.
    let rid = want[0].id.clone();
    c.rotate(&rid, &json!({})).await.expect(204);
    want[0].meta = c
        .get(&format!("/api/v2/keys/{rid}/metadata"))
        .await
        .resource(200);
    let dek = random(16);
    let ct = c.wrap_bytes(&rid, &dek, None).await;
    want[0].checks.push((ct, dek));
    let old_token = c.clone();

    p.terminate();
    let p = start(&data).await;
    // Tokens issued before the restart stay valid (the signing key is persisted).
    let old = Client {
        base: p.base.clone(),
        http: http_client(),
        ..old_token
    };
    old.get("/api/v2/keys").await.expect(200);
    let c = relogin(&c, &p).await;
    verify(&c, &want).await;
    let g = c
        .get(&format!("/api/v2/keys/{}", id_of(&std)))
        .await
        .resource(200);
    assert_eq!(g["payload"], std_payload);
    // And the instance keeps working.
    let k = c.create_root_key().await;
    c.wrap_bytes(&id_of(&k), &random(32), None).await;
    p.terminate();
}

#[tokio::test]
async fn kill_9_after_each_acknowledged_write_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data: PathBuf = dir.path().join("data");
    let mut p = start(&data).await;
    let mut c = setup(&p, &data).await;
    let mut want: Vec<Expect> = Vec::new();

    for i in 0..6 {
        let dek = random(32);
        match i % 3 {
            // Plain import: SIGKILL right after the 201; a ciphertext made client-side with
            // the known material must unwrap after the restart.
            0 => {
                let m = random(32);
                let k = c.import_root_key(&m).await;
                p.kill();
                let id = id_of(&k);
                let ct = client_side_wrap(&m, &id, k["keyVersion"]["id"].as_str().unwrap(), &dek);
                want.push(Expect {
                    id,
                    meta: k,
                    checks: vec![(ct, dek)],
                });
            }
            // Generated root key: SIGKILL right after the 201, then after a wrap.
            1 => {
                let k = c.create_root_key().await;
                p.kill();
                p = start(&data).await;
                c = relogin(&c, &p).await;
                let id = id_of(&k);
                want.push(Expect {
                    id: id.clone(),
                    meta: k,
                    checks: vec![],
                });
                verify(&c, &want).await;
                let ct = c.wrap_bytes(&id, &dek, None).await;
                p.kill();
                want.last_mut().unwrap().checks.push((ct, dek));
            }
            // Standard key with material: SIGKILL right after the 201.
            _ => {
                let m = random(64);
                let k = c
                    .create(json!({"type": KEY_TYPE, "name": "std", "extractable": true, "payload": B64.encode(&m)}))
                    .await
                    .resource(201);
                p.kill();
                p = start(&data).await;
                c = relogin(&c, &p).await;
                let g = c
                    .get(&format!("/api/v2/keys/{}", id_of(&k)))
                    .await
                    .resource(200);
                assert_eq!(unb64(g["payload"].as_str().unwrap()), m);
                p.kill();
                want.push(Expect {
                    id: id_of(&k),
                    meta: k,
                    checks: vec![],
                });
            }
        }
        p = start(&data).await;
        c = relogin(&c, &p).await;
        verify(&c, &want).await;
    }

    // Rotation: SIGKILL right after the 204; the new version is there and the old ciphertext
    // unwraps with a rewrap to it.
    let id = want[1].id.clone();
    let v1 = want[1].meta["keyVersion"]["id"].clone();
    c.rotate(&id, &json!({})).await.expect(204);
    restart(&mut p).await;
    c = relogin(&c, &p).await;
    let m = c
        .get(&format!("/api/v2/keys/{id}/metadata"))
        .await
        .resource(200);
    assert_ne!(m["keyVersion"]["id"], v1);
    assert!(m["lastRotateDate"].is_string());
    let (ct, dek) = want[1].checks[0].clone();
    let u = c.unwrap(&id, &ct, None).await.expect(200);
    assert_eq!(unb64(u["plaintext"].as_str().unwrap()), dek);
    assert_eq!(u["rewrappedKeyVersion"]["id"], m["keyVersion"]["id"]);
    want[1].meta = m;

    // Delete: SIGKILL right after the 204; the key stays deleted.
    let del = want[0].id.clone();
    c.delete(&format!("/api/v2/keys/{del}")).await.expect(204);
    restart(&mut p).await;
    c = relogin(&c, &p).await;
    assert_error(
        &c.delete(&format!("/api/v2/keys/{del}")).await,
        410,
        "KEY_DELETED_ERR",
    );
    assert_eq!(
        c.get(&format!("/api/v2/keys/{del}/metadata"))
            .await
            .resource(200)["state"],
        5
    );
    want[0].meta["state"] = json!(5);
    want[0].checks.clear();

    // Import token: created (200) then SIGKILL; one retrieval (200) then SIGKILL. The counter
    // and the keypair survive, and a secure import with it works.
    c.create_token(&json!({"expiration": 3600, "maxAllowedRetrievals": 2}))
        .await
        .expect(200);
    restart(&mut p).await;
    c = relogin(&c, &p).await;
    let g = c.get_token().await.expect(200);
    assert_eq!(g["remainingRetrievals"], 1);
    restart(&mut p).await;
    c = relogin(&c, &p).await;
    let g = c.get_token().await.expect(200);
    assert_eq!(g["remainingRetrievals"], 0);
    let t = ImportToken::from_get(&g);
    let m = random(32);
    let k = c
        .create(t.secure_fields(&m, OaepHash::Sha256).resource())
        .await
        .resource(201);
    restart(&mut p).await;
    c = relogin(&c, &p).await;
    assert_error(
        &c.get_token().await,
        409,
        "IMPORT_TOKEN_RETRIEVALS_EXHAUSTED_ERR",
    );
    let dek = random(32);
    let id = id_of(&k);
    let ct = client_side_wrap(&m, &id, k["keyVersion"]["id"].as_str().unwrap(), &dek);
    want.push(Expect {
        id,
        meta: k,
        checks: vec![(ct, dek)],
    });
    verify(&c, &want).await;
    p.terminate();
}

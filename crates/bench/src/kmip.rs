//! The `kmip` scenario (only when named): Get and Create operations per second over N
//! mutual-TLS KMIP connections (default 16) to `keyward serve --kmip-listen`, each one
//! request message with one batch item, closed loop. The server runs with a fresh
//! certificate pair, an adapter bound to a root key and the client's certificate registered
//! through the management API, as docs/kmip.md sets it up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use hyper::Method;
use keyward_kmip::tags::{self, op};
use keyward_kmip::ttlv::{self, Limits, Ttlv};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::http::RunResult;
use crate::report::Scenario;
use crate::server::Nodes;
use crate::{bearer_token, key_envelope, progress, str_field, Args, Ctx, Launch, Setup};

const ADAPTER_TYPE: &str = "application/vnd.ibm.kms.kmip_adapter+json";
const CERT_TYPE: &str = "application/vnd.ibm.kms.kmip_client_certificate+json";
const KEY_CT: &str = "application/vnd.ibm.kms.key+json";

fn request(operation: u32, payload: Vec<Ttlv>) -> Vec<u8> {
    ttlv::encode(&Ttlv::structure(
        tags::REQUEST_MESSAGE,
        vec![
            Ttlv::structure(
                tags::REQUEST_HEADER,
                vec![
                    keyward_kmip::message::protocol_version((1, 2)),
                    Ttlv::int(tags::BATCH_COUNT, 1),
                ],
            ),
            Ttlv::structure(
                tags::BATCH_ITEM,
                vec![
                    Ttlv::enumeration(tags::OPERATION, operation),
                    Ttlv::structure(tags::REQUEST_PAYLOAD, payload),
                ],
            ),
        ],
    ))
}

fn attr(name: &str, value: Ttlv) -> Ttlv {
    Ttlv::structure(
        tags::ATTRIBUTE,
        vec![Ttlv::text(tags::ATTRIBUTE_NAME, name), value],
    )
}

fn create_aes256() -> Vec<u8> {
    request(
        op::CREATE,
        vec![
            Ttlv::enumeration(tags::OBJECT_TYPE, tags::object_type::SYMMETRIC_KEY),
            Ttlv::structure(
                tags::TEMPLATE_ATTRIBUTE,
                vec![
                    attr(
                        "Cryptographic Algorithm",
                        Ttlv::enumeration(tags::ATTRIBUTE_VALUE, tags::ALGORITHM_AES),
                    ),
                    attr(
                        "Cryptographic Length",
                        Ttlv::int(tags::ATTRIBUTE_VALUE, 256),
                    ),
                ],
            ),
        ],
    )
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn connect(addr: std::net::SocketAddr, cfg: Arc<rustls::ClientConfig>) -> Result<Tls> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::try_from("localhost")?.to_owned();
    Ok(tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await?)
}

/// Sends one request; returns the response's payload (or the failure's reason).
async fn call(s: &mut Tls, req: &[u8]) -> Result<Ttlv> {
    s.write_all(req).await?;
    let mut head = [0u8; 8];
    s.read_exact(&mut head).await?;
    let (_, _, len) = ttlv::peek_header(&head);
    let mut buf = vec![0u8; 8 + len as usize];
    buf[..8].copy_from_slice(&head);
    s.read_exact(&mut buf[8..]).await?;
    let msg = ttlv::decode(&buf, &Limits::default())?;
    let item = msg
        .child(tags::BATCH_ITEM)
        .ok_or_else(|| anyhow!("no batch item"))?;
    if item.child(tags::RESULT_STATUS).and_then(Ttlv::as_enum) != Some(0) {
        let why = item
            .child(tags::RESULT_MESSAGE)
            .and_then(Ttlv::as_text)
            .unwrap_or("?");
        bail!("KMIP operation failed: {why}");
    }
    item.child(tags::RESPONSE_PAYLOAD)
        .cloned()
        .ok_or_else(|| anyhow!("no payload"))
}

async fn closed_loop(
    addr: std::net::SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    req: Arc<Vec<u8>>,
    connections: usize,
    warmup: Duration,
    duration: Duration,
) -> Result<RunResult> {
    let start = Instant::now() + warmup;
    let end = start + duration;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (cfg, req) = (cfg.clone(), req.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let (mut ok, mut errors, mut first) = (0u64, 0u64, None);
            let mut s = connect(addr, cfg.clone()).await?;
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let r = call(&mut s, &req).await;
                let t1 = Instant::now();
                if t0 >= start {
                    lat.push(t1.duration_since(t0).as_nanos() as u64);
                    match &r {
                        Ok(_) => ok += 1,
                        Err(e) => {
                            errors += 1;
                            first.get_or_insert_with(|| e.to_string());
                        }
                    }
                }
                if r.is_err() {
                    s = connect(addr, cfg.clone()).await?;
                }
            }
            Ok::<_, anyhow::Error>((lat, ok, errors, first))
        }));
    }
    let mut res = RunResult {
        latencies_ns: Vec::new(),
        ok: 0,
        statuses: Default::default(),
        transport_errors: 0,
        first_error: None,
        elapsed: duration,
        cpu: None,
        pool_depths: Vec::new(),
    };
    for t in tasks {
        let (lat, ok, errors, first) = t.await??;
        res.latencies_ns.extend(lat);
        res.ok += ok;
        res.transport_errors += errors;
        if res.first_error.is_none() {
            res.first_error = first;
        }
    }
    Ok(res)
}

pub async fn run(
    args: &Args,
    launch: &Launch,
    nodes: &mut Nodes,
    setup: &Setup,
) -> Result<Vec<Scenario>> {
    let dir = launch.root.join("kmip");
    std::fs::create_dir_all(&dir)?;
    let server = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])?;
    let client = rcgen::generate_simple_self_signed(vec!["bench-client".into()])?;
    let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
    std::fs::write(&cert, server.cert.pem())?;
    std::fs::write(&key, server.key_pair.serialize_pem())?;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let kmip_addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    nodes.stop().await;
    *nodes = launch
        .start(
            "serve-kmip",
            &[
                "--kmip-listen".into(),
                kmip_addr.to_string(),
                "--kmip-tls-cert".into(),
                cert.display().to_string(),
                "--kmip-tls-key".into(),
                key.display().to_string(),
            ],
            Some(1),
        )
        .await?;
    let ctx = Ctx::new(
        nodes,
        bearer_token(nodes.first().addr, &setup.apikey).await?,
        setup.instance.clone(),
    );
    let created = ctx
        .json(
            Method::POST,
            "/api/v2/keys",
            KEY_CT,
            key_envelope(json!({"type": KEY_CT, "name": "kmip-root", "extractable": false})),
        )
        .await?;
    let crk = created
        .pointer("/resources/0/id")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("no key id in {created}"))?
        .to_string();
    let adapter = ctx
        .json(
            Method::POST,
            "/api/v2/kmip_adapters",
            "application/json",
            json!({"metadata": {"collectionType": ADAPTER_TYPE, "collectionTotal": 1},
                   "resources": [{"name": "bench", "profile": "native_1.0", "profile_data": {"crk_id": crk}}]}),
        )
        .await?;
    let adapter_id = str_field(&adapter["resources"][0], "id")?.to_string();
    ctx.json(
        Method::POST,
        &format!("/api/v2/kmip_adapters/{adapter_id}/certificates"),
        "application/json",
        json!({"metadata": {"collectionType": CERT_TYPE, "collectionTotal": 1},
               "resources": [{"name": "bench-client", "certificate": client.cert.pem()}]}),
    )
    .await?;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(server.cert.der().clone())?;
    let client_key = rustls::pki_types::PrivateKeyDer::try_from(client.key_pair.serialize_der())
        .map_err(|e| anyhow!("client key: {e}"))?;
    let cfg = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![client.cert.der().clone()], client_key)
        .context("client certificate")?,
    );

    // One key for Get.
    let mut s = connect(kmip_addr, cfg.clone()).await?;
    let p = call(&mut s, &create_aes256()).await?;
    let uid = p
        .child(tags::UNIQUE_IDENTIFIER)
        .and_then(Ttlv::as_text)
        .ok_or_else(|| anyhow!("no Unique Identifier"))?
        .to_string();
    drop(s);
    let get = request(op::GET, vec![Ttlv::text(tags::UNIQUE_IDENTIFIER, uid)]);
    let warmup = Duration::from_secs_f64(args.warmup);
    let duration = Duration::from_secs_f64(args.duration);
    let conns = args.connections;
    let mut out = Vec::new();
    for (name, req) in [("kmip-get", get), ("kmip-create", create_aes256())] {
        progress(&format!("{name}: {conns} mTLS connections"));
        let res = closed_loop(
            kmip_addr,
            cfg.clone(),
            Arc::new(req),
            conns,
            warmup,
            duration,
        )
        .await?;
        let mut sc = Scenario::new(name, "closed-loop", conns, res);
        sc.note = Some("KMIP 1.2 over mutual TLS, one batch item per message".into());
        out.push(sc);
    }
    Ok(out)
}

//! Executes `keyward kp` commands.

use anyhow::{anyhow, bail, Context};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use keyward_crypto::import::{encrypt_material, encrypt_nonce, OaepHash};
use keyward_crypto::pq;
use keyward_crypto::SecretBytes;
use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};

use crate::http::{parse_base, ApiError, Client, Credentials, Secret};
use crate::lifecycle;
use crate::material::{
    check_root_length, decode_material_arg, public_key_pem, read_material_file, MaterialFormat,
};
use crate::out::{emit, emit_json, fields, key_table, pick, OutputFormat};
use crate::resource::{first_resource, print_key, strip_payload, CT_JSON, CT_KEY, PREFER_REPR};
use crate::{HashArg, ImportTokenCmd, KeyCmd, KeyMaterialArg, KpArgs, KpCommand, PubkeyArg};

const CT_WRAP: &str = "application/vnd.ibm.kms.key_action_wrap+json";
const CT_UNWRAP: &str = "application/vnd.ibm.kms.key_action_unwrap+json";
const CT_ROTATE: &str = "application/vnd.ibm.kms.key_action_rotate+json";

/// Lifetime and retrievals of the token `--secure` creates: the shortest Key Protect allows.
const SECURE_TOKEN_EXPIRATION: u64 = 300;
const SECURE_TOKEN_RETRIEVALS: u64 = 1;

const TOKEN_FIELDS: &[&str] = &[
    "creationDate",
    "expirationDate",
    "expiration",
    "maxAllowedRetrievals",
    "remainingRetrievals",
];

impl From<HashArg> for OaepHash {
    fn from(h: HashArg) -> Self {
        match h {
            HashArg::Sha256 => OaepHash::Sha256,
            HashArg::Sha1 => OaepHash::Sha1,
        }
    }
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty())
}

fn env_fallback(v: Option<String>, var: &str) -> Option<String> {
    non_empty(v).or_else(|| non_empty(std::env::var(var).ok()))
}

fn client(args: &KpArgs) -> anyhow::Result<Client> {
    let url = env_fallback(args.url.clone(), "KEYWARD_URL")
        .ok_or_else(|| anyhow!("no service URL: pass --url or set KP_URL (or KEYWARD_URL)"))?;
    let base = parse_base(&url, "--url")?;
    let instance = non_empty(args.instance.clone())
        .ok_or_else(|| anyhow!("no instance: pass --instance or set KP_INSTANCE_ID"))?;
    let instance = uuid::Uuid::parse_str(instance.trim())
        .map_err(|_| anyhow!("--instance must be a UUID"))?
        .hyphenated()
        .to_string();
    let token = args
        .token
        .as_ref()
        .filter(|t| !t.expose().trim().is_empty())
        .cloned();
    let credentials = if let Some(t) = token {
        Credentials::Token(t)
    } else {
        let apikey = args
            .apikey
            .as_ref()
            .map(|k| k.expose().to_owned())
            .and_then(|k| non_empty(Some(k)))
            .or_else(|| non_empty(std::env::var("IBMCLOUD_API_KEY").ok()))
            .ok_or_else(|| {
                anyhow!(
                    "no credentials: pass --apikey (KP_APIKEY, IBMCLOUD_API_KEY) or --token (KP_TOKEN)"
                )
            })?;
        let iam_url = match non_empty(args.iam_url.clone()) {
            Some(u) => parse_base(&u, "--iam-url")?,
            None => base.clone(),
        };
        Credentials::ApiKey {
            apikey: Secret::new(apikey.trim()),
            iam_url,
        }
    };
    let roots = match &args.cacert {
        Some(path) => {
            let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("{} is not a PEM certificate bundle", path.display()))?;
            if certs.is_empty() {
                bail!("{} holds no certificate", path.display());
            }
            Some(certs)
        }
        None => None,
    };
    Client::new(base, instance, credentials, roots)
}

pub async fn run(args: KpArgs) -> anyhow::Result<()> {
    let output = args.output;
    match &args.command {
        KpCommand::ImportToken(c) => match c {
            ImportTokenCmd::KeyEncrypt {
                material,
                pubkey,
                hash,
                material_format,
            } => key_encrypt(output, material, pubkey, *hash, *material_format),
            ImportTokenCmd::NonceEncrypt {
                material,
                nonce,
                material_format,
            } => nonce_encrypt(output, material, nonce, *material_format),
            ImportTokenCmd::Create {
                expiration,
                max_retrievals,
                pq,
            } => {
                let mut c = client(&args)?;
                let v = create_token(&mut c, *expiration, *max_retrievals, *pq).await?;
                print_token(output, &v, false)
            }
            ImportTokenCmd::Show { pubkey_out } => {
                let mut c = client(&args)?;
                let v = get_token_raw(&mut c).await?;
                if let Some(path) = pubkey_out {
                    let pem = token_pem(&v)?;
                    std::fs::write(path, pem)
                        .with_context(|| format!("writing {}", path.display()))?;
                }
                print_token(output, &v, true)
            }
        },
        KpCommand::Key(k) => {
            let mut c = client(&args)?;
            key_cmd(&mut c, output, k).await
        }
        KpCommand::Keys(list) => {
            let mut c = client(&args)?;
            key_cmd(&mut c, output, &KeyCmd::List(list.clone())).await
        }
        KpCommand::KeyRings { limit, offset } => {
            let mut c = client(&args)?;
            let list = crate::KeyRingCmd::List {
                limit: *limit,
                offset: *offset,
            };
            lifecycle::key_ring_cmd(&mut c, output, &list).await
        }
        KpCommand::KeyRing(k) => {
            let mut c = client(&args)?;
            lifecycle::key_ring_cmd(&mut c, output, k).await
        }
        KpCommand::Alias(a) => {
            let mut c = client(&args)?;
            lifecycle::alias_cmd(&mut c, output, a).await
        }
        KpCommand::InstancePolicy(p) => {
            let mut c = client(&args)?;
            lifecycle::instance_policy_cmd(&mut c, output, p).await
        }
        KpCommand::Kmip(k) => {
            let mut c = client(&args)?;
            crate::kmip::kmip_cmd(&mut c, output, k).await
        }
    }
}

// ---------------------------------------------------------------------------------------------
// import tokens

async fn create_token(
    c: &mut Client,
    expiration: Option<u64>,
    max_retrievals: Option<u64>,
    pq: bool,
) -> anyhow::Result<Value> {
    let mut body = Map::new();
    if pq {
        body.insert("algorithm".into(), json!(pq::TOKEN_ALGORITHM));
    }
    if let Some(e) = expiration {
        body.insert("expiration".into(), json!(e));
    }
    if let Some(m) = max_retrievals {
        body.insert("maxAllowedRetrievals".into(), json!(m));
    }
    let body = Value::Object(body);
    Ok(c.call(
        Method::POST,
        &["import_token"],
        &[],
        &[],
        Some((CT_JSON, &body)),
    )
    .await?
    .body)
}

async fn get_token_raw(c: &mut Client) -> anyhow::Result<Value> {
    Ok(c.call(Method::GET, &["import_token"], &[], &[], None)
        .await?
        .body)
}

fn print_token(output: OutputFormat, v: &Value, retrieved: bool) -> anyhow::Result<()> {
    match output {
        OutputFormat::Json => emit_json(v),
        OutputFormat::Human => {
            let mut rows = pick(v, TOKEN_FIELDS);
            if retrieved && v.get("payload").is_some() {
                rows.push((
                    "publicKey".into(),
                    "retrieved (see --output json or --pubkey-out)".into(),
                ));
            }
            emit(&fields(&rows))
        }
    }
}

fn token_pem(v: &Value) -> anyhow::Result<String> {
    let payload = v
        .get("payload")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("the import token response has no payload"))?;
    public_key_pem(payload.as_bytes()).context("the import token payload")
}

/// The public key and nonce of an import token.
struct Token {
    key: TokenKey,
    nonce: Vec<u8>,
}

enum TokenKey {
    Rsa { pem: String },
    XWing { public_key: Vec<u8>, id: String },
}

fn parse_token(v: &Value) -> anyhow::Result<Token> {
    let key = if v.get("algorithm").and_then(Value::as_str) == Some(pq::TOKEN_ALGORITHM) {
        let public_key = v
            .get("payload")
            .and_then(Value::as_str)
            .and_then(|p| B64.decode(p.trim()).ok())
            .filter(|k| k.len() == pq::PUBLIC_KEY_LEN)
            .ok_or_else(|| anyhow!("the import token payload is not an X-Wing public key"))?;
        let id = v
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("the X-Wing import token response has no id"))?;
        TokenKey::XWing {
            public_key,
            id: id.to_string(),
        }
    } else {
        TokenKey::Rsa { pem: token_pem(v)? }
    };
    let nonce = v
        .get("nonce")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("the import token response has no nonce"))?;
    let nonce = B64
        .decode(nonce.trim())
        .map_err(|_| anyhow!("the import token nonce is not base64"))?;
    Ok(Token { key, nonce })
}

/// Gets a token for a secure import: see `SECURE_HELP` in lib.rs for the policy.
async fn secure_token(c: &mut Client, reuse: bool, pq: bool) -> anyhow::Result<Token> {
    if reuse {
        match get_token_raw(c).await {
            Ok(v) => {
                let t = parse_token(&v)?;
                if matches!(t.key, TokenKey::XWing { .. }) != pq {
                    bail!(
                        "the current import token is {}: drop --reuse-token to create one of the kind asked for",
                        if pq { "RSA-4096, not X-Wing (--pq)" } else { "X-Wing: add --pq" }
                    );
                }
                return Ok(t);
            }
            Err(e) => {
                let replaceable = e.downcast_ref::<ApiError>().is_some_and(|a| {
                    a.status == StatusCode::NOT_FOUND || a.status == StatusCode::CONFLICT
                });
                if !replaceable {
                    return Err(e);
                }
            }
        }
    }
    create_token(
        c,
        Some(SECURE_TOKEN_EXPIRATION),
        Some(SECURE_TOKEN_RETRIEVALS),
        pq,
    )
    .await
    .context("creating an import token")?;
    let v = get_token_raw(c)
        .await
        .context("retrieving the new import token")?;
    parse_token(&v)
}

/// The flat fields of a secure import / rotate: payload, encryptedNonce, iv, encryptionAlgorithm.
fn secure_fields(
    instance: &str,
    token: &Token,
    material: &SecretBytes,
    hash: OaepHash,
) -> anyhow::Result<Map<String, Value>> {
    check_root_length(material)?;
    let failed =
        |_| anyhow!("encrypting the key material with the import token's public key failed");
    let (ct, algorithm) = match &token.key {
        TokenKey::Rsa { pem } => (
            encrypt_material(pem, hash, material.expose()).map_err(failed)?,
            hash.wire_name(),
        ),
        TokenKey::XWing { public_key, id } => {
            let binding = pq::Binding {
                token_id: id,
                instance_id: instance,
                nonce: &token.nonce,
            };
            (
                pq::encrypt_material(public_key, &binding, material.expose()).map_err(failed)?,
                pq::ENCRYPTION_ALGORITHM,
            )
        }
    };
    let (iv, enc_nonce) = encrypt_nonce(material, &token.nonce)
        .map_err(|_| anyhow!("encrypting the import token nonce failed"))?;
    let mut m = Map::new();
    m.insert("payload".into(), json!(B64.encode(ct)));
    m.insert("encryptedNonce".into(), json!(B64.encode(enc_nonce)));
    m.insert("iv".into(), json!(B64.encode(iv)));
    m.insert("encryptionAlgorithm".into(), json!(algorithm));
    Ok(m)
}

fn material_from(arg: &KeyMaterialArg, format: MaterialFormat) -> anyhow::Result<SecretBytes> {
    match (&arg.key_material_file, &arg.key_material) {
        (Some(path), _) => read_material_file(path, format),
        (None, Some(b64)) => decode_material_arg(b64.expose()),
        (None, None) => bail!("pass --key-material-file or --key-material"),
    }
}

fn key_encrypt(
    output: OutputFormat,
    material: &KeyMaterialArg,
    pubkey: &PubkeyArg,
    hash: HashArg,
    format: MaterialFormat,
) -> anyhow::Result<()> {
    let material = material_from(material, format)?;
    let pem = match (&pubkey.pubkey, &pubkey.pubkey_file) {
        (Some(p), _) => public_key_pem(p.as_bytes()).context("--pubkey")?,
        (None, Some(path)) => {
            let content =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            public_key_pem(&content).with_context(|| format!("{}", path.display()))?
        }
        (None, None) => bail!("pass --pubkey or --pubkey-file"),
    };
    let hash = OaepHash::from(hash);
    let ct = encrypt_material(&pem, hash, material.expose()).map_err(|_| {
        anyhow!("RSA-OAEP encryption failed (not an RSA public key, or the material is too long)")
    })?;
    let v = json!({"payload": B64.encode(ct), "encryptionAlgorithm": hash.wire_name()});
    match output {
        OutputFormat::Json => emit_json(&v),
        OutputFormat::Human => emit(&fields(&pick(&v, &["payload", "encryptionAlgorithm"]))),
    }
}

fn nonce_encrypt(
    output: OutputFormat,
    material: &KeyMaterialArg,
    nonce: &str,
    format: MaterialFormat,
) -> anyhow::Result<()> {
    let material = material_from(material, format)?;
    check_root_length(&material)?;
    let nonce = B64
        .decode(nonce.trim())
        .map_err(|_| anyhow!("--nonce is not base64"))?;
    let (iv, ct) =
        encrypt_nonce(&material, &nonce).map_err(|_| anyhow!("AES-GCM encryption failed"))?;
    let v = json!({"encryptedNonce": B64.encode(ct), "iv": B64.encode(iv)});
    match output {
        OutputFormat::Json => emit_json(&v),
        OutputFormat::Human => emit(&fields(&pick(&v, &["encryptedNonce", "iv"]))),
    }
}

// ---------------------------------------------------------------------------------------------
// keys

fn key_envelope(resource: Map<String, Value>) -> Value {
    json!({
        "metadata": {"collectionType": CT_KEY, "collectionTotal": 1},
        "resources": [Value::Object(resource)]
    })
}

fn base_resource(
    name: &str,
    extractable: bool,
    description: &Option<String>,
    expiration_date: &Option<String>,
) -> Map<String, Value> {
    let mut r = Map::new();
    r.insert("type".into(), json!(CT_KEY));
    r.insert("name".into(), json!(name));
    r.insert("extractable".into(), json!(extractable));
    if let Some(d) = description {
        r.insert("description".into(), json!(d));
    }
    if let Some(e) = expiration_date {
        r.insert("expirationDate".into(), json!(e));
    }
    r
}

async fn create_key(
    c: &mut Client,
    output: OutputFormat,
    resource: Map<String, Value>,
) -> anyhow::Result<()> {
    let body = key_envelope(resource);
    let resp = c
        .call(
            Method::POST,
            &["keys"],
            &[],
            &[PREFER_REPR],
            Some((CT_KEY, &body)),
        )
        .await?;
    let key = strip_payload(first_resource(resp.body)?);
    print_key(output, &key)
}

async fn key_cmd(c: &mut Client, output: OutputFormat, cmd: &KeyCmd) -> anyhow::Result<()> {
    match cmd {
        KeyCmd::Create {
            name,
            name_flag,
            standard,
            description,
            expiration_date,
        } => {
            // clap's group makes exactly one of them present
            let name = name
                .as_ref()
                .or(name_flag.as_ref())
                .context("a key name is required")?;
            let r = base_resource(name, *standard, description, expiration_date);
            create_key(c, output, r).await
        }
        KeyCmd::Import {
            name,
            material_file,
            secure,
            standard,
            reuse_token,
            pq,
            hash,
            description,
            expiration_date,
            material_format,
        } => {
            if *secure && *standard {
                bail!("--secure cannot be used with --standard: standard keys are never imported with a token");
            }
            let material = read_material_file(material_file, *material_format)?;
            let mut r = base_resource(name, *standard, description, expiration_date);
            if *secure {
                check_root_length(&material)?;
                let token = secure_token(c, *reuse_token, *pq).await?;
                r.extend(secure_fields(
                    c.instance(),
                    &token,
                    &material,
                    (*hash).into(),
                )?);
            } else {
                r.insert("payload".into(), json!(B64.encode(material.expose())));
            }
            create_key(c, output, r).await
        }
        KeyCmd::List(crate::KeyListArgs {
            limit,
            offset,
            state,
            search,
            filter,
            sort,
            key_ring,
        }) => {
            let q = lifecycle::list_query(
                *limit,
                *offset,
                &[
                    ("state", state),
                    ("search", search),
                    ("filter", filter),
                    ("sort", sort),
                ],
            );
            let mut headers = Vec::new();
            if let Some(r) = key_ring {
                headers.push((lifecycle::KEY_RING_HEADER, r.as_str()));
            }
            let resp = c.call(Method::GET, &["keys"], &q, &headers, None).await?;
            match output {
                OutputFormat::Json => emit_json(&resp.body),
                OutputFormat::Human => {
                    let keys = resp
                        .body
                        .get("resources")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    emit(&key_table(&keys))
                }
            }
        }
        KeyCmd::Show { id, with_payload } => {
            let resp = if *with_payload {
                c.call(Method::GET, &["keys", id], &[], &[], None).await?
            } else {
                c.call(Method::GET, &["keys", id, "metadata"], &[], &[], None)
                    .await?
            };
            let key = first_resource(resp.body)?;
            let key = if *with_payload {
                key
            } else {
                strip_payload(key)
            };
            print_key(output, &key)
        }
        KeyCmd::Delete { id, force } => {
            let q = if *force {
                vec![("force", "true".to_owned())]
            } else {
                Vec::new()
            };
            let resp = c
                .call(Method::DELETE, &["keys", id], &q, &[PREFER_REPR], None)
                .await?;
            let key = if resp.body.is_null() {
                json!({"id": id, "deleted": true})
            } else {
                strip_payload(first_resource(resp.body)?)
            };
            print_key(output, &key)
        }
        KeyCmd::Wrap { id, plaintext, aad } => {
            let mut body = Map::new();
            if let Some(p) = plaintext {
                body.insert("plaintext".into(), json!(p.expose().trim()));
            }
            if !aad.is_empty() {
                body.insert("aad".into(), json!(aad));
            }
            let body = Value::Object(body);
            let resp = c
                .call(
                    Method::POST,
                    &["keys", id, "actions", "wrap"],
                    &[],
                    &[],
                    Some((CT_WRAP, &body)),
                )
                .await?;
            print_action(output, &resp.body)
        }
        KeyCmd::Unwrap {
            id,
            ciphertext,
            aad,
        } => {
            let mut body = Map::new();
            body.insert("ciphertext".into(), json!(ciphertext.trim()));
            if !aad.is_empty() {
                body.insert("aad".into(), json!(aad));
            }
            let body = Value::Object(body);
            let resp = c
                .call(
                    Method::POST,
                    &["keys", id, "actions", "unwrap"],
                    &[],
                    &[],
                    Some((CT_UNWRAP, &body)),
                )
                .await?;
            print_action(output, &resp.body)
        }
        KeyCmd::Rotate {
            id,
            material_file,
            secure,
            reuse_token,
            pq,
            hash,
            material_format,
        } => {
            let body = match material_file {
                None => None,
                Some(path) => {
                    let material = read_material_file(path, *material_format)?;
                    if *secure {
                        check_root_length(&material)?;
                        let token = secure_token(c, *reuse_token, *pq).await?;
                        Some(Value::Object(secure_fields(
                            c.instance(),
                            &token,
                            &material,
                            (*hash).into(),
                        )?))
                    } else {
                        Some(json!({"payload": B64.encode(material.expose())}))
                    }
                }
            };
            c.call(
                Method::POST,
                &["keys", id, "actions", "rotate"],
                &[],
                &[],
                body.as_ref().map(|b| (CT_ROTATE, b)),
            )
            .await?;
            // 204: show the key's new state (new keyVersion, lastRotateDate).
            lifecycle::print_key_after(c, output, id, "rotated").await
        }
        other => lifecycle::key_cmd(c, output, other).await,
    }
}

/// Wrap/unwrap responses: the server JSON, or `field: value` lines.
fn print_action(output: OutputFormat, v: &Value) -> anyhow::Result<()> {
    match output {
        OutputFormat::Json => emit_json(v),
        OutputFormat::Human => {
            let mut rows = pick(v, &["plaintext", "ciphertext"]);
            for f in ["keyVersion", "rewrappedKeyVersion"] {
                if let Some(id) = v.get(f).and_then(|kv| kv.get("id")) {
                    rows.push((f.to_owned(), crate::out::scalar(id)));
                }
            }
            emit(&fields(&rows))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use keyward_crypto::import::ImportKeyPair;

    #[test]
    fn secure_fields_verify_with_the_server_half() {
        let kp = ImportKeyPair::generate().unwrap();
        let nonce = keyward_crypto::random_bytes(12).unwrap();
        let token_json = json!({
            "payload": B64.encode(kp.public_pem()),
            "nonce": B64.encode(&nonce),
        });
        let token = parse_token(&token_json).unwrap();
        for n in [16usize, 24, 32] {
            let material = keyward_crypto::random_secret(n).unwrap();
            let f = secure_fields("inst", &token, &material, OaepHash::Sha256).unwrap();
            assert_eq!(f["encryptionAlgorithm"], "RSAES_OAEP_SHA_256");
            let ct = B64.decode(f["payload"].as_str().unwrap()).unwrap();
            let got = kp.decrypt_material(OaepHash::Sha256, &ct).unwrap();
            assert_eq!(got.expose(), material.expose());
            let iv = B64.decode(f["iv"].as_str().unwrap()).unwrap();
            assert_eq!(iv.len(), 12);
            let enc = B64.decode(f["encryptedNonce"].as_str().unwrap()).unwrap();
            let opened = keyward_crypto::dek::open(&material, &iv, &[], &enc).unwrap();
            assert_eq!(opened.expose(), &nonce[..]);
        }
        let bad = SecretBytes::copy_from(&[1u8; 20]);
        assert!(secure_fields("inst", &token, &bad, OaepHash::Sha256).is_err());
    }

    #[test]
    fn envelope_shapes() {
        let r = base_resource("k", false, &Some("d".into()), &None);
        let e = key_envelope(r);
        assert_eq!(e["metadata"]["collectionTotal"], 1);
        assert_eq!(e["resources"][0]["type"], CT_KEY);
        assert_eq!(e["resources"][0]["extractable"], false);
        assert!(e["resources"][0].get("expirationDate").is_none());
        let k = first_resource(json!({"resources":[{"id":"x","payload":"p"}]})).unwrap();
        assert_eq!(strip_payload(k), json!({"id":"x"}));
        assert!(first_resource(json!({"resources":[]})).is_err());
    }
}

//! `keyward kp kmip ...`: KMIP adapters, their client certificates and objects
//! (`/api/v2/kmip_adapters/...`, docs/kmip.md).

use std::path::PathBuf;

use anyhow::Context;
use reqwest::Method;
use serde_json::{json, Value};

use crate::http::Client;
use crate::out::{emit, emit_json, fields, pick, table, OutputFormat};

const ADAPTER_TYPE: &str = "application/vnd.ibm.kms.kmip_adapter+json";
const CERT_TYPE: &str = "application/vnd.ibm.kms.kmip_client_certificate+json";
const CT_JSON: &str = "application/json";

#[derive(clap::Subcommand, Debug)]
pub enum KmipCmd {
    /// KMIP adapters (GET/POST/DELETE /api/v2/kmip_adapters)
    #[command(subcommand)]
    Adapter(AdapterCmd),
    /// Client certificates of an adapter (/api/v2/kmip_adapters/{id}/certificates)
    #[command(subcommand)]
    Cert(CertCmd),
    /// Objects KMIP clients created through an adapter (/api/v2/kmip_adapters/{id}/kmip_objects)
    #[command(subcommand)]
    Object(ObjectCmd),
}

#[derive(clap::Subcommand, Debug)]
pub enum AdapterCmd {
    /// Create an adapter bound to a root key (profile native_1.0)
    Create {
        /// The root key (id) the adapter's objects are wrapped under
        #[arg(long, value_name = "KEY_ID")]
        crk_id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// List the instance's adapters
    List {
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        offset: Option<u32>,
    },
    /// Show one adapter (id or name)
    Show { adapter: String },
    /// Delete an adapter (only without objects that are not destroyed)
    Delete { adapter: String },
}

#[derive(clap::Subcommand, Debug)]
pub enum CertCmd {
    /// Register a client certificate (PEM file) on an adapter
    Add {
        adapter: String,
        #[arg(long, value_name = "PEMFILE")]
        certificate: PathBuf,
        #[arg(long)]
        name: Option<String>,
    },
    /// List an adapter's certificates
    List {
        adapter: String,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        offset: Option<u32>,
    },
    /// Show one certificate (id or name), with its PEM
    Show { adapter: String, cert: String },
    /// Remove a certificate: its client is refused from its next request
    Delete { adapter: String, cert: String },
}

#[derive(clap::Subcommand, Debug)]
pub enum ObjectCmd {
    /// List an adapter's KMIP objects
    List {
        adapter: String,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        offset: Option<u32>,
    },
    /// Show one object
    Show { adapter: String, object: String },
    /// Destroy an object (its material is erased; the record stays, state 5)
    Delete { adapter: String, object: String },
}

fn paging(limit: Option<u32>, offset: Option<u32>) -> Vec<(&'static str, String)> {
    let mut q = Vec::new();
    if let Some(l) = limit {
        q.push(("limit", l.to_string()));
    }
    if let Some(o) = offset {
        q.push(("offset", o.to_string()));
    }
    q
}

fn resources(v: &Value) -> Vec<Value> {
    v.get("resources")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn cell(r: &Value, f: &str) -> String {
    r.get(f).map(crate::out::scalar).unwrap_or_default()
}

fn print_list(output: OutputFormat, body: &Value, cols: &[(&str, &str)]) -> anyhow::Result<()> {
    match output {
        OutputFormat::Json => emit_json(body),
        OutputFormat::Human => {
            let header: Vec<&str> = cols.iter().map(|(h, _)| *h).collect();
            let rows: Vec<Vec<String>> = resources(body)
                .iter()
                .map(|r| cols.iter().map(|(_, f)| cell(r, f)).collect())
                .collect();
            emit(&table(&header, &rows))
        }
    }
}

fn print_one(output: OutputFormat, body: &Value, names: &[&str]) -> anyhow::Result<()> {
    let r = resources(body).into_iter().next().unwrap_or(Value::Null);
    match output {
        OutputFormat::Json => emit_json(&r),
        OutputFormat::Human => emit(&fields(&pick(&r, names))),
    }
}

fn print_done(output: OutputFormat, what: &str, id: &str) -> anyhow::Result<()> {
    match output {
        OutputFormat::Json => emit_json(&json!({"id": id, "deleted": true})),
        OutputFormat::Human => emit(&format!("{what} {id} deleted")),
    }
}

const ADAPTER_FIELDS: &[&str] = &[
    "id",
    "name",
    "description",
    "profile",
    "profile_data",
    "created_at",
    "created_by",
];
const CERT_FIELDS: &[&str] = &["id", "name", "created_at", "created_by", "certificate"];
const OBJECT_FIELDS: &[&str] = &[
    "id",
    "kmip_object_type",
    "state",
    "created_at",
    "created_by_kmip_client_cert_id",
    "updated_at",
    "destroyed_at",
    "destroyed_by",
];

pub(crate) async fn kmip_cmd(
    c: &mut Client,
    output: OutputFormat,
    cmd: &KmipCmd,
) -> anyhow::Result<()> {
    match cmd {
        KmipCmd::Adapter(a) => match a {
            AdapterCmd::Create {
                crk_id,
                name,
                description,
            } => {
                let mut r = json!({"profile": "native_1.0", "profile_data": {"crk_id": crk_id}});
                if let Some(n) = name {
                    r["name"] = json!(n);
                }
                if let Some(d) = description {
                    r["description"] = json!(d);
                }
                let body = json!({"metadata": {"collectionType": ADAPTER_TYPE, "collectionTotal": 1}, "resources": [r]});
                let resp = c
                    .call(
                        Method::POST,
                        &["kmip_adapters"],
                        &[],
                        &[],
                        Some((CT_JSON, &body)),
                    )
                    .await?;
                print_one(output, &resp.body, ADAPTER_FIELDS)
            }
            AdapterCmd::List { limit, offset } => {
                let resp = c
                    .call(
                        Method::GET,
                        &["kmip_adapters"],
                        &paging(*limit, *offset),
                        &[],
                        None,
                    )
                    .await?;
                print_list(
                    output,
                    &resp.body,
                    &[
                        ("ID", "id"),
                        ("NAME", "name"),
                        ("PROFILE", "profile"),
                        ("CREATED", "created_at"),
                    ],
                )
            }
            AdapterCmd::Show { adapter } => {
                let resp = c
                    .call(Method::GET, &["kmip_adapters", adapter], &[], &[], None)
                    .await?;
                print_one(output, &resp.body, ADAPTER_FIELDS)
            }
            AdapterCmd::Delete { adapter } => {
                c.call(Method::DELETE, &["kmip_adapters", adapter], &[], &[], None)
                    .await?;
                print_done(output, "adapter", adapter)
            }
        },
        KmipCmd::Cert(k) => match k {
            CertCmd::Add {
                adapter,
                certificate,
                name,
            } => {
                let pem = std::fs::read_to_string(certificate)
                    .with_context(|| format!("reading {}", certificate.display()))?;
                let mut r = json!({"certificate": pem});
                if let Some(n) = name {
                    r["name"] = json!(n);
                }
                let body = json!({"metadata": {"collectionType": CERT_TYPE, "collectionTotal": 1}, "resources": [r]});
                let resp = c
                    .call(
                        Method::POST,
                        &["kmip_adapters", adapter, "certificates"],
                        &[],
                        &[],
                        Some((CT_JSON, &body)),
                    )
                    .await?;
                print_one(output, &resp.body, CERT_FIELDS)
            }
            CertCmd::List {
                adapter,
                limit,
                offset,
            } => {
                let resp = c
                    .call(
                        Method::GET,
                        &["kmip_adapters", adapter, "certificates"],
                        &paging(*limit, *offset),
                        &[],
                        None,
                    )
                    .await?;
                print_list(
                    output,
                    &resp.body,
                    &[("ID", "id"), ("NAME", "name"), ("CREATED", "created_at")],
                )
            }
            CertCmd::Show { adapter, cert } => {
                let resp = c
                    .call(
                        Method::GET,
                        &["kmip_adapters", adapter, "certificates", cert],
                        &[],
                        &[],
                        None,
                    )
                    .await?;
                print_one(output, &resp.body, CERT_FIELDS)
            }
            CertCmd::Delete { adapter, cert } => {
                c.call(
                    Method::DELETE,
                    &["kmip_adapters", adapter, "certificates", cert],
                    &[],
                    &[],
                    None,
                )
                .await?;
                print_done(output, "certificate", cert)
            }
        },
        KmipCmd::Object(o) => match o {
            ObjectCmd::List {
                adapter,
                limit,
                offset,
            } => {
                let resp = c
                    .call(
                        Method::GET,
                        &["kmip_adapters", adapter, "kmip_objects"],
                        &paging(*limit, *offset),
                        &[],
                        None,
                    )
                    .await?;
                print_list(
                    output,
                    &resp.body,
                    &[
                        ("ID", "id"),
                        ("TYPE", "kmip_object_type"),
                        ("STATE", "state"),
                        ("CREATED", "created_at"),
                    ],
                )
            }
            ObjectCmd::Show { adapter, object } => {
                let resp = c
                    .call(
                        Method::GET,
                        &["kmip_adapters", adapter, "kmip_objects", object],
                        &[],
                        &[],
                        None,
                    )
                    .await?;
                print_one(output, &resp.body, OBJECT_FIELDS)
            }
            ObjectCmd::Delete { adapter, object } => {
                c.call(
                    Method::DELETE,
                    &["kmip_adapters", adapter, "kmip_objects", object],
                    &[],
                    &[],
                    None,
                )
                .await?;
                print_done(output, "object", object)
            }
        },
    }
}

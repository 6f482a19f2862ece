//! `keyward admin`: instances, API keys and grants, against the same data dir or database URL
//! as the server (safe while it runs).

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context};
use keyward_domain::{format_time, Clock, InstanceId, Role, SystemClock};
use keyward_service::admin;
use keyward_store::{DatabaseUrl, SqlStore, Store};
use serde_json::{json, Value};

use crate::progress::{self, Progress};

#[derive(clap::Args, Debug)]
pub struct AdminArgs {
    /// Data directory of the server (its SQLite database) [default: ./keyward-data]
    #[arg(long, env = "KEYWARD_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Database URL (overrides --data-dir)
    #[arg(long, env = "KEYWARD_DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// Output format
    #[arg(long, default_value = "human", value_parser = ["human", "json"], global = true)]
    pub output: String,
    /// Seconds between two progress reports of `migrate`, `backup`, `restore` and
    /// `master-key rotate|migrate` when stderr is not a terminal (plain lines) or with
    /// `--output json` (JSON lines); 0: at every step [default: 5, and 1 with --output json]
    #[arg(long, value_name = "SECONDS", global = true, value_parser = progress_every)]
    pub progress_every: Option<f64>,
    /// Show no progress on stderr
    #[arg(long, global = true)]
    pub no_progress: bool,
    #[command(subcommand)]
    pub cmd: AdminCmd,
}

#[derive(clap::Subcommand, Debug)]
pub enum AdminCmd {
    /// Service instances (tenants)
    Instance(InstanceArgs),
    /// API keys (each belongs to a principal that holds roles in instances)
    Apikey(ApikeyArgs),
    /// TLS helpers
    #[command(subcommand)]
    Tls(crate::tls::TlsCmd),
    /// Read the audit log: the file (--file) or the database table (--data-dir/--database-url)
    #[command(subcommand)]
    Audit(crate::auditcmd::AuditCmd),
    /// Copy a whole deployment into an empty database (e.g. a single node's SQLite into the
    /// PostgreSQL a cluster shares): every row as it is, sealed key material unchanged, so the
    /// new nodes need the same master key file. Stop the source node first.
    Migrate(MigrateArgs),
    /// Write a consistent snapshot of the whole database (SQLite or PostgreSQL) to a file,
    /// while the server runs, encrypted and authenticated under a key sealed by the master key
    /// (so it needs the master key settings the servers use). The master key is NOT in it:
    /// back that up separately
    Backup(crate::backup::BackupArgs),
    /// Restore a backup file into a new data dir or an empty database, after verifying all of
    /// it under the master key; a damaged, truncated or edited backup is refused before
    /// anything is written
    Restore(crate::backup::RestoreArgs),
    /// The master key: status, online rotation, and migration into an HSM
    MasterKey(crate::masterkeycmd::MasterKeyArgs),
}

#[derive(clap::Args, Debug)]
pub struct MigrateArgs {
    /// Source database URL, e.g. sqlite:/var/lib/keyward/keyward.db [default: the SQLite
    /// database in --data-dir]
    #[arg(long)]
    pub from: Option<String>,
    /// Target database URL, e.g. postgres://keyward@db/keyward?sslmode=verify-full; it must be
    /// empty (its schema is created)
    #[arg(long)]
    pub to: String,
}

/// `admin instance`: rows that grant access are authenticated under a key sealed by the master
/// key, so these commands need the master key too (docs/threat-model.md).
#[derive(clap::Args, Debug)]
pub struct InstanceArgs {
    #[command(flatten)]
    pub keys: crate::masterkeycmd::MasterKeyOpts,
    #[command(subcommand)]
    pub cmd: InstanceCmd,
}

/// `admin apikey`: needs the master key like `admin instance`.
#[derive(clap::Args, Debug)]
pub struct ApikeyArgs {
    #[command(flatten)]
    pub keys: crate::masterkeycmd::MasterKeyOpts,
    #[command(subcommand)]
    pub cmd: ApikeyCmd,
}

#[derive(clap::Subcommand, Debug)]
pub enum InstanceCmd {
    /// Create an instance
    Create {
        #[arg(long, default_value = "instance")]
        name: String,
    },
    /// List instances
    List,
    /// Delete an instance (refused while it has keys that are not deleted)
    Delete { id: String },
    /// Give an existing principal a role in an instance
    Grant {
        #[arg(long)]
        instance: String,
        #[arg(long)]
        iam_id: String,
        #[arg(long)]
        role: String,
    },
    /// Take a role away
    Revoke {
        #[arg(long)]
        instance: String,
        #[arg(long)]
        iam_id: String,
        #[arg(long)]
        role: String,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum ApikeyCmd {
    /// Create an API key with a role in an instance (for a new principal unless --iam-id)
    Create {
        #[arg(long)]
        instance: String,
        /// Reader, ReaderPlus, Writer, Manager or KeyPurge
        #[arg(long)]
        role: String,
        #[arg(long, default_value = "apikey")]
        name: String,
        /// Attach the key to this existing principal instead of a new one
        #[arg(long)]
        iam_id: Option<String>,
    },
    /// List API keys (never their secrets) and role grants
    List,
    /// Delete an API key by id
    Delete { id: String },
}

fn progress_every(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=86_400.0).contains(&v) => Ok(v),
        _ => Err("a number of seconds from 0 to 86400".into()),
    }
}

impl AdminArgs {
    /// The progress reporter these flags ask for (crates/keyward/src/progress.rs).
    pub fn progress(&self) -> Progress {
        Progress::for_output(&self.output, self.progress_every, self.no_progress)
    }
}

/// What an interrupted command left, and what to do: the error of a command that stopped
/// because of SIGINT or SIGTERM.
fn interrupted(cmd: &AdminCmd) -> Option<anyhow::Error> {
    let sig = progress::interrupted()?;
    let what = match cmd {
        AdminCmd::Migrate(_) => {
            "the copy runs in one transaction and was not committed: the target holds no row. \
             Run the same command again"
        }
        AdminCmd::Backup(_) => {
            "no backup file was written and the scratch copy was removed. Run the same command \
             again"
        }
        AdminCmd::Restore(_) => {
            "nothing was written to the target (the copy into it runs in one transaction, which \
             was not committed, and a data dir or database file this restore created is removed \
             again). Run the same command again"
        }
        AdminCmd::MasterKey(_) => {
            "the rows re-sealed so far stay re-sealed (each is its own compare-and-swap). Run the \
             same command again to resume"
        }
        _ => "stopped",
    };
    Some(anyhow!("interrupted by {sig}: {what}"))
}

fn instance_id(s: &str) -> anyhow::Result<InstanceId> {
    InstanceId::parse(s).map_err(|_| anyhow!("`{s}` is not an instance UUID"))
}

fn role(s: &str) -> anyhow::Result<Role> {
    s.parse().map_err(|_| {
        anyhow!("unknown role `{s}`: use Reader, ReaderPlus, Writer, Manager or KeyPurge")
    })
}

fn print(output: &str, v: &Value) {
    if output == "json" {
        println!("{v}");
    } else if let Value::Object(m) = v {
        for (k, v) in m {
            match v {
                Value::String(s) => println!("{k:>12}: {s}"),
                Value::Array(items) => {
                    println!("{k}:");
                    for i in items {
                        println!("  {i}");
                    }
                }
                other => println!("{k:>12}: {other}"),
            }
        }
    }
}

/// The file behind a `sqlite:` URL (`None` for in-memory databases).
pub(crate) fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

/// `admin migrate`: copies every row of `--from` into the empty `--to`.
async fn migrate(args: &AdminArgs, m: &MigrateArgs, progress: &Progress) -> anyhow::Result<()> {
    let from = match &m.from {
        Some(u) => DatabaseUrl::new(u.clone()),
        None => {
            let dir = args
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("./keyward-data"));
            DatabaseUrl::new(format!("sqlite://{}", dir.join("keyward.db").display()))
        }
    };
    let to = DatabaseUrl::new(m.to.clone());
    if from.expose() == to.expose() {
        bail!("--from and --to name the same database");
    }
    if from.is_sqlite() {
        // Never create an empty source by accident: the file must exist.
        if let Some(p) = sqlite_path(from.expose()) {
            if !p.is_file() {
                bail!("the source database {} does not exist", p.display());
            }
        }
    }
    let source = SqlStore::connect(&from)
        .await
        .with_context(|| format!("opening the source database {from}"))?;
    let target = SqlStore::connect(&to)
        .await
        .with_context(|| format!("opening the target database {to}"))?;
    let copied = progress.copy_rows("copy", &source, &target).await;
    source.close().await;
    target.close().await;
    let report = match copied {
        Ok(r) => r,
        Err(keyward_store::StoreError::Conflict(keyward_store::ConflictKind::TargetNotEmpty)) => {
            bail!(
                "refusing to copy into {to}: the target database is not empty \
             (migrate only into a new, empty database)"
            )
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("copying {from} to {to}"))),
    };
    let tables: serde_json::Map<String, Value> = report
        .tables
        .iter()
        .map(|(t, n)| (t.clone(), json!(n)))
        .collect();
    let out = json!({
        "from": from.to_string(),
        "to": to.to_string(),
        "rows": report.total_rows(),
        "tables": tables,
        "next": "start the nodes on the target with the same --master-key-file as the source",
    });
    print(&args.output, &out);
    Ok(())
}

/// Opens the database of `settings` for reading and writing authenticated rows: connects,
/// loads the master keyring (creating the first key file only for a database without sealed
/// rows, like `keyward serve`) and installs the row-authentication key it opens
/// (docs/threat-model.md).
pub async fn open_store(settings: &crate::config::Settings) -> anyhow::Result<SqlStore> {
    crate::config::create_data_dir(settings)?;
    let store = SqlStore::connect(&settings.database_url)
        .await
        .with_context(|| format!("opening database {}", settings.database_url))?;
    let clock = std::sync::Arc::new(SystemClock);
    let (_, ring) = crate::masterkey::open_ring(settings, &store, clock.now_unix())
        .await
        .map_err(|e| anyhow!("the master key could not be loaded: {e}"))?;
    keyward_service::rowauth::init(&store, &ring, clock, std::time::Duration::ZERO)
        .await
        .map_err(|e| anyhow!("{}", e.message))?;
    Ok(store)
}

/// Runs one of the long commands (migrate, backup, restore, master-key) with progress and
/// interruption (crates/keyward/src/progress.rs): the first SIGINT or SIGTERM makes it stop
/// at its next safe point and fail with what it left.
async fn run_long(args: AdminArgs) -> anyhow::Result<()> {
    let progress = args.progress();
    progress::watch_signals(&progress)?;
    let (dir, db) = (args.data_dir.as_deref(), args.database_url.as_deref());
    let out = match &args.cmd {
        AdminCmd::Migrate(m) => migrate(&args, m, &progress).await.map(|()| None),
        AdminCmd::Backup(b) => crate::backup::backup(dir, db, b, &progress).await.map(Some),
        AdminCmd::Restore(r) => crate::backup::restore(dir, db, r, &progress)
            .await
            .map(Some),
        AdminCmd::MasterKey(m) => crate::masterkeycmd::run(
            args.data_dir.clone(),
            args.database_url.clone(),
            m,
            &progress,
        )
        .await
        .map(Some),
        _ => bail!("not a long-running command"),
    };
    match out {
        Ok(Some(v)) => {
            print(&args.output, &v);
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(e) => Err(interrupted(&args.cmd).unwrap_or(e)),
    }
}

pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    if matches!(
        args.cmd,
        AdminCmd::Migrate(_) | AdminCmd::Backup(_) | AdminCmd::Restore(_) | AdminCmd::MasterKey(_)
    ) {
        return run_long(args).await;
    }
    let args = match args.cmd {
        AdminCmd::Tls(cmd) => {
            print(&args.output, &crate::tls::run(cmd)?);
            return Ok(());
        }
        AdminCmd::Audit(cmd) => {
            // One JSON object per line, in either output mode: the records are the output.
            let (dir, db) = (args.data_dir.as_deref(), args.database_url.as_deref());
            for r in crate::auditcmd::run(cmd, dir, db).await? {
                println!("{r}");
            }
            return Ok(());
        }
        _ => args,
    };
    let keys = match &args.cmd {
        AdminCmd::Instance(a) => a.keys.clone(),
        AdminCmd::Apikey(a) => a.keys.clone(),
        _ => crate::masterkeycmd::MasterKeyOpts::default(),
    };
    let settings = keys.settings(args.data_dir.clone(), args.database_url.clone())?;
    let store = open_store(&settings).await?;
    let now = SystemClock.now_unix();
    let err = |e: keyward_service::ServiceError| anyhow!("{}", e.message);
    let out = match args.cmd {
        AdminCmd::Instance(InstanceArgs {
            cmd: InstanceCmd::Create { name },
            ..
        }) => {
            let row = admin::create_instance(&store, &name, now)
                .await
                .map_err(err)?;
            json!({"id": row.id.to_string(), "name": row.name, "created": format_time(row.created_at)})
        }
        AdminCmd::Instance(InstanceArgs {
            cmd: InstanceCmd::List,
            ..
        }) => {
            let rows = store.list_instances().await?;
            json!({"instances": rows.iter().map(|r| json!({"id": r.id.to_string(), "name": r.name, "created": format_time(r.created_at)})).collect::<Vec<_>>()})
        }
        AdminCmd::Instance(InstanceArgs {
            cmd: InstanceCmd::Delete { id },
            ..
        }) => {
            let id = instance_id(&id)?;
            admin::delete_instance(&store, id).await.map_err(err)?;
            json!({"deleted": id.to_string()})
        }
        AdminCmd::Instance(InstanceArgs {
            cmd:
                InstanceCmd::Grant {
                    instance,
                    iam_id,
                    role: r,
                },
            ..
        }) => {
            let (i, r) = (instance_id(&instance)?, role(&r)?);
            admin::grant(&store, i, &iam_id, r, now)
                .await
                .map_err(err)?;
            json!({"instance": i.to_string(), "iam_id": iam_id, "role": r.as_str()})
        }
        AdminCmd::Instance(InstanceArgs {
            cmd:
                InstanceCmd::Revoke {
                    instance,
                    iam_id,
                    role: r,
                },
            ..
        }) => {
            let (i, r) = (instance_id(&instance)?, role(&r)?);
            store
                .revoke(i, &iam_id, r)
                .await
                .map_err(|_| anyhow!("no such grant"))?;
            json!({"revoked": {"instance": i.to_string(), "iam_id": iam_id, "role": r.as_str()}})
        }
        AdminCmd::Apikey(ApikeyArgs {
            cmd:
                ApikeyCmd::Create {
                    instance,
                    role: r,
                    name,
                    iam_id,
                },
            ..
        }) => {
            let (i, r) = (instance_id(&instance)?, role(&r)?);
            let k = admin::create_api_key(&store, i, r, &name, iam_id.as_deref(), now)
                .await
                .map_err(err)?;
            json!({"apikey": k.apikey, "id": k.id, "iam_id": k.iam_id, "instance": k.instance.to_string(), "role": k.role.as_str(), "name": k.name})
        }
        AdminCmd::Apikey(ApikeyArgs {
            cmd: ApikeyCmd::List,
            ..
        }) => {
            let keys = store.list_api_keys().await?;
            let grants = store.list_grants().await?;
            json!({
                "apikeys": keys.iter().map(|k| json!({"id": k.id, "iam_id": k.iam_id, "name": k.name, "created": format_time(k.created_at)})).collect::<Vec<_>>(),
                "grants": grants.iter().map(|g| json!({"instance": g.instance_id.to_string(), "iam_id": g.iam_id, "role": g.role.as_str()})).collect::<Vec<_>>(),
            })
        }
        AdminCmd::Apikey(ApikeyArgs {
            cmd: ApikeyCmd::Delete { id },
            ..
        }) => {
            if store.delete_api_key(&id).await.is_err() {
                bail!("no API key {id}");
            }
            json!({"deleted": id})
        }
        AdminCmd::Tls(_) | AdminCmd::Audit(_) | AdminCmd::MasterKey(_) => json!({}),
        AdminCmd::Migrate(_) => bail!("admin migrate is handled before opening a store"),
        AdminCmd::Backup(_) | AdminCmd::Restore(_) => {
            bail!("admin backup/restore are handled before opening a store")
        }
    };
    print(&args.output, &out);
    store.close().await;
    Ok(())
}

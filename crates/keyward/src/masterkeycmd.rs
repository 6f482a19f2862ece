//! `keyward admin master-key status|rotate|migrate`: re-seal every sealed row under a new
//! master key while the nodes keep serving. See `docs/master-key.md` for the procedure.
//!
//! A run is resumable: it works out where an interrupted run stopped from the database (which
//! key the marker names, which rows are still under other keys) and the generations present,
//! and carries on from there. It may stop anywhere (SIGINT/SIGTERM stop it between batches,
//! SIGKILL anywhere): every row is re-sealed by its own compare-and-swap, the new key file is
//! written under a temporary name and renamed, and a run that finds a generation newer than
//! the one the database names waits `--settle` before switching to it, as a first run does.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use keyward_crypto::master::MasterKeyProvider;
use keyward_domain::{Clock, SystemClock};
use keyward_service::reseal::reseal_batch;
use keyward_store::{SqlStore, Store};
use serde_json::{json, Value};

use crate::config::ServeArgs;
use crate::masterkey::{read_marker, write_marker, Generation, Keyring, Kind};
use crate::progress::{self, Progress, Unit};

/// Where the master key is: the same settings as `keyward serve`'s (flags, `KEYWARD_*`
/// environment, or the server's TOML file). Admin commands that open or write sealed or
/// authenticated rows need it.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct MasterKeyOpts {
    /// The server's TOML configuration file (master key settings are read from it)
    #[arg(long, env = "KEYWARD_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Master key file [default: <data-dir>/master.key]
    #[arg(long, env = "KEYWARD_MASTER_KEY_FILE", global = true)]
    pub master_key_file: Option<PathBuf>,
    /// The provider the nodes are configured with: file or pkcs11 [default: file]
    #[arg(long, env = "KEYWARD_MASTER_KEY_PROVIDER", global = true)]
    pub master_key_provider: Option<String>,
    #[arg(long, env = "KEYWARD_PKCS11_MODULE", global = true)]
    pub pkcs11_module: Option<PathBuf>,
    #[arg(long, env = "KEYWARD_PKCS11_TOKEN_LABEL", global = true)]
    pub pkcs11_token_label: Option<String>,
    #[arg(long, env = "KEYWARD_PKCS11_PIN_FILE", global = true)]
    pub pkcs11_pin_file: Option<PathBuf>,
    #[arg(long, env = "KEYWARD_PKCS11_KEY_LABEL", global = true)]
    pub pkcs11_key_label: Option<String>,
}

impl MasterKeyOpts {
    /// The server settings these options (and the data dir or database URL) describe.
    pub fn settings(
        &self,
        data_dir: Option<PathBuf>,
        database_url: Option<String>,
    ) -> anyhow::Result<crate::config::Settings> {
        ServeArgs {
            data_dir,
            database_url,
            config: self.config.clone(),
            master_key_file: self.master_key_file.clone(),
            master_key_provider: self.master_key_provider.clone(),
            pkcs11_module: self.pkcs11_module.clone(),
            pkcs11_token_label: self.pkcs11_token_label.clone(),
            pkcs11_pin_file: self.pkcs11_pin_file.clone(),
            pkcs11_key_label: self.pkcs11_key_label.clone(),
            ..ServeArgs::default()
        }
        .resolve()
    }
}

#[derive(clap::Args, Debug)]
pub struct MasterKeyArgs {
    #[command(flatten)]
    pub keys: MasterKeyOpts,
    #[command(subcommand)]
    pub cmd: MasterKeyCmd,
}

#[derive(clap::Subcommand, Debug)]
pub enum MasterKeyCmd {
    /// The master key generations found, which one seals, and how many rows each seals
    Status,
    /// Create a new generation of the sealing key's provider, make it the sealing key and
    /// re-seal every row under it, online. Run it again to resume an interrupted rotation
    Rotate {
        /// Only create the new generation (to copy it to the other nodes first); run
        /// `rotate` again to switch to it and re-seal
        #[arg(long)]
        stage: bool,
        #[command(flatten)]
        opts: ResealOpts,
    },
    /// Move every row to a key of another provider (e.g. from the key file into the HSM),
    /// creating that key if it does not exist. Resumable like `rotate`
    Migrate {
        /// file or pkcs11
        #[arg(long)]
        to: String,
        #[command(flatten)]
        opts: ResealOpts,
    },
}

#[derive(clap::Args, Debug, Clone)]
pub struct ResealOpts {
    /// Rows re-sealed per batch
    #[arg(long, default_value_t = 500)]
    pub batch: i64,
    /// Stop after re-sealing this many rows (run again to continue)
    #[arg(long)]
    pub limit: Option<u64>,
    /// Seconds to wait for running nodes to load a new key and to switch sealing to it;
    /// must exceed the nodes' --master-key-watch [default: 12]
    #[arg(long, default_value_t = 12)]
    pub settle: u64,
}

pub async fn run(
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    args: &MasterKeyArgs,
    progress: &Progress,
) -> anyhow::Result<Value> {
    let settings = args.keys.settings(data_dir, database_url)?;
    if let Some(p) = crate::admin::sqlite_path(settings.database_url.expose()) {
        if !p.exists() {
            bail!("no database at {}: nothing to re-seal", p.display());
        }
    }
    let store = SqlStore::connect(&settings.database_url)
        .await
        .with_context(|| format!("opening database {}", settings.database_url))?;
    let keyring = Keyring::new(&settings);
    let res = match &args.cmd {
        MasterKeyCmd::Status => {
            scan(&keyring, progress)?;
            status(&store, &keyring).await
        }
        MasterKeyCmd::Rotate { stage, opts } => {
            scan(&keyring, progress)?;
            rotate(&store, &keyring, *stage, opts, progress).await
        }
        MasterKeyCmd::Migrate { to, opts } => {
            let kind = match to.as_str() {
                "file" => Kind::File,
                "pkcs11" => Kind::Pkcs11,
                other => bail!("--to must be file or pkcs11, not {other:?}"),
            };
            scan(&keyring, progress)?;
            migrate(&store, &keyring, kind, opts, progress).await
        }
    };
    store.close().await;
    res
}

fn scan(keyring: &Keyring, progress: &Progress) -> anyhow::Result<()> {
    for w in keyring.scan(false).map_err(|e| anyhow!(e))? {
        progress.note(&format!("warning: {w}"));
    }
    Ok(())
}

async fn status(store: &dyn Store, keyring: &Keyring) -> anyhow::Result<Value> {
    let counts = store.sealed_counts().await?;
    let marker = read_marker(store).await?;
    let sealing = keyring.sealing_id(marker.as_deref());
    let gens = keyring.generations();
    let rows_of = |id: &str| counts.iter().find(|(k, _)| k == id).map_or(0, |(_, n)| *n);
    let keys: Vec<Value> = gens
        .iter()
        .map(|g| {
            json!({
                "id": g.id(),
                "provider": g.kind.name(),
                "generation": g.generation,
                "name": g.name,
                "rows": rows_of(g.id()),
                "sealing": Some(g.id()) == sealing.as_deref(),
            })
        })
        .collect();
    let unknown: Vec<Value> = counts
        .iter()
        .filter(|(id, _)| !gens.iter().any(|g| g.id() == id))
        .map(|(id, n)| json!({"id": id, "rows": n}))
        .collect();
    let pending: i64 = counts
        .iter()
        .filter(|(id, _)| Some(id.as_str()) != sealing.as_deref())
        .map(|(_, n)| n)
        .sum();
    Ok(json!({
        "sealing": sealing,
        "database_choice": marker,
        "keys": keys,
        "rows_not_under_sealing_key": pending,
        "rows_under_keys_not_found": unknown,
    }))
}

async fn rotate(
    store: &dyn Store,
    keyring: &Keyring,
    stage: bool,
    opts: &ResealOpts,
    progress: &Progress,
) -> anyhow::Result<Value> {
    let marker = read_marker(store).await?;
    let current_id = keyring
        .sealing_id(marker.as_deref())
        .ok_or_else(|| anyhow!("no master key found"))?;
    let current = find(keyring, &current_id)?;
    let newest = keyring
        .newest(current.kind)
        .ok_or_else(|| anyhow!("no master key found"))?;
    let pending = pending_rows(store, &current_id).await?;
    let target = if newest.id() != current_id {
        // A generation newer than the sealing key exists: an earlier run staged or created it
        // and stopped before switching. Carry on with it.
        progress.note(&format!(
            "resuming: switching to the already created generation {} ({})",
            newest.generation, newest.name
        ));
        newest
    } else if pending > 0 {
        progress.note(&format!(
            "resuming: {pending} rows are not yet under the sealing key {current_id}"
        ));
        current
    } else {
        let g = keyring
            .create_next(current.kind)
            .map_err(|e| anyhow!("creating the new master key: {e}"))?;
        progress.note(&format!(
            "created master key generation {} ({}), id {}",
            g.generation,
            g.name,
            g.id()
        ));
        g
    };
    if stage {
        return Ok(json!({
            "staged": target.id(),
            "name": target.name,
            "next": "copy it to every node's master key directory (file keys), then run `keyward admin master-key rotate` again",
        }));
    }
    finish(store, keyring, &target, marker.as_deref(), opts, progress).await
}

async fn migrate(
    store: &dyn Store,
    keyring: &Keyring,
    kind: Kind,
    opts: &ResealOpts,
    progress: &Progress,
) -> anyhow::Result<Value> {
    let marker = read_marker(store).await?;
    let target = match keyring.newest(kind) {
        Some(g) => g,
        None => {
            let g = keyring
                .create_next(kind)
                .map_err(|e| anyhow!("creating the {} master key: {e}", kind.name()))?;
            progress.note(&format!(
                "created {} master key {} ({})",
                kind.name(),
                g.name,
                g.id()
            ));
            g
        }
    };
    finish(store, keyring, &target, marker.as_deref(), opts, progress).await
}

/// Makes `target` the sealing key (after giving running nodes time to load it) and re-seals
/// every row under it.
async fn finish(
    store: &dyn Store,
    keyring: &Keyring,
    target: &Generation,
    marker: Option<&str>,
    opts: &ResealOpts,
    progress: &Progress,
) -> anyhow::Result<Value> {
    let settle = Duration::from_secs(opts.settle);
    if marker != Some(target.id()) {
        // The key may be minutes or milliseconds old (this run made it, or an earlier run made
        // it and was stopped before it switched): either way, give the nodes time to load it.
        if !settle.is_zero() {
            progress.note(&format!(
                "waiting {}s for running nodes to load the new key",
                opts.settle
            ));
            progress::sleep(settle).await?;
        }
        write_marker(store, target.id(), SystemClock.now_unix()).await?;
        progress.note(&format!(
            "the database now names {} as the sealing key",
            target.id()
        ));
        if !settle.is_zero() {
            progress.note(&format!(
                "waiting {}s for running nodes to seal with it",
                opts.settle
            ));
            progress::sleep(settle).await?;
        }
    }
    let ring = keyring
        .ring(Some(target.id()))
        .map_err(|e| anyhow!("{e}"))?;
    if ring.key_id() != target.id() {
        bail!("the keyring does not seal with {}", target.id());
    }
    let batch = opts.batch.max(1);
    let (mut resealed, mut raced) = (0u64, 0u64);
    let mut complete = true;
    let pending = u64::try_from(pending_rows(store, target.id()).await?).unwrap_or(0);
    let phase = progress.phase(
        "reseal",
        Unit::Rows,
        Some(opts.limit.map_or(pending, |l| l.min(pending))),
    );
    loop {
        progress::check()?;
        let want = match opts.limit {
            Some(l) if resealed >= l => {
                complete = false;
                break;
            }
            Some(l) => batch.min(i64::try_from(l - resealed).unwrap_or(batch)),
            None => batch,
        };
        let stats = reseal_batch(store, &ring, want)
            .await
            .map_err(|e| anyhow!("{}", e.message))?;
        if stats.found == 0 {
            break;
        }
        resealed += stats.resealed as u64;
        raced += stats.raced as u64;
        phase.set(resealed);
        if stats.resealed == 0 {
            // Every row of the batch changed under us: let the writers finish.
            progress::sleep(Duration::from_millis(100)).await?;
        }
    }
    phase.finish();
    let left = pending_rows(store, target.id()).await?;
    let mut out = json!({
        "sealing": target.id(),
        "name": target.name,
        "resealed": resealed,
        "changed_meanwhile_and_retried": raced,
        "rows_not_under_sealing_key": left,
        "complete": complete && left == 0,
    });
    if complete && left == 0 {
        let old: Vec<String> = keyring
            .generations()
            .iter()
            .filter(|g| g.id() != target.id())
            .map(|g| g.name.clone())
            .collect();
        if !old.is_empty() {
            out["retirable"] = json!(old);
            out["next"] = json!("no row is sealed under the keys in `retirable` any more; keep them while backups made before this run may be restored, then remove them");
        }
    } else {
        out["next"] = json!("run the same command again to continue");
    }
    Ok(out)
}

fn find(keyring: &Keyring, id: &str) -> anyhow::Result<Generation> {
    keyring
        .generations()
        .into_iter()
        .find(|g| g.id() == id)
        .ok_or_else(|| anyhow!("master key {id} not found"))
}

async fn pending_rows(store: &dyn Store, id: &str) -> anyhow::Result<i64> {
    Ok(store
        .sealed_counts()
        .await?
        .iter()
        .filter(|(k, _)| k != id)
        .map(|(_, n)| n)
        .sum())
}

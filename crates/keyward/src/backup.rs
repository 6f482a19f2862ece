//! `keyward admin backup` and `keyward admin restore`: a checksummed, consistent snapshot of a
//! whole deployment (SQLite or PostgreSQL) in one file, and its restore into an empty data dir
//! or database.
//!
//! - **Backup** copies every table ([`keyward_store::copy_database`]) from the live database
//!   into a fresh SQLite file in a private scratch directory. The source is read in one read
//!   transaction (SQLite: one WAL snapshot; PostgreSQL: `REPEATABLE READ`), so the snapshot is
//!   consistent while the server keeps serving and writing. The SQLite file becomes the
//!   payload of the backup file, written to a temporary name (mode 0600), fsynced, renamed over
//!   `FILE` and read back for verification.
//! - **Restore** verifies the whole file before anything is written: magic, format version,
//!   lengths, a SHA-256 over header and payload, the payload's own SHA-256 in the header, and
//!   a trial restore of the payload into a scratch SQLite whose row counts must match the
//!   header. Only then is the target opened, and it must hold no row (the copy checks that in
//!   the same transaction that writes it, so a failed restore leaves the target empty).
//! - Rows are copied as they are: key material stays sealed under the master key, which is
//!   **not** in the backup. A backup is therefore exactly as sensitive as the database itself,
//!   and useless without the master key (file or HSM), which must be backed up separately.
//!
//! The checksums detect damage and accidental edits; they are not a signature (anyone who can
//! write the file can recompute them), so they are compared plainly, not in constant time.
//! Protect the backup files as you protect the database.
//!
//! File layout (all integers big-endian):
//!
//! ```text
//! "KEYWARD-BACKUP\n"   15 bytes
//! header length H      u32
//! header               H bytes of JSON (see [`Header`])
//! payload              header.payload_bytes bytes: a SQLite 3 database file
//! checksum             32 bytes: SHA-256 of everything before it
//! ```

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use keyward_crypto::master::{FileMasterKey, MasterKeyProvider};
use keyward_crypto::sha256;
use keyward_domain::{format_time, Clock, SystemClock};
use keyward_store::{copy_database, CopyReport, DatabaseUrl, SqlStore, Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::sqlite_url;

/// The first bytes of every backup file.
pub const MAGIC: &[u8] = b"KEYWARD-BACKUP\n";
/// The layout version this Keyward writes and reads.
pub const FORMAT_VERSION: u64 = 1;
/// The longest header accepted (a real one is well under 2 KiB).
pub const MAX_HEADER: usize = 1 << 20;
/// Length of the trailing SHA-256.
pub const CHECKSUM_LEN: usize = 32;
const SQLITE_MAGIC: &[u8] = b"SQLite format 3\0";
const PAYLOAD_FORMAT: &str = "sqlite3";

#[derive(clap::Args, Debug)]
pub struct BackupArgs {
    /// The backup file to write (mode 0600). Refused if it exists, unless --force
    #[arg(long, value_name = "FILE")]
    pub to: PathBuf,
    /// Replace FILE if it exists (atomically, once the new backup is complete and verified)
    #[arg(long)]
    pub force: bool,
}

#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// The backup file to restore
    #[arg(long, value_name = "FILE")]
    pub from: PathBuf,
    /// Master key file to check against the backup before restoring: refused if the backup's
    /// rows are sealed under another key [default: <data-dir>/master.key, when it exists]
    #[arg(long)]
    pub master_key_file: Option<PathBuf>,
    /// Only verify the backup (checksums and a trial restore into a scratch database); write
    /// nothing to the target
    #[arg(long)]
    pub check: bool,
}

/// The JSON header of a backup file. Unknown fields are ignored (they may come from a later
/// Keyward writing the same format version).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Header {
    /// Layout version ([`FORMAT_VERSION`]).
    pub format: u64,
    /// When the snapshot was taken (RFC 3339, UTC) and the same as Unix seconds.
    pub created: String,
    pub created_unix: i64,
    /// The Keyward that wrote it (`version (commit)`).
    pub keyward_version: String,
    /// `sqlite` or `postgres`.
    pub source_backend: String,
    /// The source database URL, password masked.
    pub source: String,
    /// Always `sqlite3`: the payload is a SQLite database file.
    pub payload_format: String,
    pub payload_bytes: u64,
    /// Lowercase hex SHA-256 of the payload.
    pub payload_sha256: String,
    /// Rows per table in the snapshot.
    pub tables: BTreeMap<String, u64>,
    /// Sum of `tables`.
    pub rows: u64,
    /// Rows holding material sealed under a master key, and the ids of those master keys:
    /// the restored deployment needs one of them.
    pub sealed_rows: i64,
    pub master_key_ids: Vec<String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn keyward_version() -> String {
    format!(
        "{} ({})",
        env!("CARGO_PKG_VERSION"),
        env!("KEYWARD_GIT_COMMIT")
    )
}

/// Serialises a backup file: magic, header, payload, checksum.
pub fn encode(header: &Header, payload: &[u8]) -> anyhow::Result<Vec<u8>> {
    let h = serde_json::to_vec(header)?;
    if h.len() > MAX_HEADER {
        bail!("backup header too large ({} bytes)", h.len());
    }
    let hlen = u32::try_from(h.len())?;
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + h.len() + payload.len() + CHECKSUM_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&hlen.to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    let sum = sha256(&out);
    out.extend_from_slice(&sum);
    Ok(out)
}

/// Whether the last [`CHECKSUM_LEN`] bytes are the SHA-256 of the rest. A checksum against
/// damage, not an authenticator: a plain comparison is enough.
fn checksum_ok(bytes: &[u8]) -> bool {
    match bytes.len().checked_sub(CHECKSUM_LEN) {
        Some(n) => match (bytes.get(..n), bytes.get(n..)) {
            (Some(body), Some(sum)) => sha256(body).as_slice() == sum,
            _ => false,
        },
        None => false,
    }
}

/// Checks a whole backup file and returns its header and payload. Every way a file can be
/// damaged, cut short or edited ends here with an error that says which check failed.
pub fn decode(bytes: &[u8]) -> anyhow::Result<(Header, &[u8])> {
    let Some(rest) = bytes.strip_prefix(MAGIC) else {
        if bytes.len() < MAGIC.len() && MAGIC.starts_with(bytes) {
            bail!(
                "the file is truncated ({} bytes): it ends inside its first line",
                bytes.len()
            );
        }
        bail!("not a Keyward backup (it does not start with KEYWARD-BACKUP)");
    };
    let (len_bytes, rest) = rest.split_first_chunk::<4>().ok_or_else(|| {
        anyhow!(
            "the file is truncated ({} bytes): it ends before its header",
            bytes.len()
        )
    })?;
    let hlen = u32::from_be_bytes(*len_bytes) as usize;
    if hlen > MAX_HEADER {
        bail!("the file is damaged: its header length ({hlen} bytes) is implausible");
    }
    let header_bytes = rest.get(..hlen).ok_or_else(|| {
        anyhow!(
            "the file is truncated ({} bytes): it ends inside its header",
            bytes.len()
        )
    })?;
    let damaged_or = |what: String| {
        if checksum_ok(bytes) {
            anyhow!("{what}")
        } else {
            anyhow!("the file is damaged: its checksum does not match ({what})")
        }
    };
    let value: Value = serde_json::from_slice(header_bytes)
        .map_err(|e| damaged_or(format!("its header is not valid JSON: {e}")))?;
    let format = value.get("format").and_then(Value::as_u64);
    if format != Some(FORMAT_VERSION) {
        let by = value
            .get("keyward_version")
            .and_then(Value::as_str)
            .unwrap_or("an unknown Keyward");
        return Err(damaged_or(format!(
            "backup format {} (written by {by}) is not supported: this Keyward reads format {FORMAT_VERSION}",
            format.map_or_else(|| "missing".to_string(), |f| f.to_string())
        )));
    }
    let header: Header = serde_json::from_value(value)
        .map_err(|e| damaged_or(format!("its header lacks a field or has a wrong one: {e}")))?;
    let payload_len = usize::try_from(header.payload_bytes)
        .map_err(|_| damaged_or("its payload length is implausible".into()))?;
    let expected = (MAGIC.len() + 4 + hlen)
        .checked_add(payload_len)
        .and_then(|n| n.checked_add(CHECKSUM_LEN))
        .ok_or_else(|| damaged_or("its payload length is implausible".into()))?;
    if bytes.len() < expected {
        bail!(
            "the file is truncated: it has {} bytes, its header announces {expected}",
            bytes.len()
        );
    }
    if bytes.len() > expected {
        return Err(damaged_or(format!(
            "it has {} bytes, its header announces {expected}",
            bytes.len()
        )));
    }
    if !checksum_ok(bytes) {
        bail!("the file is damaged or was modified: its SHA-256 checksum does not match");
    }
    let payload = rest
        .get(hlen..hlen + payload_len)
        .ok_or_else(|| anyhow!("the file is truncated"))?;
    if hex(&sha256(payload)) != header.payload_sha256.to_ascii_lowercase() {
        bail!("the header does not match the payload (payload SHA-256 differs): the file was forged or damaged");
    }
    if header.payload_format != PAYLOAD_FORMAT || !payload.starts_with(SQLITE_MAGIC) {
        bail!(
            "the payload is not a SQLite database (payload format `{}`)",
            header.payload_format
        );
    }
    // Checked: counts that overflow when added are as inconsistent as counts that differ.
    let total = header
        .tables
        .values()
        .try_fold(0u64, |sum, n| sum.checked_add(*n));
    if total != Some(header.rows) {
        bail!("the header is inconsistent: its table row counts do not add up to its row total");
    }
    Ok((header, payload))
}

/// A private (0700) scratch directory, removed with everything in it when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new_in(parent: &Path, prefix: &str) -> anyhow::Result<Self> {
        let p = parent.join(format!(".{prefix}-{}", uuid::Uuid::new_v4().simple()));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&p)
            .with_context(|| format!("creating scratch directory {}", p.display()))?;
        Ok(Self(p))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn parent_dir(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Writes `bytes` to `path` atomically: a temporary file (mode 0600) in the same directory,
/// fsync, rename, fsync of the directory.
fn write_atomic(path: &Path, bytes: &[u8], replace: bool) -> anyhow::Result<()> {
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{} is not a file name", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        uuid::Uuid::new_v4().simple()
    ));
    let written = (|| -> anyhow::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
        f.write_all(bytes)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("syncing {}", tmp.display()))?;
        drop(f);
        if !replace && path.exists() {
            bail!(
                "{} exists (it appeared while the backup ran); use --force to replace it",
                path.display()
            );
        }
        fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing directory {}", dir.display()))?;
        Ok(())
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// The database behind `--database-url` / `--data-dir`.
fn database_of(
    data_dir: Option<&Path>,
    database_url: Option<&str>,
) -> (DatabaseUrl, Option<PathBuf>) {
    match database_url {
        Some(u) => (DatabaseUrl::new(u.to_string()), None),
        None => {
            let dir = data_dir.map_or_else(|| PathBuf::from("./keyward-data"), Path::to_path_buf);
            (sqlite_url(&dir.join("keyward.db")), Some(dir))
        }
    }
}

fn tables_json(report: &CopyReport) -> serde_json::Map<String, Value> {
    report
        .tables
        .iter()
        .map(|(t, n)| (t.clone(), json!(n)))
        .collect()
}

/// `admin backup`: a consistent snapshot of the database behind `--database-url` (or the
/// SQLite in `--data-dir`) into `args.to`. Safe while servers run on that database.
pub async fn backup(
    data_dir: Option<&Path>,
    database_url: Option<&str>,
    args: &BackupArgs,
) -> anyhow::Result<Value> {
    let file = &args.to;
    if file.is_dir() {
        bail!(
            "{} is a directory: give the backup file's name",
            file.display()
        );
    }
    if file.exists() && !args.force {
        bail!(
            "{} exists: choose a new name, or use --force to replace it",
            file.display()
        );
    }
    let dir = parent_dir(file);
    if !dir.is_dir() {
        bail!("the directory {} does not exist", dir.display());
    }
    let (source, sqlite_dir) = database_of(data_dir, database_url);
    if let Some(d) = &sqlite_dir {
        // Never create an empty database by backing up a mistyped data dir.
        let db = d.join("keyward.db");
        if !db.is_file() {
            bail!(
                "there is no database at {} (wrong --data-dir?)",
                db.display()
            );
        }
    }

    // The snapshot: every row, read in one transaction, into a fresh SQLite file next to the
    // backup file (so it needs no other disk than the backup's own).
    let scratch = Scratch::new_in(&dir, "keyward-backup")?;
    let snap = scratch.path().join("snapshot.db");
    let src = SqlStore::connect(&source)
        .await
        .with_context(|| format!("opening the database {source}"))?;
    let dst = match SqlStore::connect(&sqlite_url(&snap)).await {
        Ok(d) => d,
        Err(e) => {
            src.close().await;
            return Err(anyhow::Error::new(e).context("creating the snapshot database"));
        }
    };
    let created_unix = SystemClock.now_unix();
    let copied = copy_database(&src, &dst).await;
    src.close().await;
    let sealed = match &copied {
        Ok(_) => Some(dst.sealed_rows().await),
        Err(_) => None,
    };
    dst.close().await;
    let report = copied.with_context(|| format!("reading a snapshot of {source}"))?;
    let (sealed_rows, mut master_key_ids) = match sealed {
        Some(s) => s?,
        None => (0, Vec::new()),
    };
    master_key_ids.sort();
    master_key_ids.dedup();

    // The snapshot's last committed transaction may still sit in its write-ahead log: SQLite
    // moves it into the database file when the last connection closes. `close()` can leave an
    // idle connection behind (a connection returned to the pool while it closes), so drop the
    // pools too, and wait for the log to be folded in; a payload read earlier would miss rows.
    drop(dst);
    let wal = scratch.path().join("snapshot.db-wal");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while fs::metadata(&wal).map(|m| m.len() > 0).unwrap_or(false) {
        if std::time::Instant::now() > deadline {
            bail!("the snapshot database was not checkpointed (its WAL is not empty); no backup written");
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let payload = fs::read(&snap).with_context(|| format!("reading {}", snap.display()))?;
    if !payload.starts_with(SQLITE_MAGIC) {
        bail!("the snapshot is not a SQLite database; no backup written");
    }
    let header = Header {
        format: FORMAT_VERSION,
        created: format_time(created_unix),
        created_unix,
        keyward_version: keyward_version(),
        source_backend: src.backend().to_string(),
        source: source.to_string(),
        payload_format: PAYLOAD_FORMAT.to_string(),
        payload_bytes: payload.len() as u64,
        payload_sha256: hex(&sha256(&payload)),
        tables: report.tables.iter().cloned().collect(),
        rows: report.total_rows(),
        sealed_rows,
        master_key_ids,
    };
    let bytes = encode(&header, &payload)?;
    drop(payload);
    decode(&bytes).context("the backup just built does not verify")?;
    write_atomic(file, &bytes, args.force)?;
    drop(scratch);
    // Read back what reached the disk.
    let back = fs::read(file).with_context(|| format!("reading back {}", file.display()))?;
    decode(&back).with_context(|| format!("{} does not verify after writing", file.display()))?;
    // What `sha256sum FILE` prints, to check copies of the file with ordinary tools.
    let file_sha256 = hex(&sha256(&back));

    Ok(json!({
        "backup": file.display().to_string(),
        "bytes": back.len(),
        "sha256": file_sha256,
        "created": header.created,
        "source": header.source,
        "source_backend": header.source_backend,
        "rows": header.rows,
        "tables": tables_json(&report),
        "master_key_ids": header.master_key_ids,
        "note": "the master key is NOT in the backup: keep a copy of the master key file (or the HSM key) separately; restoring needs it",
    }))
}

/// Checks the master key file and its generations (`FILE`, `FILE.2`, ... that `admin master-key
/// rotate` makes; generation 1 may be retired) against the backup's sealed rows: every `file:`
/// key the backup names must be there. HSM keys (`pkcs11:` ids) cannot be checked from here.
/// Returns the ids found.
fn check_master_key(path: &Path, header: &Header) -> anyhow::Result<String> {
    let gens = crate::masterkey::file_generations(path)
        .map_err(|e| anyhow!("checking the master key: {e}"))?;
    if gens.is_empty() {
        bail!(
            "checking the master key: no master key file at {} (nor a later generation of it)",
            path.display()
        );
    }
    let mut have = Vec::new();
    for (_, p) in &gens {
        let g = FileMasterKey::load_or_create(p, false)
            .map_err(|e| anyhow!("checking the master key: {e}"))?;
        have.push(g.key_id().to_string());
    }
    let missing: Vec<&String> = header
        .master_key_ids
        .iter()
        .filter(|k| !k.starts_with("pkcs11:") && !have.contains(k))
        .collect();
    let any_file = header
        .master_key_ids
        .iter()
        .any(|k| !k.starts_with("pkcs11:"));
    if header.sealed_rows > 0 && any_file && !missing.is_empty() {
        bail!(
            "the master key {} ({}) is not the key this backup is sealed under ({}): a server \
             with it could not open the restored keys. Use the master key of the backed-up \
             deployment",
            path.display(),
            have.join(", "),
            header.master_key_ids.join(", ")
        );
    }
    Ok(have.join(", "))
}

/// `admin restore`: verifies `args.from` completely, then copies it into the database behind
/// `--database-url` (or a new SQLite in `--data-dir`), which must hold no row.
pub async fn restore(
    data_dir: Option<&Path>,
    database_url: Option<&str>,
    args: &RestoreArgs,
) -> anyhow::Result<Value> {
    let from = &args.from;
    let refuse = |e: anyhow::Error| {
        anyhow!(
            "refusing to restore {}: {e:#}; nothing was written",
            from.display()
        )
    };
    // Look at the first line before reading a (possibly huge) file that is not a backup.
    let mut head = Vec::with_capacity(MAGIC.len());
    File::open(from)
        .and_then(|f| f.take(MAGIC.len() as u64).read_to_end(&mut head))
        .with_context(|| format!("reading {}", from.display()))?;
    if head != MAGIC {
        if let Err(e) = decode(&head) {
            return Err(refuse(e));
        }
    }
    let bytes = fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    let (header, payload) = decode(&bytes).map_err(refuse)?;
    let (target, sqlite_dir) = database_of(data_dir, database_url);

    // The master key, when there is one to check, before anything is written.
    let mk_path = args.master_key_file.clone().or_else(|| {
        sqlite_dir
            .as_ref()
            .map(|d| d.join("master.key"))
            .filter(|p| crate::masterkey::file_generations(p).is_ok_and(|g| !g.is_empty()))
    });
    let master_key = match &mk_path {
        Some(p) => Some(check_master_key(p, &header).map_err(refuse)?),
        None => None,
    };

    // The payload as a SQLite file in a private scratch directory, and a trial restore of it:
    // the copy must read every row, and find the counts the header promises.
    let scratch = Scratch::new_in(&std::env::temp_dir(), "keyward-restore")?;
    let payload_path = scratch.path().join("payload.db");
    write_atomic(&payload_path, payload, false)?;
    drop(bytes);
    let src = SqlStore::connect(&sqlite_url(&payload_path))
        .await
        .map_err(|e| refuse(anyhow::Error::new(e).context("its database cannot be opened")))?;
    let trial = async {
        let path = scratch.path().join("trial.db");
        let t = SqlStore::connect(&sqlite_url(&path)).await?;
        let r = copy_database(&src, &t).await;
        t.close().await;
        for suffix in ["", "-wal", "-shm"] {
            let _ = fs::remove_file(scratch.path().join(format!("trial.db{suffix}")));
        }
        r
    }
    .await;
    let trial = match trial {
        Ok(r) => r,
        Err(e) => {
            src.close().await;
            return Err(refuse(
                anyhow::Error::new(e).context("its database cannot be read back completely"),
            ));
        }
    };
    for (table, n) in &header.tables {
        let found = trial
            .tables
            .iter()
            .find(|(t, _)| t == table)
            .map(|(_, n)| *n);
        if found != Some(*n) {
            src.close().await;
            return Err(refuse(anyhow!(
                "the header does not match the contents: table {table} should hold {n} rows, \
                 the payload holds {}",
                found.map_or_else(|| "no such table".to_string(), |f| f.to_string())
            )));
        }
    }
    let summary = json!({
        "backup": from.display().to_string(),
        "created": header.created,
        "source": header.source,
        "source_backend": header.source_backend,
        "written_by": header.keyward_version,
        "rows": trial.total_rows(),
        "tables": tables_json(&trial),
        "master_key_ids": header.master_key_ids,
    });
    if args.check {
        src.close().await;
        let mut out = summary;
        if let Value::Object(m) = &mut out {
            m.insert("verified".into(), json!(true));
        }
        return Ok(out);
    }

    // The target: a new data dir (created 0700, as the server does) or a database URL.
    if let Some(d) = &sqlite_dir {
        if let Err(e) = fs::DirBuilder::new().recursive(true).mode(0o700).create(d) {
            src.close().await;
            return Err(anyhow::Error::new(e).context(format!("creating data dir {}", d.display())));
        }
    }
    let dst = match SqlStore::connect(&target).await {
        Ok(d) => d,
        Err(e) => {
            src.close().await;
            return Err(
                anyhow::Error::new(e).context(format!("opening the target database {target}"))
            );
        }
    };
    let copied = copy_database(&src, &dst).await;
    src.close().await;
    dst.close().await;
    drop(scratch);
    let report = match copied {
        Ok(r) => r,
        Err(StoreError::Conflict(m)) if m.contains("not empty") => bail!(
            "refusing to restore into {target}: the target database is not empty (restore only \
             into a new data dir or an empty database); nothing was written"
        ),
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
            "restoring into {target} (the copy runs in one transaction: the target is unchanged)"
        )))
        }
    };
    if report.tables != trial.tables {
        bail!(
            "the restore copied {:?} rows, the trial restore {:?}",
            report.tables,
            trial.tables
        );
    }
    let next = match (&master_key, &sqlite_dir) {
        _ if header.sealed_rows == 0 => {
            "start the server (the backup holds no sealed key material)".to_string()
        }
        (Some(id), _) => format!("start the server with the master key {id}"),
        (None, Some(d)) if header.sealed_rows > 0 => format!(
            "put the backed-up deployment's master key ({}) at {} with mode 0600 (or pass \
             --master-key-file / the HSM settings), then start the server",
            header.master_key_ids.join(", "),
            d.join("master.key").display()
        ),
        _ => format!(
            "start the server(s) on {target} with the backed-up deployment's master key ({})",
            header.master_key_ids.join(", ")
        ),
    };
    let mut out = summary;
    if let Value::Object(m) = &mut out {
        m.insert("restored_to".into(), json!(target.to_string()));
        m.insert("next".into(), json!(next));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn sample() -> Vec<u8> {
        let mut payload = SQLITE_MAGIC.to_vec();
        payload.extend_from_slice(&[7u8; 200]);
        let header = Header {
            format: FORMAT_VERSION,
            created: "2025-01-01T00:00:00Z".into(),
            created_unix: 1_735_689_600,
            keyward_version: keyward_version(),
            source_backend: "sqlite".into(),
            source: "sqlite://x".into(),
            payload_format: PAYLOAD_FORMAT.into(),
            payload_bytes: payload.len() as u64,
            payload_sha256: hex(&sha256(&payload)),
            tables: [("keys".to_string(), 2u64), ("instances".to_string(), 1)].into(),
            rows: 3,
            sealed_rows: 2,
            master_key_ids: vec!["file:0011223344556677".into()],
        };
        encode(&header, &payload).unwrap()
    }

    #[test]
    fn round_trip() {
        let b = sample();
        let (h, p) = decode(&b).unwrap();
        assert_eq!(h.rows, 3);
        assert!(p.starts_with(SQLITE_MAGIC));
    }

    #[test]
    fn every_truncation_and_every_bit_flip_is_refused() {
        let b = sample();
        for n in 0..b.len() {
            let e = decode(&b[..n]).unwrap_err().to_string();
            assert!(
                e.contains("truncated")
                    || e.contains("damaged")
                    || e.contains("not a Keyward backup"),
                "cut at {n}: {e}"
            );
        }
        for i in 0..b.len() {
            for bit in [0u8, 3, 7] {
                let mut c = b.clone();
                c[i] ^= 1 << bit;
                assert!(
                    decode(&c).is_err(),
                    "flip of bit {bit} at byte {i} accepted"
                );
            }
        }
        let mut longer = b.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
    }

    /// Someone who recomputes the trailing checksum still cannot change the payload without
    /// the header's payload hash, nor the format version.
    #[test]
    fn forged_headers_with_a_valid_checksum_are_refused() {
        let b = sample();
        let (h, p) = decode(&b).unwrap();
        let mut other = p.to_vec();
        other[20] ^= 1;
        let e = decode(&encode(&h, &other).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("payload SHA-256 differs"), "{e}");
        let mut h2 = h.clone();
        h2.format = 2;
        let e = decode(&encode(&h2, p).unwrap()).unwrap_err().to_string();
        assert!(e.contains("format 2") && e.contains("not supported"), "{e}");
        let mut h3 = h.clone();
        h3.rows = 4;
        let e = decode(&encode(&h3, p).unwrap()).unwrap_err().to_string();
        assert!(e.contains("do not add up"), "{e}");
    }
}

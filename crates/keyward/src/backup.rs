//! `keyward admin backup` and `keyward admin restore`: a consistent snapshot of a whole
//! deployment (SQLite or PostgreSQL) in one encrypted and authenticated file, and its restore
//! into an empty data dir or database. See `docs/backup.md`.
//!
//! - **Backup** copies every table ([`SqlStore::copy_into`], reporting progress) from the live database
//!   into a fresh SQLite file in a private scratch directory. The source is read in one read
//!   transaction (SQLite: one WAL snapshot; PostgreSQL: `REPEATABLE READ`), so the snapshot is
//!   consistent while the server keeps serving and writing. That SQLite file, behind an
//!   encrypted manifest (row counts, source, master key ids), is the plaintext of the backup.
//! - **Encryption.** A fresh random 256-bit file key per backup, sealed by the deployment's
//!   master key (the same keyring the server uses: key file or HSM) with the context
//!   `backup-key` / backup id / format version, and stored in the header with the master key's
//!   id. The plaintext is sealed in 64 KiB chunks with AES-256-GCM in the STREAM construction
//!   of [`keyward_crypto::stream`]: each chunk's nonce holds its index and a last-chunk flag,
//!   and the SHA-256 of everything before the first chunk (magic, header length, header) is in
//!   every chunk's AAD. So no chunk can be edited, moved, dropped, duplicated or cut off, and no
//!   header byte can change, without the file failing to open.
//! - **Restore** verifies the whole file before anything is written to the target: the header,
//!   every chunk, the trailing SHA-256, the manifest, then a trial restore into a scratch SQLite
//!   whose row counts must match the manifest. Only then is the target opened, and it must hold
//!   no row (the copy checks that in the same transaction that writes it, so a failed restore
//!   leaves the target empty).
//! - Version-1 backups (plain SQLite behind SHA-256 checksums, no authentication) are refused
//!   unless the operator passes `--allow-unauthenticated-v1`.
//!
//! File layout, format 2 (integers big-endian):
//!
//! ```text
//! "KEYWARD-BACKUP\n"   15 bytes
//! header length H      u32, 1..=MAX_HEADER
//! header               H bytes of JSON (see [`Header`]): public, authenticated
//! chunks               header.plaintext_bytes of plaintext in 64 KiB chunks, each + 16-byte tag
//! checksum             32 bytes: SHA-256 of everything before it (not a security check)
//! ```
//!
//! The plaintext is `manifest length M (u32) || manifest (M bytes of JSON, see [`Manifest`]) ||
//! SQLite 3 database file`.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use keyward_crypto::master::{MasterKeyProvider, SealContext};
use keyward_crypto::stream::{
    self, Sha256Stream, StreamOpener, StreamSealer, CHUNK_LEN, FILE_KEY_LEN, TAG_LEN,
};
use keyward_crypto::{sha256, CryptoError, SecretBytes};
use keyward_domain::{format_time, Clock, SystemClock};
use keyward_store::{ConflictKind, CopyReport, SqlStore, Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::{sqlite_url, MasterKeySource, Settings};
use crate::masterkey::{file_generations, read_marker, Keyring};
use crate::masterkeycmd::MasterKeyOpts;
use crate::progress::{self, Progress, Unit};

/// The first bytes of every backup file.
pub const MAGIC: &[u8; 15] = b"KEYWARD-BACKUP\n";
/// The layout version this Keyward writes (and the only one it verifies).
pub const FORMAT_VERSION: u64 = 2;
/// The unauthenticated layout of earlier Keywards, read only with `--allow-unauthenticated-v1`.
pub const FORMAT_V1: u64 = 1;
/// The longest header accepted (a real one is under 1 KiB).
pub const MAX_HEADER: usize = 64 * 1024;
/// The longest manifest accepted (it grows with the number of tables only).
pub const MAX_MANIFEST: usize = 1 << 20;
/// The largest plaintext accepted (1 TiB, 2^24 chunks).
pub const MAX_PLAINTEXT: u64 = 1 << 40;
/// Length of the trailing SHA-256.
pub const CHECKSUM_LEN: usize = 32;
/// The `cipher` a format-2 header names.
pub const CIPHER: &str = "AES-256-GCM-STREAM-64KiB/HKDF-SHA-256";
/// The `kind` of the file key's seal context.
pub const FILE_KEY_KIND: &str = "backup-key";
/// The one message for a format-2 file that fails any check before its contents are known
/// (magic, lengths, header, sealed file key, any chunk, the checksum, trailing bytes): it says
/// nothing about where.
pub const NOT_INTACT: &str = "the file is not an intact Keyward backup: it was modified, damaged \
     or cut short, or it is not a backup file (it does not verify under its master key)";
const STREAM_INFO: &[u8] = b"keyward-backup-v2 payload";
const HEADER_AAD_LABEL: &[u8] = b"keyward-backup-v2 header ";
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
    #[command(flatten)]
    pub keys: MasterKeyOpts,
}

#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// The backup file to restore
    #[arg(long, value_name = "FILE")]
    pub from: PathBuf,
    #[command(flatten)]
    pub keys: MasterKeyOpts,
    /// Only verify the backup (authenticity, every chunk, a trial restore into a scratch
    /// database); write nothing to the target. Needs the master key, as a restore does
    #[arg(long)]
    pub check: bool,
    /// Accept a version-1 backup (written before backups were authenticated). Such a file
    /// CANNOT be verified: whoever could write it could have changed any row in it and
    /// recomputed its checksums. Use only for a file you kept safe yourself
    #[arg(long)]
    pub allow_unauthenticated_v1: bool,
}

/// The public header of a format-2 backup. Everything here is authenticated (it is bound into
/// every chunk), but not secret. Unknown fields are ignored.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Header {
    /// Layout version ([`FORMAT_VERSION`]).
    pub format: u64,
    /// A random id of this backup (the `object` of the file key's seal context).
    pub backup_id: String,
    /// When the snapshot was taken (RFC 3339, UTC) and the same as Unix seconds.
    pub created: String,
    pub created_unix: i64,
    /// The Keyward that wrote it (`version (commit)`).
    pub keyward_version: String,
    /// Always [`CIPHER`].
    pub cipher: String,
    /// The master key that sealed the file key: a restore needs it.
    pub master_key_id: String,
    /// The file key sealed under `master_key_id` (standard base64).
    pub sealed_file_key: String,
    /// Length of the plaintext (manifest length, manifest, payload).
    pub plaintext_bytes: u64,
}

/// What a backup holds, encrypted with its payload.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Manifest {
    /// `sqlite` or `postgres`.
    pub source_backend: String,
    /// The source database URL, password masked.
    pub source: String,
    /// Always `sqlite3`: the payload is a SQLite database file.
    pub payload_format: String,
    pub payload_bytes: u64,
    /// Rows per table in the snapshot.
    pub tables: BTreeMap<String, u64>,
    /// Sum of `tables`.
    pub rows: u64,
    /// Rows holding material sealed under a master key, and the ids of those master keys:
    /// the restored deployment needs all of them.
    pub sealed_rows: i64,
    pub master_key_ids: Vec<String>,
}

/// A format-2 backup that verified completely.
#[derive(Debug, Clone)]
pub struct Verified {
    pub header: Header,
    pub manifest: Manifest,
    /// SHA-256 of the whole file, as `sha256sum` prints it (lowercase hex).
    pub file_sha256: String,
    pub file_bytes: u64,
}

/// A format-2 backup opened in memory by [`open_backup`].
pub struct Opened {
    pub header: Header,
    pub manifest: Manifest,
    /// The SQLite database file.
    pub payload: Vec<u8>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("header", &self.header)
            .field("manifest", &self.manifest)
            .field("payload_bytes", &self.payload.len())
            .finish()
    }
}

/// Why a backup file was refused.
#[derive(Debug)]
pub enum BackupError {
    /// Any failed check of a format-2 file before its contents are known: [`NOT_INTACT`].
    NotIntact,
    /// The file key is sealed under a master key that is not among `have`.
    MasterKeyMissing { needed: String, have: Vec<String> },
    /// The master key was there but could not be used (an HSM error, not a failed check).
    MasterKeyFailed(String),
    /// A format-1 (unauthenticated) backup.
    Version1,
    /// A format this Keyward does not know.
    Unsupported { format: u64, by: String },
    /// Authentic, but its contents contradict themselves (written by a faulty Keyward, or
    /// forged by someone holding the master key).
    Inconsistent(String),
    /// Reading the file or writing the payload failed (not the file's fault).
    Io(String),
}

impl std::fmt::Display for BackupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackupError::NotIntact => f.write_str(NOT_INTACT),
            BackupError::MasterKeyMissing { needed, have } => write!(
                f,
                "this backup is sealed under the master key {needed}, which is not among the \
                 master keys found ({}): give the backed-up deployment's master key \
                 (--master-key-file, or the HSM settings its servers use). If you do have that \
                 key, the file was modified",
                if have.is_empty() {
                    "none".to_string()
                } else {
                    have.join(", ")
                }
            ),
            BackupError::MasterKeyFailed(id) => write!(
                f,
                "the master key {id} could not be used to open the backup's file key (a \
                 provider or HSM failure; see its log)"
            ),
            BackupError::Version1 => f.write_str(
                "this is a version-1 backup, written before backups were authenticated: it \
                 cannot be verified (whoever could write it could have changed any row and \
                 recomputed its checksums), so it is refused. If you kept this file safe \
                 yourself and accept that risk, pass --allow-unauthenticated-v1",
            ),
            BackupError::Unsupported { format, by } => write!(
                f,
                "backup format {format} (written by {by}) is not supported: this Keyward \
                 reads format {FORMAT_VERSION} (and format {FORMAT_V1} with \
                 --allow-unauthenticated-v1)"
            ),
            BackupError::Inconsistent(m) => {
                write!(f, "the backup's contents are inconsistent: {m}")
            }
            BackupError::Io(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for BackupError {}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `s` cut to 120 characters with everything but printable ASCII replaced, for echoing text
/// from an unverified file to a terminal.
fn printable(s: &str) -> String {
    s.chars()
        .take(120)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

fn keyward_version() -> String {
    format!(
        "{} ({})",
        env!("CARGO_PKG_VERSION"),
        env!("KEYWARD_GIT_COMMIT")
    )
}

fn file_key_context(backup_id: &str) -> SealContext<'_> {
    SealContext {
        kind: FILE_KEY_KIND,
        instance: "",
        object: backup_id,
        version: "2",
    }
}

fn header_aad(digest: &[u8; 32]) -> Vec<u8> {
    [HEADER_AAD_LABEL, digest.as_slice()].concat()
}

/// A reader that hashes what it reads and maps a short file to [`BackupError::NotIntact`].
struct Hashing<'a> {
    inner: &'a mut dyn Read,
    hash: Sha256Stream,
    count: u64,
}

impl<'a> Hashing<'a> {
    fn new(inner: &'a mut dyn Read) -> Self {
        Self {
            inner,
            hash: Sha256Stream::new(),
            count: 0,
        }
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), BackupError> {
        self.inner.read_exact(buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                BackupError::NotIntact
            } else {
                BackupError::Io(format!("reading the backup: {e}"))
            }
        })?;
        self.hash.update(buf);
        self.count += buf.len() as u64;
        Ok(())
    }

    /// Whether anything follows.
    fn at_end(&mut self) -> Result<bool, BackupError> {
        let mut one = [0u8; 1];
        loop {
            match self.inner.read(&mut one) {
                Ok(0) => return Ok(true),
                Ok(_) => return Ok(false),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(BackupError::Io(format!("reading the backup: {e}"))),
            }
        }
    }
}

/// Reads magic, header length and header; returns the header and the SHA-256 of those bytes.
fn read_head(r: &mut Hashing<'_>) -> Result<(Header, [u8; 32]), BackupError> {
    let mut magic = [0u8; MAGIC.len()];
    r.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(BackupError::NotIntact);
    }
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let hlen = u32::from_be_bytes(len) as usize;
    if hlen == 0 || hlen > MAX_HEADER {
        return Err(BackupError::NotIntact);
    }
    let mut h = vec![0u8; hlen];
    r.read_exact(&mut h)?;
    let value: Value = serde_json::from_slice(&h).map_err(|_| BackupError::NotIntact)?;
    match value.get("format").and_then(Value::as_u64) {
        Some(FORMAT_VERSION) => {}
        Some(FORMAT_V1) => return Err(BackupError::Version1),
        Some(format) => {
            let by = value
                .get("keyward_version")
                .and_then(Value::as_str)
                .map_or_else(|| "an unknown Keyward".to_string(), printable);
            return Err(BackupError::Unsupported { format, by });
        }
        None => return Err(BackupError::NotIntact),
    }
    let header: Header = serde_json::from_value(value).map_err(|_| BackupError::NotIntact)?;
    if header.cipher != CIPHER
        || header.plaintext_bytes < 4
        || header.plaintext_bytes > MAX_PLAINTEXT
        || stream::sealed_len(header.plaintext_bytes).is_none()
    {
        return Err(BackupError::NotIntact);
    }
    let mut d = Sha256Stream::new();
    d.update(MAGIC);
    d.update(&len);
    d.update(&h);
    Ok((header, d.finish()))
}

/// Reads only the header of a backup (to learn which master key it needs before loading
/// keys). Nothing here is verified yet: the header is authenticated only by
/// [`open_backup_from`]. A format-1 file gives [`BackupError::Version1`].
pub fn read_header(reader: &mut dyn Read) -> Result<Header, BackupError> {
    read_head(&mut Hashing::new(reader)).map(|(h, _)| h)
}

fn open_file_key(
    header: &Header,
    keys: &dyn MasterKeyProvider,
) -> Result<SecretBytes, BackupError> {
    let have = keys.key_ids();
    if !have.iter().any(|k| k == &header.master_key_id) {
        return Err(BackupError::MasterKeyMissing {
            needed: printable(&header.master_key_id),
            have,
        });
    }
    let sealed = B64
        .decode(&header.sealed_file_key)
        .map_err(|_| BackupError::NotIntact)?;
    match keys.open_as(
        &header.master_key_id,
        &file_key_context(&header.backup_id),
        &sealed,
    ) {
        Ok(k) if k.len() == FILE_KEY_LEN => Ok(k),
        Ok(_) | Err(CryptoError::Open) | Err(CryptoError::Invalid) => Err(BackupError::NotIntact),
        Err(CryptoError::Primitive) => {
            Err(BackupError::MasterKeyFailed(header.master_key_id.clone()))
        }
    }
}

/// Splits the opened plaintext into the manifest and the payload (streamed to `out`).
struct Splitter<'a> {
    out: &'a mut dyn Write,
    len: Vec<u8>,
    manifest_len: Option<usize>,
    manifest: Vec<u8>,
    head: Vec<u8>,
    payload_bytes: u64,
}

impl<'a> Splitter<'a> {
    fn new(out: &'a mut dyn Write) -> Self {
        Self {
            out,
            len: Vec::with_capacity(4),
            manifest_len: None,
            manifest: Vec::new(),
            head: Vec::with_capacity(SQLITE_MAGIC.len()),
            payload_bytes: 0,
        }
    }

    fn push(&mut self, mut data: &[u8]) -> Result<(), BackupError> {
        while !data.is_empty() {
            let take = match self.manifest_len {
                None => {
                    let take = (4 - self.len.len()).min(data.len());
                    self.len
                        .extend_from_slice(data.get(..take).unwrap_or_default());
                    if let Ok(b) = <[u8; 4]>::try_from(self.len.as_slice()) {
                        let m = u32::from_be_bytes(b) as usize;
                        if m > MAX_MANIFEST {
                            return Err(BackupError::Inconsistent(format!(
                                "its manifest length ({m} bytes) is implausible"
                            )));
                        }
                        self.manifest = Vec::with_capacity(m);
                        self.manifest_len = Some(m);
                    }
                    take
                }
                Some(m) if self.manifest.len() < m => {
                    let take = (m - self.manifest.len()).min(data.len());
                    self.manifest
                        .extend_from_slice(data.get(..take).unwrap_or_default());
                    take
                }
                Some(_) => {
                    let want = SQLITE_MAGIC.len().saturating_sub(self.head.len());
                    self.head
                        .extend_from_slice(data.get(..want.min(data.len())).unwrap_or_default());
                    self.out
                        .write_all(data)
                        .map_err(|e| BackupError::Io(format!("writing the payload: {e}")))?;
                    self.payload_bytes += data.len() as u64;
                    data.len()
                }
            };
            data = data.get(take..).unwrap_or_default();
        }
        Ok(())
    }

    fn finish(self) -> Result<Manifest, BackupError> {
        let complete = self.manifest_len == Some(self.manifest.len());
        if !complete {
            return Err(BackupError::Inconsistent(
                "its manifest is cut short".into(),
            ));
        }
        let m: Manifest = serde_json::from_slice(&self.manifest)
            .map_err(|e| BackupError::Inconsistent(format!("its manifest is not valid: {e}")))?;
        if m.payload_bytes != self.payload_bytes {
            return Err(BackupError::Inconsistent(format!(
                "its manifest announces {} payload bytes, it holds {}",
                m.payload_bytes, self.payload_bytes
            )));
        }
        if m.payload_format != PAYLOAD_FORMAT || self.head != SQLITE_MAGIC {
            return Err(BackupError::Inconsistent(format!(
                "the payload is not a SQLite database (payload format `{}`)",
                printable(&m.payload_format)
            )));
        }
        if m.tables.values().try_fold(0u64, |a, n| a.checked_add(*n)) != Some(m.rows) {
            return Err(BackupError::Inconsistent(
                "its table row counts do not add up to its row total".into(),
            ));
        }
        self.out
            .flush()
            .map_err(|e| BackupError::Io(format!("writing the payload: {e}")))?;
        Ok(m)
    }
}

/// Verifies and decrypts a whole format-2 backup read from `reader`, writing the SQLite
/// payload to `payload`.
///
/// `keys` is the master key provider (a [`keyward_crypto::master::MasterKeyRing`] of every
/// generation a node can reach, or one provider); the file key is opened with the member the
/// header names. Checks, in order: magic, header length (1..=[`MAX_HEADER`]), header JSON and
/// format, the sealed file key, every chunk (in place, with its index and last-chunk flag, and
/// the header's digest as AAD), the trailing SHA-256, that nothing follows it, and the
/// manifest (its length at most [`MAX_MANIFEST`], the payload length, a SQLite payload, row
/// counts that add up).
///
/// Hostile input: lengths are bounded before anything is allocated (at most one header, one
/// chunk of [`CHUNK_LEN`] + 16 bytes and the manifest are held), work is proportional to the
/// bytes actually read, and every failure is an `Err`, never a panic. Any failed check before
/// the contents are known is the one [`BackupError::NotIntact`], whatever byte was changed.
///
/// `payload` receives plaintext as chunks open (each chunk is authentic, but the file may yet
/// turn out cut short or followed by junk): treat what it received as unverified until this
/// returns `Ok`, and discard it otherwise.
pub fn open_backup_from(
    reader: &mut dyn Read,
    keys: &dyn MasterKeyProvider,
    payload: &mut dyn Write,
) -> Result<Verified, BackupError> {
    let mut r = Hashing::new(reader);
    let (header, digest) = read_head(&mut r)?;
    let mut opener = {
        let file_key = open_file_key(&header, keys)?;
        StreamOpener::new(&file_key, STREAM_INFO, &header_aad(&digest))
            .map_err(|_| BackupError::NotIntact)?
    };
    let mut split = Splitter::new(payload);
    let n = stream::chunk_count(header.plaintext_bytes);
    let mut buf = Vec::with_capacity(CHUNK_LEN + TAG_LEN);
    for i in 0..n {
        let len =
            stream::chunk_plaintext_len(header.plaintext_bytes, i).ok_or(BackupError::NotIntact)?;
        buf.clear();
        buf.resize(len + TAG_LEN, 0);
        r.read_exact(&mut buf)?;
        opener
            .open_chunk(&mut buf, i + 1 == n)
            .map_err(|_| BackupError::NotIntact)?;
        split.push(&buf)?;
    }
    let expected = r.hash.clone().finish();
    let mut trailer = [0u8; CHECKSUM_LEN];
    r.read_exact(&mut trailer)?;
    // A checksum, not a secret: compared plainly. The AEAD above is the security check.
    if trailer != expected || !r.at_end()? {
        return Err(BackupError::NotIntact);
    }
    let manifest = split.finish()?;
    let file_bytes = r.count;
    Ok(Verified {
        header,
        manifest,
        file_sha256: hex(&r.hash.finish()),
        file_bytes,
    })
}

/// Verifies and decrypts a whole format-2 backup held in memory: the pure entry point for
/// tools and fuzzing. `bytes` is the file, `keys` the master key provider; returns the public
/// header, the manifest and the SQLite payload, or why the file was refused. The same checks
/// and bounds as [`open_backup_from`]; allocates at most about `bytes.len()` plus one chunk.
pub fn open_backup(bytes: &[u8], keys: &dyn MasterKeyProvider) -> Result<Opened, BackupError> {
    let mut reader = bytes;
    let mut payload = Vec::new();
    let v = open_backup_from(&mut reader, keys, &mut payload)?;
    Ok(Opened {
        header: v.header,
        manifest: v.manifest,
        payload,
    })
}

/// A writer that hashes what it writes.
struct HashingWriter<'a> {
    inner: &'a mut dyn Write,
    hash: Sha256Stream,
    count: u64,
}

impl HashingWriter<'_> {
    fn put(&mut self, data: &[u8]) -> anyhow::Result<()> {
        self.inner.write_all(data)?;
        self.hash.update(data);
        self.count += data.len() as u64;
        Ok(())
    }
}

/// Writes a format-2 backup to `out`: a fresh file key sealed by `keys` (its current key),
/// the header, the plaintext `manifest length || manifest || payload` in sealed chunks, the
/// checksum. `manifest.payload_bytes` must be the length of what `payload` yields. Returns the
/// header and the file's SHA-256 (hex).
pub fn seal_backup_to(
    out: &mut dyn Write,
    keys: &dyn MasterKeyProvider,
    created_unix: i64,
    manifest: &Manifest,
    payload: &mut dyn Read,
) -> anyhow::Result<(Header, String)> {
    let m = serde_json::to_vec(manifest)?;
    if m.len() > MAX_MANIFEST {
        bail!("the backup manifest is too large ({} bytes)", m.len());
    }
    let mut prefix = u32::try_from(m.len())?.to_be_bytes().to_vec();
    prefix.extend_from_slice(&m);
    let plaintext_bytes = (prefix.len() as u64)
        .checked_add(manifest.payload_bytes)
        .filter(|n| *n <= MAX_PLAINTEXT)
        .ok_or_else(|| anyhow!("the database is too large for one backup file (over 1 TiB)"))?;
    let file_key = stream::new_file_key().map_err(|e| anyhow!("making the file key: {e}"))?;
    let backup_id = uuid::Uuid::new_v4().to_string();
    let sealed = keys
        .seal(&file_key_context(&backup_id), file_key.expose())
        .map_err(|e| {
            anyhow!(
                "sealing the file key under the master key {}: {e}",
                keys.key_id()
            )
        })?;
    let header = Header {
        format: FORMAT_VERSION,
        backup_id,
        created: format_time(created_unix),
        created_unix,
        keyward_version: keyward_version(),
        cipher: CIPHER.to_string(),
        master_key_id: keys.key_id().to_string(),
        sealed_file_key: B64.encode(&sealed),
        plaintext_bytes,
    };
    let h = serde_json::to_vec(&header)?;
    if h.len() > MAX_HEADER {
        bail!("backup header too large ({} bytes)", h.len());
    }
    let mut w = HashingWriter {
        inner: out,
        hash: Sha256Stream::new(),
        count: 0,
    };
    w.put(MAGIC)?;
    w.put(&u32::try_from(h.len())?.to_be_bytes())?;
    w.put(&h)?;
    let digest = w.hash.clone().finish();
    let mut sealer = StreamSealer::new(&file_key, STREAM_INFO, &header_aad(&digest))
        .map_err(|e| anyhow!("setting up the encryption: {e}"))?;
    drop(file_key);
    let mut plain = std::io::Cursor::new(prefix).chain(payload);
    let n = stream::chunk_count(plaintext_bytes);
    let mut buf = vec![0u8; CHUNK_LEN];
    for i in 0..n {
        let len = stream::chunk_plaintext_len(plaintext_bytes, i)
            .ok_or_else(|| anyhow!("chunk {i} out of range"))?;
        let chunk = buf
            .get_mut(..len)
            .ok_or_else(|| anyhow!("chunk {i} too long"))?;
        plain
            .read_exact(chunk)
            .context("reading the snapshot (it is shorter than it was)")?;
        let sealed = sealer
            .seal_chunk(chunk, i + 1 == n)
            .map_err(|e| anyhow!("encrypting chunk {i}: {e}"))?;
        w.put(&sealed)?;
    }
    if plain.read(&mut [0u8; 1])? != 0 {
        bail!("the snapshot grew while it was being written");
    }
    let sum = w.hash.clone().finish();
    w.put(&sum)?;
    w.inner.flush()?;
    Ok((header, hex(&w.hash.finish())))
}

/// [`seal_backup_to`] into memory (for tests and tools).
pub fn seal_backup(
    keys: &dyn MasterKeyProvider,
    created_unix: i64,
    manifest: &Manifest,
    payload: &[u8],
) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut p = payload;
    seal_backup_to(&mut out, keys, created_unix, manifest, &mut p)?;
    Ok(out)
}

/// The header of a format-1 backup (unauthenticated; read only with
/// `--allow-unauthenticated-v1`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct HeaderV1 {
    pub format: u64,
    pub created: String,
    pub created_unix: i64,
    pub keyward_version: String,
    pub source_backend: String,
    pub source: String,
    pub payload_format: String,
    pub payload_bytes: u64,
    pub payload_sha256: String,
    pub tables: BTreeMap<String, u64>,
    pub rows: u64,
    pub sealed_rows: i64,
    pub master_key_ids: Vec<String>,
}

/// Whether the last [`CHECKSUM_LEN`] bytes are the SHA-256 of the rest.
fn checksum_ok(bytes: &[u8]) -> bool {
    match bytes.len().checked_sub(CHECKSUM_LEN) {
        Some(n) => match (bytes.get(..n), bytes.get(n..)) {
            (Some(body), Some(sum)) => sha256(body).as_slice() == sum,
            _ => false,
        },
        None => false,
    }
}

/// Checks a whole format-1 backup file (magic, header, lengths, checksums) and returns its
/// header and payload. These checks detect damage, not tampering: anyone who can write the
/// file can recompute them.
pub fn decode_v1(bytes: &[u8]) -> anyhow::Result<(HeaderV1, &[u8])> {
    let Some(rest) = bytes.strip_prefix(MAGIC.as_slice()) else {
        bail!("not a Keyward backup (it does not start with KEYWARD-BACKUP)");
    };
    let (len_bytes, rest) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| anyhow!("the file is truncated: it ends before its header"))?;
    let hlen = u32::from_be_bytes(*len_bytes) as usize;
    if hlen > MAX_HEADER {
        bail!("the file is damaged: its header length ({hlen} bytes) is implausible");
    }
    let header_bytes = rest
        .get(..hlen)
        .ok_or_else(|| anyhow!("the file is truncated: it ends inside its header"))?;
    if !checksum_ok(bytes) {
        bail!("the file is damaged or was modified: its SHA-256 checksum does not match");
    }
    let header: HeaderV1 = serde_json::from_slice(header_bytes)
        .map_err(|e| anyhow!("its header lacks a field or has a wrong one: {e}"))?;
    if header.format != FORMAT_V1 {
        bail!("not a format-1 backup");
    }
    let payload_len = usize::try_from(header.payload_bytes)
        .map_err(|_| anyhow!("its payload length is implausible"))?;
    let expected = (MAGIC.len() + 4 + hlen)
        .checked_add(payload_len)
        .and_then(|n| n.checked_add(CHECKSUM_LEN))
        .ok_or_else(|| anyhow!("its payload length is implausible"))?;
    if bytes.len() != expected {
        bail!(
            "the file has {} bytes, its header announces {expected}",
            bytes.len()
        );
    }
    let payload = rest
        .get(hlen..hlen + payload_len)
        .ok_or_else(|| anyhow!("the file is truncated"))?;
    if hex(&sha256(payload)) != header.payload_sha256.to_ascii_lowercase() {
        bail!("the header does not match the payload (payload SHA-256 differs)");
    }
    if header.payload_format != PAYLOAD_FORMAT || !payload.starts_with(SQLITE_MAGIC) {
        bail!("the payload is not a SQLite database");
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

/// An exclusive `flock` on `f`, taken without waiting: whether it was. The lock lasts as long
/// as the open file, and ends with the process however it ends (SIGKILL included): a scratch
/// directory or temporary file that nobody holds locked belongs to a run that is gone.
fn try_lock(f: &File) -> bool {
    rustix::fs::flock(f, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok()
}

/// Takes the lock on `f`, opened from `path`, and checks that `path` is still that file (a
/// sweep by another run could have removed it just before the lock was taken).
fn lock_own(f: &File, path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let same = fs::symlink_metadata(path)
        .ok()
        .zip(f.metadata().ok())
        .is_some_and(|(a, b)| a.ino() == b.ino() && a.dev() == b.dev());
    if !try_lock(f) || !same {
        bail!("{} was taken by another run; try again", path.display());
    }
    Ok(())
}

/// Removes what killed runs left in `dir`: the directories and files named
/// `{prefix}…{suffix}` that no live process holds locked (a scratch copy, a temporary backup
/// file). Symbolic links and anything locked are left alone. Returns how many were removed.
fn remove_stale(dir: &Path, prefix: &str, suffix: &str) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with(prefix) || !name.ends_with(suffix) || name.len() <= prefix.len() {
            continue;
        }
        let path = e.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if !(meta.is_dir() || meta.is_file()) {
            continue;
        }
        let Ok(f) = File::open(&path) else {
            continue;
        };
        if !try_lock(&f) {
            continue;
        }
        let gone = if meta.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        if gone.is_ok() {
            removed += 1;
        }
    }
    removed
}

/// A private (0700) scratch directory, locked while in use and removed with everything in it
/// when dropped. One left behind by a killed run is removed by the next run
/// ([`remove_stale`]).
struct Scratch {
    path: PathBuf,
    _lock: File,
}

impl Scratch {
    fn new_in(parent: &Path, prefix: &str) -> anyhow::Result<Self> {
        let p = parent.join(format!(".{prefix}-{}", uuid::Uuid::new_v4().simple()));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&p)
            .with_context(|| format!("creating scratch directory {}", p.display()))?;
        let lock = File::open(&p).with_context(|| format!("opening {}", p.display()))?;
        lock_own(&lock, &p)?;
        Ok(Self {
            path: p,
            _lock: lock,
        })
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

fn parent_dir(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A new file of mode 0600 (refused if it exists).
fn create_private(path: &Path) -> anyhow::Result<File> {
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.set_permissions(fs::Permissions::from_mode(0o600))?;
    Ok(f)
}

/// Writes `path` atomically: `write` fills a temporary file (mode 0600) in the same directory,
/// then fsync, `verify` reads the temporary file back, then rename, fsync of the directory. So
/// `path` appears only complete and verified; the temporary file is removed on failure (a
/// process killed meanwhile leaves it, under its temporary name).
fn write_atomic_with<T, V>(
    path: &Path,
    replace: bool,
    write: impl FnOnce(&mut dyn Write) -> anyhow::Result<T>,
    verify: impl FnOnce(&Path, &T) -> anyhow::Result<V>,
) -> anyhow::Result<(T, V)> {
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{} is not a file name", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        uuid::Uuid::new_v4().simple()
    ));
    let written = (|| -> anyhow::Result<(T, V)> {
        let f = create_private(&tmp)?;
        // Held until the file has its final name: marks the temporary file as in use.
        let _lock = f.try_clone()?;
        lock_own(&f, &tmp)?;
        let mut w = BufWriter::new(f);
        let out = write(&mut w).with_context(|| format!("writing {}", tmp.display()))?;
        let f = w
            .into_inner()
            .map_err(|e| anyhow!("writing {}: {}", tmp.display(), e.error()))?;
        f.sync_all()
            .with_context(|| format!("syncing {}", tmp.display()))?;
        drop(f);
        let checked = verify(&tmp, &out)?;
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
        Ok((out, checked))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// The settings the server would use with these flags (database, data dir, master keys), and
/// the data dir when the database is the SQLite file in it.
fn resolve(
    data_dir: Option<&Path>,
    database_url: Option<&str>,
    keys: &MasterKeyOpts,
) -> anyhow::Result<(Settings, Option<PathBuf>)> {
    let settings = keys.settings(
        data_dir.map(Path::to_path_buf),
        database_url.map(str::to_string),
    )?;
    let in_dir = sqlite_url(&settings.data_dir.join("keyward.db"));
    let sqlite_dir =
        (settings.database_url.expose() == in_dir.expose()).then(|| settings.data_dir.clone());
    Ok((settings, sqlite_dir))
}

/// The master keys these settings reach, as the server would load them, never creating one.
fn load_keys(settings: &Settings, progress: &Progress) -> Result<Keyring, String> {
    if settings.master_key == MasterKeySource::File
        && file_generations(&settings.master_key_file)?.is_empty()
    {
        return Err(format!(
            "there is no master key file at {} (nor a later generation of it)",
            settings.master_key_file.display()
        ));
    }
    let keyring = Keyring::new(settings);
    for w in keyring.scan(false)? {
        progress.note(&format!("warning: {w}"));
    }
    Ok(keyring)
}

fn tables_json(report: &CopyReport) -> serde_json::Map<String, Value> {
    report
        .tables
        .iter()
        .map(|(t, n)| (t.clone(), json!(n)))
        .collect()
}

/// `admin backup`: a consistent snapshot of the database behind `--database-url` (or the
/// SQLite in `--data-dir`) into `args.to`, encrypted under a file key sealed by the
/// deployment's master key. Safe while servers run on that database.
pub async fn backup(
    data_dir: Option<&Path>,
    database_url: Option<&str>,
    args: &BackupArgs,
    progress: &Progress,
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
    let (settings, sqlite_dir) = resolve(data_dir, database_url, &args.keys)?;
    let source = settings.database_url.clone();
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
    // The master keys first: without them there is no backup to write.
    let keyring = load_keys(&settings, progress).map_err(|e| {
        anyhow!(
            "a backup is encrypted under a key sealed by the deployment's master key, and no \
             master key could be loaded: {e}. Give the master key settings the servers use \
             (--master-key-file, or --master-key-provider pkcs11 and the --pkcs11-* settings, \
             or --config)"
        )
    })?;

    // What killed backups into this directory left: their scratch copies and temporary files.
    let name = file.file_name().map(|n| n.to_string_lossy().to_string());
    let stale = remove_stale(&dir, ".keyward-backup-", "")
        + name.map_or(0, |n| remove_stale(&dir, &format!(".{n}."), ".tmp"));
    if stale > 0 {
        progress.note(&format!(
            "removed {stale} scratch copies or temporary files left by interrupted backups in {}",
            dir.display()
        ));
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
    let copied = progress.copy_rows("snapshot", &src, &dst).await;
    src.close().await;
    let facts = match &copied {
        Ok(_) => Some((dst.sealed_rows().await, read_marker(&dst).await)),
        Err(_) => None,
    };
    dst.close().await;
    let report = copied.with_context(|| format!("reading a snapshot of {source}"))?;
    let ((sealed_rows, mut master_key_ids), marker) = match facts {
        Some((s, m)) => (s?, m?),
        None => ((0, Vec::new()), None),
    };
    master_key_ids.sort();
    master_key_ids.dedup();
    let ring = keyring
        .ring(marker.as_deref())
        .map_err(|e| anyhow!("{e}"))?;
    let have = ring.key_ids();
    let missing: Vec<&String> = master_key_ids
        .iter()
        .filter(|k| !have.contains(k))
        .collect();
    if !missing.is_empty() {
        bail!(
            "the master keys found ({}) are not the keys this database's rows are sealed \
             under (missing: {}): a restore of this backup could not open them. Give the \
             master key settings the servers use; no backup written",
            have.join(", "),
            missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    // The snapshot's last committed transaction may still sit in its write-ahead log: SQLite
    // moves it into the database file when the last connection closes. `close()` can leave an
    // idle connection behind (a connection returned to the pool while it closes), so drop the
    // pools too and wait a moment for the log to be folded in; failing that, fold it in from a
    // connection of our own. A payload read with rows still in the log would miss them.
    drop(dst);
    let wal = scratch.path().join("snapshot.db-wal");
    let wal_empty = || fs::metadata(&wal).map(|m| m.len() == 0).unwrap_or(true);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while !wal_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    if !wal_empty() {
        keyward_store::checkpoint_sqlite_file(&snap)
            .await
            .map_err(|e| anyhow!("{e}; no backup written"))?;
    }
    if !wal_empty() {
        bail!(
            "the snapshot database was not checkpointed (its WAL is not empty); no backup written"
        );
    }
    let mut snap_file = File::open(&snap).with_context(|| format!("reading {}", snap.display()))?;
    let payload_bytes = snap_file.metadata()?.len();
    let mut head = [0u8; 16];
    snap_file.read_exact(&mut head)?;
    if head != SQLITE_MAGIC {
        bail!("the snapshot is not a SQLite database; no backup written");
    }
    let encrypt = progress.phase("encrypt", Unit::Bytes, Some(payload_bytes));
    let mut snap_file = BufReader::new(encrypt.reader(File::open(&snap)?));
    let manifest = Manifest {
        source_backend: src.backend().to_string(),
        source: source.to_string(),
        payload_format: PAYLOAD_FORMAT.to_string(),
        payload_bytes,
        tables: report.tables.iter().cloned().collect(),
        rows: report.total_rows(),
        sealed_rows,
        master_key_ids,
    };
    // Read back what reached the disk and verify all of it, before it gets its final name.
    let verify = |tmp: &Path, (header, _): &(Header, String)| -> anyhow::Result<Verified> {
        encrypt.finish();
        let f = File::open(tmp).with_context(|| format!("reading back {}", tmp.display()))?;
        let check = progress.phase("verify", Unit::Bytes, Some(f.metadata()?.len()));
        let back = open_backup_from(
            &mut BufReader::new(check.reader(f)),
            &ring,
            &mut std::io::sink(),
        )
        .map_err(|e| anyhow!("{} does not verify after writing: {e}", file.display()))?;
        if &back.header != header || back.manifest != manifest {
            bail!("{} does not read back as written", file.display());
        }
        check.finish();
        Ok(back)
    };
    let ((header, _), back) = write_atomic_with(
        file,
        args.force,
        |w| seal_backup_to(w, &ring, created_unix, &manifest, &mut snap_file),
        verify,
    )?;
    drop(snap_file);
    drop(scratch);

    Ok(json!({
        "backup": file.display().to_string(),
        "format": FORMAT_VERSION,
        "backup_id": header.backup_id,
        "bytes": back.file_bytes,
        // What `sha256sum FILE` prints, to check copies of the file with ordinary tools.
        "sha256": back.file_sha256,
        "created": header.created,
        "source": manifest.source,
        "source_backend": manifest.source_backend,
        "rows": manifest.rows,
        "tables": tables_json(&report),
        "sealed_under": header.master_key_id,
        "master_key_ids": manifest.master_key_ids,
        "note": "the backup is encrypted under a key sealed by the master key, which is NOT in \
                 the backup: keep the master key (file or HSM key) safe and separate; \
                 restoring needs it",
    }))
}

/// What a restore learned from a verified file (either format).
struct Contents {
    format: u64,
    authenticated: bool,
    backup_id: Option<String>,
    created: String,
    source: String,
    source_backend: String,
    written_by: String,
    tables: BTreeMap<String, u64>,
    sealed_rows: i64,
    master_key_ids: Vec<String>,
    sealed_under: Option<String>,
}

/// `admin restore`: verifies `args.from` completely, then copies it into the database behind
/// `--database-url` (or a new SQLite in `--data-dir`), which must hold no row.
pub async fn restore(
    data_dir: Option<&Path>,
    database_url: Option<&str>,
    args: &RestoreArgs,
    progress: &Progress,
) -> anyhow::Result<Value> {
    let from = &args.from;
    let refuse = |e: &dyn std::fmt::Display| {
        anyhow!(
            "refusing to restore {}: {e}; nothing was written",
            from.display()
        )
    };
    let (settings, sqlite_dir) = resolve(data_dir, database_url, &args.keys)?;
    let target = settings.database_url.clone();
    let open = || File::open(from).with_context(|| format!("reading {}", from.display()));

    // The payload goes into a private scratch directory, for the trial restore. Those of
    // killed restores are removed first.
    let stale = remove_stale(&std::env::temp_dir(), ".keyward-restore-", "");
    if stale > 0 {
        progress.note(&format!(
            "removed {stale} scratch directories left by interrupted restores in {}",
            std::env::temp_dir().display()
        ));
    }
    let scratch = Scratch::new_in(&std::env::temp_dir(), "keyward-restore")?;
    let payload_path = scratch.path().join("payload.db");

    let header = read_header(&mut BufReader::new(open()?));
    let (contents, have) = match header {
        Err(BackupError::Version1) if args.allow_unauthenticated_v1 => {
            restore_v1_payload(&settings, &args.keys, &open()?, &payload_path, progress)
                .map_err(|e| refuse(&format!("{e:#}")))?
        }
        Err(e) => return Err(refuse(&e)),
        Ok(header) => {
            let keyring = load_keys(&settings, progress).map_err(|e| {
                refuse(&format!(
                    "this backup is sealed under the master key {}, and no master key could be \
                     loaded: {e}. Give the backed-up deployment's master key (--master-key-file, \
                     or the HSM settings its servers use)",
                    printable(&header.master_key_id)
                ))
            })?;
            let ring = keyring.ring(None).map_err(|e| refuse(&e))?;
            let mut out = BufWriter::new(create_private(&payload_path)?);
            let f = open()?;
            let phase = progress.phase("verify", Unit::Bytes, Some(f.metadata()?.len()));
            let v = open_backup_from(&mut BufReader::new(phase.reader(f)), &ring, &mut out)
                .map_err(|e| match progress::check() {
                    Err(i) => anyhow!("{i}"),
                    Ok(()) => refuse(&e),
                })?;
            phase.finish();
            out.into_inner()
                .map_err(|e| anyhow!("writing the payload: {}", e.error()))?
                .sync_all()?;
            let contents = Contents {
                format: FORMAT_VERSION,
                authenticated: true,
                backup_id: Some(v.header.backup_id),
                created: v.header.created,
                source: v.manifest.source,
                source_backend: v.manifest.source_backend,
                written_by: v.header.keyward_version,
                tables: v.manifest.tables,
                sealed_rows: v.manifest.sealed_rows,
                master_key_ids: v.manifest.master_key_ids,
                sealed_under: Some(v.header.master_key_id),
            };
            (contents, Some(ring.key_ids()))
        }
    };

    // Every master key the rows are sealed under must be at hand, or a server on the
    // restored database could not open them.
    if let Some(have) = &have {
        let missing: Vec<&str> = contents
            .master_key_ids
            .iter()
            .filter(|k| !have.contains(k))
            .map(String::as_str)
            .collect();
        if contents.sealed_rows > 0 && !missing.is_empty() {
            return Err(refuse(&format!(
                "its rows are sealed under the master key(s) {}, which are not among the master \
                 keys found ({}): a server with these keys could not open the restored keys. \
                 Give the backed-up deployment's master key(s)",
                missing.join(", "),
                have.join(", ")
            )));
        }
    }

    // A trial restore: the copy must read every row, and find the counts the manifest promises.
    let src = SqlStore::connect(&sqlite_url(&payload_path))
        .await
        .map_err(|e| refuse(&format!("its database cannot be opened: {e}")))?;
    let trial = async {
        let path = scratch.path().join("trial.db");
        let t = SqlStore::connect(&sqlite_url(&path)).await?;
        let r = progress.copy_rows("trial", &src, &t).await;
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
            return Err(refuse(&format!(
                "its database cannot be read back completely: {e}"
            )));
        }
    };
    for (table, n) in &contents.tables {
        let found = trial
            .tables
            .iter()
            .find(|(t, _)| t == table)
            .map(|(_, n)| *n);
        if found != Some(*n) {
            src.close().await;
            return Err(refuse(&format!(
                "the manifest does not match the contents: table {table} should hold {n} rows, \
                 the payload holds {}",
                found.map_or_else(|| "no such table".to_string(), |f| f.to_string())
            )));
        }
    }
    let mut summary = json!({
        "backup": from.display().to_string(),
        "format": contents.format,
        "authenticated": contents.authenticated,
        "created": contents.created,
        "source": contents.source,
        "source_backend": contents.source_backend,
        "written_by": contents.written_by,
        "rows": trial.total_rows(),
        "tables": tables_json(&trial),
        "master_key_ids": contents.master_key_ids,
    });
    if let Value::Object(m) = &mut summary {
        if let Some(id) = &contents.backup_id {
            m.insert("backup_id".into(), json!(id));
        }
        if let Some(k) = &contents.sealed_under {
            m.insert("sealed_under".into(), json!(k));
        }
        if !contents.authenticated {
            m.insert(
                "warning".into(),
                json!("a version-1 backup: its contents could not be authenticated"),
            );
        }
    }
    if args.check {
        src.close().await;
        if let Value::Object(m) = &mut summary {
            m.insert("verified".into(), json!(true));
        }
        return Ok(summary);
    }

    // The target: a new data dir (created 0700, as the server does) or a database URL. What
    // this restore creates there (the dir, the database file) it removes again if it fails or
    // is interrupted, so the target is as it was found.
    let mut created = CreatedTarget::default();
    if let Some(d) = &sqlite_dir {
        if !d.exists() {
            created.dir = Some(d.clone());
        }
        if let Err(e) = fs::DirBuilder::new().recursive(true).mode(0o700).create(d) {
            src.close().await;
            return Err(anyhow::Error::new(e).context(format!("creating data dir {}", d.display())));
        }
        let db = d.join("keyward.db");
        if !db.exists() {
            created.db = Some(db);
        }
    }
    let dst = match SqlStore::connect(&target).await {
        Ok(d) => d,
        Err(e) => {
            src.close().await;
            created.remove();
            return Err(
                anyhow::Error::new(e).context(format!("opening the target database {target}"))
            );
        }
    };
    let copied = progress.copy_rows("restore", &src, &dst).await;
    src.close().await;
    dst.close().await;
    drop(dst);
    drop(scratch);
    if copied.is_err() {
        created.remove();
    }
    let report = match copied {
        Ok(r) => r,
        Err(StoreError::Conflict(ConflictKind::TargetNotEmpty)) => bail!(
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
    let needed = contents.master_key_ids.join(", ");
    let next = match (&have, &sqlite_dir) {
        _ if contents.sealed_rows == 0 => {
            "start the server (the backup holds no sealed key material)".to_string()
        }
        (Some(_), _) => format!("start the server with the master key {needed}"),
        (None, Some(d)) => format!(
            "put the backed-up deployment's master key ({needed}) at {} with mode 0600 (or \
             pass --master-key-file / the HSM settings), then start the server",
            d.join("master.key").display()
        ),
        (None, None) => format!(
            "start the server(s) on {target} with the backed-up deployment's master key ({needed})"
        ),
    };
    if let Value::Object(m) = &mut summary {
        m.insert("restored_to".into(), json!(target.to_string()));
        m.insert("next".into(), json!(next));
    }
    Ok(summary)
}

/// What a restore created in a SQLite target (to remove again when it fails).
#[derive(Default)]
struct CreatedTarget {
    dir: Option<PathBuf>,
    db: Option<PathBuf>,
}

impl CreatedTarget {
    /// Removes the database file (with its WAL and shared-memory files) and the data dir if
    /// this restore created them; a dir that holds anything else is left.
    fn remove(&self) {
        if let Some(db) = &self.db {
            for suffix in ["", "-wal", "-shm"] {
                let mut p = db.clone().into_os_string();
                p.push(suffix);
                let _ = fs::remove_file(PathBuf::from(p));
            }
        }
        if let Some(d) = &self.dir {
            let _ = fs::remove_dir(d);
        }
    }
}

/// The `--allow-unauthenticated-v1` path: checks a format-1 file as far as it can be checked
/// (checksums), writes its payload to `payload_path`, and checks the master keys when any are
/// configured or present (a format-1 file needs none to be read). Returns what it holds and the
/// ids of the master keys found, if any were looked for.
fn restore_v1_payload(
    settings: &Settings,
    flags: &MasterKeyOpts,
    file: &File,
    payload_path: &Path,
    progress: &Progress,
) -> anyhow::Result<(Contents, Option<Vec<String>>)> {
    let mut bytes = Vec::new();
    file.take(MAX_PLAINTEXT).read_to_end(&mut bytes)?;
    let (h, payload) = decode_v1(&bytes)?;
    progress.note(
        "warning: restoring a version-1 backup, which cannot be authenticated \
         (--allow-unauthenticated-v1)",
    );
    let keys_configured = flags.master_key_file.is_some()
        || settings.master_key != MasterKeySource::File
        || file_generations(&settings.master_key_file).is_ok_and(|g| !g.is_empty());
    let have = if keys_configured {
        let keyring =
            load_keys(settings, progress).map_err(|e| anyhow!("checking the master key: {e}"))?;
        Some(
            keyring
                .generations()
                .iter()
                .map(|g| g.id().to_string())
                .collect(),
        )
    } else {
        None
    };
    let mut f = create_private(payload_path)?;
    f.write_all(payload)?;
    f.sync_all()?;
    let contents = Contents {
        format: FORMAT_V1,
        authenticated: false,
        backup_id: None,
        created: h.created,
        source: h.source,
        source_backend: h.source_backend,
        written_by: h.keyward_version,
        tables: h.tables,
        sealed_rows: h.sealed_rows,
        master_key_ids: h.master_key_ids,
        sealed_under: None,
    };
    Ok((contents, have))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use keyward_crypto::master::FileMasterKey;

    fn mk() -> FileMasterKey {
        FileMasterKey::from_secret(&keyward_crypto::random_secret(32).unwrap()).unwrap()
    }

    fn manifest(payload: &[u8]) -> Manifest {
        Manifest {
            source_backend: "sqlite".into(),
            source: "sqlite://x".into(),
            payload_format: PAYLOAD_FORMAT.into(),
            payload_bytes: payload.len() as u64,
            tables: [("keys".to_string(), 2u64), ("instances".to_string(), 1)].into(),
            rows: 3,
            sealed_rows: 2,
            master_key_ids: vec!["file:0011223344556677".into()],
        }
    }

    fn payload(n: usize) -> Vec<u8> {
        let mut p = SQLITE_MAGIC.to_vec();
        p.extend((0..n).map(|i| (i % 253) as u8));
        p
    }

    fn sample(k: &FileMasterKey, n: usize) -> Vec<u8> {
        let p = payload(n);
        seal_backup(k, 1_735_689_600, &manifest(&p), &p).unwrap()
    }

    fn is_not_intact<T: std::fmt::Debug>(r: Result<T, BackupError>) -> bool {
        matches!(r, Err(BackupError::NotIntact))
    }

    #[test]
    fn round_trip_small_and_multi_chunk() {
        let k = mk();
        for n in [0, 200, CHUNK_LEN, 3 * CHUNK_LEN + 7] {
            let b = sample(&k, n);
            let o = open_backup(&b, &k).unwrap();
            assert_eq!(o.payload, payload(n));
            assert_eq!(o.manifest, manifest(&payload(n)));
            assert_eq!(o.header.master_key_id, k.key_id());
            let mut r = b.as_slice();
            let v = open_backup_from(&mut r, &k, &mut std::io::sink()).unwrap();
            assert_eq!(v.file_sha256, hex(&sha256(&b)));
            assert_eq!(v.file_bytes, b.len() as u64);
        }
    }

    #[test]
    fn every_truncation_and_every_bit_flip_is_refused_alike() {
        let k = mk();
        let b = sample(&k, 300);
        for n in 0..b.len() {
            assert!(is_not_intact(open_backup(&b[..n], &k)), "cut at {n}");
        }
        for i in 0..b.len() {
            for bit in [0u8, 3, 7] {
                let mut c = b.clone();
                c[i] ^= 1 << bit;
                match open_backup(&c, &k) {
                    Err(BackupError::NotIntact) => {}
                    // A flip in the header may turn `format` into another number, or change
                    // the master key id: refused, with that reason.
                    Err(BackupError::Unsupported { .. } | BackupError::Version1) => {}
                    Err(BackupError::MasterKeyMissing { .. }) => {}
                    other => panic!("flip of bit {bit} at byte {i}: {other:?}"),
                }
            }
        }
        let mut longer = b.clone();
        longer.push(0);
        assert!(is_not_intact(open_backup(&longer, &k)));
    }

    /// Someone who recomputes the trailing checksum, or rewrites the header consistently,
    /// still cannot change anything: the header is bound into every chunk.
    #[test]
    fn forgeries_with_recomputed_checksums_are_refused() {
        let k = mk();
        let b = sample(&k, 3 * CHUNK_LEN);
        let reseal = |mut body: Vec<u8>| {
            body.truncate(body.len() - CHECKSUM_LEN);
            let sum = sha256(&body);
            body.extend_from_slice(&sum);
            body
        };
        let hlen = u32::from_be_bytes(b[15..19].try_into().unwrap()) as usize;
        let hstart = 19;
        let body_start = hstart + hlen;
        let header: Header = serde_json::from_slice(&b[hstart..body_start]).unwrap();
        let with_header = |h: &Header| {
            let hj = serde_json::to_vec(h).unwrap();
            let mut out = MAGIC.to_vec();
            out.extend_from_slice(&(hj.len() as u32).to_be_bytes());
            out.extend_from_slice(&hj);
            out.extend_from_slice(&b[body_start..]);
            reseal(out)
        };
        // a changed creation time
        let mut h = header.clone();
        h.created_unix += 1;
        assert!(is_not_intact(open_backup(&with_header(&h), &k)));
        // another backup id (the file key's seal context)
        let mut h = header.clone();
        h.backup_id = uuid::Uuid::new_v4().to_string();
        assert!(is_not_intact(open_backup(&with_header(&h), &k)));
        // the file key of another backup
        let other = sample(&k, 10);
        let ohlen = u32::from_be_bytes(other[15..19].try_into().unwrap()) as usize;
        let oh: Header = serde_json::from_slice(&other[19..19 + ohlen]).unwrap();
        let mut h = header.clone();
        h.sealed_file_key = oh.sealed_file_key.clone();
        h.backup_id = oh.backup_id.clone();
        assert!(is_not_intact(open_backup(&with_header(&h), &k)));
        // a shorter plaintext (the last chunks dropped)
        let mut h = header.clone();
        h.plaintext_bytes -= CHUNK_LEN as u64;
        let mut cut = with_header(&h);
        cut.truncate(cut.len() - CHECKSUM_LEN - CHUNK_LEN - TAG_LEN);
        assert!(is_not_intact(open_backup(
            &reseal([cut, vec![0; 32]].concat()),
            &k
        )));
        // chunks swapped, dropped, duplicated
        let c = CHUNK_LEN + TAG_LEN;
        let chunk = |i: usize| b[body_start + i * c..body_start + (i + 1) * c].to_vec();
        let tail = b[body_start + 3 * c..].to_vec();
        let head = b[..body_start].to_vec();
        for order in [vec![1, 0, 2], vec![0, 2], vec![0, 0, 1, 2], vec![0, 1, 1]] {
            let mut f = head.clone();
            for i in order.iter() {
                f.extend_from_slice(&chunk(*i));
            }
            f.extend_from_slice(&tail);
            assert!(is_not_intact(open_backup(&reseal(f), &k)), "{order:?}");
        }
        // a format number the reader does not know, or format 1
        let mut h = header.clone();
        h.format = 3;
        assert!(matches!(
            open_backup(&with_header(&h), &k),
            Err(BackupError::Unsupported { format: 3, .. })
        ));
        let mut h = header.clone();
        h.format = 1;
        assert!(matches!(
            open_backup(&with_header(&h), &k),
            Err(BackupError::Version1)
        ));
    }

    #[test]
    fn another_master_key_is_named() {
        let k = mk();
        let b = sample(&k, 10);
        match open_backup(&b, &mk()) {
            Err(e @ BackupError::MasterKeyMissing { .. }) => {
                assert!(e.to_string().contains(k.key_id()), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hostile_lengths_allocate_nothing_large() {
        let k = mk();
        // a header length past the bound, and a plaintext length of 1 TiB with no data
        let mut f = MAGIC.to_vec();
        f.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(is_not_intact(open_backup(&f, &k)));
        let b = sample(&k, 10);
        let hlen = u32::from_be_bytes(b[15..19].try_into().unwrap()) as usize;
        let mut h: Header = serde_json::from_slice(&b[19..19 + hlen]).unwrap();
        for n in [MAX_PLAINTEXT, MAX_PLAINTEXT + 1, u64::MAX, 0, 3] {
            h.plaintext_bytes = n;
            let hj = serde_json::to_vec(&h).unwrap();
            let mut f = MAGIC.to_vec();
            f.extend_from_slice(&(hj.len() as u32).to_be_bytes());
            f.extend_from_slice(&hj);
            f.extend_from_slice(&b[19 + hlen..]);
            assert!(is_not_intact(open_backup(&f, &k)), "{n}");
        }
    }

    #[test]
    fn the_manifest_and_payload_are_not_readable_in_the_file() {
        let k = mk();
        let p = payload(5000);
        let mut m = manifest(&p);
        m.source = "sqlite:///very/secret/path".into();
        let b = seal_backup(&k, 0, &m, &p).unwrap();
        let has = |needle: &[u8]| b.windows(needle.len()).any(|w| w == needle);
        assert!(!has(b"very/secret/path"));
        assert!(!has(SQLITE_MAGIC));
        assert!(!has(b"\"tables\""));
    }

    #[test]
    fn v1_files_are_recognised_and_still_decode() {
        let p = payload(100);
        let h = HeaderV1 {
            format: 1,
            created: "2025-01-01T00:00:00Z".into(),
            created_unix: 0,
            keyward_version: "old".into(),
            source_backend: "sqlite".into(),
            source: "sqlite://x".into(),
            payload_format: PAYLOAD_FORMAT.into(),
            payload_bytes: p.len() as u64,
            payload_sha256: hex(&sha256(&p)),
            tables: [("keys".to_string(), 3u64)].into(),
            rows: 3,
            sealed_rows: 0,
            master_key_ids: vec![],
        };
        let hj = serde_json::to_vec(&h).unwrap();
        let mut f = MAGIC.to_vec();
        f.extend_from_slice(&(hj.len() as u32).to_be_bytes());
        f.extend_from_slice(&hj);
        f.extend_from_slice(&p);
        let sum = sha256(&f);
        f.extend_from_slice(&sum);
        assert!(matches!(open_backup(&f, &mk()), Err(BackupError::Version1)));
        let (h2, p2) = decode_v1(&f).unwrap();
        assert_eq!(h2, h);
        assert_eq!(p2, p.as_slice());
        let mut bad = f.clone();
        bad[40] ^= 1;
        assert!(decode_v1(&bad).is_err());
    }
}

//! The master key: the root of trust under which every secret row is sealed.
//!
//! Providers implement [`MasterKeyProvider`]; this module has the `file` provider. Every
//! sealed row carries the provider's [`MasterKeyProvider::key_id`], and the AAD of each seal
//! binds the row's kind, instance, object id, version and that master key id, so a sealed value
//! moved onto another row (or re-labelled with another key id) fails to open.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};

use crate::dek::push_lp;
use crate::{random_bytes, random_secret, sha256, CryptoError, SecretBytes};

/// Where a sealed value belongs. All parts go into the AAD.
#[derive(Debug, Clone, Copy)]
pub struct SealContext<'a> {
    /// What the row is: `key-version`, `import-token`, `signing-key`, ...
    pub kind: &'a str,
    pub instance: &'a str,
    pub object: &'a str,
    pub version: &'a str,
}

/// Seals and opens secret rows. Implementations must be safe to call from many threads.
pub trait MasterKeyProvider: Send + Sync + fmt::Debug {
    /// A stable, non-secret identifier of the master key, recorded on every sealed row.
    fn key_id(&self) -> &str;
    fn seal(&self, ctx: &SealContext<'_>, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError>;
    fn open(&self, ctx: &SealContext<'_>, sealed: &[u8]) -> Result<SecretBytes, CryptoError>;

    /// Opens a value whose row records `master_key_id`: a provider holding one key opens
    /// only its own rows; a [`MasterKeyRing`] picks the member with that id.
    fn open_as(
        &self,
        master_key_id: &str,
        ctx: &SealContext<'_>,
        sealed: &[u8],
    ) -> Result<SecretBytes, CryptoError> {
        if master_key_id == self.key_id() {
            self.open(ctx, sealed)
        } else {
            Err(CryptoError::Open)
        }
    }

    /// The ids of every key this provider can open.
    fn key_ids(&self) -> Vec<String> {
        vec![self.key_id().to_string()]
    }
}

/// Several master keys: one `current` key seals, every member opens the rows that name it.
/// This is what lets a master key be rotated (or moved into an HSM) while the service runs:
/// rows sealed under the old key keep opening until they are re-sealed under the new one.
#[derive(Debug, Clone)]
pub struct MasterKeyRing {
    members: Vec<std::sync::Arc<dyn MasterKeyProvider>>,
    current: usize,
}

impl MasterKeyRing {
    /// A ring sealing with the member whose id is `current`. `None` if no member has that id
    /// or two members share an id.
    pub fn new(members: Vec<std::sync::Arc<dyn MasterKeyProvider>>, current: &str) -> Option<Self> {
        let mut ids: Vec<&str> = members.iter().map(|m| m.key_id()).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w.first() == w.get(1)) {
            return None;
        }
        let current = members.iter().position(|m| m.key_id() == current)?;
        Some(Self { members, current })
    }

    /// The member with id `id`, if any.
    pub fn member(&self, id: &str) -> Option<&std::sync::Arc<dyn MasterKeyProvider>> {
        self.members.iter().find(|m| m.key_id() == id)
    }

    fn current(&self) -> Result<&std::sync::Arc<dyn MasterKeyProvider>, CryptoError> {
        self.members.get(self.current).ok_or(CryptoError::Primitive)
    }
}

impl MasterKeyProvider for MasterKeyRing {
    fn key_id(&self) -> &str {
        self.members.get(self.current).map_or("", |m| m.key_id())
    }

    fn seal(&self, ctx: &SealContext<'_>, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.current()?.seal(ctx, plaintext)
    }

    fn open(&self, ctx: &SealContext<'_>, sealed: &[u8]) -> Result<SecretBytes, CryptoError> {
        self.current()?.open(ctx, sealed)
    }

    fn open_as(
        &self,
        master_key_id: &str,
        ctx: &SealContext<'_>,
        sealed: &[u8],
    ) -> Result<SecretBytes, CryptoError> {
        self.member(master_key_id)
            .ok_or(CryptoError::Open)?
            .open(ctx, sealed)
    }

    fn key_ids(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| m.key_id().to_string())
            .collect()
    }
}

/// Why a master key could not be loaded; the service then stays sealed and says this.
#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error("master key file {path} is readable or writable by group/other (mode {mode:o}); run `chmod 600 {path}`")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("master key file {path} is missing, and the database already holds sealed rows: refusing to create a new master key")]
    MissingWithData { path: PathBuf },
    #[error("master key file {path} does not hold a 32-byte key")]
    BadLength { path: PathBuf },
    #[error("master key file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("master key generation failed")]
    Crypto,
}

const SEAL_VERSION: u8 = 1;

/// The `file` provider: 32 random bytes in a file of mode 0600.
pub struct FileMasterKey {
    key: LessSafeKey,
    key_id: String,
}

impl fmt::Debug for FileMasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileMasterKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl FileMasterKey {
    /// Loads the key at `path`. If the file does not exist it is created only when
    /// `may_create` is true (the caller passes false when the database already has sealed rows).
    pub fn load_or_create(path: &Path, may_create: bool) -> Result<Self, MasterKeyError> {
        let io = |source| MasterKeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        match fs::metadata(path) {
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(MasterKeyError::Permissions {
                        path: path.to_path_buf(),
                        mode,
                    });
                }
                let f = fs::File::open(path).map_err(io)?;
                let mut tmp = zeroize::Zeroizing::new(Vec::with_capacity(33));
                f.take(33).read_to_end(&mut tmp).map_err(io)?;
                if tmp.len() != 32 {
                    return Err(MasterKeyError::BadLength {
                        path: path.to_path_buf(),
                    });
                }
                Self::from_secret(&SecretBytes::copy_from(&tmp))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !may_create {
                    return Err(MasterKeyError::MissingWithData {
                        path: path.to_path_buf(),
                    });
                }
                let key = random_secret(32).map_err(|_| MasterKeyError::Crypto)?;
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io)?;
                f.write_all(key.expose()).map_err(io)?;
                f.sync_all().map_err(io)?;
                if let Some(dir) = path.parent() {
                    if let Ok(d) = fs::File::open(dir) {
                        let _ = d.sync_all();
                    }
                }
                Self::from_secret(&key)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// A provider over given key bytes (tests, and keys that arrive by other means).
    pub fn from_secret(key: &SecretBytes) -> Result<Self, MasterKeyError> {
        if key.len() != 32 {
            return Err(MasterKeyError::Crypto);
        }
        let unbound =
            UnboundKey::new(&AES_256_GCM, key.expose()).map_err(|_| MasterKeyError::Crypto)?;
        let digest = sha256(&[b"keyward-master-key-id".as_slice(), key.expose()].concat());
        let key_id = format!("file:{}", hex(digest.get(..8).unwrap_or_default()));
        Ok(Self {
            key: LessSafeKey::new(unbound),
            key_id,
        })
    }

    fn aad(&self, ctx: &SealContext<'_>) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(b"keyward-seal-v1");
        for p in [
            ctx.kind,
            ctx.instance,
            ctx.object,
            ctx.version,
            &self.key_id,
        ] {
            push_lp(&mut out, p.as_bytes());
        }
        out
    }
}

impl MasterKeyProvider for FileMasterKey {
    fn key_id(&self) -> &str {
        &self.key_id
    }

    fn seal(&self, ctx: &SealContext<'_>, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let iv = random_bytes(NONCE_LEN)?;
        let nonce = Nonce::try_assume_unique_for_key(&iv).map_err(|_| CryptoError::Primitive)?;
        let mut buf = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(nonce, Aad::from(self.aad(ctx)), &mut buf)
            .map_err(|_| CryptoError::Primitive)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + buf.len());
        out.push(SEAL_VERSION);
        out.extend_from_slice(&iv);
        out.extend_from_slice(&buf);
        Ok(out)
    }

    fn open(&self, ctx: &SealContext<'_>, sealed: &[u8]) -> Result<SecretBytes, CryptoError> {
        let (ver, rest) = sealed.split_first().ok_or(CryptoError::Open)?;
        if *ver != SEAL_VERSION || rest.len() < NONCE_LEN + 16 {
            return Err(CryptoError::Open);
        }
        let (iv, ct) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(iv).map_err(|_| CryptoError::Open)?;
        let mut buf = SecretBytes::copy_from(ct);
        let n = self
            .key
            .open_in_place(nonce, Aad::from(self.aad(ctx)), buf.expose_mut())
            .map_err(|_| CryptoError::Open)?
            .len();
        Ok(SecretBytes::copy_from(
            buf.expose().get(..n).unwrap_or_default(),
        ))
    }
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(object: &'a str) -> SealContext<'a> {
        SealContext {
            kind: "key-version",
            instance: "i",
            object,
            version: "v",
        }
    }

    #[test]
    fn seal_binds_row_identity() -> Result<(), Box<dyn std::error::Error>> {
        let mk = FileMasterKey::from_secret(&random_secret(32)?)?;
        let sealed = mk.seal(&ctx("a"), b"material")?;
        assert_eq!(mk.open(&ctx("a"), &sealed)?.expose(), b"material");
        assert_eq!(mk.open(&ctx("b"), &sealed).err(), Some(CryptoError::Open));
        let other = FileMasterKey::from_secret(&random_secret(32)?)?;
        assert_eq!(
            other.open(&ctx("a"), &sealed).err(),
            Some(CryptoError::Open)
        );
        assert!(!format!("{mk:?}").contains("key:"));
        Ok(())
    }

    #[test]
    fn ring_seals_with_current_and_opens_by_row_key_id() -> Result<(), Box<dyn std::error::Error>> {
        use std::sync::Arc;
        let old: Arc<dyn MasterKeyProvider> =
            Arc::new(FileMasterKey::from_secret(&random_secret(32)?)?);
        let new: Arc<dyn MasterKeyProvider> =
            Arc::new(FileMasterKey::from_secret(&random_secret(32)?)?);
        let by_old = old.seal(&ctx("a"), b"m1")?;
        let ring = MasterKeyRing::new(vec![old.clone(), new.clone()], new.key_id())
            .ok_or("ring refused")?;
        assert_eq!(ring.key_id(), new.key_id());
        assert_eq!(ring.key_ids().len(), 2);
        assert_eq!(
            ring.open_as(old.key_id(), &ctx("a"), &by_old)?.expose(),
            b"m1"
        );
        // the row's key id decides: the same bytes named as the other key's do not open
        assert_eq!(
            ring.open_as(new.key_id(), &ctx("a"), &by_old).err(),
            Some(CryptoError::Open)
        );
        assert_eq!(
            ring.open_as("file:unknown", &ctx("a"), &by_old).err(),
            Some(CryptoError::Open)
        );
        let by_ring = ring.seal(&ctx("b"), b"m2")?;
        assert_eq!(new.open(&ctx("b"), &by_ring)?.expose(), b"m2");
        assert!(old.open(&ctx("b"), &by_ring).is_err());
        // no such current member, or a duplicated id: refused
        assert!(MasterKeyRing::new(vec![old.clone()], new.key_id()).is_none());
        assert!(MasterKeyRing::new(vec![old.clone(), old.clone()], old.key_id()).is_none());
        Ok(())
    }

    #[test]
    fn file_created_0600_and_refused_when_open_to_others() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = std::env::temp_dir().join(format!("kw-mk-{}", hex(&random_bytes(8)?)));
        fs::create_dir_all(&dir)?;
        let p = dir.join("master.key");
        assert!(matches!(
            FileMasterKey::load_or_create(&p, false),
            Err(MasterKeyError::MissingWithData { .. })
        ));
        let a = FileMasterKey::load_or_create(&p, true)?;
        assert_eq!(fs::metadata(&p)?.permissions().mode() & 0o777, 0o600);
        let b = FileMasterKey::load_or_create(&p, true)?;
        assert_eq!(a.key_id(), b.key_id());
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644))?;
        assert!(matches!(
            FileMasterKey::load_or_create(&p, true),
            Err(MasterKeyError::Permissions { .. })
        ));
        fs::remove_dir_all(&dir)?;
        Ok(())
    }
}

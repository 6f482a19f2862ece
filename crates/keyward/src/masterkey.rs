//! A node's master keyring: every generation of the file master key and of the HSM master key
//! that this node can reach, and which one seals new rows.
//!
//! Generations are found by name. The file key configured as `master.key` is generation 1,
//! `master.key.2` is generation 2, and so on; in the HSM the key labelled `L` is generation 1 and
//! `L.2`, `L.3`, ... follow. Nothing is ever renamed, so a key's id (which every sealed row
//! records and binds in its AAD) never changes.
//!
//! Which key seals is decided in the database (the [`CURRENT_MARKER`] row), so every node of a
//! cluster agrees; a node that cannot load the chosen key seals with the newest generation of its
//! configured provider and says so. `keyward admin master-key rotate` creates a generation,
//! waits for running nodes to load it, points the marker at it and re-seals every row; see
//! `docs/master-key.md`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use keyward_crypto::master::{FileMasterKey, MasterKeyProvider, MasterKeyRing};
use keyward_crypto::pkcs11::{secret_key_labels, Pkcs11Config, Pkcs11MasterKey, Pkcs11Pin};
use keyward_store::Store;
use parking_lot::Mutex;

use crate::config::{MasterKeySource, Pkcs11Settings, Settings, PKCS11_PIN_ENV};

/// The `secrets` row naming the master key that seals new rows. Not a secret: it holds a key id
/// and is stored with an empty `master_key_id`, so it is not counted as a sealed row.
pub const CURRENT_MARKER: &str = "master-key-current";

/// Where a master key lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Pkcs11,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Pkcs11 => "pkcs11",
        }
    }
}

/// One master key generation.
#[derive(Debug, Clone)]
pub struct Generation {
    pub kind: Kind,
    pub generation: u32,
    /// The file's path or the HSM object's label.
    pub name: String,
    pub provider: Arc<dyn MasterKeyProvider>,
}

impl Generation {
    pub fn id(&self) -> &str {
        self.provider.key_id()
    }
}

/// The generation number of `name` under `base`: `base` is 1, `base.N` is N (N ≥ 2).
pub fn generation_of(base: &str, name: &str) -> Option<u32> {
    if name == base {
        return Some(1);
    }
    let suffix = name.strip_prefix(base)?.strip_prefix('.')?;
    let n: u32 = suffix.parse().ok()?;
    (n >= 2 && suffix == n.to_string()).then_some(n)
}

fn generation_name(base: &str, n: u32) -> String {
    if n <= 1 {
        base.to_string()
    } else {
        format!("{base}.{n}")
    }
}

/// The keys a node can reach, opened once and kept.
#[derive(Debug)]
pub struct Keyring {
    file: PathBuf,
    pkcs11: Option<Pkcs11Settings>,
    configured: Kind,
    members: Mutex<Vec<Generation>>,
}

/// What a scan found wrong with the keys of the provider that is not the configured one (they
/// matter only if rows are sealed under them; the caller decides).
pub type Warnings = Vec<String>;

impl Keyring {
    pub fn new(settings: &Settings) -> Self {
        Self {
            file: settings.master_key_file.clone(),
            pkcs11: settings.pkcs11.clone(),
            configured: match settings.master_key {
                MasterKeySource::File => Kind::File,
                MasterKeySource::Pkcs11(_) => Kind::Pkcs11,
            },
            members: Mutex::new(Vec::new()),
        }
    }

    pub fn configured(&self) -> Kind {
        self.configured
    }

    /// Words for where the configured provider's key is (for messages).
    pub fn describe_configured(&self) -> String {
        match (&self.configured, &self.pkcs11) {
            (Kind::Pkcs11, Some(p)) => {
                format!("{:?} on HSM token {:?}", p.key_label, p.token_label)
            }
            _ => self.file.display().to_string(),
        }
    }

    /// Looks for generations on disk and in the HSM, opening new ones and dropping those that
    /// are gone. With no generation of the configured provider, generation 1 is created if
    /// `may_create` (the database holds no sealed row), else this fails with the provider's own
    /// reason. Failures of the configured provider fail the scan; those of the other provider
    /// come back as warnings.
    pub fn scan(&self, may_create: bool) -> Result<Warnings, String> {
        let mut warnings = Vec::new();
        let mut found = Vec::new();
        let known = self.members.lock().clone();
        for kind in [Kind::File, Kind::Pkcs11] {
            let res = match kind {
                Kind::File => self.scan_files(&known),
                Kind::Pkcs11 => match &self.pkcs11 {
                    Some(p) => self.scan_hsm(p, &known),
                    None => Ok(Vec::new()),
                },
            };
            match res {
                Ok(mut gens) => {
                    if gens.is_empty() && kind == self.configured {
                        gens.push(self.create_first(may_create)?);
                    }
                    found.extend(gens);
                }
                Err(e) if kind == self.configured => return Err(e),
                Err(e) => warnings.push(e),
            }
        }
        *self.members.lock() = found;
        Ok(warnings)
    }

    fn scan_files(&self, known: &[Generation]) -> Result<Vec<Generation>, String> {
        let mut out = Vec::new();
        for (generation, path) in file_generations(&self.file)? {
            let shown = path.display().to_string();
            if let Some(g) = known
                .iter()
                .find(|g| g.kind == Kind::File && g.name == shown)
            {
                out.push(g.clone());
                continue;
            }
            let mk = FileMasterKey::load_or_create(&path, false).map_err(|e| e.to_string())?;
            out.push(Generation {
                kind: Kind::File,
                generation,
                name: shown,
                provider: Arc::new(mk),
            });
        }
        Ok(out)
    }

    fn scan_hsm(
        &self,
        p: &Pkcs11Settings,
        known: &[Generation],
    ) -> Result<Vec<Generation>, String> {
        let labels = secret_key_labels(&hsm_config(p, &p.key_label)?).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for label in labels {
            let Some(generation) = generation_of(&p.key_label, &label) else {
                continue;
            };
            if let Some(g) = known
                .iter()
                .find(|g| g.kind == Kind::Pkcs11 && g.name == label)
            {
                out.push(g.clone());
                continue;
            }
            let mk = Pkcs11MasterKey::open_or_create(hsm_config(p, &label)?, false)
                .map_err(|e| e.to_string())?;
            out.push(Generation {
                kind: Kind::Pkcs11,
                generation,
                name: label,
                provider: Arc::new(mk),
            });
        }
        out.sort_by_key(|g| g.generation);
        Ok(out)
    }

    /// Generation 1 of the configured provider, created if `may_create`; otherwise the
    /// provider's reason why it is missing.
    fn create_first(&self, may_create: bool) -> Result<Generation, String> {
        self.create_generation(self.configured, 1, may_create)
    }

    fn create_generation(
        &self,
        kind: Kind,
        n: u32,
        may_create: bool,
    ) -> Result<Generation, String> {
        match kind {
            Kind::File => {
                let (dir, base) = split_path(&self.file)?;
                let name = generation_name(&base, n);
                let path = dir.join(&name);
                if may_create && !path.exists() {
                    // Written under a name no scan matches, then renamed: a node scanning
                    // meanwhile sees no file or a whole one.
                    let tmp = dir.join(format!(".{name}.new"));
                    let _ = std::fs::remove_file(&tmp);
                    FileMasterKey::load_or_create(&tmp, true).map_err(|e| e.to_string())?;
                    std::fs::rename(&tmp, &path)
                        .map_err(|e| format!("master key file {}: {e}", path.display()))?;
                    if let Ok(d) = std::fs::File::open(&dir) {
                        let _ = d.sync_all();
                    }
                }
                let mk =
                    FileMasterKey::load_or_create(&path, may_create).map_err(|e| e.to_string())?;
                Ok(Generation {
                    kind,
                    generation: n,
                    name: path.display().to_string(),
                    provider: Arc::new(mk),
                })
            }
            Kind::Pkcs11 => {
                let p = self
                    .pkcs11
                    .as_ref()
                    .ok_or("no HSM is configured (--pkcs11-module, --pkcs11-token-label)")?;
                let label = generation_name(&p.key_label, n);
                let mk = Pkcs11MasterKey::open_or_create(hsm_config(p, &label)?, may_create)
                    .map_err(|e| e.to_string())?;
                Ok(Generation {
                    kind,
                    generation: n,
                    name: label,
                    provider: Arc::new(mk),
                })
            }
        }
    }

    /// Creates the next generation of `kind` (1 if there is none yet) and adds it to the ring.
    pub fn create_next(&self, kind: Kind) -> Result<Generation, String> {
        let n = self
            .members
            .lock()
            .iter()
            .filter(|g| g.kind == kind)
            .map(|g| g.generation)
            .max()
            .unwrap_or(0)
            + 1;
        let g = self.create_generation(kind, n, true)?;
        self.members.lock().push(g.clone());
        Ok(g)
    }

    /// Every generation found by the last scan.
    pub fn generations(&self) -> Vec<Generation> {
        self.members.lock().clone()
    }

    /// The newest generation of `kind`.
    pub fn newest(&self, kind: Kind) -> Option<Generation> {
        self.members
            .lock()
            .iter()
            .filter(|g| g.kind == kind)
            .max_by_key(|g| g.generation)
            .cloned()
    }

    /// The key that seals: `marker` if this node has it, else the newest generation of the
    /// configured provider.
    pub fn sealing_id(&self, marker: Option<&str>) -> Option<String> {
        let members = self.members.lock();
        if let Some(m) = marker {
            if members.iter().any(|g| g.id() == m) {
                return Some(m.to_string());
            }
        }
        drop(members);
        self.newest(self.configured).map(|g| g.id().to_string())
    }

    /// The ring of every generation found, sealing with [`Self::sealing_id`].
    pub fn ring(&self, marker: Option<&str>) -> Result<MasterKeyRing, String> {
        let current = self
            .sealing_id(marker)
            .ok_or("no master key of the configured provider was found")?;
        let members = self
            .members
            .lock()
            .iter()
            .map(|g| g.provider.clone())
            .collect();
        MasterKeyRing::new(members, &current)
            .ok_or_else(|| "two master key generations have the same key id".to_string())
    }
}

/// The generations of the key file `file` present on disk (`file` itself is 1, `file.N` is N),
/// in generation order. A missing directory holds none.
pub fn file_generations(file: &Path) -> Result<Vec<(u32, PathBuf)>, String> {
    let (dir, base) = split_path(file)?;
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("master key directory {}: {e}", dir.display())),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("master key directory {}: {e}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(generation) = generation_of(&base, &name) {
            out.push((generation, dir.join(&name)));
        }
    }
    out.sort_by_key(|(g, _)| *g);
    Ok(out)
}

/// Loads the master keyring for the database behind `store` (creating the first key file only
/// when the database holds no sealed row) and checks that it opens every sealed row. `Err`
/// says why the service must stay sealed.
pub async fn open_ring(
    settings: &Settings,
    store: &dyn Store,
    now: i64,
) -> Result<(Arc<Keyring>, MasterKeyRing), String> {
    let sealed_under = store.sealed_key_ids().await.map_err(|e| e.to_string())?;
    let keyring = Arc::new(Keyring::new(settings));
    let warnings = keyring.scan(sealed_under.is_empty())?;
    let marker = read_marker(store).await.map_err(|e| e.to_string())?;
    let ring = keyring.ring(marker.as_deref())?;
    let have = ring.key_ids();
    let missing: Vec<String> = sealed_under
        .into_iter()
        .filter(|id| !have.contains(id))
        .collect();
    if !missing.is_empty() {
        let mut reason = format!(
            "the master key {} ({}) does not match the database's rows (sealed under {}): \
             use the master key this database was created with",
            keyring.describe_configured(),
            have.join(", "),
            missing.join(", ")
        );
        for w in warnings {
            reason.push_str("; ");
            reason.push_str(&w);
        }
        return Err(reason);
    }
    for w in &warnings {
        tracing::warn!(warning = %w, "a master key of the other provider could not be loaded");
    }
    if let Some(m) = &marker {
        if m != ring.key_id() {
            tracing::warn!(
                chosen = %m,
                sealing = ring.key_id(),
                "this node does not have the master key the database chose for sealing: \
                 sealing with its own newest key until that key appears"
            );
        }
    } else {
        write_marker(store, ring.key_id(), now)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok((keyring, ring))
}

/// The marker row's key id, if set.
pub async fn read_marker(store: &dyn Store) -> anyhow::Result<Option<String>> {
    Ok(store
        .get_secret(CURRENT_MARKER)
        .await?
        .map(|(v, _)| String::from_utf8_lossy(&v).into_owned()))
}

/// Points the marker at `id`.
pub async fn write_marker(store: &dyn Store, id: &str, now: i64) -> anyhow::Result<()> {
    store
        .put_secret(CURRENT_MARKER, id.as_bytes(), "", now)
        .await?;
    Ok(())
}

fn split_path(p: &Path) -> Result<(PathBuf, String), String> {
    let base = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| format!("master key file {} has no file name", p.display()))?;
    let dir = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((dir, base))
}

/// The PIN, read afresh from its file or the environment (it is never kept outside the
/// providers' zeroizing secrets).
fn read_pin(p: &Pkcs11Settings) -> Result<Pkcs11Pin, String> {
    match &p.pin_file {
        Some(f) => Pkcs11Pin::from_file(f),
        None => match std::env::var(PKCS11_PIN_ENV) {
            Ok(s) => Pkcs11Pin::from_string(s),
            Err(_) => return Err(format!("no PKCS#11 PIN: {PKCS11_PIN_ENV} is not set")),
        },
    }
    .map_err(|e| e.to_string())
}

fn hsm_config(p: &Pkcs11Settings, label: &str) -> Result<Pkcs11Config, String> {
    Ok(Pkcs11Config {
        module: p.module.clone(),
        token_label: p.token_label.clone(),
        pin: read_pin(p)?,
        key_label: label.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_names() {
        assert_eq!(generation_of("master.key", "master.key"), Some(1));
        assert_eq!(generation_of("master.key", "master.key.2"), Some(2));
        assert_eq!(generation_of("master.key", "master.key.17"), Some(17));
        for other in [
            "master.key.1",
            "master.key.0",
            "master.key.02",
            "master.key.x",
            "master.key.2.bak",
            "master.key2",
            "master.keys",
            "other.key",
        ] {
            assert_eq!(generation_of("master.key", other), None, "{other}");
        }
        assert_eq!(generation_name("L", 1), "L");
        assert_eq!(generation_name("L", 3), "L.3");
    }
}

//! The `pkcs11` master key provider: the master key is an AES-256 secret key object inside an
//! HSM, reached through a PKCS#11 module (SoftHSM2 in tests), and every seal and open runs
//! inside the HSM with `CKM_AES_GCM`.
//!
//! Format and binding are exactly those of the `file` provider ([`crate::master`]): a sealed
//! value is `version (1) || iv (12) || ciphertext || tag (16)`, and the AAD is
//! `"keyward-seal-v1"` followed by the length-prefixed kind, instance, object, version and
//! master key id. Only where the AES key lives differs.
//!
//! What must hold:
//! - The key object is created only when the caller says so (`may_create`, false when the
//!   database already holds sealed rows), with `CKA_TOKEN`, `CKA_PRIVATE`, `CKA_SENSITIVE` and
//!   not `CKA_EXTRACTABLE`; an existing object that is extractable or not sensitive is refused.
//! - The PIN lives in a zeroizing secret type, is never logged, and `Debug` shows no secret.
//! - Any number of threads may seal and open at once: each operation borrows a session from a
//!   pool (a PKCS#11 session is single-threaded), and a broken session is replaced and the
//!   operation retried once.
//!
//! A PKCS#11 module is initialised once per process (`C_Initialize`) and never finalised, so
//! several providers in one process (tests, master key migration) share it. Login state is per
//! process and token in PKCS#11; a provider that finds its token already logged in checks its
//! PIN against the one that logged in, so a wrong PIN is refused in that case too.

use std::fmt;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError, RwLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use zeroize::{Zeroize, Zeroizing};

use crate::dek::push_lp;
use crate::master::{hex, MasterKeyProvider, SealContext};
use crate::{ct_eq, hmac_sha256, random_bytes, random_secret, sha256, CryptoError, SecretBytes};

/// Version byte of a sealed value; the format is the `file` provider's.
const SEAL_VERSION: u8 = 1;
const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Sessions kept open between operations; more are opened under load and closed afterwards.
const MAX_IDLE_SESSIONS: usize = 32;
/// Longest PIN file accepted (PKCS#11 PINs are short; this only bounds the read).
const MAX_PIN_LEN: usize = 256;

/// A PKCS#11 user PIN, held in a zeroizing secret and redacted in `Debug`.
pub struct Pkcs11Pin {
    pin: AuthPin,
    /// HMAC of the PIN under a per-process random key: compares PINs without keeping copies.
    tag: [u8; 32],
}

impl fmt::Debug for Pkcs11Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pkcs11Pin([REDACTED])")
    }
}

impl Pkcs11Pin {
    /// Reads the PIN from `path`: refused if group or other have any permission on the file
    /// (as for the master key file). One trailing newline (`\n` or `\r\n`) is dropped.
    pub fn from_file(path: &Path) -> Result<Self, Pkcs11Error> {
        let io = |source| Pkcs11Error::PinFile {
            path: path.to_path_buf(),
            source,
        };
        let meta = fs::metadata(path).map_err(io)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(Pkcs11Error::PinFilePermissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        let f = fs::File::open(path).map_err(io)?;
        let mut buf = Zeroizing::new(Vec::with_capacity(MAX_PIN_LEN + 1));
        f.take(MAX_PIN_LEN as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(io)?;
        if buf.len() > MAX_PIN_LEN {
            return Err(Pkcs11Error::BadPin);
        }
        let mut end = buf.len();
        if buf.get(..end).is_some_and(|b| b.ends_with(b"\n")) {
            end -= 1;
            if buf.get(..end).is_some_and(|b| b.ends_with(b"\r")) {
                end -= 1;
            }
        }
        Self::from_bytes(buf.get(..end).unwrap_or_default())
    }

    /// A PIN given as a string (for example from `KEYWARD_PKCS11_PIN`); `s` is zeroized.
    pub fn from_string(mut s: String) -> Result<Self, Pkcs11Error> {
        let pin = Self::from_bytes(s.as_bytes());
        s.zeroize();
        pin
    }

    /// A PIN from raw bytes (must be non-empty UTF-8, as `C_Login` takes it here).
    pub fn from_bytes(b: &[u8]) -> Result<Self, Pkcs11Error> {
        let s = std::str::from_utf8(b).map_err(|_| Pkcs11Error::BadPin)?;
        if s.is_empty() {
            return Err(Pkcs11Error::BadPin);
        }
        // `to_owned` allocates exactly `len` bytes, so turning it into a `Box<str>` moves the
        // buffer into the secret without a reallocation that would leave a copy behind.
        Ok(Self {
            pin: AuthPin::new(s.to_owned().into_boxed_str()),
            tag: hmac_sha256(login_tag_key(), b),
        })
    }
}

/// What the `pkcs11` provider needs: the module, the token, the PIN and the key's label.
#[derive(Debug)]
pub struct Pkcs11Config {
    /// Path of the PKCS#11 module (for SoftHSM2: `/usr/lib/softhsm/libsofthsm2.so`).
    pub module: PathBuf,
    /// The token's label (`CKA_LABEL` of the token, as given to `softhsm2-util --init-token`).
    pub token_label: String,
    pub pin: Pkcs11Pin,
    /// The master key object's `CKA_LABEL`.
    pub key_label: String,
}

/// Why the HSM master key could not be loaded; the service then stays sealed and says this.
/// No variant carries a PIN.
#[derive(Debug, thiserror::Error)]
pub enum Pkcs11Error {
    #[error("PKCS#11 PIN file {path} is readable or writable by group/other (mode {mode:o}); run `chmod 600 {path}`")]
    PinFilePermissions { path: PathBuf, mode: u32 },
    #[error("PKCS#11 PIN file {path}: {source}")]
    PinFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the PKCS#11 PIN is empty, longer than 256 bytes or not UTF-8")]
    BadPin,
    #[error("PKCS#11 module {path}: {reason}")]
    Module { path: PathBuf, reason: String },
    #[error("no PKCS#11 token labelled {label:?} (tokens present: {present:?})")]
    TokenNotFound { label: String, present: Vec<String> },
    #[error("{count} PKCS#11 tokens are labelled {label:?}: token labels must be unique")]
    TokenAmbiguous { label: String, count: usize },
    #[error("PKCS#11 login to token {token:?} failed: {reason}")]
    Login { token: String, reason: String },
    #[error("the HSM master key {key:?} is missing from token {token:?}, and the database already holds sealed rows: refusing to create a new master key")]
    KeyMissingWithData { token: String, key: String },
    #[error("{count} secret key objects on token {token:?} are labelled {key:?}: the master key label must be unique")]
    KeyAmbiguous {
        token: String,
        key: String,
        count: usize,
    },
    #[error("the HSM object {key:?} on token {token:?} cannot be the master key: {reason}")]
    KeyUnsuitable {
        token: String,
        key: String,
        reason: String,
    },
    #[error("PKCS#11 {op} failed: {reason}")]
    Hsm { op: &'static str, reason: String },
}

fn ck_reason(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, f) => format!("{f:?}: CKR {rv:?}"),
        other => other.to_string(),
    }
}

fn hsm(op: &'static str) -> impl Fn(CkError) -> Pkcs11Error {
    move |e| Pkcs11Error::Hsm {
        op,
        reason: ck_reason(&e),
    }
}

fn rv_of(e: &CkError) -> Option<RvError> {
    match e {
        CkError::Pkcs11(rv, _) => Some(*rv),
        _ => None,
    }
}

/// The process-wide PKCS#11 context of `module`: `C_Initialize`d once, never finalised.
/// Everything in this process that talks to the module must use this context (concurrent
/// `C_Initialize` calls are not safe with every module).
pub fn module_context(module: &Path) -> Result<Pkcs11, Pkcs11Error> {
    static CONTEXTS: Mutex<Vec<(PathBuf, Pkcs11)>> = Mutex::new(Vec::new());
    let mut all = CONTEXTS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, ctx)) = all.iter().find(|(p, _)| p == module) {
        return Ok(ctx.clone());
    }
    let fail = |reason: String| Pkcs11Error::Module {
        path: module.to_path_buf(),
        reason,
    };
    if !module.exists() {
        return Err(fail("no such file".into()));
    }
    let ctx = Pkcs11::new(module).map_err(|e| fail(ck_reason(&e)))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) => {}
        // Initialised by another user of the module in this process: share it.
        Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(fail(ck_reason(&e))),
    }
    all.push((module.to_path_buf(), ctx.clone()));
    Ok(ctx)
}

/// A per-process random key under which PIN tags are kept (never the PIN itself).
fn login_tag_key() -> &'static SecretBytes {
    static KEY: OnceLock<SecretBytes> = OnceLock::new();
    KEY.get_or_init(|| {
        random_secret(32).unwrap_or_else(|_| SecretBytes::copy_from(&sha256(b"keyward-pin-tag")))
    })
}

/// Tokens this process has logged in to, with a keyed tag of the PIN that did it.
static LOGINS: Mutex<Vec<(String, [u8; 32])>> = Mutex::new(Vec::new());

/// The `pkcs11` master key provider.
pub struct Pkcs11MasterKey {
    ctx: Pkcs11,
    slot: Slot,
    pin: Pkcs11Pin,
    module: PathBuf,
    token_label: String,
    key_label: String,
    /// `CKA_ID` of the key object (empty if it has none).
    key_cka_id: Vec<u8>,
    key: RwLock<ObjectHandle>,
    key_id: String,
    idle: Mutex<Vec<Session>>,
    /// A session never used for operations: it keeps the token logged in (PKCS#11 login
    /// state ends with an application's last session, and with it the key's handle).
    _anchor: Mutex<Session>,
    /// Operations that failed for a reason other than their data and were retried.
    retried: AtomicU64,
}

impl fmt::Debug for Pkcs11MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11MasterKey")
            .field("key_id", &self.key_id)
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("key_label", &self.key_label)
            .finish_non_exhaustive()
    }
}

impl Pkcs11MasterKey {
    /// Opens the token, logs in and finds the master key object. If there is none it is
    /// generated inside the HSM, but only when `may_create` is true (the caller passes false
    /// when the database already has sealed rows).
    pub fn open_or_create(cfg: Pkcs11Config, may_create: bool) -> Result<Self, Pkcs11Error> {
        let ctx = module_context(&cfg.module)?;
        let slot = find_slot(&ctx, &cfg.token_label)?;
        let serial = ctx
            .get_token_info(slot)
            .map(|t| t.serial_number().to_string())
            .map_err(hsm("C_GetTokenInfo"))?;
        let session = ctx.open_rw_session(slot).map_err(hsm("C_OpenSession"))?;
        login(&session, &cfg, &serial)?;

        let unsuitable = |reason: &str| Pkcs11Error::KeyUnsuitable {
            token: cfg.token_label.clone(),
            key: cfg.key_label.clone(),
            reason: reason.to_string(),
        };
        let found = session
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Label(cfg.key_label.as_bytes().to_vec()),
            ])
            .map_err(hsm("C_FindObjects"))?;
        let key = match found.as_slice() {
            [] if !may_create => {
                return Err(Pkcs11Error::KeyMissingWithData {
                    token: cfg.token_label.clone(),
                    key: cfg.key_label.clone(),
                })
            }
            [] => generate_key(&session, &cfg.key_label)?,
            [one] => *one,
            many => {
                return Err(Pkcs11Error::KeyAmbiguous {
                    token: cfg.token_label.clone(),
                    key: cfg.key_label.clone(),
                    count: many.len(),
                })
            }
        };

        let attrs = session
            .get_attributes(
                key,
                &[
                    AttributeType::KeyType,
                    AttributeType::ValueLen,
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::Encrypt,
                    AttributeType::Decrypt,
                    AttributeType::Token,
                    AttributeType::Id,
                ],
            )
            .map_err(hsm("C_GetAttributeValue"))?;
        let mut id = Vec::new();
        let (mut aes, mut len32, mut sensitive, mut extractable) = (false, false, false, true);
        let (mut enc, mut dec, mut token) = (false, false, false);
        for a in attrs {
            match a {
                Attribute::KeyType(t) => aes = t == KeyType::AES,
                Attribute::ValueLen(n) => len32 = u64::from(n) == 32,
                Attribute::Sensitive(b) => sensitive = b,
                Attribute::Extractable(b) => extractable = b,
                Attribute::Encrypt(b) => enc = b,
                Attribute::Decrypt(b) => dec = b,
                Attribute::Token(b) => token = b,
                Attribute::Id(v) => id = v,
                _ => {}
            }
        }
        if !aes || !len32 {
            return Err(unsuitable("it is not an AES-256 key"));
        }
        if !sensitive || extractable {
            return Err(unsuitable(
                "it is extractable or not sensitive (CKA_SENSITIVE must be true, CKA_EXTRACTABLE false)",
            ));
        }
        if !enc || !dec {
            return Err(unsuitable("CKA_ENCRYPT and CKA_DECRYPT must both be true"));
        }
        if !token {
            return Err(unsuitable(
                "it is a session object (CKA_TOKEN must be true)",
            ));
        }
        let suffix = if id.is_empty() {
            // No CKA_ID: name the key by a digest of its key check value instead.
            let kcv = session
                .get_attributes(key, &[AttributeType::CheckValue])
                .map_err(hsm("C_GetAttributeValue"))?
                .into_iter()
                .find_map(|a| match a {
                    Attribute::CheckValue(v) if !v.is_empty() => Some(v),
                    _ => None,
                })
                .ok_or_else(|| unsuitable("it has neither a CKA_ID nor a CKA_CHECK_VALUE"))?;
            let d = sha256(&[b"keyward-kcv".as_slice(), &kcv].concat());
            format!("kcv-{}", hex(d.get(..8).unwrap_or_default()))
        } else {
            hex(&id)
        };
        let key_id = format!("pkcs11:{}:{}:{suffix}", cfg.token_label, cfg.key_label);
        Ok(Self {
            ctx,
            slot,
            pin: cfg.pin,
            module: cfg.module,
            token_label: cfg.token_label,
            key_label: cfg.key_label,
            key_cka_id: id,
            key: RwLock::new(key),
            key_id,
            idle: Mutex::new(Vec::new()),
            _anchor: Mutex::new(session),
            retried: AtomicU64::new(0),
        })
    }

    /// How many operations hit a PKCS#11 error other than "this data does not authenticate"
    /// (a closed session, a lost login, ...) and were retried on a fresh session.
    pub fn retried_operations(&self) -> u64 {
        self.retried.load(Ordering::Relaxed)
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

    fn new_session(&self) -> Result<Session, CkError> {
        let s = self.ctx.open_rw_session(self.slot)?;
        match s.login(UserType::User, Some(&self.pin.pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(s),
            Err(e) => Err(e),
        }
    }

    fn take_session(&self) -> Result<Session, CkError> {
        let pooled = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        match pooled {
            Some(s) => Ok(s),
            None => self.new_session(),
        }
    }

    fn give_back(&self, s: Session) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE_SESSIONS {
            idle.push(s);
        }
    }

    fn key_handle(&self) -> ObjectHandle {
        *self.key.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Finds the key object again (after the HSM invalidated its handle, e.g. on a restart).
    fn refind_key(&self, s: &Session) -> Result<(), CkError> {
        let mut template = vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(self.key_label.as_bytes().to_vec()),
        ];
        if !self.key_cka_id.is_empty() {
            template.push(Attribute::Id(self.key_cka_id.clone()));
        }
        if let [one] = s.find_objects(&template)?.as_slice() {
            *self.key.write().unwrap_or_else(PoisonError::into_inner) = *one;
        }
        Ok(())
    }

    /// Runs `op` on a pooled session. Only a session whose operation succeeded goes back to
    /// the pool. A failure that is not about the data (a closed session, a lost login, an
    /// invalidated key handle) is retried once, on a fresh session after finding the key again.
    fn run<T>(
        &self,
        op: impl Fn(&Session, ObjectHandle) -> Result<T, CkError>,
        is_data_error: impl Fn(&CkError) -> bool,
    ) -> Result<T, CkError> {
        let s = self.take_session()?;
        match op(&s, self.key_handle()) {
            Ok(v) => {
                self.give_back(s);
                Ok(v)
            }
            Err(e) if is_data_error(&e) => Err(e),
            Err(_) => {
                self.retried.fetch_add(1, Ordering::Relaxed);
                drop(s);
                let s = self.new_session()?;
                self.refind_key(&s)?;
                let v = op(&s, self.key_handle())?;
                self.give_back(s);
                Ok(v)
            }
        }
    }
}

/// Errors by which a decryption says "this ciphertext does not authenticate". SoftHSM2
/// reports a GCM tag mismatch as `CKR_GENERAL_ERROR` from `C_Decrypt` (after a successful
/// `C_DecryptInit`, so the session, login and key are fine); the standard codes count too.
fn is_auth_failure(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::EncryptedDataInvalid
                | RvError::EncryptedDataLenRange
                | RvError::DataInvalid
                | RvError::DataLenRange,
            _
        ) | CkError::Pkcs11(RvError::GeneralError, Function::Decrypt)
    )
}

impl MasterKeyProvider for Pkcs11MasterKey {
    fn key_id(&self) -> &str {
        &self.key_id
    }

    fn seal(&self, ctx: &SealContext<'_>, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let aad = self.aad(ctx);
        let iv = random_bytes(IV_LEN)?;
        let ct = self
            .run(
                |s, key| {
                    let mut iv = iv.clone();
                    let params = GcmParams::new(&mut iv, &aad, (TAG_LEN as u64 * 8).into())?;
                    s.encrypt(&Mechanism::AesGcm(params), key, plaintext)
                },
                |_| false,
            )
            .map_err(|_| CryptoError::Primitive)?;
        if ct.len() != plaintext.len() + TAG_LEN {
            return Err(CryptoError::Primitive);
        }
        let mut out = Vec::with_capacity(1 + IV_LEN + ct.len());
        out.push(SEAL_VERSION);
        out.extend_from_slice(&iv);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    fn open(&self, ctx: &SealContext<'_>, sealed: &[u8]) -> Result<SecretBytes, CryptoError> {
        let (ver, rest) = sealed.split_first().ok_or(CryptoError::Open)?;
        if *ver != SEAL_VERSION || rest.len() < IV_LEN + TAG_LEN {
            return Err(CryptoError::Open);
        }
        let (iv, ct) = rest.split_at(IV_LEN);
        let aad = self.aad(ctx);
        let pt = self
            .run(
                |s, key| {
                    let mut iv = iv.to_vec();
                    let params = GcmParams::new(&mut iv, &aad, (TAG_LEN as u64 * 8).into())?;
                    s.decrypt(&Mechanism::AesGcm(params), key, ct)
                        .map(SecretBytes::from_vec)
                },
                is_auth_failure,
            )
            .map_err(|e| {
                if is_auth_failure(&e) {
                    CryptoError::Open
                } else {
                    CryptoError::Primitive
                }
            })?;
        Ok(pt)
    }
}

/// Logs `session`'s application in to the token. If this process is already logged in (another
/// provider holds the login), the PIN must be the one that logged in.
fn login(session: &Session, cfg: &Pkcs11Config, serial: &str) -> Result<(), Pkcs11Error> {
    let login_key = format!("{}\0{}\0{}", cfg.module.display(), cfg.token_label, serial);
    match session.login(UserType::User, Some(&cfg.pin.pin)) {
        Ok(()) => {
            let mut logins = LOGINS.lock().unwrap_or_else(PoisonError::into_inner);
            logins.retain(|(k, _)| *k != login_key);
            logins.push((login_key, cfg.pin.tag));
        }
        Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
            // Another provider in this process holds the login: its PIN must be ours.
            let logins = LOGINS.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((_, tag)) = logins.iter().find(|(k, _)| *k == login_key) {
                if !ct_eq(tag, &cfg.pin.tag) {
                    return Err(Pkcs11Error::Login {
                        token: cfg.token_label.clone(),
                        reason: "CKR PinIncorrect".into(),
                    });
                }
            }
        }
        Err(e) => {
            return Err(Pkcs11Error::Login {
                token: cfg.token_label.clone(),
                reason: rv_of(&e).map_or_else(|| e.to_string(), |rv| format!("CKR {rv:?}")),
            })
        }
    }
    Ok(())
}

/// The labels of every secret key object on the configured token (to find the generations of
/// a master key). Logs in as [`Pkcs11MasterKey::open_or_create`] does.
pub fn secret_key_labels(cfg: &Pkcs11Config) -> Result<Vec<String>, Pkcs11Error> {
    let ctx = module_context(&cfg.module)?;
    let slot = find_slot(&ctx, &cfg.token_label)?;
    let serial = ctx
        .get_token_info(slot)
        .map(|t| t.serial_number().to_string())
        .map_err(hsm("C_GetTokenInfo"))?;
    let session = ctx.open_ro_session(slot).map_err(hsm("C_OpenSession"))?;
    login(&session, cfg, &serial)?;
    let found = session
        .find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY)])
        .map_err(hsm("C_FindObjects"))?;
    let mut labels = Vec::new();
    for h in found {
        let attrs = session
            .get_attributes(h, &[AttributeType::Label])
            .map_err(hsm("C_GetAttributeValue"))?;
        for a in attrs {
            if let Attribute::Label(l) = a {
                labels.push(String::from_utf8_lossy(&l).into_owned());
            }
        }
    }
    labels.sort();
    Ok(labels)
}

fn find_slot(ctx: &Pkcs11, label: &str) -> Result<Slot, Pkcs11Error> {
    let slots = ctx.get_slots_with_token().map_err(hsm("C_GetSlotList"))?;
    let mut present = Vec::new();
    let mut matching = Vec::new();
    for slot in slots {
        let Ok(info) = ctx.get_token_info(slot) else {
            continue;
        };
        if !info.token_initialized() {
            continue;
        }
        if info.label() == label {
            matching.push(slot);
        }
        present.push(info.label().to_string());
    }
    match matching.as_slice() {
        [one] => Ok(*one),
        [] => Err(Pkcs11Error::TokenNotFound {
            label: label.to_string(),
            present,
        }),
        many => Err(Pkcs11Error::TokenAmbiguous {
            label: label.to_string(),
            count: many.len(),
        }),
    }
}

fn generate_key(session: &Session, label: &str) -> Result<ObjectHandle, Pkcs11Error> {
    let id = random_bytes(16).map_err(|_| Pkcs11Error::Hsm {
        op: "key id generation",
        reason: "random source failed".into(),
    })?;
    session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                Attribute::Wrap(false),
                Attribute::Unwrap(false),
                Attribute::Sign(false),
                Attribute::Verify(false),
                Attribute::Derive(false),
                Attribute::ValueLen(32.into()),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Id(id),
            ],
        )
        .map_err(hsm("C_GenerateKey"))
}

//! Envelope encryption: wrap, unwrap and rewrap of data encryption keys under a root key.
//!
//! The wrapped form is standard base64 of the JSON object
//! `{"ciphertext","iv","salt","version":"5.0.0","handle":<key version id>}`, where the inner
//! ciphertext is AES-256-GCM under a key derived for this wrap alone from the version's material
//! and the random `salt` (`keyward_crypto::dek::seal_derived`, which explains the bound on
//! wraps per version this gives), with a 12-byte random IV and an AAD that binds the key id,
//! the version id and the caller's `aad` list. Ciphertexts of the earlier form
//! (`"version":"4.0.0"`, no salt: AES-GCM directly under the material) still unwrap. Any
//! ciphertext that does not open (tampered, truncated, another key's, other `aad`) is the one
//! `UNPROCESSABLE_CIPHERTEXT_ERR`.

use crate::counters::CryptoCounters;
use crate::permit::Permit;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use keyward_crypto::{dek, random_secret, SecretBytes};
use keyward_domain::rows::UsageOp;
use keyward_domain::{Action, KeyId, KeyState, VersionId};
use serde::{Deserialize, Serialize};

use crate::cache::{CachedKey, OpenedVersion};
use crate::keyrow::effective_state;
use crate::{Caller, ErrorCode, KeyService, ServiceError, ServiceResult};

/// Largest DEK accepted by wrap, in bytes.
pub const MAX_WRAP_PLAINTEXT: usize = 7_500;
/// Most `aad` entries, and the longest entry in characters.
pub const MAX_AAD_ENTRIES: usize = 100;
pub const MAX_AAD_LEN: usize = 255;
/// Generated DEK size.
pub const GENERATED_DEK_LEN: usize = 32;

/// The wrapped form written now (a key derived per wrap).
const BLOB_VERSION: &str = "5.0.0";
/// The earlier form (AES-GCM under the version's material), still accepted by unwrap.
const BLOB_VERSION_DIRECT: &str = "4.0.0";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Blob {
    ciphertext: String,
    iv: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    salt: Option<String>,
    version: String,
    handle: String,
}

#[derive(Debug)]
pub struct WrapResult {
    pub ciphertext: String,
    pub key_version: VersionId,
    /// The generated DEK, when the request had no plaintext.
    pub plaintext: Option<SecretBytes>,
}

#[derive(Debug)]
pub struct UnwrapResult {
    pub plaintext: SecretBytes,
    /// The version that had wrapped the ciphertext.
    pub key_version: VersionId,
    /// Set when that version is not the newest: the same DEK wrapped under the newest version.
    pub rewrapped: Option<(String, VersionId)>,
}

#[derive(Debug)]
pub struct RewrapResult {
    pub ciphertext: String,
    pub key_version: VersionId,
    pub rewrapped_key_version: VersionId,
}

fn check_aad(aad: &[String]) -> ServiceResult<()> {
    if aad.len() > MAX_AAD_ENTRIES || aad.iter().any(|a| a.chars().count() > MAX_AAD_LEN) {
        return Err(ServiceError::field(
            "aad",
            format!("The field `aad` must be: at most {MAX_AAD_ENTRIES} strings of at most {MAX_AAD_LEN} characters"),
        ));
    }
    Ok(())
}

fn unprocessable() -> ServiceError {
    ServiceError::new(
        ErrorCode::UnprocessableCiphertext,
        "The provided ciphertext is invalid or corrupted",
    )
}

pub(crate) fn seal_blob(
    key: KeyId,
    v: &OpenedVersion,
    aad: &[String],
    plaintext: &[u8],
) -> ServiceResult<String> {
    let ad = dek::dek_aad(&key.to_string(), &v.id.to_string(), aad);
    let (salt, iv, ct) = dek::seal_derived(&v.material, &ad, plaintext)?;
    let blob = Blob {
        ciphertext: B64.encode(ct),
        iv: B64.encode(iv),
        salt: Some(B64.encode(salt)),
        version: BLOB_VERSION.into(),
        handle: v.id.to_string(),
    };
    let json = serde_json::to_vec(&blob).map_err(ServiceError::internal)?;
    Ok(B64.encode(json))
}

/// Opens a wrapped blob with the version it names. Returns the plaintext and that version.
pub(crate) fn open_blob<'k>(
    key: &'k CachedKey,
    ciphertext_b64: &str,
    aad: &[String],
) -> ServiceResult<(SecretBytes, &'k OpenedVersion)> {
    let raw = B64.decode(ciphertext_b64.as_bytes()).map_err(|_| {
        ServiceError::field(
            "ciphertext",
            "The field `ciphertext` must be: the base64 encoded ciphertext returned by wrap",
        )
    })?;
    let blob: Blob = serde_json::from_slice(&raw).map_err(|_| unprocessable())?;
    let salt = match (blob.version.as_str(), &blob.salt) {
        (BLOB_VERSION, Some(s)) => Some(B64.decode(s.as_bytes()).map_err(|_| unprocessable())?),
        (BLOB_VERSION_DIRECT, None) => None,
        _ => return Err(unprocessable()),
    };
    let handle = VersionId::parse(&blob.handle).map_err(|_| unprocessable())?;
    let version = key.version(handle).ok_or_else(unprocessable)?;
    let iv = B64
        .decode(blob.iv.as_bytes())
        .map_err(|_| unprocessable())?;
    let ct = B64
        .decode(blob.ciphertext.as_bytes())
        .map_err(|_| unprocessable())?;
    let ad = dek::dek_aad(&key.row.id.to_string(), &handle.to_string(), aad);
    let pt = match salt {
        Some(salt) => dek::open_derived(&version.material, &salt, &iv, &ad, &ct),
        None => dek::open(&version.material, &iv, &ad, &ct),
    }
    .map_err(|_| unprocessable())?;
    Ok((pt, version))
}

impl KeyService {
    pub(crate) async fn root_key_for(
        &self,
        permit: &Permit,
        id: KeyId,
        allowed: &[KeyState],
        verb: &str,
    ) -> ServiceResult<std::sync::Arc<CachedKey>> {
        let key = self.load_key(permit, id).await?;
        if key.row.extractable {
            return Err(ServiceError::new(
                ErrorCode::KeyRootRequired,
                format!("Only root keys can {verb}"),
            ));
        }
        let state = effective_state(&key.row, self.now());
        if !allowed.contains(&state) {
            return Err(ServiceError::invalid_state(format!(
                "The key is not in a state that allows it to {verb}"
            )));
        }
        Ok(key)
    }

    /// `POST /keys/{id}/actions/wrap`.
    pub async fn wrap(
        &self,
        caller: &Caller,
        id: KeyId,
        plaintext: Option<&str>,
        aad: &[String],
    ) -> ServiceResult<WrapResult> {
        let permit = caller.require(Action::Wrap)?;
        check_aad(aad)?;
        let given = match plaintext {
            None => None,
            Some(p) => {
                let bytes = SecretBytes::from_vec(B64.decode(p.as_bytes()).map_err(|_| {
                    ServiceError::field(
                        "plaintext",
                        "The field `plaintext` must be: a base64 encoded key material",
                    )
                })?);
                if bytes.is_empty() || bytes.len() > MAX_WRAP_PLAINTEXT {
                    return Err(ServiceError::field(
                        "plaintext",
                        format!("The field `plaintext` must be: the base64 encoding of 1 to {MAX_WRAP_PLAINTEXT} bytes"),
                    ));
                }
                Some(bytes)
            }
        };
        let key = self
            .root_key_for(&permit, id, &[KeyState::Active], "wrap")
            .await?;
        let current = current_version(&key)?;
        let (dek, generated) = match given {
            Some(p) => (p, false),
            None => (random_secret(GENERATED_DEK_LEN)?, true),
        };
        let ciphertext = seal_blob(id, current, aad, dek.expose())?;
        CryptoCounters::bump(&self.counters.wrap);
        self.audit(caller, Action::Wrap, Some(id)).await?;
        self.record_use(caller, id, UsageOp::Wrap);
        Ok(WrapResult {
            ciphertext,
            key_version: current.id,
            plaintext: generated.then_some(dek),
        })
    }

    /// The checks and the open shared by unwrap and rewrap: role, `aad`, a root key in a state
    /// that allows `verb`, then the blob. Returns the key, the DEK and the version that wrapped it.
    async fn open_wrapped(
        &self,
        caller: &Caller,
        id: KeyId,
        action: Action,
        verb: &str,
        ciphertext: &str,
        aad: &[String],
    ) -> ServiceResult<(std::sync::Arc<CachedKey>, SecretBytes, VersionId)> {
        let permit = caller.require(action)?;
        check_aad(aad)?;
        let key = self
            .root_key_for(
                &permit,
                id,
                &[KeyState::Active, KeyState::Deactivated],
                verb,
            )
            .await?;
        CryptoCounters::bump(&self.counters.unwrap);
        let (plaintext, version) = open_blob(&key, ciphertext, aad)?;
        let version = version.id;
        Ok((key, plaintext, version))
    }

    /// `POST /keys/{id}/actions/unwrap`.
    pub async fn unwrap(
        &self,
        caller: &Caller,
        id: KeyId,
        ciphertext: &str,
        aad: &[String],
    ) -> ServiceResult<UnwrapResult> {
        let (key, plaintext, version) = self
            .open_wrapped(caller, id, Action::Unwrap, "unwrap", ciphertext, aad)
            .await?;
        let rewrapped = if version != key.row.current_version {
            let current = current_version(&key)?;
            CryptoCounters::bump(&self.counters.wrap);
            Some((seal_blob(id, current, aad, plaintext.expose())?, current.id))
        } else {
            None
        };
        self.audit(caller, Action::Unwrap, Some(id)).await?;
        self.record_use(caller, id, UsageOp::Unwrap);
        Ok(UnwrapResult {
            plaintext,
            key_version: version,
            rewrapped,
        })
    }

    /// `POST /keys/{id}/actions/rewrap`.
    pub async fn rewrap(
        &self,
        caller: &Caller,
        id: KeyId,
        ciphertext: &str,
        aad: &[String],
    ) -> ServiceResult<RewrapResult> {
        let (key, plaintext, version) = self
            .open_wrapped(caller, id, Action::Rewrap, "rewrap", ciphertext, aad)
            .await?;
        let current = current_version(&key)?;
        CryptoCounters::bump(&self.counters.wrap);
        let ciphertext = seal_blob(id, current, aad, plaintext.expose())?;
        self.audit(caller, Action::Rewrap, Some(id)).await?;
        self.record_use(caller, id, UsageOp::Rewrap);
        Ok(RewrapResult {
            ciphertext,
            key_version: version,
            rewrapped_key_version: current.id,
        })
    }
}

impl KeyService {
    /// Cross-key rewrap (a Keyward extension, `POST /keys/{id}/actions/rewrapTo`): opens
    /// `ciphertext` under root key `source` and wraps the same DEK under root key `target`'s
    /// current version, with the same `aad`, in one call. The DEK never leaves the service.
    /// The caller needs the unwrap role on the source and the wrap role on the target, and
    /// each key must be in a state that allows it (the source Active or Deactivated, as for
    /// unwrap; the target Active, as for wrap). Both are audited, the source as a rewrap and the
    /// target as a wrap.
    pub async fn rewrap_to(
        &self,
        caller: &Caller,
        source: KeyId,
        ciphertext: &str,
        aad: &[String],
        target: KeyId,
    ) -> ServiceResult<RewrapResult> {
        let wrap_permit = caller.require(Action::Wrap)?;
        // The target is checked first: a refused target costs no unwrap.
        let to = self
            .root_key_for(&wrap_permit, target, &[KeyState::Active], "wrap")
            .await?;
        let (_, plaintext, version) = self
            .open_wrapped(caller, source, Action::Unwrap, "unwrap", ciphertext, aad)
            .await?;
        let current = current_version(&to)?;
        CryptoCounters::bump(&self.counters.wrap);
        let ciphertext = seal_blob(target, current, aad, plaintext.expose())?;
        self.audit(caller, Action::Rewrap, Some(source)).await?;
        self.audit(caller, Action::Wrap, Some(target)).await?;
        self.record_use(caller, source, UsageOp::Rewrap);
        self.record_use(caller, target, UsageOp::Wrap);
        Ok(RewrapResult {
            ciphertext,
            key_version: version,
            rewrapped_key_version: current.id,
        })
    }
}

/// The key's newest version (always present: a key is stored with its first version).
pub(crate) fn current_version(key: &CachedKey) -> ServiceResult<&OpenedVersion> {
    key.current()
        .ok_or_else(|| ServiceError::new(ErrorCode::Internal, "current version missing"))
}

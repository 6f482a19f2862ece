//! Keys: create (generated, plain import, secure import), read, list, delete, rotate.

use crate::counters::CryptoCounters;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use keyward_crypto::import::{MaterialEncryption, OaepHash};
use keyward_crypto::master::SealContext;
use keyward_crypto::{random_secret, SecretBytes};
use keyward_domain::rows::KeyAttrs;
use keyward_domain::{parse_time, Action, InstanceId, KeyId, KeyState, VersionId};
use keyward_store::{ConflictKind, KeyQuery, KeyRow, StoreError, TokenGuard, VersionRow};

use crate::cache::{CachedKey, OpenedVersion};
use crate::keyrow::{alias_syntax_ok, apply_key_policies, bits_of, next_rotation};
pub use crate::keyrow::{effective_state, KeyInfo, RotateRequest};
use crate::permit::Permit;
use crate::tokens::SecureImport;
use crate::{Caller, ErrorCode, KeyService, ServiceError, ServiceResult};

/// Largest standard key material accepted for import, in bytes.
pub const MAX_STANDARD_PAYLOAD: usize = 7_500;
/// Minimum time between two rotations of one key.
pub const ROTATION_MIN_INTERVAL: i64 = 3_600;

/// `POST /keys` as the service sees it (strings still undecoded, as they came).
#[derive(Debug, Default, Clone)]
pub struct CreateKeyRequest {
    pub name: Option<String>,
    pub description: Option<String>,
    pub tags: Option<Vec<String>>,
    pub extractable: Option<bool>,
    pub payload: Option<String>,
    pub encrypted_nonce: Option<String>,
    pub iv: Option<String>,
    pub encryption_algorithm: Option<String>,
    pub expiration_date: Option<String>,
    pub key_ring_id: Option<String>,
    /// Aliases created with the key, atomically.
    pub aliases: Option<Vec<String>>,
    /// `keys_with_policy_overrides`: rotation (enabled, interval months) and dual-auth.
    pub rotation_override: Option<(bool, Option<i64>)>,
    pub dual_auth_override: Option<bool>,
}

pub(crate) fn version_ctx<'a>(
    instance: &'a str,
    key: &'a str,
    version: &'a str,
) -> SealContext<'a> {
    SealContext {
        kind: "key-version",
        instance,
        object: key,
        version,
    }
}

fn check_text(field: &str, v: &str, min: usize, max: usize) -> ServiceResult<()> {
    let n = v.chars().count();
    if n < min || n > max || v.chars().any(char::is_control) {
        return Err(ServiceError::field(
            field,
            format!("The field `{field}` must be: a string of {min} to {max} characters without control characters"),
        ));
    }
    Ok(())
}

fn decode_field(field: &str, v: &str) -> ServiceResult<Vec<u8>> {
    B64.decode(v.as_bytes()).map_err(|_| {
        ServiceError::field(
            field,
            format!("The field `{field}` must be: a base64 encoded value"),
        )
    })
}

/// Parses the secure-import fields shared by create and rotate. `None` when neither
/// `encryptedNonce` nor `iv` is present (a plain payload).
fn secure_fields(
    payload: &str,
    encrypted_nonce: Option<&String>,
    iv: Option<&String>,
    algorithm: Option<&String>,
) -> ServiceResult<Option<SecureImport>> {
    let (en, iv) = match (encrypted_nonce, iv) {
        (None, None) => {
            if algorithm.is_some() {
                return Err(ServiceError::field(
                    "encryptedNonce",
                    "The fields `encryptedNonce` and `iv` are required with `encryptionAlgorithm`",
                ));
            }
            return Ok(None);
        }
        (Some(_), None) => {
            return Err(ServiceError::field(
                "iv",
                "The field `iv` is required with `encryptedNonce`",
            ))
        }
        (None, Some(_)) => {
            return Err(ServiceError::field(
                "encryptedNonce",
                "The field `encryptedNonce` is required with `iv`",
            ))
        }
        (Some(en), Some(iv)) => (en, iv),
    };
    let encryption = match algorithm {
        None => MaterialEncryption::Oaep(OaepHash::Sha256),
        Some(a) => MaterialEncryption::from_wire(a).ok_or_else(|| {
            ServiceError::field(
                "encryptionAlgorithm",
                "The field `encryptionAlgorithm` must be: one of RSAES_OAEP_SHA_256, RSAES_OAEP_SHA_1, XWING_HKDF_SHA256_AES_256_GCM",
            )
        })?,
    };
    let iv = decode_field("iv", iv)?;
    if iv.len() != 12 {
        return Err(ServiceError::field(
            "iv",
            "The field `iv` must be: the base64 encoding of 12 bytes",
        ));
    }
    let encrypted_nonce = decode_field("encryptedNonce", en)?;
    if encrypted_nonce.is_empty() || encrypted_nonce.len() > 1024 {
        return Err(ServiceError::field(
            "encryptedNonce",
            "The field `encryptedNonce` must be: the base64 encoding of the encrypted nonce",
        ));
    }
    Ok(Some(SecureImport {
        payload_b64: payload.to_string(),
        encrypted_nonce,
        iv,
        encryption,
    }))
}

fn plain_root_material(payload: &str) -> ServiceResult<SecretBytes> {
    let m = SecretBytes::from_vec(decode_field("payload", payload)?);
    if !matches!(m.len(), 16 | 24 | 32) {
        return Err(ServiceError::field(
            "payload",
            "The field `payload` must be: the base64 encoding of 16, 24 or 32 bytes of key material",
        ));
    }
    Ok(m)
}

impl KeyService {
    /// The CRN of a key.
    pub fn crn(&self, instance: InstanceId, key: KeyId) -> String {
        format!(
            "crn:v1:keyward:private:kms:{}:a/{}:{}:key:{}",
            self.cfg.region, self.cfg.account, instance, key
        )
    }

    fn seal_version(
        &self,
        instance: InstanceId,
        key: KeyId,
        version: VersionId,
        seq: i64,
        material: &SecretBytes,
    ) -> ServiceResult<VersionRow> {
        let (i, k, v) = (instance.to_string(), key.to_string(), version.to_string());
        let master = self.master();
        CryptoCounters::bump(&self.counters.master_seal);
        let sealed = master.seal(&version_ctx(&i, &k, &v), material.expose())?;
        Ok(VersionRow {
            id: version,
            key_id: key,
            instance_id: instance,
            seq,
            created_at: self.now(),
            sealed,
            master_key_id: master.key_id().to_string(),
        })
    }

    fn open_version(&self, v: &VersionRow) -> ServiceResult<SecretBytes> {
        let (i, k, id) = (
            v.instance_id.to_string(),
            v.key_id.to_string(),
            v.id.to_string(),
        );
        CryptoCounters::bump(&self.counters.master_open);
        self.master()
            .open_as(&v.master_key_id, &version_ctx(&i, &k, &id), &v.sealed)
            .map_err(|e| {
                ServiceError::new(ErrorCode::Internal, "key material could not be opened")
                    .with_source(e)
            })
    }

    pub(crate) fn info(&self, row: KeyRow, versions: &[VersionRow]) -> KeyInfo {
        let now = self.now();
        let version_created_at = versions
            .iter()
            .find(|v| v.id == row.current_version)
            .map(|v| v.created_at)
            .unwrap_or(row.created_at);
        self.info_with(row, version_created_at, now)
    }

    fn info_with(&self, row: KeyRow, version_created_at: i64, now: i64) -> KeyInfo {
        KeyInfo {
            crn: self.crn(row.instance_id, row.id),
            state: effective_state(&row, now),
            bits: row.attrs.bits.unwrap_or(256),
            version_created_at,
            payload: None,
            aliases: Vec::new(),
            deletion_auth_expires: row
                .attrs
                .deletion_auth
                .as_ref()
                .and_then(|a| a.expires)
                .filter(|e| *e > now),
            row,
        }
    }

    /// Turns a path `{id}` (a UUID or an alias of the caller's instance) into a key id.
    ///
    /// A caller without any role in the instance gets the one `Forbidden` before anything is
    /// looked up, so aliases are no oracle across instances: an unknown alias, a known alias of
    /// an instance the caller has no role in, and an instance that does not exist all answer
    /// the same. (The operation then checks the role for its own action, as always.)
    pub async fn resolve_key(&self, caller: &Caller, id: &str) -> ServiceResult<KeyId> {
        if caller.roles.is_empty() {
            return Err(ServiceError::forbidden());
        }
        if let Ok(k) = KeyId::parse(id) {
            return Ok(k);
        }
        if !alias_syntax_ok(id) {
            return Err(ServiceError::new(
                ErrorCode::InvalidField,
                "The key identifier must be: a UUID or an alias",
            )
            .with_target("path_param", "id"));
        }
        self.store
            .resolve_alias(caller.instance, id)
            .await?
            .ok_or_else(ServiceError::key_not_found)
    }

    /// `POST /keys`.
    pub async fn create_key(
        &self,
        caller: &Caller,
        req: CreateKeyRequest,
    ) -> ServiceResult<KeyInfo> {
        let extractable = req.extractable.unwrap_or(true);
        let action = if req.payload.is_some() {
            Action::ImportKey
        } else {
            Action::CreateKey
        };
        caller.require(action)?;

        let name = req
            .name
            .as_deref()
            .ok_or_else(|| ServiceError::field("name", "The field `name` is required"))?;
        check_text("name", name, 2, 90)?;
        if let Some(d) = &req.description {
            check_text("description", d, 2, 240)?;
        }
        let mut aliases: Vec<String> = Vec::new();
        for a in req.aliases.clone().unwrap_or_default() {
            if !crate::rings::alias_allowed(&a) {
                return Err(ServiceError::field("aliases", crate::rings::ALIAS_RULE));
            }
            if !aliases.contains(&a) {
                aliases.push(a);
            }
        }
        if aliases.len() > crate::rings::MAX_ALIASES_PER_KEY {
            return Err(ServiceError::new(
                ErrorCode::AliasLimit,
                format!(
                    "A key can have at most {} aliases",
                    crate::rings::MAX_ALIASES_PER_KEY
                ),
            ));
        }
        let tags = req.tags.clone().unwrap_or_default();
        if tags.len() > 30
            || tags.iter().any(|t| {
                t.chars().count() > 30 || t.chars().any(|c| "<>,:&|".contains(c) || c.is_control())
            })
        {
            return Err(ServiceError::field(
                "tags",
                "The field `tags` must be: at most 30 tags of at most 30 characters, without < > , : & |",
            ));
        }
        let now = self.now();
        let expiration_date = match &req.expiration_date {
            None => None,
            Some(s) => {
                let t = parse_time(s).ok_or_else(|| {
                    ServiceError::field(
                        "expirationDate",
                        "The field `expirationDate` must be: an RFC 3339 date-time",
                    )
                })?;
                if t <= now {
                    return Err(ServiceError::field(
                        "expirationDate",
                        "The field `expirationDate` must be: a date-time in the future",
                    ));
                }
                Some(t)
            }
        };
        let key_ring_id = req.key_ring_id.clone().unwrap_or_else(|| "default".into());
        if key_ring_id != "default" {
            check_text("keyRingID", &key_ring_id, 2, 100)?;
        }

        if key_ring_id != "default"
            && !self
                .store
                .list_key_rings(caller.instance)
                .await?
                .iter()
                .any(|r| r.id == key_ring_id)
        {
            return Err(ServiceError::new(
                ErrorCode::KeyRingNotFound,
                format!("The key ring `{key_ring_id}` does not exist"),
            ));
        }
        let access = self.import_access(caller.instance).await?;
        let secure_form = req.encrypted_nonce.is_some() || req.iv.is_some();
        let allowed = match (&req.payload, extractable) {
            (None, false) => access.create_root_key,
            (None, true) => access.create_standard_key,
            (Some(_), false) => access.import_root_key && (secure_form || !access.enforce_token),
            (Some(_), true) => access.import_standard_key && !access.enforce_token,
        };
        if !allowed {
            return Err(ServiceError::new(
                ErrorCode::KeyCreateImportAccess,
                "The instance's keyCreateImportAccess policy does not allow this key to be created or imported",
            ));
        }

        // The material, by variant. Validation first; the token check and the crypto last.
        let mut guard: Option<TokenGuard> = None;
        let (material, imported) = match &req.payload {
            None => {
                if req.encrypted_nonce.is_some() || req.iv.is_some() {
                    return Err(ServiceError::field(
                        "payload",
                        "The field `payload` is required with `encryptedNonce` and `iv`",
                    ));
                }
                (random_secret(32)?, false)
            }
            Some(payload) => {
                let secure = secure_fields(
                    payload,
                    req.encrypted_nonce.as_ref(),
                    req.iv.as_ref(),
                    req.encryption_algorithm.as_ref(),
                )?;
                match (secure, extractable) {
                    (Some(_), true) => {
                        return Err(ServiceError::field(
                            "extractable",
                            "The field `extractable` must be: false for an import with an import token (standard keys are never imported with a token)",
                        ))
                    }
                    (Some(s), false) => {
                        let (m, g) = self.verify_secure(caller.instance, s).await?;
                        guard = Some(g);
                        (m, true)
                    }
                    (None, false) => (plain_root_material(payload)?, true),
                    (None, true) => {
                        let m = SecretBytes::from_vec(decode_field("payload", payload)?);
                        if m.is_empty() || m.len() > MAX_STANDARD_PAYLOAD {
                            return Err(ServiceError::field(
                                "payload",
                                format!("The field `payload` must be: the base64 encoding of 1 to {MAX_STANDARD_PAYLOAD} bytes"),
                            ));
                        }
                        (m, true)
                    }
                }
            }
        };

        let id = KeyId::new();
        let version_id = VersionId::new();
        let version = self.seal_version(caller.instance, id, version_id, 1, &material)?;
        let mut row = KeyRow {
            id,
            instance_id: caller.instance,
            name: name.to_string(),
            description: req.description.clone(),
            tags,
            state: KeyState::Active,
            extractable,
            imported,
            key_ring_id,
            expiration_date,
            created_at: now,
            created_by: caller.iam_id.clone(),
            updated_at: now,
            last_rotate_date: None,
            deletion_date: None,
            deleted_by: None,
            state_changed_at: now,
            current_version: version_id,
            attrs: KeyAttrs::with_bits(bits_of(material.len())),
            row_version: 1,
            next_rotation_at: None,
        };
        // Instance defaults first, then the request's overrides.
        let defaults = self.instance_key_defaults(caller.instance).await?;
        let auto_rotation = defaults
            .rotation
            .filter(|_| !row.extractable && !row.imported)
            .map(|m| (true, Some(m)));
        let dual_default = defaults.dual_auth.then_some(true);
        // An override replaces the instance default (it may turn it off for this key).
        apply_key_policies(
            &mut row,
            req.rotation_override.or(auto_rotation),
            req.dual_auth_override.or(dual_default),
            &caller.iam_id,
            now,
        )?;
        let aliases: Vec<keyward_store::AliasRow> = aliases
            .into_iter()
            .map(|alias| keyward_store::AliasRow {
                instance_id: caller.instance,
                alias,
                key_id: id,
                created_at: now,
                created_by: caller.iam_id.clone(),
            })
            .collect();
        self.audit(caller, action, Some(id)).await?;
        match self
            .store
            .insert_key_with_aliases(&row, &version, guard, &aliases)
            .await
        {
            Ok(()) => {}
            Err(StoreError::Conflict(ConflictKind::ImportToken)) => {
                return Err(self.token_lost(caller.instance).await)
            }
            Err(StoreError::Conflict(ConflictKind::AlreadyExists)) if !aliases.is_empty() => {
                return Err(ServiceError::new(
                    ErrorCode::AliasConflict,
                    "The alias is already in use by another key of this instance",
                ))
            }
            Err(e) => return Err(e.into()),
        }
        let mut info = self.info_with(row, version.created_at, now);
        info.aliases = aliases.into_iter().map(|a| a.alias).collect();
        if extractable {
            info.payload = Some(material);
        }
        Ok(info)
    }

    /// The key's row, in the permit's instance.
    pub(crate) async fn row_for(&self, permit: &Permit, id: KeyId) -> ServiceResult<KeyRow> {
        self.store
            .get_key(permit.instance(), id)
            .await?
            .ok_or_else(ServiceError::key_not_found)
    }

    /// `GET /keys/{id}`: standard keys come with their material (ReaderPlus and up).
    pub async fn get_key(&self, caller: &Caller, id: KeyId) -> ServiceResult<KeyInfo> {
        let permit = caller.require(Action::GetRootKey)?;
        let row = self.row_for(&permit, id).await?;
        if row.extractable {
            caller.require(Action::GetStandardKeyPayload)?;
        }
        let versions = self.store.versions(permit.instance(), id).await?;
        let payload = if row.extractable && row.state != KeyState::Destroyed {
            versions
                .iter()
                .find(|v| v.id == row.current_version)
                .map(|v| self.open_version(v))
                .transpose()?
        } else {
            None
        };
        if payload.is_some() {
            self.audit(caller, Action::GetStandardKeyPayload, Some(id))
                .await?;
        }
        let mut info = self.info(row, &versions);
        info.payload = payload;
        Ok(info)
    }

    /// `GET /keys/{id}/metadata`.
    pub async fn get_key_metadata(&self, caller: &Caller, id: KeyId) -> ServiceResult<KeyInfo> {
        let permit = caller.require(Action::GetKeyMetadata)?;
        let row = self.row_for(&permit, id).await?;
        let versions = self.store.versions(permit.instance(), id).await?;
        Ok(self.info(row, &versions))
    }

    /// `GET /keys`.
    pub async fn list_keys(&self, caller: &Caller, q: &KeyQuery) -> ServiceResult<Vec<KeyInfo>> {
        caller.require(Action::ListKeys)?;
        let now = self.now();
        let q = &KeyQuery { now, ..q.clone() };
        let rows = self.store.list_keys(caller.instance, q).await?;
        Ok(rows.into_iter().map(|r| self.list_info(r, now)).collect())
    }

    /// A key as listed: without reading its versions, the current version's creation time is
    /// the last rotation (or the key's creation).
    pub(crate) fn list_info(&self, row: KeyRow, now: i64) -> KeyInfo {
        let created = row.last_rotate_date.unwrap_or(row.created_at);
        self.info_with(row, created, now)
    }

    /// `HEAD /keys`.
    pub async fn count_keys(&self, caller: &Caller, q: &KeyQuery) -> ServiceResult<i64> {
        caller.require(Action::HeadKeys)?;
        let q = KeyQuery {
            now: self.now(),
            ..q.clone()
        };
        Ok(self.store.count_keys(caller.instance, &q).await?)
    }

    /// `POST /keys/{id}/actions/rotate`.
    pub async fn rotate_key(
        &self,
        caller: &Caller,
        id: KeyId,
        req: RotateRequest,
    ) -> ServiceResult<()> {
        self.rotate_key_as(caller, id, req, None).await
    }

    /// Rotation; with `expected_row_version`, only if the key is still at that version (the
    /// scheduler's guard against rotating a key twice).
    pub(crate) async fn rotate_key_as(
        &self,
        caller: &Caller,
        id: KeyId,
        req: RotateRequest,
        expected_row_version: Option<i64>,
    ) -> ServiceResult<()> {
        let permit = caller.require(Action::Rotate)?;
        let row = self.row_for(&permit, id).await?;
        if expected_row_version.is_some_and(|v| v != row.row_version) {
            return Err(ServiceError::invalid_state(
                "The key changed since it was found due",
            ));
        }
        if row.extractable {
            return Err(ServiceError::new(
                ErrorCode::KeyRootRequired,
                "Only root keys can be rotated",
            ));
        }
        let now = self.now();
        let state = effective_state(&row, now);
        if !matches!(state, KeyState::Active | KeyState::Deactivated) {
            return Err(ServiceError::invalid_state(
                "The key is not in a state that allows rotation",
            ));
        }
        let mut guard = None;
        let material = if row.imported {
            let payload = req.payload.as_deref().ok_or_else(|| {
                ServiceError::new(
                    ErrorCode::KeyPayloadRequired,
                    "A new `payload` is required to rotate an imported key",
                )
                .with_target("field", "payload")
            })?;
            match secure_fields(
                payload,
                req.encrypted_nonce.as_ref(),
                req.iv.as_ref(),
                req.encryption_algorithm.as_ref(),
            )? {
                Some(s) => {
                    check_rotation_interval(&row, now)?;
                    let (m, g) = self.verify_secure(permit.instance(), s).await?;
                    guard = Some(g);
                    m
                }
                None => {
                    if self.import_access(permit.instance()).await?.enforce_token {
                        return Err(ServiceError::new(
                            ErrorCode::KeyCreateImportAccess,
                            "The instance policy requires an import token to import key material",
                        ));
                    }
                    plain_root_material(payload)?
                }
            }
        } else {
            if req.payload.is_some() {
                return Err(ServiceError::field(
                    "payload",
                    "The field `payload` is only accepted when rotating an imported key",
                ));
            }
            random_secret(32)?
        };
        check_rotation_interval(&row, now)?;
        let versions = self.store.versions(permit.instance(), id).await?;
        let seq = versions.first().map(|v| v.seq).unwrap_or(0) + 1;
        let version_id = VersionId::new();
        let version = self.seal_version(permit.instance(), id, version_id, seq, &material)?;
        let mut next = row.clone();
        next.current_version = version_id;
        next.last_rotate_date = Some(now);
        next.updated_at = now;
        next.next_rotation_at = next_rotation(&next);
        next.attrs.bits = Some(bits_of(material.len()));
        self.audit(caller, Action::Rotate, Some(id)).await?;
        match self.store.rotate_key(&next, &version, guard).await {
            Ok(()) => {
                self.keys.invalidate(permit.instance(), id);
                Ok(())
            }
            Err(StoreError::Conflict(ConflictKind::ImportToken)) => {
                Err(self.token_lost(permit.instance()).await)
            }
            Err(StoreError::Conflict(_)) => {
                // Someone else changed the key first: if it was a rotation, this one is too soon.
                let fresh = self.row_for(&permit, id).await?;
                check_rotation_interval(&fresh, now)?;
                Err(ServiceError::invalid_state(
                    "The key changed while it was being rotated; retry",
                ))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The key with every version opened: from the cache, or loaded and cached.
    pub(crate) async fn load_key(
        &self,
        permit: &Permit,
        id: KeyId,
    ) -> ServiceResult<Arc<CachedKey>> {
        let instance = permit.instance();
        if let Some(k) = self.keys.get(instance, id) {
            return Ok(k);
        }
        let row = self
            .store
            .get_key(instance, id)
            .await?
            .ok_or_else(ServiceError::key_not_found)?;
        let versions = self.store.versions(instance, id).await?;
        let mut opened = Vec::with_capacity(versions.len());
        for v in &versions {
            opened.push(OpenedVersion {
                id: v.id,
                seq: v.seq,
                created_at: v.created_at,
                material: self.open_version(v)?,
            });
        }
        let entry = Arc::new(CachedKey::new(row, opened));
        self.keys.put(entry.clone());
        Ok(entry)
    }
}

fn check_rotation_interval(row: &KeyRow, now: i64) -> ServiceResult<()> {
    match row.last_rotate_date {
        Some(t) if now - t < ROTATION_MIN_INTERVAL => Err(ServiceError::new(
            ErrorCode::KeyRotationNotPermitted,
            "A key can be rotated at most once per hour",
        )),
        _ => Ok(()),
    }
}

impl ServiceError {
    pub(crate) fn with_source(mut self, e: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(e));
        self
    }
}

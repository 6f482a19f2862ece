//! KMIP adapters (docs/kmip.md): the management API's logic (adapters bound to a root key,
//! client certificates registered on them, the objects their clients created) and the
//! [`Backend`] the KMIP listener runs a client's requests against.
//!
//! - A KMIP client is its TLS certificate: [`KeyService::kmip_session`] finds the certificate
//!   registered with the same SHA-256 fingerprint (compared again in constant time) and acts
//!   for its adapter only. No role applies; removing the certificate (or the adapter) ends
//!   the client's access at its next request.
//! - Object material is wrapped under the adapter's root key exactly as `wrap` wraps a DEK
//!   (`envelope.rs`, AAD = the adapter and object ids), so a root key that is disabled,
//!   deleted or otherwise not active makes every object of the adapter unusable, and every
//!   KMIP operation on them fails with Permission Denied.
//! - Management role (the one table in `keyward_domain::Action`): Manager, for every call,
//!   as Key Protect's role table has it (`kms.kmip-management.*`).

use std::sync::Arc;

use async_trait::async_trait;
use keyward_crypto::{ct_eq, random_secret, sha256};
use keyward_domain::{Action, KeyState, Role};
use keyward_kmip::ops::{self, Backend, NewObject, Object, OpError};
use keyward_kmip::tags::reason;
use keyward_store::{KmipAdapterRow, KmipCertRow, KmipObjectRow, StoreError};
use zeroize::Zeroizing;

use crate::envelope::{current_version, open_blob, seal_blob};
use crate::{Caller, ErrorCode, KeyService, ServiceError, ServiceResult};

/// The one adapter profile.
pub const PROFILE_NATIVE: &str = "native_1.0";
/// Most adapters per instance, and certificates per adapter.
pub const MAX_ADAPTERS: i64 = 200;
pub const MAX_CERTS: i64 = 200;
/// Longest certificate accepted, PEM.
pub const MAX_CERT_PEM: usize = 16 * 1024;
/// Most objects a Locate looks through.
pub const MAX_LOCATE: i64 = 10_000;

fn not_found(what: &str) -> ServiceError {
    ServiceError::new(ErrorCode::NotFound, format!("The {what} does not exist"))
}

fn conflict(message: impl Into<String>) -> ServiceError {
    ServiceError::new(ErrorCode::Conflict, message)
}

/// Names of adapters and certificates: 2 to 40 letters, digits, `-` and `_`.
fn name_ok(n: &str) -> bool {
    (2..=40).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn check_name(field: &str, n: &str) -> ServiceResult<()> {
    // A name cannot be a UUID (ids and names share the paths).
    if name_ok(n) && uuid::Uuid::parse_str(n).is_err() {
        Ok(())
    } else {
        Err(ServiceError::field(
            field,
            format!("The field `{field}` must be: 2 to 40 letters, digits, - and _, not a UUID"),
        ))
    }
}

/// The DER form of a PEM certificate (exactly one `CERTIFICATE` block that parses as an
/// X.509 certificate) and its SHA-256 fingerprint.
pub fn certificate_fingerprint(pem: &str) -> ServiceResult<[u8; 32]> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let bad = || {
        ServiceError::field(
            "certificate",
            "The field `certificate` must be: one X.509 certificate in PEM form (-----BEGIN CERTIFICATE-----)",
        )
    };
    if pem.len() > MAX_CERT_PEM || !pem.trim_start().starts_with("-----BEGIN CERTIFICATE-----") {
        return Err(bad());
    }
    let mut certs = CertificateDer::pem_slice_iter(pem.as_bytes());
    let der = certs.next().ok_or_else(bad)?.map_err(|_| bad())?;
    if certs.next().is_some() {
        return Err(bad());
    }
    webpki::EndEntityCert::try_from(&der).map_err(|_| bad())?;
    Ok(sha256(der.as_ref()))
}

/// The caller a KMIP client acts as (for the root key and the audit log).
fn kmip_caller(cert: &KmipCertRow) -> Caller {
    Caller {
        iam_id: format!("kmip-client-certificate:{}", cert.id),
        instance: cert.instance_id,
        roles: Arc::from([Role::Manager]),
        meta: Default::default(),
    }
}

impl KeyService {
    async fn adapter_of(&self, caller: &Caller, id_or_name: &str) -> ServiceResult<KmipAdapterRow> {
        self.store
            .get_kmip_adapter(caller.instance, id_or_name)
            .await?
            .ok_or_else(|| not_found("KMIP adapter"))
    }

    /// `POST /kmip_adapters`.
    pub async fn create_kmip_adapter(
        &self,
        caller: &Caller,
        name: Option<&str>,
        description: Option<&str>,
        profile: &str,
        crk_id: &str,
    ) -> ServiceResult<KmipAdapterRow> {
        let permit = caller.require(Action::CreateKmipAdapter)?;
        if profile != PROFILE_NATIVE {
            return Err(ServiceError::field(
                "profile",
                format!("The field `profile` must be: {PROFILE_NATIVE}"),
            ));
        }
        if crk_id.is_empty() || crk_id.len() > 90 {
            return Err(ServiceError::field(
                "crk_id",
                "The field `crk_id` must be: the id or alias of a root key of the instance",
            ));
        }
        if let Some(n) = name {
            check_name("name", n)?;
        }
        let description = description.unwrap_or("");
        if description.chars().count() > 240 {
            return Err(ServiceError::field(
                "description",
                "The field `description` must be: at most 240 characters",
            ));
        }
        // The key (id or alias) must be an active root key of this instance.
        let crk = self.resolve_key(caller, crk_id).await.map_err(|e| {
            if e.code == ErrorCode::InvalidField {
                ServiceError::field(
                    "crk_id",
                    "The field `crk_id` must be: the id or alias of a root key of the instance",
                )
            } else {
                e
            }
        })?;
        let key = self.load_key(&permit, crk).await?;
        if key.row.extractable {
            return Err(ServiceError::new(
                ErrorCode::KeyRootRequired,
                "A KMIP adapter is bound to a root key",
            ));
        }
        if crate::keyrow::effective_state(&key.row, self.now()) != KeyState::Active {
            return Err(ServiceError::invalid_state("The root key is not active"));
        }
        if self.store.kmip_adapters(caller.instance, 1, 0).await?.1 >= MAX_ADAPTERS {
            return Err(conflict(format!(
                "An instance can have at most {MAX_ADAPTERS} KMIP adapters"
            )));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let name = match name {
            Some(n) => n.to_string(),
            None => format!("kmip_adapter_{}", &id[..8]),
        };
        let now = self.now();
        let row = KmipAdapterRow {
            id,
            instance_id: caller.instance,
            name,
            description: description.to_string(),
            profile: PROFILE_NATIVE.into(),
            crk_id: crk,
            created_by: caller.iam_id.clone(),
            created_at: now,
            updated_by: caller.iam_id.clone(),
            updated_at: now,
        };
        self.audit(caller, Action::CreateKmipAdapter, Some(crk))
            .await?;
        match self.store.create_kmip_adapter(&row).await {
            Ok(()) => Ok(row),
            Err(StoreError::Conflict(_)) => Err(conflict(format!(
                "A KMIP adapter named `{}` already exists",
                row.name
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// `GET /kmip_adapters`.
    pub async fn list_kmip_adapters(
        &self,
        caller: &Caller,
        limit: i64,
        offset: i64,
    ) -> ServiceResult<(Vec<KmipAdapterRow>, i64)> {
        caller.require(Action::ListKmipAdapters)?;
        Ok(self
            .store
            .kmip_adapters(caller.instance, limit, offset)
            .await?)
    }

    /// `GET /kmip_adapters/{id}` (id or name).
    pub async fn get_kmip_adapter(
        &self,
        caller: &Caller,
        id: &str,
    ) -> ServiceResult<KmipAdapterRow> {
        caller.require(Action::GetKmipAdapter)?;
        self.adapter_of(caller, id).await
    }

    /// `DELETE /kmip_adapters/{id}`: only without objects that are not destroyed.
    pub async fn delete_kmip_adapter(&self, caller: &Caller, id: &str) -> ServiceResult<()> {
        caller.require(Action::DeleteKmipAdapter)?;
        let a = self.adapter_of(caller, id).await?;
        self.audit(caller, Action::DeleteKmipAdapter, Some(a.crk_id))
            .await?;
        match self.store.delete_kmip_adapter(caller.instance, &a.id).await {
            Ok(()) => Ok(()),
            Err(StoreError::NotFound) => Err(not_found("KMIP adapter")),
            Err(StoreError::Conflict(_)) => Err(conflict(
                "The KMIP adapter has objects that are not destroyed: delete them first",
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// `POST /kmip_adapters/{id}/certificates`.
    pub async fn create_kmip_cert(
        &self,
        caller: &Caller,
        adapter: &str,
        name: Option<&str>,
        certificate: &str,
    ) -> ServiceResult<KmipCertRow> {
        caller.require(Action::CreateKmipCert)?;
        if let Some(n) = name {
            check_name("name", n)?;
        }
        let fingerprint = certificate_fingerprint(certificate)?;
        let a = self.adapter_of(caller, adapter).await?;
        if self.store.kmip_certs(caller.instance, &a.id, 1, 0).await?.1 >= MAX_CERTS {
            return Err(conflict(format!(
                "A KMIP adapter can have at most {MAX_CERTS} certificates"
            )));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let row = KmipCertRow {
            name: name
                .map(str::to_owned)
                .unwrap_or_else(|| format!("kmip_cert_{}", &id[..8])),
            id,
            instance_id: caller.instance,
            adapter_id: a.id.clone(),
            certificate: certificate.trim().to_string(),
            fingerprint: fingerprint.to_vec(),
            created_by: caller.iam_id.clone(),
            created_at: self.now(),
        };
        self.audit(caller, Action::CreateKmipCert, Some(a.crk_id))
            .await?;
        match self.store.create_kmip_cert(&row).await {
            Ok(()) => Ok(row),
            Err(StoreError::Conflict(_)) => Err(conflict(
                "This certificate is already registered, or the name is taken on this adapter",
            )),
            Err(StoreError::NotFound) => Err(not_found("KMIP adapter")),
            Err(e) => Err(e.into()),
        }
    }

    /// `GET /kmip_adapters/{id}/certificates`.
    pub async fn list_kmip_certs(
        &self,
        caller: &Caller,
        adapter: &str,
        limit: i64,
        offset: i64,
    ) -> ServiceResult<(Vec<KmipCertRow>, i64)> {
        caller.require(Action::ListKmipCerts)?;
        let a = self.adapter_of(caller, adapter).await?;
        Ok(self
            .store
            .kmip_certs(caller.instance, &a.id, limit, offset)
            .await?)
    }

    /// `GET /kmip_adapters/{id}/certificates/{cert_id}` (id or name).
    pub async fn get_kmip_cert(
        &self,
        caller: &Caller,
        adapter: &str,
        cert: &str,
    ) -> ServiceResult<KmipCertRow> {
        caller.require(Action::GetKmipCert)?;
        let a = self.adapter_of(caller, adapter).await?;
        self.store
            .get_kmip_cert(caller.instance, &a.id, cert)
            .await?
            .ok_or_else(|| not_found("KMIP client certificate"))
    }

    /// `DELETE /kmip_adapters/{id}/certificates/{cert_id}`.
    pub async fn delete_kmip_cert(
        &self,
        caller: &Caller,
        adapter: &str,
        cert: &str,
    ) -> ServiceResult<()> {
        caller.require(Action::DeleteKmipCert)?;
        let a = self.adapter_of(caller, adapter).await?;
        let c = self
            .store
            .get_kmip_cert(caller.instance, &a.id, cert)
            .await?
            .ok_or_else(|| not_found("KMIP client certificate"))?;
        self.audit(caller, Action::DeleteKmipCert, Some(a.crk_id))
            .await?;
        match self
            .store
            .delete_kmip_cert(caller.instance, &a.id, &c.id)
            .await
        {
            Ok(()) => Ok(()),
            Err(StoreError::NotFound) => Err(not_found("KMIP client certificate")),
            Err(e) => Err(e.into()),
        }
    }

    /// `GET /kmip_adapters/{id}/kmip_objects`.
    pub async fn list_kmip_objects(
        &self,
        caller: &Caller,
        adapter: &str,
        limit: i64,
        offset: i64,
    ) -> ServiceResult<(Vec<KmipObjectRow>, i64)> {
        caller.require(Action::ListKmipObjects)?;
        let a = self.adapter_of(caller, adapter).await?;
        Ok(self
            .store
            .kmip_objects(caller.instance, &a.id, limit, offset)
            .await?)
    }

    /// `GET /kmip_adapters/{id}/kmip_objects/{object_id}`.
    pub async fn get_kmip_object(
        &self,
        caller: &Caller,
        adapter: &str,
        object: &str,
    ) -> ServiceResult<KmipObjectRow> {
        caller.require(Action::GetKmipObject)?;
        let a = self.adapter_of(caller, adapter).await?;
        self.store
            .get_kmip_object(caller.instance, &a.id, object)
            .await?
            .ok_or_else(|| not_found("KMIP object"))
    }

    /// `DELETE /kmip_adapters/{id}/kmip_objects/{object_id}`: destroys the object (its
    /// material is erased; the record stays, in state Destroyed).
    pub async fn delete_kmip_object(
        &self,
        caller: &Caller,
        adapter: &str,
        object: &str,
    ) -> ServiceResult<()> {
        caller.require(Action::DeleteKmipObject)?;
        let a = self.adapter_of(caller, adapter).await?;
        let row = self
            .store
            .get_kmip_object(caller.instance, &a.id, object)
            .await?
            .ok_or_else(|| not_found("KMIP object"))?;
        if row.wrapped.is_none() {
            return Err(conflict("The KMIP object is already destroyed"));
        }
        if row.state == i64::from(keyward_kmip::tags::state::ACTIVE) {
            return Err(conflict(
                "The KMIP object is active: it can be deleted once it is revoked",
            ));
        }
        let obj = object_of(&row)?;
        let after = ops::destroyed(&obj, self.now());
        self.audit(caller, Action::DeleteKmipObject, Some(a.crk_id))
            .await?;
        let mut next = row_after(&row, &after, self.now());
        next.wrapped = None;
        next.updated_by = caller.iam_id.clone();
        next.updated_by_cert_id = None;
        next.destroyed_by = Some(caller.iam_id.clone());
        next.destroyed_at = Some(self.now());
        match self.store.update_kmip_object(&next).await {
            Ok(()) => Ok(()),
            Err(StoreError::Conflict(_)) => Err(conflict(
                "The KMIP object changed meanwhile: retry the request",
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// The session of a KMIP client presenting the certificate with this SHA-256 fingerprint
    /// (`None`: not registered on any adapter).
    pub async fn kmip_session(
        self: &Arc<Self>,
        fingerprint: &[u8; 32],
    ) -> ServiceResult<Option<KmipSession>> {
        let Some(cert) = self.store.find_kmip_cert(fingerprint).await? else {
            return Ok(None);
        };
        if !ct_eq(&cert.fingerprint, fingerprint) {
            return Ok(None);
        }
        let Some(adapter) = self
            .store
            .get_kmip_adapter(cert.instance_id, &cert.adapter_id)
            .await?
        else {
            return Ok(None);
        };
        if adapter.id != cert.adapter_id {
            return Ok(None);
        }
        Ok(Some(KmipSession {
            svc: self.clone(),
            caller: kmip_caller(&cert),
            cert,
            adapter,
        }))
    }
}

fn object_of(row: &KmipObjectRow) -> ServiceResult<Object> {
    Object::decode_meta(
        row.id.clone(),
        row.object_type as u32,
        row.state as u32,
        &row.meta,
    )
    .map_err(|_| ServiceError::new(ErrorCode::Internal, "a stored KMIP object is unreadable"))
}

/// The row of `row` changed to `after` (the next row version).
fn row_after(row: &KmipObjectRow, after: &Object, now: i64) -> KmipObjectRow {
    let mut next = row.clone();
    next.state = i64::from(after.state);
    next.meta = after.encode_meta();
    next.row_version = row.row_version + 1;
    next.updated_at = now;
    next
}

/// One KMIP client's view: its certificate, adapter and the adapter's objects.
pub struct KmipSession {
    svc: Arc<KeyService>,
    caller: Caller,
    cert: KmipCertRow,
    adapter: KmipAdapterRow,
}

impl std::fmt::Debug for KmipSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmipSession")
            .field("cert", &self.cert.id)
            .field("adapter", &self.adapter.id)
            .finish_non_exhaustive()
    }
}

fn op_error(e: ServiceError) -> OpError {
    match e.code {
        ErrorCode::KeyActionInvalidState
        | ErrorCode::KeyNotFound
        | ErrorCode::KeyDeleted
        | ErrorCode::KeyExpired
        | ErrorCode::KeyRootRequired => OpError::new(
            reason::PERMISSION_DENIED,
            "the adapter's root key is not active: its objects cannot be used",
        ),
        ErrorCode::UnprocessableCiphertext => OpError::new(
            reason::CRYPTOGRAPHIC_FAILURE,
            "the object's material does not open under the adapter's root key",
        ),
        ErrorCode::Unavailable => OpError::new(
            reason::GENERAL_FAILURE,
            "the service is temporarily unavailable; retry later",
        ),
        _ => {
            tracing::error!(code = e.code.as_str(), error = %e, "KMIP operation failed");
            OpError::new(reason::GENERAL_FAILURE, "the operation failed")
        }
    }
}

fn store_error(e: StoreError) -> OpError {
    op_error(e.into())
}

impl KmipSession {
    /// The adapter this client belongs to.
    pub fn adapter_id(&self) -> &str {
        &self.adapter.id
    }
    /// The instance of that adapter.
    pub fn instance(&self) -> keyward_domain::InstanceId {
        self.adapter.instance_id
    }

    /// The adapter's root key (loaded through the key cache), checked to allow `verb`.
    async fn root(&self, allowed: &[KeyState]) -> Result<Arc<crate::cache::CachedKey>, OpError> {
        let permit = self
            .caller
            .require(Action::KmipOperation)
            .map_err(op_error)?;
        self.svc
            .root_key_for(
                &permit,
                self.adapter.crk_id,
                allowed,
                "protect KMIP objects",
            )
            .await
            .map_err(op_error)
    }

    fn aad(&self, object: &str) -> [String; 2] {
        [self.adapter.id.clone(), object.to_string()]
    }

    async fn row(&self, uid: &str) -> Result<KmipObjectRow, OpError> {
        self.svc
            .store
            .get_kmip_object(self.adapter.instance_id, &self.adapter.id, uid)
            .await
            .map_err(store_error)?
            .ok_or_else(OpError::not_found)
    }

    /// Writes an audit attempt, runs `f`, and records its outcome.
    async fn audited<T, F>(&self, f: F) -> Result<T, OpError>
    where
        F: std::future::Future<Output = Result<T, OpError>>,
    {
        self.svc
            .audit(
                &self.caller,
                Action::KmipOperation,
                Some(self.adapter.crk_id),
            )
            .await
            .map_err(op_error)?;
        let r = f.await;
        let reason = r.as_ref().err().map(|_| "KMIP_OPERATION_FAILED");
        self.svc
            .audit_outcome(
                &self.caller,
                Action::KmipOperation,
                Some(self.adapter.crk_id),
                reason,
            )
            .await;
        r
    }
}

const USABLE: &[KeyState] = &[KeyState::Active, KeyState::Deactivated];

#[async_trait]
impl Backend for KmipSession {
    fn now(&self) -> i64 {
        self.svc.now()
    }

    fn random(&self, len: usize) -> Result<Zeroizing<Vec<u8>>, OpError> {
        let s = random_secret(len)
            .map_err(|_| OpError::new(reason::CRYPTOGRAPHIC_FAILURE, "no random bytes"))?;
        Ok(Zeroizing::new(s.expose().to_vec()))
    }

    async fn insert(&self, obj: &NewObject, material: &[u8]) -> Result<String, OpError> {
        self.audited(async {
            let key = self.root(&[KeyState::Active]).await?;
            let id = uuid::Uuid::new_v4().to_string();
            let current = current_version(&key).map_err(op_error)?;
            let wrapped = seal_blob(self.adapter.crk_id, current, &self.aad(&id), material)
                .map_err(op_error)?;
            let meta = Object {
                uid: id.clone(),
                object_type: obj.object_type,
                state: obj.state,
                secret_data_type: obj.secret_data_type,
                attrs: obj.attrs.clone(),
            }
            .encode_meta();
            if meta.len() > ops::MAX_META {
                return Err(OpError::new(
                    reason::PERMISSION_DENIED,
                    "the object's attributes are too large",
                ));
            }
            let now = self.now();
            let row = KmipObjectRow {
                id: id.clone(),
                instance_id: self.adapter.instance_id,
                adapter_id: self.adapter.id.clone(),
                object_type: i64::from(obj.object_type),
                state: i64::from(obj.state),
                meta,
                wrapped: Some(wrapped),
                row_version: 1,
                created_by_cert_id: Some(self.cert.id.clone()),
                created_by: self.caller.iam_id.clone(),
                created_at: now,
                updated_by_cert_id: Some(self.cert.id.clone()),
                updated_by: self.caller.iam_id.clone(),
                updated_at: now,
                destroyed_by_cert_id: None,
                destroyed_by: None,
                destroyed_at: None,
            };
            self.svc
                .store
                .insert_kmip_object(&row)
                .await
                .map_err(store_error)?;
            Ok(id)
        })
        .await
    }

    async fn load(&self, uid: &str) -> Result<Object, OpError> {
        self.root(USABLE).await?;
        let row = self.row(uid).await?;
        object_of(&row).map_err(op_error)
    }

    async fn material(&self, obj: &Object) -> Result<Zeroizing<Vec<u8>>, OpError> {
        self.audited(async {
            let key = self.root(USABLE).await?;
            let row = self.row(&obj.uid).await?;
            let wrapped = row
                .wrapped
                .as_deref()
                .ok_or_else(|| OpError::new(reason::ITEM_NOT_FOUND, "the object was destroyed"))?;
            let (pt, _) = open_blob(&key, wrapped, &self.aad(&obj.uid)).map_err(op_error)?;
            Ok(Zeroizing::new(pt.expose().to_vec()))
        })
        .await
    }

    async fn update(&self, before: &Object, after: &Object) -> Result<(), OpError> {
        self.audited(self.write(before, after, false)).await
    }

    async fn destroy(&self, before: &Object, after: &Object) -> Result<(), OpError> {
        self.audited(self.write(before, after, true)).await
    }

    async fn list(&self) -> Result<Vec<Object>, OpError> {
        self.root(USABLE).await?;
        let (rows, _) = self
            .svc
            .store
            .kmip_objects(self.adapter.instance_id, &self.adapter.id, MAX_LOCATE, 0)
            .await
            .map_err(store_error)?;
        rows.iter()
            .map(|r| object_of(r).map_err(op_error))
            .collect()
    }
}

impl KmipSession {
    async fn write(&self, before: &Object, after: &Object, destroy: bool) -> Result<(), OpError> {
        self.root(USABLE).await?;
        let row = self.row(&before.uid).await?;
        if object_of(&row).map_err(op_error)? != *before {
            return Err(OpError::new(
                reason::GENERAL_FAILURE,
                "the object changed meanwhile: retry",
            ));
        }
        let now = self.now();
        let mut next = row_after(&row, after, now);
        if next.meta.len() > ops::MAX_META {
            return Err(OpError::new(
                reason::PERMISSION_DENIED,
                "the object's attributes are too large",
            ));
        }
        next.updated_by_cert_id = Some(self.cert.id.clone());
        next.updated_by = self.caller.iam_id.clone();
        if destroy {
            next.wrapped = None;
            next.destroyed_by_cert_id = Some(self.cert.id.clone());
            next.destroyed_by = Some(self.caller.iam_id.clone());
            next.destroyed_at = Some(now);
        }
        match self.svc.store.update_kmip_object(&next).await {
            Ok(()) => Ok(()),
            Err(StoreError::Conflict(_)) => Err(OpError::new(
                reason::GENERAL_FAILURE,
                "the object changed meanwhile: retry",
            )),
            Err(e) => Err(store_error(e)),
        }
    }
}

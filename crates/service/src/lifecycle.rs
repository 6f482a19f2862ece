//! The key lifecycle: versions, disable/enable, dual-authorised deletion, delete, restore,
//! purge, key policies, and the scheduler that rotates due keys and purges old deleted ones.
//!
//! Every change goes through [`KeyService::mutate_key`]: read the row, apply the rule to a
//! copy, write it conditionally on the row version (retrying a lost race a few times), and
//! drop this node's cached copy at once.

use keyward_domain::rows::{DeletionAuthAttr, DualAuthAttr, RotationAttr};
use keyward_domain::{Action, KeyId, KeyState};
use keyward_store::{KeyRow, StoreError};

use crate::keyrow::{
    apply_key_policies, dual_auth_enabled, effective_state, KeyInfo, RotateRequest,
};
use crate::permit::Permit;
use crate::{Caller, ErrorCode, KeyService, ServiceError, ServiceResult};

pub use crate::keyrow::{DAY, MONTH};
/// Minimum time between a state change and enable/restore.
pub const ACTION_COOLDOWN: i64 = 30;
/// How long a `setKeyForDeletion` authorisation lasts.
pub const DUAL_AUTH_WINDOW: i64 = 7 * DAY;
/// How long a deleted key can be restored.
pub const RESTORE_WINDOW: i64 = 30 * DAY;
/// Earliest purge after deletion.
pub const PURGE_DELAY: i64 = 4 * 3_600;
/// Automatic purge after deletion.
pub const AUTO_PURGE_AFTER: i64 = 90 * DAY;
/// Principal recorded for scheduler actions.
pub const SCHEDULER: &str = "keyward-scheduler";

/// A key version as listed.
#[derive(Debug, Clone)]
pub struct VersionInfo {
    pub id: String,
    pub created_at: i64,
}

/// The two key policies.
#[derive(Debug, Clone, Default)]
pub struct KeyPolicies {
    pub rotation: Option<RotationAttr>,
    pub dual_auth_delete: Option<DualAuthAttr>,
}

fn too_early(msg: &str) -> ServiceError {
    ServiceError::new(ErrorCode::ReqTooEarly, msg)
}

fn root_only(row: &KeyRow, what: &str) -> ServiceResult<()> {
    if row.extractable {
        Err(ServiceError::new(
            ErrorCode::KeyRootRequired,
            format!("Only root keys can be {what}"),
        ))
    } else {
        Ok(())
    }
}

impl KeyService {
    /// Reads, changes with `f`, and conditionally writes a key; drops the cached copy.
    pub(crate) async fn mutate_key<F>(
        &self,
        caller: &Caller,
        permit: Permit,
        id: KeyId,
        f: F,
    ) -> ServiceResult<KeyRow>
    where
        F: Fn(&mut KeyRow, i64) -> ServiceResult<()>,
    {
        let mut audited = false;
        for _ in 0..5 {
            let mut row = self.row_for(&permit, id).await?;
            let now = self.now();
            f(&mut row, now)?;
            row.updated_at = now;
            if !audited {
                self.audit(caller, permit.action(), Some(id)).await?;
                audited = true;
            }
            match self.store.update_key(&row).await {
                Ok(()) => {
                    self.keys.invalidate(permit.instance(), id);
                    row.row_version += 1;
                    return Ok(row);
                }
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ServiceError::invalid_state(
            "The key is being changed by other requests; retry",
        ))
    }

    pub(crate) async fn info_of(&self, row: KeyRow) -> ServiceResult<KeyInfo> {
        let versions = self.store.versions(row.instance_id, row.id).await?;
        let mut info = self.info(row, &versions);
        info.aliases = self
            .store
            .aliases_of(info.row.instance_id, info.row.id)
            .await?
            .into_iter()
            .map(|a| a.alias)
            .collect();
        Ok(info)
    }

    /// `GET /keys/{id}/versions`, newest first; a key that is not active needs `allKeyStates`.
    pub async fn versions(
        &self,
        caller: &Caller,
        id: KeyId,
        all_key_states: bool,
        limit: usize,
        offset: usize,
    ) -> ServiceResult<(Vec<VersionInfo>, usize)> {
        let permit = caller.require(Action::ListVersions)?;
        let row = self.row_for(&permit, id).await?;
        if effective_state(&row, self.now()) != KeyState::Active && !all_key_states {
            return Err(ServiceError::invalid_state(
                "The key is not active: set allKeyStates=true to list its versions",
            ));
        }
        let versions = self.store.versions(permit.instance(), id).await?;
        let total = versions.len();
        Ok((
            versions
                .into_iter()
                .skip(offset)
                .take(limit)
                .map(|v| VersionInfo {
                    id: v.id.to_string(),
                    created_at: v.created_at,
                })
                .collect(),
            total,
        ))
    }

    /// `POST /keys/{id}/actions/disable`: Active → Suspended (root keys).
    pub async fn disable_key(&self, caller: &Caller, id: KeyId) -> ServiceResult<()> {
        let permit = caller.require(Action::Disable)?;
        self.mutate_key(caller, permit, id, |row, now| {
            root_only(row, "disabled")?;
            if effective_state(row, now) != KeyState::Active {
                return Err(ServiceError::invalid_state(
                    "Key is not in active state: Key could not be disabled",
                ));
            }
            row.state = KeyState::Suspended;
            row.state_changed_at = now;
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// `POST /keys/{id}/actions/enable`: Suspended → Active, ≥ 30 s after the last change.
    pub async fn enable_key(&self, caller: &Caller, id: KeyId) -> ServiceResult<()> {
        let permit = caller.require(Action::Enable)?;
        self.mutate_key(caller, permit, id, |row, now| {
            root_only(row, "enabled")?;
            if row.state != KeyState::Suspended {
                return Err(ServiceError::invalid_state(
                    "Key is not in suspended state: Key could not be enabled",
                ));
            }
            if now - row.state_changed_at < ACTION_COOLDOWN {
                return Err(too_early(
                    "A key can be enabled no earlier than 30 seconds after it was disabled",
                ));
            }
            row.state = KeyState::Active;
            row.state_changed_at = now;
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// `setKeyForDeletion`: the first of the two authorisations of a dual-auth delete.
    pub async fn set_key_for_deletion(&self, caller: &Caller, id: KeyId) -> ServiceResult<()> {
        let permit = caller.require(Action::SetKeyForDeletion)?;
        let by = caller.iam_id.clone();
        self.mutate_key(caller, permit, id, |row, now| {
            if !dual_auth_enabled(row) {
                return Err(ServiceError::new(
                    ErrorCode::NotDualAuth,
                    "The key does not have a dual authorization policy",
                ));
            }
            if row.state == KeyState::Destroyed {
                return Err(ServiceError::invalid_state("The key has been deleted"));
            }
            row.attrs.deletion_auth = Some(DeletionAuthAttr {
                by: Some(by.clone()),
                at: Some(now),
                expires: Some(now + DUAL_AUTH_WINDOW),
                other: Default::default(),
            });
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// `unsetKeyForDeletion`: cancels a pending authorisation.
    pub async fn unset_key_for_deletion(&self, caller: &Caller, id: KeyId) -> ServiceResult<()> {
        let permit = caller.require(Action::UnsetKeyForDeletion)?;
        self.mutate_key(caller, permit, id, |row, _now| {
            if !dual_auth_enabled(row) {
                return Err(ServiceError::new(
                    ErrorCode::NotDualAuth,
                    "The key does not have a dual authorization policy",
                ));
            }
            row.attrs.deletion_auth = None;
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// `DELETE /keys/{id}[?force=true]`: to state 5, subject to registrations and dual auth.
    pub async fn delete_key(
        &self,
        caller: &Caller,
        id: KeyId,
        force: bool,
    ) -> ServiceResult<KeyInfo> {
        let permit = caller.require(Action::DeleteKey)?;
        let regs = self
            .store
            .registrations(permit.instance(), Some(id))
            .await?;
        // A root key that a KMIP adapter is bound to stays until the adapter is deleted, as in
        // Key Protect (docs/kmip.md); `force` does not override it.
        let (adapters, _) = self
            .store
            .kmip_adapters(permit.instance(), crate::kmip::MAX_ADAPTERS, 0)
            .await?;
        let bound = adapters.iter().any(|a| a.crk_id == id);
        let by = caller.iam_id.clone();
        let row = self.mutate_key(caller, permit, id, |row, now| {
                if row.state == KeyState::Destroyed {
                    return Err(ServiceError::new(
                        ErrorCode::KeyDeleted,
                        "The key has already been deleted",
                    ));
                }
                if bound {
                    return Err(ServiceError::new(
                        ErrorCode::ProtectedResource,
                        "The key is the root key of a KMIP adapter: delete the adapter first",
                    ));
                }
                if regs.iter().any(|r| r.prevent_key_deletion) {
                    return Err(ServiceError::new(
                        ErrorCode::PrevKeyDeletion,
                        "The key protects a resource with a retention policy and cannot be deleted",
                    ));
                }
                if !regs.is_empty() && !force {
                    return Err(ServiceError::new(
                        ErrorCode::ProtectedResource,
                        "The key is protecting one or more cloud resources: set `force` to `true` to delete it",
                    ));
                }
                if dual_auth_enabled(row) {
                    let ok = row.attrs.deletion_auth.as_ref().is_some_and(|a| {
                        a.by.as_deref() != Some(by.as_str()) && a.expires.unwrap_or(0) > now
                    });
                    if !ok {
                        return Err(ServiceError::new(
                            ErrorCode::AuthorizationsNotMet,
                            "1 prior authorization(s) are required: another user must set the key for deletion first",
                        ));
                    }
                }
                row.attrs.deletion_auth = None;
                row.state = KeyState::Destroyed;
                row.deletion_date = Some(now);
                row.deleted_by = Some(by.clone());
                row.state_changed_at = now;
                Ok(())
            })
            .await?;
        self.info_of(row).await
    }

    /// `POST /keys/{id}/restore`: 5 → 1, between 30 s and 30 days after deletion.
    pub async fn restore_key(&self, caller: &Caller, id: KeyId) -> ServiceResult<KeyInfo> {
        let permit = caller.require(Action::RestoreKey)?;
        let row = self
            .mutate_key(caller, permit, id, |row, now| {
                if row.state != KeyState::Destroyed {
                    return Err(ServiceError::invalid_state(
                        "Key is not in destroyed state: Key could not be restored",
                    ));
                }
                let deleted = row.deletion_date.unwrap_or(row.state_changed_at);
                if now - deleted > RESTORE_WINDOW {
                    return Err(ServiceError::new(
                        ErrorCode::KeyRestoreExpired,
                        "A key can be restored only within 30 days of its deletion",
                    ));
                }
                if row.expiration_date.is_some_and(|e| e <= now) {
                    return Err(ServiceError::new(
                        ErrorCode::KeyExpired,
                        "The key has expired and cannot be restored",
                    ));
                }
                if now - row.state_changed_at < ACTION_COOLDOWN {
                    return Err(too_early(
                        "A key can be restored no earlier than 30 seconds after it was deleted",
                    ));
                }
                row.state = KeyState::Active;
                row.deletion_date = None;
                row.deleted_by = None;
                row.state_changed_at = now;
                Ok(())
            })
            .await?;
        self.info_of(row).await
    }

    /// `DELETE /keys/{id}/purge`: removes a deleted key for good, ≥ 4 h after deletion.
    pub async fn purge_key(&self, caller: &Caller, id: KeyId) -> ServiceResult<KeyInfo> {
        let permit = caller.require(Action::Purge)?;
        let row = self.row_for(&permit, id).await?;
        if row.state != KeyState::Destroyed {
            return Err(ServiceError::invalid_state(
                "Key is not in destroyed state: Key could not be purged",
            ));
        }
        let deleted = row.deletion_date.unwrap_or(row.state_changed_at);
        if self.now() - deleted < PURGE_DELAY {
            return Err(too_early(
                "Purge operation is allowed 4h0m0s after key is deleted",
            ));
        }
        let info = self.info_of(row.clone()).await?;
        self.audit(caller, Action::Purge, Some(id)).await?;
        match self.store.purge_key(&row).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => {
                return Err(ServiceError::invalid_state(
                    "The key changed while it was being purged; retry",
                ))
            }
            Err(e) => return Err(e.into()),
        }
        self.keys.invalidate(permit.instance(), id);
        Ok(info)
    }

    /// `POST /keys/{id}/actions/sync`: Keyward has no integrated services to notify; the
    /// call is validated and acknowledged.
    pub async fn sync_key(&self, caller: &Caller, id: KeyId) -> ServiceResult<()> {
        let permit = caller.require(Action::Sync)?;
        self.row_for(&permit, id).await?;
        Ok(())
    }

    /// `GET /keys/{id}/policies`.
    pub async fn key_policies(
        &self,
        caller: &Caller,
        id: KeyId,
    ) -> ServiceResult<(KeyRow, KeyPolicies)> {
        let permit = caller.require(Action::ReadKeyPolicies)?;
        let row = self.row_for(&permit, id).await?;
        let p = KeyPolicies {
            rotation: row.attrs.rotation.clone(),
            dual_auth_delete: row.attrs.dual_auth_delete.clone(),
        };
        Ok((row, p))
    }

    /// `PUT /keys/{id}/policies`: `rotation` = (enabled, interval months), `dual` = enabled.
    pub async fn set_key_policies(
        &self,
        caller: &Caller,
        id: KeyId,
        rotation: Option<(bool, Option<i64>)>,
        dual: Option<bool>,
    ) -> ServiceResult<(KeyRow, KeyPolicies)> {
        let permit = caller.require(Action::WriteKeyPolicies)?;
        if let Some((_, Some(m))) = rotation {
            if !(1..=12).contains(&m) {
                return Err(ServiceError::field(
                    "interval_month",
                    "The field `interval_month` must be: an integer between 1 and 12 (inclusive)",
                ));
            }
        }
        let by = caller.iam_id.clone();
        let row = self
            .mutate_key(caller, permit, id, |row, now| {
                if row.state == KeyState::Destroyed {
                    return Err(ServiceError::invalid_state("The key has been deleted"));
                }
                apply_key_policies(row, rotation, dual, &by, now)
            })
            .await?;
        let p = KeyPolicies {
            rotation: row.attrs.rotation.clone(),
            dual_auth_delete: row.attrs.dual_auth_delete.clone(),
        };
        Ok((row, p))
    }

    /// One pass of the scheduler: rotates keys whose rotation policy is due and purges keys
    /// deleted more than 90 days ago. Safe on several nodes at once: each change is
    /// conditional on the row version, so a key is rotated or purged once, by one node.
    /// Returns (rotated, purged).
    pub async fn run_scheduled_jobs(&self) -> ServiceResult<(usize, usize)> {
        let now = self.now();
        let mut rotated = 0;
        for row in self.store.due_rotations(now, 100).await? {
            if row.imported || row.extractable {
                continue;
            }
            let caller = scheduler_caller(row.instance_id);
            match self
                .rotate_key_as(
                    &caller,
                    row.id,
                    RotateRequest::default(),
                    Some(row.row_version),
                )
                .await
            {
                Ok(()) => rotated += 1,
                Err(e) => {
                    tracing::debug!(key = %row.id, code = e.code.as_str(), "scheduled rotation skipped")
                }
            }
        }
        let mut purged = 0;
        for row in self.store.due_purges(now - AUTO_PURGE_AFTER, 100).await? {
            self.audit(
                &scheduler_caller(row.instance_id),
                Action::Purge,
                Some(row.id),
            )
            .await?;
            match self.store.purge_key(&row).await {
                Ok(()) => {
                    self.keys.invalidate(row.instance_id, row.id);
                    purged += 1;
                }
                Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok((rotated, purged))
    }
}

fn scheduler_caller(instance: keyward_domain::InstanceId) -> Caller {
    Caller {
        iam_id: SCHEDULER.into(),
        instance,
        roles: std::sync::Arc::new([keyward_domain::Role::Manager]),
        meta: crate::audit::RequestMeta {
            request_id: format!("scheduler-{}", keyward_domain::new_uuid()),
            ..Default::default()
        },
    }
}

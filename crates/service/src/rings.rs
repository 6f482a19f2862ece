//! Key rings and aliases.

use keyward_domain::{Action, KeyId, KeyState};
use keyward_store::{AliasRow, KeyRingRow, StoreError};

pub use crate::keyrow::alias_syntax_ok;
use crate::keyrow::KeyInfo;
use crate::{Caller, ErrorCode, KeyService, ServiceError, ServiceResult};

pub const MAX_KEY_RINGS: usize = 50;
pub const MAX_ALIASES_PER_KEY: usize = 5;
pub const DEFAULT_RING: &str = "default";

/// The rule every alias follows (also those given when a key is created).
pub(crate) const ALIAS_RULE: &str = "The alias must be: 2 to 90 characters of letters, digits, - and _, not a UUID and not a reserved word";

/// Whether `alias` may name a key: [`ALIAS_RULE`].
pub(crate) fn alias_allowed(alias: &str) -> bool {
    alias_syntax_ok(alias)
        && keyward_domain::KeyId::parse(alias).is_err()
        && !RESERVED.contains(&alias)
}

const RESERVED: [&str; 16] = [
    "allowed_ip",
    "key",
    "keys",
    "metadata",
    "policy",
    "policies",
    "registration",
    "registrations",
    "ring",
    "rings",
    "rotate",
    "wrap",
    "unwrap",
    "rewrap",
    "version",
    "versions",
];

fn ring_syntax_ok(s: &str) -> bool {
    (2..=100).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl KeyService {
    /// `GET /key_rings`: `default` first, then the created ones.
    pub async fn list_key_rings(&self, caller: &Caller) -> ServiceResult<Vec<KeyRingRow>> {
        caller.require(Action::ListKeyRings)?;
        let mut rings = vec![KeyRingRow {
            instance_id: caller.instance,
            id: DEFAULT_RING.into(),
            created_at: 0,
            created_by: String::new(),
        }];
        if let Some(inst) = self.store.get_instance(caller.instance).await? {
            rings[0].created_at = inst.created_at;
        }
        rings.extend(self.store.list_key_rings(caller.instance).await?);
        Ok(rings)
    }

    /// `POST /key_rings/{id}`.
    pub async fn create_key_ring(&self, caller: &Caller, id: &str) -> ServiceResult<()> {
        caller.require(Action::CreateKeyRing)?;
        if !ring_syntax_ok(id) {
            return Err(ServiceError::new(
                ErrorCode::InvalidField,
                "The key ring ID must be: 2 to 100 characters of letters, digits, - and _",
            )
            .with_target("path_param", "key-ring-id"));
        }
        if id == DEFAULT_RING {
            return Err(ServiceError::new(
                ErrorCode::KeyRingConflict,
                "The key ring `default` always exists",
            ));
        }
        if self.store.list_key_rings(caller.instance).await?.len() + 1 >= MAX_KEY_RINGS {
            return Err(ServiceError::new(
                ErrorCode::KeyRingLimit,
                format!("An instance can have at most {MAX_KEY_RINGS} key rings"),
            ));
        }
        self.audit(caller, Action::CreateKeyRing, None).await?;
        match self
            .store
            .create_key_ring(&KeyRingRow {
                instance_id: caller.instance,
                id: id.to_string(),
                created_at: self.now(),
                created_by: caller.iam_id.clone(),
            })
            .await
        {
            Ok(()) => Ok(()),
            Err(StoreError::Conflict(_)) => Err(ServiceError::new(
                ErrorCode::KeyRingConflict,
                format!("The key ring `{id}` already exists"),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// `DELETE /key_rings/{id}[?force=true]`.
    pub async fn delete_key_ring(
        &self,
        caller: &Caller,
        id: &str,
        force: bool,
    ) -> ServiceResult<()> {
        caller.require(Action::DeleteKeyRing)?;
        if id == DEFAULT_RING {
            return Err(ServiceError::new(
                ErrorCode::KeyRingConflict,
                "The key ring `default` cannot be deleted",
            ));
        }
        self.audit(caller, Action::DeleteKeyRing, None).await?;
        match self.store.delete_key_ring(caller.instance, id, force).await {
            Ok(()) => Ok(()),
            Err(StoreError::NotFound) => Err(ServiceError::new(
                ErrorCode::KeyRingNotFound,
                format!("The key ring `{id}` does not exist"),
            )),
            Err(StoreError::Conflict(_)) => Err(ServiceError::new(
                ErrorCode::KeyRingNotEmpty,
                "The key ring holds keys: only a ring whose keys are all deleted can be removed, with force=true",
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// `PATCH /keys/{id}` with `keyRingID`: moves a key to another ring.
    pub async fn move_key(&self, caller: &Caller, id: KeyId, ring: &str) -> ServiceResult<KeyInfo> {
        let permit = caller.require(Action::PatchKey)?;
        if ring != DEFAULT_RING
            && !self
                .store
                .list_key_rings(caller.instance)
                .await?
                .iter()
                .any(|r| r.id == ring)
        {
            return Err(ServiceError::new(
                ErrorCode::KeyRingNotFound,
                format!("The key ring `{ring}` does not exist"),
            ));
        }
        let row = self
            .mutate_key(caller, permit, id, |row, _| {
                if row.state == KeyState::Destroyed {
                    return Err(ServiceError::invalid_state("The key has been deleted"));
                }
                row.key_ring_id = ring.to_string();
                Ok(())
            })
            .await?;
        self.info_of(row).await
    }

    /// `POST /keys/{id}/aliases/{alias}`.
    pub async fn create_alias(
        &self,
        caller: &Caller,
        id: KeyId,
        alias: &str,
    ) -> ServiceResult<AliasRow> {
        caller.require(Action::CreateAlias)?;
        if !alias_allowed(alias) {
            return Err(ServiceError::new(ErrorCode::InvalidField, ALIAS_RULE)
                .with_target("path_param", "alias"));
        }
        let row = self
            .store
            .get_key(caller.instance, id)
            .await?
            .ok_or_else(ServiceError::key_not_found)?;
        if row.state == KeyState::Destroyed {
            return Err(ServiceError::invalid_state("The key has been deleted"));
        }
        let existing = self.store.aliases_of(caller.instance, id).await?;
        if let Some(a) = existing.iter().find(|a| a.alias == alias) {
            return Ok(a.clone());
        }
        if existing.len() >= MAX_ALIASES_PER_KEY {
            return Err(ServiceError::new(
                ErrorCode::AliasLimit,
                format!("A key can have at most {MAX_ALIASES_PER_KEY} aliases"),
            ));
        }
        let a = AliasRow {
            instance_id: caller.instance,
            alias: alias.to_string(),
            key_id: id,
            created_at: self.now(),
            created_by: caller.iam_id.clone(),
        };
        self.audit(caller, Action::CreateAlias, Some(id)).await?;
        match self.store.create_alias(&a).await {
            Ok(()) => Ok(a),
            Err(StoreError::Conflict(_)) => Err(ServiceError::new(
                ErrorCode::AliasConflict,
                "The alias is already in use by another key of this instance",
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// `DELETE /keys/{id}/aliases/{alias}`.
    pub async fn delete_alias(&self, caller: &Caller, id: KeyId, alias: &str) -> ServiceResult<()> {
        caller.require(Action::DeleteAlias)?;
        self.audit(caller, Action::DeleteAlias, Some(id)).await?;
        match self.store.delete_alias(caller.instance, alias, id).await {
            Ok(()) => Ok(()),
            Err(StoreError::NotFound) => Err(ServiceError::new(
                ErrorCode::NotFound,
                "The key has no such alias",
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Registrations of a key, or of the instance.
    pub async fn registrations(
        &self,
        caller: &Caller,
        key: Option<KeyId>,
    ) -> ServiceResult<Vec<keyward_store::RegistrationRow>> {
        caller.require(Action::ListRegistrations)?;
        if let Some(k) = key {
            self.store
                .get_key(caller.instance, k)
                .await?
                .ok_or_else(ServiceError::key_not_found)?;
        }
        Ok(self.store.registrations(caller.instance, key).await?)
    }

    /// Aliases of a key (for single-key responses).
    pub async fn aliases(&self, caller: &Caller, id: KeyId) -> ServiceResult<Vec<String>> {
        caller.require(Action::GetKeyMetadata)?;
        Ok(self
            .store
            .aliases_of(caller.instance, id)
            .await?
            .into_iter()
            .map(|a| a.alias)
            .collect())
    }
}

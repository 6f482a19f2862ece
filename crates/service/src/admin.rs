//! Operator actions on instances, principals, API keys and role grants (the `keyward admin`
//! commands, and the first-start bootstrap). They need only the store, not the master key.

use keyward_auth::new_api_key;
use keyward_domain::{InstanceId, Role};
use keyward_store::{ApiKeyRow, GrantRow, InstanceRow, PrincipalRow, Store, StoreError};
use uuid::Uuid;

use crate::{ErrorCode, ServiceError, ServiceResult};

/// A new API key, shown once.
pub struct CreatedApiKey {
    pub apikey: String,
    pub id: String,
    pub iam_id: String,
    pub instance: InstanceId,
    pub role: Role,
    pub name: String,
}

impl std::fmt::Debug for CreatedApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedApiKey")
            .field("apikey", &"[REDACTED]")
            .field("id", &self.id)
            .field("iam_id", &self.iam_id)
            .finish_non_exhaustive()
    }
}

pub async fn create_instance(
    store: &dyn Store,
    name: &str,
    now: i64,
) -> ServiceResult<InstanceRow> {
    let row = InstanceRow {
        id: InstanceId::new(),
        name: name.to_string(),
        created_at: now,
    };
    store.create_instance(&row).await?;
    Ok(row)
}

/// Creates an API key for a new principal (or for `iam_id` if given and existing) and grants it
/// `role` in `instance`.
pub async fn create_api_key(
    store: &dyn Store,
    instance: InstanceId,
    role: Role,
    name: &str,
    iam_id: Option<&str>,
    now: i64,
) -> ServiceResult<CreatedApiKey> {
    if store.get_instance(instance).await?.is_none() {
        return Err(ServiceError::new(
            ErrorCode::NotFound,
            format!("no instance {instance}"),
        ));
    }
    let iam_id = match iam_id {
        Some(id) => {
            if !store.principal_exists(id).await? {
                return Err(ServiceError::new(
                    ErrorCode::NotFound,
                    format!("no principal {id}"),
                ));
            }
            id.to_string()
        }
        None => format!("iam-ServiceId-{}", Uuid::new_v4()),
    };
    let key = new_api_key().map_err(ServiceError::internal)?;
    let id = format!("ApiKey-{}", Uuid::new_v4());
    store
        .create_api_key(
            &PrincipalRow {
                iam_id: iam_id.clone(),
                name: name.to_string(),
                created_at: now,
            },
            &ApiKeyRow {
                id: id.clone(),
                iam_id: iam_id.clone(),
                name: name.to_string(),
                created_at: now,
            },
            &key.hash,
        )
        .await?;
    store
        .grant(&GrantRow {
            instance_id: instance,
            iam_id: iam_id.clone(),
            role,
            created_at: now,
        })
        .await?;
    Ok(CreatedApiKey {
        apikey: key.secret,
        id,
        iam_id,
        instance,
        role,
        name: name.to_string(),
    })
}

pub async fn grant(
    store: &dyn Store,
    instance: InstanceId,
    iam_id: &str,
    role: Role,
    now: i64,
) -> ServiceResult<()> {
    if store.get_instance(instance).await?.is_none() {
        return Err(ServiceError::new(
            ErrorCode::NotFound,
            format!("no instance {instance}"),
        ));
    }
    if !store.principal_exists(iam_id).await? {
        return Err(ServiceError::new(
            ErrorCode::NotFound,
            format!("no principal {iam_id}"),
        ));
    }
    store
        .grant(&GrantRow {
            instance_id: instance,
            iam_id: iam_id.to_string(),
            role,
            created_at: now,
        })
        .await?;
    Ok(())
}

pub async fn delete_instance(store: &dyn Store, id: InstanceId) -> ServiceResult<()> {
    match store.delete_instance(id).await {
        Ok(()) => Ok(()),
        Err(StoreError::NotFound) => Err(ServiceError::new(
            ErrorCode::NotFound,
            format!("no instance {id}"),
        )),
        Err(StoreError::Conflict(c)) => Err(ServiceError::new(
            ErrorCode::KeyActionInvalidState,
            c.as_str(),
        )),
        Err(e) => Err(e.into()),
    }
}

/// On first start (no instance at all): a `default` instance and a Manager API key.
pub async fn bootstrap(store: &dyn Store, now: i64) -> ServiceResult<Option<CreatedApiKey>> {
    if !store.list_instances().await?.is_empty() {
        return Ok(None);
    }
    // Several nodes may start at once on an empty database: only the one whose claim is
    // stored bootstraps. (The claim holds no secret; an empty master-key id keeps it out of
    // the sealed-row accounting.)
    if !store
        .put_secret_if_absent("bootstrap-claim", &[], "", now)
        .await?
    {
        return Ok(None);
    }
    let inst = create_instance(store, "default", now).await?;
    let key = create_api_key(store, inst.id, Role::Manager, "default-admin", None, now).await?;
    Ok(Some(key))
}

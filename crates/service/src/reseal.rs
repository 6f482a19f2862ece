//! Re-sealing: moving every sealed row from the master keys that sealed it to another one
//! (master key rotation, and moving the master key into an HSM).
//!
//! What must hold:
//! - A row is rewritten only with the value it held when it was read (compare-and-swap on the
//!   sealed bytes and their master key id), so a row changed meanwhile by a running node is
//!   never overwritten with stale contents; it is picked up again by the next batch.
//! - A re-sealed value opens to exactly the bytes the old one held: each is opened and checked
//!   before anything is written, and the first row that does not open stops the run (it
//!   would otherwise be retried forever), naming the row but never its contents.
//! - The plaintext exists only in `SecretBytes` between the open and the seal.

use keyward_crypto::master::{MasterKeyProvider, SealContext};
use keyward_store::{SealedPlace, SealedRow, Store};

use crate::{ErrorCode, ServiceError, ServiceResult};

/// The seal context of a sealed row, as the service seals it.
pub fn seal_context(place: &SealedPlace) -> ServiceResult<SealContext<'_>> {
    Ok(match place {
        SealedPlace::KeyVersion {
            instance,
            key,
            version,
        } => crate::keys::version_ctx(instance, key, version),
        SealedPlace::ImportToken { instance, token } => SealContext {
            kind: "import-token",
            instance,
            object: token,
            version: "",
        },
        SealedPlace::Secret { name } if name == crate::SIGNING_KEY_NAME => SealContext {
            kind: "signing-key",
            instance: "",
            object: name,
            version: "1",
        },
        SealedPlace::Secret { name } if name == crate::rowauth::ROW_AUTH_KEY_NAME => {
            crate::rowauth::CTX
        }
        SealedPlace::Secret { name } => {
            return Err(ServiceError::new(
                ErrorCode::Internal,
                format!("the sealed secret {name:?} has no known seal context"),
            ))
        }
    })
}

/// What one batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ResealStats {
    /// Rows found under another master key.
    pub found: usize,
    /// Rows rewritten under the target key.
    pub resealed: usize,
    /// Rows that changed (or went away) between the read and the write; left for a later batch.
    pub raced: usize,
}

/// Re-seals up to `limit` rows not yet under `master.key_id()`. `master` must open every key
/// the rows name (a keyring) and seal under the target key.
pub async fn reseal_batch(
    store: &dyn Store,
    master: &dyn MasterKeyProvider,
    limit: i64,
) -> ServiceResult<ResealStats> {
    let target = master.key_id().to_string();
    let rows = store.sealed_batch(&target, limit).await?;
    let mut stats = ResealStats {
        found: rows.len(),
        ..ResealStats::default()
    };
    for row in rows {
        let sealed = reseal_one(master, &row)?;
        if store.reseal(&row, &sealed, &target).await? {
            stats.resealed += 1;
        } else {
            stats.raced += 1;
        }
    }
    Ok(stats)
}

fn reseal_one(master: &dyn MasterKeyProvider, row: &SealedRow) -> ServiceResult<Vec<u8>> {
    let ctx = seal_context(&row.place)?;
    let unopenable = || {
        ServiceError::new(
            ErrorCode::Internal,
            format!(
                "{} does not open under master key {:?}: is that key's generation present?",
                describe(&row.place),
                row.master_key_id
            ),
        )
    };
    let plain = master
        .open_as(&row.master_key_id, &ctx, &row.sealed)
        .map_err(|_| unopenable())?;
    let sealed = master.seal(&ctx, plain.expose())?;
    let check = master.open_as(master.key_id(), &ctx, &sealed)?;
    if !keyward_crypto::ct_eq(check.expose(), plain.expose()) {
        return Err(ServiceError::new(
            ErrorCode::Internal,
            "a re-sealed value did not open to its contents",
        ));
    }
    Ok(sealed)
}

fn describe(place: &SealedPlace) -> String {
    match place {
        SealedPlace::KeyVersion {
            instance,
            key,
            version,
        } => format!("version {version} of key {key} (instance {instance})"),
        SealedPlace::ImportToken { instance, token } => {
            format!("import token {token} (instance {instance})")
        }
        SealedPlace::Secret { name } => format!("service secret {name:?}"),
    }
}

//! The row-authentication key: a random 256-bit HMAC key, sealed under the master key in the
//! `secrets` table, opened at start and installed into the store, which then tags every row
//! it writes to an authenticated table and checks every row it reads
//! (`crates/store/src/rowtag.rs`, `docs/threat-model.md`).
//!
//! The sealed value is the key followed by `upgrade_until` (Unix seconds, big-endian): until
//! then, rows without a tag are accepted, and tagged by the upgrade. A database created by this
//! Keyward gets 0 (never); one written by an older Keyward is upgraded once, in place:
//! - the first node to start creates the key with `upgrade_until` = forever, tags every row
//!   (resumable: a node that starts while the upgrade is unfinished carries on), then stores
//!   `upgrade_until` = now + the grace period (`--row-auth-upgrade-grace`);
//! - during the grace period every node re-tags untagged rows every few seconds, so older nodes
//!   still running in a rolling upgrade of a cluster keep working; after it, an untagged row is
//!   refused like a mistagged one.
//!
//! A database whose rows carry tags but which has no row-authentication key has been tampered
//! with (or restored from a partial copy): the service refuses to start on it.

use std::sync::Arc;
use std::time::Duration;

use keyward_crypto::master::{MasterKeyProvider, SealContext};
use keyward_crypto::rowauth::RowAuthKey;
use keyward_crypto::{random_secret, SecretBytes};
use keyward_domain::Clock;
use keyward_store::{RowAuth, Store};

use crate::{ErrorCode, ServiceError, ServiceResult};

/// Name of the sealed row-authentication key in the `secrets` table.
pub const ROW_AUTH_KEY_NAME: &str = "row-auth-key";
/// Rows tagged per store call during the upgrade.
const UPGRADE_BATCH: i64 = 500;

/// The seal context of the row-authentication key (re-sealing uses it too).
pub const CTX: SealContext<'static> = SealContext {
    kind: "row-auth-key",
    instance: "",
    object: ROW_AUTH_KEY_NAME,
    version: "1",
};

/// The store's [`RowAuth`]: the opened key and how long untagged rows are still accepted.
pub struct RowAuthenticator {
    key: Arc<RowAuthKey>,
    upgrade_until: i64,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for RowAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowAuthenticator")
            .field("upgrade_until", &self.upgrade_until)
            .finish_non_exhaustive()
    }
}

impl RowAuth for RowAuthenticator {
    fn tag(&self, input: &[u8]) -> Vec<u8> {
        self.key.tag(input)
    }

    fn verify(&self, input: &[u8], tag: &[u8]) -> bool {
        self.key.verify(input, tag)
    }

    fn accept_untagged(&self) -> bool {
        self.clock.now_unix() < self.upgrade_until
    }
}

impl RowAuthenticator {
    /// Whether the upgrade's grace period is still running (untagged rows accepted).
    pub fn upgrading(&self) -> bool {
        self.accept_untagged()
    }
}

/// What [`init`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowAuthInit {
    /// Rows tagged by this start (the upgrade of a database written by an older Keyward).
    pub tagged: u64,
    /// Until when untagged rows are accepted (0: never).
    pub upgrade_until: i64,
}

fn encode(key: &SecretBytes, upgrade_until: i64) -> SecretBytes {
    let mut v = zeroize::Zeroizing::new(Vec::with_capacity(40));
    v.extend_from_slice(key.expose());
    v.extend_from_slice(&upgrade_until.to_be_bytes());
    SecretBytes::copy_from(&v)
}

/// The key bytes and `upgrade_until` of an opened row-authentication key.
fn decode(plain: &SecretBytes) -> ServiceResult<(SecretBytes, i64)> {
    let b = plain.expose();
    match (b.get(..32), b.get(32..)) {
        (Some(k), Some(u)) if u.len() == 8 => {
            let mut until = [0u8; 8];
            until.copy_from_slice(u);
            Ok((SecretBytes::copy_from(k), i64::from_be_bytes(until)))
        }
        _ => Err(unopenable()),
    }
}

fn unopenable() -> ServiceError {
    ServiceError::new(
        ErrorCode::Internal,
        "the master key does not open this database's row-authentication key",
    )
}

async fn store_key(
    store: &dyn Store,
    master: &dyn MasterKeyProvider,
    key: &SecretBytes,
    upgrade_until: i64,
    now: i64,
    replace: bool,
) -> ServiceResult<()> {
    let sealed = master.seal(&CTX, encode(key, upgrade_until).expose())?;
    if replace {
        store
            .put_secret(ROW_AUTH_KEY_NAME, &sealed, master.key_id(), now)
            .await?;
    } else {
        store
            .put_secret_if_absent(ROW_AUTH_KEY_NAME, &sealed, master.key_id(), now)
            .await?;
    }
    Ok(())
}

/// Tags every untagged row, in batches; returns how many.
pub async fn tag_all(store: &dyn Store) -> ServiceResult<u64> {
    let mut total = 0;
    loop {
        let n = store.tag_untagged(UPGRADE_BATCH).await?;
        total += n;
        if n < u64::try_from(UPGRADE_BATCH).unwrap_or(u64::MAX) {
            return Ok(total);
        }
    }
}

/// Loads the row-authentication key (creating it on a new database, upgrading a database
/// written before row authentication) and installs it into `store`. `grace` is how long after
/// an upgrade untagged rows written by older nodes are still accepted and tagged.
pub async fn init(
    store: &dyn Store,
    master: &dyn MasterKeyProvider,
    clock: Arc<dyn Clock>,
    grace: Duration,
) -> ServiceResult<(Arc<RowAuthenticator>, RowAuthInit)> {
    let now = clock.now_unix();
    if store.get_secret(ROW_AUTH_KEY_NAME).await?.is_none() {
        let state = store.row_auth_state().await?;
        if state.tagged {
            return Err(ServiceError::new(
                ErrorCode::Internal,
                "the database's rows carry authentication tags, but its row-authentication key \
                 is missing: the database has been tampered with or restored incompletely; \
                 refusing to serve from it",
            ));
        }
        // A new database never accepts untagged rows; an old one accepts them until its
        // upgrade below has finished.
        let until = if state.untagged { i64::MAX } else { 0 };
        store_key(store, master, &random_secret(32)?, until, now, false).await?;
    }
    // Another node may have won the race to create it: everyone uses the stored one.
    let (sealed, mk) = store
        .get_secret(ROW_AUTH_KEY_NAME)
        .await?
        .ok_or_else(unopenable)?;
    let plain = master
        .open_as(&mk, &CTX, &sealed)
        .map_err(|_| unopenable())?;
    let (key_bytes, mut upgrade_until) = decode(&plain)?;
    let key = Arc::new(RowAuthKey::from_secret(&key_bytes)?);
    let auth = |until| {
        Arc::new(RowAuthenticator {
            key: key.clone(),
            upgrade_until: until,
            clock: clock.clone(),
        })
    };
    let mut tagged = 0;
    if now < upgrade_until {
        store.install_row_auth(auth(upgrade_until));
        tracing::warn!(
            "upgrading the database to authenticated rows (it was written by a Keyward without \
             row authentication, or an earlier upgrade did not finish): tagging its rows"
        );
        tagged = tag_all(store).await?;
        if upgrade_until == i64::MAX {
            upgrade_until = now.saturating_add(i64::try_from(grace.as_secs()).unwrap_or(0));
            store_key(store, master, &key_bytes, upgrade_until, now, true).await?;
        }
        tracing::warn!(
            rows = tagged,
            upgrade_until,
            "row authentication enabled for {tagged} existing rows; on a deployment that \
             finished this upgrade before, this line means the database was tampered with"
        );
    }
    let a = auth(upgrade_until);
    store.install_row_auth(a.clone());
    Ok((
        a,
        RowAuthInit {
            tagged,
            upgrade_until,
        },
    ))
}

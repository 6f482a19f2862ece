//! Keyward's business logic: keys and their lifecycle, envelope encryption, import tokens,
//! callers and their roles. Knows nothing of HTTP.
//!
//! What must hold:
//! - Every public operation that acts for a caller takes a [`Caller`] and checks its role for
//!   the [`Action`] first (one table: [`Action::required_role`]).
//! - Plaintext material exists only in `SecretBytes`, is sealed before it reaches the store,
//!   and is opened only to be used (opened versions may sit in the bounded [`cache`]).
//! - A rejected request changes nothing: validation and cryptographic checks run before any
//!   write, and each write is one store call (one transaction).
//! - All time comes from the injected [`Clock`].
//!
//! Modules: [`keys`] (create/import/read/list/delete/rotate), [`envelope`] (wrap/unwrap/
//! rewrap), [`tokens`] (import tokens and the keypair pool), [`admin`] (instances, API keys,
//! grants, first-start bootstrap), [`cache`] (keys and roles).

use std::sync::Arc;
use std::time::Duration;

use keyward_auth::{hash_api_key, Claims, IssuedToken, TokenAuthority};
use keyward_crypto::master::{MasterKeyProvider, SealContext};
use keyward_crypto::{random_secret, SecretBytes};
use keyward_domain::{Action, Clock, InstanceId, Role};
use keyward_store::Store;

pub mod admin;
pub mod audit;
pub mod cache;
pub mod counters;
pub mod envelope;
mod error;
pub mod keys;
pub mod lifecycle;
pub mod listing;
pub mod policies;
pub mod reseal;
pub mod rings;
pub mod tokens;

pub use error::{ErrorCode, ServiceError, ServiceResult, Target};

/// Tunables of the service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Pre-generated RSA-4096 import-token keypairs kept ready (0 disables the pool).
    pub token_pool_size: usize,
    /// How long a node trusts its cached copy of a key it did not change itself.
    pub key_cache_ttl: Duration,
    /// How long a caller's roles are cached.
    pub role_cache_ttl: Duration,
    /// How long "this API key still exists" is cached: the bound on how long a token minted
    /// from a deleted API key keeps working on a node.
    pub api_key_cache_ttl: Duration,
    /// Failed secure imports after which an import token is locked (0: no limit).
    pub max_failed_imports: i64,
    /// Region and account shown in CRNs.
    pub region: String,
    pub account: String,
    /// Where audit records go (None: no audit log).
    pub audit: Option<Arc<dyn audit::AuditSink>>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            token_pool_size: 4,
            key_cache_ttl: Duration::from_secs(1),
            role_cache_ttl: Duration::from_secs(1),
            api_key_cache_ttl: Duration::from_secs(1),
            max_failed_imports: tokens::MAX_FAILED_IMPORTS,
            region: "local".into(),
            account: "keyward".into(),
            audit: None,
        }
    }
}

/// Who is calling, in which instance, with which roles there.
#[derive(Debug, Clone)]
pub struct Caller {
    pub iam_id: String,
    pub instance: InstanceId,
    pub roles: Arc<[Role]>,
    /// Request id, correlation id, source address (for the audit log).
    pub meta: audit::RequestMeta,
}

impl Caller {
    pub fn can(&self, action: Action) -> bool {
        let need = action.required_role();
        self.roles.iter().any(|r| r.covers(need))
    }

    /// `Forbidden` unless one of the caller's roles permits `action`.
    pub fn require(&self, action: Action) -> ServiceResult<()> {
        if self.can(action) {
            Ok(())
        } else {
            Err(ServiceError::forbidden())
        }
    }
}

/// The service. One per process; shared behind an `Arc`.
pub struct KeyService {
    pub(crate) store: Arc<dyn Store>,
    /// The master keyring; swapped whole when a node loads a new master key generation.
    master: parking_lot::RwLock<Arc<dyn MasterKeyProvider>>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) tokens: TokenAuthority,
    pub(crate) pool: Arc<tokens::KeypairPool>,
    pub(crate) keys: cache::KeyCache,
    pub(crate) roles: cache::RoleCache,
    pub(crate) api_keys: cache::ApiKeyCache,
    pub(crate) token_keys: tokens::TokenKeyCache,
    pub(crate) policies: policies::PolicyCache,
    pub(crate) audit: Option<Arc<dyn audit::AuditSink>>,
    pub(crate) cfg: ServiceConfig,
    pub(crate) counters: Arc<counters::CryptoCounters>,
}

impl std::fmt::Debug for KeyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyService")
            .field("store", &self.store)
            .field("master", &*self.master.read())
            .finish_non_exhaustive()
    }
}

pub(crate) const SIGNING_KEY_NAME: &str = "token-signing-key";

impl KeyService {
    /// Builds the service: loads (or creates, on first start) the sealed token-signing key and
    /// starts the keypair pool filler. Must run inside a Tokio runtime.
    pub async fn new(
        store: Arc<dyn Store>,
        master: Arc<dyn MasterKeyProvider>,
        clock: Arc<dyn Clock>,
        cfg: ServiceConfig,
    ) -> ServiceResult<Self> {
        let signing = load_signing_key(&*store, &*master, clock.now_unix()).await?;
        let counters = Arc::new(counters::CryptoCounters::default());
        let pool = tokens::KeypairPool::start(cfg.token_pool_size, counters.clone());
        Ok(Self {
            keys: cache::KeyCache::new(cfg.key_cache_ttl),
            roles: cache::RoleCache::new(cfg.role_cache_ttl),
            api_keys: cache::ApiKeyCache::new(cfg.api_key_cache_ttl),
            token_keys: tokens::TokenKeyCache::default(),
            policies: policies::PolicyCache::new(cfg.role_cache_ttl),
            audit: cfg.audit.clone(),
            tokens: TokenAuthority::new(signing),
            pool,
            store,
            master: parking_lot::RwLock::new(master),
            clock,
            cfg,
            counters,
        })
    }

    /// The master key provider in use (a keyring: it seals with one key and opens rows under
    /// any of its members).
    pub fn master(&self) -> Arc<dyn MasterKeyProvider> {
        self.master.read().clone()
    }

    /// Replaces the master key provider (after a new generation was found, or the database
    /// chose another sealing key). Rows sealed under keys the new provider lacks stop opening.
    pub fn set_master(&self, master: Arc<dyn MasterKeyProvider>) {
        *self.master.write() = master;
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Readiness: the store answers (the service exists only when unsealed).
    pub async fn ready(&self) -> ServiceResult<()> {
        self.store.get_instance(InstanceId::new()).await?;
        Ok(())
    }

    /// Counts of cryptographic operations so far.
    pub fn crypto_counters(&self) -> &counters::CryptoCounters {
        &self.counters
    }

    /// Keypairs ready in the import-token pool.
    pub fn pool_depth(&self) -> usize {
        self.pool.depth()
    }

    /// The IAM token exchange: an API key for an access token.
    pub async fn exchange_api_key(&self, apikey: &str) -> ServiceResult<IssuedToken> {
        let hash = hash_api_key(apikey);
        let row = self.store.find_api_key(&hash).await?.ok_or_else(|| {
            ServiceError::new(ErrorCode::BadBody, "Provided API key could not be found")
        })?;
        self.tokens
            .issue(&row.iam_id, &row.id, self.clock.now_unix())
            .map_err(ServiceError::internal)
    }

    /// Verifies a bearer token and that the API key it was minted from still exists (cached
    /// for `api_key_cache_ttl`); every failure is the one 401.
    async fn verified_claims(&self, bearer: &str) -> ServiceResult<Arc<Claims>> {
        let claims = self
            .tokens
            .verify(bearer, self.clock.now_unix())
            .map_err(|_| ServiceError::unauthorized())?;
        let exists = match self.api_keys.get(&claims.api_key_id) {
            Some(e) => e,
            None => {
                let asked = std::time::Instant::now();
                let e = self.store.api_key_exists(&claims.api_key_id).await?;
                self.api_keys.put(&claims.api_key_id, e, asked);
                e
            }
        };
        if exists {
            Ok(claims)
        } else {
            Err(ServiceError::unauthorized())
        }
    }

    /// Verifies a bearer token and loads the caller's roles in `instance`.
    pub async fn authenticate(
        &self,
        bearer: &str,
        instance: InstanceId,
        meta: audit::RequestMeta,
    ) -> ServiceResult<Caller> {
        let claims = self.verified_claims(bearer).await?;
        let roles = match self.roles.get(instance, &claims.iam_id) {
            Some(r) => r,
            None => {
                let r: Arc<[Role]> = self.store.roles_of(instance, &claims.iam_id).await?.into();
                self.roles.put(instance, &claims.iam_id, r.clone());
                r
            }
        };
        if !roles.is_empty() && !self.ip_allowed(instance, meta.source).await? {
            return Err(ServiceError::new(
                ErrorCode::Unauthorized,
                "The instance's allowedIP policy does not allow requests from this address",
            ));
        }
        Ok(Caller {
            iam_id: claims.iam_id.clone(),
            instance,
            roles,
            meta,
        })
    }

    /// Verifies a bearer token only (no instance): for endpoints that need a valid caller.
    pub async fn verify_token(&self, bearer: &str) -> ServiceResult<String> {
        Ok(self.verified_claims(bearer).await?.iam_id.clone())
    }

    pub(crate) fn now(&self) -> i64 {
        self.clock.now_unix()
    }
}

async fn load_signing_key(
    store: &dyn Store,
    master: &dyn MasterKeyProvider,
    now: i64,
) -> ServiceResult<SecretBytes> {
    let ctx = SealContext {
        kind: "signing-key",
        instance: "",
        object: SIGNING_KEY_NAME,
        version: "1",
    };
    if store.get_secret(SIGNING_KEY_NAME).await?.is_none() {
        let fresh = random_secret(32)?;
        let sealed = master.seal(&ctx, fresh.expose())?;
        // Another node may win the race; everyone then uses the stored one.
        store
            .put_secret_if_absent(SIGNING_KEY_NAME, &sealed, master.key_id(), now)
            .await?;
    }
    let (sealed, mk) = store
        .get_secret(SIGNING_KEY_NAME)
        .await?
        .ok_or_else(|| ServiceError::new(ErrorCode::Internal, "signing key missing"))?;
    master.open_as(&mk, &ctx, &sealed).map_err(|_| {
        ServiceError::new(
            ErrorCode::Internal,
            "the master key does not open this database's rows",
        )
    })
}

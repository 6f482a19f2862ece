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
pub mod keyrow;
pub mod keys;
pub mod kmip;
pub mod lifecycle;
pub mod listing;
pub mod permit;
pub mod policies;
pub mod reseal;
pub mod rings;
pub mod rowauth;
pub mod tokens;
pub mod usage;

pub use error::{ErrorCode, ServiceError, ServiceResult, Target};
/// Stored rows refused per table because their integrity tag did not verify (for metrics).
pub use keyward_store::row_integrity_failures;
/// Database errors, failovers and outages (for metrics and the log of 5xx answers).
pub use keyward_store::{
    database_error_detail, database_health, is_store_unavailable, DatabaseHealth,
};

/// Tunables of the service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Pre-generated RSA-4096 import-token keypairs kept ready (0 disables the pool).
    pub token_pool_size: usize,
    /// How long a node trusts its cached copy of a key it did not change itself.
    pub key_cache_ttl: Duration,
    /// How long a caller's roles are cached.
    pub role_cache_ttl: Duration,
    /// Most entries in each cache (keys, roles, policies, verified tokens; import-token keys
    /// at most [`tokens::TOKEN_KEY_ENTRIES`]).
    pub cache_entries: usize,
    /// Most entries in the key cache (opened key material: about 1 KiB each).
    pub key_cache_entries: usize,
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
    /// After upgrading a database written before row authentication, how long untagged rows
    /// (written by older nodes still running) are accepted and tagged ([`rowauth`]).
    pub row_auth_upgrade_grace: Duration,
    /// How often recorded key usage is written to the store: the staleness bound of
    /// last-used dates across nodes (zero: usage is not tracked).
    pub usage_flush_interval: Duration,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            token_pool_size: 4,
            key_cache_ttl: Duration::from_secs(1),
            role_cache_ttl: Duration::from_secs(1),
            cache_entries: cache::DEFAULT_ENTRIES,
            key_cache_entries: cache::DEFAULT_KEY_ENTRIES,
            api_key_cache_ttl: Duration::from_secs(1),
            max_failed_imports: tokens::MAX_FAILED_IMPORTS,
            region: "local".into(),
            account: "keyward".into(),
            audit: None,
            row_auth_upgrade_grace: Duration::ZERO,
            usage_flush_interval: usage::DEFAULT_FLUSH,
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

    /// `Forbidden` unless one of the caller's roles permits `action`; the [`permit::Permit`]
    /// it returns is what the calls that reach a key in the store require.
    pub fn require(&self, action: Action) -> ServiceResult<permit::Permit> {
        permit::check(self, action)
    }
}

/// The service. One per process; shared behind an `Arc`.
pub struct KeyService {
    pub(crate) store: Arc<dyn Store>,
    /// The master keyring; swapped whole when a node loads a new master key generation.
    master: parking_lot::RwLock<Arc<dyn MasterKeyProvider>>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) tokens: Arc<TokenAuthority>,
    pub(crate) pool: Arc<tokens::KeypairPool>,
    pub(crate) keys: Arc<cache::KeyCache>,
    pub(crate) roles: Arc<cache::RoleCache>,
    pub(crate) api_keys: Arc<cache::ApiKeyCache>,
    pub(crate) token_keys: Arc<tokens::TokenKeyCache>,
    pub(crate) policies: Arc<policies::PolicyCache>,
    pub(crate) audit: Option<Arc<dyn audit::AuditSink>>,
    pub(crate) cfg: ServiceConfig,
    pub(crate) counters: Arc<counters::CryptoCounters>,
    pub(crate) usage: Arc<usage::UsageTracker>,
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
    /// starts the keypair pool filler and the cache sweeper. Must run inside a Tokio runtime.
    pub async fn new(
        store: Arc<dyn Store>,
        master: Arc<dyn MasterKeyProvider>,
        clock: Arc<dyn Clock>,
        cfg: ServiceConfig,
    ) -> ServiceResult<Self> {
        let (row_auth, _) =
            rowauth::init(&*store, &*master, clock.clone(), cfg.row_auth_upgrade_grace).await?;
        if row_auth.upgrading() {
            spawn_upgrade_tagger(store.clone(), row_auth);
        }
        let signing = load_signing_key(&*store, &*master, clock.now_unix()).await?;
        let counters = Arc::new(counters::CryptoCounters::default());
        let pool = tokens::KeypairPool::start(cfg.token_pool_size, counters.clone());
        let n = cfg.cache_entries;
        let keys = Arc::new(cache::KeyCache::new(
            cfg.key_cache_ttl,
            cfg.key_cache_entries,
        ));
        let roles = Arc::new(cache::RoleCache::new(cfg.role_cache_ttl, n));
        let api_keys = Arc::new(cache::ApiKeyCache::new(cfg.api_key_cache_ttl, n));
        let token_keys = Arc::new(tokens::TokenKeyCache::new(n));
        let policies = Arc::new(policies::PolicyCache::new(cfg.role_cache_ttl, n));
        let tokens = Arc::new(TokenAuthority::with_capacity(signing, n));
        let usage = Arc::new(usage::UsageTracker::new(
            !cfg.usage_flush_interval.is_zero(),
        ));
        usage.start(store.clone(), cfg.usage_flush_interval);
        Sweeper {
            keys: Arc::downgrade(&keys),
            roles: Arc::downgrade(&roles),
            api_keys: Arc::downgrade(&api_keys),
            token_keys: Arc::downgrade(&token_keys),
            policies: Arc::downgrade(&policies),
            tokens: Arc::downgrade(&tokens),
            clock: clock.clone(),
        }
        .start(sweep_interval(cfg.key_cache_ttl));
        Ok(Self {
            keys,
            roles,
            api_keys,
            token_keys,
            policies,
            audit: cfg.audit.clone(),
            tokens,
            pool,
            store,
            master: parking_lot::RwLock::new(master),
            clock,
            cfg,
            counters,
            usage,
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

    /// Size, bound and hit counts of each cache (for `/metrics`).
    pub fn cache_stats(&self) -> Vec<keyward_domain::bounded::CacheStats> {
        vec![
            self.keys.stats(),
            self.roles.stats(),
            self.api_keys.stats(),
            self.policies.stats(),
            self.tokens.cache_stats(),
            self.token_keys.stats(),
        ]
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
            .issue(
                &row.iam_id,
                &row.id,
                &self.cfg.account,
                self.clock.now_unix(),
            )
            .map_err(ServiceError::internal)
    }

    /// The IAM `refresh_token` grant: a refresh token for a new access token (and refresh
    /// token), while the API key it is bound to still exists. The API key is looked up in the
    /// store, not the cache, so a deleted key's refresh tokens stop at once.
    pub async fn refresh_token(&self, refresh: &str) -> ServiceResult<IssuedToken> {
        let bad = || ServiceError::new(ErrorCode::BadBody, "Provided refresh token is invalid");
        let claims = self
            .tokens
            .verify_refresh(refresh, self.clock.now_unix())
            .map_err(|_| bad())?;
        if !self.store.api_key_exists(&claims.api_key_id).await? {
            return Err(bad());
        }
        self.tokens
            .issue(
                &claims.iam_id,
                &claims.api_key_id,
                &self.cfg.account,
                self.clock.now_unix(),
            )
            .map_err(ServiceError::internal)
    }

    /// Region and account shown in CRNs.
    pub fn crn_scope(&self) -> (&str, &str) {
        (&self.cfg.region, &self.cfg.account)
    }

    /// The CRN of an instance: a key's CRN up to its instance, then `::` (as Key Protect's
    /// instance CRNs end).
    pub fn instance_crn(&self, instance: InstanceId) -> String {
        format!(
            "crn:v1:keyward:private:kms:{}:a/{}:{}::",
            self.cfg.region, self.cfg.account, instance
        )
    }

    /// The caller's instance (the Resource Controller's view of it), for a caller with any
    /// role there; 403 otherwise.
    pub async fn instance_info(
        &self,
        caller: &Caller,
    ) -> ServiceResult<keyward_domain::rows::InstanceRow> {
        caller.require(keyward_domain::Action::ListKeys)?;
        self.store
            .get_instance(caller.instance)
            .await?
            .ok_or_else(ServiceError::forbidden)
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

/// During the grace period of a row-authentication upgrade, tags rows written meanwhile by
/// nodes that do not tag yet, every few seconds, until the period ends.
fn spawn_upgrade_tagger(store: Arc<dyn Store>, auth: Arc<rowauth::RowAuthenticator>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        while auth.upgrading() {
            tick.tick().await;
            match rowauth::tag_all(&*store).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    rows = n,
                    "tagged rows written by nodes without row authentication"
                ),
                Err(e) => tracing::warn!(code = e.code.as_str(), "tagging untagged rows failed"),
            }
        }
    });
}

/// How often expired cache entries are removed: half the key cache's TTL, between 100 ms and
/// 1 s, so opened material outlives its TTL by at most that much.
fn sweep_interval(key_ttl: Duration) -> Duration {
    (key_ttl / 2).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

/// Sweeps of the caches that hold no material run this many ticks apart.
const SLOW_SWEEP_TICKS: u64 = 30;

/// The background task that removes expired cache entries: every tick the caches holding
/// opened material (key versions, import-token private keys), every [`SLOW_SWEEP_TICKS`]
/// ticks the others. It ends when the service is dropped.
struct Sweeper {
    keys: std::sync::Weak<cache::KeyCache>,
    roles: std::sync::Weak<cache::RoleCache>,
    api_keys: std::sync::Weak<cache::ApiKeyCache>,
    token_keys: std::sync::Weak<tokens::TokenKeyCache>,
    policies: std::sync::Weak<policies::PolicyCache>,
    tokens: std::sync::Weak<TokenAuthority>,
    clock: Arc<dyn Clock>,
}

impl Sweeper {
    fn start(self, every: Duration) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n: u64 = 0;
            loop {
                tick.tick().await;
                n += 1;
                let (Some(keys), Some(token_keys)) =
                    (self.keys.upgrade(), self.token_keys.upgrade())
                else {
                    return;
                };
                let now = self.clock.now_unix();
                keys.sweep();
                token_keys.sweep(now);
                if n % SLOW_SWEEP_TICKS == 0 {
                    if let Some(r) = self.roles.upgrade() {
                        r.sweep();
                    }
                    if let Some(a) = self.api_keys.upgrade() {
                        a.sweep();
                    }
                    if let Some(p) = self.policies.upgrade() {
                        p.sweep();
                    }
                    if let Some(t) = self.tokens.upgrade() {
                        t.sweep(now);
                    }
                }
            }
        });
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

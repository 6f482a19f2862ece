//! Import tokens: one per instance, an RSA-4096 keypair and a 12-byte nonce, with a lifetime
//! and a number of retrievals.
//!
//! - Creating a token takes a keypair from [`KeypairPool`] (filled in the background on
//!   blocking threads; an empty pool generates inline) and replaces the instance's token in one
//!   upsert, so the old keypair and nonce stop working at that instant.
//! - A retrieval is one conditional `UPDATE … RETURNING` in the store: exact under any
//!   concurrency and any number of nodes.
//! - A secure import is verified in Key Protect's order (token present and unexpired → OAEP →
//!   AES-GCM nonce → constant-time nonce compare), and the key insert is guarded by the token id
//!   so an import verified against a token that was replaced meanwhile is not stored.
//! - Failed secure imports are counted per token in the database (one conditional `UPDATE` on
//!   the token's row, so the count is exact across nodes). After `max_failed_imports`
//!   ([`MAX_FAILED_IMPORTS`] by default) the token is locked: further secure imports with it answer 409 `IMPORT_TOKEN_EXPIRED_ERR`,
//!   before any RSA work, until a new token is created. Every failure kind (RSA-OAEP, nonce/IV,
//!   nonce mismatch) is counted by the same call at the same point, after the cryptography, so
//!   the counter adds no difference between them.

use crate::counters::CryptoCounters;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use keyward_crypto::import::{
    verify_token_import, ImportError, ImportKeyPair, MaterialEncryption, TokenKeyPair,
};
use keyward_crypto::master::SealContext;
use keyward_crypto::pq;
use keyward_crypto::{random_bytes, CryptoError, SecretBytes};
use keyward_domain::bounded::{BoundedCache, CacheStats};
use keyward_domain::{Action, InstanceId, TokenId};
use keyward_store::{TokenGuard, TokenRow};
use parking_lot::Mutex;
use tokio::sync::{Notify, Semaphore};

use crate::{Caller, ErrorCode, KeyService, ServiceError, ServiceResult};

pub const MIN_EXPIRATION: i64 = 300;
pub const MAX_EXPIRATION: i64 = 86_400;
pub const DEFAULT_EXPIRATION: i64 = 600;
pub const MIN_RETRIEVALS: i64 = 1;
pub const MAX_RETRIEVALS: i64 = 500;
pub const DEFAULT_RETRIEVALS: i64 = 1;

/// Failed secure imports after which an import token is locked, by default
/// (`--import-failure-limit`; `docs/import-tokens.md`).
pub const MAX_FAILED_IMPORTS: i64 = 10;

/// The one message for every RSA-OAEP failure (docs/import-tokens.md: the same bytes in every case).
pub const OAEP_FAILURE_MESSAGE: &str =
    "The field `payload` must be: the key material encrypted with the import token's public key";

/// How the pool makes a keypair (a parameter only so tests can hold a generation open).
pub type Generate = Arc<dyn Fn() -> Result<ImportKeyPair, CryptoError> + Send + Sync>;

/// How long a creation waits for an inline key generation slot before it is refused (503).
pub const INLINE_WAIT: Duration = Duration::from_secs(10);
/// `Retry-After` of that refusal, in seconds.
pub const INLINE_RETRY_AFTER: u64 = 5;

/// A bounded queue of ready RSA-4096 keypairs. Memory: about 3 KiB per keypair; CPU: about one
/// second of one core per keypair, spent on blocking threads in the background.
///
/// When the queue is empty a creation generates its keypair inline, through a semaphore of
/// `concurrency` permits (default: the number of cores), so a burst of creations cannot take
/// every blocking thread or every core. At most `max_waiting` creations wait for a permit, each
/// at most [`INLINE_WAIT`]; past either bound the creation is refused at once with 503
/// `SERVICE_UNAVAILABLE_ERR` and `Retry-After` ([`INLINE_RETRY_AFTER`]). A generation already
/// started finishes (it holds its permit) even if its caller went away.
pub struct KeypairPool {
    target: usize,
    ready: Mutex<VecDeque<ImportKeyPair>>,
    wake: Arc<Notify>,
    counters: Arc<CryptoCounters>,
    inline: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
    generate: Generate,
}

/// Counts a waiter for as long as it waits (also when its request is dropped).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn keygen_busy() -> ServiceError {
    ServiceError::new(
        ErrorCode::Unavailable,
        "Import-token key generation is at capacity; retry later",
    )
}

impl KeypairPool {
    /// Creates the pool and, if `target > 0`, a background task that keeps it full. Inline
    /// generation gets one permit per core and four waiters per permit.
    pub fn start(target: usize, counters: Arc<CryptoCounters>) -> Arc<Self> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::start_with(
            target,
            counters,
            cores,
            cores * 4,
            Arc::new(ImportKeyPair::generate),
        )
    }

    /// As [`KeypairPool::start`], with the inline bounds and the generator given.
    pub fn start_with(
        target: usize,
        counters: Arc<CryptoCounters>,
        concurrency: usize,
        max_waiting: usize,
        generate: Generate,
    ) -> Arc<Self> {
        let pool = Arc::new(Self {
            target,
            ready: Mutex::new(VecDeque::with_capacity(target)),
            wake: Arc::new(Notify::new()),
            counters,
            inline: Arc::new(Semaphore::new(concurrency.max(1))),
            waiting: AtomicUsize::new(0),
            max_waiting,
            generate,
        });
        if target > 0 {
            let weak = Arc::downgrade(&pool);
            tokio::spawn(async move {
                loop {
                    let Some(p) = weak.upgrade() else { return };
                    if p.depth() < p.target {
                        let generate = p.generate.clone();
                        drop(p);
                        match tokio::task::spawn_blocking(move || generate()).await {
                            Ok(Ok(kp)) => {
                                let Some(p) = weak.upgrade() else { return };
                                CryptoCounters::bump(&p.counters.rsa_keygen);
                                p.ready.lock().push_back(kp);
                            }
                            _ => {
                                tracing::error!("import-token keypair generation failed");
                                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                            }
                        }
                    } else {
                        let wake = p.wake.clone();
                        drop(p);
                        wake.notified().await;
                    }
                }
            });
        }
        pool
    }

    pub fn depth(&self) -> usize {
        self.ready.lock().len()
    }

    /// Creations waiting for an inline generation slot.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// A ready keypair, or a freshly generated one when the pool is empty (bounded, see the
    /// type's documentation).
    pub async fn take(&self) -> ServiceResult<ImportKeyPair> {
        let popped = self.ready.lock().pop_front();
        self.wake.notify_one();
        if let Some(kp) = popped {
            return Ok(kp);
        }
        let permit = match self.inline.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
                    self.waiting.fetch_sub(1, Ordering::SeqCst);
                    return Err(keygen_busy());
                }
                let _waiting = Waiting(&self.waiting);
                match tokio::time::timeout(INLINE_WAIT, self.inline.clone().acquire_owned()).await {
                    Ok(Ok(p)) => p,
                    _ => return Err(keygen_busy()),
                }
            }
        };
        // The background filler may have finished one while this caller waited.
        if let Some(kp) = self.ready.lock().pop_front() {
            return Ok(kp);
        }
        CryptoCounters::bump(&self.counters.rsa_keygen);
        let generate = self.generate.clone();
        tokio::task::spawn_blocking(move || {
            let kp = generate();
            drop(permit);
            kp
        })
        .await
        .map_err(ServiceError::internal)?
        .map_err(ServiceError::from)
    }
}

/// Most opened import-token private keys kept (one per instance with a live token).
pub const TOKEN_KEY_ENTRIES: usize = 1024;
/// An opened import-token private key is dropped at its token's expiry or this long after it
/// was opened, whichever comes first (it is reopened from the sealed row if needed again).
pub const TOKEN_KEY_MAX_AGE: Duration = Duration::from_secs(600);

struct CachedTokenKey {
    token_id: TokenId,
    keypair: Arc<TokenKeyPair>,
    /// The token's expiry (service clock, Unix seconds).
    expires_at: i64,
    opened: Instant,
}

impl CachedTokenKey {
    fn live(&self, now: i64) -> bool {
        now < self.expires_at && self.opened.elapsed() < TOKEN_KEY_MAX_AGE
    }
}

/// Opened token private keys by instance, tagged with the token id they belong to. Bounded;
/// entries leave when their token expires (the periodic sweep) or after [`TOKEN_KEY_MAX_AGE`].
pub struct TokenKeyCache {
    map: BoundedCache<InstanceId, Arc<CachedTokenKey>>,
}

impl TokenKeyCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            map: BoundedCache::new("import_token_key", capacity.min(TOKEN_KEY_ENTRIES)),
        }
    }

    fn get(&self, instance: InstanceId, token: TokenId, now: i64) -> Option<Arc<TokenKeyPair>> {
        self.map
            .get_valid(&instance, |e| e.token_id == token && e.live(now))
            .map(|e| e.keypair.clone())
    }

    fn put(&self, row: &TokenRow, keypair: Arc<TokenKeyPair>) {
        self.map.insert(
            row.instance_id,
            Arc::new(CachedTokenKey {
                token_id: row.token_id,
                keypair,
                expires_at: row.expires_at,
                opened: Instant::now(),
            }),
        );
    }

    /// Drops the keys of expired tokens (and those past [`TOKEN_KEY_MAX_AGE`]).
    pub fn sweep(&self, now: i64) {
        self.map.retain(|_, e| e.live(now));
    }

    pub fn stats(&self) -> CacheStats {
        self.map.stats()
    }
}

/// Token metadata as the API shows it.
#[derive(Debug, Clone)]
pub struct TokenInfo {
    pub created_at: i64,
    pub expires_at: i64,
    pub expiration_secs: i64,
    pub max_retrievals: i64,
    pub remaining: i64,
    /// Only on GET: base64 of the public key (of its PEM for RSA, of the raw 1216-byte
    /// encapsulation key for X-Wing), and base64 of the nonce.
    pub payload: Option<String>,
    pub nonce: Option<String>,
    /// X-Wing tokens only (a Keyward extension, absent for RSA tokens): the algorithm's wire
    /// name and the token id the client binds its encryption to.
    pub algorithm: Option<&'static str>,
    pub id: Option<String>,
}

impl TokenInfo {
    fn from_row(row: &TokenRow, with_secret_parts: bool) -> Self {
        let xwing = pq::public_key_from_pem(&row.public_pem);
        let pq_token = xwing.is_some();
        Self {
            created_at: row.created_at,
            expires_at: row.expires_at,
            expiration_secs: row.expiration_secs,
            max_retrievals: row.max_retrievals,
            remaining: row.remaining,
            payload: with_secret_parts.then(|| match &xwing {
                Some(raw) => B64.encode(raw),
                None => B64.encode(row.public_pem.as_bytes()),
            }),
            nonce: with_secret_parts.then(|| B64.encode(&row.nonce)),
            algorithm: pq_token.then_some(pq::TOKEN_ALGORITHM),
            id: pq_token.then(|| row.token_id.to_string()),
        }
    }
}

/// The fields of a secure import (create or rotate), already base64-decoded where that cannot
/// leak anything (the payload is decoded in [`KeyService::verify_secure`], so that its decode
/// failure is the uniform OAEP failure).
#[derive(Debug)]
pub struct SecureImport {
    pub payload_b64: String,
    pub encrypted_nonce: Vec<u8>,
    pub iv: Vec<u8>,
    pub encryption: MaterialEncryption,
}

/// The keypair kind of an import token (`algorithm` of `POST /import_token`, a Keyward
/// extension; `docs/import-tokens.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenAlgorithm {
    /// RSA-4096 (Key Protect's token; the default).
    #[default]
    Rsa4096,
    /// X-Wing: ML-KEM-768 + X25519 ([`pq`]).
    XWing,
}

/// The wire name of the default algorithm.
pub const RSA_TOKEN_ALGORITHM: &str = "RSA_4096";

impl TokenAlgorithm {
    /// Parses `algorithm`, exactly; absent is RSA-4096.
    pub fn from_wire(s: Option<&str>) -> ServiceResult<Self> {
        match s {
            None | Some(RSA_TOKEN_ALGORITHM) => Ok(Self::Rsa4096),
            Some(pq::TOKEN_ALGORITHM) => Ok(Self::XWing),
            Some(_) => Err(ServiceError::field(
                "algorithm",
                format!(
                    "The field `algorithm` must be: one of {RSA_TOKEN_ALGORITHM}, {}",
                    pq::TOKEN_ALGORITHM
                ),
            )),
        }
    }
}

fn token_ctx(instance: &str, token: &str) -> (String, String) {
    (instance.to_string(), token.to_string())
}

impl KeyService {
    /// `POST /import_token`: validates, then creates or replaces the instance's token.
    pub async fn create_import_token(
        &self,
        caller: &Caller,
        expiration: Option<i64>,
        max_retrievals: Option<i64>,
        algorithm: TokenAlgorithm,
    ) -> ServiceResult<TokenInfo> {
        caller.require(Action::CreateImportToken)?;
        let expiration = expiration.unwrap_or(DEFAULT_EXPIRATION);
        if !(MIN_EXPIRATION..=MAX_EXPIRATION).contains(&expiration) {
            return Err(ServiceError::field(
                "expiration",
                format!("The field `expiration` must be: an integer between {MIN_EXPIRATION} and {MAX_EXPIRATION} (inclusive)"),
            ));
        }
        let max = max_retrievals.unwrap_or(DEFAULT_RETRIEVALS);
        if !(MIN_RETRIEVALS..=MAX_RETRIEVALS).contains(&max) {
            return Err(ServiceError::field(
                "maxAllowedRetrievals",
                format!("The field `maxAllowedRetrievals` must be: an integer between {MIN_RETRIEVALS} and {MAX_RETRIEVALS} (inclusive)"),
            ));
        }
        let keypair = match algorithm {
            TokenAlgorithm::Rsa4096 => TokenKeyPair::Rsa(self.pool.take().await?),
            // Microseconds: no pool, no blocking thread.
            TokenAlgorithm::XWing => TokenKeyPair::XWing(Box::new(pq::XWingKeyPair::generate()?)),
        };
        let token_id = TokenId::new();
        let (inst, tok) = token_ctx(&caller.instance.to_string(), &token_id.to_string());
        let master = self.master();
        CryptoCounters::bump(&self.counters.master_seal);
        let sealed = master.seal(
            &SealContext {
                kind: "import-token",
                instance: &inst,
                object: &tok,
                version: "",
            },
            keypair.sealed_form()?.expose(),
        )?;
        let now = self.now();
        let row = TokenRow {
            instance_id: caller.instance,
            token_id,
            created_at: now,
            expires_at: now + expiration,
            expiration_secs: expiration,
            max_retrievals: max,
            remaining: max,
            nonce: random_bytes(12)?,
            public_pem: keypair.public_pem().to_string(),
            sealed_private: sealed,
            master_key_id: master.key_id().to_string(),
        };
        self.audit(caller, Action::CreateImportToken, None).await?;
        self.store.put_token(&row).await?;
        self.token_keys.put(&row, Arc::new(keypair));
        Ok(TokenInfo::from_row(&row, false))
    }

    /// `GET /import_token`: one retrieval, counted exactly.
    pub async fn get_import_token(&self, caller: &Caller) -> ServiceResult<TokenInfo> {
        caller.require(Action::GetImportToken)?;
        let now = self.now();
        if self.auditing() {
            // The attempt is recorded before the counter moves, only when a retrieval can
            // succeed; one that then loses a race gets a `failure` outcome.
            match self.store.get_token(caller.instance).await? {
                Some(t) if t.remaining > 0 && t.expires_at > now => {
                    self.audit(caller, Action::GetImportToken, None).await?;
                }
                _ => {}
            }
        }
        if let Some(row) = self
            .store
            .take_token_retrieval(caller.instance, now)
            .await?
        {
            return Ok(TokenInfo::from_row(&row, true));
        }
        match self.store.get_token(caller.instance).await? {
            None => Err(token_not_found()),
            Some(t) if t.expires_at <= now => Err(token_expired("retrieved")),
            Some(_) => Err(ServiceError::new(
                ErrorCode::ImportTokenRetrievalsExhausted,
                "The import token has reached its maximum number of retrievals",
            )),
        }
    }

    /// Verifies a secure import against the instance's current token; returns the material and
    /// the guard the key write must carry.
    pub(crate) async fn verify_secure(
        &self,
        instance: InstanceId,
        req: SecureImport,
    ) -> ServiceResult<(SecretBytes, TokenGuard)> {
        let now = self.now();
        let token = self
            .store
            .get_token(instance)
            .await?
            .ok_or_else(token_not_found)?;
        if token.expires_at <= now {
            return Err(token_expired("used"));
        }
        let cap = self.cfg.max_failed_imports;
        if cap > 0 && self.store.import_failures(instance, token.token_id).await? >= cap {
            return Err(token_locked(cap));
        }
        let keypair = self.token_keypair(&token)?;
        let nonce = token.nonce.clone();
        let (inst, tok) = token_ctx(&instance.to_string(), &token.token_id.to_string());
        CryptoCounters::bump(&self.counters.rsa_oaep_decrypt);
        let result = tokio::task::spawn_blocking(move || {
            // A payload that is not base64 fails like any other OAEP failure.
            let ct = B64.decode(req.payload_b64.as_bytes()).unwrap_or_default();
            let binding = pq::Binding {
                token_id: &tok,
                instance_id: &inst,
                nonce: &nonce,
            };
            verify_token_import(
                &keypair,
                req.encryption,
                &binding,
                &ct,
                &req.encrypted_nonce,
                &req.iv,
            )
        })
        .await
        .map_err(ServiceError::internal)?;
        if result.is_err() {
            // The same call for every failure kind, before the kind is looked at.
            self.store
                .record_import_failure(instance, token.token_id)
                .await?;
        }
        match result {
            Ok(material) => Ok((
                material,
                TokenGuard {
                    token_id: token.token_id,
                    now,
                },
            )),
            Err(ImportError::Oaep) => Err(oaep_failure()),
            Err(ImportError::NonceIv) => Err(ServiceError::new(
                ErrorCode::IncorrectNonceIv,
                "The encrypted nonce could not be decrypted with the key material and iv",
            )
            .with_target("field", "encryptedNonce")),
            Err(ImportError::NonceMismatch) => Err(incorrect_nonce()),
        }
    }

    /// The error for a guarded write that lost its token (replaced or expired meanwhile).
    pub(crate) async fn token_lost(&self, instance: InstanceId) -> ServiceError {
        match self.store.get_token(instance).await {
            Ok(None) => token_not_found(),
            Ok(Some(t)) if t.expires_at <= self.now() => token_expired("used"),
            Ok(Some(_)) => incorrect_nonce(),
            Err(e) => e.into(),
        }
    }

    fn token_keypair(&self, token: &TokenRow) -> ServiceResult<Arc<TokenKeyPair>> {
        if let Some(kp) = self
            .token_keys
            .get(token.instance_id, token.token_id, self.now())
        {
            return Ok(kp);
        }
        let (inst, tok) = token_ctx(&token.instance_id.to_string(), &token.token_id.to_string());
        CryptoCounters::bump(&self.counters.master_open);
        let der = self.master().open_as(
            &token.master_key_id,
            &SealContext {
                kind: "import-token",
                instance: &inst,
                object: &tok,
                version: "",
            },
            &token.sealed_private,
        )?;
        let kp = Arc::new(TokenKeyPair::from_sealed_form(&der)?);
        self.token_keys.put(token, kp.clone());
        Ok(kp)
    }
}

pub(crate) fn oaep_failure() -> ServiceError {
    ServiceError::field("payload", OAEP_FAILURE_MESSAGE)
}

fn incorrect_nonce() -> ServiceError {
    ServiceError::new(
        ErrorCode::IncorrectNonce,
        "The nonce does not match the nonce of the current import token",
    )
    .with_target("field", "encryptedNonce")
}

fn token_not_found() -> ServiceError {
    ServiceError::new(
        ErrorCode::ImportTokenNotFound,
        "No import token exists for this instance",
    )
}

fn token_locked(cap: i64) -> ServiceError {
    ServiceError::new(
        ErrorCode::ImportTokenExpired,
        format!("The import token is locked after {cap} failed imports and cannot be used: create a new import token"),
    )
}

fn token_expired(verb: &str) -> ServiceError {
    ServiceError::new(
        ErrorCode::ImportTokenExpired,
        format!("The import token has expired and cannot be {verb}"),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Inline generation runs at most `concurrency` at once; past the waiting bound a creation
    /// is refused at once with 503, and a waiter gets its turn when a slot frees.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn inline_generation_is_bounded() {
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Arc::new(parking_lot::Mutex::new(gate));
        let active = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let started = Arc::new(AtomicUsize::new(0));
        let (a, p, s) = (active.clone(), peak.clone(), started.clone());
        let generate: Generate = Arc::new(move || {
            s.fetch_add(1, Ordering::SeqCst);
            let now = a.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(now, Ordering::SeqCst);
            let _ = gate.lock().recv();
            a.fetch_sub(1, Ordering::SeqCst);
            // Stand-in for a keypair: the test counts generations, not keys.
            Err(CryptoError::Primitive)
        });
        let pool = KeypairPool::start_with(0, Arc::default(), 1, 1, generate);
        let first = tokio::spawn({
            let pool = pool.clone();
            async move { pool.take().await.map(|_| ()) }
        });
        while started.load(Ordering::SeqCst) < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let second = tokio::spawn({
            let pool = pool.clone();
            async move { pool.take().await.map(|_| ()) }
        });
        while pool.waiting() < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // One generating, one waiting: a third is refused without waiting.
        let third = pool.take().await.map(|_| ()).unwrap_err();
        assert_eq!(third.code, ErrorCode::Unavailable);
        assert_eq!(started.load(Ordering::SeqCst), 1);
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap().unwrap_err().code, ErrorCode::Internal);
        while started.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        release.send(()).unwrap();
        assert_eq!(second.await.unwrap().unwrap_err().code, ErrorCode::Internal);
        assert_eq!(
            peak.load(Ordering::SeqCst),
            1,
            "never two generations at once"
        );
        assert_eq!(pool.waiting(), 0);
    }
}

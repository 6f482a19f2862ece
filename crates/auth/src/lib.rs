//! Authentication: API keys, and the bearer tokens the IAM endpoint issues for them.
//!
//! What must hold:
//! - API keys are random 256-bit secrets; only their SHA-256 is stored (a fast hash is enough
//!   for a value with that much entropy), so a database leak reveals no usable key.
//! - Access tokens are HS256 JWTs signed with a key that is itself sealed in the store and
//!   shared by every node; they carry numeric `iat` and `exp` as the IBM SDKs require, and the
//!   id of the API key they were minted from (`api_key_id`), so that deleting the API key
//!   revokes its tokens: the service checks on every request that the key still exists.
//!   Tokens without that claim (minted by an older Keyward) are refused.
//! - Verification results are cached until the token expires, so the request hot path costs a
//!   map lookup, not a MAC; the cache is bounded.
//! - Access tokens carry the claims IBM's tools read from an IAM token: `id`, `iam_id` and
//!   `sub` (the principal), `account.bss` (the account shown in CRNs), `iss`, numeric `iat`/`exp`
//!   (Terraform's IBM provider reads `id`, `account.bss` and `iss` before its first call).
//! - Refresh tokens are single-purpose: signed under a key derived from the signing key for that
//!   purpose only (so neither kind of token passes for the other), bound to the API key they
//!   came from, and they expire ([`REFRESH_TOKEN_TTL`]). The service refuses one whose API key
//!   was deleted since.
//! - Nothing here logs or formats a key or token: the types holding them redact `Debug`.

use std::fmt;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use keyward_crypto::{hmac_sha256, hmac_sha256_verify, random_bytes, sha256, SecretBytes};
use keyward_domain::bounded::{BoundedCache, CacheStats};
use serde::{Deserialize, Serialize};

/// Lifetime of access tokens, in seconds (Key Protect's IAM issues one-hour tokens).
pub const ACCESS_TOKEN_TTL: i64 = 3600;

/// Lifetime of refresh tokens, in seconds (30 days, as IAM's).
pub const REFRESH_TOKEN_TTL: i64 = 30 * 24 * 3600;

/// The issuer claim of Keyward's tokens.
pub const ISSUER: &str = "keyward";

/// Most verified tokens kept in the cache (the default; past it, entries are evicted).
pub const CACHE_MAX: usize = 100_000;

/// API keys are shown once as `kw_` + base64url of 32 random bytes.
pub const API_KEY_PREFIX: &str = "kw_";

#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum AuthError {
    /// Missing, malformed, forged or expired token: the one answer for all of them.
    #[error("the bearer token is missing, invalid or expired")]
    InvalidToken,
    #[error("random source failed")]
    Crypto,
}

/// A freshly made API key: the secret (shown once) and the hash that is stored.
pub struct NewApiKey {
    pub secret: String,
    pub hash: [u8; 32],
}

impl fmt::Debug for NewApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NewApiKey { secret: [REDACTED], .. }")
    }
}

/// Makes a new API key.
pub fn new_api_key() -> Result<NewApiKey, AuthError> {
    let raw = random_bytes(32).map_err(|_| AuthError::Crypto)?;
    let secret = format!("{API_KEY_PREFIX}{}", B64URL.encode(raw));
    let hash = hash_api_key(&secret);
    Ok(NewApiKey { secret, hash })
}

/// The stored form of an API key.
pub fn hash_api_key(secret: &str) -> [u8; 32] {
    sha256(secret.as_bytes())
}

/// The `account` claim of an IAM token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AccountClaim {
    /// The account id (IBM's billing account; here the account shown in CRNs).
    pub bss: String,
}

/// What a verified access token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The principal, as IAM's `id` claim (the same as `iam_id`; absent from tokens minted
    /// before it was added).
    #[serde(default)]
    pub id: String,
    pub iam_id: String,
    pub sub: String,
    /// The account (absent from tokens minted before it was added).
    #[serde(default)]
    pub account: AccountClaim,
    /// The id of the API key this token was minted from (required: a token without it is
    /// refused).
    pub api_key_id: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    pub iss: String,
}

/// The token endpoint's answer.
pub struct IssuedToken {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: i64,
    pub expiration: i64,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("expiration", &self.expiration)
            .finish_non_exhaustive()
    }
}

/// What a verified refresh token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshClaims {
    pub iam_id: String,
    pub api_key_id: String,
    pub account: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
}

/// Issues and verifies access tokens.
pub struct TokenAuthority {
    key: SecretBytes,
    /// The refresh-token key, derived from `key` for that purpose only.
    refresh_key: SecretBytes,
    /// token → claims, for tokens that verified (only those: a bad token leaves nothing here).
    /// Bounded with eviction; expired entries are refused on lookup and swept periodically.
    cache: BoundedCache<String, Arc<Claims>>,
}

impl fmt::Debug for TokenAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenAuthority").finish_non_exhaustive()
    }
}

const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// What the refresh-token key is derived from (HMAC of this label under the signing key).
const REFRESH_KEY_LABEL: &str = "keyward refresh-token key v1";

/// The first part of every refresh token (never a valid JWT header).
const REFRESH_PREFIX: &str = "kwr1";

impl TokenAuthority {
    /// `signing_key` is the shared HMAC key (32 random bytes, sealed in the store).
    pub fn new(signing_key: SecretBytes) -> Self {
        Self::with_capacity(signing_key, CACHE_MAX)
    }

    /// As [`TokenAuthority::new`], caching at most `capacity` verified tokens.
    pub fn with_capacity(signing_key: SecretBytes, capacity: usize) -> Self {
        let refresh_key =
            SecretBytes::from_vec(hmac_sha256(&signing_key, REFRESH_KEY_LABEL.as_bytes()).to_vec());
        Self {
            key: signing_key,
            refresh_key,
            cache: BoundedCache::new("token", capacity),
        }
    }

    /// Drops cached tokens that expired by `now`.
    pub fn sweep(&self, now: i64) {
        self.cache.retain(|_, c| c.exp > now);
    }

    /// Size and hit counts of the verification cache.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// A token for the principal `iam_id` of `account`, minted from the API key `api_key_id`,
    /// with a refresh token bound to that API key.
    pub fn issue(
        &self,
        iam_id: &str,
        api_key_id: &str,
        account: &str,
        now: i64,
    ) -> Result<IssuedToken, AuthError> {
        let jti = B64URL.encode(random_bytes(16).map_err(|_| AuthError::Crypto)?);
        let claims = Claims {
            id: iam_id.to_string(),
            iam_id: iam_id.to_string(),
            sub: iam_id.to_string(),
            account: AccountClaim {
                bss: account.to_string(),
            },
            api_key_id: api_key_id.to_string(),
            iat: now,
            exp: now + ACCESS_TOKEN_TTL,
            jti,
            iss: ISSUER.to_string(),
        };
        let payload = serde_json::to_vec(&claims).map_err(|_| AuthError::Crypto)?;
        let signing_input = format!("{}.{}", B64URL.encode(HEADER), B64URL.encode(payload));
        let sig = hmac_sha256(&self.key, signing_input.as_bytes());
        let refresh = self.issue_refresh(&RefreshClaims {
            iam_id: iam_id.to_string(),
            api_key_id: api_key_id.to_string(),
            account: account.to_string(),
            iat: now,
            exp: now + REFRESH_TOKEN_TTL,
            jti: B64URL.encode(random_bytes(16).map_err(|_| AuthError::Crypto)?),
        })?;
        Ok(IssuedToken {
            access_token: format!("{signing_input}.{}", B64URL.encode(sig)),
            refresh_token: refresh,
            expires_in: ACCESS_TOKEN_TTL,
            expiration: claims.exp,
        })
    }

    fn issue_refresh(&self, claims: &RefreshClaims) -> Result<String, AuthError> {
        let payload = serde_json::to_vec(claims).map_err(|_| AuthError::Crypto)?;
        let signing_input = format!("{REFRESH_PREFIX}.{}", B64URL.encode(payload));
        let sig = hmac_sha256(&self.refresh_key, signing_input.as_bytes());
        Ok(format!("{signing_input}.{}", B64URL.encode(sig)))
    }

    /// Verifies a refresh token: signed under the refresh key, not expired at `now`. Whether
    /// its API key still exists is the caller's to check. Never cached.
    pub fn verify_refresh(&self, token: &str, now: i64) -> Result<RefreshClaims, AuthError> {
        if token.len() > 4096 {
            return Err(AuthError::InvalidToken);
        }
        let (signing_input, sig_b64) = token.rsplit_once('.').ok_or(AuthError::InvalidToken)?;
        let payload_b64 = signing_input
            .strip_prefix(REFRESH_PREFIX)
            .and_then(|p| p.strip_prefix('.'))
            .ok_or(AuthError::InvalidToken)?;
        let sig = B64URL
            .decode(sig_b64)
            .map_err(|_| AuthError::InvalidToken)?;
        if !hmac_sha256_verify(&self.refresh_key, signing_input.as_bytes(), &sig) {
            return Err(AuthError::InvalidToken);
        }
        let payload = B64URL
            .decode(payload_b64)
            .map_err(|_| AuthError::InvalidToken)?;
        let claims: RefreshClaims =
            serde_json::from_slice(&payload).map_err(|_| AuthError::InvalidToken)?;
        if claims.exp <= now || claims.api_key_id.is_empty() {
            return Err(AuthError::InvalidToken);
        }
        Ok(claims)
    }

    /// Verifies a token (the part after `Bearer `). Cached after the first success.
    pub fn verify(&self, token: &str, now: i64) -> Result<Arc<Claims>, AuthError> {
        // An expired entry is a miss and leaves the cache; the full check below then refuses it.
        if let Some(c) = self.cache.get_valid(token, |c| c.exp > now) {
            return Ok(c);
        }
        let claims = Arc::new(self.verify_uncached(token, now)?);
        self.cache.insert(token.to_string(), claims.clone());
        Ok(claims)
    }

    fn verify_uncached(&self, token: &str, now: i64) -> Result<Claims, AuthError> {
        if token.len() > 4096 {
            return Err(AuthError::InvalidToken);
        }
        let (signing_input, sig_b64) = token.rsplit_once('.').ok_or(AuthError::InvalidToken)?;
        let (header_b64, payload_b64) = signing_input
            .split_once('.')
            .ok_or(AuthError::InvalidToken)?;
        let sig = B64URL
            .decode(sig_b64)
            .map_err(|_| AuthError::InvalidToken)?;
        if !hmac_sha256_verify(&self.key, signing_input.as_bytes(), &sig) {
            return Err(AuthError::InvalidToken);
        }
        let header = B64URL
            .decode(header_b64)
            .map_err(|_| AuthError::InvalidToken)?;
        if header != HEADER.as_bytes() {
            return Err(AuthError::InvalidToken);
        }
        let payload = B64URL
            .decode(payload_b64)
            .map_err(|_| AuthError::InvalidToken)?;
        let claims: Claims =
            serde_json::from_slice(&payload).map_err(|_| AuthError::InvalidToken)?;
        if claims.exp <= now || claims.iss != ISSUER || claims.api_key_id.is_empty() {
            return Err(AuthError::InvalidToken);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authority() -> TokenAuthority {
        TokenAuthority::new(SecretBytes::from_vec(vec![42u8; 32]))
    }

    #[test]
    fn issue_verify_expire() -> Result<(), AuthError> {
        let a = authority();
        let t = a.issue("iam-1", "ak-1", "acct", 1000)?;
        assert_eq!(t.expiration, 1000 + ACCESS_TOKEN_TTL);
        let c = a.verify(&t.access_token, 1001)?;
        assert_eq!(c.iam_id, "iam-1");
        assert_eq!(c.api_key_id, "ak-1");
        assert_eq!(c.iat, 1000);
        // cached path, and expiry through the cache
        assert!(a.verify(&t.access_token, 1002).is_ok());
        assert_eq!(
            a.verify(&t.access_token, 1000 + ACCESS_TOKEN_TTL),
            Err(AuthError::InvalidToken)
        );
        // expiry without the cache
        let fresh = authority();
        assert_eq!(
            fresh.verify(&t.access_token, 1000 + ACCESS_TOKEN_TTL + 1),
            Err(AuthError::InvalidToken)
        );
        Ok(())
    }

    #[test]
    fn forged_or_mangled_tokens_are_refused() -> Result<(), AuthError> {
        let a = authority();
        let t = a.issue("iam-1", "ak-1", "acct", 1000)?.access_token;
        let other = TokenAuthority::new(SecretBytes::from_vec(vec![1u8; 32]));
        assert_eq!(other.verify(&t, 1001), Err(AuthError::InvalidToken));
        let mut parts: Vec<&str> = t.split('.').collect();
        let evil = B64URL.encode(br#"{"iam_id":"root","sub":"root","iat":0,"exp":99999999999,"jti":"x","iss":"keyward"}"#);
        parts[1] = &evil;
        assert_eq!(
            a.verify(&parts.join("."), 1001),
            Err(AuthError::InvalidToken)
        );
        // Correctly signed, but without the API key id (or with an empty one): the format of
        // tokens minted before the claim existed. Refused.
        for payload in [
            r#"{"iam_id":"iam-1","sub":"iam-1","iat":1000,"exp":99999999999,"jti":"x","iss":"keyward"}"#,
            r#"{"iam_id":"iam-1","sub":"iam-1","api_key_id":"","iat":1000,"exp":99999999999,"jti":"x","iss":"keyward"}"#,
        ] {
            let input = format!("{}.{}", B64URL.encode(HEADER), B64URL.encode(payload));
            let sig = hmac_sha256(&a.key, input.as_bytes());
            let old = format!("{input}.{}", B64URL.encode(sig));
            assert_eq!(a.verify(&old, 1001), Err(AuthError::InvalidToken));
        }
        for junk in ["", "a.b", "a.b.c", "...", &"x".repeat(5000)] {
            assert_eq!(a.verify(junk, 1001), Err(AuthError::InvalidToken));
        }
        Ok(())
    }

    #[test]
    fn cache_holds_only_verified_tokens_and_stays_bounded() -> Result<(), AuthError> {
        let a = TokenAuthority::with_capacity(SecretBytes::from_vec(vec![42u8; 32]), 100);
        for i in 0..1000 {
            let _ = a.verify(&format!("junk.{i}.x"), 1001);
        }
        assert_eq!(a.cache_stats().entries, 0, "bad tokens are not cached");
        for i in 0..1000 {
            let t = a.issue(&format!("iam-{i}"), "ak-1", "acct", 1000)?;
            a.verify(&t.access_token, 1001)?;
        }
        let s = a.cache_stats();
        assert!(
            s.entries > 0 && s.entries <= s.capacity && s.capacity < 200,
            "{s:?}"
        );
        a.sweep(1000 + ACCESS_TOKEN_TTL);
        assert_eq!(a.cache_stats().entries, 0, "expired tokens are swept");
        Ok(())
    }

    #[test]
    fn claims_as_ibm_tools_read_them() -> Result<(), AuthError> {
        let a = authority();
        let t = a.issue("iam-1", "ak-1", "acct-9", 1000)?;
        let payload = t
            .access_token
            .split('.')
            .nth(1)
            .ok_or(AuthError::InvalidToken)?;
        let v: serde_json::Value = serde_json::from_slice(
            &B64URL
                .decode(payload)
                .map_err(|_| AuthError::InvalidToken)?,
        )
        .map_err(|_| AuthError::InvalidToken)?;
        assert_eq!(v["id"], "iam-1");
        assert_eq!(v["iam_id"], "iam-1");
        assert_eq!(v["sub"], "iam-1");
        assert_eq!(v["account"]["bss"], "acct-9");
        assert_eq!(v["iss"], ISSUER);
        assert_eq!(v["iat"], 1000);
        assert_eq!(v["exp"], 1000 + ACCESS_TOKEN_TTL);
        Ok(())
    }

    #[test]
    fn refresh_tokens_are_single_purpose_bound_and_expire() -> Result<(), AuthError> {
        let a = authority();
        let t = a.issue("iam-1", "ak-1", "acct", 1000)?;
        let r = a.verify_refresh(&t.refresh_token, 1001)?;
        assert_eq!(
            (r.iam_id.as_str(), r.api_key_id.as_str()),
            ("iam-1", "ak-1")
        );
        assert_eq!(r.exp, 1000 + REFRESH_TOKEN_TTL);
        // expiry
        assert_eq!(
            a.verify_refresh(&t.refresh_token, 1000 + REFRESH_TOKEN_TTL),
            Err(AuthError::InvalidToken)
        );
        // neither kind passes for the other
        assert_eq!(
            a.verify(&t.refresh_token, 1001),
            Err(AuthError::InvalidToken)
        );
        assert_eq!(
            a.verify_refresh(&t.access_token, 1001),
            Err(AuthError::InvalidToken)
        );
        // another signing key, or a payload edited to another API key
        let other = TokenAuthority::new(SecretBytes::from_vec(vec![1u8; 32]));
        assert_eq!(
            other.verify_refresh(&t.refresh_token, 1001),
            Err(AuthError::InvalidToken)
        );
        let mut parts: Vec<String> = t.refresh_token.split('.').map(String::from).collect();
        let evil = B64URL.encode(br#"{"iam_id":"root","api_key_id":"ak-2","account":"acct","iat":0,"exp":99999999999,"jti":"x"}"#);
        parts[1] = evil;
        assert_eq!(
            a.verify_refresh(&parts.join("."), 1001),
            Err(AuthError::InvalidToken)
        );
        // an access-token-shaped string signed under the refresh key is not an access token
        let input = format!("{}.{}", B64URL.encode(HEADER), parts[1]);
        let sig = hmac_sha256(&a.refresh_key, input.as_bytes());
        assert_eq!(
            a.verify(&format!("{input}.{}", B64URL.encode(sig)), 1001),
            Err(AuthError::InvalidToken)
        );
        for junk in ["", "kwr1", "kwr1..", "kwr1.e30.", &"x".repeat(5000)] {
            assert_eq!(a.verify_refresh(junk, 1001), Err(AuthError::InvalidToken));
        }
        assert!(!format!("{t:?}").contains(&t.refresh_token));
        Ok(())
    }

    #[test]
    fn api_keys_hash_and_redact() -> Result<(), AuthError> {
        let k = new_api_key()?;
        assert!(k.secret.starts_with(API_KEY_PREFIX));
        assert_eq!(hash_api_key(&k.secret), k.hash);
        assert!(!format!("{k:?}").contains(&k.secret));
        Ok(())
    }
}

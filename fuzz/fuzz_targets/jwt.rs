//! Access-token verification (`keyward_auth::TokenAuthority::verify`) on arbitrary strings,
//! with a fixed signing key and time. The first byte picks the mode:
//! - 0: the rest, as a string, is the token;
//! - 1: header and claims are fuzzed (split at the first `\n`), base64url-encoded and signed
//!   with the real key, so the claim parser and its checks see arbitrary input;
//! - 2: a genuine token with the fuzz bytes XORed into it.
//!
//! Oracle: the only error is `InvalidToken`; a token is accepted only when an independent
//! check agrees that it is genuine: its signature is the HMAC-SHA-256 of its signing input
//! under the key, its header is exactly Keyward's, its claims parse, are unexpired and name
//! Keyward as issuer. No panic.
#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use keyward_auth::{AuthError, Claims, TokenAuthority};
use keyward_crypto::{hmac_sha256, SecretBytes};
use libfuzzer_sys::fuzz_target;

const NOW: i64 = 1_767_225_600;
const KEY: [u8; 32] = [0x17; 32];
const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

fn key() -> SecretBytes {
    SecretBytes::copy_from(&KEY)
}

fn authority() -> &'static (TokenAuthority, String) {
    static A: OnceLock<(TokenAuthority, String)> = OnceLock::new();
    A.get_or_init(|| {
        let a = TokenAuthority::new(key());
        let t = a
            .issue("iam-fuzz", "ak-fuzz", "acct-fuzz", NOW - 10)
            .unwrap_or_else(|e| panic!("issue: {e}"))
            .access_token;
        (a, t)
    })
}

/// The independent check of a genuine, valid token.
fn genuine(token: &str) -> bool {
    if token.len() > 4096 {
        return false;
    }
    let parts: Vec<&str> = token.split('.').collect();
    let [h, p, s] = parts[..] else {
        return false;
    };
    let signing_input = format!("{h}.{p}");
    let Ok(sig) = B64URL.decode(s) else {
        return false;
    };
    if sig != hmac_sha256(&key(), signing_input.as_bytes()) {
        return false;
    }
    if B64URL.decode(h).ok().as_deref() != Some(HEADER.as_bytes()) {
        return false;
    }
    let Some(claims) = B64URL
        .decode(p)
        .ok()
        .and_then(|b| serde_json::from_slice::<Claims>(&b).ok())
    else {
        return false;
    };
    claims.exp > NOW && claims.iss == "keyward"
}

fn sign(header: &[u8], claims: &[u8]) -> String {
    let input = format!("{}.{}", B64URL.encode(header), B64URL.encode(claims));
    let sig = hmac_sha256(&key(), input.as_bytes());
    format!("{input}.{}", B64URL.encode(sig))
}

fuzz_target!(init: { let _ = authority(); }, |data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (a, real) = authority();
    let token = match mode % 3 {
        0 => String::from_utf8_lossy(rest).into_owned(),
        1 => match rest.iter().position(|&b| b == b'\n') {
            Some(i) => sign(&rest[..i], &rest[i + 1..]),
            None => sign(HEADER.as_bytes(), rest),
        },
        _ => {
            let mut t = real.clone().into_bytes();
            for (i, x) in rest.iter().enumerate() {
                if let Some(b) = t.get_mut(i) {
                    *b ^= x;
                }
            }
            String::from_utf8_lossy(&t).into_owned()
        }
    };
    match a.verify(&token, NOW) {
        Ok(c) => {
            assert!(genuine(&token), "a token that is not genuine was accepted");
            assert!(c.exp > NOW && c.iss == "keyward");
        }
        Err(AuthError::InvalidToken) => {
            assert!(!genuine(&token), "a genuine, valid token was refused");
        }
        Err(e) => panic!("verify failed with {e:?}, not InvalidToken"),
    }
});

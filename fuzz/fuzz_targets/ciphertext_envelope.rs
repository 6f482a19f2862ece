//! The wrapped-DEK envelope (`crates/service/src/envelope.rs`: base64 of a JSON blob naming the
//! key version, around AES-GCM of `crates/crypto/src/dek.rs`), through the service's unwrap of
//! a real root key. The first byte picks how the rest becomes the ciphertext:
//! - 0: the bytes as the ciphertext string itself;
//! - 1: standard base64 of the bytes (the blob parser sees arbitrary bytes);
//! - 2: a well-formed blob naming the real key version, IV = first 12 bytes, sealed data = rest;
//! - 3: the real blob's JSON XORed with the bytes;
//! - 4: `dek::open` directly, with a fixed key, IV = first 12 bytes, sealed data = rest.
//!
//! The second byte chooses the aad (none, or the one the `$CTA` DEK was wrapped with).
//! Oracle: an unwrap succeeds only with the DEK that was really wrapped; every failure is the
//! one `UNPROCESSABLE_CIPHERTEXT_ERR`, or `INVALID_FIELD_ERR` for a ciphertext that is not
//! base64 at all; `dek::open` never succeeds on forged input; no panic.
#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use keyward_crypto::{dek, SecretBytes};
use keyward_domain::KeyId;
use keyward_fuzz::app;
use keyward_service::{Caller, ErrorCode};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

struct Fixed {
    caller: Caller,
    key: KeyId,
    blob: Vec<u8>,
    blob_aad: Vec<u8>,
    handle: String,
    material: SecretBytes,
}

fn fixed() -> &'static Fixed {
    static F: OnceLock<Fixed> = OnceLock::new();
    F.get_or_init(|| {
        let a = app();
        let caller = match a.manager_caller() {
            Ok(c) => c,
            Err(e) => panic!("caller: {e}"),
        };
        let blob = B64.decode(&a.ciphertext).unwrap_or_default();
        let blob_aad = B64.decode(&a.ciphertext_aad).unwrap_or_default();
        let handle = serde_json::from_slice::<Value>(&blob)
            .ok()
            .and_then(|v| v["handle"].as_str().map(str::to_string))
            .unwrap_or_default();
        Fixed {
            caller,
            key: KeyId::parse(&a.root).unwrap_or_else(|e| panic!("key id: {e:?}")),
            blob,
            blob_aad,
            handle,
            material: SecretBytes::from_vec(vec![0x42; 32]),
        }
    })
}

fuzz_target!(init: { let _ = fixed(); }, |data: &[u8]| {
    let [mode, aad_sel, rest @ ..] = data else {
        return;
    };
    let a = app();
    let f = fixed();
    let (iv, sealed) = rest.split_at(rest.len().min(12));
    let ciphertext = match mode % 5 {
        0 => String::from_utf8_lossy(rest).into_owned(),
        1 => B64.encode(rest),
        2 => {
            let blob = serde_json::json!({
                "ciphertext": B64.encode(sealed),
                "iv": B64.encode(iv),
                "version": "4.0.0",
                "handle": f.handle,
            });
            B64.encode(blob.to_string())
        }
        3 => {
            let base = if aad_sel % 2 == 0 { &f.blob } else { &f.blob_aad };
            let mut b = base.clone();
            for (i, x) in rest.iter().enumerate() {
                if let Some(t) = b.get_mut(i) {
                    *t ^= x;
                }
            }
            B64.encode(b)
        }
        _ => {
            for aad in [&b""[..], b"keyward-dek-v1"] {
                if dek::open(&f.material, iv, aad, sealed).is_ok() {
                    panic!("dek::open accepted a forged ciphertext");
                }
            }
            return;
        }
    };
    let aad: Vec<String> = if aad_sel % 2 == 0 {
        Vec::new()
    } else {
        vec!["fuzz".into()]
    };
    let r = a.block_on(a.svc.unwrap(&f.caller, f.key, &ciphertext, &aad));
    match r {
        Ok(u) => {
            let want = if aad.is_empty() { &a.dek } else { &a.dek_aad };
            assert_eq!(
                u.plaintext.expose(),
                want.as_slice(),
                "unwrap succeeded with a DEK that was never wrapped"
            );
        }
        Err(e) => assert!(
            e.code == ErrorCode::UnprocessableCiphertext
                || (e.code == ErrorCode::InvalidField && mode % 5 == 0),
            "unexpected error {:?}: {}",
            e.code,
            e.message
        ),
    }
});

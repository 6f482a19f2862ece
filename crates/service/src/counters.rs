//! Counts of cryptographic operations, for the `keyward_crypto_operations_total` metric.

use std::sync::atomic::{AtomicU64, Ordering};

/// One counter per kind of cryptographic operation the service performs.
#[derive(Debug, Default)]
pub struct CryptoCounters {
    /// AES-256-GCM seal of a DEK under a root key version (wrap, rewrap, unwrap's re-wrap).
    pub wrap: AtomicU64,
    /// AES-256-GCM open of a wrapped DEK (unwrap, rewrap).
    pub unwrap: AtomicU64,
    /// RSA-OAEP decryptions of secure-import payloads.
    pub rsa_oaep_decrypt: AtomicU64,
    /// RSA-4096 import-token keypairs generated (pool and inline).
    pub rsa_keygen: AtomicU64,
    /// Values sealed under the master key (key versions, import-token keys).
    pub master_seal: AtomicU64,
    /// Values opened with the master key.
    pub master_open: AtomicU64,
}

impl CryptoCounters {
    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Each counter by its `op` label, for `/metrics`.
    pub fn snapshot(&self) -> [(&'static str, u64); 6] {
        [
            ("wrap", &self.wrap),
            ("unwrap", &self.unwrap),
            ("rsa_oaep_decrypt", &self.rsa_oaep_decrypt),
            ("rsa_keygen", &self.rsa_keygen),
            ("master_seal", &self.master_seal),
            ("master_open", &self.master_open),
        ]
        .map(|(op, c)| (op, c.load(Ordering::Relaxed)))
    }
}

//! Test support shared by Keyward's integration tests (`crates/keyward/tests/*`) and the
//! router tests of `keyward-api`: one handle on the real `keyward` binary ([`Node`]: spawn with
//! a data dir or a fresh PostgreSQL database, wait until healthy, read its log, restart, kill
//! on drop), `keyward admin` as a subprocess, tenants (instance + API key + bearer token), an
//! HTTP client that speaks the Key Protect envelope ([`Api`], [`Resp`]), fresh PostgreSQL
//! databases ([`pg::Db`]), import fixtures, and [`services`]: what a test does when an external
//! service is missing (`KEYWARD_REQUIRE_SERVICES=1` turns a skip into a failure).
//!
//! This crate is a dev-dependency only (`publish = false`): like the tests themselves it fails
//! the calling test with `unwrap`/`panic` on anything unexpected.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod client;
pub mod fixtures;
pub mod pg;
pub mod server;
pub mod services;
pub mod softhsm;
pub mod tenant;

pub use client::*;
pub use fixtures::*;
pub use pg::*;
pub use server::*;
pub use softhsm::*;
pub use tenant::*;

pub const KEY_TYPE: &str = "application/vnd.ibm.kms.key+json";
pub const POLICY_TYPE: &str = "application/vnd.ibm.kms.policy+json";
pub const ERROR_TYPE: &str = "application/vnd.ibm.kms.error+json";
pub const APIKEY_GRANT: &str = "urn:ibm:params:oauth:grant-type:apikey";

/// The tests of one binary that must run one at a time (several measure latencies or restart
/// the shared PostgreSQL server, and each starts two or three processes on a small machine).
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A free TCP port on 127.0.0.1 (free when asked; a server binds it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `n` random bytes.
pub fn random(n: usize) -> Vec<u8> {
    keyward_crypto::random_bytes(n).unwrap()
}

/// 32 random bytes, mode 0600: a master key file as an operator would prepare it.
pub fn write_master_key(path: &std::path::Path) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let key = random(32);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(&key).unwrap();
}

/// Whether `needle` occurs anywhere in `haystack`.
pub fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

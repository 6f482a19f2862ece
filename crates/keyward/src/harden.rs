//! Process hardening for the programs that hold key material (`serve`, `admin master-key`,
//! `admin backup|restore`): no core dumps, and no `ptrace` attach or `/proc/PID/mem` reads by
//! other processes of the same user.
//!
//! - `RLIMIT_CORE` is set to 0 (soft and hard), so a crash never writes opened key material,
//!   the token-signing key or import-token private keys to a core file.
//! - `PR_SET_DUMPABLE` is cleared: besides core dumps, this makes `/proc/PID/mem`,
//!   `/proc/PID/environ` (where `KEYWARD_PKCS11_PIN` may live) and `ptrace` unavailable to
//!   processes of the same unprivileged user.
//!
//! Failures are returned for the caller to log; they do not stop the program (a container
//! runtime may forbid `prctl`, and the rest of Keyward's guarantees do not depend on it).

use rustix::process::{set_dumpable_behavior, setrlimit, DumpableBehavior, Resource, Rlimit};

/// Applies both settings; returns a description of each that failed.
pub fn harden_process() -> Vec<String> {
    let mut failed = Vec::new();
    if let Err(e) = setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    ) {
        failed.push(format!("setrlimit(RLIMIT_CORE, 0): {e}"));
    }
    if let Err(e) = set_dumpable_behavior(DumpableBehavior::NotDumpable) {
        failed.push(format!("prctl(PR_SET_DUMPABLE, 0): {e}"));
    }
    failed
}

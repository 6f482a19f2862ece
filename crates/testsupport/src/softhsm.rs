//! SoftHSM2 tokens for the PKCS#11 tests: a private token directory and configuration per test.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::services;

/// Where Debian's `softhsm2` package puts the PKCS#11 module.
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// Whether SoftHSM2 (the module and `softhsm2-util`) is installed; when not, reports `test` as
/// skipped (a failure under `KEYWARD_REQUIRE_SERVICES`, see [`services`]).
pub fn softhsm_present(test: &str) -> bool {
    let util = Command::new("softhsm2-util").arg("--version").output();
    if !Path::new(SOFTHSM_MODULE).exists() || util.is_err() {
        services::missing(
            test,
            &format!("SoftHSM2 ({SOFTHSM_MODULE} or softhsm2-util)"),
            "apt-get install -y softhsm2",
        );
        return false;
    }
    true
}

/// Writes `ROOT/softhsm2.conf` (token directory `ROOT/tokens`) and initialises one token
/// `label` with these PINs; returns the configuration file (for `SOFTHSM2_CONF`).
pub fn softhsm_token(root: &Path, label: &str, so_pin: &str, pin: &str) -> PathBuf {
    let tokens = root.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = root.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n\
             slots.removable = false\n",
            tokens.display()
        ),
    )
    .unwrap();
    let out = Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", &conf)
        .args(["--init-token", "--free", "--label", label])
        .args(["--so-pin", so_pin, "--pin", pin])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "softhsm2-util: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    conf
}

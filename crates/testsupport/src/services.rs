//! What a test does when an external service it needs (PostgreSQL, SoftHSM2, `openssl`,
//! `pg_ctlcluster`, ...) is missing: on a developer's machine it prints a note and the test
//! passes without running; with `KEYWARD_REQUIRE_SERVICES=1` (set by `.ci/run`) it fails, so CI
//! can never go green by skipping.
//!
//! Every test that needs an external service uses this module: through
//! `keyward_testsupport::services` (or helpers built on it, such as `pg_base`), or, in crates
//! below `keyward-testsupport` in the graph (`crates/store/tests`, `crates/crypto/tests`),
//! included by `#[path]`.
#![allow(dead_code)] // not every includer uses every item

/// The variable that turns a missing service into a test failure.
pub const REQUIRE_VAR: &str = "KEYWARD_REQUIRE_SERVICES";

/// Whether missing services must fail the tests (`KEYWARD_REQUIRE_SERVICES` set, not `0`).
pub fn required() -> bool {
    std::env::var(REQUIRE_VAR).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Reports that `what` is missing, so the calling test is skipped: panics when services are
/// required, otherwise prints `NOTE: <what> ...: skipped` with `hint` (how to provide it).
pub fn missing(test: &str, what: &str, hint: &str) {
    if required() {
        panic!("{test}: {what} is missing, and {REQUIRE_VAR} is set: a test may not be skipped here ({hint})");
    }
    eprintln!("NOTE: {test} skipped: {what} is missing ({hint}); set {REQUIRE_VAR}=1 to make this a failure");
}

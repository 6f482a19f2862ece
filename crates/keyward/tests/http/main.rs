//! Black-box HTTP tests of Keyward's Key Protect API (docs/threat-model.md names what each module shows).
//!
//! Most tests share one in-process server (`common::shared()`) and isolate themselves by
//! creating their own instances; tests that move the manual clock, or need a particular
//! keypair pool, start their own. `durability` and `crash` run the real binary.
//!
//! Run: `cargo test -p keyward --test http`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

mod auth_edges;
mod bad_inputs;
mod bounds;
mod console;
mod crash;
mod durability;
mod envelope;
mod failover;
mod import_tokens;
mod isolation;
mod keys;
mod kmip;
mod pq_import;
mod rewrap_batch;
mod secure_import;
mod untrusted;
mod usage;

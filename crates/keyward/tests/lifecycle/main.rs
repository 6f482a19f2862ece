//! Lifecycle tests of Keyward's Key Protect API: rotation and versions, states,
//! dual-authorised deletion, restore, purge, policies, key rings, aliases, listing, every
//! lifecycle reason code, and a model-based property test of the whole state machine under
//! a manual clock.
//!
//! Every test starts its own in-process server (`common::TestServer`): the manual clock and
//! the scheduler are per server. Run: `cargo test -p keyward --test lifecycle`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

mod dual_auth;
mod listing;
mod model;
mod policies;
mod prefer;
mod purge_restore;
mod reason_codes;
mod registrations;
mod rings_aliases;
mod rotation;
mod service_only;

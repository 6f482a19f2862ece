//! The `keyward` program: wiring of store, master key, service and HTTP; the admin commands;
//! and the `kp` client (in the `keyward-kpclient` crate).
//!
//! [`server::start`] is what `keyward serve` runs; tests start it in-process the same way.

pub mod admin;
pub mod auditcmd;
pub mod backup;
pub mod config;
pub mod edge;
pub mod harden;
pub mod kmip_listener;
pub mod masterkey;
pub mod masterkeycmd;
pub mod progress;
pub mod server;
pub mod tls;

//! Handlers, one module per resource.

pub mod actions;
pub mod identity;
pub mod keys;
pub mod kmip;
pub mod lifecycle;
pub mod openapi;
pub mod tokens;

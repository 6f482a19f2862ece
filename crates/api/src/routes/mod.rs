//! Handlers, one module per resource.

pub mod actions;
pub mod batch;
pub mod identity;
pub mod keys;
pub mod kmip;
pub mod lifecycle;
pub mod openapi;
pub mod resource_controller;
pub mod tokens;
pub mod xkeyward_audit;

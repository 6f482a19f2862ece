//! What `cmd.rs` and `lifecycle.rs` both need of Key Protect's resources: media types, the
//! `Prefer` header, and reading and printing a key envelope's resource.

use anyhow::bail;
use serde_json::Value;

use crate::out::{emit, emit_json, fields, key_rows, OutputFormat};

pub(crate) const CT_KEY: &str = "application/vnd.ibm.kms.key+json";
pub(crate) const CT_JSON: &str = "application/json";
pub(crate) const PREFER_REPR: (&str, &str) = ("prefer", "return=representation");

/// `resources[0]` of a key envelope.
pub(crate) fn first_resource(body: Value) -> anyhow::Result<Value> {
    match body {
        Value::Object(mut m) => match m.remove("resources") {
            Some(Value::Array(mut a)) if !a.is_empty() => Ok(a.swap_remove(0)),
            _ => bail!("the response has no resources[0]"),
        },
        _ => bail!("the response is not a key envelope"),
    }
}

pub(crate) fn print_key(output: OutputFormat, key: &Value) -> anyhow::Result<()> {
    match output {
        OutputFormat::Json => emit_json(key),
        OutputFormat::Human => emit(&fields(&key_rows(key))),
    }
}

/// Removes key material from a key object (it is printed only by `show --with-payload`).
pub(crate) fn strip_payload(mut key: Value) -> Value {
    if let Some(m) = key.as_object_mut() {
        m.remove("payload");
    }
    key
}

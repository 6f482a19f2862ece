//! Rendering results: aligned `field: value` lines (human) or JSON.

use std::io::Write;

use anyhow::Context;
use serde_json::Value;

/// Output format of `keyward kp`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OutputFormat {
    /// Aligned `field: value` lines (a table for `key list`).
    #[default]
    Human,
    /// JSON on stdout (the server's JSON, or a single object).
    Json,
}

/// Writes `text` (plus a newline) to stdout in one go; a closed pipe is an error, not a panic.
pub fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .context("writing to stdout")
}

pub fn emit_json(v: &Value) -> anyhow::Result<()> {
    emit(&serde_json::to_string_pretty(v).context("encoding JSON")?)
}

/// `field: value` lines, values aligned in one column.
pub fn fields(rows: &[(String, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.len() + 1).max().unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("{:<width$} {v}", format!("{k}:")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A JSON value as a human string: strings bare, arrays comma-joined, objects compact.
pub fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(scalar).collect::<Vec<_>>().join(", "),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

pub fn state_name(v: &Value) -> String {
    match v.as_i64() {
        Some(0) => "0 (pre-activation)".into(),
        Some(1) => "1 (active)".into(),
        Some(2) => "2 (suspended)".into(),
        Some(3) => "3 (deactivated)".into(),
        Some(5) => "5 (destroyed)".into(),
        _ => scalar(v),
    }
}

fn key_type(key: &Value) -> Option<String> {
    key.get("extractable")
        .and_then(Value::as_bool)
        .map(|e| if e { "standard" } else { "root" }.to_owned())
}

/// Human rows of a key resource. `payload` is shown only if present (callers strip it unless
/// the user asked for it).
pub fn key_rows(key: &Value) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    let mut push = |name: &str, v: Option<String>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            rows.push((name.to_owned(), v));
        }
    };
    let get = |f: &str| key.get(f).map(scalar);
    push("id", get("id"));
    push("name", get("name"));
    push("description", get("description"));
    push("state", key.get("state").map(state_name));
    push("type", key_type(key));
    push("imported", get("imported"));
    push(
        "keyVersion",
        key.get("keyVersion")
            .and_then(|kv| kv.get("id"))
            .map(scalar),
    );
    for f in [
        "creationDate",
        "createdBy",
        "lastUpdateDate",
        "lastRotateDate",
        "expirationDate",
        "keyRingID",
        "aliases",
        "tags",
        "crn",
        "deleted",
        "deletionDate",
        "deletedBy",
        "payload",
    ] {
        push(f, get(f));
    }
    rows
}

/// A table of keys for `key list`.
pub fn key_table(keys: &[Value]) -> String {
    let header = ["ID", "STATE", "TYPE", "IMPORTED", "NAME"];
    let mut rows: Vec<[String; 5]> = vec![header.map(str::to_owned)];
    for k in keys {
        let state = k.get("state").map(state_name).unwrap_or_default();
        rows.push([
            k.get("id").map(scalar).unwrap_or_default(),
            state,
            key_type(k).unwrap_or_default(),
            k.get("imported").map(scalar).unwrap_or_default(),
            k.get("name").map(scalar).unwrap_or_default(),
        ]);
    }
    let mut widths = [0usize; 5];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    rows.iter()
        .map(|r| {
            let mut line = String::new();
            for (i, (c, w)) in r.iter().zip(widths.iter()).enumerate() {
                if i + 1 == r.len() {
                    line.push_str(c);
                } else {
                    line.push_str(&format!("{c:<w$}  "));
                }
            }
            line
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Rows for the listed top-level fields of a flat object, in order, when present.
pub fn pick(v: &Value, names: &[&str]) -> Vec<(String, String)> {
    names
        .iter()
        .filter_map(|n| {
            v.get(*n)
                .filter(|x| !x.is_null())
                .map(|x| ((*n).to_owned(), scalar(x)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::json;

    #[test]
    fn aligned_fields() {
        let s = fields(&[
            ("id".into(), "x".into()),
            ("imported".into(), "true".into()),
        ]);
        assert_eq!(s, "id:       x\nimported: true");
    }

    #[test]
    fn key_rendering() {
        let k = json!({"id":"k1","name":"n","state":1,"extractable":false,"imported":true,
                       "keyVersion":{"id":"v1"},"aliases":["a","b"]});
        let rows = key_rows(&k);
        let s = fields(&rows);
        assert!(s.contains("state:      1 (active)"), "{s}");
        assert!(s.contains("type:       root"), "{s}");
        assert!(s.contains("keyVersion: v1"), "{s}");
        assert!(s.contains("aliases:    a, b"), "{s}");
        let t = key_table(&[k]);
        assert!(t.starts_with("ID  STATE"), "{t}");
        assert!(t.contains("k1  1 (active)  root  true      n"), "{t}");
    }
}

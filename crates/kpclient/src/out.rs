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
    ] {
        push(f, get(f));
    }
    // Policies: rotation when present, dual-auth delete only when enabled (it is always sent).
    push(
        "rotation",
        key.get("rotation")
            .filter(|r| r.is_object())
            .map(policy_summary),
    );
    push(
        "dualAuthDelete",
        key.get("dualAuthDelete")
            .filter(|d| d.get("enabled").and_then(Value::as_bool) == Some(true))
            .map(policy_summary),
    );
    for f in [
        "crn",
        "deleted",
        "deletionDate",
        "deletedBy",
        "restoreExpirationDate",
        "purgeAllowedFrom",
        "payload",
    ] {
        push(f, get(f));
    }
    rows
}

/// A table of keys for `key list`.
pub fn key_table(keys: &[Value]) -> String {
    let rows = keys
        .iter()
        .map(|k| {
            vec![
                k.get("id").map(scalar).unwrap_or_default(),
                k.get("state").map(state_name).unwrap_or_default(),
                key_type(k).unwrap_or_default(),
                k.get("imported").map(scalar).unwrap_or_default(),
                k.get("name").map(scalar).unwrap_or_default(),
            ]
        })
        .collect::<Vec<_>>();
    table(&["ID", "STATE", "TYPE", "IMPORTED", "NAME"], &rows)
}

/// A table with a header line, columns separated by two spaces; the last column is not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    let all: Vec<&Vec<String>> = std::iter::once(&header).chain(rows.iter()).collect();
    let mut widths = vec![0usize; header.len()];
    for r in &all {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    all.iter()
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

/// `enabled`, then `; name=value` per attribute (lists comma-joined); or `disabled`.
pub fn policy_summary(data: &Value) -> String {
    let mut s = match data.get("enabled").and_then(Value::as_bool) {
        Some(true) => "enabled".to_owned(),
        // the attributes of a disabled policy are not in force (Keyward shows
        // keyCreateImportAccess's defaults then)
        Some(false) => return "disabled".to_owned(),
        None => "unknown".to_owned(),
    };
    let attrs = data.get("attributes").and_then(Value::as_object);
    let inline = data
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, v)| *k != "enabled" && *k != "attributes" && !v.is_null());
    for (k, v) in attrs.into_iter().flatten().chain(inline) {
        let v = match v {
            Value::Array(a) => a.iter().map(scalar).collect::<Vec<_>>().join(","),
            other => scalar(other),
        };
        s.push_str(&format!("; {k}={v}"));
    }
    s
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
        assert!(!s.contains("dualAuthDelete"), "{s}");
        let p = json!({"id":"k1","dualAuthDelete":{"enabled":true,"keySetForDeletion":true},
                       "rotation":{"enabled":true,"interval_month":2}});
        let s = fields(&key_rows(&p));
        assert!(
            s.contains("rotation:       enabled; interval_month=2"),
            "{s}"
        );
        assert!(
            s.contains("dualAuthDelete: enabled; keySetForDeletion=true"),
            "{s}"
        );
        let off = json!({"id":"k1","dualAuthDelete":{"enabled":false}});
        assert!(!fields(&key_rows(&off)).contains("dualAuthDelete"));
        let t = key_table(&[k]);
        assert!(t.starts_with("ID  STATE"), "{t}");
        assert!(t.contains("k1  1 (active)  root  true      n"), "{t}");
    }

    #[test]
    fn tables_and_policies() {
        let t = table(
            &["ID", "CREATED"],
            &[
                vec!["default".into(), "2024".into()],
                vec!["r".into(), "x".into()],
            ],
        );
        assert_eq!(t, "ID       CREATED\ndefault  2024\nr        x");
        assert_eq!(table(&["ID"], &[]), "ID");
        let p = json!({"enabled": true, "attributes": {"allowed_ip": ["10.0.0.0/8", "::1/128"]}});
        assert_eq!(policy_summary(&p), "enabled; allowed_ip=10.0.0.0/8,::1/128");
        let p = json!({"enabled": true, "interval_month": 3});
        assert_eq!(policy_summary(&p), "enabled; interval_month=3");
        assert_eq!(policy_summary(&json!({"enabled": false})), "disabled");
    }
}

//! `keyward admin audit tail|search`: read the JSON-lines audit log (and its rotated files).

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::Value;

#[derive(clap::Subcommand, Debug)]
pub enum AuditCmd {
    /// The last N records
    Tail {
        /// The audit log file (as given to `serve --audit-log`)
        #[arg(long, env = "KEYWARD_AUDIT_LOG")]
        file: PathBuf,
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
    },
    /// Records matching every given filter, oldest first (rotated files included)
    Search {
        #[arg(long, env = "KEYWARD_AUDIT_LOG")]
        file: PathBuf,
        /// Action name, e.g. kms.secrets.wrap
        #[arg(long)]
        action: Option<String>,
        #[arg(long)]
        key_id: Option<String>,
        #[arg(long)]
        principal: Option<String>,
        #[arg(long)]
        instance: Option<String>,
        /// success or failure
        #[arg(long)]
        outcome: Option<String>,
        /// Records at or after this RFC 3339 time
        #[arg(long)]
        since: Option<String>,
    },
}

/// Every record, oldest first: FILE.N … FILE.1, then FILE.
fn all_records(file: &Path) -> anyhow::Result<Vec<Value>> {
    let mut paths = Vec::new();
    for i in (1..=1000).rev() {
        let p = PathBuf::from(format!("{}.{i}", file.display()));
        if p.exists() {
            paths.push(p);
        }
    }
    paths.push(file.to_path_buf());
    let mut out = Vec::new();
    for p in paths {
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            out.push(
                serde_json::from_str(line)
                    .with_context(|| format!("a corrupt line in {}", p.display()))?,
            );
        }
    }
    Ok(out)
}

pub fn run(cmd: AuditCmd) -> anyhow::Result<Vec<Value>> {
    match cmd {
        AuditCmd::Tail { file, lines } => {
            let all = all_records(&file)?;
            let skip = all.len().saturating_sub(lines);
            Ok(all.into_iter().skip(skip).collect())
        }
        AuditCmd::Search {
            file,
            action,
            key_id,
            principal,
            instance,
            outcome,
            since,
        } => {
            let since = match since {
                Some(s) => {
                    Some(keyward_domain::parse_time(&s).context("--since must be RFC 3339")?)
                }
                None => None,
            };
            let eq = |r: &Value, field: &str, want: &Option<String>| {
                want.as_ref()
                    .is_none_or(|w| r.get(field).and_then(Value::as_str) == Some(w.as_str()))
            };
            Ok(all_records(&file)?
                .into_iter()
                .filter(|r| {
                    eq(r, "action", &action)
                        && eq(r, "key_id", &key_id)
                        && eq(r, "principal", &principal)
                        && eq(r, "instance", &instance)
                        && eq(r, "outcome", &outcome)
                        && since.is_none_or(|t| {
                            r.get("time")
                                .and_then(Value::as_str)
                                .and_then(keyward_domain::parse_time)
                                .is_some_and(|rt| rt >= t)
                        })
                })
                .collect())
        }
    }
}

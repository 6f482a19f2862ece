//! `keyward admin audit tail|search`: read the audit log, from the JSON-lines file (and its
//! rotated files) or from the `audit_log` table of the server's database.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use keyward_store::{AuditEntry, AuditQuery, DatabaseUrl, SqlStore, Store};
use serde_json::{json, Map, Value};

use crate::config::{parse_audit_sinks, sqlite_url};

/// Which audit log to read.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AuditSource {
    /// The audit log file (as given to `serve --audit-log`)
    #[arg(long, env = "KEYWARD_AUDIT_LOG")]
    pub file: Option<PathBuf>,
    /// Read the file, or the database's audit_log table (the database of --database-url or
    /// --data-dir, as for the other admin commands) [default: file when --file is given,
    /// else database; with `serve`'s value file,database: database]
    #[arg(long, env = "KEYWARD_AUDIT_SINK")]
    pub sink: Option<String>,
}

#[derive(clap::Subcommand, Debug)]
pub enum AuditCmd {
    /// The last N records, oldest of them first
    Tail {
        #[command(flatten)]
        source: AuditSource,
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
    },
    /// Records matching every given filter, oldest first (rotated files included)
    Search {
        #[command(flatten)]
        source: AuditSource,
        #[command(flatten)]
        filter: AuditFilter,
    },
}

/// Filters of `audit search`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AuditFilter {
    /// Action name, e.g. kms.secrets.wrap
    #[arg(long)]
    pub action: Option<String>,
    #[arg(long)]
    pub key_id: Option<String>,
    #[arg(long)]
    pub principal: Option<String>,
    #[arg(long)]
    pub instance: Option<String>,
    /// success or failure
    #[arg(long)]
    pub outcome: Option<String>,
    #[arg(long)]
    pub request_id: Option<String>,
    /// Records at or after this RFC 3339 time
    #[arg(long)]
    pub since: Option<String>,
    /// Records at or before this RFC 3339 time
    #[arg(long)]
    pub until: Option<String>,
    /// At most this many records (the oldest that match)
    #[arg(long)]
    pub limit: Option<usize>,
}

/// Where the records are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File(PathBuf),
    Table(DatabaseUrl),
}

/// The database behind `--database-url` / `--data-dir` (the SQLite file must exist: reading
/// the audit log never creates a database).
fn database(data_dir: Option<&Path>, database_url: Option<&str>) -> anyhow::Result<DatabaseUrl> {
    if let Some(u) = database_url {
        return Ok(DatabaseUrl::new(u.to_string()));
    }
    let dir = data_dir.map_or_else(|| PathBuf::from("./keyward-data"), Path::to_path_buf);
    let db = dir.join("keyward.db");
    if !db.is_file() {
        bail!(
            "there is no database at {} (give --data-dir or --database-url, or --file to read an audit log file)",
            db.display()
        );
    }
    Ok(sqlite_url(&db))
}

impl AuditSource {
    /// The file or table to read, by the rules of `--sink`.
    pub fn origin(
        &self,
        data_dir: Option<&Path>,
        database_url: Option<&str>,
    ) -> anyhow::Result<Origin> {
        let (file, table) = match &self.sink {
            Some(s) => {
                let (file, table) = parse_audit_sinks(s)?;
                // Both configured: the table answers (it is indexed).
                (file && !table, table)
            }
            None => (self.file.is_some(), self.file.is_none()),
        };
        if table {
            return Ok(Origin::Table(database(data_dir, database_url)?));
        }
        match (&self.file, file) {
            (Some(f), true) => Ok(Origin::File(f.clone())),
            _ => bail!("--sink file needs --file FILE (or KEYWARD_AUDIT_LOG)"),
        }
    }
}

/// Every record of the file, oldest first: FILE.N … FILE.1, then FILE.
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

/// A table row as the file writes it (absent fields left out), plus its `id`.
pub fn entry_json(e: &AuditEntry) -> Value {
    let r = &e.row;
    let mut m = Map::new();
    m.insert("id".into(), json!(e.id));
    m.insert("time".into(), json!(r.time));
    m.insert("request_id".into(), json!(r.request_id));
    let mut opt = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            m.insert(k.into(), json!(v));
        }
    };
    opt("correlation_id", &r.correlation_id);
    opt("key_id", &r.key_id);
    opt("reason", &r.reason);
    opt("source", &r.source);
    m.insert("principal".into(), json!(r.principal));
    m.insert("instance".into(), json!(r.instance));
    m.insert("action".into(), json!(r.action));
    m.insert("outcome".into(), json!(r.outcome));
    Value::Object(m)
}

fn time_arg(flag: &str, v: &Option<String>) -> anyhow::Result<Option<i64>> {
    match v {
        Some(s) => match keyward_domain::parse_time(s) {
            Some(t) => Ok(Some(t)),
            None => bail!("--{flag} must be an RFC 3339 time, e.g. 2026-11-01T00:00:00Z"),
        },
        None => Ok(None),
    }
}

fn search_file(file: &Path, f: &AuditFilter) -> anyhow::Result<Vec<Value>> {
    let since = time_arg("since", &f.since)?;
    let until = time_arg("until", &f.until)?;
    let eq = |r: &Value, field: &str, want: &Option<String>| {
        want.as_ref()
            .is_none_or(|w| r.get(field).and_then(Value::as_str) == Some(w.as_str()))
    };
    let time_of = |r: &Value| {
        r.get("time")
            .and_then(Value::as_str)
            .and_then(keyward_domain::parse_time)
    };
    Ok(all_records(file)?
        .into_iter()
        .filter(|r| {
            eq(r, "action", &f.action)
                && eq(r, "key_id", &f.key_id)
                && eq(r, "principal", &f.principal)
                && eq(r, "instance", &f.instance)
                && eq(r, "outcome", &f.outcome)
                && eq(r, "request_id", &f.request_id)
                && since.is_none_or(|t| time_of(r).is_some_and(|rt| rt >= t))
                && until.is_none_or(|t| time_of(r).is_some_and(|rt| rt <= t))
        })
        .take(f.limit.unwrap_or(usize::MAX))
        .collect())
}

async fn read_table(url: &DatabaseUrl, q: &AuditQuery) -> anyhow::Result<Vec<AuditEntry>> {
    let store = SqlStore::connect(url)
        .await
        .with_context(|| format!("opening the database {url}"))?;
    let found = store.audit_records(q).await;
    store.close().await;
    found.with_context(|| format!("reading the audit table of {url}"))
}

/// Runs the command; `data_dir`/`database_url` are the admin command's global options (they
/// locate the table).
pub async fn run(
    cmd: AuditCmd,
    data_dir: Option<&Path>,
    database_url: Option<&str>,
) -> anyhow::Result<Vec<Value>> {
    match cmd {
        AuditCmd::Tail { source, lines } => match source.origin(data_dir, database_url)? {
            Origin::File(file) => {
                let all = all_records(&file)?;
                let skip = all.len().saturating_sub(lines);
                Ok(all.into_iter().skip(skip).collect())
            }
            Origin::Table(url) => {
                let q = AuditQuery {
                    limit: Some(i64::try_from(lines).unwrap_or(i64::MAX)),
                    newest_first: true,
                    ..AuditQuery::default()
                };
                let mut found = read_table(&url, &q).await?;
                found.reverse();
                Ok(found.iter().map(entry_json).collect())
            }
        },
        AuditCmd::Search { source, filter } => match source.origin(data_dir, database_url)? {
            Origin::File(file) => search_file(&file, &filter),
            Origin::Table(url) => {
                let q = AuditQuery {
                    action: filter.action.clone(),
                    key_id: filter.key_id.clone(),
                    principal: filter.principal.clone(),
                    instance: filter.instance.clone(),
                    outcome: filter.outcome.clone(),
                    request_id: filter.request_id.clone(),
                    since: time_arg("since", &filter.since)?,
                    until: time_arg("until", &filter.until)?,
                    after_id: None,
                    limit: filter.limit.map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
                    offset: None,
                    newest_first: false,
                };
                Ok(read_table(&url, &q).await?.iter().map(entry_json).collect())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn src(file: Option<&str>, sink: Option<&str>) -> AuditSource {
        AuditSource {
            file: file.map(PathBuf::from),
            sink: sink.map(str::to_string),
        }
    }

    #[test]
    fn which_log_is_read() {
        let url = Some("postgres://kw@db/kw");
        let table = Origin::Table(DatabaseUrl::new("postgres://kw@db/kw"));
        let file = Origin::File(PathBuf::from("a.jsonl"));
        assert_eq!(src(Some("a.jsonl"), None).origin(None, url).unwrap(), file);
        assert_eq!(src(None, None).origin(None, url).unwrap(), table);
        assert_eq!(
            src(Some("a.jsonl"), Some("database"))
                .origin(None, url)
                .unwrap(),
            table
        );
        assert_eq!(
            src(Some("a.jsonl"), Some("file,database"))
                .origin(None, url)
                .unwrap(),
            table
        );
        assert_eq!(
            src(Some("a.jsonl"), Some("file"))
                .origin(None, url)
                .unwrap(),
            file
        );
        assert!(src(None, Some("file")).origin(None, url).is_err());
        assert!(src(None, Some("syslog")).origin(None, url).is_err());
        // A data dir without a database is an error, not a new empty database.
        let dir = tempfile::tempdir().unwrap();
        let e = src(None, None).origin(Some(dir.path()), None).unwrap_err();
        assert!(e.to_string().contains("no database"), "{e}");
        assert!(!dir.path().join("keyward.db").exists());
    }
}

//! Fresh PostgreSQL databases (through `psql`) on the server named by
//! `KEYWARD_TEST_DATABASE_URL`, and control of the local cluster for restart tests.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::services;

/// `KEYWARD_TEST_DATABASE_URL`, or `None` after printing why the test is skipped (a failure
/// under `KEYWARD_REQUIRE_SERVICES`, see [`services`]).
pub fn pg_base(test: &str) -> Option<String> {
    match std::env::var("KEYWARD_TEST_DATABASE_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            services::missing(
                test,
                "PostgreSQL (KEYWARD_TEST_DATABASE_URL unset)",
                "set KEYWARD_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres",
            );
            None
        }
    }
}

/// Runs `sql` through `psql` against `url`; returns its unaligned, tuples-only output.
pub fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-Atq", "-c", sql])
        .output()
        .expect("psql must be installed for the PostgreSQL tests");
    assert!(
        out.status.success(),
        "psql {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A fresh database on the test server, dropped (with its connections) at the end.
pub struct Db {
    pub url: String,
    base: String,
    name: String,
}

impl Db {
    pub fn fresh(base: &str) -> Db {
        let name = format!("kw_test_{}", uuid::Uuid::new_v4().simple());
        psql(base, &format!("CREATE DATABASE {name}"));
        let (prefix, _) = base
            .rsplit_once('/')
            .expect("a database URL ends in /dbname");
        Db {
            url: format!("{prefix}/{name}"),
            base: base.to_string(),
            name,
        }
    }

    pub fn query(&self, sql: &str) -> String {
        psql(&self.url, sql)
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                self.base.as_str(),
                "-Atq",
                "-c",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Runs `pg_ctlcluster VERSION NAME ...` (cluster from `KEYWARD_TEST_PG_CLUSTER`, default
/// "15 main").
pub fn pg_ctlcluster(args: &[&str]) -> std::process::Output {
    let cluster = std::env::var("KEYWARD_TEST_PG_CLUSTER").unwrap_or_else(|_| "15 main".into());
    let mut parts = cluster.split_whitespace();
    let (v, n) = (parts.next().unwrap_or("15"), parts.next().unwrap_or("main"));
    Command::new("pg_ctlcluster")
        .args([v, n])
        .args(args)
        .output()
        .expect("pg_ctlcluster")
}

pub fn pg_running() -> bool {
    pg_ctlcluster(&["status"]).status.success()
}

/// Makes sure PostgreSQL runs again when the test ends, whether it passed or not.
pub struct PgGuard;

impl Drop for PgGuard {
    fn drop(&mut self) {
        for _ in 0..3 {
            if pg_running() {
                return;
            }
            let out = pg_ctlcluster(&["start"]);
            eprintln!(
                "PgGuard: started PostgreSQL again: {} {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

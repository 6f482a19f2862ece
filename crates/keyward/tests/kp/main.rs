//! Black-box tests of `keyward kp`: each test starts `keyward serve` on a free port with a
//! temporary data dir ([`keyward_testsupport::Node`]), creates an instance and API keys with
//! `keyward admin`, and runs `keyward kp ...` as a subprocess, checking exit codes, JSON and
//! human output, and reason codes on stderr. No API key ever shows up in any output.
//!
//! - `cli`: secure and plain imports, wrap/unwrap, offline tools, token auth, errors;
//! - `lifecycle`: the key lifecycle, dual authorization, aliases, listing and instance policies.
//!   The server uses the wall clock, so the 30-second and 4-hour rules are checked only from the
//!   "too early" side.
//!
//! Run: `cargo test -p keyward --test kp`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod cli;
mod kmip;
mod lifecycle;
mod shapes;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use keyward_testsupport::{apikey_in_data_dir, bin, Node, NodeOpts, Tenant};
use serde_json::Value;

/// Env vars that would change what `keyward kp` does; cleared for every subprocess.
const KP_ENV: &[&str] = &[
    "KP_URL",
    "KEYWARD_URL",
    "KP_INSTANCE_ID",
    "KP_APIKEY",
    "IBMCLOUD_API_KEY",
    "KP_IAM_URL",
    "KP_TOKEN",
    "KP_OUTPUT",
];

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A failed `kp` call: exit code and stderr.
struct Failure {
    code: i32,
    stderr: String,
}

impl Failure {
    /// The error names this reason code and HTTP status.
    fn expect(&self, status: u16, code: &str) {
        assert_eq!(self.code, 1, "{}", self.stderr);
        assert!(
            self.stderr.contains(&format!("HTTP {status}")),
            "want HTTP {status}: {}",
            self.stderr
        );
        assert!(self.stderr.contains(code), "want {code}: {}", self.stderr);
        assert!(self.stderr.contains("errorMsg:"), "{}", self.stderr);
    }
}

/// A `keyward serve` with one instance and a Manager API key in it.
struct Server {
    /// Killed when the server handle is dropped.
    _node: Node,
    dir: tempfile::TempDir,
    data: PathBuf,
    url: String,
    instance: String,
    apikey: String,
    /// Every API key handed out; none may appear in any output.
    secrets: Vec<String>,
}

impl Server {
    /// Starts a server with `pool` pre-generated import-token keypairs.
    fn start(pool: usize) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut node = Node::spawn_with(
            "kp",
            &NodeOpts {
                token_pool_size: pool,
                ..NodeOpts::sqlite(&data)
            },
            &["--insecure-http"],
        );
        node.wait_health_blocking(200);
        let tenant = Tenant::in_data_dir(&data, "kp-test");
        Server {
            url: node.base.clone(),
            _node: node,
            dir,
            data,
            instance: tenant.instance,
            secrets: vec![tenant.apikey.clone()],
            apikey: tenant.apikey,
        }
    }

    /// A new API key (a new identity) with `role` in the test instance.
    fn new_apikey(&mut self, role: &str, name: &str) -> String {
        let k = apikey_in_data_dir(&self.data, &self.instance, role, name);
        self.secrets.push(k.clone());
        k
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, content: &[u8]) -> String {
        let p = self.path(name);
        std::fs::write(&p, content).unwrap();
        p.to_str().unwrap().to_owned()
    }

    /// Runs `keyward kp ARGS` as `apikey` (URL and instance in env) with `env` added.
    fn run_as(&self, apikey: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(bin());
        cmd.arg("kp").args(args);
        for v in KP_ENV {
            cmd.env_remove(v);
        }
        cmd.env("KP_URL", &self.url)
            .env("KP_INSTANCE_ID", &self.instance)
            .env("KP_APIKEY", apikey);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.stdin(Stdio::null()).output().unwrap();
        for stream in [&out.stdout, &out.stderr] {
            let s = String::from_utf8_lossy(stream);
            for secret in &self.secrets {
                assert!(!s.contains(secret), "kp {args:?} printed an API key");
            }
        }
        out
    }

    /// Runs `keyward kp ARGS` as the Manager with `env` added.
    fn kp_raw(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.run_as(&self.apikey, args, env)
    }

    /// `keyward kp --output json ARGS` as `apikey`; must succeed; returns the JSON printed.
    fn kp_as(&self, apikey: &str, args: &[&str]) -> Value {
        let out = self.run_as(apikey, &[&["--output", "json"], args].concat(), &[]);
        assert!(
            out.status.success(),
            "kp {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "kp {args:?} printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    fn kp(&self, args: &[&str]) -> Value {
        self.kp_as(&self.apikey, args)
    }

    /// Runs a command that must fail; returns (exit code, stderr).
    fn kp_fail(&self, args: &[&str]) -> (i32, String) {
        let out = self.kp_raw(&[&["--output", "json"], args].concat(), &[]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "kp {args:?} unexpectedly succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        (out.status.code().unwrap_or(-1), stderr)
    }

    /// A command that must fail, as `apikey`, printing nothing on stdout.
    fn fail_as(&self, apikey: &str, args: &[&str]) -> Failure {
        let out = self.run_as(apikey, &[&["--output", "json"], args].concat(), &[]);
        assert!(
            !out.status.success(),
            "kp {args:?} unexpectedly succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            out.stdout.is_empty(),
            "kp {args:?} failed but printed on stdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        Failure {
            code: out.status.code().unwrap_or(-1),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn fail(&self, args: &[&str]) -> Failure {
        self.fail_as(&self.apikey, args)
    }

    /// Human output (the default) of a command that must succeed.
    fn human(&self, args: &[&str]) -> String {
        let out = self.kp_raw(args, &[]);
        assert!(
            out.status.success(),
            "kp {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A new root key named `name`; its id.
    fn create(&self, name: &str) -> String {
        let k = self.kp(&["key", "create", "--name", name]);
        assert_eq!(k["state"], 1, "{k}");
        k["id"].as_str().unwrap().to_owned()
    }

    fn wrap_unwrap(&self, key_id: &str, aad: &[&str]) {
        let dek = keyward_crypto::random_bytes(32).unwrap();
        let dek_b64 = B64.encode(&dek);
        let mut args = vec!["key", "wrap", key_id, "--plaintext", &dek_b64];
        for a in aad {
            args.extend(["--aad", a]);
        }
        let w = self.kp(&args);
        let ct = w["ciphertext"].as_str().unwrap().to_owned();
        let mut args = vec!["key", "unwrap", key_id, "--ciphertext", &ct];
        for a in aad {
            args.extend(["--aad", a]);
        }
        let u = self.kp(&args);
        assert_eq!(u["plaintext"].as_str().unwrap(), dek_b64);
        // generated DEK
        let w = self.kp(&["key", "wrap", key_id]);
        let generated = w["plaintext"].as_str().unwrap().to_owned();
        assert_eq!(B64.decode(&generated).unwrap().len(), 32);
        let u = self.kp(&[
            "key",
            "unwrap",
            key_id,
            "--ciphertext",
            w["ciphertext"].as_str().unwrap(),
        ]);
        assert_eq!(u["plaintext"].as_str().unwrap(), generated);
    }

    /// A bearer token for the Manager's API key.
    fn iam_token(&self) -> String {
        rt().block_on(keyward_testsupport::token(
            &keyward_testsupport::http(),
            &self.url,
            &self.apikey,
        ))
    }
}

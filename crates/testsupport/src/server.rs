//! The real `keyward` binary: [`Node`] is one `keyward serve` process (killed when dropped),
//! [`keyward`] a clean command line for any subcommand, [`admin_json`] `keyward admin`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::http;

/// The `keyward` binary that Cargo built for the running integration test: the test runs as
/// `target/<profile>/deps/<test>-<hash>`, the binary is `target/<profile>/keyward`.
/// `KEYWARD_TEST_BIN` names another one.
pub fn bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KEYWARD_TEST_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("a test binary lives in target/<profile>/deps");
    let b = profile_dir.join("keyward");
    assert!(
        b.is_file(),
        "{} is missing: build it (`cargo test -p keyward` does) or set KEYWARD_TEST_BIN",
        b.display()
    );
    b
}

/// A `keyward` command with no inherited `KEYWARD_*` settings, logging at `info`.
pub fn keyward() -> Command {
    let mut cmd = Command::new(bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("KEYWARD_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("KEYWARD_LOG", "info,sqlx=warn")
        .env("NO_COLOR", "1");
    cmd
}

/// The JSON a successful command printed; fails the test (with its stderr) otherwise.
pub fn ok_json(out: &Output, what: &str) -> Value {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{what} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// `keyward admin --data-dir DATA --output json ARGS...`, which must succeed; its JSON.
pub fn admin_json(data_dir: &Path, args: &[&str]) -> Value {
    let out = keyward()
        .arg("admin")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--output", "json"])
        .args(args)
        .output()
        .unwrap();
    ok_json(&out, &format!("admin {args:?}"))
}

/// How to start a node.
pub struct NodeOpts<'a> {
    pub database_url: Option<&'a str>,
    pub data_dir: &'a Path,
    /// `None`: the binary's default (`DATA_DIR/master.key`, made on first start).
    pub master_key_file: Option<&'a Path>,
    pub token_pool_size: usize,
    pub scheduler_interval: u64,
}

impl<'a> NodeOpts<'a> {
    /// SQLite in `data_dir`, the default master key file, no token pool, no scheduler.
    pub fn sqlite(data_dir: &'a Path) -> NodeOpts<'a> {
        NodeOpts {
            database_url: None,
            data_dir,
            master_key_file: None,
            token_pool_size: 0,
            scheduler_interval: 0,
        }
    }
}

/// One `keyward serve` process on its own port; killed when dropped (its log is printed when
/// the test is failing).
pub struct Node {
    pub name: String,
    pub base: String,
    pub port: u16,
    child: Option<Child>,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Node {
    pub fn spawn(name: &str, o: &NodeOpts<'_>) -> Node {
        Self::spawn_with(name, o, &[])
    }

    /// As [`Node::spawn`], with more `serve` flags.
    pub fn spawn_with(name: &str, o: &NodeOpts<'_>, extra: &[&str]) -> Node {
        Self::spawn_env(name, o, extra, &[])
    }

    /// As [`Node::spawn_with`], with environment variables set for the process (after the
    /// inherited `KEYWARD_*` ones are cleared, so `KEYWARD_LOG` here overrides the default).
    /// The logs are `DATA_DIR/NAME.log` (stderr) and `DATA_DIR/NAME.out` (stdout).
    pub fn spawn_env(
        name: &str,
        o: &NodeOpts<'_>,
        extra: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Node {
        let logs = (
            o.data_dir.join(format!("{name}.out")),
            o.data_dir.join(format!("{name}.log")),
        );
        Self::spawn_logging(name, o, extra, env, logs, false)
    }

    /// As [`Node::spawn_env`], appending stderr to `log` (and stdout to `log` with the
    /// extension `out`): the log of every node started on one deployment, kept outside its data
    /// dir.
    pub fn spawn_appending(
        name: &str,
        o: &NodeOpts<'_>,
        extra: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
        log: &Path,
    ) -> Node {
        let logs = (log.with_extension("out"), log.to_path_buf());
        Self::spawn_logging(name, o, extra, env, logs, true)
    }

    fn spawn_logging(
        name: &str,
        o: &NodeOpts<'_>,
        extra: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
        (stdout, stderr): (PathBuf, PathBuf),
        append: bool,
    ) -> Node {
        std::fs::create_dir_all(o.data_dir).unwrap();
        let port = crate::free_port();
        let mut args: Vec<OsString> = vec![
            "serve".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}").into(),
            "--data-dir".into(),
            o.data_dir.into(),
            "--token-pool-size".into(),
            o.token_pool_size.to_string().into(),
            "--scheduler-interval".into(),
            o.scheduler_interval.to_string().into(),
        ];
        if let Some(k) = o.master_key_file {
            args.extend(["--master-key-file".into(), k.into()]);
        }
        if let Some(u) = o.database_url {
            args.extend(["--database-url".into(), u.into()]);
        }
        args.extend(extra.iter().map(OsString::from));
        let mut node = Node {
            name: name.to_string(),
            base: format!("http://127.0.0.1:{port}"),
            port,
            child: None,
            args,
            env: env
                .iter()
                .map(|(k, v)| (OsString::from(k), v.to_os_string()))
                .collect(),
            stdout,
            stderr,
        };
        node.launch(append);
        node
    }

    fn launch(&mut self, append: bool) {
        let open = |p: &Path| {
            std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .append(append)
                .truncate(!append)
                .open(p)
                .unwrap()
        };
        let child = keyward()
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(open(&self.stdout))
            .stderr(open(&self.stderr))
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Still running (not exited)?
    pub fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Everything the node logged (stderr), across restarts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Everything the node printed on stdout, across restarts.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Polls `/healthz` until it answers `status`; returns its JSON body.
    pub async fn wait_health(&mut self, status: u16) -> Value {
        let http = http();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http.get(format!("{}/healthz", self.base)).send().await {
                if r.status().as_u16() == status {
                    return r.json().await.unwrap_or(Value::Null);
                }
            }
            assert!(
                self.alive(),
                "node {} exited before becoming healthy:\n{}",
                self.name,
                self.log()
            );
            assert!(
                Instant::now() < deadline,
                "node {} never answered /healthz {status}:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// [`Node::wait_health`] for callers without a runtime.
    pub fn wait_health_blocking(&mut self, status: u16) -> Value {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(self.wait_health(status))
    }

    /// The first-start banner: (instance id, API key), if this node printed one. Its stdout is
    /// a file, not a terminal, so the banner names the private file the key went to.
    pub fn banner(&self) -> Option<(String, String)> {
        banner_of(&std::fs::read_to_string(&self.stdout).ok()?)
    }

    /// Kills the process (SIGKILL) and starts it again with the same flags on the same port;
    /// the logs continue in the same files. Call [`Node::wait_health`] next.
    pub fn restart(&mut self) {
        self.kill();
        self.launch(true);
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and wait for a clean exit.
    pub fn terminate(mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let st = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                assert!(status.success(), "node {} exited with {status}", self.name);
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {} ignored SIGTERM",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- log of node {} ----\n{}", self.name, self.log());
        }
    }
}

/// (instance id, API key) from a first-start banner: the key itself (printed on a terminal) or
/// read from the file the banner names (anywhere else).
pub fn banner_of(out: &str) -> Option<(String, String)> {
    let field = |label: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .map(|v| v.trim_start_matches([' ', ':']).trim().to_string())
    };
    let key = match field("api key file") {
        Some(path) => std::fs::read_to_string(path).ok()?.trim().to_string(),
        None => field("api key")?,
    };
    Some((field("instance id")?, key))
}

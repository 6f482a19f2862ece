//! Server configuration: flags, then `KEYWARD_*` environment variables (both through clap),
//! then an optional TOML file, then defaults — in that order of precedence.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use keyward_store::DatabaseUrl;
use serde::Deserialize;

/// `keyward serve` flags; every one also reads `KEYWARD_<NAME>`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "KEYWARD_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Directory for the embedded database and the master key file [default: ./keyward-data]
    #[arg(long, env = "KEYWARD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database URL: sqlite://PATH or postgres://... [default: SQLite in the data dir]
    #[arg(long, env = "KEYWARD_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Master key file [default: <data-dir>/master.key]
    #[arg(long, env = "KEYWARD_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
    /// Master key provider: file, or pkcs11 (the master key inside an HSM) [default: file]
    #[arg(long, env = "KEYWARD_MASTER_KEY_PROVIDER")]
    pub master_key_provider: Option<String>,
    /// pkcs11: path of the PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so
    #[arg(long, env = "KEYWARD_PKCS11_MODULE")]
    pub pkcs11_module: Option<PathBuf>,
    /// pkcs11: label of the token that holds the master key
    #[arg(long, env = "KEYWARD_PKCS11_TOKEN_LABEL")]
    pub pkcs11_token_label: Option<String>,
    /// pkcs11: file with the token's user PIN, mode 0600 (or give the PIN in KEYWARD_PKCS11_PIN)
    #[arg(long, env = "KEYWARD_PKCS11_PIN_FILE")]
    pub pkcs11_pin_file: Option<PathBuf>,
    /// pkcs11: label of the master key object, created on first start [default: keyward-master-key]
    #[arg(long, env = "KEYWARD_PKCS11_KEY_LABEL")]
    pub pkcs11_key_label: Option<String>,
    /// Allow plain HTTP on a non-loopback address (only behind a TLS-terminating proxy)
    #[arg(long, env = "KEYWARD_INSECURE_HTTP")]
    pub insecure_http: bool,
    /// Do not serve the web console at /ui/ (same as KEYWARD_CONSOLE=false or `console = false`)
    #[arg(long)]
    pub no_console: bool,
    /// Serve the web console at /ui/ of the main listener [default: true]
    #[arg(long, env = "KEYWARD_CONSOLE", value_name = "BOOL")]
    pub console: Option<bool>,
    /// Pre-generated RSA-4096 import-token keypairs to keep ready (0 disables) [default: 4]
    #[arg(long, env = "KEYWARD_TOKEN_POOL_SIZE")]
    pub token_pool_size: Option<usize>,
    /// Optional TOML configuration file (keys as the long flags, with underscores)
    #[arg(long, env = "KEYWARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format: text or json [default: text]
    #[arg(long, env = "KEYWARD_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// TLS certificate chain (PEM); with --tls-key, serve HTTPS (reloaded on SIGHUP)
    #[arg(long, env = "KEYWARD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM)
    #[arg(long, env = "KEYWARD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Serve /healthz, /readyz and /metrics on this separate address instead of the main one
    #[arg(long, env = "KEYWARD_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Serve KMIP (TTLV over mutual TLS, docs/kmip.md) on this address, e.g. 0.0.0.0:5696 [default: off]
    #[arg(long, env = "KEYWARD_KMIP_LISTEN")]
    pub kmip_listen: Option<SocketAddr>,
    /// The KMIP listener's certificate chain (PEM) [default: --tls-cert]
    #[arg(long, env = "KEYWARD_KMIP_TLS_CERT")]
    pub kmip_tls_cert: Option<PathBuf>,
    /// The KMIP listener's private key (PEM) [default: --tls-key]
    #[arg(long, env = "KEYWARD_KMIP_TLS_KEY")]
    pub kmip_tls_key: Option<PathBuf>,
    /// Rate limit of wrap/unwrap/rewrap per (instance, principal): RATE[/BURST] per second, 0 = off [default: 0]
    #[arg(long, env = "KEYWARD_RATE_LIMIT_CRYPTO")]
    pub rate_limit_crypto: Option<String>,
    /// Rate limit of import-token calls per (instance, principal) [default: 0]
    #[arg(long, env = "KEYWARD_RATE_LIMIT_IMPORT_TOKEN")]
    pub rate_limit_import_token: Option<String>,
    /// Rate limit of all other API calls per (instance, principal) [default: 0]
    #[arg(long, env = "KEYWARD_RATE_LIMIT_MANAGEMENT")]
    pub rate_limit_management: Option<String>,
    /// Failed bearer-token attempts allowed per source address [default: 1/30]
    #[arg(long, env = "KEYWARD_AUTH_FAILURE_LIMIT")]
    pub auth_failure_limit: Option<String>,
    /// Rate limit of import-token creations (POST /import_token) per (instance, principal) [default: 2/20]
    #[arg(long, env = "KEYWARD_RATE_LIMIT_IMPORT_TOKEN_CREATE")]
    pub rate_limit_import_token_create: Option<String>,
    /// Rate limit of key creations and imports (POST /keys) per (instance, principal) [default: 50/500]
    #[arg(long, env = "KEYWARD_RATE_LIMIT_KEY_CREATE")]
    pub rate_limit_key_create: Option<String>,
    /// Failed secure imports after which an import token is locked until a new one is created;
    /// 0 = no limit [default: 10]
    #[arg(long, env = "KEYWARD_IMPORT_FAILURE_LIMIT")]
    pub import_failure_limit: Option<i64>,
    /// Believe X-Forwarded-For only from peers in this CIDR (repeatable; env: comma-separated)
    /// [default: none, the header is ignored]
    #[arg(long, env = "KEYWARD_TRUSTED_PROXY", value_delimiter = ',')]
    pub trusted_proxy: Vec<String>,
    /// Audit log: JSON lines appended to this file (fsync'd; a request whose record cannot be
    /// written fails with 503). Off when unset.
    #[arg(long, env = "KEYWARD_AUDIT_LOG")]
    pub audit_log: Option<PathBuf>,
    /// Where audit records go: file (needs --audit-log), database (the audit_log table of the
    /// server's database), or file,database (both; a request fails if either cannot be
    /// written) [default: file when --audit-log is set, else no audit log]
    #[arg(long, env = "KEYWARD_AUDIT_SINK")]
    pub audit_sink: Option<String>,
    /// Rotate the audit log at this size in bytes [default: 104857600]
    #[arg(long, env = "KEYWARD_AUDIT_LOG_MAX_BYTES")]
    pub audit_log_max_bytes: Option<u64>,
    /// Rotated audit files to keep [default: 10]
    #[arg(long, env = "KEYWARD_AUDIT_LOG_KEEP")]
    pub audit_log_keep: Option<usize>,
    /// Most entries in each in-memory cache and limiter table (keys, roles, policies, verified
    /// tokens, rate-limit buckets, failing addresses; opened import-token keys: at most 1024);
    /// past it, entries are evicted [default: 50000]
    #[arg(long, env = "KEYWARD_CACHE_ENTRIES")]
    pub cache_entries: Option<usize>,
    /// Most entries in the key cache (opened key material, about 1 KiB each) [default: 10000,
    /// or --cache-entries if smaller]
    #[arg(long, env = "KEYWARD_KEY_CACHE_ENTRIES")]
    pub key_cache_entries: Option<usize>,
    /// SQLite's page cache per database connection, in KiB (9 connections: 1 writer, 8
    /// readers); at least 16 [default: 256]
    #[arg(long, env = "KEYWARD_SQLITE_CACHE_KIB")]
    pub sqlite_cache_kib: Option<u32>,
    /// Seconds between scheduler passes (policy rotations, 90-day purge); 0 disables [default: 60]
    #[arg(long, env = "KEYWARD_SCHEDULER_INTERVAL")]
    pub scheduler_interval: Option<u64>,
    /// Seconds between looks for new master key generations and for the database's choice of
    /// sealing key (how fast a running node follows `admin master-key rotate`) [default: 5]
    #[arg(long, env = "KEYWARD_MASTER_KEY_WATCH")]
    pub master_key_watch: Option<u64>,
    /// After upgrading a database written by a Keyward without row authentication: seconds
    /// during which rows still written by older nodes (a rolling upgrade of a cluster) are
    /// accepted and tagged; 0 refuses them at once (docs/threat-model.md) [default: 0]
    #[arg(long, env = "KEYWARD_ROW_AUTH_UPGRADE_GRACE")]
    pub row_auth_upgrade_grace: Option<u64>,
    /// Seconds between writes of recorded key usage (last wrap/unwrap/rewrap and by whom): the
    /// staleness bound of last-used dates across nodes; 0 turns usage tracking off
    /// (docs/design.md, "Key usage") [default: 10]
    #[arg(long, env = "KEYWARD_USAGE_FLUSH_INTERVAL")]
    pub usage_flush_interval: Option<u64>,
    // --- The network edge (crates/keyward/src/edge.rs; docs/design.md "The network edge") ---
    /// Seconds a new connection has to complete its TLS handshake and send its first request
    /// head, and any connection to finish a request head once its first byte arrived [default: 10]
    #[arg(long, env = "KEYWARD_HEADER_TIMEOUT")]
    pub header_timeout: Option<u64>,
    /// Seconds a request body (at most 64 KiB) has to arrive in full [default: 30]
    #[arg(long, env = "KEYWARD_BODY_TIMEOUT")]
    pub body_timeout: Option<u64>,
    /// Slowest accepted request body, in bytes per second, averaged from the first read of the
    /// body and enforced after a 2 s grace; 0 = only --body-timeout [default: 1024]
    #[arg(long, env = "KEYWARD_MIN_BODY_RATE")]
    pub min_body_rate: Option<u64>,
    /// Seconds a keep-alive connection may wait for its next request [default: 60]
    #[arg(long, env = "KEYWARD_IDLE_TIMEOUT")]
    pub idle_timeout: Option<u64>,
    /// Open connections per listener; past it, new connections wait in the kernel's accept
    /// queue until one closes [default: 4096]
    #[arg(long, env = "KEYWARD_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// PostgreSQL: refuse writes (503) while the server has no synchronous standby attached,
    /// so that nothing acknowledged can be lost in a failover; reads keep working
    /// (docs/postgres.md) [default: off]
    #[arg(long, env = "KEYWARD_REQUIRE_SYNC_REPLICA")]
    pub require_sync_replica: bool,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    master_key_file: Option<PathBuf>,
    master_key_provider: Option<String>,
    pkcs11_module: Option<PathBuf>,
    pkcs11_token_label: Option<String>,
    pkcs11_pin_file: Option<PathBuf>,
    pkcs11_key_label: Option<String>,
    insecure_http: Option<bool>,
    console: Option<bool>,
    token_pool_size: Option<usize>,
    log_format: Option<String>,
    scheduler_interval: Option<u64>,
    master_key_watch: Option<u64>,
    row_auth_upgrade_grace: Option<u64>,
    usage_flush_interval: Option<u64>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    metrics_listen: Option<SocketAddr>,
    kmip_listen: Option<SocketAddr>,
    kmip_tls_cert: Option<PathBuf>,
    kmip_tls_key: Option<PathBuf>,
    audit_log: Option<PathBuf>,
    audit_sink: Option<String>,
    audit_log_max_bytes: Option<u64>,
    audit_log_keep: Option<usize>,
    rate_limit_crypto: Option<String>,
    rate_limit_import_token: Option<String>,
    rate_limit_management: Option<String>,
    auth_failure_limit: Option<String>,
    cache_entries: Option<usize>,
    key_cache_entries: Option<usize>,
    sqlite_cache_kib: Option<u32>,
    rate_limit_import_token_create: Option<String>,
    rate_limit_key_create: Option<String>,
    import_failure_limit: Option<i64>,
    trusted_proxy: Option<Vec<String>>,
    // The network edge.
    header_timeout: Option<u64>,
    body_timeout: Option<u64>,
    min_body_rate: Option<u64>,
    idle_timeout: Option<u64>,
    max_connections: Option<usize>,
    require_sync_replica: Option<bool>,
}

/// Creates the data directory (mode 0700) when the database is the SQLite file in it.
pub fn create_data_dir(settings: &Settings) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if settings.database_url.is_sqlite() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&settings.data_dir)
            .with_context(|| format!("creating data dir {}", settings.data_dir.display()))?;
    }
    Ok(())
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: DatabaseUrl,
    pub master_key_file: PathBuf,
    /// Which master key provider to use (`master_key_file` is the `file` provider's key).
    pub master_key: MasterKeySource,
    /// The HSM, when one is configured: with `master_key` = `File` its keys are still loaded,
    /// so rows moved into the HSM by `admin master-key migrate` keep opening.
    pub pkcs11: Option<Pkcs11Settings>,
    /// Seconds between rescans of the master keyring (0: only at start).
    pub master_key_watch_secs: u64,
    /// Grace period of a row-authentication upgrade (see `--row-auth-upgrade-grace`).
    pub row_auth_upgrade_grace_secs: u64,
    /// See `--usage-flush-interval`.
    pub usage_flush_interval_secs: u64,
    pub insecure_http: bool,
    /// Serve the web console at `/ui/` (docs/console.md).
    pub console: bool,
    pub token_pool_size: usize,
    pub log_json: bool,
    pub scheduler_interval_secs: u64,
    /// (certificate chain, private key) PEM files.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub metrics_listen: Option<SocketAddr>,
    /// The KMIP listener (docs/kmip.md), when one is configured.
    pub kmip: Option<crate::kmip_listener::KmipSettings>,
    pub limits: keyward_api::ratelimit::Limits,
    /// Most entries in each cache and limiter table.
    pub cache_entries: usize,
    /// Most entries in the key cache.
    pub key_cache_entries: usize,
    /// SQLite's page cache per connection, KiB (`keyward_store::set_sqlite_cache_kib`).
    pub sqlite_cache_kib: u32,
    /// Peers whose X-Forwarded-For names the client.
    pub trusted_proxies: keyward_api::proxy::TrustedProxies,
    /// Failed secure imports after which an import token is locked (0: no limit).
    pub import_failure_limit: i64,
    /// The file sink: (file, rotate at bytes, files kept)
    pub audit_log: Option<(PathBuf, u64, usize)>,
    /// The database sink: records go into the `audit_log` table of `database_url`.
    pub audit_database: bool,
    /// Timeouts and the connection cap of every listener.
    pub edge: crate::edge::EdgeSettings,
    /// PostgreSQL: writes are refused while no synchronous standby is attached.
    pub require_sync_replica: bool,
}

/// The audit sinks named by `--audit-sink`: (file, database).
pub fn parse_audit_sinks(s: &str) -> anyhow::Result<(bool, bool)> {
    let (mut file, mut database) = (false, false);
    for part in s.split(',').map(str::trim) {
        match part {
            "file" => file = true,
            "database" => database = true,
            other => bail!(
                "--audit-sink takes file, database or file,database; {other:?} is none of them"
            ),
        }
    }
    Ok((file, database))
}

/// The master key provider `serve` uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterKeySource {
    /// A key file (`Settings::master_key_file`).
    File,
    /// An AES-256 key inside an HSM, through a PKCS#11 module.
    Pkcs11(Pkcs11Settings),
}

/// Where the HSM master key is. No secret here: the PIN is read when the key is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11Settings {
    pub module: PathBuf,
    pub token_label: String,
    pub key_label: String,
    /// The PIN file; `None` means the PIN is in the environment variable [`PKCS11_PIN_ENV`].
    pub pin_file: Option<PathBuf>,
}

/// The environment variable that may hold the PKCS#11 user PIN.
pub const PKCS11_PIN_ENV: &str = "KEYWARD_PKCS11_PIN";

/// Parses `RATE` or `RATE/BURST` (requests per second; burst defaults to the rate).
pub fn parse_rate(s: &str) -> anyhow::Result<keyward_api::ratelimit::Rate> {
    let (r, b) = match s.split_once('/') {
        Some((r, b)) => (r.trim().parse::<f64>()?, b.trim().parse::<f64>()?),
        None => {
            let r = s.trim().parse::<f64>()?;
            (r, r)
        }
    };
    if !(r >= 0.0 && b >= 0.0 && r.is_finite() && b.is_finite()) || (r > 0.0 && b < 1.0) {
        bail!("a rate must be RATE or RATE/BURST with RATE >= 0 and BURST >= 1");
    }
    Ok(keyward_api::ratelimit::Rate {
        per_sec: r,
        burst: b,
    })
}

pub fn sqlite_url(path: &Path) -> DatabaseUrl {
    DatabaseUrl::new(format!("sqlite://{}?mode=rwc", path.display()))
}

impl ServeArgs {
    pub fn resolve(&self) -> anyhow::Result<Settings> {
        let file: FileConfig = match &self.config {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading config file {}", p.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("parsing config file {}", p.display()))?
            }
            None => FileConfig::default(),
        };
        let data_dir = self
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./keyward-data"));
        let database_url = self
            .database_url
            .clone()
            .or(file.database_url)
            .map(DatabaseUrl::new)
            .unwrap_or_else(|| sqlite_url(&data_dir.join("keyward.db")));
        let log_format = self
            .log_format
            .clone()
            .or(file.log_format)
            .unwrap_or_else(|| "text".into());
        if log_format != "text" && log_format != "json" {
            bail!("--log-format must be text or json");
        }
        let listen = self
            .listen
            .or(file.listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        let insecure_http = self.insecure_http || file.insecure_http.unwrap_or(false);
        let tls = match (
            self.tls_cert.clone().or(file.tls_cert),
            self.tls_key.clone().or(file.tls_key),
        ) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => bail!("--tls-cert and --tls-key go together"),
        };
        let kmip = match self.kmip_listen.or(file.kmip_listen) {
            None => None,
            Some(listen) => {
                let (cert, key) = match (
                    self.kmip_tls_cert.clone().or(file.kmip_tls_cert),
                    self.kmip_tls_key.clone().or(file.kmip_tls_key),
                ) {
                    (Some(c), Some(k)) => (c, k),
                    (None, None) => match &tls {
                        Some((c, k)) => (c.clone(), k.clone()),
                        None => bail!(
                            "--kmip-listen needs a certificate: --kmip-tls-cert and --kmip-tls-key, or --tls-cert and --tls-key"
                        ),
                    },
                    _ => bail!("--kmip-tls-cert and --kmip-tls-key go together"),
                };
                Some(crate::kmip_listener::KmipSettings { listen, cert, key })
            }
        };
        let defaults = keyward_api::ratelimit::Limits::default();
        let cache_entries = self
            .cache_entries
            .or(file.cache_entries)
            .unwrap_or(keyward_service::cache::DEFAULT_ENTRIES);
        if cache_entries == 0 {
            bail!("--cache-entries must be at least 1");
        }
        let key_cache_entries = self
            .key_cache_entries
            .or(file.key_cache_entries)
            .unwrap_or(keyward_service::cache::DEFAULT_KEY_ENTRIES.min(cache_entries));
        if key_cache_entries == 0 {
            bail!("--key-cache-entries must be at least 1");
        }
        let sqlite_cache_kib = self
            .sqlite_cache_kib
            .or(file.sqlite_cache_kib)
            .unwrap_or(keyward_store::DEFAULT_SQLITE_CACHE_KIB);
        if sqlite_cache_kib < 16 {
            bail!("--sqlite-cache-kib must be at least 16");
        }
        let rate = |flag: &Option<String>, file: Option<String>, d| -> anyhow::Result<_> {
            match flag.clone().or(file) {
                Some(s) => parse_rate(&s),
                None => Ok(d),
            }
        };
        let limits = keyward_api::ratelimit::Limits {
            crypto: rate(
                &self.rate_limit_crypto,
                file.rate_limit_crypto,
                defaults.crypto,
            )?,
            import_token: rate(
                &self.rate_limit_import_token,
                file.rate_limit_import_token,
                defaults.import_token,
            )?,
            management: rate(
                &self.rate_limit_management,
                file.rate_limit_management,
                defaults.management,
            )?,
            auth_failures: rate(
                &self.auth_failure_limit,
                file.auth_failure_limit,
                defaults.auth_failures,
            )?,
            table_entries: cache_entries,
            ..defaults
        };
        // Creation sub-limits and trusted proxies.
        let limits = keyward_api::ratelimit::Limits {
            import_token_create: rate(
                &self.rate_limit_import_token_create,
                file.rate_limit_import_token_create,
                defaults.import_token_create,
            )?,
            key_create: rate(
                &self.rate_limit_key_create,
                file.rate_limit_key_create,
                defaults.key_create,
            )?,
            ..limits
        };
        let trusted_proxies = keyward_api::proxy::TrustedProxies::new(
            if self.trusted_proxy.is_empty() {
                file.trusted_proxy.unwrap_or_default()
            } else {
                self.trusted_proxy.clone()
            }
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                s.parse()
                    .map_err(|e| anyhow::anyhow!("--trusted-proxy: {e}"))
            })
            .collect::<anyhow::Result<_>>()?,
        );
        let import_failure_limit = self
            .import_failure_limit
            .or(file.import_failure_limit)
            .unwrap_or(keyward_service::tokens::MAX_FAILED_IMPORTS);
        if import_failure_limit < 0 {
            bail!("--import-failure-limit must be 0 (no limit) or more");
        }
        let provider = self
            .master_key_provider
            .clone()
            .or(file.master_key_provider)
            .unwrap_or_else(|| "file".into());
        let module = self.pkcs11_module.clone().or(file.pkcs11_module);
        let token_label = self.pkcs11_token_label.clone().or(file.pkcs11_token_label);
        let pkcs11 = match (module, token_label) {
            (Some(module), Some(token_label)) => {
                let pin_file = self.pkcs11_pin_file.clone().or(file.pkcs11_pin_file);
                let pin_env = std::env::var_os(PKCS11_PIN_ENV).is_some();
                match (&pin_file, pin_env) {
                    (None, false) => bail!("a PKCS#11 HSM needs --pkcs11-pin-file or {PKCS11_PIN_ENV}"),
                    (Some(_), true) => bail!("give the PKCS#11 PIN once: --pkcs11-pin-file or {PKCS11_PIN_ENV}, not both"),
                    _ => {}
                }
                Some(Pkcs11Settings {
                    module,
                    token_label,
                    key_label: self
                        .pkcs11_key_label
                        .clone()
                        .or(file.pkcs11_key_label)
                        .unwrap_or_else(|| "keyward-master-key".into()),
                    pin_file,
                })
            }
            (None, None) => None,
            _ => bail!("--pkcs11-module and --pkcs11-token-label go together"),
        };
        let master_key = match provider.as_str() {
            "file" => MasterKeySource::File,
            "pkcs11" => match &pkcs11 {
                Some(p) => MasterKeySource::Pkcs11(p.clone()),
                None => bail!(
                    "--master-key-provider pkcs11 needs --pkcs11-module and --pkcs11-token-label"
                ),
            },
            other => bail!("--master-key-provider must be file or pkcs11, not {other:?}"),
        };
        let audit_file = self.audit_log.clone().or(file.audit_log);
        let (file_sink, audit_database) =
            match self.audit_sink.clone().or(file.audit_sink).as_deref() {
                Some(s) => parse_audit_sinks(s)?,
                None => (audit_file.is_some(), false),
            };
        match (file_sink, &audit_file) {
            (true, None) => bail!("--audit-sink file needs --audit-log FILE"),
            (false, Some(f)) => bail!(
                "--audit-log {} is set, but --audit-sink does not name file: use \
                 --audit-sink file,database to write both, or drop --audit-log",
                f.display()
            ),
            _ => {}
        }
        let edge = {
            let d = crate::edge::EdgeSettings::default();
            let secs = |name: &str, flag: Option<u64>, file: Option<u64>, d: Duration| match flag
                .or(file)
            {
                Some(0) => bail!("--{name} must be at least 1 second"),
                Some(s) if s > 86_400 => bail!("--{name} must be at most 86400 seconds"),
                Some(s) => Ok(Duration::from_secs(s)),
                None => Ok(d),
            };
            let max_connections = self
                .max_connections
                .or(file.max_connections)
                .unwrap_or(d.max_connections);
            if !(1..=crate::edge::MAX_CONNECTIONS_LIMIT).contains(&max_connections) {
                bail!(
                    "--max-connections must be between 1 and {}",
                    crate::edge::MAX_CONNECTIONS_LIMIT
                );
            }
            crate::edge::EdgeSettings {
                header_timeout: secs(
                    "header-timeout",
                    self.header_timeout,
                    file.header_timeout,
                    d.header_timeout,
                )?,
                body_timeout: secs(
                    "body-timeout",
                    self.body_timeout,
                    file.body_timeout,
                    d.body_timeout,
                )?,
                min_body_rate: self
                    .min_body_rate
                    .or(file.min_body_rate)
                    .unwrap_or(d.min_body_rate),
                idle_timeout: secs(
                    "idle-timeout",
                    self.idle_timeout,
                    file.idle_timeout,
                    d.idle_timeout,
                )?,
                max_connections,
            }
        };
        let require_sync_replica =
            self.require_sync_replica || file.require_sync_replica.unwrap_or(false);
        if require_sync_replica && !database_url.is_postgres() {
            bail!("--require-sync-replica needs a PostgreSQL database (--database-url postgres://...)");
        }
        if !listen.ip().is_loopback() && !insecure_http && tls.is_none() {
            bail!(
                "refusing plain HTTP on the non-loopback address {listen}: TLS is not configured. \
                 Listen on 127.0.0.1, or pass --insecure-http if a TLS proxy fronts Keyward"
            );
        }
        Ok(Settings {
            listen,
            master_key_file: self
                .master_key_file
                .clone()
                .or(file.master_key_file)
                .unwrap_or_else(|| data_dir.join("master.key")),
            master_key,
            pkcs11,
            master_key_watch_secs: self.master_key_watch.or(file.master_key_watch).unwrap_or(5),
            row_auth_upgrade_grace_secs: self
                .row_auth_upgrade_grace
                .or(file.row_auth_upgrade_grace)
                .unwrap_or(0),
            usage_flush_interval_secs: self
                .usage_flush_interval
                .or(file.usage_flush_interval)
                .unwrap_or(10),
            data_dir,
            database_url,
            insecure_http,
            console: !self.no_console && self.console.or(file.console).unwrap_or(true),
            token_pool_size: self.token_pool_size.or(file.token_pool_size).unwrap_or(4),
            log_json: log_format == "json",
            scheduler_interval_secs: self
                .scheduler_interval
                .or(file.scheduler_interval)
                .unwrap_or(60),
            tls,
            metrics_listen: self.metrics_listen.or(file.metrics_listen),
            kmip,
            limits,
            cache_entries,
            key_cache_entries,
            sqlite_cache_kib,
            trusted_proxies,
            import_failure_limit,
            audit_log: audit_file.map(|p| {
                (
                    p,
                    self.audit_log_max_bytes
                        .or(file.audit_log_max_bytes)
                        .unwrap_or(100 * 1024 * 1024),
                    self.audit_log_keep.or(file.audit_log_keep).unwrap_or(10),
                )
            }),
            audit_database,
            edge,
            require_sync_replica,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn flags_beat_file_and_defaults_apply() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("kw.toml");
        std::fs::write(
            &cfg,
            "listen = \"127.0.0.1:9999\"\ntoken_pool_size = 7\ndata_dir = \"/tmp/x\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(cfg),
            token_pool_size: Some(2),
            ..ServeArgs::default()
        };
        let s = args.resolve().unwrap();
        assert_eq!(s.listen.port(), 9999);
        assert_eq!(s.token_pool_size, 2);
        assert_eq!(s.data_dir, PathBuf::from("/tmp/x"));
        assert!(s.database_url.expose().contains("/tmp/x/keyward.db"));
    }

    #[test]
    fn cache_entries_bound_every_table() {
        let d = ServeArgs::default().resolve().unwrap();
        assert_eq!(d.cache_entries, 50_000);
        assert_eq!(d.limits.table_entries, 50_000);
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("kw.toml");
        std::fs::write(&cfg, "cache_entries = 1000\n").unwrap();
        let s = ServeArgs {
            config: Some(cfg),
            ..ServeArgs::default()
        }
        .resolve()
        .unwrap();
        assert_eq!((s.cache_entries, s.limits.table_entries), (1000, 1000));
        assert!(ServeArgs {
            cache_entries: Some(0),
            ..ServeArgs::default()
        }
        .resolve()
        .is_err());
    }

    #[test]
    fn key_cache_has_its_own_smaller_bound() {
        let d = ServeArgs::default().resolve().unwrap();
        assert_eq!((d.cache_entries, d.key_cache_entries), (50_000, 10_000));
        let small = ServeArgs {
            cache_entries: Some(500),
            ..ServeArgs::default()
        };
        assert_eq!(small.resolve().unwrap().key_cache_entries, 500);
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("kw.toml");
        std::fs::write(&cfg, "key_cache_entries = 20000\n").unwrap();
        let args = ServeArgs {
            config: Some(cfg),
            ..ServeArgs::default()
        };
        assert_eq!(args.resolve().unwrap().key_cache_entries, 20_000);
        let flag = ServeArgs {
            key_cache_entries: Some(7),
            ..args
        };
        assert_eq!(flag.resolve().unwrap().key_cache_entries, 7);
        assert!(ServeArgs {
            key_cache_entries: Some(0),
            ..ServeArgs::default()
        }
        .resolve()
        .is_err());
    }

    #[test]
    fn sqlite_cache_is_bounded_by_a_setting() {
        let d = ServeArgs::default().resolve().unwrap();
        assert_eq!(d.sqlite_cache_kib, 256);
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("kw.toml");
        std::fs::write(&cfg, "sqlite_cache_kib = 1024\n").unwrap();
        let args = ServeArgs {
            config: Some(cfg),
            ..ServeArgs::default()
        };
        assert_eq!(args.resolve().unwrap().sqlite_cache_kib, 1024);
        let flag = ServeArgs {
            sqlite_cache_kib: Some(64),
            ..args
        };
        assert_eq!(flag.resolve().unwrap().sqlite_cache_kib, 64);
        assert!(ServeArgs {
            sqlite_cache_kib: Some(8),
            ..ServeArgs::default()
        }
        .resolve()
        .is_err());
    }

    #[test]
    fn master_key_provider_settings() {
        assert_eq!(
            ServeArgs::default().resolve().unwrap().master_key,
            MasterKeySource::File
        );
        let args = ServeArgs {
            master_key_provider: Some("pkcs11".into()),
            pkcs11_module: Some("/usr/lib/softhsm/libsofthsm2.so".into()),
            pkcs11_token_label: Some("keyward".into()),
            pkcs11_pin_file: Some("/etc/keyward/pin".into()),
            ..ServeArgs::default()
        };
        let s = args.resolve().unwrap();
        assert_eq!(
            s.master_key,
            MasterKeySource::Pkcs11(Pkcs11Settings {
                module: "/usr/lib/softhsm/libsofthsm2.so".into(),
                token_label: "keyward".into(),
                key_label: "keyward-master-key".into(),
                pin_file: Some("/etc/keyward/pin".into()),
            })
        );
        let no_token = ServeArgs {
            pkcs11_token_label: None,
            ..args.clone()
        };
        assert!(no_token.resolve().is_err());
        let bogus = ServeArgs {
            master_key_provider: Some("kms".into()),
            ..args
        };
        assert!(bogus.resolve().is_err());
    }

    #[test]
    fn non_loopback_plain_http_is_refused() {
        let args = ServeArgs {
            listen: Some("0.0.0.0:8080".parse().unwrap()),
            ..ServeArgs::default()
        };
        assert!(args.resolve().is_err());
        let args = ServeArgs {
            insecure_http: true,
            ..args
        };
        assert!(args.resolve().is_ok());
    }

    #[test]
    fn the_console_is_on_unless_turned_off() {
        assert!(ServeArgs::default().resolve().unwrap().console);
        let off = ServeArgs {
            console: Some(false),
            ..ServeArgs::default()
        };
        assert!(!off.resolve().unwrap().console);
        let off = ServeArgs {
            no_console: true,
            console: Some(true),
            ..ServeArgs::default()
        };
        assert!(!off.resolve().unwrap().console);
    }

    #[test]
    fn audit_sinks() {
        let resolve = |sink: Option<&str>, log: Option<&str>| {
            ServeArgs {
                audit_sink: sink.map(str::to_string),
                audit_log: log.map(PathBuf::from),
                ..ServeArgs::default()
            }
            .resolve()
            .map(|s| (s.audit_log.map(|(p, _, _)| p), s.audit_database))
        };
        let f = Some(PathBuf::from("/var/log/a.jsonl"));
        assert_eq!(resolve(None, None).unwrap(), (None, false));
        assert_eq!(
            resolve(None, Some("/var/log/a.jsonl")).unwrap(),
            (f.clone(), false)
        );
        assert_eq!(
            resolve(Some("file"), Some("/var/log/a.jsonl")).unwrap(),
            (f.clone(), false)
        );
        assert_eq!(resolve(Some("database"), None).unwrap(), (None, true));
        assert_eq!(
            resolve(Some("file, database"), Some("/var/log/a.jsonl")).unwrap(),
            (f, true)
        );
        assert!(resolve(Some("file"), None).is_err());
        assert!(resolve(Some("file,database"), None).is_err());
        // A file given but not written would be a silent surprise: refused.
        assert!(resolve(Some("database"), Some("/var/log/a.jsonl")).is_err());
        assert!(resolve(Some("syslog"), None).is_err());
        assert!(resolve(Some(""), None).is_err());

        // The TOML file sets it too (the flag wins).
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("kw.toml");
        std::fs::write(&cfg, "audit_sink = \"database\"\n").unwrap();
        let args = ServeArgs {
            config: Some(cfg),
            ..ServeArgs::default()
        };
        assert!(args.resolve().unwrap().audit_database);
        let args = ServeArgs {
            audit_sink: Some("file".into()),
            audit_log: Some("/tmp/a.jsonl".into()),
            ..args
        };
        assert!(!args.resolve().unwrap().audit_database);
    }

    #[test]
    fn creation_limits_and_trusted_proxies() {
        use keyward_api::ratelimit::{Limits, Rate};
        let s = ServeArgs::default().resolve().unwrap();
        assert_eq!(s.limits.import_token_create, Limits::IMPORT_TOKEN_CREATE);
        assert_eq!(s.limits.key_create, Limits::KEY_CREATE);
        assert!(s.trusted_proxies.is_empty());

        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("kw.toml");
        std::fs::write(
            &cfg,
            "rate_limit_key_create = \"0\"\ntrusted_proxy = [\"10.0.0.0/8\", \"::1\"]\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(cfg),
            rate_limit_import_token_create: Some("1/5".into()),
            ..ServeArgs::default()
        };
        let s = args.resolve().unwrap();
        assert_eq!(s.limits.key_create, Rate::OFF);
        assert_eq!(
            s.limits.import_token_create,
            Rate {
                per_sec: 1.0,
                burst: 5.0
            }
        );
        assert!(s.trusted_proxies.trusts("10.9.8.7".parse().unwrap()));
        assert!(s.trusted_proxies.trusts("::1".parse().unwrap()));
        assert!(!s.trusted_proxies.trusts("127.0.0.1".parse().unwrap()));
        // the flag replaces the file's list
        let args = ServeArgs {
            trusted_proxy: vec!["127.0.0.1/32".into()],
            ..args
        };
        let s = args.resolve().unwrap();
        assert!(s.trusted_proxies.trusts("127.0.0.1".parse().unwrap()));
        assert!(!s.trusted_proxies.trusts("10.9.8.7".parse().unwrap()));
        let bad = ServeArgs {
            trusted_proxy: vec!["proxy.example".into()],
            ..ServeArgs::default()
        };
        assert!(bad.resolve().is_err());
    }

    #[test]
    fn edge_settings() {
        let d = ServeArgs::default().resolve().unwrap().edge;
        assert_eq!(d, crate::edge::EdgeSettings::default());
        assert_eq!(d.header_timeout, Duration::from_secs(10));
        assert_eq!(d.max_connections, 4096);
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("kw.toml");
        std::fs::write(
            &cfg,
            "header_timeout = 3\nbody_timeout = 7\nmin_body_rate = 0\nidle_timeout = 20\nmax_connections = 50\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(cfg),
            idle_timeout: Some(5),
            ..ServeArgs::default()
        };
        let e = args.resolve().unwrap().edge;
        assert_eq!(e.header_timeout, Duration::from_secs(3));
        assert_eq!(e.body_timeout, Duration::from_secs(7));
        assert_eq!(e.min_body_rate, 0);
        assert_eq!(e.idle_timeout, Duration::from_secs(5));
        assert_eq!(e.max_connections, 50);
        for bad in [
            ServeArgs {
                header_timeout: Some(0),
                ..ServeArgs::default()
            },
            ServeArgs {
                body_timeout: Some(0),
                ..ServeArgs::default()
            },
            ServeArgs {
                idle_timeout: Some(86_401),
                ..ServeArgs::default()
            },
            ServeArgs {
                max_connections: Some(0),
                ..ServeArgs::default()
            },
        ] {
            assert!(bad.resolve().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("kw.toml");
        std::fs::write(&cfg, "lisen = \"127.0.0.1:1\"\n").unwrap();
        let args = ServeArgs {
            config: Some(cfg),
            ..ServeArgs::default()
        };
        assert!(args.resolve().is_err());
    }

    #[test]
    fn require_sync_replica_needs_postgres_and_reads_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("kw.toml");
        std::fs::write(
            &cfg,
            "require_sync_replica = true\ndatabase_url = \"postgres://kw@db:5432/kw\"\n",
        )
        .unwrap();
        let from_file = ServeArgs {
            config: Some(cfg),
            ..ServeArgs::default()
        };
        assert!(from_file.resolve().unwrap().require_sync_replica);
        assert!(!ServeArgs::default().resolve().unwrap().require_sync_replica);
        let on_sqlite = ServeArgs {
            require_sync_replica: true,
            ..ServeArgs::default()
        };
        let err = on_sqlite.resolve().unwrap_err().to_string();
        assert!(err.contains("PostgreSQL"), "{err}");
    }
}

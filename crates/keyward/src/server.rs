//! `keyward serve`: open the store, load the master key (or stay sealed and say why),
//! bootstrap an empty deployment, and serve HTTP until SIGINT/SIGTERM.

use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use keyward_api::{app, sealed_app, AppState};
use keyward_domain::{Clock, SystemClock};
use keyward_service::admin::{bootstrap, CreatedApiKey};
use keyward_service::audit::{AuditSink, DbSink, FileSink, TeeSink};
use keyward_service::{KeyService, ServiceConfig};
use keyward_store::{SqlStore, Store, TimedStore};
use tokio::net::TcpListener;

use crate::config::Settings;
use crate::masterkey::{read_marker, Keyring};
use keyward_crypto::master::MasterKeyProvider;

/// A bound, ready server.
pub struct Server {
    pub addr: SocketAddr,
    listener: TcpListener,
    router: axum::Router,
    /// Set when the master key could not be loaded: the server answers 503 and says why.
    pub sealed: Option<String>,
    pub store: Arc<dyn Store>,
    /// The service (absent when sealed): tests drive the scheduler through it.
    pub svc: Option<Arc<KeyService>>,
    scheduler_interval: std::time::Duration,
    /// The master keyring and how often to rescan it.
    keyring: Option<(Arc<Keyring>, std::time::Duration)>,
    /// A separate listener for /healthz, /readyz, /metrics.
    ops: Option<(TcpListener, axum::Router)>,
    /// The TLS configuration and the files it came from (reloaded on SIGHUP).
    tls: Option<(rustls::ServerConfig, PathBuf, PathBuf)>,
    /// Timeouts and connection cap of every listener.
    edge: crate::edge::EdgeSettings,
    /// The KMIP listener (`--kmip-listen`, docs/kmip.md); not bound while sealed.
    kmip: Option<crate::kmip_listener::KmipListener>,
}

/// A rustls server configuration: TLS 1.3 and 1.2 only, the aws-lc-rs provider's AEAD suites
/// (rustls has no CBC or RC4 suites), no client auth, HTTP/1.1.
pub fn tls_config(cert: &Path, key: &Path) -> anyhow::Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading TLS certificate {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing TLS certificate {}", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("no certificate in {}", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading TLS key {}", key.display()))?;
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites.retain(|s| {
        let name = format!("{:?}", s.suite());
        name.contains("GCM") || name.contains("CHACHA20_POLY1305")
    });
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Opens everything and binds the listener. Prints the first-start banner to stdout (the API
/// key itself only on a terminal; otherwise to a private file, see [`INITIAL_API_KEY_FILE`]).
pub async fn start(settings: &Settings) -> anyhow::Result<Server> {
    start_with_clock(settings, Arc::new(SystemClock)).await
}

/// As [`start`], with the clock every time rule reads (tests pass a `ManualClock`).
pub async fn start_with_clock(
    settings: &Settings,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Server> {
    crate::config::create_data_dir(settings)?;
    let sql_store = SqlStore::connect(&settings.database_url)
        .await
        .with_context(|| format!("opening database {}", settings.database_url))?;
    check_durability(&sql_store).await;
    let sql: Arc<dyn Store> = Arc::new(sql_store.clone());
    let store: Arc<dyn Store> = Arc::new(TimedStore::new(sql, Arc::default()));
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("binding {}", settings.listen))?;
    let addr = listener.local_addr()?;

    let mut keyring_watch = None;
    let (router, sealed, svc) = match open_service(settings, store.clone(), clock.clone()).await {
        Ok((svc, keyring)) => {
            if let Some(created) = bootstrap(&*store, clock.now_unix()).await? {
                let console = settings.console.then(|| {
                    let scheme = if settings.tls.is_some() {
                        "https"
                    } else {
                        "http"
                    };
                    format!("{scheme}://{addr}/ui/")
                });
                print_banner(&created, addr, &settings.data_dir, console.as_deref())?;
            }
            let svc = Arc::new(svc);
            keyring_watch = Some(keyring);
            let state = AppState::new(svc.clone(), settings.limits)
                .with_trusted_proxies(settings.trusted_proxies.clone())
                .with_tls(settings.tls.is_some());
            let ops = settings
                .metrics_listen
                .map(|_| keyward_api::ops_router(state.clone()));
            (app(state, ops.is_none()), None, Some((svc, ops)))
        }
        Err(reason) => {
            tracing::error!(%reason, "keyward is SEALED: key operations answer 503");
            (sealed_app(), Some(reason), None)
        }
    };
    // The web console (static files; docs/console.md), also when sealed: its health panel
    // shows the sealed state.
    let router = if settings.console {
        router.merge(keyward_console::router())
    } else {
        router
    };
    let (svc, ops) = match svc {
        Some((svc, ops)) => (Some(svc), ops),
        // Sealed: the operator-facing ops listener says why; the main listener does not.
        None => (
            None,
            sealed
                .clone()
                .filter(|_| settings.metrics_listen.is_some())
                .map(keyward_api::sealed_ops_router),
        ),
    };
    let ops = match (settings.metrics_listen, ops) {
        (Some(addr), Some(r)) => {
            let l = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding metrics listener {addr}"))?;
            Some((l, r))
        }
        _ => None,
    };
    let tls = match &settings.tls {
        Some((cert, key)) => Some((tls_config(cert, key)?, cert.clone(), key.clone())),
        None => None,
    };
    let kmip = match (&settings.kmip, &svc) {
        (Some(k), Some(_)) => Some(crate::kmip_listener::KmipListener::bind(k).await?),
        (Some(_), None) => {
            tracing::error!("sealed: the KMIP listener is not started");
            None
        }
        (None, _) => None,
    };
    // From here on (start-up's own writes, migrations and a first start's bootstrap, are
    // done), writes wait for a synchronous standby if the operator asked for one.
    sql_store.set_require_sync_replica(settings.require_sync_replica);
    if settings.require_sync_replica {
        tracing::info!(
            "--require-sync-replica: writes are refused (503) while no synchronous standby is attached"
        );
    }
    Ok(Server {
        addr,
        listener,
        router,
        sealed,
        store,
        svc,
        scheduler_interval: std::time::Duration::from_secs(settings.scheduler_interval_secs),
        keyring: keyring_watch.map(|k| {
            (
                k,
                std::time::Duration::from_secs(settings.master_key_watch_secs),
            )
        }),
        ops,
        tls,
        edge: settings.edge,
        kmip,
    })
}

/// On PostgreSQL, warns when a commit does not wait for a synchronous standby: a failover
/// to an asynchronous standby may then lose writes that were acknowledged (docs/postgres.md).
async fn check_durability(store: &SqlStore) {
    match store.replication().await {
        Ok(None) => {}
        Ok(Some(r)) if r.attached() => tracing::info!(
            synchronous_standby_names = %r.synchronous_standby_names,
            sync_standbys = r.sync_standbys,
            "PostgreSQL commits wait for a synchronous standby"
        ),
        Ok(Some(r)) => tracing::warn!(
            primary = r.primary,
            synchronous_standby_names = %r.synchronous_standby_names,
            sync_standbys = r.sync_standbys,
            "PostgreSQL has no synchronous standby attached: a failover may lose acknowledged \
             writes (see --require-sync-replica and docs/postgres.md)"
        ),
        Err(e) => tracing::warn!(
            error = %e,
            "could not read PostgreSQL's replication state: durability across a failover unknown"
        ),
    }
}

async fn open_service(
    settings: &Settings,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
) -> Result<(KeyService, Arc<Keyring>), String> {
    let (keyring, ring) = crate::masterkey::open_ring(settings, &*store, clock.now_unix()).await?;
    let audit = audit_sink(settings, &store)?;
    let svc = KeyService::new(
        store,
        Arc::new(ring),
        clock,
        ServiceConfig {
            token_pool_size: settings.token_pool_size,
            cache_entries: settings.cache_entries,
            key_cache_entries: settings.key_cache_entries,
            max_failed_imports: settings.import_failure_limit,
            audit,
            row_auth_upgrade_grace: std::time::Duration::from_secs(
                settings.row_auth_upgrade_grace_secs,
            ),
            usage_flush_interval: std::time::Duration::from_secs(
                settings.usage_flush_interval_secs,
            ),
            ..ServiceConfig::default()
        },
    )
    .await
    .map_err(|e| e.message)?;
    Ok((svc, keyring))
}

/// The configured audit sink(s): the file, the database table, both, or none.
fn audit_sink(
    settings: &Settings,
    store: &Arc<dyn Store>,
) -> Result<Option<Arc<dyn AuditSink>>, String> {
    let file: Option<Arc<dyn AuditSink>> = match &settings.audit_log {
        Some((path, max, keep)) => Some(Arc::new(
            FileSink::open(path, *max, *keep).map_err(|e| e.to_string())?,
        )),
        None => None,
    };
    let table: Option<Arc<dyn AuditSink>> = if settings.audit_database {
        Some(Arc::new(
            DbSink::open(store.clone()).map_err(|e| e.to_string())?,
        ))
    } else {
        None
    };
    Ok(match (file, table) {
        (Some(first), Some(second)) => Some(Arc::new(TeeSink { first, second })),
        (one, None) | (None, one) => one,
    })
}

/// One look for new master key generations and for the database's choice of sealing key;
/// swaps the service's keyring when either changed.
pub async fn refresh_master_keys(svc: &KeyService, keyring: &Arc<Keyring>) -> Result<bool, String> {
    let marker = read_marker(&**svc.store())
        .await
        .map_err(|e| e.to_string())?;
    let kr = keyring.clone();
    let ring = tokio::task::spawn_blocking(move || -> Result<_, String> {
        for w in kr.scan(false)? {
            tracing::warn!(warning = %w, "a master key of the other provider could not be loaded");
        }
        kr.ring(marker.as_deref())
    })
    .await
    .map_err(|e| e.to_string())??;
    let old = svc.master();
    let (mut a, mut b) = (old.key_ids(), ring.key_ids());
    a.sort();
    b.sort();
    if a == b && old.key_id() == ring.key_id() {
        return Ok(false);
    }
    tracing::info!(
        sealing = ring.key_id(),
        keys = %b.join(", "),
        "master keyring changed"
    );
    svc.set_master(Arc::new(ring));
    Ok(true)
}

/// Where the first-start API key goes when stdout is not a terminal.
pub const INITIAL_API_KEY_FILE: &str = "initial-api-key";

/// The first-start banner. On an interactive terminal it shows the new Manager API key. Anywhere
/// else (systemd, containers, CI: stdout ends up in a log) the key goes to a new file of mode
/// 0600 in the data directory instead, the banner names that file, and the log names only the
/// file.
fn print_banner(
    k: &CreatedApiKey,
    addr: SocketAddr,
    data_dir: &Path,
    console: Option<&str>,
) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let (inst, key, iam) = (k.instance, &k.apikey, &k.iam_id);
    let (shown, key_line, apikey_arg) = if std::io::stdout().is_terminal() {
        (
            " The API key is shown ONCE: store it now.".to_string(),
            format!("   api key     : {key}"),
            key.to_string(),
        )
    } else {
        let path = write_initial_key(data_dir, key)?;
        tracing::info!(
            file = %path.display(),
            "first start: the Manager API key was written to this file (mode 0600)"
        );
        (
            " The API key was written to a file only this user can read: store it\n \
             elsewhere, then delete the file."
                .to_string(),
            format!("   api key file: {}", path.display()),
            format!("$(cat {})", path.display()),
        )
    };
    let console_line = match console {
        Some(url) => format!("   web console : {url}  (sign in with the API key and instance id)"),
        None => "   web console : off (--no-console)".to_string(),
    };
    let lines = [
        "=====================================================================".to_string(),
        " Keyward first start: created instance `default` and a Manager API key.".into(),
        shown,
        String::new(),
        format!("   instance id : {inst}"),
        key_line,
        format!("   iam id      : {iam}"),
        console_line,
        String::new(),
        " Try it:".into(),
        format!("   TOKEN=$(curl -s -X POST http://{addr}/identity/token \\"),
        format!("     -d grant_type=urn:ibm:params:oauth:grant-type:apikey -d apikey={apikey_arg} \\"),
        "     | python3 -c 'import sys,json; print(json.load(sys.stdin)[\"access_token\"])')".into(),
        format!("   curl -s -X POST http://{addr}/api/v2/keys -H 'content-type: application/json' \\"),
        format!("     -H \"authorization: Bearer $TOKEN\" -H 'bluemix-instance: {inst}' \\"),
        "     -d '{\"metadata\":{\"collectionType\":\"application/vnd.ibm.kms.key+json\",\"collectionTotal\":1},\"resources\":[{\"type\":\"application/vnd.ibm.kms.key+json\",\"name\":\"my-root-key\",\"extractable\":false}]}'".into(),
        "=====================================================================".into(),
    ];
    println!("\n{}\n", lines.join("\n"));
    Ok(())
}

/// Writes the first-start API key to a new file of mode 0600 in `data_dir` (created 0700 if
/// missing): `initial-api-key`, or `initial-api-key.N` when an older one is still there. A new
/// file only (`O_EXCL`, so never through a planted symlink); returns its path.
fn write_initial_key(data_dir: &Path, key: &str) -> anyhow::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .with_context(|| format!("creating data dir {}", data_dir.display()))?;
    let advice = "create an API key with `keyward admin apikey create`";
    for n in 0..100 {
        let path = if n == 0 {
            data_dir.join(INITIAL_API_KEY_FILE)
        } else {
            data_dir.join(format!("{INITIAL_API_KEY_FILE}.{n}"))
        };
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(mut f) => {
                f.write_all(format!("{key}\n").as_bytes())
                    .and_then(|()| f.sync_all())
                    .with_context(|| {
                        format!(
                            "writing the first-start API key to {}; {advice}",
                            path.display()
                        )
                    })?;
                return Ok(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "creating {} for the first-start API key; {advice}",
                        path.display()
                    )
                })
            }
        }
    }
    anyhow::bail!(
        "{}: 100 older first-start key files are in the way; {advice}",
        data_dir.display()
    )
}

impl Server {
    /// The address of the separate ops listener (`--metrics-listen`), when there is one.
    pub fn ops_addr(&self) -> Option<SocketAddr> {
        self.ops.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// Serves until `shutdown` resolves, then stops accepting and finishes in-flight requests.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        tracing::info!(addr = %self.addr, "keyward listening on {scheme}://{}", self.addr);
        if let (Some(svc), false) = (self.svc.clone(), self.scheduler_interval.is_zero()) {
            #[allow(clippy::redundant_clone)]
            let svc = svc.clone();
            let every = self.scheduler_interval;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    match svc.run_scheduled_jobs().await {
                        Ok((0, 0)) => {}
                        Ok((rotated, purged)) => tracing::info!(rotated, purged, "scheduler pass"),
                        Err(e) => tracing::warn!(code = e.code.as_str(), "scheduler pass failed"),
                    }
                }
            });
        }
        if let (Some(svc), Some((keyring, every))) = (self.svc.clone(), self.keyring.clone()) {
            if !every.is_zero() {
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(every);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tick.tick().await;
                        if let Err(e) = refresh_master_keys(&svc, &keyring).await {
                            tracing::warn!(error = %e, "master keyring rescan failed; keeping the keys loaded");
                        }
                    }
                });
            }
        }
        // Every listener goes through the edge (crates/keyward/src/edge.rs): timeouts and a
        // connection cap. `stop` turns true when `shutdown` resolves.
        let edge = self.edge;
        let listeners = 1 + usize::from(self.ops.is_some());
        if let Some(w) = crate::edge::raise_nofile_limit(&edge, listeners) {
            tracing::warn!("{w}");
        }
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        if let (Some(k), Some(svc)) = (self.kmip, self.svc.clone()) {
            if let Ok(addr) = k.local_addr() {
                tracing::info!(%addr, "KMIP listening on {addr} (TTLV over mutual TLS)");
            }
            tokio::spawn(k.serve(svc, edge, stop.clone()));
        }
        let ops = self.ops.map(|(listener, router)| {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, "health and metrics on http://{addr}");
            }
            tokio::spawn(crate::edge::serve(
                listener,
                router,
                None,
                edge,
                "ops",
                stop.clone(),
                Some(std::time::Duration::from_secs(10)),
            ))
        });
        match self.tls {
            None => {
                crate::edge::serve(self.listener, self.router, None, edge, "api", stop, None).await;
            }
            Some((cfg, cert, key)) => {
                let tls = crate::edge::TlsConfig::new(cfg);
                let reload = tls.clone();
                tokio::spawn(async move {
                    use tokio::signal::unix::{signal, SignalKind};
                    let Ok(mut hup) = signal(SignalKind::hangup()) else {
                        return;
                    };
                    while hup.recv().await.is_some() {
                        match tls_config(&cert, &key) {
                            Ok(c) => {
                                reload.reload(c);
                                tracing::info!("TLS certificate reloaded");
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "TLS reload failed; keeping the old certificate")
                            }
                        }
                    }
                });
                // In-flight requests get 10 s to finish after the shutdown signal.
                crate::edge::serve(
                    self.listener,
                    self.router,
                    Some(tls),
                    edge,
                    "api",
                    stop,
                    Some(std::time::Duration::from_secs(10)),
                )
                .await;
            }
        }
        if let Some(ops) = ops {
            let _ = ops.await;
        }
        if let Some(svc) = &self.svc {
            // The uses recorded since the last flush (docs/design.md, "Key usage").
            if let Err(e) = svc.flush_usage().await {
                tracing::warn!(code = e.code.as_str(), "key usage flush at shutdown failed");
            }
        }
        tracing::info!("keyward stopped");
        Ok(())
    }
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, not when the
/// future is first polled, so a signal that arrives while the server is starting up is not
/// lost (it would otherwise kill the process before a graceful shutdown could begin).
pub fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate()).ok();
    let int = signal(SignalKind::interrupt()).ok();
    async move {
        let wait = |s: Option<tokio::signal::unix::Signal>| async move {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = wait(term) => {}
            _ = wait(int) => {}
        }
    }
}

//! `keyward`: a self-hosted key management service speaking the IBM Key Protect API.

use clap::{CommandFactory, Parser, Subcommand};
use keyward::{admin, config, server};

#[derive(Parser, Debug)]
#[command(name = "keyward", version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("KEYWARD_GIT_COMMIT"), ")"), about = "Keyward: a self-hosted Key Protect-compatible key management service")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the server
    Serve(Box<config::ServeArgs>),
    /// Manage instances, API keys and role grants
    Admin(admin::AdminArgs),
    /// A Key Protect client: talk to Keyward or any Key Protect endpoint
    Kp(keyward_kpclient::KpArgs),
    /// Print a shell completion script (e.g. `keyward completions bash > /etc/bash_completion.d/keyward`)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEYWARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The server and the admin commands can hold key material: no core dumps, no ptrace.
    // (The `kp` client handles only what its user gives it.)
    let hardening_failed = match &cli.cmd {
        Cmd::Serve(_) | Cmd::Admin(_) => keyward::harden::harden_process(),
        Cmd::Kp(_) | Cmd::Completions { .. } => Vec::new(),
    };
    for f in &hardening_failed {
        eprintln!("warning: process hardening failed: {f}");
    }
    let result = match cli.cmd {
        Cmd::Serve(args) => serve(*args).await,
        Cmd::Admin(args) => admin::run(args).await,
        Cmd::Kp(args) => keyward_kpclient::run(args).await,
        Cmd::Completions { shell } => completions(shell),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Writes the completion script for `shell` to stdout (a closed pipe is an error, not a panic).
fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    use std::io::Write;
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "keyward", &mut script);
    let mut out = std::io::stdout().lock();
    out.write_all(&script)?;
    out.flush()?;
    Ok(())
}

async fn serve(args: config::ServeArgs) -> anyhow::Result<()> {
    let settings = args.resolve()?;
    init_tracing(settings.log_json);
    // Before any database connection is opened.
    keyward_store::set_sqlite_cache_kib(settings.sqlite_cache_kib);
    // Before the listener is bound: a SIGTERM from then on always means a graceful stop.
    let shutdown = server::shutdown_signal();
    let server = server::start(&settings).await?;
    server.serve(shutdown).await
}

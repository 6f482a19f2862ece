//! Development harness: `cargo run -p keyward-kpclient --example kp -- key list`.
use clap::Parser;

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    kp: keyward_kpclient::KpArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match keyward_kpclient::run(cli.kp).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

//! `keyward admin tls self-signed`: a certificate for trying TLS out (not for production).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use anyhow::Context;
use serde_json::{json, Value};

#[derive(clap::Subcommand, Debug)]
pub enum TlsCmd {
    /// Write a self-signed certificate and its key (mode 0600) for the given host names
    SelfSigned {
        /// Directory to write cert.pem and key.pem into
        #[arg(long, default_value = ".")]
        out_dir: PathBuf,
        /// Subject alternative names
        #[arg(long = "host", default_values = ["localhost", "127.0.0.1"])]
        hosts: Vec<String>,
    },
}

pub fn run(cmd: TlsCmd) -> anyhow::Result<Value> {
    match cmd {
        TlsCmd::SelfSigned { out_dir, hosts } => {
            let ck = rcgen::generate_simple_self_signed(hosts.clone())
                .context("generating the certificate")?;
            std::fs::create_dir_all(&out_dir)?;
            let cert = out_dir.join("cert.pem");
            let key = out_dir.join("key.pem");
            std::fs::write(&cert, ck.cert.pem())?;
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&key)?;
            f.write_all(ck.key_pair.serialize_pem().as_bytes())?;
            Ok(
                json!({"cert": cert.display().to_string(), "key": key.display().to_string(), "hosts": hosts}),
            )
        }
    }
}

//! `keyward kp`: a command-line client for the Key Protect v2 REST API.
//!
//! It talks HTTP(S) to Keyward or to any IBM Key Protect endpoint, authenticating with an API
//! key (exchanged at `{iam-url}/identity/token`) or a ready bearer token. The offline
//! `import-token key-encrypt` / `nonce-encrypt` commands do the client half of a secure import
//! so that other tools can be driven by hand.
//!
//! Secrets (API key, token, key material given as an argument, wrap plaintext) are stored in
//! [`Secret`] / [`keyward_crypto::SecretBytes`], whose `Debug` is redacted; they are printed
//! only where the user asked for them (unwrap and generated-DEK wrap print the DEK; `key show
//! --with-payload` prints a standard key's material).

mod cmd;
pub mod http;
pub mod material;
pub mod out;

use std::path::PathBuf;

pub use http::Secret;
pub use material::MaterialFormat;
pub use out::OutputFormat;

/// Global flags of `keyward kp` and its subcommand.
#[derive(clap::Args, Debug)]
#[command(
    about = "Key Protect client: talk to Keyward or IBM Key Protect over HTTP",
    long_about = "Key Protect client: talk to Keyward or IBM Key Protect over HTTP.\n\n\
        Authentication: --token (used as is) wins over --apikey; an API key is exchanged \
        for an access token at {--iam-url}/identity/token (default: the --url value; for \
        IBM Cloud use https://iam.cloud.ibm.com).\n\n\
        Output: --output json prints the server's JSON for list, wrap, unwrap and import-token \
        calls, and the key object (resources[0]) for calls returning one key. Errors go to \
        stderr with the Key Protect errorMsg and reason codes, and the exit status is non-zero."
)]
pub struct KpArgs {
    /// Base URL of the service; /api/v2/... is appended (KEYWARD_URL is read when KP_URL is unset)
    #[arg(long, env = "KP_URL", global = true, value_name = "URL")]
    pub url: Option<String>,

    /// Key Protect instance id (UUID), sent as bluemix-instance
    #[arg(long, env = "KP_INSTANCE_ID", global = true, value_name = "UUID")]
    pub instance: Option<String>,

    /// API key, exchanged for an IAM token (IBMCLOUD_API_KEY is read when KP_APIKEY is unset)
    #[arg(
        long,
        env = "KP_APIKEY",
        hide_env_values = true,
        global = true,
        value_name = "APIKEY"
    )]
    pub apikey: Option<Secret>,

    /// IAM base URL for the API key exchange (default: --url)
    #[arg(long, env = "KP_IAM_URL", global = true, value_name = "URL")]
    pub iam_url: Option<String>,

    /// Bearer token used as is (instead of --apikey)
    #[arg(
        long,
        env = "KP_TOKEN",
        hide_env_values = true,
        global = true,
        value_name = "TOKEN"
    )]
    pub token: Option<Secret>,

    /// Trust only the CA certificate(s) in this PEM file for HTTPS (e.g. a self-hosted Keyward)
    #[arg(long, env = "KP_CACERT", global = true, value_name = "PEMFILE")]
    pub cacert: Option<PathBuf>,

    /// Output format
    #[arg(
        long,
        value_enum,
        env = "KP_OUTPUT",
        default_value_t = OutputFormat::Human,
        global = true
    )]
    pub output: OutputFormat,

    #[command(subcommand)]
    pub command: KpCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum KpCommand {
    /// Import tokens (secure import of root key material)
    #[command(subcommand)]
    ImportToken(ImportTokenCmd),
    /// Keys
    #[command(subcommand)]
    Key(KeyCmd),
}

/// RSA-OAEP hash for encrypting key material to an import token.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HashArg {
    /// RSAES_OAEP_SHA_256 (what Key Protect uses)
    #[default]
    #[value(name = "SHA256")]
    Sha256,
    /// RSAES_OAEP_SHA_1 (HPCS only on IBM Cloud)
    #[value(name = "SHA1")]
    Sha1,
}

/// Key material for the offline commands: a file or base64 on the command line.
#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
pub struct KeyMaterialArg {
    /// File with the key material (raw bytes, or base64 text; `-` = stdin)
    #[arg(long, value_name = "FILE")]
    pub key_material_file: Option<PathBuf>,
    /// Key material as base64 (visible to other local users in the process list; prefer a file)
    #[arg(long, value_name = "BASE64")]
    pub key_material: Option<Secret>,
}

/// The import token's public key.
#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
pub struct PubkeyArg {
    /// The token's `payload` (base64 of the PEM public key)
    #[arg(long, value_name = "BASE64")]
    pub pubkey: Option<String>,
    /// A PEM file with the public key (base64 of PEM, as in `payload`, also accepted)
    #[arg(long, value_name = "PEMFILE")]
    pub pubkey_file: Option<PathBuf>,
}

#[derive(clap::Subcommand, Debug)]
pub enum ImportTokenCmd {
    /// Create the instance's import token (replaces the current one): POST /api/v2/import_token
    Create {
        /// Lifetime in seconds (Key Protect: 300..=86400, default 600)
        #[arg(long, value_name = "SECONDS")]
        expiration: Option<u64>,
        /// Number of allowed retrievals (Key Protect: 1..=500, default 1)
        #[arg(long, value_name = "N")]
        max_retrievals: Option<u64>,
    },
    /// Retrieve the import token: GET /api/v2/import_token. Each call uses up one retrieval.
    /// Human output shows the metadata; --output json adds payload (public key) and nonce.
    Show {
        /// Also write the public key as PEM to this file
        #[arg(long, value_name = "FILE")]
        pubkey_out: Option<PathBuf>,
    },
    /// Offline: encrypt key material with the token's public key (RSA-OAEP); prints the
    /// base64 ciphertext to send as `payload`
    KeyEncrypt {
        #[command(flatten)]
        material: KeyMaterialArg,
        #[command(flatten)]
        pubkey: PubkeyArg,
        /// OAEP hash (MGF1 uses the same hash)
        #[arg(long, value_enum, default_value_t = HashArg::Sha256, ignore_case = true)]
        hash: HashArg,
        /// How to read --key-material-file
        #[arg(long, value_enum, default_value_t = MaterialFormat::Auto)]
        material_format: MaterialFormat,
    },
    /// Offline: encrypt the token's nonce with the key material (AES-GCM, random 12-byte IV);
    /// prints encryptedNonce and iv
    NonceEncrypt {
        #[command(flatten)]
        material: KeyMaterialArg,
        /// The token's nonce (base64)
        #[arg(long, value_name = "BASE64")]
        nonce: String,
        /// How to read --key-material-file
        #[arg(long, value_enum, default_value_t = MaterialFormat::Auto)]
        material_format: MaterialFormat,
    },
}

const MATERIAL_FILE_HELP: &str =
    "File with the key material: raw bytes (16/24/32 for a root key), or \
base64 text of them. In the default --material-format auto, a file whose content (whitespace \
ignored) is valid base64 of 16, 24 or 32 bytes is decoded; anything else is used as raw bytes. \
`-` reads stdin.";

const SECURE_HELP: &str = "Import through an import token: the material is RSA-OAEP encrypted \
to the token's public key and the token's nonce is AES-GCM encrypted under the material. By \
default a NEW token is created (300 s, 1 retrieval; this replaces the instance's current token, \
so a concurrent secure import by someone else that already fetched the old token will fail) and \
then retrieved. With --reuse-token the current token is retrieved first (using up one of its \
retrievals) and a new one is created only if there is none, or it has expired or has no \
retrievals left. Root keys only.";

#[derive(clap::Subcommand, Debug)]
pub enum KeyCmd {
    /// Create a key with generated material (root unless --standard)
    Create {
        #[arg(long)]
        name: String,
        /// Create a standard (extractable) key instead of a root key
        #[arg(long)]
        standard: bool,
        #[arg(long)]
        description: Option<String>,
        /// RFC 3339 expiration date, e.g. 2030-01-01T00:00:00Z
        #[arg(long, value_name = "RFC3339")]
        expiration_date: Option<String>,
    },
    /// Import key material (root unless --standard); prints the new key
    Import {
        #[arg(long)]
        name: String,
        #[arg(long, value_name = "FILE", long_help = MATERIAL_FILE_HELP)]
        material_file: PathBuf,
        /// Secure import with an import token (see --help)
        #[arg(long, conflicts_with = "standard", long_help = SECURE_HELP)]
        secure: bool,
        /// Import a standard (extractable) key; cannot be combined with --secure
        #[arg(long)]
        standard: bool,
        /// With --secure: reuse the current import token if it can still be retrieved
        #[arg(long, requires = "secure")]
        reuse_token: bool,
        /// With --secure: RSA-OAEP hash
        #[arg(long, value_enum, default_value_t = HashArg::Sha256, ignore_case = true, requires = "secure")]
        hash: HashArg,
        #[arg(long)]
        description: Option<String>,
        /// RFC 3339 expiration date, e.g. 2030-01-01T00:00:00Z
        #[arg(long, value_name = "RFC3339")]
        expiration_date: Option<String>,
        /// How to read --material-file
        #[arg(long, value_enum, default_value_t = MaterialFormat::Auto)]
        material_format: MaterialFormat,
    },
    /// List keys (GET /api/v2/keys)
    List {
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        offset: Option<u32>,
        /// Comma-separated states, e.g. 1,2,3,5
        #[arg(long)]
        state: Option<String>,
    },
    /// Show a key's metadata (GET /api/v2/keys/{id}/metadata)
    Show {
        /// Key id or alias
        id: String,
        /// Use GET /api/v2/keys/{id} instead, which returns a standard key's material as payload
        #[arg(long)]
        with_payload: bool,
    },
    /// Delete a key (DELETE /api/v2/keys/{id})
    Delete {
        /// Key id or alias
        id: String,
    },
    /// Wrap a DEK with a root key; without --plaintext the service generates a 32-byte DEK and
    /// returns it (printed) with the ciphertext
    Wrap {
        /// Key id or alias
        id: String,
        /// The DEK to wrap, base64
        #[arg(long, value_name = "BASE64")]
        plaintext: Option<Secret>,
        /// Additional authenticated data; repeat for several (order matters)
        #[arg(long, value_name = "STRING")]
        aad: Vec<String>,
    },
    /// Unwrap a ciphertext with a root key; prints the DEK
    Unwrap {
        /// Key id or alias
        id: String,
        /// The ciphertext returned by wrap
        #[arg(long)]
        ciphertext: String,
        /// The same additional authenticated data as at wrap time, in the same order
        #[arg(long, value_name = "STRING")]
        aad: Vec<String>,
    },
    /// Rotate a root key; an imported key needs new material (--material-file)
    Rotate {
        /// Key id or alias
        id: String,
        #[arg(long, value_name = "FILE", long_help = MATERIAL_FILE_HELP)]
        material_file: Option<PathBuf>,
        /// Send the new material through an import token (see `key import --help`)
        #[arg(long, requires = "material_file")]
        secure: bool,
        /// With --secure: reuse the current import token if it can still be retrieved
        #[arg(long, requires = "secure")]
        reuse_token: bool,
        /// With --secure: RSA-OAEP hash
        #[arg(long, value_enum, default_value_t = HashArg::Sha256, ignore_case = true, requires = "secure")]
        hash: HashArg,
        /// How to read --material-file
        #[arg(long, value_enum, default_value_t = MaterialFormat::Auto)]
        material_format: MaterialFormat,
    },
}

/// Runs one `keyward kp` command. Server errors come back as an error whose text holds the
/// Key Protect `errorMsg` and reason code(s).
pub async fn run(args: KpArgs) -> anyhow::Result<()> {
    cmd::run(args).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        kp: KpArgs,
    }

    fn parse(args: &[&str]) -> Result<KpArgs, clap::Error> {
        let mut v = vec!["kp"];
        v.extend_from_slice(args);
        Cli::try_parse_from(v).map(|c| c.kp)
    }

    /// The way `keyward` embeds it: `keyward kp ...`.
    #[derive(Parser, Debug)]
    struct Outer {
        #[command(subcommand)]
        cmd: OuterCmd,
    }

    #[derive(clap::Subcommand, Debug)]
    enum OuterCmd {
        Kp(KpArgs),
    }

    #[test]
    fn embeds_as_subcommand() {
        Outer::command().debug_assert();
        let o = Outer::try_parse_from([
            "keyward", "kp", "--output", "json", "key", "wrap", "k", "--aad", "x",
        ])
        .unwrap();
        let OuterCmd::Kp(a) = o.cmd;
        assert_eq!(a.output, OutputFormat::Json);
        assert!(matches!(a.command, KpCommand::Key(KeyCmd::Wrap { .. })));
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn globals_anywhere() {
        let a = parse(&[
            "key",
            "list",
            "--output",
            "json",
            "--url",
            "http://x",
            "--instance",
            "i",
        ])
        .unwrap();
        assert_eq!(a.output, OutputFormat::Json);
        assert_eq!(a.url.as_deref(), Some("http://x"));
        assert!(matches!(a.command, KpCommand::Key(KeyCmd::List { .. })));
    }

    #[test]
    fn secure_and_standard_conflict() {
        let e = parse(&[
            "key",
            "import",
            "--name",
            "n",
            "--material-file",
            "f",
            "--secure",
            "--standard",
        ])
        .unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
        assert!(parse(&[
            "key",
            "import",
            "--name",
            "n",
            "--material-file",
            "f",
            "--secure"
        ])
        .is_ok());
        // --reuse-token needs --secure
        assert!(parse(&[
            "key",
            "import",
            "--name",
            "n",
            "--material-file",
            "f",
            "--reuse-token"
        ])
        .is_err());
        // rotate --secure needs a material file
        assert!(parse(&["key", "rotate", "k", "--secure"]).is_err());
        assert!(parse(&["key", "rotate", "k", "--material-file", "f", "--secure"]).is_ok());
    }

    #[test]
    fn key_encrypt_groups() {
        // exactly one material source and one public key
        assert!(parse(&["import-token", "key-encrypt", "--pubkey", "x"]).is_err());
        assert!(parse(&[
            "import-token",
            "key-encrypt",
            "--key-material",
            "AA==",
            "--key-material-file",
            "f",
            "--pubkey",
            "x"
        ])
        .is_err());
        assert!(parse(&["import-token", "key-encrypt", "--key-material", "AA=="]).is_err());
        assert!(parse(&[
            "import-token",
            "key-encrypt",
            "--key-material",
            "AA==",
            "--pubkey",
            "x",
            "--pubkey-file",
            "y"
        ])
        .is_err());
        let a = parse(&[
            "import-token",
            "key-encrypt",
            "--key-material",
            "AA==",
            "--pubkey-file",
            "y",
            "--hash",
            "sha1",
        ])
        .unwrap();
        match a.command {
            KpCommand::ImportToken(ImportTokenCmd::KeyEncrypt { hash, .. }) => {
                assert_eq!(hash, HashArg::Sha1)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn aad_repeats_in_order() {
        let a = parse(&[
            "key",
            "unwrap",
            "k",
            "--ciphertext",
            "c",
            "--aad",
            "b",
            "--aad",
            "a",
        ])
        .unwrap();
        match a.command {
            KpCommand::Key(KeyCmd::Unwrap { aad, .. }) => assert_eq!(aad, ["b", "a"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn debug_redacts_secrets() {
        let a = parse(&[
            "--apikey",
            "kw_APIKEYSECRET",
            "--token",
            "TOKENSECRET",
            "import-token",
            "nonce-encrypt",
            "--key-material",
            "TUFURVJJQUxTRUNSRVQ=",
            "--nonce",
            "bm9uY2U=",
        ])
        .unwrap();
        let d = format!("{a:?}");
        assert!(!d.contains("APIKEYSECRET"), "{d}");
        assert!(!d.contains("TOKENSECRET"), "{d}");
        assert!(!d.contains("TUFURVJJQUxTRUNSRVQ="), "{d}");
        let a = parse(&["key", "wrap", "k", "--plaintext", "REtTRUNSRVQ="]).unwrap();
        assert!(!format!("{a:?}").contains("REtTRUNSRVQ="));
    }

    #[test]
    fn help_hides_env_secrets() {
        // hide_env_values keeps env-provided secrets out of --help.
        let cmd = Cli::command();
        for name in ["apikey", "token"] {
            let arg = cmd.get_arguments().find(|a| a.get_id() == name).unwrap();
            assert!(arg.is_hide_env_values_set(), "{name}");
        }
    }
}

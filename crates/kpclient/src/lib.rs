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
pub mod kmip;
mod lifecycle;
pub mod material;
pub mod out;
mod resource;

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
        Output: --output json prints the server's JSON for list, versions, policy, wrap, \
        unwrap and import-token calls, and the key object (resources[0]) for calls returning \
        or changing one key (actions that return no body, such as disable, are followed by a \
        read of the key's metadata). Errors go to stderr with the Key Protect errorMsg and \
        reason codes, and the exit status is non-zero.\n\n\
        The API: GET {--url}/openapi.json (OpenAPI 3.1; docs/openapi.json in the repository)."
)]
pub struct KpArgs {
    /// Base URL of the service; /api/v2/... is appended (KEYWARD_URL is read when KP_URL is unset)
    #[arg(long, env = "KP_URL", global = true, value_name = "URL")]
    pub url: Option<String>,

    /// Key Protect instance id (UUID), sent as bluemix-instance (`-i` and `--instance-ID` as
    /// in `ibmcloud kp`)
    #[arg(
        long,
        short = 'i',
        visible_alias = "instance-ID",
        env = "KP_INSTANCE_ID",
        global = true,
        value_name = "UUID"
    )]
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

    /// Output format (`human`: a table or aligned fields; `json`)
    #[arg(
        long,
        short = 'o',
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
    /// List keys (the same as `key list`; `ibmcloud kp keys`)
    Keys(KeyListArgs),
    /// List key rings (the same as `key-ring list`; `ibmcloud kp key-rings`)
    KeyRings {
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        offset: Option<u32>,
    },
    /// Key rings (GET/POST/DELETE /api/v2/key_rings)
    #[command(subcommand)]
    KeyRing(KeyRingCmd),
    /// Key aliases (POST/DELETE /api/v2/keys/{id}/aliases/{alias})
    #[command(subcommand)]
    Alias(AliasCmd),
    /// Instance policies (GET/PUT /api/v2/instance/policies)
    #[command(subcommand)]
    InstancePolicy(InstancePolicyCmd),
    /// KMIP adapters, their client certificates and objects (docs/kmip.md)
    #[command(subcommand)]
    Kmip(kmip::KmipCmd),
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
        /// A hybrid post-quantum token (X-Wing: ML-KEM-768 + X25519; a Keyward extension, see
        /// docs/import-tokens.md) instead of RSA-4096
        #[arg(long)]
        pq: bool,
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

/// The query of `key list` (and `keys`).
#[derive(clap::Args, Debug, Clone)]
pub struct KeyListArgs {
    #[arg(long)]
    pub limit: Option<u32>,
    #[arg(long)]
    pub offset: Option<u32>,
    /// Comma-separated states, e.g. 1,2,3,5 (deleted keys, state 5, are listed only when asked for)
    #[arg(long)]
    pub state: Option<String>,
    /// Case-insensitive substring of the name or an alias; prefixes `not:`, `exact:`,
    /// `escape:` and scopes `name:` / `alias:` as in Key Protect (e.g. `exact:alias:db-key`)
    #[arg(long, allow_hyphen_values = true, value_name = "QUERY")]
    pub search: Option<String>,
    /// Space-separated `property=value` or `property=op:value` terms (ops lt, lte, gt, gte;
    /// dates in double quotes; `none` = property absent), e.g.
    /// 'state=1 creationDate=gte:"2024-01-01T00:00:00Z"'
    #[arg(long, allow_hyphen_values = true, value_name = "EXPR")]
    pub filter: Option<String>,
    /// Comma-separated fields, `-` prefix for descending, e.g. -creationDate,id
    #[arg(long, allow_hyphen_values = true, value_name = "FIELDS")]
    pub sort: Option<String>,
    /// Only keys in this key ring (sent as the x-kms-key-ring header)
    #[arg(long, value_name = "RING")]
    pub key_ring: Option<String>,
}

#[derive(clap::Subcommand, Debug)]
pub enum KeyCmd {
    /// Create a key with generated material (root unless --standard); the name is a
    /// positional argument (`ibmcloud kp key create NAME`) or --name
    #[command(group(clap::ArgGroup::new("key_name").required(true).args(["name", "name_flag"])))]
    Create {
        /// The key's name
        #[arg(value_name = "NAME")]
        name: Option<String>,
        /// The key's name (instead of the positional NAME)
        #[arg(long = "name", value_name = "NAME")]
        name_flag: Option<String>,
        /// Create a standard (extractable) key instead of a root key
        #[arg(long, short = 's', visible_alias = "standard-key")]
        standard: bool,
        #[arg(long, short = 'D')]
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
        /// With --secure: a hybrid post-quantum (X-Wing) import token instead of RSA-4096
        /// (a Keyward extension, docs/import-tokens.md)
        #[arg(long, requires = "secure")]
        pq: bool,
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
    List(KeyListArgs),
    /// Show a key's metadata (GET /api/v2/keys/{id}/metadata)
    Show {
        /// Key id or alias
        id: String,
        /// Use GET /api/v2/keys/{id} instead, which returns a standard key's material as payload
        #[arg(long)]
        with_payload: bool,
    },
    /// Delete a key (DELETE /api/v2/keys/{id}); a dual-auth key must first be set for
    /// deletion by another user (`key set-for-deletion`)
    Delete {
        /// Key id or alias
        id: String,
        /// Delete even if the key is registered with (protects) other cloud resources
        /// (force=true); keys with a retention (preventKeyDeletion) registration still cannot be deleted
        #[arg(long)]
        force: bool,
    },
    /// Disable (suspend) a root key: POST /api/v2/keys/{id}/actions/disable
    Disable {
        /// Key id or alias
        id: String,
    },
    /// Enable a suspended root key (no earlier than 30 s after it was disabled):
    /// POST /api/v2/keys/{id}/actions/enable
    Enable {
        /// Key id or alias
        id: String,
    },
    /// Restore a deleted key (between 30 s and 30 days after deletion): POST /api/v2/keys/{id}/restore
    Restore {
        /// Key id or alias
        id: String,
    },
    /// Purge a deleted key for good (KeyPurge role, no earlier than 4 h after deletion):
    /// DELETE /api/v2/keys/{id}/purge
    Purge {
        /// Key id or alias
        id: String,
    },
    /// List a key's versions, newest first: GET /api/v2/keys/{id}/versions
    Versions {
        /// Key id or alias
        id: String,
        /// Also for a key that is not active (allKeyStates=true); required for such keys
        #[arg(long)]
        all_key_states: bool,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        offset: Option<u32>,
    },
    /// Authorize the deletion of a dual-auth key (the first of two users):
    /// POST /api/v2/keys/{id}/actions/setKeyForDeletion
    SetForDeletion {
        /// Key id or alias
        id: String,
    },
    /// Cancel a pending deletion authorization: POST /api/v2/keys/{id}/actions/unsetKeyForDeletion
    UnsetForDeletion {
        /// Key id or alias
        id: String,
    },
    /// Ask the service to notify integrated services of the key's state again:
    /// POST /api/v2/keys/{id}/actions/sync
    Sync {
        /// Key id or alias
        id: String,
    },
    /// Key policies (rotation, dual-auth delete)
    #[command(subcommand)]
    Policy(KeyPolicyCmd),
    /// Move a key to another key ring: PATCH /api/v2/keys/{id}
    Move {
        /// Key id or alias
        id: String,
        /// The key ring to move the key to
        #[arg(long, value_name = "RING")]
        key_ring: String,
        /// The ring the key is in now, sent as x-kms-key-ring (IBM Key Protect may require it;
        /// Keyward finds the key in any ring)
        #[arg(long, value_name = "RING")]
        current_key_ring: Option<String>,
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
        /// With --secure: a hybrid post-quantum (X-Wing) import token instead of RSA-4096
        /// (a Keyward extension, docs/import-tokens.md)
        #[arg(long, requires = "secure")]
        pq: bool,
        /// With --secure: RSA-OAEP hash
        #[arg(long, value_enum, default_value_t = HashArg::Sha256, ignore_case = true, requires = "secure")]
        hash: HashArg,
        /// How to read --material-file
        #[arg(long, value_enum, default_value_t = MaterialFormat::Auto)]
        material_format: MaterialFormat,
    },
}

/// Which key policy to show.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyPolicyType {
    #[value(name = "rotation")]
    Rotation,
    #[value(name = "dualAuthDelete")]
    DualAuthDelete,
}

impl KeyPolicyType {
    /// The name used on the wire (`?policy=`).
    pub fn wire_name(self) -> &'static str {
        match self {
            KeyPolicyType::Rotation => "rotation",
            KeyPolicyType::DualAuthDelete => "dualAuthDelete",
        }
    }
}

#[derive(clap::Subcommand, Debug)]
pub enum KeyPolicyCmd {
    /// Show a key's policies: GET /api/v2/keys/{id}/policies
    Show {
        /// Key id or alias
        id: String,
        /// Only this policy
        #[arg(long, value_enum, ignore_case = true)]
        policy: Option<KeyPolicyType>,
    },
    /// Set a key's policies: PUT /api/v2/keys/{id}/policies
    #[command(group(
        clap::ArgGroup::new("key_policy_change")
            .required(true)
            .multiple(true)
            .args(["rotation_interval_months", "no_rotation", "dual_auth_delete"])
    ))]
    Set {
        /// Key id or alias
        id: String,
        /// Enable automatic rotation every N months of 30 days (1-12; generated root keys only)
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=12), conflicts_with = "no_rotation")]
        rotation_interval_months: Option<u8>,
        /// Disable automatic rotation
        #[arg(long)]
        no_rotation: bool,
        /// Enable dual authorization for deletion (cannot be disabled afterwards)
        #[arg(long)]
        dual_auth_delete: bool,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum KeyRingCmd {
    /// List key rings: GET /api/v2/key_rings
    List {
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        offset: Option<u32>,
    },
    /// Create a key ring: POST /api/v2/key_rings/{id}
    Create {
        /// Key ring id: 2-100 characters of letters, digits, - and _
        id: String,
    },
    /// Delete a key ring: DELETE /api/v2/key_rings/{id}
    Delete {
        /// Key ring id
        id: String,
        /// Delete a ring that still holds deleted (state 5) keys; they move to `default`
        #[arg(long)]
        force: bool,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum AliasCmd {
    /// Add an alias to a key: POST /api/v2/keys/{key}/aliases/{alias}
    Create {
        /// Key id or an existing alias
        key: String,
        /// The new alias: 2-90 characters of letters, digits, - and _, not a UUID
        alias: String,
    },
    /// Remove an alias from a key: DELETE /api/v2/keys/{key}/aliases/{alias}
    Delete {
        /// Key id or alias
        key: String,
        /// The alias to remove
        alias: String,
    },
}

/// An instance policy type.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstancePolicyType {
    #[value(name = "dualAuthDelete")]
    DualAuthDelete,
    #[value(name = "rotation")]
    Rotation,
    #[value(name = "allowedNetwork")]
    AllowedNetwork,
    #[value(name = "allowedIP")]
    AllowedIp,
    #[value(name = "keyCreateImportAccess")]
    KeyCreateImportAccess,
    #[value(name = "metrics")]
    Metrics,
}

impl InstancePolicyType {
    /// The `policy_type` on the wire.
    pub fn wire_name(self) -> &'static str {
        match self {
            InstancePolicyType::DualAuthDelete => "dualAuthDelete",
            InstancePolicyType::Rotation => "rotation",
            InstancePolicyType::AllowedNetwork => "allowedNetwork",
            InstancePolicyType::AllowedIp => "allowedIP",
            InstancePolicyType::KeyCreateImportAccess => "keyCreateImportAccess",
            InstancePolicyType::Metrics => "metrics",
        }
    }
}

/// `on` / `off` (also `true` / `false`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnOff {
    #[value(name = "on", alias = "true")]
    On,
    #[value(name = "off", alias = "false")]
    Off,
}

impl OnOff {
    pub fn is_on(self) -> bool {
        self == OnOff::On
    }
}

/// `allowedNetwork` values.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllowedNetwork {
    #[value(name = "public-and-private")]
    PublicAndPrivate,
    #[value(name = "private-only")]
    PrivateOnly,
}

impl AllowedNetwork {
    pub fn wire_name(self) -> &'static str {
        match self {
            AllowedNetwork::PublicAndPrivate => "public-and-private",
            AllowedNetwork::PrivateOnly => "private-only",
        }
    }
}

const KCIA_FLAGS: [&str; 5] = [
    "create_root_key",
    "create_standard_key",
    "import_root_key",
    "import_standard_key",
    "enforce_token",
];

/// What `instance-policy set` changes. Policies not named are left as they are.
#[derive(clap::Args, Debug, Default)]
#[command(group(
    clap::ArgGroup::new("instance_policy_change")
        .required(true)
        .multiple(true)
        .args([
            "dual_auth_delete", "rotation_interval_months", "no_rotation", "allowed_ip",
            "no_allowed_ip", "allowed_network", "no_allowed_network", "metrics",
            "create_root_key", "create_standard_key", "import_root_key", "import_standard_key",
            "enforce_token", "no_key_create_import_access",
        ])
))]
pub struct InstancePolicySetArgs {
    /// dualAuthDelete: new keys get a dual authorization delete policy
    #[arg(long, value_enum, value_name = "on|off")]
    pub dual_auth_delete: Option<OnOff>,
    /// rotation: new keys get a rotation policy of N months (1-12)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=12), conflicts_with = "no_rotation")]
    pub rotation_interval_months: Option<u8>,
    /// rotation: disable the instance rotation policy
    #[arg(long)]
    pub no_rotation: bool,
    /// allowedIP: accept requests only from these CIDRs (repeat, or comma-separated). Requests
    /// from other addresses are refused afterwards, including the one that would undo this
    #[arg(long, value_name = "CIDR", value_delimiter = ',', num_args = 1.., conflicts_with = "no_allowed_ip")]
    pub allowed_ip: Vec<String>,
    /// allowedIP: disable the policy
    #[arg(long)]
    pub no_allowed_ip: bool,
    /// allowedNetwork: public-and-private or private-only
    #[arg(long, value_enum, conflicts_with = "no_allowed_network")]
    pub allowed_network: Option<AllowedNetwork>,
    /// allowedNetwork: disable the policy
    #[arg(long)]
    pub no_allowed_network: bool,
    /// metrics: enable or disable
    #[arg(long, value_enum, value_name = "on|off")]
    pub metrics: Option<OnOff>,
    /// keyCreateImportAccess: allow creating root keys (the other keyCreateImportAccess
    /// attributes keep their current values)
    #[arg(
        long,
        value_enum,
        value_name = "on|off",
        conflicts_with = "no_key_create_import_access"
    )]
    pub create_root_key: Option<OnOff>,
    /// keyCreateImportAccess: allow creating standard keys
    #[arg(
        long,
        value_enum,
        value_name = "on|off",
        conflicts_with = "no_key_create_import_access"
    )]
    pub create_standard_key: Option<OnOff>,
    /// keyCreateImportAccess: allow importing root keys
    #[arg(
        long,
        value_enum,
        value_name = "on|off",
        conflicts_with = "no_key_create_import_access"
    )]
    pub import_root_key: Option<OnOff>,
    /// keyCreateImportAccess: allow importing standard keys
    #[arg(
        long,
        value_enum,
        value_name = "on|off",
        conflicts_with = "no_key_create_import_access"
    )]
    pub import_standard_key: Option<OnOff>,
    /// keyCreateImportAccess: root key material may be imported only with an import token
    #[arg(
        long,
        value_enum,
        value_name = "on|off",
        conflicts_with = "no_key_create_import_access"
    )]
    pub enforce_token: Option<OnOff>,
    /// keyCreateImportAccess: disable the policy (everything allowed, no token enforced)
    #[arg(long)]
    pub no_key_create_import_access: bool,
}

impl InstancePolicySetArgs {
    /// The keyCreateImportAccess attributes given, by wire name.
    pub fn key_create_import_access(&self) -> Vec<(&'static str, bool)> {
        KCIA_FLAGS
            .iter()
            .zip([
                self.create_root_key,
                self.create_standard_key,
                self.import_root_key,
                self.import_standard_key,
                self.enforce_token,
            ])
            .filter_map(|(name, v)| v.map(|v| (*name, v.is_on())))
            .collect()
    }
}

#[derive(clap::Subcommand, Debug)]
pub enum InstancePolicyCmd {
    /// Show the instance policies: GET /api/v2/instance/policies
    Show {
        /// Only this policy type
        #[arg(long, value_enum, ignore_case = true)]
        policy: Option<InstancePolicyType>,
    },
    /// Change instance policies: PUT /api/v2/instance/policies, then shows them all. Policies
    /// affect keys created afterwards.
    Set(InstancePolicySetArgs),
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
        assert!(matches!(a.command, KpCommand::Key(KeyCmd::List(_))));
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
    fn lifecycle_key_commands_parse() {
        for (args, check) in [
            (&["key", "disable", "k"][..], "disable"),
            (&["key", "enable", "k"], "enable"),
            (&["key", "restore", "k"], "restore"),
            (&["key", "purge", "k"], "purge"),
            (&["key", "set-for-deletion", "k"], "set"),
            (&["key", "unset-for-deletion", "k"], "unset"),
            (&["key", "sync", "k"], "sync"),
        ] {
            let a = parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            let ok = match (&a.command, check) {
                (KpCommand::Key(KeyCmd::Disable { id }), "disable")
                | (KpCommand::Key(KeyCmd::Enable { id }), "enable")
                | (KpCommand::Key(KeyCmd::Restore { id }), "restore")
                | (KpCommand::Key(KeyCmd::Purge { id }), "purge")
                | (KpCommand::Key(KeyCmd::SetForDeletion { id }), "set")
                | (KpCommand::Key(KeyCmd::UnsetForDeletion { id }), "unset")
                | (KpCommand::Key(KeyCmd::Sync { id }), "sync") => id == "k",
                _ => false,
            };
            assert!(ok, "{args:?} -> {:?}", a.command);
            // the key id is required
            assert!(parse(&args[..2]).is_err(), "{args:?}");
        }
        match parse(&["key", "delete", "k", "--force"]).unwrap().command {
            KpCommand::Key(KeyCmd::Delete { id, force }) => assert!(force && id == "k"),
            other => panic!("{other:?}"),
        }
        match parse(&["key", "delete", "k"]).unwrap().command {
            KpCommand::Key(KeyCmd::Delete { force, .. }) => assert!(!force),
            other => panic!("{other:?}"),
        }
        match parse(&["key", "versions", "k", "--all-key-states", "--limit", "2"])
            .unwrap()
            .command
        {
            KpCommand::Key(KeyCmd::Versions {
                all_key_states,
                limit,
                offset,
                ..
            }) => assert!(all_key_states && limit == Some(2) && offset.is_none()),
            other => panic!("{other:?}"),
        }
        match parse(&["key", "move", "k", "--key-ring", "r1"])
            .unwrap()
            .command
        {
            KpCommand::Key(KeyCmd::Move {
                key_ring,
                current_key_ring,
                ..
            }) => assert!(key_ring == "r1" && current_key_ring.is_none()),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["key", "move", "k"]).is_err());
        match parse(&[
            "key",
            "list",
            "--search",
            "exact:alias:a1",
            "--filter",
            "state=1 extractable=false",
            "--sort",
            "-creationDate",
            "--key-ring",
            "r1",
        ])
        .unwrap()
        .command
        {
            KpCommand::Key(KeyCmd::List(KeyListArgs {
                search,
                filter,
                sort,
                key_ring,
                ..
            })) => {
                assert_eq!(search.as_deref(), Some("exact:alias:a1"));
                assert_eq!(filter.as_deref(), Some("state=1 extractable=false"));
                assert_eq!(sort.as_deref(), Some("-creationDate"));
                assert_eq!(key_ring.as_deref(), Some("r1"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ibmcloud_kp_command_shapes_parse() {
        // `ibmcloud kp keys -i ID --output json`
        let a = parse(&["keys", "-i", "inst", "--output", "json", "--limit", "5"]).unwrap();
        assert_eq!(a.instance.as_deref(), Some("inst"));
        assert_eq!(a.output, OutputFormat::Json);
        assert!(matches!(
            a.command,
            KpCommand::Keys(KeyListArgs { limit: Some(5), .. })
        ));
        // `--instance-ID`, `-o`
        let a = parse(&["key-rings", "--instance-ID", "inst", "-o", "json"]).unwrap();
        assert_eq!(a.instance.as_deref(), Some("inst"));
        assert_eq!(a.output, OutputFormat::Json);
        assert!(matches!(a.command, KpCommand::KeyRings { .. }));
        // `ibmcloud kp key create NAME -s -D DESC`, or --name
        match parse(&["key", "create", "my-key", "-s", "-D", "d"])
            .unwrap()
            .command
        {
            KpCommand::Key(KeyCmd::Create {
                name,
                name_flag,
                standard,
                description,
                ..
            }) => {
                assert_eq!(name.as_deref(), Some("my-key"));
                assert_eq!(name_flag, None);
                assert!(standard);
                assert_eq!(description.as_deref(), Some("d"));
            }
            other => panic!("{other:?}"),
        }
        match parse(&["key", "create", "--name", "n2", "--standard-key"])
            .unwrap()
            .command
        {
            KpCommand::Key(KeyCmd::Create {
                name_flag,
                standard,
                ..
            }) => {
                assert_eq!(name_flag.as_deref(), Some("n2"));
                assert!(standard);
            }
            other => panic!("{other:?}"),
        }
        // exactly one name
        assert!(parse(&["key", "create"]).is_err());
        assert!(parse(&["key", "create", "a", "--name", "b"]).is_err());
    }

    #[test]
    fn key_policy_commands_parse() {
        match parse(&[
            "key",
            "policy",
            "set",
            "k",
            "--rotation-interval-months",
            "3",
            "--dual-auth-delete",
        ])
        .unwrap()
        .command
        {
            KpCommand::Key(KeyCmd::Policy(KeyPolicyCmd::Set {
                rotation_interval_months,
                no_rotation,
                dual_auth_delete,
                ..
            })) => assert!(rotation_interval_months == Some(3) && !no_rotation && dual_auth_delete),
            other => panic!("{other:?}"),
        }
        // something must be set; the interval is 1..=12; on and off exclude each other
        let e = parse(&["key", "policy", "set", "k"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        for bad in ["0", "13", "x"] {
            assert!(
                parse(&[
                    "key",
                    "policy",
                    "set",
                    "k",
                    "--rotation-interval-months",
                    bad
                ])
                .is_err(),
                "{bad}"
            );
        }
        let e = parse(&[
            "key",
            "policy",
            "set",
            "k",
            "--rotation-interval-months",
            "1",
            "--no-rotation",
        ])
        .unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
        assert!(parse(&["key", "policy", "set", "k", "--no-rotation"]).is_ok());
        match parse(&["key", "policy", "show", "k", "--policy", "dualauthdelete"])
            .unwrap()
            .command
        {
            KpCommand::Key(KeyCmd::Policy(KeyPolicyCmd::Show { policy, .. })) => {
                assert_eq!(policy, Some(KeyPolicyType::DualAuthDelete))
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["key", "policy", "show", "k", "--policy", "other"]).is_err());
    }

    #[test]
    fn ring_and_alias_commands_parse() {
        assert!(matches!(
            parse(&["key-ring", "list", "--limit", "10"])
                .unwrap()
                .command,
            KpCommand::KeyRing(KeyRingCmd::List {
                limit: Some(10),
                offset: None
            })
        ));
        assert!(matches!(
            parse(&["key-ring", "create", "r1"]).unwrap().command,
            KpCommand::KeyRing(KeyRingCmd::Create { id }) if id == "r1"
        ));
        assert!(matches!(
            parse(&["key-ring", "delete", "r1", "--force"]).unwrap().command,
            KpCommand::KeyRing(KeyRingCmd::Delete { id, force: true }) if id == "r1"
        ));
        assert!(parse(&["key-ring", "create"]).is_err());
        assert!(matches!(
            parse(&["alias", "create", "k", "a1"]).unwrap().command,
            KpCommand::Alias(AliasCmd::Create { key, alias }) if key == "k" && alias == "a1"
        ));
        assert!(matches!(
            parse(&["alias", "delete", "k", "a1"]).unwrap().command,
            KpCommand::Alias(AliasCmd::Delete { key, alias }) if key == "k" && alias == "a1"
        ));
        assert!(parse(&["alias", "create", "k"]).is_err());
    }

    fn policy_set(args: &[&str]) -> Result<InstancePolicySetArgs, clap::Error> {
        let mut v = vec!["instance-policy", "set"];
        v.extend_from_slice(args);
        parse(&v).map(|a| match a.command {
            KpCommand::InstancePolicy(InstancePolicyCmd::Set(s)) => s,
            other => panic!("{other:?}"),
        })
    }

    #[test]
    fn instance_policy_commands_parse() {
        let s = policy_set(&[
            "--dual-auth-delete",
            "on",
            "--rotation-interval-months",
            "12",
            "--enforce-token",
            "true",
            "--import-standard-key",
            "off",
            "--allowed-ip",
            "10.0.0.0/8,::1/128",
            "--allowed-ip",
            "192.168.0.0/16",
            "--metrics",
            "off",
            "--allowed-network",
            "private-only",
        ])
        .unwrap();
        assert_eq!(s.dual_auth_delete, Some(OnOff::On));
        assert_eq!(s.rotation_interval_months, Some(12));
        assert_eq!(s.allowed_ip, ["10.0.0.0/8", "::1/128", "192.168.0.0/16"]);
        assert_eq!(s.metrics, Some(OnOff::Off));
        assert_eq!(s.allowed_network, Some(AllowedNetwork::PrivateOnly));
        assert_eq!(
            s.key_create_import_access(),
            vec![("import_standard_key", false), ("enforce_token", true)]
        );
        // at least one change; on/off only; ranges; enabling and disabling the same policy conflict
        assert_eq!(
            policy_set(&[]).unwrap_err().kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
        assert!(policy_set(&["--dual-auth-delete", "maybe"]).is_err());
        assert!(policy_set(&["--dual-auth-delete"]).is_err());
        assert!(policy_set(&["--rotation-interval-months", "13"]).is_err());
        for pair in [
            ["--rotation-interval-months", "1", "--no-rotation"].as_slice(),
            &["--allowed-ip", "10.0.0.0/8", "--no-allowed-ip"],
            &["--allowed-network", "private-only", "--no-allowed-network"],
            &["--enforce-token", "on", "--no-key-create-import-access"],
            &["--create-root-key", "off", "--no-key-create-import-access"],
        ] {
            let e = policy_set(pair).unwrap_err();
            assert_eq!(
                e.kind(),
                clap::error::ErrorKind::ArgumentConflict,
                "{pair:?}"
            );
        }
        for one in [
            ["--no-rotation"].as_slice(),
            &["--no-allowed-ip"],
            &["--no-key-create-import-access"],
            &["--enforce-token", "off"],
            &["--create-standard-key", "on"],
        ] {
            assert!(policy_set(one).is_ok(), "{one:?}");
        }
        match parse(&["instance-policy", "show", "--policy", "allowedIP"])
            .unwrap()
            .command
        {
            KpCommand::InstancePolicy(InstancePolicyCmd::Show { policy }) => {
                assert_eq!(policy.map(InstancePolicyType::wire_name), Some("allowedIP"))
            }
            other => panic!("{other:?}"),
        }
        match parse(&[
            "instance-policy",
            "show",
            "--policy",
            "KEYCREATEIMPORTACCESS",
        ])
        .unwrap()
        .command
        {
            KpCommand::InstancePolicy(InstancePolicyCmd::Show { policy }) => {
                assert_eq!(policy, Some(InstancePolicyType::KeyCreateImportAccess))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["instance-policy", "show"]).unwrap().command,
            KpCommand::InstancePolicy(InstancePolicyCmd::Show { policy: None })
        ));
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

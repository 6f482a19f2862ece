//! Request bodies. Field names are lowercase: bodies pass through [`crate::de::lowercase_keys`]
//! first, so `encryptedNonce`, `EncryptedNonce` and `encryptednonce` are one field. Schemas
//! (the `#[schema(rename)]`s) give the spelling Key Protect documents.
//!
//! Unknown members are ignored except where Key Protect refuses them (policy resources).
//! Envelope members (`metadata`, `resources`) are [`Slot`]s: the API checks them in a fixed
//! order with their own messages.

use serde::de::IgnoredAny;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::de::{self, Slot};

/// `metadata` of a request collection.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct RequestMetadata {
    /// The media type of the resources (`application/vnd.ibm.kms.key+json` for keys).
    #[serde(default, deserialize_with = "de::str_slot")]
    /// Required (and checked) when creating keys; other envelopes may omit it.
    #[schema(rename = "collectionType", value_type = Option<String>)]
    pub collectiontype: Slot<String>,
    /// The number of resources.
    #[serde(default, deserialize_with = "de::int_slot")]
    #[schema(rename = "collectionTotal", value_type = i64, required = true, minimum = 1)]
    pub collectiontotal: Slot<i64>,
}

/// `metadata` of a key creation: one key of type `application/vnd.ibm.kms.key+json`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct KeyRequestMetadata {
    #[serde(default, deserialize_with = "de::str_slot")]
    #[schema(
        rename = "collectionType",
        value_type = String,
        required = true,
        pattern = "^application/vnd\\.ibm\\.kms\\.key\\+json$"
    )]
    pub collectiontype: Slot<String>,
    #[serde(default, deserialize_with = "de::int_slot")]
    #[schema(
        rename = "collectionTotal",
        value_type = i64,
        required = true,
        minimum = 1,
        maximum = 1
    )]
    pub collectiontotal: Slot<i64>,
}

macro_rules! envelope {
    ($(#[$doc:meta])* $name:ident, $meta:ty, $item:ty, [$($limits:tt)*]) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, Deserialize, ToSchema)]
        pub struct $name {
            #[serde(default, deserialize_with = "de::obj_slot")]
            #[schema(value_type = $meta, required = true)]
            pub metadata: Slot<$meta>,
            #[serde(default, deserialize_with = "de::obj_list_slot")]
            #[schema(value_type = Vec<$item>, required = true, min_items = 1 $($limits)*)]
            pub resources: Slot<Vec<Slot<$item>>>,
        }

        impl Collection for $name {
            type Item = $item;
            fn into_resources(self) -> Vec<Slot<$item>> {
                self.resources.value().unwrap_or_default()
            }
        }
    };
}

/// A request collection: its resources once the envelope has been checked.
pub trait Collection {
    type Item;
    fn into_resources(self) -> Vec<Slot<Self::Item>>;
}

/// The envelope of any request collection with its resources unread: the API checks the
/// envelope (`metadata`, `collectionTotal`, resources that are objects) before reading the
/// resources.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct EnvelopeShape {
    #[serde(default, deserialize_with = "de::obj_slot")]
    pub metadata: Slot<RequestMetadata>,
    #[serde(default, deserialize_with = "de::obj_list_slot")]
    pub resources: Slot<Vec<Slot<IgnoredAny>>>,
}

macro_rules! key_create_fields {
    ($(#[$doc:meta])* $name:ident { $($extra:tt)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, Deserialize, ToSchema)]
        pub struct $name {
            /// Must be `application/vnd.ibm.kms.key+json` when present.
            #[serde(default, rename = "type", deserialize_with = "de::str_slot")]
            #[schema(value_type = Option<String>)]
            pub kind: Slot<String>,
            /// A human-readable name: 2 to 90 characters, no control characters (required).
            #[serde(default, deserialize_with = "de::opt_str")]
            #[schema(value_type = String, required = true, min_length = 2, max_length = 90, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
            pub name: Option<String>,
            /// 2 to 240 characters, no control characters.
            #[serde(default, deserialize_with = "de::opt_str")]
            #[schema(value_type = Option<String>, min_length = 2, max_length = 240, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
            pub description: Option<String>,
            #[serde(default, deserialize_with = "de::opt_str_list")]
            pub tags: Option<Vec<String>>,
            /// `false` (the default): a root key; `true`: a standard key.
            #[serde(default, deserialize_with = "de::opt_bool")]
            pub extractable: Option<bool>,
            /// Base64 key material to import.
            #[serde(default, deserialize_with = "de::opt_str")]
            #[schema(value_type = Option<String>, pattern = "^[A-Za-z0-9+/]+={0,2}$")]
            pub payload: Option<String>,
            /// Base64 nonce encrypted under the imported key (secure import).
            #[serde(default, deserialize_with = "de::opt_str")]
            #[schema(rename = "encryptedNonce")]
            pub encryptednonce: Option<String>,
            /// Base64 IV of `encryptedNonce`.
            #[serde(default, deserialize_with = "de::opt_str")]
            pub iv: Option<String>,
            /// `RSAES_OAEP_SHA_256` (or `RSAES_OAEP_SHA_1`) for a secure import.
            #[serde(default, deserialize_with = "de::opt_str")]
            #[schema(rename = "encryptionAlgorithm")]
            pub encryptionalgorithm: Option<String>,
            /// RFC 3339 date after which the key is deactivated.
            #[serde(default, deserialize_with = "de::opt_str")]
            #[schema(rename = "expirationDate")]
            pub expirationdate: Option<String>,
            /// Aliases to create with the key, in the same transaction (at most 5; the rules of
            /// `POST /keys/{id}/aliases/{alias}`).
            #[serde(default, deserialize_with = "de::opt_str_list")]
            #[schema(max_items = 5)]
            pub aliases: Option<Vec<String>>,
            $($extra)*
        }
    };
}

key_create_fields!(
    /// One key to create or import (`POST /keys`). Other members are ignored.
    KeyCreateResource {}
);

key_create_fields!(
    /// One key to create (`POST /keys_with_policy_overrides`), with policies overriding the
    /// instance's.
    KeyCreateWithOverridesResource {
        #[serde(default, deserialize_with = "de::opt_obj")]
        pub rotation: Option<RotationOverride>,
        #[serde(default, deserialize_with = "de::opt_obj")]
        #[schema(rename = "dualAuthDelete")]
        pub dualauthdelete: Option<DualAuthOverride>,
    }
);

envelope!(
    /// `POST /keys`: a collection of exactly one key.
    KeyCreateRequest,
    KeyRequestMetadata,
    KeyCreateResource,
    [, max_items = 1]
);
envelope!(
    /// `POST /keys_with_policy_overrides`: a collection of exactly one key.
    KeyCreateWithOverridesRequest,
    KeyRequestMetadata,
    KeyCreateWithOverridesResource,
    [, max_items = 1]
);

impl KeyCreateWithOverridesResource {
    /// The plain resource and the two overrides.
    pub fn split(
        self,
    ) -> (
        KeyCreateResource,
        Option<RotationOverride>,
        Option<DualAuthOverride>,
    ) {
        let base = KeyCreateResource {
            kind: self.kind,
            name: self.name,
            description: self.description,
            tags: self.tags,
            extractable: self.extractable,
            payload: self.payload,
            encryptednonce: self.encryptednonce,
            iv: self.iv,
            encryptionalgorithm: self.encryptionalgorithm,
            expirationdate: self.expirationdate,
            aliases: self.aliases,
        };
        (base, self.rotation, self.dualauthdelete)
    }
}

/// `rotation` of a key created with policy overrides.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct RotationOverride {
    /// Defaults to `true`.
    #[serde(default, deserialize_with = "de::opt_bool")]
    pub enabled: Option<bool>,
    /// 1 to 12.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub interval_month: Option<i64>,
}

/// `dualAuthDelete` of a key created with policy overrides.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct DualAuthOverride {
    /// Defaults to `false`.
    #[serde(default, deserialize_with = "de::opt_bool")]
    pub enabled: Option<bool>,
}

/// `POST /keys/{id}/actions/wrap`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct WrapRequest {
    /// Base64 of 1 to 7500 bytes to wrap; absent: a new 256-bit data encryption key is
    /// generated.
    #[serde(default, deserialize_with = "de::opt_str")]
    #[schema(value_type = Option<String>, min_length = 4, max_length = 10000, pattern = "^[A-Za-z0-9+/]+={0,2}$")]
    pub plaintext: Option<String>,
    /// Additional authenticated data, also required to unwrap.
    #[serde(default, deserialize_with = "de::opt_str_list")]
    pub aad: Option<Vec<String>>,
}

/// `POST /keys/{id}/actions/rewrapTo` (a Keyward extension): unwrap under this key, wrap the
/// same DEK under `targetKeyId` with the same `aad`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct RewrapToRequest {
    /// The ciphertext a wrap under this key returned (required).
    #[serde(default, deserialize_with = "de::opt_str")]
    #[schema(value_type = String, required = true, min_length = 1)]
    pub ciphertext: Option<String>,
    /// The AAD of that wrap; the new ciphertext carries the same AAD.
    #[serde(default, deserialize_with = "de::opt_str_list")]
    pub aad: Option<Vec<String>>,
    /// The root key (id or alias) to wrap under (required).
    #[serde(default, deserialize_with = "de::opt_str")]
    #[schema(rename = "targetKeyId", value_type = String, required = true, min_length = 1)]
    pub targetkeyid: Option<String>,
}

/// One operation of `POST /api/v2/x-keyward/batch`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct BatchItem {
    /// `wrap`, `unwrap`, `rewrap` or `rewrapTo`.
    #[serde(default, deserialize_with = "de::opt_str")]
    #[schema(value_type = String, required = true)]
    pub action: Option<String>,
    /// The root key (id or alias).
    #[serde(default, deserialize_with = "de::opt_str")]
    #[schema(rename = "keyId", value_type = String, required = true)]
    pub keyid: Option<String>,
    /// `wrap`: base64 of the DEK (absent: one is generated).
    #[serde(default, deserialize_with = "de::opt_str")]
    #[schema(value_type = Option<String>)]
    pub plaintext: Option<String>,
    /// `unwrap`, `rewrap`, `rewrapTo`: the ciphertext.
    #[serde(default, deserialize_with = "de::opt_str")]
    #[schema(value_type = Option<String>)]
    pub ciphertext: Option<String>,
    #[serde(default, deserialize_with = "de::opt_str_list")]
    pub aad: Option<Vec<String>>,
    /// `rewrapTo`: the root key to wrap under.
    #[serde(default, deserialize_with = "de::opt_str")]
    #[schema(rename = "targetKeyId", value_type = Option<String>)]
    pub targetkeyid: Option<String>,
}

/// `POST /api/v2/x-keyward/batch` (a Keyward extension).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct BatchRequest {
    /// 1 to 100 operations, answered in order.
    #[serde(default)]
    #[schema(required = true, min_items = 1, max_items = 100)]
    pub requests: Option<Vec<BatchItem>>,
}

/// `POST /keys/{id}/actions/unwrap` and `.../rewrap`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct UnwrapRequest {
    /// The ciphertext a wrap returned (required).
    #[serde(default, deserialize_with = "de::opt_str")]
    #[schema(value_type = String, required = true, min_length = 1)]
    pub ciphertext: Option<String>,
    #[serde(default, deserialize_with = "de::opt_str_list")]
    pub aad: Option<Vec<String>>,
}

/// `POST /keys/{id}/actions/rotate`: new material for an imported root key.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct RotateRequest {
    /// Base64 of the new material (imported keys only).
    #[serde(default, deserialize_with = "de::opt_str")]
    #[schema(value_type = Option<String>, pattern = "^[A-Za-z0-9+/]+={0,2}$")]
    pub payload: Option<String>,
    #[serde(default, deserialize_with = "de::opt_str")]
    #[schema(rename = "encryptedNonce")]
    pub encryptednonce: Option<String>,
    #[serde(default, deserialize_with = "de::opt_str")]
    pub iv: Option<String>,
    #[serde(default, deserialize_with = "de::opt_str")]
    #[schema(rename = "encryptionAlgorithm")]
    pub encryptionalgorithm: Option<String>,
}

/// The body of actions that take none (enable, disable, setKeyForDeletion, ...): absent,
/// `null` or an object, whose members are ignored.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct EmptyRequest {}

/// `POST /keys/{id}/restore`: legacy clients send the original material; any JSON is
/// accepted and ignored.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct RestoreRequest {
    #[serde(default, deserialize_with = "de::any")]
    #[schema(value_type = Option<String>)]
    pub payload: Option<IgnoredAny>,
}

/// `PATCH /keys/{id}`: move the key to another key ring.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct PatchKeyRequest {
    /// The key ring to move the key to (required).
    #[serde(default, deserialize_with = "de::opt_str")]
    #[schema(rename = "keyRingID", value_type = String, required = true, pattern = "^[A-Za-z0-9_-]{2,100}$")]
    pub keyringid: Option<String>,
}

/// `rotation` of a key policy (`PUT /keys/{id}/policies`).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct RotationPolicyInput {
    /// Defaults to `true`.
    #[serde(default, deserialize_with = "de::opt_bool")]
    pub enabled: Option<bool>,
    /// 1 to 12 (another type is refused by the service as out of range).
    #[serde(default, deserialize_with = "de::int_slot")]
    #[schema(value_type = Option<i64>)]
    pub interval_month: Slot<i64>,
}

/// `dualAuthDelete` of a key policy.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct DualAuthPolicyInput {
    /// Defaults to `false`.
    #[serde(default, deserialize_with = "de::opt_bool")]
    pub enabled: Option<bool>,
}

/// One key policy resource: a rotation or a dual-authorization-delete policy. Other
/// members are refused.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyPolicyResource {
    /// `application/vnd.ibm.kms.policy+json` (any value is accepted and ignored).
    #[serde(default, rename = "type", deserialize_with = "de::any")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub kind: Option<IgnoredAny>,
    #[serde(default, deserialize_with = "de::obj_slot")]
    #[schema(value_type = Option<RotationPolicyInput>)]
    pub rotation: Slot<RotationPolicyInput>,
    #[serde(default, deserialize_with = "de::obj_slot")]
    #[schema(rename = "dualAuthDelete", value_type = Option<DualAuthPolicyInput>)]
    pub dualauthdelete: Slot<DualAuthPolicyInput>,
}

envelope!(
    /// `PUT /keys/{id}/policies`.
    KeyPoliciesRequest,
    RequestMetadata,
    KeyPolicyResource,
    []
);

/// `policy_data` of an instance policy. Other members are refused.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstancePolicyData {
    /// Required.
    #[serde(default, deserialize_with = "de::opt_bool")]
    #[schema(value_type = bool, required = true)]
    pub enabled: Option<bool>,
    /// Depends on the policy type: `interval_month` (rotation), `allowed_network`
    /// (allowedNetwork), `allowed_ip` (allowedIP), `create_root_key`, ... (keyCreateImportAccess).
    #[serde(default, deserialize_with = "de::opt_obj")]
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<serde_json::Map<String, serde_json::Value>>,
}

/// One instance policy resource. Other members are refused.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstancePolicyResource {
    /// rotation, dualAuthDelete, allowedNetwork, allowedIP, keyCreateImportAccess or metrics
    /// (required).
    #[serde(default, deserialize_with = "de::opt_str")]
    #[schema(value_type = String, required = true, pattern = "^(rotation|dualAuthDelete|allowedNetwork|allowedIP|keyCreateImportAccess|metrics)$")]
    pub policy_type: Option<String>,
    /// Required.
    #[serde(default, deserialize_with = "de::opt_obj")]
    #[schema(value_type = InstancePolicyData, required = true)]
    pub policy_data: Option<InstancePolicyData>,
    /// `application/vnd.ibm.kms.policy+json` (any value is accepted and ignored).
    #[serde(default, rename = "type", deserialize_with = "de::any")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub kind: Option<IgnoredAny>,
}

envelope!(
    /// `PUT /instance/policies`.
    InstancePoliciesRequest,
    RequestMetadata,
    InstancePolicyResource,
    []
);

/// `POST /import_token`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct ImportTokenRequest {
    /// Lifetime in seconds (300 to 86400; default 600).
    #[serde(default, deserialize_with = "de::opt_int")]
    #[schema(value_type = i64, minimum = 300, maximum = 86400)]
    pub expiration: Option<i64>,
    /// How many times the token may be used (1 to 500; default 1).
    #[serde(default, deserialize_with = "de::opt_int")]
    #[schema(rename = "maxAllowedRetrievals", value_type = i64, minimum = 1, maximum = 500)]
    pub maxallowedretrievals: Option<i64>,
    /// Keyward extension: the token's keypair, `RSA_4096` (the default, Key Protect's token)
    /// or `XWING_MLKEM768_X25519` (hybrid post-quantum; docs/import-tokens.md).
    #[serde(default, deserialize_with = "de::opt_str")]
    #[schema(value_type = Option<String>, pattern = "^(RSA_4096|XWING_MLKEM768_X25519)$")]
    pub algorithm: Option<String>,
}

/// `POST /identity/token` (`application/x-www-form-urlencoded`).
#[derive(Clone, Default, ToSchema)]
pub struct IdentityTokenForm {
    /// `urn:ibm:params:oauth:grant-type:apikey`.
    pub grant_type: Option<String>,
    /// A Keyward API key.
    pub apikey: Option<String>,
    /// The refresh token of the `refresh_token` grant.
    pub refresh_token: Option<String>,
}

/// The secrets of the form are never formatted.
impl std::fmt::Debug for IdentityTokenForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityTokenForm")
            .field("grant_type", &self.grant_type)
            .finish_non_exhaustive()
    }
}

impl IdentityTokenForm {
    /// The first `grant_type` and `apikey` of a form body (an unreadable form is empty).
    pub fn parse(bytes: &[u8]) -> Self {
        let mut form = Self::default();
        for (k, v) in form_urlencoded::parse(bytes) {
            let slot = match k.as_ref() {
                "grant_type" => &mut form.grant_type,
                "apikey" => &mut form.apikey,
                "refresh_token" => &mut form.refresh_token,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(v.into_owned());
            }
        }
        form
    }
}

//! Request fixtures: secure-import bodies made against a retrieved import token.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use keyward_crypto::import::{encrypt_material, encrypt_nonce, OaepHash};
use keyward_crypto::SecretBytes;
use serde_json::{json, Value};

use crate::KEY_TYPE;

/// The import token's public key (PEM) and nonce, from a `GET /api/v2/import_token` body.
pub fn import_token_parts(token: &Value) -> (String, Vec<u8>) {
    let pem = B64.decode(token["payload"].as_str().unwrap()).unwrap();
    let nonce = B64.decode(token["nonce"].as_str().unwrap()).unwrap();
    (String::from_utf8(pem).unwrap(), nonce)
}

/// A key resource that imports `material` securely (RSA-OAEP SHA-256 under the token's public
/// key, the nonce sealed under the material) as a non-extractable root key named `name`.
pub fn secure_import_resource(token: &Value, material: &[u8], name: &str) -> Value {
    let (pem, nonce) = import_token_parts(token);
    let payload = encrypt_material(&pem, OaepHash::Sha256, material).unwrap();
    let (iv, en) = encrypt_nonce(&SecretBytes::copy_from(material), &nonce).unwrap();
    json!({"type": KEY_TYPE, "name": name, "extractable": false,
           "payload": B64.encode(payload), "encryptedNonce": B64.encode(en),
           "iv": B64.encode(iv), "encryptionAlgorithm": "RSAES_OAEP_SHA_256"})
}

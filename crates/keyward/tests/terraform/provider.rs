//! What Terraform's IBM provider sends and how it reads the answers, call by call.
//!
//! Sources (IBM-Cloud/terraform-provider-ibm, IBM/keyprotect-go-client, IBM-Cloud/bluemix-go):
//! - session login: `ibm/conns/config.go` (the session's authenticator, an IBM SDK core
//!   `IamAuthenticator` with the API key, or with a refresh token and client `bx`/`bx`;
//!   `fetchUserDetails` then reads the claims `id`, `account.bss`, `iss`); bluemix-go
//!   `authentication/iam.go` (`AuthenticateAPIKey`: `POST /identity/token`,
//!   `Authorization: Basic bx:bx`, form `grant_type`, `apikey`, `response_type=cloud_iam`;
//!   `RefreshToken`: the same with `grant_type=refresh_token`). The harness logs in the
//!   bluemix-go way, which sends everything the SDK core's form does plus the client
//!   authentication;
//! - the Key Protect client's token source: keyprotect-go-client `iam/iam.go` (form
//!   `grant_type`, `apikey`);
//! - Resource Controller: `populateKPClient` in `ibm/service/kms/resource_ibm_kms_key.go`
//!   (`GetResourceInstance`, then `extensions.endpoints.public|private`, then
//!   `IBMCLOUD_KP_API_ENDPOINT` + `/api/v2/keys`);
//! - Key Protect calls: keyprotect-go-client `kp.go` (`newRequest`: `accept:
//!   application/json`, a JSON body without `Content-Type`; `do`: `bluemix-instance`,
//!   `authorization`, `correlation-id`, `x-kms-key-ring` when the client has a key ring;
//!   201 with a body and 200 are decoded, 204 is not, anything else is an error),
//!   `keys.go`, `policy.go`, `instances.go`, `key_rings.go`, `registrations.go`.

use std::sync::Mutex;

use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use base64::Engine;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

pub const KEY_TYPE: &str = "application/vnd.ibm.kms.key+json";
pub const POLICY_TYPE: &str = "application/vnd.ibm.kms.policy+json";

/// A `*time.Time` field: absent or null is `None`; anything else must be RFC 3339 (Go's
/// `time.Time.UnmarshalJSON` refuses other strings, failing the whole call).
#[derive(Debug, Clone, PartialEq)]
pub struct GoTime(pub time::OffsetDateTime);

impl<'de> Deserialize<'de> for GoTime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        time::OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339)
            .map(GoTime)
            .map_err(|e| serde::de::Error::custom(format!("not RFC 3339: {s:?}: {e}")))
    }
}

#[derive(Debug, Deserialize)]
pub struct Collection<T> {
    pub metadata: Metadata,
    #[serde(default = "Vec::new")]
    pub resources: Vec<T>,
}

#[derive(Debug, Deserialize)]
pub struct Metadata {
    #[serde(rename = "collectionType")]
    pub collection_type: String,
    #[serde(rename = "collectionTotal")]
    pub collection_total: i64,
}

/// keyprotect-go-client's `Key` (`keys.go`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Key {
    pub id: String,
    pub name: String,
    pub description: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub aliases: Option<Vec<String>>,
    #[serde(rename = "algorithmType")]
    pub algorithm_type: String,
    #[serde(rename = "createdBy")]
    pub created_by: String,
    #[serde(rename = "creationDate")]
    pub creation_date: Option<GoTime>,
    #[serde(rename = "lastUpdateDate")]
    pub last_update_date: Option<GoTime>,
    #[serde(rename = "lastRotateDate")]
    pub last_rotate_date: Option<GoTime>,
    #[serde(rename = "keyVersion")]
    pub key_version: Option<KeyVersion>,
    #[serde(rename = "keyRingID")]
    pub key_ring_id: String,
    pub extractable: bool,
    #[serde(rename = "expirationDate")]
    pub expiration: Option<GoTime>,
    pub imported: bool,
    pub payload: String,
    pub state: i64,
    #[serde(rename = "encryptionAlgorithm")]
    pub encryption_algorithm: String,
    pub crn: String,
    #[serde(rename = "encryptedNonce")]
    pub encrypted_nonce: String,
    pub iv: String,
    pub deleted: Option<bool>,
    #[serde(rename = "deletedBy")]
    pub deleted_by: Option<String>,
    #[serde(rename = "deletionDate")]
    pub deletion_date: Option<GoTime>,
    #[serde(rename = "purgeAllowed")]
    pub purge_allowed: Option<bool>,
    #[serde(rename = "purgeAllowedFrom")]
    pub purge_allowed_from: Option<GoTime>,
    #[serde(rename = "purgeScheduledOn")]
    pub purge_scheduled_on: Option<GoTime>,
    #[serde(rename = "dualAuthDelete")]
    pub dual_auth_delete: Option<DualAuth>,
    pub rotation: Option<Rotation>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct KeyVersion {
    pub id: String,
    #[serde(rename = "creationDate")]
    pub creation_date: Option<GoTime>,
}

/// `policy.go`'s `Rotation` and `DualAuth`.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(default)]
pub struct Rotation {
    pub enabled: Option<bool>,
    pub interval_month: i64,
}

#[derive(Debug, Default, Deserialize, Clone)]
#[serde(default)]
pub struct DualAuth {
    pub enabled: Option<bool>,
}

/// `policy.go`'s `Policy`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Policy {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(rename = "createdBy")]
    pub created_by: String,
    #[serde(rename = "creationDate")]
    pub created_at: Option<GoTime>,
    pub crn: String,
    #[serde(rename = "lastUpdateDate")]
    pub updated_at: Option<GoTime>,
    #[serde(rename = "updatedBy")]
    pub updated_by: String,
    pub rotation: Option<Rotation>,
    #[serde(rename = "dualAuthDelete")]
    pub dual_auth: Option<DualAuth>,
}

/// `instances.go`'s `InstancePolicy`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct InstancePolicy {
    #[serde(rename = "createdBy")]
    pub created_by: String,
    #[serde(rename = "creationDate")]
    pub created_at: Option<GoTime>,
    #[serde(rename = "lastUpdated")]
    pub updated_at: Option<GoTime>,
    #[serde(rename = "updatedBy")]
    pub updated_by: String,
    pub policy_type: String,
    pub policy_data: PolicyData,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PolicyData {
    pub enabled: Option<bool>,
    pub attributes: Option<Attributes>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Attributes {
    pub allowed_network: Option<String>,
    pub allowed_ip: Option<Vec<String>>,
    pub create_root_key: Option<bool>,
    pub create_standard_key: Option<bool>,
    pub import_root_key: Option<bool>,
    pub import_standard_key: Option<bool>,
    pub enforce_token: Option<bool>,
    pub interval_month: Option<i64>,
}

/// `key_rings.go`'s `KeyRing`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct KeyRing {
    pub id: String,
    #[serde(rename = "creationDate")]
    pub creation_date: Option<GoTime>,
    #[serde(rename = "createdBy")]
    pub created_by: String,
}

/// `registrations.go`'s `Registration`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Registration {
    #[serde(rename = "keyId")]
    pub key_id: String,
    #[serde(rename = "resourceCrn")]
    pub resource_crn: String,
    #[serde(rename = "createdBy")]
    pub created_by: String,
    #[serde(rename = "creationDate")]
    pub creation_date: Option<GoTime>,
    #[serde(rename = "preventKeyDeletion")]
    pub prevent_key_deletion: bool,
}

/// The Resource Controller's `ResourceInstance` (the fields the provider reads).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ResourceInstance {
    pub id: String,
    pub guid: String,
    pub crn: String,
    pub name: String,
    pub state: String,
    pub extensions: serde_json::Map<String, Value>,
}

/// `fetchUserDetails`'s view of the session's token.
#[derive(Debug)]
pub struct UserConfig {
    pub user_id: String,
    pub account: String,
    pub cloud_name: &'static str,
}

/// A Key Protect error as keyprotect-go-client returns it (`kp.Error`).
#[derive(Debug)]
pub struct KpError {
    pub status: u16,
    /// Shown in failure messages.
    #[allow(dead_code)]
    pub body: String,
}

/// One provider run: its session, and the log of every request it sent.
pub struct Provider {
    pub http: reqwest::Client,
    /// `IBMCLOUD_IAM_API_ENDPOINT`, `IBMCLOUD_RESOURCE_CONTROLLER_API_ENDPOINT`,
    /// `IBMCLOUD_KP_API_ENDPOINT`: all this server.
    pub endpoint: String,
    /// The session's `IAMAccessToken` (`Bearer ...`) and `IAMRefreshToken`.
    pub access: String,
    pub refresh: String,
    pub user: Option<UserConfig>,
    /// The instance the KP client is pointed at (`kpAPI.Config.InstanceID`).
    pub instance: String,
    /// `kpAPI.Config.KeyRing` (sent as `x-kms-key-ring` when set).
    pub key_ring: Option<String>,
    log: Mutex<Vec<String>>,
}

/// The parts of a JWT's payload (no verification: the provider checks no signature).
pub fn jwt_claims(token: &str) -> Value {
    let token = token.strip_prefix("Bearer ").unwrap_or(token);
    let payload = token.split('.').nth(1).expect("a JWT has three parts");
    serde_json::from_slice(&B64URL.decode(payload).unwrap()).unwrap()
}

fn correlation_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl Provider {
    /// The provider's session start: the bluemix-go API-key login, then `fetchUserDetails`.
    pub async fn configure(endpoint: &str, apikey: &str) -> Provider {
        let mut p = Provider {
            http: keyward_testsupport::http(),
            endpoint: endpoint.to_string(),
            access: String::new(),
            refresh: String::new(),
            user: None,
            instance: String::new(),
            key_ring: None,
            log: Mutex::new(Vec::new()),
        };
        let v = p
            .bluemix_token(&[
                ("response_type", "cloud_iam"),
                ("grant_type", "urn:ibm:params:oauth:grant-type:apikey"),
                ("apikey", apikey),
            ])
            .await
            .expect("the session's API-key login");
        p.set_tokens(&v);
        p.user = Some(p.fetch_user_details());
        p
    }

    fn record(&self, line: String) {
        self.log.lock().unwrap().push(line);
    }

    /// The requests sent since the last call, as `METHOD /path[?query]`.
    pub fn take_log(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }

    /// bluemix-go `getTokens`: `POST /identity/token`, `Basic bx:bx`, a form.
    pub async fn bluemix_token(&self, form: &[(&str, &str)]) -> Result<Value, (u16, Value)> {
        self.record("POST /identity/token".into());
        let r = self
            .http
            .post(format!("{}/identity/token", self.endpoint))
            .header("authorization", format!("Basic {}", B64.encode("bx:bx")))
            .header("accept", "application/json")
            .form(form)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        let v: Value = r.json().await.unwrap();
        assert_eq!(ct.as_deref(), Some("application/json"));
        if status == 200 {
            // IAMTokenResponse: strings
            for f in ["access_token", "refresh_token", "token_type"] {
                assert!(v[f].is_string(), "{f} in {v}");
            }
            Ok(v)
        } else {
            // IAMError: errorCode, errorMessage strings (errorDetails optional)
            assert!(v["errorCode"].is_string(), "{v}");
            assert!(v["errorMessage"].is_string(), "{v}");
            Err((status, v))
        }
    }

    /// bluemix-go `setTokens`.
    pub fn set_tokens(&mut self, v: &Value) {
        self.access = format!(
            "{} {}",
            v["token_type"].as_str().unwrap(),
            v["access_token"].as_str().unwrap()
        );
        self.refresh = v["refresh_token"].as_str().unwrap().to_string();
    }

    /// `fetchUserDetails` (`ibm/conns/config.go`): the type assertions it makes panic in Go
    /// when a claim is missing or not a string; here they are assertions.
    pub fn fetch_user_details(&self) -> UserConfig {
        let claims = jwt_claims(&self.access);
        let user_id = claims["id"]
            .as_str()
            .expect("claim id (string)")
            .to_string();
        let account = claims["account"]["bss"]
            .as_str()
            .expect("claim account.bss (string)")
            .to_string();
        let iss = claims["iss"].as_str().expect("claim iss (string)");
        // The IBM SDK core reads exp and iat as numbers to schedule refreshes.
        assert!(claims["exp"].is_i64() && claims["iat"].is_i64(), "{claims}");
        UserConfig {
            user_id,
            account,
            cloud_name: if iss.contains("https://iam.cloud.ibm.com") {
                "bluemix"
            } else {
                "staging"
            },
        }
    }

    /// `populateKPClient`: the Resource Controller lookup, then the KP URL.
    pub async fn populate_kp_client(&mut self, instance_id: &str) -> ResourceInstance {
        self.record(format!("GET /v2/resource_instances/{instance_id}"));
        let r = self
            .http
            .get(format!(
                "{}/v2/resource_instances/{instance_id}",
                self.endpoint
            ))
            .header("authorization", &self.access)
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "GetResourceInstance");
        let inst: ResourceInstance = r.json().await.unwrap();
        // KmsEndpointURL: extensions["endpoints"].(map)["public"].(string)
        let public = inst.extensions["endpoints"]["public"]
            .as_str()
            .expect("extensions.endpoints.public (string)");
        assert!(inst.extensions["endpoints"]["private"].is_string());
        assert_eq!(public, self.endpoint, "the endpoint points back at Keyward");
        self.instance = instance_id.to_string();
        inst
    }

    /// keyprotect-go-client `newRequest` + `do`.
    pub async fn kp<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
        prefer: Option<&str>,
    ) -> Result<Option<T>, KpError> {
        let mut url = reqwest::Url::parse(&format!("{}/api/v2/{path}", self.endpoint)).unwrap();
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let mut req = self
            .http
            .request(method.clone(), url)
            .header("accept", "application/json")
            .header("bluemix-instance", &self.instance)
            .header("authorization", &self.access)
            .header("correlation-id", correlation_id());
        if let Some(ring) = &self.key_ring {
            req = req.header("x-kms-key-ring", ring);
        }
        if let Some(p) = prefer {
            req = req.header("prefer", p);
        }
        if let Some(b) = body {
            req = req.body(serde_json::to_vec(&b).unwrap());
        }
        let req = req.build().unwrap();
        let q = req
            .url()
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        self.record(format!("{method} {}{q}", req.url().path()));
        let r = self.http.execute(req).await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        match status {
            201 if text.is_empty() => Ok(None),
            200 | 201 => Ok(Some(serde_json::from_str(&text).unwrap_or_else(|e| {
                panic!("{method} {path}: Go's json.Unmarshal would fail: {e}: {text}")
            }))),
            204 => Ok(None),
            _ => {
                // KPError: resources[0].errorMsg when the body has one
                if text.contains("errorMsg") {
                    let v: Value = serde_json::from_str(&text).unwrap();
                    assert!(v["resources"][0]["errorMsg"].is_string(), "{v}");
                }
                Err(KpError { status, body: text })
            }
        }
    }

    // ---- keys.go ----

    /// `CreateKeyWithOptions` / `CreateKeyWithPolicyOverridesWithOptions` (`createKeyResource`).
    pub async fn create_key_resource(&self, key: Value, path: &str) -> Result<Key, KpError> {
        let body = json!({
            "metadata": {"collectionType": KEY_TYPE, "collectionTotal": 1},
            "resources": [key],
        });
        let c: Collection<Key> = self
            .kp(Method::POST, path, &[], Some(body), None)
            .await?
            .expect("a created key's body");
        assert_eq!(c.metadata.collection_type, KEY_TYPE);
        Ok(c.resources.into_iter().next().expect("resources[0]"))
    }

    /// `GetKey`.
    pub async fn get_key(&self, id: &str) -> Result<Key, KpError> {
        let c: Collection<Key> = self
            .kp(Method::GET, &format!("keys/{id}"), &[], None, None)
            .await?
            .unwrap();
        Ok(c.resources.into_iter().next().expect("resources[0]"))
    }

    /// `GetKeys(limit, offset)` (limit 0 is sent as 2000).
    pub async fn get_keys(&self, limit: usize, offset: usize) -> Result<Collection<Key>, KpError> {
        let limit = if limit == 0 { 2000 } else { limit };
        let (l, o) = (limit.to_string(), offset.to_string());
        Ok(self
            .kp(
                Method::GET,
                "keys",
                &[("limit", &l), ("offset", &o)],
                None,
                None,
            )
            .await?
            .unwrap())
    }

    /// `DeleteKey(id, ReturnRepresentation, ForceOpt{force})`.
    pub async fn delete_key(&self, id: &str, force: bool) -> Result<Option<Key>, KpError> {
        let f = force.to_string();
        let c: Option<Collection<Key>> = self
            .kp(
                Method::DELETE,
                &format!("keys/{id}"),
                &[("force", &f)],
                None,
                Some("return=representation"),
            )
            .await?;
        Ok(c.and_then(|c| c.resources.into_iter().next()))
    }

    // ---- registrations.go ----

    pub async fn list_registrations(
        &self,
        key_id: &str,
    ) -> Result<Collection<Registration>, KpError> {
        Ok(self
            .kp(
                Method::GET,
                &format!("keys/{key_id}/registrations"),
                &[],
                None,
                None,
            )
            .await?
            .unwrap())
    }

    // ---- key_rings.go ----

    pub async fn create_key_ring(&self, id: &str) -> Result<(), KpError> {
        self.kp::<Value>(Method::POST, &format!("key_rings/{id}"), &[], None, None)
            .await
            .map(|_| ())
    }

    pub async fn get_key_rings(&self) -> Result<Collection<KeyRing>, KpError> {
        Ok(self
            .kp(Method::GET, "key_rings", &[], None, None)
            .await?
            .unwrap())
    }

    /// `DeleteKeyRing(id, WithForce(true))`.
    pub async fn delete_key_ring(&self, id: &str) -> Result<(), KpError> {
        self.kp::<Value>(
            Method::DELETE,
            &format!("key_rings/{id}"),
            &[("force", "true")],
            None,
            None,
        )
        .await
        .map(|_| ())
    }

    // ---- policy.go ----

    pub async fn get_policies(&self, id: &str) -> Result<Vec<Policy>, KpError> {
        let c: Collection<Policy> = self
            .kp(Method::GET, &format!("keys/{id}/policies"), &[], None, None)
            .await?
            .unwrap();
        Ok(c.resources)
    }

    fn policies_body(policies: Vec<Value>) -> Value {
        json!({
            "metadata": {"collectionType": POLICY_TYPE, "collectionTotal": policies.len()},
            "resources": policies,
        })
    }

    /// `SetPolicies` (interval 0 is sent as -1; `enabled` only when given).
    pub async fn set_policies(
        &self,
        id: &str,
        rotation: Option<(i64, Option<bool>)>,
        dual_auth: Option<bool>,
    ) -> Result<Vec<Policy>, KpError> {
        let mut policies = Vec::new();
        if let Some((interval, enabled)) = rotation {
            let interval = if interval == 0 { -1 } else { interval };
            let mut r = json!({"interval_month": interval});
            if let Some(e) = enabled {
                r["enabled"] = json!(e);
            }
            policies.push(json!({"type": POLICY_TYPE, "rotation": r}));
        }
        if let Some(e) = dual_auth {
            policies.push(json!({"type": POLICY_TYPE, "dualAuthDelete": {"enabled": e}}));
        }
        let c: Collection<Policy> = self
            .kp(
                Method::PUT,
                &format!("keys/{id}/policies"),
                &[],
                Some(Self::policies_body(policies)),
                None,
            )
            .await?
            .unwrap();
        Ok(c.resources)
    }

    /// `setKeyRotationPolicy` (`EnableRotationPolicy`, `DisableRotationPolicy`,
    /// `SetRotationPolicy`): `?policy=rotation`, `interval_month` omitted when 0.
    pub async fn set_key_rotation_policy(
        &self,
        id: &str,
        enabled: Option<bool>,
        interval: i64,
    ) -> Result<Option<Policy>, KpError> {
        let mut r = json!({});
        if let Some(e) = enabled {
            r["enabled"] = json!(e);
        }
        if interval != 0 {
            r["interval_month"] = json!(interval);
        }
        let body = Self::policies_body(vec![json!({"type": POLICY_TYPE, "rotation": r})]);
        let c: Collection<Policy> = self
            .kp(
                Method::PUT,
                &format!("keys/{id}/policies"),
                &[("policy", "rotation")],
                Some(body),
                None,
            )
            .await?
            .unwrap();
        Ok(c.resources.into_iter().next())
    }

    /// `SetDualAuthDeletePolicy`: `?policy=dualAuthDelete`.
    pub async fn set_dual_auth_delete_policy(
        &self,
        id: &str,
        enabled: bool,
    ) -> Result<Option<Policy>, KpError> {
        let body = Self::policies_body(vec![
            json!({"type": POLICY_TYPE, "dualAuthDelete": {"enabled": enabled}}),
        ]);
        let c: Collection<Policy> = self
            .kp(
                Method::PUT,
                &format!("keys/{id}/policies"),
                &[("policy", "dualAuthDelete")],
                Some(body),
                None,
            )
            .await?
            .unwrap();
        Ok(c.resources.into_iter().next())
    }

    // ---- instances.go ----

    pub async fn get_instance_policies(&self) -> Result<Vec<InstancePolicy>, KpError> {
        let c: Collection<InstancePolicy> = self
            .kp(Method::GET, "instance/policies", &[], None, None)
            .await?
            .unwrap();
        Ok(c.resources)
    }

    /// `SetInstancePolicies(MultiplePolicies)`: the policies in the client's order
    /// (dualAuthDelete, allowedNetwork, allowedIP, metrics, keyCreateImportAccess, rotation).
    pub async fn set_instance_policies(&self, policies: Vec<Value>) -> Result<(), KpError> {
        let body = json!({
            "metadata": {"collectionType": POLICY_TYPE, "collectionTotal": policies.len()},
            "resources": policies,
        });
        self.kp::<Value>(Method::PUT, "instance/policies", &[], Some(body), None)
            .await
            .map(|_| ())
    }
}

/// `getInstanceAndKeyDataFromCRN` (`resource_ibm_kms_key.go`).
pub fn instance_and_key_from_crn(crn: &str) -> (String, String, String) {
    let segs: Vec<&str> = crn.split(':').collect();
    let instance_crn = format!("{}::", crn.split(":key:").next().unwrap());
    let key_id = segs[segs.len() - 1].to_string();
    let instance_id = segs[segs.len() - 3].to_string();
    (instance_crn, instance_id, key_id)
}

/// `getInstanceIDFromCRN`.
pub fn instance_id_from_crn(crn: &str) -> String {
    let segs: Vec<&str> = crn.split(':').collect();
    if segs.len() > 3 {
        segs[segs.len() - 3].to_string()
    } else {
        crn.to_string()
    }
}

/// `flex.FlattenKeyIndividualPolicy` / `FlattenKeyPolicies`: what they dereference and split
/// (a panic in Go, an assertion here). Returns (rotation (interval, enabled), dual auth).
pub fn flatten_key_policies(policies: &[Policy]) -> (Option<(i64, bool)>, Option<bool>) {
    let (mut rotation, mut dual) = (None, None);
    for p in policies {
        let segs: Vec<&str> = p.crn.split(':').collect();
        assert!(segs.len() > 9, "policy crn {:?} has no segment 9", p.crn);
        assert!(p.created_at.is_some(), "policy creationDate: {p:?}");
        assert!(p.updated_at.is_some(), "policy lastUpdateDate: {p:?}");
        if let Some(r) = &p.rotation {
            rotation = Some((r.interval_month, r.enabled.expect("rotation.enabled")));
        } else if let Some(d) = &p.dual_auth {
            dual = Some(d.enabled.expect("dualAuthDelete.enabled"));
        }
    }
    (rotation, dual)
}

/// `flex.FlattenInstancePolicy` for every policy type the resource sets.
pub fn flatten_instance_policies(policies: &[InstancePolicy]) -> Vec<(String, Value)> {
    policies
        .iter()
        .map(|p| {
            assert!(p.created_at.is_some(), "creationDate: {p:?}");
            assert!(p.updated_at.is_some(), "lastUpdated: {p:?}");
            let mut m = json!({"enabled": p.policy_data.enabled});
            match p.policy_type.as_str() {
                "rotation" => {
                    if let Some(a) = &p.policy_data.attributes {
                        m["interval_month"] = json!(a.interval_month);
                    }
                }
                "keyCreateImportAccess" => {
                    // dereferenced without a nil check in the provider
                    let a = p
                        .policy_data
                        .attributes
                        .as_ref()
                        .expect("keyCreateImportAccess attributes");
                    m["create_root_key"] = json!(a.create_root_key);
                    m["create_standard_key"] = json!(a.create_standard_key);
                    m["import_root_key"] = json!(a.import_root_key);
                    m["import_standard_key"] = json!(a.import_standard_key);
                    m["enforce_token"] = json!(a.enforce_token);
                }
                _ => {}
            }
            (p.policy_type.clone(), m)
        })
        .collect()
}

//! Lifecycle routes: versions, restore, purge, PATCH, key and instance policies, aliases,
//! key rings, registrations.

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use keyward_domain::format_time;
use keyward_domain::rows::KeyRow;
use keyward_service::lifecycle::KeyPolicies;
use keyward_service::policies::InstancePolicyInput;
use keyward_service::{ErrorCode, ServiceError};
use serde_json::{json, Map, Value};

use crate::error::{op, ApiError};
use crate::extract::{self, Auth};
use crate::query;
use crate::routes::keys::{force, restore_inner, RESTORE};
use crate::wire::{collection, key_json, KEY_TYPE};
use crate::{json_response, AppState};

const VERSIONS: &str = "Key versions could not be retrieved";
const PURGE: &str = "Key could not be purged";
const PATCH: &str = "Key could not be updated";
const POLICY_GET: &str = "Policies could not be retrieved";
const POLICY_PUT: &str = "Policies could not be set";
const ALIAS_CREATE: &str = "Alias could not be created";
const ALIAS_DELETE: &str = "Alias could not be deleted";
const RING_LIST: &str = "Key rings could not be retrieved";
const RING_CREATE: &str = "Key ring could not be created";
const RING_DELETE: &str = "Key ring could not be deleted";
const REG_LIST: &str = "Registrations could not be retrieved";
const POLICY_TYPE: &str = "application/vnd.ibm.kms.policy+json";

fn bad_query(name: &str, msg: &str, what: &'static str) -> ApiError {
    ApiError::new(ServiceError::query(name, msg.to_string()), what)
}

/// limit / offset / totalCount of the small collections (from at most
/// [`query::MAX_PAIRS`] pairs; for a repeated name the last one counts).
fn paging(
    pairs: &[(String, String)],
    default_limit: usize,
    what: &'static str,
) -> Result<(usize, usize, bool), ApiError> {
    let (mut limit, mut offset, mut total) = (default_limit, 0usize, false);
    for (k, v) in pairs {
        match k.as_str() {
            "limit" => {
                limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=5000).contains(n))
                    .ok_or_else(|| bad_query("limit", "The query parameter `limit` must be: an integer between 1 and 5000 (inclusive)", what))?
            }
            "offset" => {
                offset = v
                    .parse::<usize>()
                    .map_err(|_| bad_query("offset", "The query parameter `offset` must be: a non-negative integer", what))?
            }
            "totalCount" => total = v == "true",
            _ => {}
        }
    }
    Ok((limit, offset, total))
}

pub async fn versions(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let pairs = query::pairs(raw.as_deref(), VERSIONS)?;
    let (limit, offset, with_total) = paging(&pairs, 200, VERSIONS)?;
    let all_states = query::last(&pairs, "allKeyStates") == Some("true");
    let id = st
        .svc
        .resolve_key(&caller, &id)
        .await
        .map_err(op(VERSIONS))?;
    let (list, total) = st
        .svc
        .versions(&caller, id, all_states, limit, offset)
        .await
        .map_err(op(VERSIONS))?;
    let resources: Vec<Value> = list
        .iter()
        .map(|v| json!({"id": v.id, "creationDate": format_time(v.created_at)}))
        .collect();
    let mut body = collection("application/vnd.ibm.kms.key.version+json", resources);
    if with_total {
        body["metadata"]["totalCount"] = json!(total);
    }
    Ok(json_response(StatusCode::OK, &body))
}

pub async fn restore(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // Legacy clients send the original payload; it is accepted and not needed.
    let bytes = extract::read_body(&headers, body, RESTORE).await?;
    let _ = extract::parse_json(&bytes, RESTORE)?;
    restore_inner(&st, &caller, &id).await
}

pub async fn purge(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = st.svc.resolve_key(&caller, &id).await.map_err(op(PURGE))?;
    let info = st.svc.purge_key(&caller, id).await.map_err(op(PURGE))?;
    Ok(json_response(
        StatusCode::OK,
        &collection(KEY_TYPE, vec![key_json(&info)]),
    ))
}

pub async fn patch(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = extract::read_body(&headers, body, PATCH).await?;
    let obj = extract::object_or_empty(extract::parse_json(&bytes, PATCH)?, PATCH)?;
    let ring = extract::opt_str(&obj, "keyringid", "keyRingID", PATCH)?.ok_or_else(|| {
        ApiError::new(
            ServiceError::field("keyRingID", "The field `keyRingID` is required"),
            PATCH,
        )
    })?;
    let id = st.svc.resolve_key(&caller, &id).await.map_err(op(PATCH))?;
    let info = st
        .svc
        .move_key(&caller, id, &ring)
        .await
        .map_err(op(PATCH))?;
    Ok(json_response(
        StatusCode::OK,
        &collection(KEY_TYPE, vec![key_json(&info)]),
    ))
}

fn policy_query(raw: Option<&str>, what: &'static str) -> Result<Option<String>, ApiError> {
    Ok(query::pairs(raw, what)?
        .into_iter()
        .find(|(k, v)| k == "policy" && !v.is_empty())
        .map(|(_, v)| v))
}

fn key_policy_resources(
    row: &KeyRow,
    p: &KeyPolicies,
    only: Option<&str>,
    crn: &str,
) -> Vec<Value> {
    let mut out = Vec::new();
    let meta = |v: &Value| {
        json!({
            "id": row.id.to_string(),
            "crn": crn,
            "type": POLICY_TYPE,
            "creationDate": v.get("creationDate").and_then(Value::as_i64).map(format_time),
            "createdBy": v.get("createdBy"),
            "lastUpdateDate": v.get("lastUpdateDate").and_then(Value::as_i64).map(format_time),
            "updatedBy": v.get("updatedBy"),
        })
    };
    if only.is_none_or(|t| t == "rotation") {
        if let Some(r) = &p.rotation {
            let mut m = meta(r);
            m["rotation"] =
                json!({"enabled": r.get("enabled"), "interval_month": r.get("interval_month")});
            out.push(m);
        }
    }
    if only.is_none_or(|t| t == "dualAuthDelete") {
        if let Some(d) = &p.dual_auth_delete {
            let mut m = meta(d);
            m["dualAuthDelete"] = json!({"enabled": d.get("enabled")});
            out.push(m);
        }
    }
    out
}

pub async fn get_key_policies(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let only = policy_query(raw.as_deref(), POLICY_GET)?;
    let id = st
        .svc
        .resolve_key(&caller, &id)
        .await
        .map_err(op(POLICY_GET))?;
    let (row, p) = st
        .svc
        .key_policies(&caller, id)
        .await
        .map_err(op(POLICY_GET))?;
    let crn = st.svc.crn(row.instance_id, row.id);
    let res = key_policy_resources(&row, &p, only.as_deref(), &crn);
    Ok(json_response(StatusCode::OK, &collection(POLICY_TYPE, res)))
}

fn envelope_resources(
    body: Option<Value>,
    what: &'static str,
) -> Result<Vec<Map<String, Value>>, ApiError> {
    let bad = |m: &str| ApiError::new(ServiceError::new(ErrorCode::BadBody, m.to_string()), what);
    let Some(Value::Object(mut env)) = body else {
        return Err(ApiError::new(
            ServiceError::new(ErrorCode::NoBody, "A request body is required"),
            what,
        ));
    };
    let Some(Value::Object(meta)) = env.remove("metadata") else {
        return Err(bad("CollectionMetadata is empty"));
    };
    let Some(Value::Array(resources)) = env.remove("resources") else {
        return Err(bad("The field `resources` must be an array"));
    };
    if meta.get("collectiontotal").and_then(Value::as_i64) != Some(resources.len() as i64) {
        return Err(ApiError::new(
            ServiceError::new(
                ErrorCode::CollectionTotalMismatch,
                "The collectionTotal does not match the number of resources",
            ),
            what,
        ));
    }
    if resources.is_empty() {
        return Err(bad("At least one resource is required"));
    }
    resources
        .into_iter()
        .map(|r| match r {
            Value::Object(o) => Ok(o),
            _ => Err(bad("Each resource must be a JSON object")),
        })
        .collect()
}

pub async fn put_key_policies(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let only = policy_query(raw.as_deref(), POLICY_PUT)?;
    let bytes = extract::read_body(&headers, body, POLICY_PUT).await?;
    let resources = envelope_resources(extract::parse_json(&bytes, POLICY_PUT)?, POLICY_PUT)?;
    let (mut rotation, mut dual) = (None, None);
    for r in &resources {
        extract::deny_unknown(r, &["type", "rotation", "dualauthdelete"], POLICY_PUT)?;
        // In a policy PUT an explicit `null` policy is a malformed field, not an absent one.
        for (key, wire) in [
            ("rotation", "rotation"),
            ("dualauthdelete", "dualAuthDelete"),
        ] {
            if r.get(key) == Some(&Value::Null) {
                return Err(ApiError::new(
                    ServiceError::field(wire, format!("The field `{wire}` must be: an object")),
                    POLICY_PUT,
                ));
            }
        }
        if let Some(o) = extract::opt_obj(r, "rotation", "rotation", POLICY_PUT)? {
            let enabled = extract::opt_bool(o, "enabled", "enabled", POLICY_PUT)?.unwrap_or(true);
            let interval = match o.get("interval_month") {
                None | Some(Value::Null) => None,
                Some(Value::Number(n)) if n.is_i64() => n.as_i64(),
                Some(_) => Some(-1),
            };
            rotation = Some((enabled, interval));
        }
        if let Some(o) = extract::opt_obj(r, "dualauthdelete", "dualAuthDelete", POLICY_PUT)? {
            dual = Some(extract::opt_bool(o, "enabled", "enabled", POLICY_PUT)?.unwrap_or(false));
        }
    }
    let mismatch = match only.as_deref() {
        Some("rotation") => dual.is_some() || rotation.is_none(),
        Some("dualAuthDelete") => rotation.is_some() || dual.is_none(),
        Some(_) => {
            return Err(bad_query(
                "policy",
                "The query parameter `policy` must be: rotation or dualAuthDelete",
                POLICY_PUT,
            ))
        }
        None => rotation.is_none() && dual.is_none(),
    };
    if mismatch {
        return Err(ApiError::new(
            ServiceError::new(
                ErrorCode::BodyQueryParamMismatch,
                "The policy in the body does not match the `policy` query parameter",
            ),
            POLICY_PUT,
        ));
    }
    let id = st
        .svc
        .resolve_key(&caller, &id)
        .await
        .map_err(op(POLICY_PUT))?;
    let (row, p) = st
        .svc
        .set_key_policies(&caller, id, rotation, dual)
        .await
        .map_err(op(POLICY_PUT))?;
    let crn = st.svc.crn(row.instance_id, row.id);
    let res = key_policy_resources(&row, &p, only.as_deref(), &crn);
    Ok(json_response(StatusCode::OK, &collection(POLICY_TYPE, res)))
}

pub async fn get_instance_policies(
    State(st): State<AppState>,
    Auth(caller): Auth,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let only = policy_query(raw.as_deref(), POLICY_GET)?;
    let rows = st
        .svc
        .instance_policies(&caller, only.as_deref())
        .await
        .map_err(op(POLICY_GET))?;
    let res = rows
        .iter()
        .map(|p| {
            json!({
                "policy_type": p.policy_type,
                "policy_data": p.data,
                "creationDate": format_time(p.created_at),
                "createdBy": p.created_by,
                "updatedBy": p.updated_by,
                "lastUpdated": format_time(p.updated_at),
            })
        })
        .collect();
    Ok(json_response(StatusCode::OK, &collection(POLICY_TYPE, res)))
}

pub async fn put_instance_policies(
    State(st): State<AppState>,
    Auth(caller): Auth,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let only = policy_query(raw.as_deref(), POLICY_PUT)?;
    let bytes = extract::read_body(&headers, body, POLICY_PUT).await?;
    let resources = envelope_resources(extract::parse_json(&bytes, POLICY_PUT)?, POLICY_PUT)?;
    if only.is_some() && resources.len() != 1 {
        return Err(ApiError::new(
            ServiceError::new(
                ErrorCode::NumCollectionResource,
                "Exactly one policy resource is allowed with the `policy` query parameter",
            ),
            POLICY_PUT,
        ));
    }
    let mut input = Vec::new();
    for r in resources {
        extract::deny_unknown(&r, &["policy_type", "policy_data", "type"], POLICY_PUT)?;
        // Policy type names are camelCase on the wire; keys were lowercased, values were not.
        let policy_type = extract::opt_str(&r, "policy_type", "policy_type", POLICY_PUT)?
            .ok_or_else(|| {
                ApiError::new(
                    ServiceError::field("policy_type", "The field `policy_type` is required"),
                    POLICY_PUT,
                )
            })?;
        if only.as_deref().is_some_and(|t| t != policy_type) {
            return Err(ApiError::new(
                ServiceError::new(
                    ErrorCode::BodyQueryParamMismatch,
                    "The policy type in the body does not match the `policy` query parameter",
                ),
                POLICY_PUT,
            ));
        }
        let data = extract::opt_obj(&r, "policy_data", "policy_data", POLICY_PUT)?
            .cloned()
            .ok_or_else(|| {
                ApiError::new(
                    ServiceError::field(
                        "policy_data",
                        "The field `policy_data` must be: an object",
                    ),
                    POLICY_PUT,
                )
            })?;
        extract::deny_unknown(&data, &["enabled", "attributes"], POLICY_PUT)?;
        let enabled =
            extract::opt_bool(&data, "enabled", "enabled", POLICY_PUT)?.ok_or_else(|| {
                ApiError::new(
                    ServiceError::field("enabled", "The field `enabled` is required"),
                    POLICY_PUT,
                )
            })?;
        let attributes = extract::opt_obj(&data, "attributes", "attributes", POLICY_PUT)?.cloned();
        input.push(InstancePolicyInput {
            policy_type,
            enabled,
            attributes,
        });
    }
    st.svc
        .set_instance_policies(&caller, input)
        .await
        .map_err(op(POLICY_PUT))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn create_alias(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path((id, alias)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id = st
        .svc
        .resolve_key(&caller, &id)
        .await
        .map_err(op(ALIAS_CREATE))?;
    let a = st
        .svc
        .create_alias(&caller, id, &alias)
        .await
        .map_err(op(ALIAS_CREATE))?;
    let res = json!({"keyId": a.key_id.to_string(), "alias": a.alias, "createdBy": a.created_by, "creationDate": format_time(a.created_at)});
    Ok(json_response(
        StatusCode::CREATED,
        &collection("application/vnd.ibm.kms.alias+json", vec![res]),
    ))
}

pub async fn delete_alias(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path((id, alias)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id = st
        .svc
        .resolve_key(&caller, &id)
        .await
        .map_err(op(ALIAS_DELETE))?;
    st.svc
        .delete_alias(&caller, id, &alias)
        .await
        .map_err(op(ALIAS_DELETE))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn list_key_rings(
    State(st): State<AppState>,
    Auth(caller): Auth,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (limit, offset, with_total) =
        paging(&query::pairs(raw.as_deref(), RING_LIST)?, 100, RING_LIST)?;
    let rings = st
        .svc
        .list_key_rings(&caller)
        .await
        .map_err(op(RING_LIST))?;
    let total = rings.len();
    let res = rings
        .iter()
        .skip(offset)
        .take(limit)
        .map(|r| json!({"id": r.id, "creationDate": format_time(r.created_at), "createdBy": r.created_by}))
        .collect();
    let mut body = collection("application/vnd.ibm.kms.key_ring+json", res);
    if with_total {
        body["metadata"]["totalCount"] = json!(total);
    }
    Ok(json_response(StatusCode::OK, &body))
}

pub async fn create_key_ring(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    st.svc
        .create_key_ring(&caller, &id)
        .await
        .map_err(op(RING_CREATE))?;
    Ok(StatusCode::CREATED.into_response())
}

pub async fn delete_key_ring(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let force = force(raw.as_deref(), RING_DELETE)?;
    st.svc
        .delete_key_ring(&caller, &id, force)
        .await
        .map_err(op(RING_DELETE))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn registrations_body(rows: &[keyward_domain::rows::RegistrationRow]) -> Value {
    let res = rows
        .iter()
        .map(|r| {
            json!({
                "keyId": r.key_id.to_string(),
                "resourceCrn": r.resource_crn,
                "createdBy": r.created_by,
                "creationDate": format_time(r.created_at),
                "description": r.description,
                "preventKeyDeletion": r.prevent_key_deletion,
            })
        })
        .collect();
    collection("application/vnd.ibm.kms.registration+json", res)
}

pub async fn key_registrations(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = st
        .svc
        .resolve_key(&caller, &id)
        .await
        .map_err(op(REG_LIST))?;
    let rows = st
        .svc
        .registrations(&caller, Some(id))
        .await
        .map_err(op(REG_LIST))?;
    Ok(json_response(StatusCode::OK, &registrations_body(&rows)))
}

pub async fn all_registrations(
    State(st): State<AppState>,
    Auth(caller): Auth,
) -> Result<Response, ApiError> {
    let rows = st
        .svc
        .registrations(&caller, None)
        .await
        .map_err(op(REG_LIST))?;
    Ok(json_response(StatusCode::OK, &registrations_body(&rows)))
}

/// Registration writes and event acknowledgements are service-to-service calls of IBM Cloud's
/// integrated services; Keyward has none, so every caller (an authenticated user) is refused.
pub async fn service_only(Auth(_caller): Auth) -> Result<Response, ApiError> {
    Err(ApiError::new(
        ServiceError::new(
            ErrorCode::ServiceOnly,
            "This API is reserved for integrated cloud services and cannot be called by a user",
        ),
        "Request could not be processed",
    ))
}

/// `GET /instance/allowed_ip_port`: the port of the endpoint the caller reached (Keyward has
/// one endpoint; Key Protect reports the private endpoint's port for allowedIP setups).
pub async fn allowed_ip_port(
    State(st): State<AppState>,
    Auth(caller): Auth,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    const WHAT: &str = "Allowed IP port could not be retrieved";
    st.svc
        .instance_policies(&caller, Some("allowedIP"))
        .await
        .map_err(op(WHAT))?;
    let port = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.rsplit_once(':'))
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .unwrap_or(443);
    Ok(json_response(
        StatusCode::OK,
        &collection(
            "application/vnd.ibm.kms.allowed_ip_metadata+json",
            vec![json!({"private_endpoint_port": port})],
        ),
    ))
}

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
use keyward_wire::de::Slot;
use keyward_wire::req::{InstancePoliciesRequest, KeyPoliciesRequest, PatchKeyRequest};
use keyward_wire::resp::{
    self, AliasCollection, AllowedIpPortCollection, InstancePolicyCollection, KeyPolicyCollection,
    KeyRingCollection, RegistrationCollection, VersionCollection,
};
use keyward_wire::{
    ALIAS_TYPE, ALLOWED_IP_TYPE, KEY_RING_TYPE, POLICY_TYPE, REGISTRATION_TYPE, VERSION_TYPE,
};

use crate::error::{op, ApiError};
use crate::extract::{self, Auth};
use crate::query;
use crate::routes::keys::{checked_envelope, force, resources, restore_inner, RESTORE};
use crate::wire;
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

fn bad_query(name: &str, msg: &str, what: &'static str) -> ApiError {
    ApiError::new(ServiceError::query(name, msg.to_string()), what)
}

/// limit / offset / totalCount of the small collections (from at most
/// [`query::MAX_PAIRS`] pairs; for a repeated name the last one counts).
pub(crate) fn paging(
    pairs: &[(String, String)],
    default_limit: usize,
    what: &'static str,
) -> Result<(usize, usize, bool), ApiError> {
    let (mut limit, mut offset) = (default_limit, 0usize);
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
                // At most i64::MAX, like the offset of `GET /keys` (the database's integer).
                offset = v
                    .parse::<i64>()
                    .ok()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| bad_query("offset", "The query parameter `offset` must be: a non-negative integer", what))?
            }
            _ => {}
        }
    }
    let total = query::flag(pairs, "totalCount", what)?;
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
    let all_states = query::flag(&pairs, "allKeyStates", VERSIONS)?;
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
    let resources = list
        .iter()
        .map(|v| resp::KeyVersionRef {
            creation_date: Some(format_time(v.created_at)),
            id: v.id.clone(),
        })
        .collect();
    let body = VersionCollection::new(VERSION_TYPE, resources)
        .with_total_count(with_total.then_some(total as u64));
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
    let _ = extract::lowercased_json(&bytes, RESTORE)?;
    restore_inner(&st, &caller, &id, &headers).await
}

pub async fn purge(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = st.svc.resolve_key(&caller, &id).await.map_err(op(PURGE))?;
    let info = st.svc.purge_key(&caller, id).await.map_err(op(PURGE))?;
    if crate::routes::keys::prefer(&headers) == crate::routes::keys::Prefer::Minimal {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Ok(json_response(StatusCode::OK, &wire::keys([&info])))
}

pub async fn patch(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = extract::read_body(&headers, body, PATCH).await?;
    let req: PatchKeyRequest = extract::object_body(&bytes, PATCH)?;
    let ring = req.keyringid.ok_or_else(|| {
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
    Ok(json_response(StatusCode::OK, &wire::keys([&info])))
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
) -> Vec<resp::KeyPolicy> {
    let mut out = Vec::new();
    // The policy metadata the service keeps with each key policy (`creationDate`, ...).
    let meta = |created_by: &Option<String>,
                creation_date: Option<i64>,
                last_update_date: Option<i64>,
                updated_by: &Option<String>| resp::KeyPolicy {
        created_by: created_by.clone(),
        creation_date: creation_date.map(format_time),
        crn: crn.to_string(),
        dual_auth_delete: None,
        id: row.id.to_string(),
        last_update_date: last_update_date.map(format_time),
        rotation: None,
        kind: POLICY_TYPE.into(),
        updated_by: updated_by.clone(),
    };
    if only.is_none_or(|t| t == "rotation") {
        if let Some(r) = &p.rotation {
            let mut m = meta(
                &r.created_by,
                r.creation_date,
                r.last_update_date,
                &r.updated_by,
            );
            m.rotation = Some(resp::RotationPolicy {
                enabled: r.enabled,
                interval_month: r.interval_month,
            });
            out.push(m);
        }
    }
    if only.is_none_or(|t| t == "dualAuthDelete") {
        if let Some(d) = &p.dual_auth_delete {
            let mut m = meta(
                &d.created_by,
                d.creation_date,
                d.last_update_date,
                &d.updated_by,
            );
            m.dual_auth_delete = Some(resp::DualAuthPolicy { enabled: d.enabled });
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
    Ok(json_response(
        StatusCode::OK,
        &KeyPolicyCollection::new(POLICY_TYPE, res),
    ))
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
    let (lowered, _) = checked_envelope(&bytes, false, POLICY_PUT)?;
    let (mut rotation, mut dual) = (None, None);
    for r in resources::<KeyPoliciesRequest>(&lowered, POLICY_PUT)? {
        // In a policy PUT an explicit `null` policy is a malformed field, not an absent one.
        let not_object = |wire: &str| {
            ApiError::new(
                ServiceError::field(wire, format!("The field `{wire}` must be: an object")),
                POLICY_PUT,
            )
        };
        match r.rotation {
            Slot::Absent => {}
            Slot::Null | Slot::Wrong => return Err(not_object("rotation")),
            Slot::Value(o) => {
                let interval = match o.interval_month {
                    Slot::Absent | Slot::Null => None,
                    Slot::Value(m) => Some(m),
                    Slot::Wrong => Some(-1),
                };
                rotation = Some((o.enabled.unwrap_or(true), interval));
            }
        }
        match r.dualauthdelete {
            Slot::Absent => {}
            Slot::Null | Slot::Wrong => return Err(not_object("dualAuthDelete")),
            Slot::Value(o) => dual = Some(o.enabled.unwrap_or(false)),
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
    Ok(json_response(
        StatusCode::OK,
        &KeyPolicyCollection::new(POLICY_TYPE, res),
    ))
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
        .map(|p| resp::InstancePolicy {
            created_by: p.created_by.clone(),
            creation_date: format_time(p.created_at),
            last_updated: format_time(p.updated_at),
            policy_data: with_default_attributes(&p.policy_type, p.data.clone()),
            policy_type: p.policy_type.clone(),
            updated_by: p.updated_by.clone(),
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &InstancePolicyCollection::new(POLICY_TYPE, res),
    ))
}

/// A `keyCreateImportAccess` policy stored without `attributes` (set while disabled) is shown
/// with the attributes in force, Key Protect's defaults: Terraform's provider reads each of
/// them without a nil check (`FlattenInstancePolicy`), so an answer without them crashes it.
fn with_default_attributes(policy_type: &str, mut data: serde_json::Value) -> serde_json::Value {
    if policy_type == "keyCreateImportAccess" {
        if let Some(obj) = data.as_object_mut() {
            if !obj
                .get("attributes")
                .is_some_and(serde_json::Value::is_object)
            {
                obj.insert(
                    "attributes".into(),
                    serde_json::json!({
                        "create_root_key": true,
                        "create_standard_key": true,
                        "import_root_key": true,
                        "import_standard_key": true,
                        "enforce_token": false,
                    }),
                );
            }
        }
    }
    data
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
    let (lowered, count) = checked_envelope(&bytes, false, POLICY_PUT)?;
    if only.is_some() && count != 1 {
        return Err(ApiError::new(
            ServiceError::new(
                ErrorCode::NumCollectionResource,
                "Exactly one policy resource is allowed with the `policy` query parameter",
            ),
            POLICY_PUT,
        ));
    }
    let mut input = Vec::new();
    for r in resources::<InstancePoliciesRequest>(&lowered, POLICY_PUT)? {
        // Policy type names are camelCase on the wire; keys were lowercased, values were not.
        let policy_type = r.policy_type.ok_or_else(|| {
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
        let data = r.policy_data.ok_or_else(|| {
            ApiError::new(
                ServiceError::field("policy_data", "The field `policy_data` must be: an object"),
                POLICY_PUT,
            )
        })?;
        let enabled = data.enabled.ok_or_else(|| {
            ApiError::new(
                ServiceError::field("enabled", "The field `enabled` is required"),
                POLICY_PUT,
            )
        })?;
        input.push(InstancePolicyInput {
            policy_type,
            enabled,
            attributes: data.attributes,
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
    let res = resp::Alias {
        alias: a.alias,
        created_by: a.created_by,
        creation_date: format_time(a.created_at),
        key_id: a.key_id.to_string(),
    };
    Ok(json_response(
        StatusCode::CREATED,
        &AliasCollection::new(ALIAS_TYPE, vec![res]),
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
        .map(|r| resp::KeyRing {
            created_by: r.created_by.clone(),
            creation_date: format_time(r.created_at),
            id: r.id.clone(),
        })
        .collect();
    let body = KeyRingCollection::new(KEY_RING_TYPE, res)
        .with_total_count(with_total.then_some(total as u64));
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

fn registrations_body(rows: &[&keyward_domain::rows::RegistrationRow]) -> RegistrationCollection {
    let res = rows
        .iter()
        .map(|r| resp::Registration {
            created_by: r.created_by.clone(),
            creation_date: format_time(r.created_at),
            description: r.description.clone(),
            key_id: r.key_id.to_string(),
            prevent_key_deletion: r.prevent_key_deletion,
            resource_crn: r.resource_crn.clone(),
        })
        .collect();
    RegistrationCollection::new(REGISTRATION_TYPE, res)
}

/// The query of both registration listings: `limit` (1 to 5000, default 200), `offset`,
/// `totalCount`, `preventKeyDeletion` (`true`/`false`: only registrations with that value)
/// and `urlEncodedResourceCRNQuery` (a resource CRN, sent URL-encoded once or twice; a segment
/// `*`, or ending in `*`, matches any value of that segment, or any with that prefix; in the
/// all-keys listing the first eight segments may hold no `*`).
struct RegistrationQuery {
    limit: usize,
    offset: usize,
    total: bool,
    prevent: Option<bool>,
    crn: Option<Vec<String>>,
}

fn registration_query(raw: Option<&str>, all_keys: bool) -> Result<RegistrationQuery, ApiError> {
    let pairs = query::pairs(raw, REG_LIST)?;
    let (limit, offset, total) = paging(&pairs, 200, REG_LIST)?;
    let prevent = match query::last(&pairs, "preventKeyDeletion") {
        None => None,
        Some(_) => Some(query::flag(&pairs, "preventKeyDeletion", REG_LIST)?),
    };
    const CRN_MSG: &str = "The query parameter `urlEncodedResourceCRNQuery` must be: a URL-encoded CRN of 10 segments (crn:v1:...), with `*` only in the last two segments of the all-keys listing";
    let crn = match query::last(&pairs, "urlEncodedResourceCRNQuery") {
        None | Some("") => None,
        Some(v) => {
            let once = if v.contains('%') {
                form_urlencoded::parse(format!("x={v}").as_bytes())
                    .next()
                    .map(|(_, d)| d.into_owned())
                    .unwrap_or_default()
            } else {
                v.to_string()
            };
            let segs: Vec<String> = once.split(':').map(str::to_string).collect();
            let ok = segs.len() == 10
                && segs[0] == "crn"
                && once.len() <= 512
                && !(all_keys && segs[..8].iter().any(|s| s.contains('*')));
            if !ok {
                return Err(bad_query("urlEncodedResourceCRNQuery", CRN_MSG, REG_LIST));
            }
            Some(segs)
        }
    };
    Ok(RegistrationQuery {
        limit,
        offset,
        total,
        prevent,
        crn,
    })
}

fn crn_matches(pattern: &[String], crn: &str) -> bool {
    let segs: Vec<&str> = crn.split(':').collect();
    segs.len() == pattern.len()
        && pattern
            .iter()
            .zip(segs)
            .all(|(p, s)| match p.strip_suffix('*') {
                Some(prefix) => s.starts_with(prefix),
                None => p == s,
            })
}

fn registrations_page(
    rows: &[keyward_domain::rows::RegistrationRow],
    q: &RegistrationQuery,
) -> RegistrationCollection {
    let kept: Vec<&keyward_domain::rows::RegistrationRow> = rows
        .iter()
        .filter(|r| q.prevent.is_none_or(|p| r.prevent_key_deletion == p))
        .filter(|r| {
            q.crn
                .as_ref()
                .is_none_or(|p| crn_matches(p, &r.resource_crn))
        })
        .collect();
    let total = kept.len() as u64;
    let page: Vec<_> = kept.into_iter().skip(q.offset).take(q.limit).collect();
    registrations_body(&page).with_total_count(q.total.then_some(total))
}

pub async fn key_registrations(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = registration_query(raw.as_deref(), false)?;
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
    Ok(json_response(
        StatusCode::OK,
        &registrations_page(&rows, &q),
    ))
}

pub async fn all_registrations(
    State(st): State<AppState>,
    Auth(caller): Auth,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = registration_query(raw.as_deref(), true)?;
    let rows = st
        .svc
        .registrations(&caller, None)
        .await
        .map_err(op(REG_LIST))?;
    Ok(json_response(
        StatusCode::OK,
        &registrations_page(&rows, &q),
    ))
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
        &AllowedIpPortCollection::new(
            ALLOWED_IP_TYPE,
            vec![resp::AllowedIpPort {
                private_endpoint_port: port,
            }],
        ),
    ))
}

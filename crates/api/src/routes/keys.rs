//! `/api/v2/keys` and `/api/v2/keys/{id}`.

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use keyward_domain::rows::SortField;
use keyward_domain::KeyState;
use keyward_service::keys::CreateKeyRequest;
use keyward_service::listing::{
    add_filter_term, parse_filter, ListRequest, Search, MAX_SORT_FIELDS, MAX_STATES,
};
use keyward_service::{ErrorCode, ServiceError};
use keyward_wire::de::Slot;
use keyward_wire::req::{
    Collection, EnvelopeShape, KeyCreateRequest, KeyCreateWithOverridesRequest,
};
use serde::de::DeserializeOwned;

use crate::error::{op, ApiError};
use crate::extract::{self, Auth};
use crate::query;
use crate::wire::{self, KEY_TYPE};
use crate::{json_response, AppState};

const CREATE: &str = "Key could not be created";
const LIST: &str = "Keys could not be retrieved";
const GET: &str = "Key could not be retrieved";
const DELETE: &str = "Key could not be deleted";
pub const RESTORE: &str = "Key could not be restored";

fn sort_field(name: &str) -> Option<SortField> {
    Some(match name {
        "id" => SortField::Id,
        "state" => SortField::State,
        "extractable" => SortField::Extractable,
        "imported" => SortField::Imported,
        "creationDate" => SortField::CreationDate,
        "lastUpdateDate" => SortField::LastUpdateDate,
        "lastRotateDate" => SortField::LastRotateDate,
        "deletionDate" => SortField::DeletionDate,
        "expirationDate" => SortField::ExpirationDate,
        _ => return None,
    })
}

fn bad_query(name: &str, msg: String, what: &'static str) -> ApiError {
    ApiError::new(ServiceError::query(name, msg), what)
}

/// Parses the query of `GET/HEAD /keys` (and the `x-kms-key-ring` header) in one pass over at
/// most [`query::MAX_PAIRS`] pairs. `state`, `sort` and `filter` may be repeated: their values
/// are merged, deduplicated and capped (`listing::MAX_*`); for `limit`, `offset`,
/// `extractable` and `search` the last one counts. An empty value is ignored (IBM's Python SDK
/// sends `state=`).
fn list_request(
    raw: Option<&str>,
    headers: &HeaderMap,
    what: &'static str,
) -> Result<ListRequest, ApiError> {
    let mut req = ListRequest::default();
    let q = &mut req.query;
    let mut plain_state_or_extractable = false;
    for (k, v) in query::pairs(raw, what)? {
        if v.is_empty()
            && matches!(
                k.as_str(),
                "state" | "extractable" | "sort" | "search" | "filter"
            )
        {
            continue;
        }
        match k.as_str() {
            "limit" => {
                q.limit = v
                    .parse::<i64>()
                    .ok()
                    .filter(|n| (1..=5000).contains(n))
                    .ok_or_else(|| {
                        bad_query("limit", "The query parameter `limit` must be: an integer between 1 and 5000 (inclusive)".into(), what)
                    })?;
            }
            "offset" => {
                q.offset = v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                    bad_query(
                        "offset",
                        "The query parameter `offset` must be: a non-negative integer".into(),
                        what,
                    )
                })?;
            }
            "state" => {
                plain_state_or_extractable = true;
                for s in v.split(',') {
                    let st = s
                        .parse::<i64>()
                        .ok()
                        .and_then(KeyState::from_code)
                        .ok_or_else(|| {
                            bad_query("state", format!("The query parameter `state` must be: a comma-separated list of at most {MAX_STATES} of 0, 1, 2, 3, 5"), what)
                        })?;
                    if !q.states.contains(&st) {
                        q.states.push(st);
                    }
                }
            }
            "extractable" => {
                plain_state_or_extractable = true;
                q.extractable = Some(match v.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(bad_query(
                            "extractable",
                            "The query parameter `extractable` must be: true or false".into(),
                            what,
                        ))
                    }
                });
            }
            "sort" => {
                for f in v.split(',').filter(|f| !f.is_empty()) {
                    let (desc, name) = match f.strip_prefix('-') {
                        Some(n) => (true, n),
                        None => (false, f),
                    };
                    let field = sort_field(name).ok_or_else(|| {
                        bad_query("sort", format!("The query parameter `sort` must be: a comma-separated list of at most {MAX_SORT_FIELDS} of id, state, extractable, imported, creationDate, lastUpdateDate, lastRotateDate, deletionDate, expirationDate (each optionally prefixed by -)"), what)
                    })?;
                    // A field already sorted on adds nothing (the first mention decides).
                    if !q.sort.iter().any(|(g, _)| *g == field) {
                        q.sort.push((field, desc));
                    }
                }
            }
            "search" => req.search = Some(Search::parse(&v).map_err(op(what))?),
            "filter" => {
                for t in parse_filter(&v).map_err(op(what))? {
                    add_filter_term(&mut req.filter, t).map_err(op(what))?;
                }
            }
            _ => {}
        }
    }
    if plain_state_or_extractable
        && req
            .filter
            .iter()
            .any(|t| t.prop == "state" || t.prop == "extractable")
    {
        return Err(ApiError::new(
            ServiceError::query(
                "filter",
                "`state` and `extractable` cannot be used both in `filter` and as query parameters",
            ),
            what,
        ));
    }
    // An empty header counts as absent, like an empty query value.
    req.query.key_ring_id = match headers.get("x-kms-key-ring").filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .filter(|s| {
                    (2..=100).contains(&s.len())
                        && s.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                })
                .ok_or_else(|| {
                    ApiError::new(
                        ServiceError::new(
                            ErrorCode::InvalidField,
                            "The header `x-kms-key-ring` must be: a key ring ID (2 to 100 characters of letters, digits, - and _)",
                        )
                        .with_target("header", "x-kms-key-ring"),
                        what,
                    )
                })?
                .to_string(),
        ),
    };
    Ok(req)
}

pub async fn list(
    State(st): State<AppState>,
    Auth(caller): Auth,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let req = list_request(raw.as_deref(), &headers, LIST)?;
    let keys = st
        .svc
        .list_keys_full(&caller, &req)
        .await
        .map_err(op(LIST))?;
    Ok(json_response(StatusCode::OK, &wire::keys(&keys)))
}

pub async fn head(
    State(st): State<AppState>,
    Auth(caller): Auth,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let req = list_request(raw.as_deref(), &headers, LIST)?;
    let n = if req.search.is_none() && req.filter.is_empty() {
        st.svc
            .count_keys(&caller, &req.query)
            .await
            .map_err(op(LIST))?
    } else {
        st.svc
            .count_keys_full(&caller, &req)
            .await
            .map_err(op(LIST))?
    };
    let mut resp = StatusCode::OK.into_response();
    if let Ok(v) = HeaderValue::from_str(&n.to_string()) {
        resp.headers_mut().insert("key-total", v);
    }
    Ok(resp)
}

fn bad_body(msg: &str, what: &'static str) -> ApiError {
    ApiError::new(ServiceError::new(ErrorCode::BadBody, msg), what)
}

/// Checks the envelope of a collection body (`PUT` of policies, `POST /keys`) and returns it
/// lowercased with the number of its resources. `key_type`: the key-creation rules (one key,
/// `collectionType` checked, a non-object body is `BAD_BODY_ERR` rather than `NO_BODY_ERR`).
pub fn checked_envelope(
    bytes: &[u8],
    key_type: bool,
    what: &'static str,
) -> Result<(Vec<u8>, usize), ApiError> {
    let no_body = || {
        ApiError::new(
            ServiceError::new(ErrorCode::NoBody, "A request body is required"),
            what,
        )
    };
    let Some(l) = extract::lowercased_json(bytes, what)? else {
        return Err(no_body());
    };
    if !keyward_wire::de::is_object(&l) {
        // Key creation names the problem; policy bodies report a missing body.
        return Err(if key_type {
            bad_body("The request body must be a JSON object", what)
        } else {
            no_body()
        });
    }
    let shape: EnvelopeShape = extract::from_lowercased(&l, what)?;
    let Slot::Value(meta) = shape.metadata else {
        return Err(bad_body("CollectionMetadata is empty", what));
    };
    if meta.collectiontype == Slot::Wrong {
        return Err(bad_body(
            "The field `collectionType` must be: a string",
            what,
        ));
    }
    if key_type && meta.collectiontype != Slot::Value(KEY_TYPE.to_string()) {
        return Err(bad_body(
            "The collectionType must be application/vnd.ibm.kms.key+json",
            what,
        ));
    }
    let Slot::Value(resources) = shape.resources else {
        return Err(bad_body(
            if key_type {
                "The field `resources` must be an array with one key"
            } else {
                "The field `resources` must be an array"
            },
            what,
        ));
    };
    if meta.collectiontotal.value() != Some(resources.len() as i64) {
        return Err(ApiError::new(
            ServiceError::new(
                ErrorCode::CollectionTotalMismatch,
                "The collectionTotal does not match the number of resources",
            ),
            what,
        ));
    }
    if key_type && resources.len() != 1 {
        return Err(bad_body(
            "Only creation of one key per request is supported",
            what,
        ));
    }
    if resources.is_empty() {
        return Err(bad_body("At least one resource is required", what));
    }
    if resources.iter().any(|r| !matches!(r, Slot::Value(_))) {
        return Err(bad_body("Each resource must be a JSON object", what));
    }
    Ok((l, resources.len()))
}

/// The resources of a checked envelope, read as `C`'s resource type.
pub fn resources<C: Collection + DeserializeOwned>(
    lowered: &[u8],
    what: &'static str,
) -> Result<Vec<C::Item>, ApiError> {
    let c: C = extract::from_lowercased(lowered, what)?;
    Ok(c.into_resources()
        .into_iter()
        .filter_map(Slot::value)
        .collect())
}

pub async fn create(
    State(st): State<AppState>,
    Auth(caller): Auth,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    create_inner(st, caller, headers, body, false).await
}

/// `POST /keys_with_policy_overrides`: a create whose resource may carry `rotation` and
/// `dualAuthDelete` policies that override the instance's.
pub async fn create_with_overrides(
    State(st): State<AppState>,
    Auth(caller): Auth,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    create_inner(st, caller, headers, body, true).await
}

async fn create_inner(
    st: AppState,
    caller: keyward_service::Caller,
    headers: HeaderMap,
    body: Body,
    overrides: bool,
) -> Result<Response, ApiError> {
    let bytes = extract::read_body(&headers, body, CREATE).await?;
    let (lowered, _) = checked_envelope(&bytes, true, CREATE)?;
    let (r, rotation, dual) = if overrides {
        resources::<KeyCreateWithOverridesRequest>(&lowered, CREATE)?
            .pop()
            .map(|r| r.split())
    } else {
        resources::<KeyCreateRequest>(&lowered, CREATE)?
            .pop()
            .map(|r| (r, None, None))
    }
    .ok_or_else(|| bad_body("Each resource must be a JSON object", CREATE))?;
    match &r.kind {
        Slot::Absent => {}
        Slot::Value(t) if t == KEY_TYPE => {}
        _ => {
            return Err(ApiError::new(
                ServiceError::field(
                    "type",
                    "The field `type` must be: application/vnd.ibm.kms.key+json",
                ),
                CREATE,
            ))
        }
    }
    let rotation_override = match rotation {
        Some(o) => {
            if o.interval_month.is_some_and(|m| !(1..=12).contains(&m)) {
                return Err(ApiError::new(
                    ServiceError::field("interval_month", "The field `interval_month` must be: an integer between 1 and 12 (inclusive)"),
                    CREATE,
                ));
            }
            Some((o.enabled.unwrap_or(true), o.interval_month))
        }
        None => None,
    };
    let req = CreateKeyRequest {
        rotation_override,
        dual_auth_override: dual.map(|d| d.enabled.unwrap_or(false)),
        name: r.name,
        description: r.description,
        tags: r.tags,
        extractable: r.extractable,
        payload: r.payload,
        encrypted_nonce: r.encryptednonce,
        iv: r.iv,
        encryption_algorithm: r.encryptionalgorithm,
        expiration_date: r.expirationdate,
        aliases: r.aliases,
        key_ring_id: headers
            .get("x-kms-key-ring")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    };
    let info = st.svc.create_key(&caller, req).await.map_err(op(CREATE))?;
    if prefer(&headers) == Prefer::Minimal {
        return Ok(json_response(
            StatusCode::CREATED,
            &wire::key_ids([&info.row.id.to_string()]),
        ));
    }
    Ok(json_response(StatusCode::CREATED, &wire::keys([&info])))
}

pub async fn get(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = st.svc.resolve_key(&caller, &id).await.map_err(op(GET))?;
    let mut info = st.svc.get_key(&caller, id).await.map_err(op(GET))?;
    info.aliases = st.svc.aliases(&caller, id).await.map_err(op(GET))?;
    Ok(json_response(StatusCode::OK, &wire::keys([&info])))
}

pub async fn metadata(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    // `usage=true`: a Keyward extension (docs/design.md, "Key usage").
    let with_usage = query::flag(&query::pairs(raw.as_deref(), GET)?, "usage", GET)?;
    let id = st.svc.resolve_key(&caller, &id).await.map_err(op(GET))?;
    let mut info = st
        .svc
        .get_key_metadata(&caller, id)
        .await
        .map_err(op(GET))?;
    info.aliases = st.svc.aliases(&caller, id).await.map_err(op(GET))?;
    let mut out = wire::keys([&info]);
    if with_usage {
        let u = st.svc.key_usage(&caller, id).await.map_err(op(GET))?;
        for k in &mut out.resources {
            k.usage = Some(wire::usage(&u));
        }
    }
    Ok(json_response(StatusCode::OK, &out))
}

/// The `Prefer` header's `return=` preference. Where Key Protect honours it:
///
/// | operation | unset | `return=minimal` | `return=representation` |
/// |---|---|---|---|
/// | create, create with policy overrides, import | 201 + key | 201 + `{type, id}` only | 201 + key |
/// | delete | 204 | 204 | 200 + key |
/// | purge | 200 + key | 204 | 200 + key |
/// | restore | 201 + key | 204 | 201 + key |
/// | rotate | 204 | 204 | 200 + key |
///
/// Root key material is never returned in any form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefer {
    Unset,
    Minimal,
    Representation,
}

/// The preference of the `Prefer` headers (comma-separated preferences, any case and spacing;
/// the first `return=` counts; another value is as if unset).
pub fn prefer(headers: &HeaderMap) -> Prefer {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.replace([' ', '\t'], "").to_ascii_lowercase())
        .find_map(|p| match p.as_str() {
            "return=minimal" => Some(Prefer::Minimal),
            "return=representation" => Some(Prefer::Representation),
            _ => None,
        })
        .unwrap_or(Prefer::Unset)
}

/// Whether `Prefer: return=representation` was sent.
pub fn wants_representation(headers: &HeaderMap) -> bool {
    prefer(headers) == Prefer::Representation
}

/// `force=true|false` (absent: false; another value: 400).
pub fn force(raw: Option<&str>, what: &'static str) -> Result<bool, ApiError> {
    query::flag(&query::pairs(raw, what)?, "force", what)
}

pub async fn delete(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let force = force(raw.as_deref(), DELETE)?;
    let id = st.svc.resolve_key(&caller, &id).await.map_err(op(DELETE))?;
    let mut info = st
        .svc
        .delete_key(&caller, id, force)
        .await
        .map_err(op(DELETE))?;
    info.payload = None;
    if wants_representation(&headers) {
        Ok(json_response(StatusCode::OK, &wire::keys([&info])))
    } else {
        Ok(StatusCode::NO_CONTENT.into_response())
    }
}

/// Restore, shared by `POST /keys/{id}/restore` and `?action=restore`.
pub async fn restore_inner(
    st: &AppState,
    caller: &keyward_service::Caller,
    id: &str,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let id = st.svc.resolve_key(caller, id).await.map_err(op(RESTORE))?;
    let mut info = st.svc.restore_key(caller, id).await.map_err(op(RESTORE))?;
    if prefer(headers) == Prefer::Minimal {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    info.payload = None;
    Ok(json_response(StatusCode::CREATED, &wire::keys([&info])))
}

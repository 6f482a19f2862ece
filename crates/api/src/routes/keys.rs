//! `/api/v2/keys` and `/api/v2/keys/{id}`.

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use keyward_domain::KeyState;
use keyward_service::keys::CreateKeyRequest;
use keyward_service::{ErrorCode, ServiceError};
use keyward_store::KeyQuery;
use serde_json::Value;

use crate::error::{op, ApiError};
use crate::extract::{self, opt_bool, opt_str, opt_str_list, Auth};
use crate::wire::{collection, key_json, KEY_TYPE};
use crate::{json_response, AppState};

const CREATE: &str = "Key could not be created";
const LIST: &str = "Keys could not be retrieved";
const GET: &str = "Key could not be retrieved";
const DELETE: &str = "Key could not be deleted";

/// Parses `limit`, `offset`, `state`, `extractable` of `GET/HEAD /keys`.
fn key_query(raw: Option<&str>, what: &'static str) -> Result<KeyQuery, ApiError> {
    let mut q = KeyQuery::default();
    for (k, v) in extract::query_pairs(raw) {
        match k.as_str() {
            "limit" => {
                q.limit = v
                    .parse::<i64>()
                    .ok()
                    .filter(|n| (1..=5000).contains(n))
                    .ok_or_else(|| {
                        ApiError::new(
                            ServiceError::query("limit", "The query parameter `limit` must be: an integer between 1 and 5000 (inclusive)"),
                            what,
                        )
                    })?;
            }
            "offset" => {
                q.offset = v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                    ApiError::new(
                        ServiceError::query("offset", "The query parameter `offset` must be: a non-negative integer"),
                        what,
                    )
                })?;
            }
            "state" => {
                let mut states = Vec::new();
                for s in v.split(',') {
                    let st = s
                        .parse::<i64>()
                        .ok()
                        .and_then(KeyState::from_code)
                        .ok_or_else(|| {
                            ApiError::new(
                                ServiceError::query("state", "The query parameter `state` must be: a comma-separated list of 0, 1, 2, 3, 5"),
                                what,
                            )
                        })?;
                    states.push(st);
                }
                q.states = states;
            }
            "extractable" => {
                q.extractable = Some(match v.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(ApiError::new(
                            ServiceError::query("extractable", "The query parameter `extractable` must be: true or false"),
                            what,
                        ))
                    }
                });
            }
            _ => {}
        }
    }
    Ok(q)
}

pub async fn list(
    State(st): State<AppState>,
    Auth(caller): Auth,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = key_query(raw.as_deref(), LIST)?;
    let keys = st.svc.list_keys(&caller, &q).await.map_err(op(LIST))?;
    let resources = keys.iter().map(key_json).collect();
    Ok(json_response(StatusCode::OK, &collection(KEY_TYPE, resources)))
}

pub async fn head(
    State(st): State<AppState>,
    Auth(caller): Auth,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = key_query(raw.as_deref(), LIST)?;
    let n = st.svc.count_keys(&caller, &q).await.map_err(op(LIST))?;
    let mut resp = StatusCode::OK.into_response();
    if let Ok(v) = HeaderValue::from_str(&n.to_string()) {
        resp.headers_mut().insert("key-total", v);
    }
    Ok(resp)
}

fn bad_body(msg: &str) -> ApiError {
    ApiError::new(ServiceError::new(ErrorCode::BadBody, msg), CREATE)
}

/// Checks the collection envelope of a create request and returns its one resource.
fn single_resource(body: Option<Value>) -> Result<serde_json::Map<String, Value>, ApiError> {
    let Some(Value::Object(mut env)) = body else {
        return Err(ApiError::new(
            ServiceError::new(ErrorCode::NoBody, "A request body is required"),
            CREATE,
        ));
    };
    let Some(Value::Object(meta)) = env.remove("metadata") else {
        return Err(bad_body("CollectionMetadata is empty"));
    };
    match meta.get("collectiontype").and_then(Value::as_str) {
        Some(KEY_TYPE) => {}
        _ => return Err(bad_body("The collectionType must be application/vnd.ibm.kms.key+json")),
    }
    let Some(Value::Array(mut resources)) = env.remove("resources") else {
        return Err(bad_body("The field `resources` must be an array with one key"));
    };
    let total = meta.get("collectiontotal").and_then(Value::as_i64);
    if total != Some(resources.len() as i64) {
        return Err(ApiError::new(
            ServiceError::new(
                ErrorCode::CollectionTotalMismatch,
                "The collectionTotal does not match the number of resources",
            ),
            CREATE,
        ));
    }
    if resources.len() != 1 {
        return Err(bad_body("Only creation of one key per request is supported"));
    }
    match resources.pop() {
        Some(Value::Object(r)) => {
            if let Some(t) = r.get("type") {
                if t.as_str() != Some(KEY_TYPE) {
                    return Err(ApiError::new(
                        ServiceError::field("type", "The field `type` must be: application/vnd.ibm.kms.key+json"),
                        CREATE,
                    ));
                }
            }
            Ok(r)
        }
        _ => Err(bad_body("Each resource must be a JSON object")),
    }
}

pub async fn create(
    State(st): State<AppState>,
    Auth(caller): Auth,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = extract::read_body(&headers, body, CREATE).await?;
    let r = single_resource(extract::parse_json(&bytes, CREATE)?)?;
    let req = CreateKeyRequest {
        name: opt_str(&r, "name", "name", CREATE)?,
        description: opt_str(&r, "description", "description", CREATE)?,
        tags: opt_str_list(&r, "tags", "tags", CREATE)?,
        extractable: opt_bool(&r, "extractable", "extractable", CREATE)?,
        payload: opt_str(&r, "payload", "payload", CREATE)?,
        encrypted_nonce: opt_str(&r, "encryptednonce", "encryptedNonce", CREATE)?,
        iv: opt_str(&r, "iv", "iv", CREATE)?,
        encryption_algorithm: opt_str(&r, "encryptionalgorithm", "encryptionAlgorithm", CREATE)?,
        expiration_date: opt_str(&r, "expirationdate", "expirationDate", CREATE)?,
        key_ring_id: headers
            .get("x-kms-key-ring")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    };
    let info = st.svc.create_key(&caller, req).await.map_err(op(CREATE))?;
    Ok(json_response(
        StatusCode::CREATED,
        &collection(KEY_TYPE, vec![key_json(&info)]),
    ))
}

pub async fn get(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = st.svc.resolve_key_id(&id).map_err(op(GET))?;
    let info = st.svc.get_key(&caller, id).await.map_err(op(GET))?;
    Ok(json_response(StatusCode::OK, &collection(KEY_TYPE, vec![key_json(&info)])))
}

pub async fn metadata(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = st.svc.resolve_key_id(&id).map_err(op(GET))?;
    let info = st.svc.get_key_metadata(&caller, id).await.map_err(op(GET))?;
    Ok(json_response(StatusCode::OK, &collection(KEY_TYPE, vec![key_json(&info)])))
}

/// Whether `Prefer: return=representation` was sent.
pub fn wants_representation(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.replace(' ', "").eq_ignore_ascii_case("return=representation"))
}

pub async fn delete(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = st.svc.resolve_key_id(&id).map_err(op(DELETE))?;
    let mut info = st.svc.delete_key(&caller, id).await.map_err(op(DELETE))?;
    info.payload = None;
    if wants_representation(&headers) {
        Ok(json_response(StatusCode::OK, &collection(KEY_TYPE, vec![key_json(&info)])))
    } else {
        Ok(StatusCode::NO_CONTENT.into_response())
    }
}

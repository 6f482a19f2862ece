//! KMIP adapters, their client certificates and objects (`/api/v2/kmip_adapters/...`), with
//! Key Protect's paths and bodies (docs/kmip.md). Creation bodies are Key Protect envelopes
//! (`metadata` + one `resource`), member names matched case-insensitively like every body.

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use keyward_domain::format_time;
use keyward_domain::rows::{KmipAdapterRow, KmipCertRow, KmipObjectRow};
use keyward_service::{ErrorCode, ServiceError};
use keyward_wire::kmip::{
    KmipAdapter, KmipAdapterCollection, KmipCertificateCollection, KmipClientCertificate,
    KmipObject, KmipObjectCollection, KmipProfileData, KMIP_ADAPTER_TYPE, KMIP_CERT_TYPE,
    KMIP_OBJECT_TYPE,
};
use serde_json::Value;

use crate::error::{op, ApiError};
use crate::extract::{self, Auth};
use crate::query;
use crate::routes::lifecycle::paging;
use crate::{json_response, AppState};

const ADAPTER_CREATE: &str = "KMIP adapter could not be created";
const ADAPTER_LIST: &str = "KMIP adapters could not be retrieved";
const ADAPTER_GET: &str = "KMIP adapter could not be retrieved";
const ADAPTER_DELETE: &str = "KMIP adapter could not be deleted";
const CERT_CREATE: &str = "KMIP client certificate could not be created";
const CERT_LIST: &str = "KMIP client certificates could not be retrieved";
const CERT_GET: &str = "KMIP client certificate could not be retrieved";
const CERT_DELETE: &str = "KMIP client certificate could not be deleted";
const OBJECT_LIST: &str = "KMIP objects could not be retrieved";
const OBJECT_GET: &str = "KMIP object could not be retrieved";
const OBJECT_DELETE: &str = "KMIP object could not be deleted";

fn bad_body(msg: impl Into<String>, what: &'static str) -> ApiError {
    ApiError::new(ServiceError::new(ErrorCode::BadBody, msg), what)
}

fn field(name: &str, expected: &str, what: &'static str) -> ApiError {
    ApiError::new(
        ServiceError::field(name, format!("The field `{name}` must be: {expected}")),
        what,
    )
}

/// The one resource of a creation envelope whose `collectionType` is `ty` (names lowercased).
async fn one_resource(
    headers: &HeaderMap,
    body: Body,
    ty: &str,
    what: &'static str,
) -> Result<serde_json::Map<String, Value>, ApiError> {
    let bytes = extract::read_body(headers, body, what).await?;
    let Some(lowered) = extract::lowercased_json(&bytes, what)? else {
        return Err(ApiError::new(
            ServiceError::new(ErrorCode::NoBody, "A request body is required"),
            what,
        ));
    };
    let v: Value = serde_json::from_slice(&lowered)
        .map_err(|_| bad_body("The request body is not valid JSON", what))?;
    let Value::Object(mut top) = v else {
        return Err(bad_body("The request body must be a JSON object", what));
    };
    let Some(Value::Object(meta)) = top.remove("metadata") else {
        return Err(bad_body("CollectionMetadata is empty", what));
    };
    if meta.get("collectiontype").and_then(Value::as_str) != Some(ty) {
        return Err(field("collectionType", ty, what));
    }
    if meta.get("collectiontotal").and_then(Value::as_u64) != Some(1) {
        return Err(ApiError::new(
            ServiceError::new(
                ErrorCode::CollectionTotalMismatch,
                "`collectionTotal` must be 1, the number of resources",
            ),
            what,
        ));
    }
    let Some(Value::Array(mut res)) = top.remove("resources") else {
        return Err(bad_body("The field `resources` must be an array", what));
    };
    if res.len() != 1 {
        return Err(ApiError::new(
            ServiceError::new(
                ErrorCode::NumCollectionResource,
                "Exactly one resource is accepted",
            ),
            what,
        ));
    }
    match res.pop() {
        Some(Value::Object(r)) => Ok(r),
        _ => Err(bad_body("Each resource must be a JSON object", what)),
    }
}

/// An optional string member (absent or `null`: `None`).
fn opt_str<'a>(
    r: &'a serde_json::Map<String, Value>,
    name: &str,
    wire: &str,
    what: &'static str,
) -> Result<Option<&'a str>, ApiError> {
    match r.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(field(wire, "a string", what)),
    }
}

fn adapter_json(a: &KmipAdapterRow) -> KmipAdapter {
    KmipAdapter {
        created_at: format_time(a.created_at),
        created_by: a.created_by.clone(),
        description: a.description.clone(),
        id: a.id.clone(),
        name: a.name.clone(),
        profile: a.profile.clone(),
        profile_data: KmipProfileData {
            crk_id: a.crk_id.to_string(),
        },
        updated_at: format_time(a.updated_at),
        updated_by: a.updated_by.clone(),
    }
}

fn cert_json(c: &KmipCertRow, with_pem: bool) -> KmipClientCertificate {
    KmipClientCertificate {
        certificate: with_pem.then(|| c.certificate.clone()),
        created_at: format_time(c.created_at),
        created_by: c.created_by.clone(),
        id: c.id.clone(),
        name: c.name.clone(),
    }
}

fn object_json(o: &KmipObjectRow) -> KmipObject {
    KmipObject {
        created_at: format_time(o.created_at),
        created_by: o.created_by.clone(),
        created_by_kmip_client_cert_id: o.created_by_cert_id.clone(),
        destroyed_at: o.destroyed_at.map(format_time),
        destroyed_by: o.destroyed_by.clone(),
        destroyed_by_kmip_client_cert_id: o.destroyed_by_cert_id.clone(),
        id: o.id.clone(),
        kmip_object_type: o.object_type,
        state: o.state,
        updated_at: format_time(o.updated_at),
        updated_by: o.updated_by.clone(),
        updated_by_kmip_client_cert_id: o.updated_by_cert_id.clone(),
    }
}

fn page(raw: Option<&str>, what: &'static str) -> Result<(i64, i64, bool), ApiError> {
    let (limit, offset, total) = paging(&query::pairs(raw, what)?, 100, what)?;
    Ok((
        limit as i64,
        i64::try_from(offset).unwrap_or(i64::MAX),
        total,
    ))
}

pub async fn create_adapter(
    State(st): State<AppState>,
    Auth(caller): Auth,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let what = ADAPTER_CREATE;
    let r = one_resource(&headers, body, KMIP_ADAPTER_TYPE, what).await?;
    let profile = opt_str(&r, "profile", "profile", what)?
        .ok_or_else(|| field("profile", "native_1.0", what))?;
    let crk = match r.get("profile_data") {
        Some(Value::Object(p)) => match p.get("crk_id") {
            Some(Value::String(s)) => s.clone(),
            _ => return Err(field("crk_id", "the id of a root key", what)),
        },
        _ => return Err(field("profile_data", "an object with `crk_id`", what)),
    };
    let a = st
        .svc
        .create_kmip_adapter(
            &caller,
            opt_str(&r, "name", "name", what)?,
            opt_str(&r, "description", "description", what)?,
            profile,
            &crk,
        )
        .await
        .map_err(op(what))?;
    Ok(json_response(
        StatusCode::CREATED,
        &KmipAdapterCollection::new(KMIP_ADAPTER_TYPE, vec![adapter_json(&a)], None),
    ))
}

pub async fn list_adapters(
    State(st): State<AppState>,
    Auth(caller): Auth,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (limit, offset, with_total) = page(raw.as_deref(), ADAPTER_LIST)?;
    let (rows, total) = st
        .svc
        .list_kmip_adapters(&caller, limit, offset)
        .await
        .map_err(op(ADAPTER_LIST))?;
    Ok(json_response(
        StatusCode::OK,
        &KmipAdapterCollection::new(
            KMIP_ADAPTER_TYPE,
            rows.iter().map(adapter_json).collect(),
            with_total.then_some(total as u64),
        ),
    ))
}

pub async fn get_adapter(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let a = st
        .svc
        .get_kmip_adapter(&caller, &id)
        .await
        .map_err(op(ADAPTER_GET))?;
    Ok(json_response(
        StatusCode::OK,
        &KmipAdapterCollection::new(KMIP_ADAPTER_TYPE, vec![adapter_json(&a)], None),
    ))
}

pub async fn delete_adapter(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    st.svc
        .delete_kmip_adapter(&caller, &id)
        .await
        .map_err(op(ADAPTER_DELETE))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn create_cert(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let what = CERT_CREATE;
    let r = one_resource(&headers, body, KMIP_CERT_TYPE, what).await?;
    let pem = opt_str(&r, "certificate", "certificate", what)?
        .ok_or_else(|| field("certificate", "one X.509 certificate in PEM form", what))?;
    let c = st
        .svc
        .create_kmip_cert(&caller, &id, opt_str(&r, "name", "name", what)?, pem)
        .await
        .map_err(op(what))?;
    Ok(json_response(
        StatusCode::CREATED,
        &KmipCertificateCollection::new(KMIP_CERT_TYPE, vec![cert_json(&c, true)], None),
    ))
}

pub async fn list_certs(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (limit, offset, with_total) = page(raw.as_deref(), CERT_LIST)?;
    let (rows, total) = st
        .svc
        .list_kmip_certs(&caller, &id, limit, offset)
        .await
        .map_err(op(CERT_LIST))?;
    Ok(json_response(
        StatusCode::OK,
        &KmipCertificateCollection::new(
            KMIP_CERT_TYPE,
            rows.iter().map(|c| cert_json(c, false)).collect(),
            with_total.then_some(total as u64),
        ),
    ))
}

pub async fn get_cert(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path((id, cert)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let c = st
        .svc
        .get_kmip_cert(&caller, &id, &cert)
        .await
        .map_err(op(CERT_GET))?;
    Ok(json_response(
        StatusCode::OK,
        &KmipCertificateCollection::new(KMIP_CERT_TYPE, vec![cert_json(&c, true)], None),
    ))
}

pub async fn delete_cert(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path((id, cert)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    st.svc
        .delete_kmip_cert(&caller, &id, &cert)
        .await
        .map_err(op(CERT_DELETE))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn list_objects(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (limit, offset, with_total) = page(raw.as_deref(), OBJECT_LIST)?;
    let (rows, total) = st
        .svc
        .list_kmip_objects(&caller, &id, limit, offset)
        .await
        .map_err(op(OBJECT_LIST))?;
    Ok(json_response(
        StatusCode::OK,
        &KmipObjectCollection::new(
            KMIP_OBJECT_TYPE,
            rows.iter().map(object_json).collect(),
            with_total.then_some(total as u64),
        ),
    ))
}

pub async fn get_object(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path((id, object)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let o = st
        .svc
        .get_kmip_object(&caller, &id, &object)
        .await
        .map_err(op(OBJECT_GET))?;
    Ok(json_response(
        StatusCode::OK,
        &KmipObjectCollection::new(KMIP_OBJECT_TYPE, vec![object_json(&o)], None),
    ))
}

pub async fn delete_object(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path((id, object)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    st.svc
        .delete_kmip_object(&caller, &id, &object)
        .await
        .map_err(op(OBJECT_DELETE))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

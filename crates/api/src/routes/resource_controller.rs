//! The Resource Controller subset that IBM's Terraform provider calls before its first Key
//! Protect call: `GET /v2/resource_instances/{guid}`. It reads `crn` (the instance CRN it
//! stores next to each key) and `extensions.endpoints.public` / `private` (the Key Protect
//! endpoint it then calls); `guid`, `name` and `state` are what `ibm_resource_instance` shows.
//!
//! The path's instance may be its GUID or its CRN. Authentication is the API's bearer token;
//! an instance the caller has no role in, an unknown one and a malformed id answer the same
//! 404 (no existence oracle). The endpoints point back at this server: the scheme it listens
//! with and the request's `Host` (a host that is not a plain `name[:port]` is refused).

use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::Response;
use keyward_domain::{format_time, InstanceId};
use keyward_service::{ErrorCode, ServiceError};
use keyward_wire::resp::{ResourceInstance, ResourceInstanceEndpoints, ResourceInstanceExtensions};

use crate::error::ApiError;
use crate::extract;
use crate::{json_response, AppState};

const GET: &str = "Resource instance could not be retrieved";

fn not_found() -> ApiError {
    ApiError::new(
        ServiceError::new(ErrorCode::NotFound, "Resource instance not found"),
        GET,
    )
}

/// The instance named by a GUID or an instance CRN (`crn:...:<guid>::`).
fn instance_of(id: &str) -> Option<InstanceId> {
    if let Ok(i) = InstanceId::parse(id) {
        return Some(i);
    }
    let segs: Vec<&str> = id.split(':').collect();
    if segs.len() == 10 && segs[0] == "crn" {
        return InstanceId::parse(segs[7]).ok();
    }
    None
}

/// `scheme://host[:port]` of this request, from its `Host` header.
fn base_url(st: &AppState, parts: &Parts) -> Result<String, ApiError> {
    let host = parts
        .headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
                })
        })
        .ok_or_else(|| {
            ApiError::new(
                ServiceError::new(
                    ErrorCode::BadBody,
                    "The header `Host` must be: a host name or address, with an optional port",
                )
                .with_target("header", "Host"),
                GET,
            )
        })?;
    Ok(format!("{}://{host}", st.scheme))
}

/// `GET /v2/resource_instances/{id}`.
pub async fn get(
    State(st): State<AppState>,
    Path(id): Path<String>,
    req: axum::extract::Request,
) -> Result<Response, ApiError> {
    let (mut parts, _) = req.into_parts();
    let instance = instance_of(&id);
    // A token is checked (and a failure counted) even for an id that names no instance, so
    // that the answer does not depend on the id's syntax for a caller without a token.
    let probe = instance.unwrap_or_default();
    let caller = extract::authenticate(&mut parts, &st, Some(probe)).await?;
    if instance.is_none() || caller.roles.is_empty() {
        return Err(not_found());
    }
    let row = st.svc.instance_info(&caller).await.map_err(|e| {
        if e.code == ErrorCode::Forbidden {
            not_found()
        } else {
            ApiError::new(e, GET)
        }
    })?;
    let base = base_url(&st, &parts)?;
    let (region, account) = st.svc.crn_scope();
    let crn = st.svc.instance_crn(row.id);
    Ok(json_response(
        StatusCode::OK,
        &ResourceInstance {
            id: crn.clone(),
            guid: row.id.to_string(),
            url: format!("/v2/resource_instances/{}", row.id),
            crn,
            name: row.name,
            state: "active".into(),
            kind: "service_instance".into(),
            resource_id: "kms".into(),
            region_id: region.to_string(),
            account_id: account.to_string(),
            resource_group_id: "default".into(),
            created_at: format_time(row.created_at),
            locked: false,
            extensions: ResourceInstanceExtensions {
                endpoints: ResourceInstanceEndpoints {
                    public: base.clone(),
                    private: base,
                },
            },
        },
    ))
}

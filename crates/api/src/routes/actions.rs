//! `POST /api/v2/keys/{id}/actions/{action}` and the deprecated `POST /keys/{id}?action=`.

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use keyward_service::keys::RotateRequest;
use keyward_service::{Caller, ErrorCode, ServiceError};
use keyward_wire::req::{EmptyRequest, RewrapToRequest, UnwrapRequest, WrapRequest};
use keyward_wire::resp::{KeyVersionRef, RewrapResponse, UnwrapResponse, WrapResponse};
use serde::de::DeserializeOwned;

use crate::error::{op, ApiError};
use crate::extract::{self, Auth};
use crate::{json_response, AppState};

const WRAP: &str = "Wrap with key could not be performed";
const UNWRAP: &str = "Unwrap with key could not be performed";
const REWRAP: &str = "Rewrap with key could not be performed";
const REWRAP_TO: &str = "Rewrap to another key could not be performed";
const ROTATE: &str = "Key could not be rotated";
const ACTION: &str = "Action could not be performed";

pub async fn action(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    dispatch(&st, &caller, &id, &action, &headers, body).await
}

pub async fn legacy_action(
    State(st): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let action = extract::query_pairs(raw.as_deref())
        .into_iter()
        .find(|(k, _)| k == "action")
        .map(|(_, v)| v)
        .ok_or_else(|| {
            ApiError::new(
                ServiceError::query("action", "The query parameter `action` is required"),
                ACTION,
            )
        })?;
    dispatch(&st, &caller, &id, &action, &headers, body).await
}

/// The body of an action: absent, `null` or a JSON object.
async fn body_object<T: DeserializeOwned + Default>(
    headers: &HeaderMap,
    body: Body,
    what: &'static str,
) -> Result<T, ApiError> {
    let bytes = extract::read_body(headers, body, what).await?;
    extract::object_body(&bytes, what)
}

fn version(id: impl ToString) -> KeyVersionRef {
    KeyVersionRef {
        creation_date: None,
        id: id.to_string(),
    }
}

async fn dispatch(
    st: &AppState,
    caller: &Caller,
    id: &str,
    action: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    match action {
        "wrap" => {
            let req: WrapRequest = body_object(headers, body, WRAP).await?;
            wrap_op(st, caller, id, req).await
        }
        "unwrap" | "rewrap" => {
            let what = if action == "unwrap" { UNWRAP } else { REWRAP };
            let req: UnwrapRequest = body_object(headers, body, what).await?;
            unwrap_op(st, caller, id, action == "unwrap", req).await
        }
        "rewrapTo" => {
            let req: RewrapToRequest = body_object(headers, body, REWRAP_TO).await?;
            rewrap_to_op(st, caller, id, req).await
        }
        "rotate" => {
            let body: keyward_wire::req::RotateRequest =
                body_object(headers, body, ROTATE).await?;
            let id = st.svc.resolve_key(caller, id).await.map_err(op(ROTATE))?;
            let req = RotateRequest {
                payload: body.payload,
                encrypted_nonce: body.encryptednonce,
                iv: body.iv,
                encryption_algorithm: body.encryptionalgorithm,
            };
            st.svc
                .rotate_key(caller, id, req)
                .await
                .map_err(op(ROTATE))?;
            if super::keys::wants_representation(headers) {
                let mut info = st
                    .svc
                    .get_key_metadata(caller, id)
                    .await
                    .map_err(op(ROTATE))?;
                info.payload = None;
                return Ok(json_response(StatusCode::OK, &crate::wire::keys([&info])));
            }
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        "disable" | "enable" | "setKeyForDeletion" | "unsetKeyForDeletion" | "sync" => {
            let what = match action {
                "disable" => "Key could not be disabled",
                "enable" => "Key could not be enabled",
                "setKeyForDeletion" => "Key could not be set for deletion",
                "unsetKeyForDeletion" => "Key could not be unset for deletion",
                _ => "Key could not be synced",
            };
            // These take no body; an empty body, `null` or `{}` are all accepted.
            let _: EmptyRequest = body_object(headers, body, what).await?;
            let id = st.svc.resolve_key(caller, id).await.map_err(op(what))?;
            let r = match action {
                "disable" => st.svc.disable_key(caller, id).await,
                "enable" => st.svc.enable_key(caller, id).await,
                "setKeyForDeletion" => st.svc.set_key_for_deletion(caller, id).await,
                "unsetKeyForDeletion" => st.svc.unset_key_for_deletion(caller, id).await,
                _ => st.svc.sync_key(caller, id).await,
            };
            r.map_err(op(what))?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        "restore" => {
            let _: EmptyRequest = body_object(headers, body, super::keys::RESTORE).await?;
            super::keys::restore_inner(st, caller, id, headers).await
        }
        _ => Err(ApiError::new(
            ServiceError::new(
                ErrorCode::InvalidQueryParam,
                "The action must be one of: wrap, unwrap, rewrap, rotate, disable, enable, setKeyForDeletion, unsetKeyForDeletion, sync, restore, rewrapTo",
            )
            .with_target("path_param", "action"),
            ACTION,
        )),
    }
}

/// `wrap`, after its body is read (also one operation of a batch).
pub(crate) async fn wrap_op(
    st: &AppState,
    caller: &Caller,
    id: &str,
    req: WrapRequest,
) -> Result<Response, ApiError> {
    let id = st.svc.resolve_key(caller, id).await.map_err(op(WRAP))?;
    let r = st
        .svc
        .wrap(
            caller,
            id,
            req.plaintext.as_deref(),
            &req.aad.unwrap_or_default(),
        )
        .await
        .map_err(op(WRAP))?;
    let out = WrapResponse {
        ciphertext: r.ciphertext,
        key_version: version(r.key_version),
        plaintext: r.plaintext.map(|p| B64.encode(p.expose())),
    };
    Ok(json_response(StatusCode::OK, &out))
}

fn ciphertext_required(ciphertext: Option<String>, what: &'static str) -> Result<String, ApiError> {
    ciphertext.ok_or_else(|| {
        ApiError::new(
            ServiceError::field("ciphertext", "The field `ciphertext` is required"),
            what,
        )
    })
}

/// `unwrap` (`unwrap == true`) or `rewrap`, after the body is read (also a batch operation).
pub(crate) async fn unwrap_op(
    st: &AppState,
    caller: &Caller,
    id: &str,
    unwrap: bool,
    req: UnwrapRequest,
) -> Result<Response, ApiError> {
    let what = if unwrap { UNWRAP } else { REWRAP };
    let id = st.svc.resolve_key(caller, id).await.map_err(op(what))?;
    let ciphertext = ciphertext_required(req.ciphertext, what)?;
    let aad = req.aad.unwrap_or_default();
    if unwrap {
        let r = st
            .svc
            .unwrap(caller, id, &ciphertext, &aad)
            .await
            .map_err(op(what))?;
        let (ciphertext, rewrapped) = match r.rewrapped {
            Some((ct, v)) => (Some(ct), Some(version(v))),
            None => (None, None),
        };
        let out = UnwrapResponse {
            ciphertext,
            key_version: version(r.key_version),
            plaintext: B64.encode(r.plaintext.expose()),
            rewrapped_key_version: rewrapped,
        };
        Ok(json_response(StatusCode::OK, &out))
    } else {
        let r = st
            .svc
            .rewrap(caller, id, &ciphertext, &aad)
            .await
            .map_err(op(what))?;
        let out = RewrapResponse {
            ciphertext: r.ciphertext,
            key_version: version(r.key_version),
            rewrapped_key_version: version(r.rewrapped_key_version),
        };
        Ok(json_response(StatusCode::OK, &out))
    }
}

/// `rewrapTo` (a Keyward extension): the answer has `rewrap`'s shape, with
/// `rewrappedKeyVersion` a version of the target key.
pub(crate) async fn rewrap_to_op(
    st: &AppState,
    caller: &Caller,
    id: &str,
    req: RewrapToRequest,
) -> Result<Response, ApiError> {
    let source = st
        .svc
        .resolve_key(caller, id)
        .await
        .map_err(op(REWRAP_TO))?;
    let ciphertext = ciphertext_required(req.ciphertext, REWRAP_TO)?;
    let target = req.targetkeyid.ok_or_else(|| {
        ApiError::new(
            ServiceError::field("targetKeyId", "The field `targetKeyId` is required"),
            REWRAP_TO,
        )
    })?;
    let target = st
        .svc
        .resolve_key(caller, &target)
        .await
        .map_err(op(REWRAP_TO))?;
    let r = st
        .svc
        .rewrap_to(
            caller,
            source,
            &ciphertext,
            &req.aad.unwrap_or_default(),
            target,
        )
        .await
        .map_err(op(REWRAP_TO))?;
    let out = RewrapResponse {
        ciphertext: r.ciphertext,
        key_version: version(r.key_version),
        rewrapped_key_version: version(r.rewrapped_key_version),
    };
    Ok(json_response(StatusCode::OK, &out))
}

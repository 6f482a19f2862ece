//! `POST /api/v2/keys/{id}/actions/{action}` and the deprecated `POST /keys/{id}?action=`.

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use keyward_service::keys::RotateRequest;
use keyward_service::{Caller, ErrorCode, ServiceError};
use serde_json::{json, Map, Value};

use crate::error::{op, ApiError};
use crate::extract::{self, opt_str, opt_str_list, Auth};
use crate::{json_response, AppState};

const WRAP: &str = "Wrap with key could not be performed";
const UNWRAP: &str = "Unwrap with key could not be performed";
const REWRAP: &str = "Rewrap with key could not be performed";
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

async fn body_object(
    headers: &HeaderMap,
    body: Body,
    what: &'static str,
) -> Result<Map<String, Value>, ApiError> {
    let bytes = extract::read_body(headers, body, what).await?;
    extract::object_or_empty(extract::parse_json(&bytes, what)?, what)
}

fn aad(obj: &Map<String, Value>, what: &'static str) -> Result<Vec<String>, ApiError> {
    Ok(opt_str_list(obj, "aad", "aad", what)?.unwrap_or_default())
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
            let obj = body_object(headers, body, WRAP).await?;
            let id = st.svc.resolve_key(caller, id).await.map_err(op(WRAP))?;
            let plaintext = opt_str(&obj, "plaintext", "plaintext", WRAP)?;
            let r = st
                .svc
                .wrap(caller, id, plaintext.as_deref(), &aad(&obj, WRAP)?)
                .await
                .map_err(op(WRAP))?;
            let mut out = json!({"ciphertext": r.ciphertext, "keyVersion": {"id": r.key_version.to_string()}});
            if let Some(p) = r.plaintext {
                out["plaintext"] = json!(B64.encode(p.expose()));
            }
            Ok(json_response(StatusCode::OK, &out))
        }
        "unwrap" | "rewrap" => {
            let what = if action == "unwrap" { UNWRAP } else { REWRAP };
            let obj = body_object(headers, body, what).await?;
            let id = st.svc.resolve_key(caller, id).await.map_err(op(what))?;
            let ciphertext = opt_str(&obj, "ciphertext", "ciphertext", what)?.ok_or_else(|| {
                ApiError::new(
                    ServiceError::field("ciphertext", "The field `ciphertext` is required"),
                    what,
                )
            })?;
            let aad = aad(&obj, what)?;
            if action == "unwrap" {
                let r = st
                    .svc
                    .unwrap(caller, id, &ciphertext, &aad)
                    .await
                    .map_err(op(what))?;
                let mut out = json!({"plaintext": B64.encode(r.plaintext.expose()), "keyVersion": {"id": r.key_version.to_string()}});
                if let Some((ct, v)) = r.rewrapped {
                    out["ciphertext"] = json!(ct);
                    out["rewrappedKeyVersion"] = json!({"id": v.to_string()});
                }
                Ok(json_response(StatusCode::OK, &out))
            } else {
                let r = st
                    .svc
                    .rewrap(caller, id, &ciphertext, &aad)
                    .await
                    .map_err(op(what))?;
                Ok(json_response(
                    StatusCode::OK,
                    &json!({
                        "ciphertext": r.ciphertext,
                        "keyVersion": {"id": r.key_version.to_string()},
                        "rewrappedKeyVersion": {"id": r.rewrapped_key_version.to_string()},
                    }),
                ))
            }
        }
        "rotate" => {
            let obj = body_object(headers, body, ROTATE).await?;
            let id = st.svc.resolve_key(caller, id).await.map_err(op(ROTATE))?;
            let req = RotateRequest {
                payload: opt_str(&obj, "payload", "payload", ROTATE)?,
                encrypted_nonce: opt_str(&obj, "encryptednonce", "encryptedNonce", ROTATE)?,
                iv: opt_str(&obj, "iv", "iv", ROTATE)?,
                encryption_algorithm: opt_str(&obj, "encryptionalgorithm", "encryptionAlgorithm", ROTATE)?,
            };
            st.svc
                .rotate_key(caller, id, req)
                .await
                .map_err(op(ROTATE))?;
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
            let _ = body_object(headers, body, what).await?;
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
            let _ = body_object(headers, body, super::keys::RESTORE).await?;
            super::keys::restore_inner(st, caller, id).await
        }
        _ => Err(ApiError::new(
            ServiceError::new(
                ErrorCode::InvalidQueryParam,
                "The action must be one of: wrap, unwrap, rewrap, rotate, disable, enable, setKeyForDeletion, unsetKeyForDeletion, sync, restore",
            )
            .with_target("path_param", "action"),
            ACTION,
        )),
    }
}

//! The end of an audited request: the service records an `attempt` before it acts; this
//! middleware records the outcome once the response is decided (`success` only after the
//! change committed), or a `failure` for a request refused before it acted.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use keyward_domain::{Action, KeyId};
use keyward_service::Caller;
use parking_lot::Mutex;

use crate::AppState;

/// Filled by the auth extractor with the caller, so the middleware can see it afterwards.
#[derive(Clone, Default)]
pub struct AuditSlot(Arc<Mutex<Option<Caller>>>);

impl AuditSlot {
    pub fn set(&self, c: Caller) {
        *self.0.lock() = Some(c);
    }
}

/// The audited action of a route, if the route reads key material, uses a key or changes
/// anything (plain reads of metadata are not audited).
pub fn audited_action(
    method: &Method,
    route: &str,
    path: &str,
    query: Option<&str>,
) -> Option<Action> {
    let action_param = || {
        if route.ends_with("/actions/{action}") {
            path.rsplit('/').next().map(str::to_string)
        } else {
            crate::extract::query_pairs(query)
                .into_iter()
                .find(|(k, _)| k == "action")
                .map(|(_, v)| v)
        }
    };
    let m = method.as_str();
    Some(match (m, route) {
        ("POST", "/api/v2/keys") | ("POST", "/api/v2/keys_with_policy_overrides") => {
            Action::CreateKey
        }
        ("GET", "/api/v2/keys/{id}") => Action::GetStandardKeyPayload,
        ("DELETE", "/api/v2/keys/{id}") => Action::DeleteKey,
        ("PATCH", "/api/v2/keys/{id}") => Action::PatchKey,
        ("POST", "/api/v2/keys/{id}") | ("POST", "/api/v2/keys/{id}/actions/{action}") => {
            match action_param()?.as_str() {
                "wrap" => Action::Wrap,
                "unwrap" => Action::Unwrap,
                "rewrap" => Action::Rewrap,
                "rotate" => Action::Rotate,
                "disable" => Action::Disable,
                "enable" => Action::Enable,
                "setKeyForDeletion" => Action::SetKeyForDeletion,
                "unsetKeyForDeletion" => Action::UnsetKeyForDeletion,
                "restore" => Action::RestoreKey,
                "sync" => Action::Sync,
                _ => return None,
            }
        }
        ("POST", "/api/v2/keys/{id}/restore") => Action::RestoreKey,
        ("DELETE", "/api/v2/keys/{id}/purge") => Action::Purge,
        ("PUT", "/api/v2/keys/{id}/policies") => Action::WriteKeyPolicies,
        ("PUT", "/api/v2/instance/policies") => Action::WriteInstancePolicies,
        ("POST", "/api/v2/keys/{id}/aliases/{alias}") => Action::CreateAlias,
        ("DELETE", "/api/v2/keys/{id}/aliases/{alias}") => Action::DeleteAlias,
        ("POST", "/api/v2/key_rings/{id}") => Action::CreateKeyRing,
        ("DELETE", "/api/v2/key_rings/{id}") => Action::DeleteKeyRing,
        ("POST", "/api/v2/import_token") => Action::CreateImportToken,
        ("GET", "/api/v2/import_token") => Action::GetImportToken,
        _ => return None,
    })
}

/// Middleware: after an audited request, records its outcome.
pub async fn record_outcomes(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    if !st.svc.auditing() {
        return next.run(req).await;
    }
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    let action = route
        .as_deref()
        .and_then(|r| audited_action(req.method(), r, req.uri().path(), req.uri().query()));
    let Some(action) = action else {
        return next.run(req).await;
    };
    let key = req
        .uri()
        .path()
        .strip_prefix("/api/v2/keys/")
        .and_then(|rest| rest.split('/').next())
        .and_then(|id| KeyId::parse(id).ok());
    let slot = AuditSlot::default();
    req.extensions_mut().insert(slot.clone());
    let resp = next.run(req).await;
    let caller = slot.0.lock().take();
    if let Some(caller) = caller {
        let reason = if resp.status().is_client_error() || resp.status().is_server_error() {
            Some(
                resp.extensions()
                    .get::<keyward_service::ErrorCode>()
                    .map(|c| c.as_str())
                    .unwrap_or("refused"),
            )
        } else {
            None
        };
        st.svc.audit_outcome(&caller, action, key, reason).await;
    }
    resp
}

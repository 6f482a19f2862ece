//! The end of an audited request: the service records an `attempt` before it acts; this
//! middleware records the outcome once the response is decided (`success` only after the
//! change committed), or a `failure` for a request refused before it acted.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use keyward_domain::KeyId;
use keyward_service::Caller;
use parking_lot::Mutex;

use crate::endpoint::Endpoint;
use crate::AppState;

/// Filled by the auth extractor with the caller, so the middleware can see it afterwards.
#[derive(Clone, Default)]
pub struct AuditSlot(Arc<Mutex<Option<Caller>>>);

impl AuditSlot {
    pub fn set(&self, c: Caller) {
        *self.0.lock() = Some(c);
    }
}

/// Middleware: after an audited request, records its outcome.
pub async fn record_outcomes(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    if !st.svc.auditing() {
        return next.run(req).await;
    }
    let action = req
        .extensions()
        .get::<Endpoint>()
        .and_then(Endpoint::audited_action);
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

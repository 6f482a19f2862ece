//! `POST /api/v2/x-keyward/batch` (a Keyward extension, docs/design.md "Extensions"): up to
//! [`MAX_BATCH`] wrap, unwrap, rewrap and cross-key rewrap (`rewrapTo`) operations in one
//! request, for bulk re-encryption jobs. Each operation is checked, performed, audited and
//! answered exactly as its single request would be (same status, same body, same error
//! envelope); one operation's failure does not stop the others. The batch counts one request
//! against the caller's crypto rate limit per operation.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use keyward_domain::{Action, KeyId};
use keyward_service::{Caller, ServiceError};
use keyward_wire::req::{BatchItem, BatchRequest, RewrapToRequest, UnwrapRequest, WrapRequest};
use keyward_wire::resp::{BatchResponse, BatchResult, CollectionMetadata};

use crate::error::ApiError;
use crate::extract::{self, Auth};
use crate::ratelimit::Class;
use crate::routes::actions;
use crate::{json_response, AppState};

/// Most operations in one batch (the 64 KiB body limit also holds).
pub const MAX_BATCH: usize = 100;
pub const BATCH_TYPE: &str = "application/vnd.ibm.kms.x-keyward.batch+json";
const BATCH: &str = "Batch could not be performed";

pub async fn batch(
    State(st): State<AppState>,
    Auth(caller): Auth,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = extract::read_body(&headers, body, BATCH).await?;
    let req: BatchRequest = extract::object_body(&bytes, BATCH)?;
    let items = req.requests.unwrap_or_default();
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(ApiError::new(
            ServiceError::field(
                "requests",
                format!("The field `requests` must be: a list of 1 to {MAX_BATCH} operations"),
            ),
            BATCH,
        ));
    }
    // The whole batch is refused, before any operation runs, if any operation is malformed.
    for (i, item) in items.iter().enumerate() {
        if !matches!(
            item.action.as_deref(),
            Some("wrap" | "unwrap" | "rewrap" | "rewrapTo")
        ) {
            return Err(item_error(
                i,
                "action",
                "one of wrap, unwrap, rewrap, rewrapTo",
            ));
        }
        if item.keyid.as_deref().is_none_or(str::is_empty) {
            return Err(item_error(i, "keyId", "the id or alias of a root key"));
        }
    }
    // The request itself counted one; the other operations count now, all or none.
    if !caller.roles.is_empty() && items.len() > 1 {
        let extra = u32::try_from(items.len() - 1).unwrap_or(u32::MAX);
        st.limiter
            .check_n(caller.instance, &caller.iam_id, Class::Crypto, extra)
            .map_err(extract::too_many)?;
    }
    let mut results = Vec::with_capacity(items.len());
    for item in items {
        results.push(run(&st, &caller, item).await);
    }
    let out = BatchResponse {
        metadata: CollectionMetadata {
            collection_total: results.len() as u64,
            collection_type: BATCH_TYPE.into(),
            total_count: None,
        },
        results,
    };
    Ok(json_response(StatusCode::OK, &out))
}

fn item_error(i: usize, field: &str, must: &str) -> ApiError {
    ApiError::new(
        ServiceError::field(
            "requests",
            format!("The field `requests[{i}].{field}` must be: {must}"),
        ),
        BATCH,
    )
}

/// One operation: the single route's code, its response turned into a result.
async fn run(st: &AppState, caller: &Caller, item: BatchItem) -> BatchResult {
    let key = item.keyid.clone().unwrap_or_default();
    let (action, outcome) = match item.action.as_deref() {
        Some("wrap") => (
            Some(Action::Wrap),
            actions::wrap_op(
                st,
                caller,
                &key,
                WrapRequest {
                    plaintext: item.plaintext,
                    aad: item.aad,
                },
            )
            .await,
        ),
        Some(a @ ("unwrap" | "rewrap")) => (
            Some(if a == "unwrap" {
                Action::Unwrap
            } else {
                Action::Rewrap
            }),
            actions::unwrap_op(
                st,
                caller,
                &key,
                a == "unwrap",
                UnwrapRequest {
                    ciphertext: item.ciphertext,
                    aad: item.aad,
                },
            )
            .await,
        ),
        Some("rewrapTo") => (
            Some(Action::Rewrap),
            actions::rewrap_to_op(
                st,
                caller,
                &key,
                RewrapToRequest {
                    ciphertext: item.ciphertext,
                    aad: item.aad,
                    targetkeyid: item.targetkeyid,
                },
            )
            .await,
        ),
        // Refused before any operation ran (`batch`).
        _ => (
            None,
            Err(item_error(
                0,
                "action",
                "one of wrap, unwrap, rewrap, rewrapTo",
            )),
        ),
    };
    let resp = match outcome {
        Ok(r) => r,
        Err(e) => axum::response::IntoResponse::into_response(e),
    };
    let status = resp.status();
    // The outcome record a single request gets from the audit middleware.
    if let Some(action) = action.filter(|_| st.svc.auditing()) {
        let reason = (status.is_client_error() || status.is_server_error()).then(|| {
            resp.extensions()
                .get::<keyward_service::ErrorCode>()
                .map(|c| c.as_str())
                .unwrap_or("refused")
        });
        st.svc
            .audit_outcome(caller, action, KeyId::parse(&key).ok(), reason)
            .await;
    }
    let bytes = axum::body::to_bytes(resp.into_body(), extract::BODY_LIMIT * 4)
        .await
        .unwrap_or_default();
    BatchResult {
        status: status.as_u16(),
        body: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    }
}

//! `GET /api/v2/x-keyward/audit`: a Keyward extension (not in Key Protect's API) that reads the
//! database audit sink (`--audit-sink database`, docs/audit.md) of the caller's instance,
//! newest first. Manager only; every filter is checked (400 `INVALID_QUERY_PARAM_ERR` naming
//! the parameter) and the page is bounded ([`MAX_LIMIT`], [`MAX_OFFSET`]).

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use keyward_domain::rows::AuditQuery;
use keyward_domain::KeyId;
use keyward_service::ServiceError;
use keyward_wire::resp::{AuditLogRecord, AuditRecordCollection};
use keyward_wire::AUDIT_TYPE;

use crate::error::{op, ApiError};
use crate::extract::Auth;
use crate::query;
use crate::{json_response, AppState};

const READ: &str = "Audit records could not be retrieved";
/// Most records in one page.
pub const MAX_LIMIT: i64 = 500;
/// Default records in one page.
pub const DEFAULT_LIMIT: i64 = 50;
/// Most records skipped (deeper pages: narrow the time range instead).
pub const MAX_OFFSET: i64 = 100_000;
/// The query parameters this route takes.
const PARAMS: [&str; 7] = [
    "action", "keyId", "outcome", "since", "until", "limit", "offset",
];

fn bad(name: &str, msg: &str) -> ApiError {
    ApiError::new(ServiceError::query(name, msg.to_string()), READ)
}

fn int(v: &str, name: &str, min: i64, max: i64) -> Result<i64, ApiError> {
    v.parse::<i64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| {
            bad(
                name,
                &format!("The query parameter `{name}` must be: an integer between {min} and {max} (inclusive)"),
            )
        })
}

fn time(v: &str, name: &str) -> Result<i64, ApiError> {
    keyward_domain::parse_time(v).ok_or_else(|| {
        bad(
            name,
            &format!(
                "The query parameter `{name}` must be: an RFC 3339 time, e.g. 2026-11-01T00:00:00Z"
            ),
        )
    })
}

/// The store query of a query string (the instance is set by the service).
pub fn parse(raw: Option<&str>) -> Result<AuditQuery, ApiError> {
    let pairs = query::pairs(raw, READ)?;
    let mut q = AuditQuery {
        limit: Some(DEFAULT_LIMIT),
        offset: Some(0),
        newest_first: true,
        ..AuditQuery::default()
    };
    for (k, _) in &pairs {
        if !PARAMS.contains(&k.as_str()) {
            return Err(bad(
                k,
                &format!(
                    "Unknown query parameter `{k}` (known: {})",
                    PARAMS.join(", ")
                ),
            ));
        }
    }
    if let Some(v) = query::last(&pairs, "action") {
        let ok = (1..=64).contains(&v.len())
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
        if !ok {
            return Err(bad(
                "action",
                "The query parameter `action` must be: an action name such as kms.secrets.wrap",
            ));
        }
        q.action = Some(v.to_string());
    }
    if let Some(v) = query::last(&pairs, "keyId") {
        let id = KeyId::parse(v).map_err(|_| {
            bad(
                "keyId",
                "The query parameter `keyId` must be: a key id (a UUID)",
            )
        })?;
        q.key_id = Some(id.to_string());
    }
    if let Some(v) = query::last(&pairs, "outcome") {
        if !matches!(v, "attempt" | "success" | "failure") {
            return Err(bad(
                "outcome",
                "The query parameter `outcome` must be: attempt, success or failure",
            ));
        }
        q.outcome = Some(v.to_string());
    }
    if let Some(v) = query::last(&pairs, "since") {
        q.since = Some(time(v, "since")?);
    }
    if let Some(v) = query::last(&pairs, "until") {
        q.until = Some(time(v, "until")?);
    }
    if let (Some(s), Some(u)) = (q.since, q.until) {
        if s > u {
            return Err(bad(
                "until",
                "The query parameter `until` must be: at or after `since`",
            ));
        }
    }
    if let Some(v) = query::last(&pairs, "limit") {
        q.limit = Some(int(v, "limit", 1, MAX_LIMIT)?);
    }
    if let Some(v) = query::last(&pairs, "offset") {
        q.offset = Some(int(v, "offset", 0, MAX_OFFSET)?);
    }
    Ok(q)
}

pub async fn list(
    State(st): State<AppState>,
    Auth(caller): Auth,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = parse(raw.as_deref())?;
    let entries = st.svc.read_audit(&caller, q).await.map_err(op(READ))?;
    let resources = entries
        .into_iter()
        .map(|e| {
            let r = e.row;
            AuditLogRecord {
                action: r.action,
                correlation_id: r.correlation_id,
                id: e.id,
                key_id: r.key_id,
                outcome: r.outcome,
                principal: r.principal,
                reason: r.reason,
                request_id: r.request_id,
                source: r.source,
                time: r.time,
            }
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &AuditRecordCollection::new(AUDIT_TYPE, resources),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn param_of(raw: &str) -> String {
        parse(Some(raw)).unwrap_err().err.target.unwrap().name
    }

    #[test]
    fn filters_are_checked_and_bounded() {
        let q = parse(None).unwrap();
        assert_eq!(
            (q.limit, q.offset, q.newest_first),
            (Some(50), Some(0), true)
        );
        let q = parse(Some(
            "action=kms.secrets.wrap&outcome=failure&since=2026-01-01T00:00:00Z&until=2026-01-02T00:00:00Z&limit=500&offset=10",
        ))
        .unwrap();
        assert_eq!(q.action.as_deref(), Some("kms.secrets.wrap"));
        assert_eq!(q.outcome.as_deref(), Some("failure"));
        assert_eq!((q.limit, q.offset), (Some(500), Some(10)));
        assert!(q.since.unwrap() < q.until.unwrap());
        assert_eq!(param_of("limit=0"), "limit");
        assert_eq!(param_of("limit=501"), "limit");
        assert_eq!(param_of("offset=-1"), "offset");
        assert_eq!(param_of("offset=100001"), "offset");
        assert_eq!(param_of("outcome=maybe"), "outcome");
        assert_eq!(param_of("keyId=nope"), "keyId");
        assert_eq!(param_of("since=yesterday"), "since");
        assert_eq!(
            param_of("since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z"),
            "until"
        );
        assert_eq!(param_of("action=a%20b"), "action");
        assert_eq!(param_of("instance=x"), "instance");
    }
}

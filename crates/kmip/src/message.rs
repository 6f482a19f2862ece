//! Request and response messages (KMIP 1.x): the request header and batch items read from a
//! decoded [`Ttlv`], and the response built from the results.

use crate::tags::{self, reason, status};
use crate::ttlv::{Ttlv, Value};

/// Protocol versions served, newest first (what Discover Versions answers).
pub const VERSIONS: [(i32, i32); 5] = [(1, 4), (1, 3), (1, 2), (1, 1), (1, 0)];

/// Most batch items in one request.
pub const MAX_BATCH: usize = 64;

/// One operation of a request.
#[derive(Debug)]
pub struct BatchItem<'a> {
    pub operation: u32,
    pub id: Option<&'a [u8]>,
    pub payload: Option<&'a Ttlv>,
}

/// A parsed request message (it borrows from the decoded item).
#[derive(Debug)]
pub struct Request<'a> {
    pub version: (i32, i32),
    /// Continue (true) or stop (false) after a failed item.
    pub continue_on_error: bool,
    pub items: Vec<BatchItem<'a>>,
}

/// Why a whole request was refused: answered with one failed batch item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageError {
    pub reason: u32,
    pub message: String,
    /// The version to answer in.
    pub version: (i32, i32),
}

fn invalid(message: &str, version: (i32, i32)) -> MessageError {
    MessageError {
        reason: reason::INVALID_MESSAGE,
        message: message.into(),
        version,
    }
}

fn version_of(v: &Ttlv) -> Option<(i32, i32)> {
    Some((
        v.child(tags::PROTOCOL_VERSION_MAJOR)?.as_int()?,
        v.child(tags::PROTOCOL_VERSION_MINOR)?.as_int()?,
    ))
}

/// Reads a request message. Unknown header fields are ignored (authentication is the TLS
/// client certificate); a version outside 1.0–1.4 is refused.
pub fn parse_request(msg: &Ttlv) -> Result<Request<'_>, MessageError> {
    let fallback = (1, 0);
    if msg.tag != tags::REQUEST_MESSAGE || !matches!(msg.value, Value::Structure(_)) {
        return Err(invalid("not a Request Message", fallback));
    }
    let header = msg
        .child(tags::REQUEST_HEADER)
        .ok_or_else(|| invalid("the Request Header is missing", fallback))?;
    let version = header
        .child(tags::PROTOCOL_VERSION)
        .and_then(version_of)
        .ok_or_else(|| invalid("the Protocol Version is missing or malformed", fallback))?;
    if !VERSIONS.contains(&version) {
        return Err(MessageError {
            reason: reason::OPERATION_NOT_SUPPORTED,
            message: format!(
                "protocol version {}.{} is not supported (1.0 to 1.4 are)",
                version.0, version.1
            ),
            version: (1, 4),
        });
    }
    let count = header
        .child(tags::BATCH_COUNT)
        .and_then(Ttlv::as_int)
        .ok_or_else(|| invalid("the Batch Count is missing", version))?;
    let continue_on_error = match header
        .child(tags::BATCH_ERROR_CONTINUATION_OPTION)
        .map(|o| o.as_enum())
    {
        None => false,
        Some(Some(tags::BATCH_CONTINUE)) => true,
        Some(Some(tags::BATCH_STOP)) => false,
        Some(Some(tags::BATCH_UNDO)) => {
            return Err(MessageError {
                reason: reason::FEATURE_NOT_SUPPORTED,
                message: "the Undo batch error continuation option is not supported".into(),
                version,
            })
        }
        Some(_) => return Err(invalid("bad Batch Error Continuation Option", version)),
    };
    let mut items = Vec::new();
    for b in msg.children_with(tags::BATCH_ITEM) {
        if items.len() == MAX_BATCH {
            return Err(MessageError {
                reason: reason::INVALID_MESSAGE,
                message: format!("at most {MAX_BATCH} batch items per request"),
                version,
            });
        }
        let operation = b
            .child(tags::OPERATION)
            .and_then(Ttlv::as_enum)
            .ok_or_else(|| invalid("a batch item has no Operation", version))?;
        let id =
            match b.child(tags::UNIQUE_BATCH_ITEM_ID) {
                None => None,
                Some(t) => Some(t.as_bytes().ok_or_else(|| {
                    invalid("a Unique Batch Item ID is not a byte string", version)
                })?),
            };
        let payload = b.child(tags::REQUEST_PAYLOAD);
        if payload.is_some_and(|p| !matches!(p.value, Value::Structure(_))) {
            return Err(invalid("a Request Payload is not a structure", version));
        }
        items.push(BatchItem {
            operation,
            id,
            payload,
        });
    }
    if items.is_empty() || usize::try_from(count).ok() != Some(items.len()) {
        return Err(invalid(
            "the Batch Count does not match the batch items",
            version,
        ));
    }
    Ok(Request {
        version,
        continue_on_error,
        items,
    })
}

/// The outcome of one batch item.
#[derive(Debug)]
pub struct ItemResult {
    pub operation: Option<u32>,
    pub id: Option<Vec<u8>>,
    pub outcome: Result<Vec<Ttlv>, (u32, String)>,
}

fn version_item(v: (i32, i32)) -> Ttlv {
    Ttlv::structure(
        tags::PROTOCOL_VERSION,
        vec![
            Ttlv::int(tags::PROTOCOL_VERSION_MAJOR, v.0),
            Ttlv::int(tags::PROTOCOL_VERSION_MINOR, v.1),
        ],
    )
}

/// Builds a response message.
pub fn response(version: (i32, i32), now: i64, results: Vec<ItemResult>) -> Ttlv {
    let mut body = vec![Ttlv::structure(
        tags::RESPONSE_HEADER,
        vec![
            version_item(version),
            Ttlv::datetime(tags::TIME_STAMP, now),
            Ttlv::int(tags::BATCH_COUNT, results.len() as i32),
        ],
    )];
    for r in results {
        let mut item = Vec::new();
        if let Some(op) = r.operation {
            item.push(Ttlv::enumeration(tags::OPERATION, op));
        }
        if let Some(id) = r.id {
            item.push(Ttlv::bytes(tags::UNIQUE_BATCH_ITEM_ID, id));
        }
        match r.outcome {
            Ok(payload) => {
                item.push(Ttlv::enumeration(tags::RESULT_STATUS, status::SUCCESS));
                item.push(Ttlv::structure(tags::RESPONSE_PAYLOAD, payload));
            }
            Err((why, message)) => {
                item.push(Ttlv::enumeration(
                    tags::RESULT_STATUS,
                    status::OPERATION_FAILED,
                ));
                item.push(Ttlv::enumeration(tags::RESULT_REASON, why));
                item.push(Ttlv::text(tags::RESULT_MESSAGE, message));
            }
        }
        body.push(Ttlv::structure(tags::BATCH_ITEM, item));
    }
    Ttlv::structure(tags::RESPONSE_MESSAGE, body)
}

/// The response to a request refused as a whole.
pub fn error_response(e: &MessageError, now: i64) -> Ttlv {
    response(
        e.version,
        now,
        vec![ItemResult {
            operation: None,
            id: None,
            outcome: Err((e.reason, e.message.clone())),
        }],
    )
}

/// A response version item, for Discover Versions.
pub fn protocol_version(v: (i32, i32)) -> Ttlv {
    version_item(v)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn request(version: (i32, i32), count: i32, items: Vec<Ttlv>) -> Ttlv {
        let mut body = vec![Ttlv::structure(
            tags::REQUEST_HEADER,
            vec![version_item(version), Ttlv::int(tags::BATCH_COUNT, count)],
        )];
        body.extend(items);
        Ttlv::structure(tags::REQUEST_MESSAGE, body)
    }

    fn item(op: u32) -> Ttlv {
        Ttlv::structure(
            tags::BATCH_ITEM,
            vec![
                Ttlv::enumeration(tags::OPERATION, op),
                Ttlv::structure(tags::REQUEST_PAYLOAD, vec![]),
            ],
        )
    }

    #[test]
    fn parses_a_batch() {
        let m = request((1, 2), 2, vec![item(tags::op::QUERY), item(tags::op::GET)]);
        let r = parse_request(&m).unwrap();
        assert_eq!(r.version, (1, 2));
        assert_eq!(r.items.len(), 2);
        assert_eq!(r.items[1].operation, tags::op::GET);
        assert!(!r.continue_on_error);
    }

    #[test]
    fn refuses_bad_messages() {
        let m = request((1, 2), 3, vec![item(tags::op::QUERY)]);
        assert_eq!(
            parse_request(&m).unwrap_err().reason,
            reason::INVALID_MESSAGE
        );
        let m = request((1, 2), 0, vec![]);
        assert_eq!(
            parse_request(&m).unwrap_err().reason,
            reason::INVALID_MESSAGE
        );
        let m = request((3, 0), 1, vec![item(tags::op::QUERY)]);
        assert_eq!(
            parse_request(&m).unwrap_err().reason,
            reason::OPERATION_NOT_SUPPORTED
        );
        let many = (0..MAX_BATCH + 1).map(|_| item(tags::op::QUERY)).collect();
        let m = request((1, 2), MAX_BATCH as i32 + 1, many);
        assert_eq!(
            parse_request(&m).unwrap_err().reason,
            reason::INVALID_MESSAGE
        );
        let not_req = Ttlv::structure(tags::RESPONSE_MESSAGE, vec![]);
        assert!(parse_request(&not_req).is_err());
        assert!(parse_request(&Ttlv::int(tags::REQUEST_MESSAGE, 1)).is_err());
    }
}

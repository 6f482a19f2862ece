//! Query strings, parsed once and bounded: at most [`MAX_PAIRS`] `name=value` pairs (a name
//! repeated counts each time), read lazily so a longer query is refused after that many pairs
//! without decoding the rest. The list-valued parameters of `GET /keys` have their own caps in
//! `keyward_service::listing`.

use keyward_service::ServiceError;

use crate::error::ApiError;

/// Most `name=value` pairs in one query string (the IBM SDKs send at most eight).
pub const MAX_PAIRS: usize = 32;

/// The decoded (name, value) pairs of a query string; 400 `INVALID_QUERY_PARAM_ERR`, naming
/// the first pair past the cap, when there are more than [`MAX_PAIRS`].
pub fn pairs(raw: Option<&str>, what: &'static str) -> Result<Vec<(String, String)>, ApiError> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
        if out.len() == MAX_PAIRS {
            return Err(ApiError::new(
                ServiceError::query(
                    &k,
                    format!("The query string must have at most {MAX_PAIRS} parameters"),
                ),
                what,
            ));
        }
        out.push((k.into_owned(), v.into_owned()));
    }
    Ok(out)
}

/// The value of the last `name` in `pairs` (a repeated scalar parameter: the last one wins).
pub fn last<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A boolean parameter: the last `name` must be `true` or `false` (an empty value, like an
/// absent one, is false); anything else is 400 `INVALID_QUERY_PARAM_ERR` naming it.
pub fn flag(pairs: &[(String, String)], name: &str, what: &'static str) -> Result<bool, ApiError> {
    match last(pairs, name) {
        None | Some("false") | Some("") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(ApiError::new(
            ServiceError::query(
                name,
                format!("The query parameter `{name}` must be: true or false"),
            ),
            what,
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn pairs_are_capped_and_decoded() {
        let at_cap = vec!["state=1"; MAX_PAIRS].join("&");
        assert_eq!(pairs(Some(&at_cap), "x").unwrap().len(), MAX_PAIRS);
        let past = format!("{at_cap}&sort=id");
        let e = pairs(Some(&past), "x").unwrap_err();
        assert_eq!(e.err.code, keyward_service::ErrorCode::InvalidQueryParam);
        assert_eq!(e.err.target.unwrap().name, "sort");
        let p = pairs(Some("search=a%20b+c&x"), "x").unwrap();
        assert_eq!(p[0], ("search".into(), "a b c".into()));
        assert_eq!(p[1], ("x".into(), String::new()));
        assert_eq!(last(&p, "search"), Some("a b c"));
        assert!(pairs(None, "x").unwrap().is_empty());
        let p = pairs(Some("force=false&force=true&x=&y=1"), "x").unwrap();
        assert!(flag(&p, "force", "x").unwrap());
        assert!(!flag(&p, "x", "x").unwrap());
        assert!(!flag(&p, "absent", "x").unwrap());
        let e = flag(&p, "y", "x").unwrap_err();
        assert_eq!(e.err.target.unwrap().name, "y");
    }
}

//! `GET /keys` with `search` and `filter`: the store answers plain listings; a search or a
//! filter runs over the instance's candidate keys in memory (at most 5,000, else
//! `KEY_SEARCH_TOO_BROAD`, as Key Protect does).

use keyward_domain::{parse_time, Action, KeyId, KeyState};
use keyward_store::{KeyQuery, KeyRow};

use crate::keys::{effective_state, KeyInfo};
use crate::{Caller, ErrorCode, KeyService, ServiceError, ServiceResult};

pub const SEARCH_SPACE: i64 = 5_000;

/// A parsed `search` parameter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Search {
    pub query: String,
    pub not: bool,
    pub exact: bool,
    /// `name`, `alias`, or both when empty.
    pub scopes: Vec<String>,
}

impl Search {
    pub fn parse(raw: &str) -> Self {
        let mut s = Search::default();
        let mut rest = raw.strip_suffix(',').unwrap_or(raw);
        loop {
            if let Some(r) = rest.strip_prefix("not:") {
                s.not = true;
                rest = r;
            } else if let Some(r) = rest.strip_prefix("exact:") {
                s.exact = true;
                rest = r;
            } else if let Some(r) = rest.strip_prefix("alias:") {
                s.scopes.push("alias".into());
                rest = r;
            } else if let Some(r) = rest.strip_prefix("name:") {
                s.scopes.push("name".into());
                rest = r;
            } else if let Some(r) = rest.strip_prefix("escape:") {
                rest = r;
                break;
            } else {
                break;
            }
        }
        s.query = rest.to_string();
        s
    }

    fn hit(&self, text: &str) -> bool {
        if self.exact {
            text == self.query
        } else {
            text.to_lowercase().contains(&self.query.to_lowercase())
        }
    }

    fn matches(&self, row: &KeyRow, aliases: &[String]) -> bool {
        let scoped = |s: &str| self.scopes.is_empty() || self.scopes.iter().any(|x| x == s);
        let by_id = KeyId::parse(&self.query).is_ok_and(|k| k == row.id);
        let found = by_id
            || (scoped("name") && self.hit(&row.name))
            || (scoped("alias") && aliases.iter().any(|a| self.hit(a)));
        found != self.not
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Lt,
    Lte,
    Gt,
    Gte,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum FilterValue {
    None,
    Int(Vec<i64>),
    Bool(bool),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterTerm {
    pub prop: String,
    op: Op,
    value: FilterValue,
}

fn filter_err(msg: &str) -> ServiceError {
    ServiceError::query(
        "filter",
        format!("The query parameter `filter` is invalid: {msg}"),
    )
}

const DATE_PROPS: [&str; 5] = [
    "creationDate",
    "deletionDate",
    "expirationDate",
    "lastRotateDate",
    "lastUpdateDate",
];

/// Parses `prop=value prop=op:value ...` (dates in double quotes, `none` = absent).
pub fn parse_filter(raw: &str) -> ServiceResult<Vec<FilterTerm>> {
    let mut terms = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut parts = Vec::new();
    for c in raw.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ' ' if !quoted => {
                if !cur.is_empty() {
                    parts.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(c),
        }
    }
    if quoted {
        return Err(filter_err("unbalanced quotes"));
    }
    if !cur.is_empty() {
        parts.push(cur);
    }
    for p in parts {
        let (prop, rest) = p
            .split_once('=')
            .ok_or_else(|| filter_err("expected prop=value"))?;
        let (op, val) = match rest.split_once(':') {
            Some((o, v)) if !rest.starts_with('"') => (
                match o {
                    "lt" => Op::Lt,
                    "lte" => Op::Lte,
                    "gt" => Op::Gt,
                    "gte" => Op::Gte,
                    _ => return Err(filter_err("operators are lt, lte, gt, gte")),
                },
                v,
            ),
            _ => (Op::Eq, rest),
        };
        let value = if val == "none" {
            FilterValue::None
        } else if DATE_PROPS.contains(&prop) {
            let d = val
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .and_then(parse_time)
                .ok_or_else(|| filter_err("dates must be quoted RFC 3339"))?;
            FilterValue::Int(vec![d])
        } else if prop == "state" {
            let states = val
                .split(',')
                .map(|s| {
                    s.parse::<i64>()
                        .ok()
                        .filter(|n| KeyState::from_code(*n).is_some())
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| filter_err("state must be 0, 1, 2, 3 or 5"))?;
            FilterValue::Int(states)
        } else if prop == "extractable" {
            FilterValue::Bool(match val {
                "true" => true,
                "false" => false,
                _ => return Err(filter_err("extractable must be true or false")),
            })
        } else {
            return Err(filter_err("unknown property"));
        };
        if op != Op::Eq && !matches!(value, FilterValue::Int(ref v) if v.len() == 1) {
            return Err(filter_err("lt/lte/gt/gte need a single date or number"));
        }
        terms.push(FilterTerm {
            prop: prop.to_string(),
            op,
            value,
        });
    }
    Ok(terms)
}

fn prop_value(row: &KeyRow, prop: &str, now: i64) -> Option<i64> {
    match prop {
        "creationDate" => Some(row.created_at),
        "deletionDate" => row.deletion_date,
        "expirationDate" => row.expiration_date,
        "lastRotateDate" => row.last_rotate_date,
        "lastUpdateDate" => Some(row.updated_at),
        "state" => Some(effective_state(row, now).code()),
        "extractable" => Some(i64::from(row.extractable)),
        _ => None,
    }
}

fn term_matches(t: &FilterTerm, row: &KeyRow, now: i64) -> bool {
    let v = prop_value(row, &t.prop, now);
    match (&t.value, v) {
        (FilterValue::None, v) => v.is_none(),
        (FilterValue::Bool(b), Some(v)) => (v != 0) == *b,
        (FilterValue::Int(list), Some(v)) => match (t.op, list.as_slice()) {
            (Op::Eq, l) => l.contains(&v),
            (Op::Lt, [x]) => v < *x,
            (Op::Lte, [x]) => v <= *x,
            (Op::Gt, [x]) => v > *x,
            (Op::Gte, [x]) => v >= *x,
            _ => false,
        },
        _ => false,
    }
}

/// What a listing asked for.
#[derive(Debug, Clone, Default)]
pub struct ListRequest {
    pub query: KeyQuery,
    pub search: Option<Search>,
    pub filter: Vec<FilterTerm>,
}

impl KeyService {
    /// `GET /keys` with everything: returns the page.
    pub async fn list_keys_full(
        &self,
        caller: &Caller,
        req: &ListRequest,
    ) -> ServiceResult<Vec<KeyInfo>> {
        if req.search.is_none() && req.filter.is_empty() {
            return self.list_keys(caller, &req.query).await;
        }
        caller.require(Action::ListKeys)?;
        let now = self.now();
        let mut wide = req.query.clone();
        wide.now = now;
        wide.limit = SEARCH_SPACE + 1;
        wide.offset = 0;
        if req.filter.iter().any(|t| t.prop == "state") && wide.states.is_empty() {
            wide.states = vec![
                KeyState::PreActivation,
                KeyState::Active,
                KeyState::Suspended,
                KeyState::Deactivated,
                KeyState::Destroyed,
            ];
        }
        let rows = self.store.list_keys(caller.instance, &wide).await?;
        if rows.len() as i64 > SEARCH_SPACE {
            return Err(ServiceError::new(
                ErrorCode::KeySearchTooBroad,
                "The search would cover more than 5000 keys: narrow it with state, extractable or a key ring",
            ));
        }
        let mut out = Vec::new();
        for row in rows {
            if !req.filter.iter().all(|t| term_matches(t, &row, now)) {
                continue;
            }
            if let Some(s) = &req.search {
                let aliases = if s.scopes.is_empty() || s.scopes.iter().any(|x| x == "alias") {
                    self.aliases(caller, row.id).await?
                } else {
                    Vec::new()
                };
                if !s.matches(&row, &aliases) {
                    continue;
                }
            }
            out.push(row);
        }
        let page = out
            .into_iter()
            .skip(usize::try_from(req.query.offset).unwrap_or(0))
            .take(usize::try_from(req.query.limit).unwrap_or(0));
        Ok(page.map(|r| self.list_info(r, now)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_prefixes() {
        let s = Search::parse("not:exact:alias:abc,");
        assert!(s.not && s.exact);
        assert_eq!(s.scopes, vec!["alias".to_string()]);
        assert_eq!(s.query, "abc");
        let e = Search::parse("escape:not:x");
        assert!(!e.not);
        assert_eq!(e.query, "not:x");
    }

    #[test]
    fn filter_grammar() -> ServiceResult<()> {
        let t = parse_filter(
            r#"creationDate=gt:"2020-01-01T00:00:00Z" expirationDate=none state=1,2 extractable=false"#,
        )?;
        assert_eq!(t.len(), 4);
        assert!(parse_filter("bogus=1").is_err());
        assert!(parse_filter("state=9").is_err());
        assert!(parse_filter(r#"creationDate="yesterday""#).is_err());
        assert!(parse_filter("state=gt:1,2").is_err());
        Ok(())
    }
}

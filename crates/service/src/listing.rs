//! `GET /keys` with `search` and `filter`, parsed here and answered by the store in SQL
//! (docs/design.md, "Listing at scale"). A `filter` is part of the query's WHERE clause. A
//! `search` looks through the keys the other parameters (`state`, `extractable`, the key ring)
//! select, at most 5,000 of them, else `KEY_SEARCH_TOO_BROAD`, as Key Protect does; that check
//! is a count the store reads from its per-instance counters.
//!
//! Bounds: every list-valued parameter is deduplicated and capped, and parsed in one pass:
//! `state` ≤ [`MAX_STATES`] distinct values, `sort` ≤ [`MAX_SORT_FIELDS`] distinct fields,
//! `filter` ≤ [`MAX_FILTER_TERMS`] distinct terms, `search` ≤ [`MAX_SEARCH_LEN`] bytes. A search
//! over aliases reads the aliases of every candidate in one store call, not one per key.

use keyward_domain::{parse_time, Action, KeyState};
use keyward_store::{FilterOp, FilterProp, KeyFilter, KeyQuery, KeySearch, KEY_SEARCH_SPACE};

use crate::keyrow::KeyInfo;
use crate::{Caller, ErrorCode, KeyService, ServiceError, ServiceResult};

/// The most keys a `search` looks through.
pub const SEARCH_SPACE: i64 = KEY_SEARCH_SPACE;
/// Distinct values of `state` (there are five states).
pub const MAX_STATES: usize = 5;
/// Distinct fields of `sort` (there are nine sortable fields).
pub const MAX_SORT_FIELDS: usize = 9;
/// Distinct terms of `filter` (seven properties, each with a lower and an upper bound, fit).
pub const MAX_FILTER_TERMS: usize = 16;
/// Bytes of `search`, prefixes included (names and aliases are at most 90 characters).
pub const MAX_SEARCH_LEN: usize = 256;

/// A parsed `search` parameter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Search {
    pub query: String,
    pub not: bool,
    pub exact: bool,
    /// `name`, `alias`, or both when empty (each at most once).
    pub scopes: Vec<String>,
}

impl Search {
    /// Parses `[not:][exact:][alias:|name:]...[escape:]query[,]`; 400
    /// `INVALID_QUERY_PARAM_ERR` past [`MAX_SEARCH_LEN`] bytes.
    pub fn parse(raw: &str) -> ServiceResult<Self> {
        if raw.len() > MAX_SEARCH_LEN {
            return Err(ServiceError::query(
                "search",
                format!("The query parameter `search` must be: at most {MAX_SEARCH_LEN} bytes"),
            ));
        }
        let mut s = Search::default();
        let mut rest = raw.strip_suffix(',').unwrap_or(raw);
        let scope = |s: &mut Search, name: &str| {
            if !s.scopes.iter().any(|x| x == name) {
                s.scopes.push(name.to_string());
            }
        };
        loop {
            if let Some(r) = rest.strip_prefix("not:") {
                s.not = true;
                rest = r;
            } else if let Some(r) = rest.strip_prefix("exact:") {
                s.exact = true;
                rest = r;
            } else if let Some(r) = rest.strip_prefix("alias:") {
                scope(&mut s, "alias");
                rest = r;
            } else if let Some(r) = rest.strip_prefix("name:") {
                scope(&mut s, "name");
                rest = r;
            } else if let Some(r) = rest.strip_prefix("escape:") {
                rest = r;
                break;
            } else {
                break;
            }
        }
        s.query = rest.to_string();
        Ok(s)
    }

    fn scoped(&self, scope: &str) -> bool {
        self.scopes.is_empty() || self.scopes.iter().any(|x| x == scope)
    }

    /// The store's form of this search.
    pub fn to_key_search(&self) -> KeySearch {
        KeySearch::new(
            &self.query,
            self.not,
            self.exact,
            self.scoped("name"),
            self.scoped("alias"),
        )
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

const DATE_PROPS: [&str; 6] = [
    "creationDate",
    "deletionDate",
    "expirationDate",
    "lastRotateDate",
    "lastUpdateDate",
    // A Keyward extension (docs/design.md, "Key usage").
    "lastUsed",
];

/// Parses `prop=value prop=op:value ...` (dates in double quotes, `none` = absent) into at
/// most [`MAX_FILTER_TERMS`] distinct terms (a repeated term counts once).
pub fn parse_filter(raw: &str) -> ServiceResult<Vec<FilterTerm>> {
    let mut terms: Vec<FilterTerm> = Vec::new();
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
            let mut states: Vec<i64> = Vec::with_capacity(MAX_STATES);
            for s in val.split(',') {
                let n = s
                    .parse::<i64>()
                    .ok()
                    .filter(|n| KeyState::from_code(*n).is_some())
                    .ok_or_else(|| filter_err("state must be 0, 1, 2, 3 or 5"))?;
                if !states.contains(&n) {
                    states.push(n);
                }
            }
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
        add_filter_term(
            &mut terms,
            FilterTerm {
                prop: prop.to_string(),
                op,
                value,
            },
        )?;
    }
    Ok(terms)
}

/// Adds `term` unless it is already there; 400 past [`MAX_FILTER_TERMS`] distinct terms.
pub fn add_filter_term(terms: &mut Vec<FilterTerm>, term: FilterTerm) -> ServiceResult<()> {
    if terms.contains(&term) {
        return Ok(());
    }
    if terms.len() == MAX_FILTER_TERMS {
        return Err(filter_err(&format!(
            "at most {MAX_FILTER_TERMS} distinct terms"
        )));
    }
    terms.push(term);
    Ok(())
}

impl FilterTerm {
    /// The store's form of this term.
    pub fn to_key_filter(&self) -> KeyFilter {
        let prop = match self.prop.as_str() {
            "creationDate" => FilterProp::CreationDate,
            "deletionDate" => FilterProp::DeletionDate,
            "expirationDate" => FilterProp::ExpirationDate,
            "lastRotateDate" => FilterProp::LastRotateDate,
            "lastUpdateDate" => FilterProp::LastUpdateDate,
            "state" => FilterProp::State,
            "lastUsed" => FilterProp::LastUsed,
            // The parser admits no other property.
            _ => FilterProp::Extractable,
        };
        let op = match self.op {
            Op::Eq => FilterOp::Eq,
            Op::Lt => FilterOp::Lt,
            Op::Lte => FilterOp::Lte,
            Op::Gt => FilterOp::Gt,
            Op::Gte => FilterOp::Gte,
        };
        let values = match &self.value {
            FilterValue::None => Vec::new(),
            FilterValue::Int(v) => v.clone(),
            FilterValue::Bool(b) => vec![i64::from(*b)],
        };
        KeyFilter { prop, op, values }
    }
}

/// What a listing asked for.
#[derive(Debug, Clone, Default)]
pub struct ListRequest {
    pub query: KeyQuery,
    pub search: Option<Search>,
    pub filter: Vec<FilterTerm>,
}

impl ListRequest {
    /// The store query: the filter and search included; with a `state` filter term and no
    /// `state` parameter every state is a candidate (the term then decides).
    fn store_query(&self, now: i64) -> KeyQuery {
        let mut q = self.query.clone();
        q.now = now;
        q.filter = self.filter.iter().map(FilterTerm::to_key_filter).collect();
        q.search = self.search.as_ref().map(Search::to_key_search);
        if self.filter.iter().any(|t| t.prop == "state") && q.states.is_empty() {
            q.states = vec![
                KeyState::PreActivation,
                KeyState::Active,
                KeyState::Suspended,
                KeyState::Deactivated,
                KeyState::Destroyed,
            ];
        }
        q
    }
}

impl KeyService {
    /// 400 `KEY_SEARCH_TOO_BROAD` when `q` searches more than [`SEARCH_SPACE`] keys: those its
    /// `state`, `extractable` and key ring select (a count from the store's counters).
    async fn check_search_space(&self, caller: &Caller, q: &KeyQuery) -> ServiceResult<()> {
        if q.search.is_none() {
            return Ok(());
        }
        let space = KeyQuery {
            filter: Vec::new(),
            search: None,
            ..q.clone()
        };
        if self.store.count_keys(caller.instance, &space).await? > SEARCH_SPACE {
            return Err(ServiceError::new(
                ErrorCode::KeySearchTooBroad,
                "The search would cover more than 5000 keys: narrow it with state, extractable or a key ring",
            ));
        }
        Ok(())
    }

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
        let q = req.store_query(now);
        self.check_search_space(caller, &q).await?;
        let rows = self.store.list_keys(caller.instance, &q).await?;
        Ok(rows.into_iter().map(|r| self.list_info(r, now)).collect())
    }

    /// `HEAD /keys` with everything: how many keys the listing selects (limit and offset
    /// aside).
    pub async fn count_keys_full(&self, caller: &Caller, req: &ListRequest) -> ServiceResult<i64> {
        caller.require(Action::HeadKeys)?;
        let q = req.store_query(self.now());
        self.check_search_space(caller, &q).await?;
        Ok(self.store.count_keys(caller.instance, &q).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_prefixes() -> ServiceResult<()> {
        let s = Search::parse("not:exact:alias:abc,")?;
        assert!(s.not && s.exact);
        assert_eq!(s.scopes, vec!["alias".to_string()]);
        assert_eq!(s.query, "abc");
        let e = Search::parse("escape:not:x")?;
        assert!(!e.not);
        assert_eq!(e.query, "not:x");
        let d = Search::parse(&"alias:".repeat(40))?;
        assert_eq!(
            d.scopes,
            vec!["alias".to_string()],
            "scopes are deduplicated"
        );
        assert!(Search::parse(&"a".repeat(MAX_SEARCH_LEN)).is_ok());
        assert!(Search::parse(&"a".repeat(MAX_SEARCH_LEN + 1)).is_err());
        Ok(())
    }

    #[test]
    fn filter_terms_are_deduplicated_and_capped() -> ServiceResult<()> {
        let t = parse_filter(&"state=1,1,2,1 ".repeat(500))?;
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].value, FilterValue::Int(vec![1, 2]));
        let terms = |n: usize| {
            (0..n)
                .map(|i| format!(r#"creationDate=gt:"20{:02}-01-01T00:00:00Z""#, i))
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(
            parse_filter(&terms(MAX_FILTER_TERMS))?.len(),
            MAX_FILTER_TERMS
        );
        assert!(parse_filter(&terms(MAX_FILTER_TERMS + 1)).is_err());
        Ok(())
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

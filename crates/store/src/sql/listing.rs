//! `GET /keys` at scale: the WHERE clause of a key query (the state rule written so that an
//! index on `state` serves it), its `filter` terms in SQL, counts read from `key_counts`, and a
//! `search` over the bounded set of candidate keys (docs/design.md, "Listing at scale").
//!
//! Every value is bound: `$1` is the instance, `$2` "now", then one placeholder per value,
//! numbered as it is written. Only fixed SQL fragments are concatenated.

use std::collections::HashMap;
use std::fmt::Write;

use keyward_domain::{InstanceId, KeyId};

use super::keys::{Bind, EFFECTIVE_STATE};
use super::*;
use crate::{FilterOp, FilterProp, KeyQuery, KeyRow, SortField, StoreResult, KEY_SEARCH_SPACE};

/// Past this many rows (offset + limit) a listing is one plain query: its segments would each
/// hold that many rows.
pub(crate) const SEGMENTED_UP_TO: i64 = 20_000;

/// A WHERE clause being written: its text and the values of `$3`, `$4`, ….
#[derive(Default)]
pub(crate) struct Clause {
    pub(crate) sql: String,
    pub(crate) binds: Vec<Bind>,
}

impl Clause {
    /// Binds `b` and writes its placeholder.
    fn value(&mut self, b: Bind) {
        self.binds.push(b);
        let _ = write!(self.sql, "${}", self.binds.len() + 2);
    }

    /// ` AND <effective state> IN (codes)`, written so that it needs no expression index: the
    /// effective state differs from the stored one only for an Active key past its expiration
    /// date, which shows as Deactivated (3). Codes are deduplicated (the first mention binds).
    pub(crate) fn state_in(&mut self, codes: &[i64]) {
        let mut seen: Vec<i64> = Vec::with_capacity(codes.len());
        for c in codes {
            if !seen.contains(c) {
                seen.push(*c);
            }
        }
        if seen.is_empty() {
            self.sql.push_str(" AND 1 = 0");
            return;
        }
        let (active, deactivated) = (seen.contains(&1), seen.contains(&3));
        self.sql.push_str(if deactivated && !active {
            " AND (state IN ("
        } else {
            " AND state IN ("
        });
        for (i, c) in seen.iter().enumerate() {
            if i > 0 {
                self.sql.push(',');
            }
            self.value(Bind::Int(*c));
        }
        self.sql.push(')');
        if active && !deactivated {
            // Active, but not once expired.
            self.sql.push_str(
                " AND NOT (state = 1 AND expiration_date IS NOT NULL AND expiration_date <= $2)",
            );
        } else if deactivated && !active {
            // Deactivated, and Active keys that expired.
            self.sql.push_str(
                " OR (state = 1 AND expiration_date IS NOT NULL AND expiration_date <= $2))",
            );
        }
    }

    /// ` AND <term>` for a `lastUsed` term: a key never used counts as used before every
    /// date (`key_usage`'s `any` row, by primary key).
    fn last_used(&mut self, t: &crate::KeyFilter) {
        const USED: &str =
            "EXISTS (SELECT 1 FROM key_usage u WHERE u.key_id = keys.id AND u.op = 'any'";
        let [v] = t.values.as_slice() else {
            if t.values.is_empty() {
                let _ = write!(self.sql, " AND NOT {USED})");
            } else {
                self.sql.push_str(" AND 1 = 0");
            }
            return;
        };
        let (not, op) = match t.op {
            FilterOp::Eq => ("", " = "),
            // Not used at or after v (never used included).
            FilterOp::Lt => ("NOT ", " >= "),
            FilterOp::Lte => ("NOT ", " > "),
            FilterOp::Gt => ("", " > "),
            FilterOp::Gte => ("", " >= "),
        };
        let _ = write!(self.sql, " AND {not}{USED} AND u.last_at{op}");
        self.value(Bind::Int(*v));
        self.sql.push(')');
    }

    /// ` AND <term>` for each `filter` term.
    pub(crate) fn filter(&mut self, q: &KeyQuery) {
        for t in &q.filter {
            let col = match t.prop {
                FilterProp::CreationDate => "created_at",
                FilterProp::DeletionDate => "deletion_date",
                FilterProp::ExpirationDate => "expiration_date",
                FilterProp::LastRotateDate => "last_rotate_date",
                FilterProp::LastUpdateDate => "updated_at",
                FilterProp::Extractable => "extractable",
                FilterProp::LastUsed => {
                    self.last_used(t);
                    continue;
                }
                FilterProp::State => {
                    if t.op == FilterOp::Eq {
                        // `state=none`: every key has a state.
                        self.state_in(&t.values);
                        continue;
                    }
                    EFFECTIVE_STATE
                }
            };
            if t.values.is_empty() {
                // `none`: the property is absent (never, for state, extractable and the
                // creation and update dates, which every key has).
                let _ = write!(self.sql, " AND {col} IS NULL");
                continue;
            }
            let op = match t.op {
                FilterOp::Eq if t.values.len() == 1 => " = ",
                FilterOp::Eq => {
                    let _ = write!(self.sql, " AND {col} IN (");
                    for (i, v) in t.values.iter().enumerate() {
                        if i > 0 {
                            self.sql.push(',');
                        }
                        self.value(Bind::Int(*v));
                    }
                    self.sql.push(')');
                    continue;
                }
                FilterOp::Lt => " < ",
                FilterOp::Lte => " <= ",
                FilterOp::Gt => " > ",
                FilterOp::Gte => " >= ",
            };
            if let [v] = t.values.as_slice() {
                let _ = write!(self.sql, " AND {col}{op}");
                self.value(Bind::Int(*v));
            } else {
                // A comparison takes one value (the service's parser says so); anything else
                // matches nothing, as in memory.
                self.sql.push_str(" AND 1 = 0");
            }
        }
    }
}

/// One part of a segmented listing (see [`segments`]).
pub(crate) struct Part {
    /// Parts are read in rank order; parts of equal rank merge by the query's order.
    pub(crate) rank: usize,
    /// The extra WHERE fragment (fixed SQL; `$2` is "now").
    pub(crate) cond: String,
    /// The first sort field is constant in this part, which then orders by the rest alone
    /// (PostgreSQL does not drop `ORDER BY f` under `f IS NULL`, nor can an index serve the
    /// state's CASE).
    pub(crate) constant: bool,
    /// Few keys fall in this part as a rule (Active keys past their expiration date, keys in a
    /// state other than Active): the part is read through its condition's index and sorted,
    /// not by walking the sort field's index over every key (SQLite, which keeps no statistics,
    /// would otherwise pick the index that spares it the sort).
    pub(crate) small: bool,
}

/// The parts a listing falls into, first part first, as extra WHERE fragments, when one query
/// in index order would not serve it:
/// - the first sort field is one an index cannot order by together with the `id` tie-breaker
///   (`ORDER BY f DESC, id ASC` on an index `(f, id)`): one part per value of a field with few
///   values (the effective state, with expired Active keys a part of their own beside
///   Deactivated ones; extractable; imported), and values and NULL apart for a nullable date
///   (NULL sorts first on SQLite, last on PostgreSQL). Within a part, an index yields the rows
///   in order.
/// - the states asked for leave out Active (the bulk of an instance): one part per state, of
///   equal rank, so each is read from the state index instead of walking every key in sort
///   order looking for the few that match.
///
/// `None`: one query (ordered by the id, or the creation or update date, over Active keys).
pub(crate) fn segments(q: &KeyQuery, nulls_first: bool) -> Option<Vec<Part>> {
    const EXPIRED: &str = "state = 1 AND expiration_date IS NOT NULL AND expiration_date <= $2";
    // `+state`: the state index must not serve the expired part (it would walk every Active
    // key); the expiration date's index does.
    const EXPIRED_PART: &str =
        " AND +state = 1 AND expiration_date IS NOT NULL AND expiration_date <= $2";
    let first = q.sort.first().copied();
    let codes = state_codes(q);
    let led_by = |f: SortField| first.is_none_or(|(g, _)| g == f);
    if !codes.contains(&1)
        && (led_by(SortField::Id)
            || led_by(SortField::CreationDate)
            || led_by(SortField::LastUpdateDate))
    {
        let by_id = led_by(SortField::Id);
        let mut parts = Vec::new();
        for code in [0i64, 2, 3, 5] {
            if codes.contains(&code) {
                // Fixed fragments: the code is one of four constants, not a value.
                parts.push(Part {
                    rank: 0,
                    cond: format!(" AND state = {code}"),
                    constant: false,
                    // In id order the state index yields a state's keys in order already.
                    small: !by_id,
                });
            }
        }
        if codes.contains(&3) {
            parts.push(Part {
                rank: 0,
                cond: EXPIRED_PART.to_string(),
                constant: false,
                small: true,
            });
        }
        return Some(parts);
    }
    let (field, desc) = first?;
    let ordered = |mut v: Vec<(i64, Vec<String>)>| -> Vec<Part> {
        if desc {
            v.reverse();
        }
        v.into_iter()
            .enumerate()
            .flat_map(|(rank, (_, conds))| {
                conds.into_iter().map(move |c| Part {
                    rank,
                    constant: !c.ends_with("IS NOT NULL"),
                    small: c == EXPIRED_PART,
                    cond: c,
                })
            })
            .collect()
    };
    match field {
        SortField::State => {
            let mut parts = Vec::new();
            for code in [0i64, 1, 2, 3, 5] {
                if !codes.contains(&code) {
                    continue;
                }
                // Fixed fragments: the code is one of five constants, not a value.
                let conds = match code {
                    1 => vec![format!(" AND state = 1 AND NOT ({EXPIRED})")],
                    3 => vec![" AND state = 3".to_string(), EXPIRED_PART.to_string()],
                    c => vec![format!(" AND state = {c}")],
                };
                parts.push((code, conds));
            }
            Some(ordered(parts))
        }
        SortField::Extractable | SortField::Imported => {
            let col = if field == SortField::Extractable {
                "extractable"
            } else {
                "imported"
            };
            Some(ordered(vec![
                (0, vec![format!(" AND {col} = 0")]),
                (1, vec![format!(" AND {col} = 1")]),
            ]))
        }
        SortField::LastRotateDate | SortField::DeletionDate | SortField::ExpirationDate => {
            let col = match field {
                SortField::LastRotateDate => "last_rotate_date",
                SortField::DeletionDate => "deletion_date",
                _ => "expiration_date",
            };
            let null = (0, vec![format!(" AND {col} IS NULL")]);
            let set = (1, vec![format!(" AND {col} IS NOT NULL")]);
            // NULL is the smallest value on SQLite, the largest on PostgreSQL.
            Some(ordered(if nulls_first {
                vec![null, set]
            } else {
                vec![set, null]
            }))
        }
        SortField::Id | SortField::CreationDate | SortField::LastUpdateDate => None,
    }
}

/// `order` (an ORDER BY list of `expr ASC|DESC` terms) with each term behind SQLite's unary
/// `+`, which keeps the planner from serving the order by an index: for [`Part::small`].
pub(crate) fn unindexed_order(order: &str) -> String {
    let mut out = String::with_capacity(order.len() + 8);
    for (i, term) in order.split(", ").enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push('+');
        out.push_str(term);
    }
    out
}

/// The columns a query's ORDER BY reads (the effective state's inputs always), each once.
pub(crate) fn sort_columns(q: &KeyQuery) -> String {
    let mut cols = String::from("id, state, expiration_date");
    let mut seen: Vec<&str> = Vec::new();
    for (f, _) in &q.sort {
        let col = match f {
            SortField::Id | SortField::State | SortField::ExpirationDate => continue,
            SortField::Extractable => "extractable",
            SortField::Imported => "imported",
            SortField::CreationDate => "created_at",
            SortField::LastUpdateDate => "updated_at",
            SortField::LastRotateDate => "last_rotate_date",
            SortField::DeletionDate => "deletion_date",
        };
        if !seen.contains(&col) {
            seen.push(col);
            cols.push_str(", ");
            cols.push_str(col);
        }
    }
    cols
}

/// The state codes a query lists: its states, or every state but Destroyed.
pub(crate) fn state_codes(q: &KeyQuery) -> Vec<i64> {
    if q.states.is_empty() {
        vec![0, 1, 2, 3]
    } else {
        q.states.iter().map(|s| s.code()).collect()
    }
}

/// Binds `$1`, `$2` and then `binds` to `query`.
macro_rules! bind_all {
    ($query:expr, $instance:expr, $now:expr, $binds:expr) => {{
        let mut query = $query.bind($instance.to_string()).bind($now);
        for b in $binds {
            query = match b {
                Bind::Int(i) => query.bind(i),
                Bind::Text(t) => query.bind(t),
            };
        }
        query
    }};
}
pub(crate) use bind_all;

impl SqlStore {
    /// The count of a query without `filter` or `search`, from `key_counts`: the keys per
    /// stored state, corrected by the Active keys past their expiration date (an index range
    /// on `expiration_date`) when the query asks for Active and not Deactivated, or the reverse.
    pub(crate) async fn count_from_counters(
        &self,
        instance: InstanceId,
        q: &KeyQuery,
    ) -> StoreResult<i64> {
        let mut c = Clause::default();
        let codes = state_codes(q);
        let (active, deactivated) = (codes.contains(&1), codes.contains(&3));
        c.sql
            .push_str("SELECT CAST(COALESCE((SELECT SUM(n) FROM key_counts WHERE instance_id = $1 AND state IN (");
        let mut seen: Vec<i64> = Vec::new();
        for code in &codes {
            if seen.contains(code) {
                continue;
            }
            if !seen.is_empty() {
                c.sql.push(',');
            }
            seen.push(*code);
            c.value(Bind::Int(*code));
        }
        c.sql.push(')');
        let mut rest = String::new();
        let (mut ext, mut ring) = (None, None);
        if let Some(e) = q.extractable {
            c.sql.push_str(" AND extractable = ");
            c.value(Bind::Int(i64::from(e)));
            ext = Some(c.binds.len() + 2);
        }
        if let Some(r) = &q.key_ring_id {
            c.sql.push_str(" AND key_ring_id = ");
            c.value(Bind::Text(r.clone()));
            ring = Some(c.binds.len() + 2);
        }
        c.sql.push_str("), 0) AS BIGINT)");
        if active != deactivated {
            // The expired Active keys move from state 1 to state 3. `+state` keeps the planner
            // on the expiration_date range (the few keys that expire), not on every Active key.
            rest.push_str(if active { " - " } else { " + " });
            rest.push_str(
                "(SELECT COUNT(*) FROM keys WHERE instance_id = $1 AND expiration_date <= $2 AND +state = 1",
            );
            if let Some(n) = ext {
                let _ = write!(rest, " AND extractable = ${n}");
            }
            if let Some(n) = ring {
                let _ = write!(rest, " AND key_ring_id = ${n}");
            }
            rest.push(')');
        }
        c.sql.push_str(&rest);
        let query = sqlx::query_scalar::<_, i64>(&c.sql);
        bind_all!(query, instance, q.now, c.binds)
            .fetch_one(&self.read)
            .await
            .map_err(classify)
    }

    /// The ids of the keys a `search` query matches, in the query's order: the candidates (the
    /// query's other conditions, at most [`KEY_SEARCH_SPACE`] + 1 of them) are read as id and
    /// name only, their aliases in one call, and matched here, so the matching is exactly
    /// [`keyward_domain::KeySearch::matches`] (Unicode lowercasing included).
    pub(crate) async fn search_matches(
        &self,
        instance: InstanceId,
        q: &KeyQuery,
    ) -> StoreResult<Vec<KeyId>> {
        let Some(search) = &q.search else {
            return Ok(Vec::new());
        };
        let (filter, binds) = super::keys::key_filter(q);
        let sql = format!(
            "SELECT id, name FROM keys WHERE instance_id = $1{filter} ORDER BY {} LIMIT {}",
            super::keys::sort_sql(q),
            KEY_SEARCH_SPACE + 1
        );
        let rows = bind_all!(sqlx::query(&sql), instance, q.now, binds)
            .fetch_all(&self.read)
            .await
            .map_err(classify)?;
        let mut cands = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: String = get(r, "id")?;
            let name: String = get(r, "name")?;
            let id = KeyId::parse(&id)
                .map_err(|_| crate::StoreError::Corrupt("a key id is not a UUID".into()))?;
            cands.push((id, name));
        }
        let mut aliases: HashMap<KeyId, Vec<String>> = HashMap::new();
        if search.aliases && !cands.is_empty() {
            let ids: Vec<KeyId> = cands.iter().map(|(id, _)| *id).collect();
            for a in self.aliases_of_keys_impl(instance, &ids).await? {
                aliases.entry(a.key_id).or_default().push(a.alias);
            }
        }
        Ok(cands
            .into_iter()
            .filter(|(id, name)| {
                let of = aliases.get(id).map_or(&[][..], Vec::as_slice);
                search.matches(*id, name, of)
            })
            .map(|(id, _)| id)
            .collect())
    }

    /// The rows of `ids` (checked against their tags), in that order; a key deleted meanwhile
    /// is left out.
    pub(crate) async fn keys_by_ids(
        &self,
        instance: InstanceId,
        ids: &[KeyId],
    ) -> StoreResult<Vec<KeyRow>> {
        let mut by_id: HashMap<KeyId, KeyRow> = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(1000) {
            let mut sql = format!("SELECT {KEY_COLS} FROM keys WHERE instance_id = $1 AND id IN (");
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push(',');
                }
                let _ = write!(sql, "${}", i + 2);
            }
            sql.push(')');
            let mut query = sqlx::query(&sql)
                .persistent(false)
                .bind(instance.to_string());
            for id in chunk {
                query = query.bind(id.to_string());
            }
            for r in &query.fetch_all(&self.read).await.map_err(classify)? {
                let k = self.key_checked(r)?;
                by_id.insert(k.id, k);
            }
        }
        Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
    }
}

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
use crate::{FilterOp, FilterProp, KeyQuery, KeyRow, StoreResult, KEY_SEARCH_SPACE};

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
            // The expired Active keys move from state 1 to state 3.
            rest.push_str(if active { " - " } else { " + " });
            rest.push_str(
                "(SELECT COUNT(*) FROM keys WHERE instance_id = $1 AND expiration_date <= $2 AND state = 1",
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

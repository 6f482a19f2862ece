//! `GET /keys` in SQL against a plain in-memory reference, on SQLite and PostgreSQL: every
//! combination of states, extractable, key ring, sort, paging, `filter` and `search` returns
//! exactly the rows, in exactly the order, that filtering and sorting all the keys in memory
//! gives (docs/design.md, "Listing at scale"); counts (from `key_counts`) agree, also after
//! updates, ring moves, purges and an in-place upgrade from a database without migration 0007.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cmp::Ordering;

use keyward_domain::{InstanceId, KeyId, KeyState, VersionId};
use sqlx::Executor;

use super::tests::{drop_postgres, fresh_postgres, install_test_auth};
use super::*;
use crate::{
    FilterOp, FilterProp, InstanceRow, KeyFilter, KeyQuery, KeyRow, KeySearch, SortField, Store,
    VersionRow,
};

/// "Now" of every query: some expiration dates lie before it, some after.
const NOW: i64 = 1_700_050_000;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> i64 {
        i64::try_from(self.next() % n).unwrap()
    }
    fn pick<T: Clone>(&mut self, v: &[T]) -> T {
        v[usize::try_from(self.below(v.len() as u64)).unwrap()].clone()
    }
}

const STATES: [KeyState; 5] = [
    KeyState::PreActivation,
    KeyState::Active,
    KeyState::Suspended,
    KeyState::Deactivated,
    KeyState::Destroyed,
];
const NAMES: [&str; 6] = ["Orders", "orders-eu", "İstanbul", "billing", "ÄPFEL", "x"];

fn effective(k: &KeyRow, now: i64) -> i64 {
    if k.state == KeyState::Active && k.expiration_date.is_some_and(|e| e <= now) {
        3
    } else {
        k.state.code()
    }
}

fn new_key(rng: &mut Rng, instance: InstanceId, i: i64) -> (KeyRow, VersionRow) {
    let id = KeyId::new();
    let version = VersionId::new();
    // Few distinct times, so that sorts meet ties and the id decides.
    let created = 1_700_000_000 + rng.below(20) * 1000;
    let state = rng.pick(&STATES);
    let key = KeyRow {
        id,
        instance_id: instance,
        name: format!("{}-{i}", rng.pick(&NAMES)),
        description: None,
        tags: Vec::new(),
        state,
        extractable: rng.below(2) == 0,
        imported: rng.below(4) == 0,
        key_ring_id: rng
            .pick(&["default", "default", "ring-a", "ring-b"])
            .to_string(),
        expiration_date: (rng.below(3) == 0).then(|| 1_700_000_000 + rng.below(10) * 10_000),
        created_at: created,
        created_by: "iam-test".into(),
        updated_at: created + rng.below(3) * 1000,
        last_rotate_date: (rng.below(2) == 0).then(|| created + rng.below(4) * 500),
        deletion_date: (state == KeyState::Destroyed).then(|| created + rng.below(5) * 100),
        deleted_by: None,
        state_changed_at: created,
        current_version: version,
        attrs: Default::default(),
        row_version: 1,
        next_rotation_at: None,
    };
    let v = VersionRow {
        id: version,
        key_id: id,
        instance_id: instance,
        seq: 1,
        created_at: created,
        sealed: vec![1; 40],
        master_key_id: "test".into(),
    };
    (key, v)
}

/// The reference: what `q` selects from `keys` (with `aliases`), in order, before paging.
fn reference(
    keys: &[KeyRow],
    aliases: &[(KeyId, String)],
    q: &KeyQuery,
    nulls_first: bool,
) -> Vec<KeyId> {
    let states: Vec<i64> = if q.states.is_empty() {
        vec![0, 1, 2, 3]
    } else {
        q.states.iter().map(|s| s.code()).collect()
    };
    let mut out: Vec<&KeyRow> = keys
        .iter()
        .filter(|k| states.contains(&effective(k, q.now)))
        .filter(|k| q.extractable.is_none_or(|e| k.extractable == e))
        .filter(|k| q.key_ring_id.as_ref().is_none_or(|r| &k.key_ring_id == r))
        .filter(|k| {
            q.filter.iter().all(|t| {
                t.matches(match t.prop {
                    FilterProp::CreationDate => Some(k.created_at),
                    FilterProp::DeletionDate => k.deletion_date,
                    FilterProp::ExpirationDate => k.expiration_date,
                    FilterProp::LastRotateDate => k.last_rotate_date,
                    FilterProp::LastUpdateDate => Some(k.updated_at),
                    FilterProp::State => Some(effective(k, q.now)),
                    FilterProp::Extractable => Some(i64::from(k.extractable)),
                    // Not generated here (it reads key_usage, not the key row): the HTTP
                    // tests of key usage cover it (crates/keyward/tests/http/usage.rs).
                    FilterProp::LastUsed => None,
                })
            })
        })
        .collect();
    let value = |k: &KeyRow, f: SortField| -> Option<i64> {
        match f {
            SortField::Id => None,
            SortField::State => Some(effective(k, q.now)),
            SortField::Extractable => Some(i64::from(k.extractable)),
            SortField::Imported => Some(i64::from(k.imported)),
            SortField::CreationDate => Some(k.created_at),
            SortField::LastUpdateDate => Some(k.updated_at),
            SortField::LastRotateDate => k.last_rotate_date,
            SortField::DeletionDate => k.deletion_date,
            SortField::ExpirationDate => k.expiration_date,
        }
    };
    out.sort_by(|a, b| {
        let mut seen = Vec::new();
        for (f, desc) in &q.sort {
            if seen.contains(f) {
                continue;
            }
            seen.push(*f);
            let o = if *f == SortField::Id {
                a.id.to_string().cmp(&b.id.to_string())
            } else {
                match (value(a, *f), value(b, *f)) {
                    (Some(x), Some(y)) => x.cmp(&y),
                    (None, None) => Ordering::Equal,
                    (None, Some(_)) if nulls_first => Ordering::Less,
                    (None, Some(_)) => Ordering::Greater,
                    (Some(_), None) if nulls_first => Ordering::Greater,
                    (Some(_), None) => Ordering::Less,
                }
            };
            let o = if *desc { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        a.id.to_string().cmp(&b.id.to_string())
    });
    out.into_iter()
        .filter(|k| {
            q.search.as_ref().is_none_or(|s| {
                let of: Vec<String> = aliases
                    .iter()
                    .filter(|(id, _)| *id == k.id)
                    .map(|(_, a)| a.clone())
                    .collect();
                s.matches(k.id, &k.name, &of)
            })
        })
        .map(|k| k.id)
        .collect()
}

fn random_query(rng: &mut Rng, keys: &[KeyRow]) -> KeyQuery {
    let mut q = KeyQuery {
        now: NOW,
        limit: rng.pick(&[1, 7, 50, 5000]),
        offset: rng.pick(&[0, 0, 3, 40]),
        ..KeyQuery::default()
    };
    match rng.below(4) {
        0 => {}
        1 => q.states = vec![rng.pick(&STATES)],
        _ => {
            for _ in 0..1 + rng.below(4) {
                q.states.push(rng.pick(&STATES));
            }
        }
    }
    if rng.below(3) == 0 {
        q.extractable = Some(rng.below(2) == 0);
    }
    if rng.below(3) == 0 {
        q.key_ring_id = Some(rng.pick(&["default", "ring-a", "ring-b", "nope"]).into());
    }
    let fields = [
        SortField::Id,
        SortField::State,
        SortField::Extractable,
        SortField::Imported,
        SortField::CreationDate,
        SortField::LastUpdateDate,
        SortField::LastRotateDate,
        SortField::DeletionDate,
        SortField::ExpirationDate,
    ];
    for _ in 0..rng.below(4) {
        q.sort.push((rng.pick(&fields), rng.below(2) == 0));
    }
    for _ in 0..rng.below(3) {
        let props = [
            FilterProp::CreationDate,
            FilterProp::DeletionDate,
            FilterProp::ExpirationDate,
            FilterProp::LastRotateDate,
            FilterProp::LastUpdateDate,
            FilterProp::State,
            FilterProp::Extractable,
        ];
        let prop = rng.pick(&props);
        let op = rng.pick(&[
            FilterOp::Eq,
            FilterOp::Lt,
            FilterOp::Lte,
            FilterOp::Gt,
            FilterOp::Gte,
        ]);
        let values = match prop {
            _ if rng.below(6) == 0 => Vec::new(),
            FilterProp::State if op == FilterOp::Eq => (0..1 + rng.below(3))
                .map(|_| rng.pick(&STATES).code())
                .collect(),
            FilterProp::State => vec![rng.pick(&STATES).code()],
            FilterProp::Extractable => vec![rng.below(2)],
            // A time some key has, or one between.
            _ => vec![
                keys[usize::try_from(rng.below(keys.len() as u64)).unwrap()].created_at
                    + rng.pick(&[0, 500, 1000, 10_000]),
            ],
        };
        let op = if values.is_empty() { FilterOp::Eq } else { op };
        q.filter.push(KeyFilter { prop, op, values });
    }
    if rng.below(3) == 0 {
        let k = &keys[usize::try_from(rng.below(keys.len() as u64)).unwrap()];
        let query = match rng.below(6) {
            0 => "orders".to_string(),
            1 => "İSTANBUL".to_string(),
            2 => "äpfel".to_string(),
            3 => k.id.to_string(),
            4 => k.name.clone(),
            _ => "alias-".to_string(),
        };
        let (names, aliases) = match rng.below(3) {
            0 => (true, true),
            1 => (true, false),
            _ => (false, true),
        };
        q.search = Some(KeySearch::new(
            &query,
            rng.below(4) == 0,
            rng.below(3) == 0,
            names,
            aliases,
        ));
    }
    q
}

async fn fill(
    store: &SqlStore,
    n: i64,
    seed: u64,
) -> (InstanceId, Vec<KeyRow>, Vec<(KeyId, String)>) {
    install_test_auth(store);
    let instance = InstanceId::new();
    store
        .create_instance(&InstanceRow {
            id: instance,
            name: "listing".into(),
            created_at: 1_700_000_000,
        })
        .await
        .unwrap();
    // Another instance's keys must never show.
    let other = InstanceId::new();
    store
        .create_instance(&InstanceRow {
            id: other,
            name: "other".into(),
            created_at: 1_700_000_000,
        })
        .await
        .unwrap();
    let mut rng = Rng(seed);
    let mut keys = Vec::new();
    let mut aliases = Vec::new();
    for i in 0..n {
        let (k, v) = new_key(&mut rng, instance, i);
        store.insert_key(&k, &v, None).await.unwrap();
        if rng.below(4) == 0 {
            let alias = format!("alias-{i}");
            store
                .create_alias(&crate::AliasRow {
                    instance_id: instance,
                    alias: alias.clone(),
                    key_id: k.id,
                    created_at: 1_700_000_000,
                    created_by: "iam-test".into(),
                })
                .await
                .unwrap();
            aliases.push((k.id, alias));
        }
        keys.push(k);
    }
    for i in 0..10 {
        let (k, v) = new_key(&mut rng, other, i);
        store.insert_key(&k, &v, None).await.unwrap();
    }
    (instance, keys, aliases)
}

async fn check_queries(
    store: &SqlStore,
    instance: InstanceId,
    keys: &[KeyRow],
    aliases: &[(KeyId, String)],
    seed: u64,
    n: usize,
) {
    let nulls_first = store.backend() == "sqlite";
    let mut rng = Rng(seed);
    for _ in 0..n {
        let q = random_query(&mut rng, keys);
        let all = reference(keys, aliases, &q, nulls_first);
        let page: Vec<KeyId> = all
            .iter()
            .skip(usize::try_from(q.offset).unwrap())
            .take(usize::try_from(q.limit).unwrap())
            .copied()
            .collect();
        let got: Vec<KeyId> = store
            .list_keys(instance, &q)
            .await
            .unwrap()
            .iter()
            .map(|k| k.id)
            .collect();
        assert_eq!(got, page, "{q:?}");
        let count = store.count_keys(instance, &q).await.unwrap();
        assert_eq!(count, i64::try_from(all.len()).unwrap(), "{q:?}");
    }
}

async fn listing_matches_the_reference(store: &SqlStore) {
    let (instance, mut keys, aliases) = fill(store, 160, 0x5EED).await;
    check_queries(store, instance, &keys, &aliases, 1, 400).await;
    // Counters follow updates (state, ring, extractable) and purges.
    let mut rng = Rng(77);
    for k in keys.iter_mut().take(40) {
        let mut u = k.clone();
        u.state = rng.pick(&STATES);
        u.key_ring_id = rng.pick(&["default", "ring-a", "ring-c"]).into();
        u.extractable = !u.extractable;
        store.update_key(&u).await.unwrap();
        u.row_version += 1;
        *k = u;
    }
    for k in keys.drain(..10) {
        store.purge_key(&k).await.unwrap();
    }
    let aliases: Vec<(KeyId, String)> = aliases
        .into_iter()
        .filter(|(id, _)| keys.iter().any(|k| k.id == *id))
        .collect();
    check_queries(store, instance, &keys, &aliases, 2, 200).await;
}

#[tokio::test]
async fn listing_matches_the_reference_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("l.db").display());
    let store = SqlStore::connect(&DatabaseUrl::new(url)).await.unwrap();
    listing_matches_the_reference(&store).await;
}

#[tokio::test]
async fn listing_matches_the_reference_on_postgres() {
    let Some(url) = fresh_postgres(&[]).await else {
        eprintln!("KEYWARD_TEST_DATABASE_URL unset: PostgreSQL listing not run");
        return;
    };
    let store = SqlStore::connect(&DatabaseUrl::new(url.clone()))
        .await
        .unwrap();
    listing_matches_the_reference(&store).await;
    store.close().await;
    drop_postgres(&url).await;
}

/// A database written before migration 0007 (its indexes, triggers and counters absent) opens,
/// gets them in place, and counts right.
async fn upgrade_in_place(url: &str) {
    let store = SqlStore::connect(&DatabaseUrl::new(url)).await.unwrap();
    let (instance, keys, aliases) = fill(&store, 60, 0xAB).await;
    let postgres = store.backend() != "sqlite";
    let mut undo = vec![
        "DELETE FROM schema_migrations WHERE version = 7",
        "DROP TABLE key_counts",
    ];
    if postgres {
        undo.push("DROP TRIGGER key_counts_insert_delete ON keys");
        undo.push("DROP TRIGGER key_counts_update ON keys");
        undo.push("DROP FUNCTION key_counts_track()");
    } else {
        undo.push("DROP TRIGGER key_counts_insert");
        undo.push("DROP TRIGGER key_counts_delete");
        undo.push("DROP TRIGGER key_counts_update");
    }
    for idx in [
        "created",
        "updated",
        "rotated",
        "deleted",
        "expires",
        "state",
        "extractable",
        "imported",
        "ring",
    ] {
        store
            .write
            .execute(format!("DROP INDEX keys_list_{idx}").as_str())
            .await
            .unwrap();
    }
    for stmt in undo {
        store.write.execute(stmt).await.unwrap();
    }
    store.close().await;
    let store = SqlStore::connect(&DatabaseUrl::new(url)).await.unwrap();
    install_test_auth(&store);
    check_queries(&store, instance, &keys, &aliases, 3, 100).await;
    store.close().await;
}

#[tokio::test]
async fn a_database_without_0007_upgrades_in_place_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("u.db").display());
    upgrade_in_place(&url).await;
}

#[tokio::test]
async fn a_database_without_0007_upgrades_in_place_on_postgres() {
    let Some(url) = fresh_postgres(&[]).await else {
        eprintln!("KEYWARD_TEST_DATABASE_URL unset: PostgreSQL upgrade not run");
        return;
    };
    upgrade_in_place(&url).await;
    drop_postgres(&url).await;
}

//! `GET /keys` at scale: fills one instance of a scratch database with N keys, then times every
//! listing variant through the store's own `list_keys` / `count_keys` (the SQL a request runs,
//! rows parsed and checked against their tags) and prints a table (docs/design.md, "Listing at
//! scale"; numbers in BENCHMARKS.md).
//!
//! ```sh
//! cargo run --release -p keyward-store --example list_scale -- sqlite:///tmp/kw-list.db?mode=rwc 1000000
//! cargo run --release -p keyward-store --example list_scale -- postgres://postgres@127.0.0.1/kw_list 1000000
//! ```
//!
//! The database must be scratch: the instance `list-scale` is filled once (a rerun with the same
//! URL reuses it). Rows are written with multi-row INSERTs in large transactions, untagged, then
//! tagged through the store's own upgrade path (`Store::tag_untagged`), so every row read is
//! verified as in production. Finally it times single key inserts through `Store::insert_key`,
//! with the listing indexes and triggers of migration 0007, then (in a second run with
//! `--without-0007`, which drops them from the scratch database) without.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward_domain::{InstanceId, KeyId, KeyState, VersionId};
use keyward_store::{
    DatabaseUrl, FilterOp, FilterProp, InstanceRow, KeyFilter, KeyQuery, KeyRow, KeySearch,
    RowAuth, SortField, SqlStore, Store, VersionRow,
};
use sqlx::any::AnyPoolOptions;
use sqlx::Row;

/// The HMAC row authenticator, as the service installs it.
#[derive(Debug)]
struct Auth {
    key: keyward_crypto::rowauth::RowAuthKey,
    untagged: AtomicBool,
}

impl RowAuth for Auth {
    fn tag(&self, input: &[u8]) -> Vec<u8> {
        self.key.tag(input)
    }
    fn verify(&self, input: &[u8], tag: &[u8]) -> bool {
        self.key.verify(input, tag)
    }
    fn accept_untagged(&self) -> bool {
        self.untagged.load(Ordering::SeqCst)
    }
}

/// A small deterministic generator (xorshift64*), so two runs fill the same data.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const BASE: i64 = 1_600_000_000;
const WORDS: [&str; 8] = [
    "orders",
    "billing",
    "payroll",
    "archive",
    "backup",
    "ledger",
    "Äpfel",
    "İstanbul",
];
const COLS: &str = "id, instance_id, name, description, tags, state, extractable, imported, key_ring_id, expiration_date, created_at, created_by, updated_at, last_rotate_date, deletion_date, deleted_by, state_changed_at, current_version, attrs, row_version, next_rotation_at";
const NCOLS: usize = 21;
const PER_STATEMENT: usize = 1000;

fn ring_of(i: u64, r: u64) -> String {
    if i % 1000 == 0 {
        "ring-small".into()
    } else if r % 100 < 70 {
        "default".into()
    } else {
        format!("ring-{}", r % 30)
    }
}

async fn fill(url: &str, instance: InstanceId, n: u64) {
    let pool = AnyPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .unwrap();
    let sqlite = url.starts_with("sqlite");
    if sqlite {
        // Scratch data: a large page cache for the fill (random ids land all over eleven
        // b-trees) and no fsync per commit. The store's own connections keep their settings.
        for p in ["PRAGMA cache_size = -1000000", "PRAGMA synchronous = OFF"] {
            sqlx::query(p).execute(&pool).await.unwrap();
        }
    }
    // Scratch data: on PostgreSQL the listing indexes are built after the load (faster than
    // row by row), and triggers are off during it (the counters are rebuilt below).
    let indexes: Vec<&str> = include_str!("../migrations/postgres/0007_listing.sql")
        .split(';')
        .map(str::trim)
        .filter_map(|s| s.lines().find(|l| l.starts_with("CREATE INDEX")))
        .collect();
    if !sqlite {
        sqlx::query("CREATE INDEX IF NOT EXISTS keys_by_instance ON keys (instance_id, id)")
            .execute(&pool)
            .await
            .unwrap();
        for ix in &indexes {
            let name = ix.split_whitespace().nth(5).unwrap();
            sqlx::query(&format!("DROP INDEX IF EXISTS {name}"))
                .execute(&pool)
                .await
                .unwrap();
        }
        sqlx::query("SET session_replication_role = replica")
            .execute(&pool)
            .await
            .unwrap();
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let started = Instant::now();
    let mut i = 0u64;
    let now = BASE + i64::try_from(n).unwrap();
    while i < n {
        let mut tx = pool.begin().await.unwrap();
        for _ in 0..50 {
            if i >= n {
                break;
            }
            let rows = PER_STATEMENT.min(usize::try_from(n - i).unwrap());
            let mut sql = format!("INSERT INTO keys ({COLS}) VALUES ");
            for r in 0..rows {
                if r > 0 {
                    sql.push(',');
                }
                sql.push('(');
                for c in 0..NCOLS {
                    if c > 0 {
                        sql.push(',');
                    }
                    // SQLite looks each named parameter up in a list (quadratic in a
                    // statement of thousands); anonymous ones it just counts.
                    if sqlite {
                        sql.push('?');
                    } else {
                        sql.push_str(&format!("${}", r * NCOLS + c + 1));
                    }
                }
                sql.push(')');
            }
            let mut q = sqlx::query(&sql).persistent(false);
            let mut aliases = Vec::new();
            for _ in 0..rows {
                let r = rng.next();
                let id = KeyId::new();
                let state: i64 = match r % 100 {
                    0..=1 => 0,
                    2..=84 => 1,
                    85..=90 => 2,
                    91..=94 => 3,
                    _ => 5,
                };
                let created = BASE + i64::try_from(i).unwrap();
                let updated = created + i64::try_from(rng.below(1000)).unwrap();
                let rotated =
                    (rng.below(3) == 0).then(|| created + i64::try_from(rng.below(5000)).unwrap());
                let expires =
                    (rng.below(10) == 0).then(|| BASE + i64::try_from(rng.below(2 * n)).unwrap());
                let deleted = (state == 5).then_some(updated);
                let name = format!(
                    "key-{i:07}-{}",
                    WORDS[usize::try_from(rng.below(8)).unwrap()]
                );
                if rng.below(100) == 0 {
                    aliases.push((id, format!("alias-{i:07}")));
                }
                q = q
                    .bind(id.to_string())
                    .bind(instance.to_string())
                    .bind(name)
                    .bind(Option::<String>::None)
                    .bind("[]")
                    .bind(state)
                    .bind(i64::try_from(rng.below(2)).unwrap())
                    .bind(i64::from(rng.below(10) == 0))
                    .bind(ring_of(i, r >> 8))
                    .bind(expires)
                    .bind(created)
                    .bind("iam-bench")
                    .bind(updated)
                    .bind(rotated)
                    .bind(deleted)
                    .bind(deleted.map(|_| "iam-bench".to_string()))
                    .bind(updated)
                    .bind(VersionId::new().to_string())
                    .bind("{}")
                    .bind(1i64)
                    .bind(Option::<i64>::None);
                i += 1;
            }
            q.execute(&mut *tx).await.unwrap();
            for (key, alias) in aliases {
                sqlx::query("INSERT INTO key_aliases (instance_id, alias, key_id, created_at, created_by) VALUES ($1, $2, $3, $4, $5)")
                    .bind(instance.to_string())
                    .bind(alias)
                    .bind(key.to_string())
                    .bind(now)
                    .bind("iam-bench")
                    .execute(&mut *tx)
                    .await
                    .unwrap();
            }
        }
        tx.commit().await.unwrap();
        if i % 100_000 == 0 || i == n {
            println!("  filled {i} keys in {:.1?}", started.elapsed());
        }
    }
    if !sqlite {
        let t = Instant::now();
        for ix in &indexes {
            sqlx::query(ix).execute(&pool).await.unwrap();
        }
        sqlx::query("DROP INDEX IF EXISTS keys_by_instance")
            .execute(&pool)
            .await
            .unwrap();
        for stmt in [
            "DELETE FROM key_counts WHERE instance_id = $1",
            "INSERT INTO key_counts (instance_id, key_ring_id, state, extractable, slot, n)
                SELECT instance_id, key_ring_id, state, extractable, substr(id, 1, 1), COUNT(*)
                FROM keys WHERE instance_id = $1
                GROUP BY instance_id, key_ring_id, state, extractable, substr(id, 1, 1)",
        ] {
            sqlx::query(stmt)
                .bind(instance.to_string())
                .execute(&pool)
                .await
                .unwrap();
        }
        println!("  indexes and counters built in {:.1?}", t.elapsed());
    }
    pool.close().await;
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

struct Variant {
    name: String,
    q: KeyQuery,
    count: bool,
}

fn variants(now: i64) -> Vec<Variant> {
    let base = KeyQuery {
        now,
        ..KeyQuery::default()
    };
    let mut v = Vec::new();
    let mut add = |name: &str, count: bool, q: KeyQuery| {
        v.push(Variant {
            name: name.to_string(),
            q,
            count,
        })
    };
    add("default (limit 200)", false, base.clone());
    add(
        "limit 5000",
        false,
        KeyQuery {
            limit: 5000,
            ..base.clone()
        },
    );
    add(
        "offset 5000 limit 5000",
        false,
        KeyQuery {
            limit: 5000,
            offset: 5000,
            ..base.clone()
        },
    );
    add(
        "offset 9800 limit 200",
        false,
        KeyQuery {
            offset: 9800,
            ..base.clone()
        },
    );
    let fields = [
        ("id", SortField::Id),
        ("state", SortField::State),
        ("extractable", SortField::Extractable),
        ("imported", SortField::Imported),
        ("creationDate", SortField::CreationDate),
        ("lastUpdateDate", SortField::LastUpdateDate),
        ("lastRotateDate", SortField::LastRotateDate),
        ("deletionDate", SortField::DeletionDate),
        ("expirationDate", SortField::ExpirationDate),
    ];
    for (name, f) in fields {
        for desc in [false, true] {
            add(
                &format!("sort={}{name} offset 9800", if desc { "-" } else { "" }),
                false,
                KeyQuery {
                    offset: 9800,
                    sort: vec![(f, desc)],
                    ..base.clone()
                },
            );
        }
    }
    add(
        "sort=-creationDate,lastRotateDate limit 5000 offset 5000",
        false,
        KeyQuery {
            limit: 5000,
            offset: 5000,
            sort: vec![
                (SortField::CreationDate, true),
                (SortField::LastRotateDate, false),
            ],
            ..base.clone()
        },
    );
    for (name, states) in [
        ("state=1", vec![KeyState::Active]),
        ("state=3 (expired Active too)", vec![KeyState::Deactivated]),
        ("state=5", vec![KeyState::Destroyed]),
        ("state=0", vec![KeyState::PreActivation]),
        (
            "state=0,1,2,3,5",
            vec![
                KeyState::PreActivation,
                KeyState::Active,
                KeyState::Suspended,
                KeyState::Deactivated,
                KeyState::Destroyed,
            ],
        ),
    ] {
        for offset in [0, 9800] {
            add(
                &format!("{name} offset {offset}"),
                false,
                KeyQuery {
                    states: states.clone(),
                    offset,
                    ..base.clone()
                },
            );
        }
        add(
            &format!("count {name}"),
            true,
            KeyQuery {
                states: states.clone(),
                ..base.clone()
            },
        );
    }
    add(
        "extractable=true offset 9800",
        false,
        KeyQuery {
            extractable: Some(true),
            offset: 9800,
            ..base.clone()
        },
    );
    add(
        "count extractable=true",
        true,
        KeyQuery {
            extractable: Some(true),
            ..base.clone()
        },
    );
    for ring in ["ring-7", "ring-small"] {
        add(
            &format!("ring {ring} offset 200"),
            false,
            KeyQuery {
                key_ring_id: Some(ring.into()),
                offset: 200,
                ..base.clone()
            },
        );
        add(
            &format!("ring {ring} sort=-lastUpdateDate"),
            false,
            KeyQuery {
                key_ring_id: Some(ring.into()),
                sort: vec![(SortField::LastUpdateDate, true)],
                ..base.clone()
            },
        );
        add(
            &format!("count ring {ring}"),
            true,
            KeyQuery {
                key_ring_id: Some(ring.into()),
                ..base.clone()
            },
        );
    }
    add("count (default)", true, base.clone());
    let filter = |prop, op, values: Vec<i64>| KeyFilter { prop, op, values };
    let half = BASE + (now - BASE) / 2;
    for (name, f) in [
        (
            "filter creationDate=gt:<half>",
            vec![filter(FilterProp::CreationDate, FilterOp::Gt, vec![half])],
        ),
        (
            "filter lastRotateDate=none",
            vec![filter(FilterProp::LastRotateDate, FilterOp::Eq, vec![])],
        ),
        (
            "filter expirationDate=lt:<now> extractable=false",
            vec![
                filter(FilterProp::ExpirationDate, FilterOp::Lt, vec![now]),
                filter(FilterProp::Extractable, FilterOp::Eq, vec![0]),
            ],
        ),
        (
            "filter state=2",
            vec![filter(FilterProp::State, FilterOp::Eq, vec![2])],
        ),
    ] {
        add(
            &format!("{name} offset 9800"),
            false,
            KeyQuery {
                filter: f.clone(),
                offset: 9800,
                ..base.clone()
            },
        );
        add(
            &format!("count {name}"),
            true,
            KeyQuery {
                filter: f,
                ..base.clone()
            },
        );
    }
    for (name, s) in [
        (
            "search ring-small \"key-00\"",
            KeySearch::new("key-00", false, false, true, true),
        ),
        (
            "search ring-small \"İSTANBUL\"",
            KeySearch::new("İSTANBUL", false, false, true, true),
        ),
        (
            "search ring-small not:orders",
            KeySearch::new("orders", true, false, true, true),
        ),
        (
            "search ring-small alias:alias-",
            KeySearch::new("alias-", false, false, false, true),
        ),
        (
            "search ring-small exact:name",
            KeySearch::new("key-0001000-orders", false, true, true, false),
        ),
    ] {
        add(
            name,
            false,
            KeyQuery {
                key_ring_id: Some("ring-small".into()),
                search: Some(s),
                ..base.clone()
            },
        );
    }
    // The service's search-space check before a search (KEY_SEARCH_TOO_BROAD over 5000).
    add("search-space count (whole instance)", true, base.clone());
    v
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = args
        .first()
        .cloned()
        .unwrap_or_else(|| "sqlite:///tmp/kw-list-scale.db?mode=rwc".into());
    let n: u64 = args.get(1).map_or(1_000_000, |s| s.parse().unwrap());
    let without_0007 = args.iter().any(|a| a == "--without-0007");
    let runs: usize = 5;

    let store = SqlStore::connect(&DatabaseUrl::new(url.clone()))
        .await
        .unwrap();
    let auth = Arc::new(Auth {
        key: keyward_crypto::rowauth::RowAuthKey::from_secret(
            &keyward_crypto::SecretBytes::from_vec(vec![7; 32]),
        )
        .unwrap(),
        untagged: AtomicBool::new(true),
    });
    store.install_row_auth(auth.clone());
    let instance = match store
        .list_instances()
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.name == "list-scale")
    {
        Some(i) => i.id,
        None => {
            let id = InstanceId::new();
            store
                .create_instance(&InstanceRow {
                    id,
                    name: "list-scale".into(),
                    created_at: BASE,
                })
                .await
                .unwrap();
            println!("filling {n} keys into {}", DatabaseUrl::new(url.clone()));
            fill(&url, id, n).await;
            let started = Instant::now();
            while store.tag_untagged(50_000).await.unwrap() > 0 {}
            println!("  tagged in {:.1?}", started.elapsed());
            id
        }
    };
    // A run interrupted while tagging resumes it.
    while store.tag_untagged(50_000).await.unwrap() > 0 {}
    auth.untagged.store(false, Ordering::SeqCst);
    let now = BASE + i64::try_from(n).unwrap();
    let pool = AnyPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    if url.starts_with("postgres") {
        sqlx::query("VACUUM ANALYZE keys")
            .execute(&pool)
            .await
            .unwrap();
    } else {
        // Fold the fill's write-ahead log into the database, as SQLite's own checkpoints
        // do in a running deployment.
        for p in ["PRAGMA wal_checkpoint(TRUNCATE)", "ANALYZE"] {
            sqlx::query(p).execute(&pool).await.unwrap();
        }
    }
    let total: i64 = sqlx::query("SELECT COUNT(*) AS n FROM keys WHERE instance_id = $1")
        .bind(instance.to_string())
        .fetch_one(&pool)
        .await
        .unwrap()
        .get("n");
    println!(
        "\n{} keys in one instance on {}, {runs} runs each (median, max)\n",
        total,
        store.backend()
    );
    println!("| variant | rows | median ms | max ms |\n|---|---:|---:|---:|");
    if !without_0007 {
        for v in variants(now) {
            let mut times = Vec::with_capacity(runs);
            let mut rows = 0i64;
            for _ in 0..=runs {
                let t = Instant::now();
                rows = if v.count {
                    store.count_keys(instance, &v.q).await.unwrap()
                } else {
                    i64::try_from(store.list_keys(instance, &v.q).await.unwrap().len()).unwrap()
                };
                times.push(t.elapsed());
            }
            times.remove(0);
            let max = *times.iter().max().unwrap();
            println!(
                "| {} | {rows} | {:.2} | {:.2} |",
                v.name,
                median(times).as_secs_f64() * 1e3,
                max.as_secs_f64() * 1e3
            );
        }
    } else {
        for stmt in [
            "DROP INDEX IF EXISTS keys_list_id",
            "CREATE INDEX IF NOT EXISTS keys_by_instance ON keys (instance_id, id)",
            "DROP INDEX IF EXISTS keys_list_created",
            "DROP INDEX IF EXISTS keys_list_updated",
            "DROP INDEX IF EXISTS keys_list_rotated",
            "DROP INDEX IF EXISTS keys_list_deleted",
            "DROP INDEX IF EXISTS keys_list_expires",
            "DROP INDEX IF EXISTS keys_list_state",
            "DROP INDEX IF EXISTS keys_list_extractable",
            "DROP INDEX IF EXISTS keys_list_imported",
            "DROP INDEX IF EXISTS keys_list_ring",
            "DROP TRIGGER IF EXISTS key_counts_insert",
            "DROP TRIGGER IF EXISTS key_counts_delete",
            "DROP TRIGGER IF EXISTS key_counts_update",
        ] {
            sqlx::query(stmt).execute(&pool).await.unwrap();
        }
        if url.starts_with("postgres") {
            for stmt in [
                "DROP TRIGGER IF EXISTS key_counts_insert_delete ON keys",
                "DROP TRIGGER IF EXISTS key_counts_update ON keys",
            ] {
                sqlx::query(stmt).execute(&pool).await.unwrap();
            }
        }
        println!("(listing indexes and triggers of migration 0007 dropped)");
    }
    // Write cost: single inserts through the store, each its own transaction.
    let inserts = 1000;
    let mut times = Vec::with_capacity(inserts);
    for i in 0..inserts {
        let id = KeyId::new();
        let version = VersionId::new();
        let key = KeyRow {
            id,
            instance_id: instance,
            name: format!("insert-{i}"),
            description: None,
            tags: Vec::new(),
            state: KeyState::Active,
            extractable: false,
            imported: false,
            key_ring_id: ring_of(u64::try_from(i).unwrap() + 1, 0),
            expiration_date: None,
            created_at: now,
            created_by: "iam-bench".into(),
            updated_at: now,
            last_rotate_date: None,
            deletion_date: None,
            deleted_by: None,
            state_changed_at: now,
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
            created_at: now,
            sealed: vec![0; 60],
            master_key_id: "bench".into(),
        };
        let t = Instant::now();
        store.insert_key(&key, &v, None).await.unwrap();
        times.push(t.elapsed());
    }
    let mean = times.iter().sum::<Duration>() / u32::try_from(inserts).unwrap();
    println!(
        "\ninsert_key ({inserts} single inserts{}): mean {:.3} ms, median {:.3} ms",
        if without_0007 { ", without 0007" } else { "" },
        mean.as_secs_f64() * 1e3,
        median(times).as_secs_f64() * 1e3
    );
    // Leave the instance as filled: the inserted keys out again.
    sqlx::query("DELETE FROM key_versions WHERE instance_id = $1 AND key_id IN (SELECT id FROM keys WHERE instance_id = $1 AND name LIKE 'insert-%')")
        .bind(instance.to_string())
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM keys WHERE instance_id = $1 AND name LIKE 'insert-%'")
        .bind(instance.to_string())
        .execute(&pool)
        .await
        .unwrap();
}

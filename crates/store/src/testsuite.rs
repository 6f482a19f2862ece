//! The conformance suite every [`Store`] backend must pass. Backends call [`run_all`] from
//! their tests with a fresh, empty store (SQLite always; PostgreSQL when
//! `KEYWARD_TEST_DATABASE_URL` is set).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use keyward_domain::{InstanceId, KeyId, KeyState, Role, TokenId, VersionId};

use crate::{
    AliasRow, ApiKeyRow, AuditQuery, AuditRow, ConflictKind, GrantRow, InstanceRow, KeyQuery,
    KeyRingRow, KeyRow, PolicyRow, PrincipalRow, RegistrationRow, SealedPlace, Store, StoreError,
    TokenGuard, TokenRow, VersionRow,
};
use crate::{KeyUsageRow, UsageOp};

/// Runs every check against `store`, which must start empty.
pub async fn run_all(store: Arc<dyn Store>) {
    instances_and_principals(&*store).await;
    keys_are_scoped_and_conditional(&*store).await;
    token_replace_and_exact_retrievals(store.clone()).await;
    token_guard_blocks_stale_imports(&*store).await;
    import_failures_are_counted_per_token(store.clone()).await;
    sealed_rows_are_counted(&*store).await;
    lifecycle_tables(&*store).await;
    reseal_moves_rows_between_master_keys(&*store).await;
    audit_log_appends_and_searches(store.clone()).await;
    key_usage_keeps_the_newest_and_follows_the_key(&*store).await;
    kmip_adapters_certs_and_objects(&*store).await;
}

/// An audit row as the service would write it (`n` varies the time and ids).
pub fn audit_row(n: i64, action: &str, outcome: &str) -> AuditRow {
    AuditRow {
        time_unix: 1_700_000_000 + n,
        time: keyward_domain::format_time(1_700_000_000 + n),
        request_id: format!("req-{n}"),
        correlation_id: (n % 2 == 0).then(|| format!("corr-{n}")),
        principal: format!("iam-ServiceId-{}", n % 3),
        instance: "inst-1".into(),
        action: action.to_string(),
        key_id: (n % 5 != 0).then(|| format!("key-{}", n % 4)),
        outcome: outcome.to_string(),
        reason: (outcome == "failure").then(|| "KEY_ACTION_INVALID_STATE_ERR".to_string()),
        source: Some("127.0.0.1".into()),
    }
}

pub fn instance(name: &str) -> InstanceRow {
    InstanceRow {
        id: InstanceId::new(),
        name: name.to_string(),
        created_at: 1_700_000_000,
    }
}

pub fn key_row(instance: InstanceId, name: &str) -> (KeyRow, VersionRow) {
    let id = KeyId::new();
    let v = VersionId::new();
    (
        KeyRow {
            id,
            instance_id: instance,
            name: name.to_string(),
            description: None,
            tags: vec!["t1".into()],
            state: KeyState::Active,
            extractable: false,
            imported: false,
            key_ring_id: "default".into(),
            expiration_date: None,
            created_at: 1_700_000_000,
            created_by: "iam-test".into(),
            updated_at: 1_700_000_000,
            last_rotate_date: None,
            deletion_date: None,
            deleted_by: None,
            state_changed_at: 1_700_000_000,
            current_version: v,
            attrs: keyward_domain::rows::KeyAttrs::default(),
            row_version: 1,
            next_rotation_at: None,
        },
        VersionRow {
            id: v,
            key_id: id,
            instance_id: instance,
            seq: 1,
            created_at: 1_700_000_000,
            sealed: vec![1, 2, 3],
            master_key_id: "mk-test".into(),
        },
    )
}

pub fn token_row(instance: InstanceId, max: i64, expires_at: i64) -> TokenRow {
    TokenRow {
        instance_id: instance,
        token_id: TokenId::new(),
        created_at: 1_700_000_000,
        expires_at,
        expiration_secs: expires_at - 1_700_000_000,
        max_retrievals: max,
        remaining: max,
        nonce: vec![9; 12],
        public_pem: "-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n".into(),
        sealed_private: vec![4, 5, 6],
        master_key_id: "mk-test".into(),
    }
}

async fn instances_and_principals(store: &dyn Store) {
    let a = instance("a");
    store.create_instance(&a).await.unwrap();
    assert!(matches!(
        store.create_instance(&a).await,
        Err(StoreError::Conflict(ConflictKind::AlreadyExists))
    ));
    assert_eq!(store.get_instance(a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(store.get_instance(InstanceId::new()).await.unwrap(), None);

    let p = PrincipalRow {
        iam_id: "iam-ServiceId-1".into(),
        name: "svc".into(),
        created_at: 1,
    };
    let k = ApiKeyRow {
        id: "ak-1".into(),
        iam_id: p.iam_id.clone(),
        name: "k".into(),
        created_at: 1,
    };
    store.create_api_key(&p, &k, &[7u8; 32]).await.unwrap();
    assert_eq!(
        store.find_api_key(&[7u8; 32]).await.unwrap(),
        Some(k.clone())
    );
    assert_eq!(store.find_api_key(&[8u8; 32]).await.unwrap(), None);
    assert!(store.principal_exists(&p.iam_id).await.unwrap());
    assert!(store.api_key_exists("ak-1").await.unwrap());
    assert!(!store.api_key_exists("ak-2").await.unwrap());

    let g = GrantRow {
        instance_id: a.id,
        iam_id: p.iam_id.clone(),
        role: Role::Writer,
        created_at: 1,
    };
    store.grant(&g).await.unwrap();
    store.grant(&g).await.unwrap(); // idempotent
    assert_eq!(
        store.roles_of(a.id, &p.iam_id).await.unwrap(),
        vec![Role::Writer]
    );
    assert!(store
        .roles_of(InstanceId::new(), &p.iam_id)
        .await
        .unwrap()
        .is_empty());
    store.revoke(a.id, &p.iam_id, Role::Writer).await.unwrap();
    assert!(store.roles_of(a.id, &p.iam_id).await.unwrap().is_empty());

    store.delete_api_key("ak-1").await.unwrap();
    assert_eq!(store.find_api_key(&[7u8; 32]).await.unwrap(), None);
    assert!(!store.api_key_exists("ak-1").await.unwrap());
    assert!(matches!(
        store.delete_api_key("ak-1").await,
        Err(StoreError::NotFound)
    ));
}

async fn keys_are_scoped_and_conditional(store: &dyn Store) {
    let a = instance("keys-a");
    let b = instance("keys-b");
    store.create_instance(&a).await.unwrap();
    store.create_instance(&b).await.unwrap();
    let (k1, v1) = key_row(a.id, "one");
    let (mut k2, v2) = key_row(a.id, "two");
    k2.extractable = true;
    store.insert_key(&k1, &v1, None).await.unwrap();
    store.insert_key(&k2, &v2, None).await.unwrap();

    assert_eq!(store.get_key(a.id, k1.id).await.unwrap(), Some(k1.clone()));
    assert_eq!(
        store.get_key(b.id, k1.id).await.unwrap(),
        None,
        "tenant isolation"
    );
    assert_eq!(
        store.count_keys(a.id, &KeyQuery::default()).await.unwrap(),
        2
    );
    assert_eq!(
        store.count_keys(b.id, &KeyQuery::default()).await.unwrap(),
        0
    );
    let q = KeyQuery {
        extractable: Some(true),
        ..KeyQuery::default()
    };
    let only = store.list_keys(a.id, &q).await.unwrap();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].id, k2.id);
    let page = KeyQuery {
        limit: 1,
        offset: 1,
        ..KeyQuery::default()
    };
    assert_eq!(store.list_keys(a.id, &page).await.unwrap().len(), 1);

    // conditional update: the first writer wins, a stale one conflicts
    let mut del = k1.clone();
    del.state = KeyState::Destroyed;
    del.deletion_date = Some(1_700_000_100);
    store.update_key(&del).await.unwrap();
    assert!(matches!(
        store.update_key(&del).await,
        Err(StoreError::Conflict(ConflictKind::KeyChanged))
    ));
    let got = store.get_key(a.id, k1.id).await.unwrap().unwrap();
    assert_eq!(got.state, KeyState::Destroyed);
    assert_eq!(got.row_version, 2);
    // destroyed keys are hidden by default, shown with state=5
    assert_eq!(
        store.count_keys(a.id, &KeyQuery::default()).await.unwrap(),
        1
    );
    let q5 = KeyQuery {
        states: vec![KeyState::Destroyed],
        ..KeyQuery::default()
    };
    assert_eq!(store.count_keys(a.id, &q5).await.unwrap(), 1);

    // rotation adds a version atomically with the conditional key update
    let mut k2r = store.get_key(a.id, k2.id).await.unwrap().unwrap();
    let v2b = VersionRow {
        id: VersionId::new(),
        seq: 2,
        ..v2.clone()
    };
    k2r.current_version = v2b.id;
    k2r.last_rotate_date = Some(1_700_000_200);
    store.rotate_key(&k2r, &v2b, None).await.unwrap();
    let stale = VersionRow {
        id: VersionId::new(),
        seq: 3,
        ..v2.clone()
    };
    assert!(matches!(
        store.rotate_key(&k2r, &stale, None).await,
        Err(StoreError::Conflict(_))
    ));
    let versions = store.versions(a.id, k2.id).await.unwrap();
    assert_eq!(
        versions.iter().map(|v| v.seq).collect::<Vec<_>>(),
        vec![2, 1],
        "newest first, and the losing rotation left no version"
    );
    assert!(store.versions(b.id, k2.id).await.unwrap().is_empty());

    assert!(matches!(
        store.delete_instance(a.id).await,
        Err(StoreError::Conflict(ConflictKind::InstanceHasKeys))
    ));
}

async fn token_replace_and_exact_retrievals(store: Arc<dyn Store>) {
    let a = instance("tokens");
    store.create_instance(&a).await.unwrap();
    assert_eq!(store.get_token(a.id).await.unwrap(), None);
    let t1 = token_row(a.id, 3, 1_700_000_600);
    store.put_token(&t1).await.unwrap();
    let t2 = token_row(a.id, 50, 1_700_000_600);
    store.put_token(&t2).await.unwrap();
    assert_eq!(
        store.get_token(a.id).await.unwrap().unwrap().token_id,
        t2.token_id
    );

    // expired: nothing taken
    assert!(store
        .take_token_retrieval(a.id, 1_700_000_600)
        .await
        .unwrap()
        .is_none());

    let mut tasks = Vec::new();
    for _ in 0..200 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.take_token_retrieval(a.id, 1_700_000_001).await.unwrap()
        }));
    }
    let mut seen = Vec::new();
    for t in tasks {
        if let Some(row) = t.await.unwrap() {
            seen.push(row.remaining);
        }
    }
    seen.sort_unstable();
    assert_eq!(
        seen,
        (0..50).collect::<Vec<_>>(),
        "exactly 50, each count once"
    );
    assert_eq!(store.get_token(a.id).await.unwrap().unwrap().remaining, 0);
}

async fn import_failures_are_counted_per_token(store: Arc<dyn Store>) {
    let a = instance("import-failures");
    store.create_instance(&a).await.unwrap();
    let t1 = token_row(a.id, 1, 1_700_000_600);
    // no token yet: nothing counted
    assert_eq!(store.import_failures(a.id, t1.token_id).await.unwrap(), 0);
    assert_eq!(
        store
            .record_import_failure(a.id, t1.token_id)
            .await
            .unwrap(),
        0
    );
    store.put_token(&t1).await.unwrap();
    assert_eq!(store.import_failures(a.id, t1.token_id).await.unwrap(), 0);
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let s = store.clone();
        let t = t1.token_id;
        tasks.push(tokio::spawn(async move {
            s.record_import_failure(a.id, t).await.unwrap()
        }));
    }
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap());
    }
    seen.sort_unstable();
    assert_eq!(
        seen,
        (1..=40).collect::<Vec<_>>(),
        "each failure counted once"
    );
    assert_eq!(store.import_failures(a.id, t1.token_id).await.unwrap(), 40);
    // A new token starts from zero; the old token's failures are not counted against it, and
    // failures for the replaced token count nothing.
    let t2 = token_row(a.id, 1, 1_700_000_600);
    store.put_token(&t2).await.unwrap();
    assert_eq!(store.import_failures(a.id, t2.token_id).await.unwrap(), 0);
    assert_eq!(
        store
            .record_import_failure(a.id, t1.token_id)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .record_import_failure(a.id, t2.token_id)
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.import_failures(a.id, t1.token_id).await.unwrap(), 0);
    // Another instance's counter is its own.
    let b = instance("import-failures-b");
    store.create_instance(&b).await.unwrap();
    assert_eq!(store.import_failures(b.id, t2.token_id).await.unwrap(), 0);
}

async fn token_guard_blocks_stale_imports(store: &dyn Store) {
    let a = instance("guard");
    store.create_instance(&a).await.unwrap();
    let old = token_row(a.id, 1, 1_700_000_600);
    store.put_token(&old).await.unwrap();
    let guard = |t: &TokenRow, now| TokenGuard {
        token_id: t.token_id,
        now,
    };
    let (k, v) = key_row(a.id, "imp");
    store
        .insert_key(&k, &v, Some(guard(&old, 1_700_000_010)))
        .await
        .unwrap();
    let new = token_row(a.id, 1, 1_700_000_600);
    store.put_token(&new).await.unwrap();
    let (k2, v2) = key_row(a.id, "imp2");
    assert!(matches!(
        store
            .insert_key(&k2, &v2, Some(guard(&old, 1_700_000_010)))
            .await,
        Err(StoreError::Conflict(ConflictKind::ImportToken))
    ));
    assert!(matches!(
        store
            .insert_key(&k2, &v2, Some(guard(&new, 1_700_000_600)))
            .await,
        Err(StoreError::Conflict(ConflictKind::ImportToken)),
    ));
    assert_eq!(
        store.get_key(a.id, k2.id).await.unwrap(),
        None,
        "nothing written"
    );
    assert!(store.versions(a.id, k2.id).await.unwrap().is_empty());
}

async fn sealed_rows_are_counted(store: &dyn Store) {
    let (n, ids) = store.sealed_rows().await.unwrap();
    assert!(n > 0);
    assert_eq!(ids, vec!["mk-test".to_string()]);
    assert!(store
        .put_secret_if_absent("signing", &[1, 2], "mk-test", 1)
        .await
        .unwrap());
    assert!(!store
        .put_secret_if_absent("signing", &[3, 4], "mk-test", 1)
        .await
        .unwrap());
    assert_eq!(
        store.get_secret("signing").await.unwrap(),
        Some((vec![1, 2], "mk-test".to_string()))
    );
}

async fn lifecycle_tables(store: &dyn Store) {
    let a = instance("lifecycle");
    let b = instance("lifecycle-b");
    store.create_instance(&a).await.unwrap();
    store.create_instance(&b).await.unwrap();
    let (mut k, v) = key_row(a.id, "k");
    k.key_ring_id = "ring-1".into();
    k.next_rotation_at = Some(1_700_000_500);
    store.insert_key(&k, &v, None).await.unwrap();

    // aliases: unique per instance, scoped, removable only for their key
    let alias = |inst, name: &str| AliasRow {
        instance_id: inst,
        alias: name.into(),
        key_id: k.id,
        created_at: 1,
        created_by: "u".into(),
    };
    store.create_alias(&alias(a.id, "al-1")).await.unwrap();
    assert!(matches!(
        store.create_alias(&alias(a.id, "al-1")).await,
        Err(StoreError::Conflict(ConflictKind::AlreadyExists))
    ));
    store.create_alias(&alias(b.id, "al-1")).await.unwrap();
    assert_eq!(store.resolve_alias(a.id, "al-1").await.unwrap(), Some(k.id));
    assert_eq!(store.resolve_alias(a.id, "al-2").await.unwrap(), None);
    assert_eq!(store.aliases_of(a.id, k.id).await.unwrap().len(), 1);
    assert!(matches!(
        store.delete_alias(a.id, "al-1", KeyId::new()).await,
        Err(StoreError::NotFound)
    ));
    store.delete_alias(a.id, "al-1", k.id).await.unwrap();
    assert_eq!(store.resolve_alias(a.id, "al-1").await.unwrap(), None);
    store.create_alias(&alias(a.id, "al-3")).await.unwrap();
    // Aliases of many keys in one call, scoped to the instance.
    let bulk = store
        .aliases_of_keys(a.id, &[k.id, KeyId::new()])
        .await
        .unwrap();
    assert_eq!(
        bulk.iter().map(|x| x.alias.as_str()).collect::<Vec<_>>(),
        ["al-3"]
    );
    assert!(store.aliases_of_keys(a.id, &[]).await.unwrap().is_empty());
    let many: Vec<KeyId> = (0..9_000).map(|_| KeyId::new()).chain([k.id]).collect();
    assert_eq!(store.aliases_of_keys(a.id, &many).await.unwrap().len(), 1);

    // key rings: delete refused while a live key is in it
    let ring = KeyRingRow {
        instance_id: a.id,
        id: "ring-1".into(),
        created_at: 1,
        created_by: "u".into(),
    };
    store.create_key_ring(&ring).await.unwrap();
    assert!(matches!(
        store.create_key_ring(&ring).await,
        Err(StoreError::Conflict(ConflictKind::AlreadyExists))
    ));
    assert_eq!(store.list_key_rings(a.id).await.unwrap().len(), 1);
    assert!(store.list_key_rings(b.id).await.unwrap().is_empty());
    assert!(matches!(
        store.delete_key_ring(a.id, "ring-1", true).await,
        Err(StoreError::Conflict(ConflictKind::KeyRingHasKeys))
    ));

    // scheduler queries
    assert_eq!(
        store.due_rotations(1_700_000_499, 10).await.unwrap().len(),
        0
    );
    assert_eq!(
        store.due_rotations(1_700_000_500, 10).await.unwrap()[0].id,
        k.id
    );

    // policies: upsert keeps one row per type
    let mut p = PolicyRow {
        instance_id: a.id,
        policy_type: "dualAuthDelete".into(),
        data: serde_json::json!({"enabled": true}),
        created_at: 1,
        created_by: "u".into(),
        updated_at: 1,
        updated_by: "u".into(),
    };
    store.put_instance_policy(&p).await.unwrap();
    p.data = serde_json::json!({"enabled": false});
    p.updated_at = 2;
    p.created_at = 2;
    store.put_instance_policy(&p).await.unwrap();
    let got = store.instance_policies(a.id).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data, serde_json::json!({"enabled": false}));
    assert_eq!(got[0].created_at, 1, "creation stamp kept");
    assert!(store.instance_policies(b.id).await.unwrap().is_empty());

    // registrations
    store
        .add_registration(&RegistrationRow {
            instance_id: a.id,
            key_id: k.id,
            resource_crn: "crn:v1:x".into(),
            prevent_key_deletion: true,
            description: None,
            created_at: 1,
            created_by: "svc".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        store.registrations(a.id, Some(k.id)).await.unwrap().len(),
        1
    );
    assert!(store.registrations(b.id, None).await.unwrap().is_empty());

    // destroy, then the ring can go with force (the key moves to default), then purge
    let mut del = store.get_key(a.id, k.id).await.unwrap().unwrap();
    del.state = KeyState::Destroyed;
    del.deletion_date = Some(1_700_000_000);
    store.update_key(&del).await.unwrap();
    assert!(matches!(
        store.delete_key_ring(a.id, "ring-1", false).await,
        Err(StoreError::Conflict(ConflictKind::KeyRingHasKeys))
    ));
    store.delete_key_ring(a.id, "ring-1", true).await.unwrap();
    let moved = store.get_key(a.id, k.id).await.unwrap().unwrap();
    assert_eq!(moved.key_ring_id, "default");
    assert_eq!(store.due_purges(1_700_000_001, 10).await.unwrap().len(), 1);
    assert!(
        matches!(
            store.purge_key(&del).await,
            Err(StoreError::Conflict(ConflictKind::KeyChanged))
        ),
        "stale row_version"
    );
    store.purge_key(&moved).await.unwrap();
    assert_eq!(store.get_key(a.id, k.id).await.unwrap(), None);
    assert!(store.versions(a.id, k.id).await.unwrap().is_empty());
    assert_eq!(store.resolve_alias(a.id, "al-3").await.unwrap(), None);
    assert!(store
        .registrations(a.id, Some(k.id))
        .await
        .unwrap()
        .is_empty());
}

async fn reseal_moves_rows_between_master_keys(store: &dyn Store) {
    let i = instance("reseal");
    store.create_instance(&i).await.unwrap();
    let (k, v) = key_row(i.id, "reseal-key");
    store.insert_key(&k, &v, None).await.unwrap();
    store
        .put_token(&token_row(i.id, 5, 1_800_000_000))
        .await
        .unwrap();
    store.put_secret("marker", b"x", "", 1).await.unwrap();
    store.put_secret("marker", b"mk-new", "", 2).await.unwrap();
    assert_eq!(
        store.get_secret("marker").await.unwrap(),
        Some((b"mk-new".to_vec(), String::new()))
    );
    let before: i64 = store
        .sealed_counts()
        .await
        .unwrap()
        .iter()
        .map(|c| c.1)
        .sum();

    // everything not under mk-new, in batches; the marker (no master key) is never a row
    let mut moved = 0;
    loop {
        let batch = store.sealed_batch("mk-new", 2).await.unwrap();
        assert!(batch.len() <= 2);
        if batch.is_empty() {
            break;
        }
        for row in batch {
            assert_ne!(
                row.place,
                SealedPlace::Secret {
                    name: "marker".into()
                }
            );
            assert!(!format!("{row:?}").contains("[1, 2, 3]"));
            // a stale view of the row (other bytes) is refused and changes nothing
            let mut stale = row.clone();
            stale.sealed.push(0);
            assert!(!store.reseal(&stale, &[7, 7], "mk-new").await.unwrap());
            let new: Vec<u8> = row.sealed.iter().map(|b| b ^ 0xff).collect();
            assert!(store.reseal(&row, &new, "mk-new").await.unwrap());
            // the same swap a second time finds the row changed
            assert!(!store.reseal(&row, &new, "mk-new").await.unwrap());
            moved += 1;
        }
    }
    assert_eq!(moved, before);
    let counts = store.sealed_counts().await.unwrap();
    assert_eq!(counts, vec![("mk-new".to_string(), before)]);
    assert_eq!(
        store.sealed_key_ids().await.unwrap(),
        vec!["mk-new".to_string()]
    );
    let versions = store.versions(i.id, k.id).await.unwrap();
    assert_eq!(versions[0].sealed, vec![0xfe, 0xfd, 0xfc]);
    assert_eq!(versions[0].master_key_id, "mk-new");
    let t = store.get_token(i.id).await.unwrap().unwrap();
    assert_eq!(
        (t.sealed_private, t.master_key_id.as_str()),
        (vec![0xfb, 0xfa, 0xf9], "mk-new")
    );
    assert_eq!(t.remaining, 5);
}

/// Appends (one row, a batch larger than one statement, concurrent writers) and every search
/// filter of the audit table.
async fn audit_log_appends_and_searches(store: Arc<dyn Store>) {
    let all = AuditQuery::default();
    assert!(store.audit_records(&all).await.unwrap().is_empty());
    store.append_audit(&[]).await.unwrap();

    let first = audit_row(0, "kms.secrets.create", "success");
    store
        .append_audit(std::slice::from_ref(&first))
        .await
        .unwrap();
    // A batch of more rows than one INSERT takes (and than one page of `copy_database`).
    let batch: Vec<AuditRow> = (1..=600)
        .map(|n| {
            let (action, outcome) = match n % 3 {
                0 => ("kms.secrets.wrap", "success"),
                1 => ("kms.secrets.unwrap", "success"),
                _ => ("kms.secrets.wrap", "failure"),
            };
            audit_row(n, action, outcome)
        })
        .collect();
    assert!(batch.len() > crate::AUDIT_BATCH_ROWS);
    store.append_audit(&batch).await.unwrap();

    let got = store.audit_records(&all).await.unwrap();
    assert_eq!(got.len(), 601);
    assert_eq!(
        got[0].row, first,
        "a row reads back as written (NULLs included)"
    );
    assert!(got[0].row.key_id.is_none() && got[0].row.reason.is_none());
    let rows: Vec<AuditRow> = got.iter().map(|e| e.row.clone()).collect();
    assert_eq!(rows[1..], batch[..], "rows keep their order");
    assert!(got.windows(2).all(|w| w[0].id < w[1].id), "ids grow");

    let count = |q: AuditQuery| {
        let store = store.clone();
        async move { store.audit_records(&q).await.unwrap().len() }
    };
    let text = |s: &str| Some(s.to_string());
    assert_eq!(
        count(AuditQuery {
            action: text("kms.secrets.wrap"),
            ..AuditQuery::default()
        })
        .await,
        400
    );
    assert_eq!(
        count(AuditQuery {
            action: text("kms.secrets.wrap"),
            outcome: text("failure"),
            ..AuditQuery::default()
        })
        .await,
        200
    );
    let by_key = store
        .audit_records(&AuditQuery {
            key_id: text("key-1"),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert!(!by_key.is_empty());
    assert!(by_key
        .iter()
        .all(|e| e.row.key_id.as_deref() == Some("key-1")));
    assert_eq!(
        count(AuditQuery {
            principal: text("iam-ServiceId-0"),
            ..AuditQuery::default()
        })
        .await,
        201
    );
    assert_eq!(
        count(AuditQuery {
            instance: text("inst-1"),
            ..AuditQuery::default()
        })
        .await,
        601
    );
    assert_eq!(
        count(AuditQuery {
            instance: text("inst-2"),
            ..AuditQuery::default()
        })
        .await,
        0
    );
    let one = store
        .audit_records(&AuditQuery {
            request_id: text("req-42"),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].row, batch[41]);
    // Time range, inclusive at both ends.
    assert_eq!(
        count(AuditQuery {
            since: Some(1_700_000_100),
            until: Some(1_700_000_199),
            ..AuditQuery::default()
        })
        .await,
        100
    );
    // Tail: the newest first, limited; paging after an id.
    let tail = store
        .audit_records(&AuditQuery {
            limit: Some(3),
            newest_first: true,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    let tail_ids: Vec<String> = tail.iter().map(|e| e.row.request_id.clone()).collect();
    assert_eq!(tail_ids, ["req-600", "req-599", "req-598"]);
    // Offset paging of the newest first (the console's audit view).
    let skipped = store
        .audit_records(&AuditQuery {
            limit: Some(2),
            offset: Some(3),
            newest_first: true,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    let skipped_ids: Vec<String> = skipped.iter().map(|e| e.row.request_id.clone()).collect();
    assert_eq!(skipped_ids, ["req-597", "req-596"]);
    let page = store
        .audit_records(&AuditQuery {
            after_id: Some(got[10].id),
            limit: Some(5),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|e| e.id).collect::<Vec<_>>(),
        got[11..16].iter().map(|e| e.id).collect::<Vec<_>>()
    );

    // Concurrent writers: every append lands once, with its own id.
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                let row = audit_row(1000 + w * 10 + i, "kms.secrets.unwrap", "success");
                store.append_audit(&[row]).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let after = store.audit_records(&all).await.unwrap();
    assert_eq!(after.len(), 681);
    let mut ids: Vec<i64> = after.iter().map(|e| e.id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 681);
    let mut reqs: Vec<&str> = after.iter().map(|e| e.row.request_id.as_str()).collect();
    reqs.sort_unstable();
    reqs.dedup();
    assert_eq!(reqs.len(), 681);
}

async fn key_usage_keeps_the_newest_and_follows_the_key(store: &dyn Store) {
    let a = instance("usage-a");
    let b = instance("usage-b");
    store.create_instance(&a).await.unwrap();
    store.create_instance(&b).await.unwrap();
    let (k1, v1) = key_row(a.id, "u1");
    let (k2, v2) = key_row(a.id, "u2");
    store.insert_key(&k1, &v1, None).await.unwrap();
    store.insert_key(&k2, &v2, None).await.unwrap();
    let row = |key: KeyId, op: UsageOp, at: i64, by: &str| KeyUsageRow {
        instance_id: a.id,
        key_id: key,
        op,
        at,
        by: by.into(),
    };
    store
        .record_key_usage(&[
            row(k1.id, UsageOp::Wrap, 100, "alice"),
            row(k1.id, UsageOp::Any, 100, "alice"),
            row(k2.id, UsageOp::Unwrap, 50, "bob"),
        ])
        .await
        .unwrap();
    // An older record does not replace a newer one; a newer one does.
    store
        .record_key_usage(&[
            row(k1.id, UsageOp::Wrap, 90, "old"),
            row(k2.id, UsageOp::Unwrap, 60, "carol"),
        ])
        .await
        .unwrap();
    let mut got = store.key_usage(a.id, &[k1.id, k2.id]).await.unwrap();
    got.sort_by_key(|r| (r.key_id.to_string(), r.op.as_str()));
    let mut want = vec![
        row(k1.id, UsageOp::Wrap, 100, "alice"),
        row(k1.id, UsageOp::Any, 100, "alice"),
        row(k2.id, UsageOp::Unwrap, 60, "carol"),
    ];
    want.sort_by_key(|r| (r.key_id.to_string(), r.op.as_str()));
    assert_eq!(got, want);
    // Scoped to the instance.
    assert!(store.key_usage(b.id, &[k1.id]).await.unwrap().is_empty());
    // A key that does not exist gets no row; a purged key loses its rows.
    let ghost = KeyId::new();
    store
        .record_key_usage(&[row(ghost, UsageOp::Wrap, 1, "x")])
        .await
        .unwrap();
    assert!(store.key_usage(a.id, &[ghost]).await.unwrap().is_empty());
    let mut del = store.get_key(a.id, k2.id).await.unwrap().unwrap();
    del.state = KeyState::Destroyed;
    del.deletion_date = Some(1);
    store.update_key(&del).await.unwrap();
    let del = store.get_key(a.id, k2.id).await.unwrap().unwrap();
    store.purge_key(&del).await.unwrap();
    assert!(store.key_usage(a.id, &[k2.id]).await.unwrap().is_empty());
    assert!(store.key_usage(a.id, &[]).await.unwrap().is_empty());
}

/// KMIP adapters, certificates and objects: scoped by instance and adapter, unique names and
/// fingerprints, compare-and-swap updates, and an adapter deleted only without live objects.
async fn kmip_adapters_certs_and_objects(store: &dyn Store) {
    use crate::{KmipAdapterRow, KmipCertRow, KmipObjectRow};
    let (a, b) = (InstanceId::new(), InstanceId::new());
    let adapter = |inst: InstanceId, id: &str, name: &str| KmipAdapterRow {
        id: id.into(),
        instance_id: inst,
        name: name.into(),
        description: String::new(),
        profile: "native_1.0".into(),
        crk_id: KeyId::new(),
        created_by: "me".into(),
        created_at: 1,
        updated_by: "me".into(),
        updated_at: 1,
    };
    store
        .create_kmip_adapter(&adapter(a, "ad-1", "one"))
        .await
        .unwrap();
    store
        .create_kmip_adapter(&adapter(b, "ad-2", "one"))
        .await
        .unwrap();
    assert!(matches!(
        store.create_kmip_adapter(&adapter(a, "ad-3", "one")).await,
        Err(StoreError::Conflict(ConflictKind::AlreadyExists))
    ));
    assert_eq!(
        store.get_kmip_adapter(a, "one").await.unwrap().unwrap().id,
        "ad-1"
    );
    assert_eq!(
        store
            .get_kmip_adapter(a, "ad-1")
            .await
            .unwrap()
            .unwrap()
            .name,
        "one"
    );
    assert!(store.get_kmip_adapter(a, "ad-2").await.unwrap().is_none());
    let (list, total) = store.kmip_adapters(a, 10, 0).await.unwrap();
    assert_eq!((list.len(), total), (1, 1));

    let cert = |inst: InstanceId, adapter: &str, id: &str, fp: u8| KmipCertRow {
        id: id.into(),
        instance_id: inst,
        adapter_id: adapter.into(),
        name: id.into(),
        certificate: "-----BEGIN CERTIFICATE-----".into(),
        fingerprint: vec![fp; 32],
        created_by: "me".into(),
        created_at: 2,
    };
    store
        .create_kmip_cert(&cert(a, "ad-1", "c-1", 1))
        .await
        .unwrap();
    // one certificate names one adapter, over all instances
    assert!(matches!(
        store.create_kmip_cert(&cert(b, "ad-2", "c-2", 1)).await,
        Err(StoreError::Conflict(ConflictKind::AlreadyExists))
    ));
    // not on another instance's adapter
    assert!(matches!(
        store.create_kmip_cert(&cert(a, "ad-2", "c-3", 3)).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        store
            .find_kmip_cert(&[1; 32])
            .await
            .unwrap()
            .unwrap()
            .adapter_id,
        "ad-1"
    );
    assert!(store.find_kmip_cert(&[9; 32]).await.unwrap().is_none());
    assert_eq!(store.kmip_certs(a, "ad-1", 10, 0).await.unwrap().1, 1);
    assert!(store
        .get_kmip_cert(b, "ad-1", "c-1")
        .await
        .unwrap()
        .is_none());

    let mut obj = KmipObjectRow {
        id: "o-1".into(),
        instance_id: a,
        adapter_id: "ad-1".into(),
        object_type: 2,
        state: 1,
        meta: vec![1, 2, 3],
        wrapped: Some("sealed".into()),
        row_version: 1,
        created_by_cert_id: Some("c-1".into()),
        created_by: "kmip".into(),
        created_at: 3,
        updated_by_cert_id: None,
        updated_by: "kmip".into(),
        updated_at: 3,
        destroyed_by_cert_id: None,
        destroyed_by: None,
        destroyed_at: None,
    };
    store.insert_kmip_object(&obj).await.unwrap();
    assert!(store
        .get_kmip_object(b, "ad-1", "o-1")
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        store
            .get_kmip_object(a, "ad-1", "o-1")
            .await
            .unwrap()
            .unwrap(),
        obj
    );
    assert!(matches!(
        store.delete_kmip_adapter(a, "ad-1").await,
        Err(StoreError::Conflict(ConflictKind::AdapterHasObjects))
    ));
    obj.row_version = 2;
    obj.state = 5;
    obj.wrapped = None;
    obj.destroyed_at = Some(4);
    store.update_kmip_object(&obj).await.unwrap();
    // a stale update loses
    assert!(matches!(
        store.update_kmip_object(&obj).await,
        Err(StoreError::Conflict(ConflictKind::KeyChanged))
    ));
    assert_eq!(
        store.kmip_objects(a, "ad-1", 10, 0).await.unwrap().0,
        vec![obj.clone()]
    );
    store.delete_kmip_cert(a, "ad-1", "c-1").await.unwrap();
    assert!(matches!(
        store.delete_kmip_cert(a, "ad-1", "c-1").await,
        Err(StoreError::NotFound)
    ));
    store.delete_kmip_adapter(a, "ad-1").await.unwrap();
    assert_eq!(store.kmip_objects(a, "ad-1", 10, 0).await.unwrap().1, 0);
    assert!(matches!(
        store.delete_kmip_adapter(a, "ad-1").await,
        Err(StoreError::NotFound)
    ));
    // rows left behind, for the suites that run this one to fill a database (copies)
    store
        .create_kmip_adapter(&adapter(b, "ad-9", "kept"))
        .await
        .unwrap();
    store
        .create_kmip_cert(&cert(b, "ad-9", "c-9", 9))
        .await
        .unwrap();
    obj.id = "o-9".into();
    obj.instance_id = b;
    obj.adapter_id = "ad-9".into();
    obj.row_version = 1;
    store.insert_kmip_object(&obj).await.unwrap();
}

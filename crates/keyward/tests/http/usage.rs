//! Key usage tracking (docs/design.md, "Key usage"): last wrap, unwrap and rewrap with the
//! principal, in `GET /keys/{id}/metadata?usage=true` at once on the node that saw the use and
//! in the database within the flush interval; the `lastUsed` filter; a graceful restart keeps
//! it; `--usage-flush-interval 0` turns it off.

use std::path::Path;
use std::time::{Duration, Instant};

use keyward_domain::{format_time, Clock, KeyId, Role};
use keyward_store::UsageOp;
use serde_json::{json, Value};

use crate::common::*;
use crate::durability::{relogin, setup, start_with};

async fn usage(c: &Client, id: &str) -> Value {
    let k = c
        .get(&format!("/api/v2/keys/{id}/metadata?usage=true"))
        .await
        .resource(200);
    k["usage"].clone()
}

/// Waits (at most 30 s: a liveness bound, not a timing claim) until the store holds a usage
/// row of `key` for `op` at `at`.
async fn stored(s: &TestServer, c: &Client, key: &str, op: UsageOp, at: i64) {
    let id = KeyId::parse(key).unwrap();
    let t0 = Instant::now();
    loop {
        let rows = s.store.key_usage(c.instance_id, &[id]).await.unwrap();
        if rows.iter().any(|r| r.op == op && r.at == at) {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "never flushed: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn last_uses_are_reported_and_flushed_in_batches() {
    let s = TestServer::start_with(1, |a| a.usage_flush_interval = Some(1));
    let alice = s.tenant().await;
    let bob = s.client(alice.instance_id, Role::Reader).await;
    let k = id_of(&alice.create_root_key().await);
    let other = id_of(&alice.create_root_key().await);
    // Never used: an empty object; without `usage=true`, no field at all.
    assert_eq!(usage(&alice, &k).await, json!({}));
    let plain = alice
        .get(&format!("/api/v2/keys/{k}/metadata"))
        .await
        .resource(200);
    assert!(plain.get("usage").is_none(), "{plain}");
    let r = alice
        .get(&format!("/api/v2/keys/{k}/metadata?usage=yes"))
        .await;
    assert_error(&r, 400, "INVALID_QUERY_PARAM_ERR");

    let t_wrap = s.clock.now_unix();
    let ct = alice.wrap_bytes(&k, &random(32), None).await;
    s.clock.advance(60);
    let t_unwrap = s.clock.now_unix();
    bob.unwrap_bytes(&k, &ct, None).await;
    s.clock.advance(60);
    let t_rewrap = s.clock.now_unix();
    bob.action(
        &k,
        "rewrapTo",
        &json!({"ciphertext": ct, "targetKeyId": other}),
    )
    .await
    .expect(200);
    // At once on this node.
    let u = usage(&alice, &k).await;
    assert_eq!(u["wrap"]["lastUsedDate"], format_time(t_wrap));
    assert_eq!(u["wrap"]["lastUsedBy"], alice.iam_id.as_str());
    assert_eq!(u["unwrap"]["lastUsedDate"], format_time(t_unwrap));
    assert_eq!(u["unwrap"]["lastUsedBy"], bob.iam_id.as_str());
    assert_eq!(u["rewrap"]["lastUsedDate"], format_time(t_rewrap));
    assert_eq!(u["lastUsedDate"], format_time(t_rewrap));
    let o = usage(&alice, &other).await;
    assert_eq!(o["wrap"]["lastUsedBy"], bob.iam_id.as_str());
    // In the database within the flush interval, with the `any` row the filter reads.
    stored(&s, &alice, &k, UsageOp::Rewrap, t_rewrap).await;
    stored(&s, &alice, &k, UsageOp::Any, t_rewrap).await;
    stored(&s, &alice, &k, UsageOp::Wrap, t_wrap).await;
    // A failed unwrap is no use.
    s.clock.advance(60);
    let r = bob.unwrap(&k, &ct, Some(&["wrong"])).await;
    assert_eq!(r.status, 422);
    assert_eq!(
        usage(&alice, &k).await["unwrap"]["lastUsedDate"],
        format_time(t_unwrap)
    );
}

#[tokio::test]
async fn the_last_used_filter_finds_keys_nobody_uses() {
    let s = TestServer::start_with(1, |a| a.usage_flush_interval = Some(1));
    let c = s.tenant().await;
    let used = id_of(&c.create_root_key().await);
    let idle = id_of(&c.create_root_key().await);
    s.clock.advance(100);
    let t0 = s.clock.now_unix();
    s.clock.advance(100);
    c.wrap_bytes(&used, &random(16), None).await;
    stored(&s, &c, &used, UsageOp::Any, t0 + 100).await;
    let list = |filter: String| {
        let c = &c;
        async move {
            let q = url_encode(&filter);
            let v = c.get(&format!("/api/v2/keys?filter={q}")).await.expect(200);
            let mut ids: Vec<String> = v["resources"]
                .as_array()
                .map(|a| a.iter().map(id_of).collect())
                .unwrap_or_default();
            ids.sort();
            ids
        }
    };
    let mut both = vec![used.clone(), idle.clone()];
    both.sort();
    let d = |t: i64| format!("\"{}\"", format_time(t));
    // Not used since t0: only the idle key (never used counts as before every date).
    assert_eq!(
        list(format!("lastUsed=lt:{}", d(t0))).await,
        vec![idle.clone()]
    );
    assert_eq!(
        list(format!("lastUsed=lte:{}", d(t0 + 99))).await,
        vec![idle.clone()]
    );
    assert_eq!(list(format!("lastUsed=lt:{}", d(t0 + 101))).await, both);
    assert_eq!(
        list(format!("lastUsed=gte:{}", d(t0))).await,
        vec![used.clone()]
    );
    assert_eq!(
        list(format!("lastUsed=gt:{}", d(t0 + 100))).await,
        Vec::<String>::new()
    );
    assert_eq!(
        list(format!("lastUsed={}", d(t0 + 100))).await,
        vec![used.clone()]
    );
    assert_eq!(list("lastUsed=none".into()).await, vec![idle.clone()]);
    // Combined with other terms.
    assert_eq!(
        list(format!("lastUsed=lt:{} extractable=false", d(t0))).await,
        vec![idle.clone()]
    );
    let r = c.get("/api/v2/keys?filter=lastUsed%3Dlt%3Ayesterday").await;
    assert_error(&r, 400, "INVALID_QUERY_PARAM_ERR");
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn tracking_off_records_nothing() {
    let s = TestServer::start_with(1, |a| a.usage_flush_interval = Some(0));
    let c = s.tenant().await;
    let k = id_of(&c.create_root_key().await);
    c.wrap_bytes(&k, &random(16), None).await;
    assert_eq!(usage(&c, &k).await, json!({}));
    let rows = s
        .store
        .key_usage(c.instance_id, &[KeyId::parse(&k).unwrap()])
        .await
        .unwrap();
    assert!(rows.is_empty());
}

/// The real binary with a long interval: the uses only a graceful stop writes survive the
/// restart.
#[tokio::test]
async fn a_graceful_restart_keeps_unflushed_uses() {
    let dir = tempfile::tempdir().unwrap();
    let data: &Path = &dir.path().join("data");
    let p = start_with(data, &["--usage-flush-interval", "3600"]).await;
    let c = setup(&p, data).await;
    let k = id_of(&c.create_root_key().await);
    c.wrap_bytes(&k, &random(32), None).await;
    let before = usage(&c, &k).await;
    assert!(before["wrap"]["lastUsedDate"].is_string(), "{before}");
    p.terminate();
    let p = start_with(data, &["--usage-flush-interval", "3600"]).await;
    let c = relogin(&c, &p).await;
    assert_eq!(usage(&c, &k).await, before);
    p.terminate();
}

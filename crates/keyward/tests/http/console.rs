//! The web console (`/ui/`, crates/console, docs/console.md) and the audit route it reads
//! (`GET /api/v2/x-keyward/audit`): security headers and CSP on every console response, the
//! content type of every asset, no reference to another origin, `--no-console`, and the audit
//! route's role check, instance scope and filter validation. The browser tests are in
//! tests/python/test_console.py.

use std::collections::BTreeSet;

use keyward_domain::Role;
use reqwest::header::{CONTENT_TYPE, ETAG, IF_NONE_MATCH, LOCATION};

use crate::common::{assert_error, shared, TestServer};

fn plain() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn assert_security_headers(r: &reqwest::Response, what: &str) {
    let h = r.headers();
    let get = |n: &str| {
        h.get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{what}: no {n}"))
            .to_string()
    };
    let csp = get("content-security-policy");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(
            csp.contains(directive),
            "{what}: CSP lacks {directive}: {csp}"
        );
    }
    assert!(!csp.contains("unsafe-"), "{what}: {csp}");
    assert!(!csp.contains("http"), "{what}: another origin in {csp}");
    assert_eq!(get("x-frame-options"), "DENY", "{what}");
    assert_eq!(get("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(get("referrer-policy"), "no-referrer", "{what}");
}

/// The `/ui/...` paths an HTML page names in `src` and `href`, and the modules a script
/// imports (`from './x.js'`).
fn references(path: &str, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    if path.ends_with(".html") {
        for attr in ["src=\"", "href=\""] {
            for part in text.split(attr).skip(1) {
                let v = part.split('"').next().unwrap();
                if let Some(p) = v.strip_prefix("/ui/") {
                    out.push(p.to_string());
                } else {
                    assert!(v.starts_with('#'), "{path}: a reference outside /ui/: {v}");
                }
            }
        }
    }
    if path.ends_with(".js") {
        for part in text.split("from './").skip(1) {
            out.push(part.split('\'').next().unwrap().to_string());
        }
    }
    out
}

#[tokio::test]
async fn the_console_is_served_with_strict_headers_and_only_its_own_assets() {
    let srv = shared();
    let http = plain();
    let r = http.get(format!("{}/ui", srv.base)).send().await.unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()[LOCATION], "/ui/");
    assert_security_headers(&r, "/ui");

    // Walk every asset from the page: each is served with its content type and the headers.
    let mut seen = BTreeSet::new();
    let mut todo = vec![String::new()];
    while let Some(p) = todo.pop() {
        if !seen.insert(p.clone()) {
            continue;
        }
        let r = http
            .get(format!("{}/ui/{p}", srv.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "/ui/{p}");
        assert_security_headers(&r, &p);
        let name = if p.is_empty() { "index.html" } else { &p };
        let ct = r.headers()[CONTENT_TYPE].to_str().unwrap().to_string();
        let want = match name.rsplit('.').next().unwrap() {
            "html" => "text/html; charset=utf-8",
            "js" => "text/javascript; charset=utf-8",
            "css" => "text/css; charset=utf-8",
            "svg" => "image/svg+xml",
            other => panic!("an asset of an unexpected kind: {other}"),
        };
        assert_eq!(ct, want, "{name}");
        let etag = r.headers()[ETAG].clone();
        let text = r.text().await.unwrap();
        // No other origin: no URL with a scheme or a protocol-relative one, except the SVG
        // namespace (a name, never fetched).
        let scrubbed = text.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
        for bad in ["http://", "https://", "\"//", "'//", "(//", "url("] {
            assert!(!scrubbed.contains(bad), "{name} references {bad}");
        }
        if name.ends_with(".html") {
            // no inline script or style
            assert!(!text.contains("style=\""), "{name}: an inline style");
            assert!(!text.contains("<style"), "{name}: an inline stylesheet");
            for s in text.split("<script").skip(1) {
                assert!(s.contains("src=\"/ui/"), "{name}: an inline script");
            }
        }
        todo.extend(references(name, &text));
        // revalidation by ETag
        let r = http
            .get(format!("{}/ui/{p}", srv.base))
            .header(IF_NONE_MATCH, etag)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 304, "{name}");
    }
    let expected: BTreeSet<String> = keyward_console::ASSETS
        .iter()
        .map(|a| match a.path {
            // the page is served at /ui/ (and also as /ui/index.html)
            "index.html" => String::new(),
            p => p.to_string(),
        })
        .collect();
    assert_eq!(
        seen, expected,
        "the page reaches exactly the embedded assets"
    );

    // An unknown path: 404 with the same headers, not the API's envelope.
    for p in ["nope.js", "..%2fopenapi.json", "index.html/x", "app.js.map"] {
        let r = http
            .get(format!("{}/ui/{p}", srv.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{p}");
        assert_security_headers(&r, p);
    }
    // The API's own responses are unchanged by the console.
    let r = http
        .get(format!("{}/healthz", srv.base))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("content-security-policy").is_none());
}

#[tokio::test]
async fn no_console_turns_it_off() {
    let srv = TestServer::start_with(0, |a| a.no_console = true);
    let http = plain();
    for p in ["/ui", "/ui/", "/ui/app.js"] {
        let r = http.get(format!("{}{p}", srv.base)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{p}");
    }
    // the API still answers
    let c = srv.tenant().await;
    c.get("/api/v2/keys").await.expect(200);
}

#[tokio::test]
async fn the_audit_route_is_for_managers_of_the_instance_and_checks_its_filters() {
    let srv = TestServer::start_with(0, |a| a.audit_sink = Some("database".into()));
    let manager = srv.tenant().await;
    let other = srv.tenant().await;
    let key = manager.create_root_key().await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let other_key = other.create_root_key().await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let wrapped = manager.wrap(&key, &serde_json::json!({})).await.expect(200);
    assert!(wrapped["ciphertext"].is_string());

    let body = manager.get("/api/v2/x-keyward/audit").await.expect(200);
    assert_eq!(
        body["metadata"]["collectionType"],
        "application/vnd.keyward.audit+json"
    );
    let recs = body["resources"].as_array().unwrap();
    // attempt + success of the create and of the wrap, newest first, this instance only
    assert_eq!(recs.len(), 4, "{body}");
    let ids: Vec<i64> = recs.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    assert!(recs.iter().all(|r| r["keyId"] == key.as_str()), "{body}");
    assert!(!body.to_string().contains(&other_key));
    assert_eq!(recs[0]["action"], "kms.secrets.wrap");
    assert_eq!(recs[0]["outcome"], "success");

    // filters
    let only = manager
        .get(&format!(
            "/api/v2/x-keyward/audit?action=kms.secrets.create&outcome=attempt&keyId={key}"
        ))
        .await
        .expect(200);
    assert_eq!(only["resources"].as_array().unwrap().len(), 1, "{only}");
    assert_eq!(only["resources"][0]["action"], "kms.secrets.create");
    let paged = manager
        .get("/api/v2/x-keyward/audit?limit=2&offset=1")
        .await
        .expect(200);
    let paged_ids: Vec<i64> = paged["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(paged_ids, ids[1..3]);
    let none = manager
        .get("/api/v2/x-keyward/audit?since=2000-01-01T00:00:00Z&until=2000-01-02T00:00:00Z")
        .await
        .expect(200);
    assert_eq!(none["resources"].as_array().unwrap().len(), 0);

    for (query, param) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=x", "limit"),
        ("offset=-1", "offset"),
        ("offset=100001", "offset"),
        ("outcome=maybe", "outcome"),
        ("keyId=not-a-uuid", "keyId"),
        ("action=kms%20secrets", "action"),
        ("since=yesterday", "since"),
        ("until=2026-13-01T00:00:00Z", "until"),
        (
            "since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z",
            "until",
        ),
        ("instance=00000000-0000-4000-8000-000000000000", "instance"),
    ] {
        let r = manager
            .get(&format!("/api/v2/x-keyward/audit?{query}"))
            .await;
        let body = assert_error(&r, 400, "INVALID_QUERY_PARAM_ERR");
        assert_eq!(
            body["resources"][0]["reasons"][0]["target"]["name"], param,
            "{query}: {body}"
        );
    }

    // roles below Manager are refused
    for role in [Role::Reader, Role::ReaderPlus, Role::Writer, Role::KeyPurge] {
        let c = srv.client(manager.instance_id, role).await;
        let r = c.get("/api/v2/x-keyward/audit").await;
        assert_error(&r, 403, "UNAUTHORIZED_ERR");
    }
    // without a token
    let r = plain()
        .get(format!("{}/api/v2/x-keyward/audit", srv.base))
        .header("bluemix-instance", &manager.instance)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // a server without the database sink says so
    let c = shared().tenant().await;
    let r = c.get("/api/v2/x-keyward/audit").await;
    let body = assert_error(&r, 404, "NOT_FOUND_ERR");
    assert!(body.to_string().contains("--audit-sink database"), "{body}");
}

/// The real binary: the first-start banner prints the console's URL, and
/// `KEYWARD_CONSOLE=false` turns the console off (the banner says so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_banner_prints_the_console_url() {
    use keyward_testsupport::{Node, NodeOpts};
    let dir = tempfile::tempdir().unwrap();
    let on_dir = dir.path().join("on");
    let mut on = Node::spawn("on", &NodeOpts::sqlite(&on_dir));
    on.wait_health(200).await;
    let url = format!("{}/ui/", on.base);
    assert!(
        on.stdout()
            .lines()
            .any(|l| l.trim().starts_with("web console") && l.contains(&url)),
        "{}",
        on.stdout()
    );
    let r = plain().get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);

    let off_dir = dir.path().join("off");
    let mut off = Node::spawn_env(
        "off",
        &NodeOpts::sqlite(&off_dir),
        &[],
        &[("KEYWARD_CONSOLE", std::ffi::OsStr::new("false"))],
    );
    off.wait_health(200).await;
    assert!(
        off.stdout().contains("web console : off"),
        "{}",
        off.stdout()
    );
    let r = plain()
        .get(format!("{}/ui/", off.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

//! The query strings of every list (and other query-reading) endpoint, through the real
//! router: the first byte picks the endpoint, the rest is the query string (bytes a client
//! could not put in a URI are percent-encoded; `%` itself is kept, so malformed escapes get
//! through). Instance A holds a few keys with names, tags, an alias, a key ring and
//! versions, so lists have rows to filter, sort and page.
//! Oracle: [`keyward_fuzz::App::check`] (no 5xx, JSON bodies) and no panic.
#![no_main]

use axum::http::Method;
use keyward_fuzz::{app, App};
use libfuzzer_sys::fuzz_target;

type Path = fn(&App) -> String;

fn endpoints() -> Vec<(Method, Path)> {
    vec![
        (Method::GET, |_| "/api/v2/keys".into()),
        (Method::HEAD, |_| "/api/v2/keys".into()),
        (Method::GET, |a| format!("/api/v2/keys/{}/versions", a.root)),
        (Method::GET, |_| "/api/v2/key_rings".into()),
        (Method::GET, |_| "/api/v2/keys/registrations".into()),
        (Method::GET, |a| {
            format!("/api/v2/keys/{}/registrations", a.root)
        }),
        (Method::GET, |a| format!("/api/v2/keys/{}/policies", a.root)),
        (Method::GET, |_| "/api/v2/instance/policies".into()),
        (Method::GET, |a| format!("/api/v2/keys/{}", a.alias)),
        (Method::GET, |a| format!("/api/v2/keys/{}/metadata", a.root)),
        (Method::GET, |_| "/api/v2/import_token".into()),
        (Method::GET, |_| "/api/v2/instance/allowed_ip_port".into()),
        (Method::DELETE, |_| "/api/v2/key_rings/no-such-ring".into()),
        // The deprecated action form reads `action` from the query.
        (Method::POST, |a| format!("/api/v2/keys/{}", a.victim)),
    ]
}

fn allowed(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b)
}

fuzz_target!(init: { let _ = app(); }, |data: &[u8]| {
    static EPS: std::sync::OnceLock<Vec<(Method, Path)>> = std::sync::OnceLock::new();
    let eps = EPS.get_or_init(endpoints);
    let app = app();
    let Some((&sel, q)) = data.split_first() else {
        return;
    };
    let (method, path) = &eps[sel as usize % eps.len()];
    let mut uri = path(app);
    uri.push('?');
    for &b in q {
        if allowed(b) {
            uri.push(b as char);
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    let r = app.call(
        method.clone(),
        &uri,
        &[],
        Some((&app.manager, &app.instance_a)),
        Vec::new(),
    );
    app.check(&format!("{method} {uri}"), &r);
});

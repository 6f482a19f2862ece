//! Every endpoint that reads a request body, driven through the real router: the first byte
//! picks the endpoint, the rest is the body. In the body, `$CT` and `$CTA` become real wrapped
//! DEKs of the root key (without and with aad ["fuzz"]), `$KEY` the root key's id and `$RING`
//! a key ring's id, so that mutations of real bodies reach past the parsers.
//! Oracle: [`keyward_fuzz::App::check`] (no 5xx, JSON bodies) and no panic.
#![no_main]

use axum::http::Method;
use keyward_fuzz::{app, replace, App};
use libfuzzer_sys::fuzz_target;

struct Endpoint {
    method: Method,
    path: fn(&App) -> String,
    /// Reader instead of Manager (import-token creation: the body is parsed, then the
    /// service refuses before it would spend a second on an RSA-4096 key).
    reader: bool,
    /// Instance B (instance policies, reset after each request).
    instance_b: bool,
    form: bool,
}

const fn ep(method: Method, path: fn(&App) -> String) -> Endpoint {
    Endpoint {
        method,
        path,
        reader: false,
        instance_b: false,
        form: false,
    }
}

fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint {
            form: true,
            ..ep(Method::POST, |_| "/identity/token".into())
        },
        ep(Method::POST, |_| "/api/v2/keys".into()),
        ep(Method::POST, |_| {
            "/api/v2/keys_with_policy_overrides".into()
        }),
        ep(Method::POST, |a| {
            format!("/api/v2/keys/{}/actions/wrap", a.root)
        }),
        ep(Method::POST, |a| {
            format!("/api/v2/keys/{}/actions/unwrap", a.root)
        }),
        ep(Method::POST, |a| {
            format!("/api/v2/keys/{}/actions/rewrap", a.root)
        }),
        ep(Method::POST, |a| {
            format!("/api/v2/keys/{}/actions/rotate", a.rotated)
        }),
        ep(Method::POST, |a| {
            format!("/api/v2/keys/{}/actions/rotate", a.imported)
        }),
        ep(Method::POST, |a| {
            format!("/api/v2/keys/{}/actions/disable", a.victim)
        }),
        ep(Method::POST, |a| {
            format!("/api/v2/keys/{}/actions/enable", a.victim)
        }),
        ep(Method::POST, |a| {
            format!("/api/v2/keys/{}/actions/setKeyForDeletion", a.victim)
        }),
        ep(Method::POST, |a| {
            format!("/api/v2/keys/{}/actions/unsetKeyForDeletion", a.victim)
        }),
        ep(Method::POST, |a| {
            format!("/api/v2/keys/{}/actions/sync", a.victim)
        }),
        ep(Method::POST, |a| {
            format!("/api/v2/keys/{}/actions/restore", a.victim)
        }),
        ep(Method::POST, |a| {
            format!("/api/v2/keys/{}/restore", a.victim)
        }),
        ep(Method::PATCH, |a| format!("/api/v2/keys/{}", a.victim)),
        ep(Method::PUT, |a| {
            format!("/api/v2/keys/{}/policies", a.victim)
        }),
        ep(Method::PUT, |a| {
            format!("/api/v2/keys/{}/policies?policy=rotation", a.victim)
        }),
        ep(Method::PUT, |a| {
            format!("/api/v2/keys/{}/policies?policy=dualAuthDelete", a.victim)
        }),
        Endpoint {
            instance_b: true,
            ..ep(Method::PUT, |_| "/api/v2/instance/policies".into())
        },
        Endpoint {
            instance_b: true,
            ..ep(Method::PUT, |_| {
                "/api/v2/instance/policies?policy=allowedIP".into()
            })
        },
        Endpoint {
            reader: true,
            ..ep(Method::POST, |_| "/api/v2/import_token".into())
        },
        ep(Method::POST, |a| {
            format!("/api/v2/keys/{}?action=wrap", a.alias)
        }),
        ep(Method::POST, |a| {
            format!("/api/v2/keys/{}?action=unwrap", a.root)
        }),
        ep(Method::POST, |a| {
            format!("/api/v2/keys/{}?action=rewrap", a.root)
        }),
        ep(Method::POST, |a| {
            format!("/api/v2/keys/{}/actions/wrap", a.standard)
        }),
    ]
}

fuzz_target!(init: { let _ = app(); }, |data: &[u8]| {
    static EPS: std::sync::OnceLock<Vec<Endpoint>> = std::sync::OnceLock::new();
    let eps = EPS.get_or_init(endpoints);
    let app = app();
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let e = &eps[sel as usize % eps.len()];
    let mut body = replace(body, b"$CTA", app.ciphertext_aad.as_bytes());
    body = replace(&body, b"$CT", app.ciphertext.as_bytes());
    body = replace(&body, b"$KEY", app.root.as_bytes());
    body = replace(&body, b"$RING", app.ring.as_bytes());
    let path = (e.path)(app);
    let ct = if e.form {
        "application/x-www-form-urlencoded"
    } else {
        "application/json"
    };
    let token = if e.reader { &app.reader } else { &app.manager };
    let instance = if e.instance_b {
        &app.instance_b
    } else {
        &app.instance_a
    };
    let auth = (!e.form).then_some((token.as_str(), instance.as_str()));
    let r = app.call(
        e.method.clone(),
        &path,
        &[("content-type", ct)],
        auth,
        body,
    );
    app.check(&format!("{} {path}", e.method), &r);
    if e.instance_b {
        if let Err(err) = app.reset_instance_b() {
            panic!("{err}");
        }
    }
});

//! The IAM side: the claims IBM's tools read from the access token, the `refresh_token`
//! grant (bluemix-go `RefreshToken`), IAM's older `POST /oidc/token` login (the form and
//! `Basic bx:bx` of IBM's Python `redstone` library), and the IAM error shapes.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use keyward_testsupport::admin_json;
use serde_json::Value;

use crate::provider::{jwt_claims, Provider};
use crate::Server;

const APIKEY_GRANT: &str = "urn:ibm:params:oauth:grant-type:apikey";

async fn keys_status(s: &Server, access: &str) -> u16 {
    keyward_testsupport::http()
        .get(format!("{}/api/v2/keys", s.base()))
        .header("authorization", access)
        .header("bluemix-instance", &s.tenant.instance)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn iam_error(r: Result<Value, (u16, Value)>, status: u16, code: &str) -> Value {
    let (st, v) = r.expect_err("an IAM error");
    assert_eq!(st, status, "{v}");
    assert_eq!(v["errorCode"], code, "{v}");
    assert!(v["context"]["requestType"].is_string(), "{v}");
    v
}

#[tokio::test]
async fn claims_refresh_grant_and_revocation() {
    let s = Server::start().await;
    let mut p = Provider::configure(s.base(), &s.tenant.apikey).await;

    // fetchUserDetails' claims, and what the SDK core reads
    let c = jwt_claims(&p.access);
    assert_eq!(c["id"], c["iam_id"]);
    assert_eq!(c["sub"], c["iam_id"]);
    assert_eq!(c["account"]["bss"], "keyward", "the account of the CRNs");
    assert_eq!(c["iss"], "keyward");
    assert_eq!(
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
        3600
    );
    let user = p.user.as_ref().unwrap();
    assert_eq!(user.user_id, c["id"].as_str().unwrap());
    assert_eq!(user.account, "keyward");
    assert_eq!(user.cloud_name, "staging");
    // the account is the one in every CRN Keyward returns
    let api = s.tenant.login(s.base()).await;
    let key = api.create_root_key("claims").await.expect(201).clone();
    let crn = key["resources"][0]["crn"].as_str().unwrap().to_string();
    assert_eq!(crn.split(':').nth(6), Some("a/keyward"));

    // bluemix-go RefreshToken: response_type=cloud_iam, grant_type=refresh_token
    let first_refresh = p.refresh.clone();
    let v = p
        .bluemix_token(&[
            ("response_type", "cloud_iam"),
            ("grant_type", "refresh_token"),
            ("refresh_token", &first_refresh),
        ])
        .await
        .unwrap();
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 3600);
    assert!(v["expiration"].is_i64());
    p.set_tokens(&v);
    assert_ne!(p.refresh, first_refresh);
    assert_eq!(jwt_claims(&p.access)["id"], c["id"]);
    assert_eq!(keys_status(&s, &p.access).await, 200);

    // single purpose: a refresh token is no bearer token, an access token no refresh token
    assert_eq!(keys_status(&s, &format!("Bearer {}", p.refresh)).await, 401);
    let access = p.access.strip_prefix("Bearer ").unwrap().to_string();
    iam_error(
        p.bluemix_token(&[("grant_type", "refresh_token"), ("refresh_token", &access)])
            .await,
        400,
        "BXNIM0407E",
    );
    // a tampered one
    let mut bad = p.refresh.clone();
    bad.push('A');
    iam_error(
        p.bluemix_token(&[("grant_type", "refresh_token"), ("refresh_token", &bad)])
            .await,
        400,
        "BXNIM0407E",
    );
    // missing
    let v = iam_error(
        p.bluemix_token(&[("grant_type", "refresh_token")]).await,
        400,
        "BXNIM0109E",
    );
    assert!(v["errorMessage"]
        .as_str()
        .unwrap()
        .contains("refresh_token"));

    // bound to the API key: deleting the key stops its refresh tokens at once
    let k = admin_json(
        &s.data,
        &[
            "apikey",
            "create",
            "--instance",
            &s.tenant.instance,
            "--role",
            "Reader",
            "--name",
            "short-lived",
        ],
    );
    let q = Provider::configure(s.base(), k["apikey"].as_str().unwrap()).await;
    let refresh = q.refresh.clone();
    q.bluemix_token(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)])
        .await
        .unwrap();
    admin_json(&s.data, &["apikey", "delete", k["id"].as_str().unwrap()]);
    iam_error(
        q.bluemix_token(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)])
            .await,
        400,
        "BXNIM0407E",
    );

    // no token of any kind in the server's log
    let log = s.node.log();
    for secret in [
        &p.refresh,
        &access,
        &first_refresh,
        &refresh,
        &s.tenant.apikey,
    ] {
        assert!(!log.contains(secret.as_str()), "a token is in the log");
    }
}

#[tokio::test]
async fn oidc_token_login_and_iam_errors() {
    let s = Server::start().await;
    let http = keyward_testsupport::http();
    let post = |path: &'static str, form: Vec<(&'static str, String)>| {
        let http = http.clone();
        let url = format!("{}{path}", s.base());
        async move {
            let r = http
                .post(url)
                .header("authorization", format!("Basic {}", B64.encode("bx:bx")))
                .header("accept", "application/json")
                .form(&form)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let ct = r.headers()["content-type"].to_str().unwrap().to_string();
            assert_eq!(ct, "application/json");
            (status, r.json::<Value>().await.unwrap())
        }
    };
    // redstone: POST /oidc/token, grant apikey + response_type=cloud_iam, Basic bx:bx
    let (st, v) = post(
        "/oidc/token",
        vec![
            ("grant_type", APIKEY_GRANT.into()),
            ("response_type", "cloud_iam".into()),
            ("apikey", s.tenant.apikey.clone()),
        ],
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let access = format!("Bearer {}", v["access_token"].as_str().unwrap());
    assert_eq!(keys_status(&s, &access).await, 200);
    // its refresh token works on both paths
    let (st, v2) = post(
        "/oidc/token",
        vec![
            ("grant_type", "refresh_token".into()),
            ("refresh_token", v["refresh_token"].as_str().unwrap().into()),
        ],
    )
    .await;
    assert_eq!(st, 200, "{v2}");
    let (st, _) = post(
        "/identity/token",
        vec![
            ("grant_type", "refresh_token".into()),
            (
                "refresh_token",
                v2["refresh_token"].as_str().unwrap().into(),
            ),
        ],
    )
    .await;
    assert_eq!(st, 200);

    // IAM's error shape on both paths
    for path in ["/oidc/token", "/identity/token"] {
        for (form, status, code) in [
            (
                vec![
                    ("grant_type", APIKEY_GRANT.to_string()),
                    ("apikey", "kw_nope".into()),
                ],
                400,
                "BXNIM0415E",
            ),
            (
                vec![("grant_type", "password".to_string())],
                400,
                "BXNIM0104E",
            ),
            (
                vec![("grant_type", APIKEY_GRANT.to_string())],
                400,
                "BXNIM0109E",
            ),
            (vec![], 400, "BXNIM0104E"),
        ] {
            let (st, v) = post(path, form).await;
            assert_eq!(
                (st, v["errorCode"].as_str()),
                (status, Some(code)),
                "{path}: {v}"
            );
            assert!(v["errorMessage"].is_string(), "{v}");
            assert!(v["context"]["requestType"].is_string(), "{v}");
        }
    }
}

//! The IAM token endpoints the IBM SDKs, CLIs and Terraform provider call:
//! `POST /identity/token` (the API-key grant and the `refresh_token` grant) and IAM's older
//! login path `POST /oidc/token` (the same grants; the `response_type=cloud_iam` field and the
//! `Basic bx:bx` client authentication that IBM's `redstone` library sends are accepted and
//! change nothing). Errors have IAM's shape (`errorCode`, `errorMessage`, `context`), not Key
//! Protect's envelope. No token or API key is ever logged.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use keyward_wire::req::IdentityTokenForm;
use keyward_wire::resp::{IamError, IamErrorContext, IdentityToken};

use crate::{extract, json_response, AppState};

const APIKEY_GRANT: &str = "urn:ibm:params:oauth:grant-type:apikey";
const REFRESH_GRANT: &str = "refresh_token";

fn iam_error(request_type: &str, status: StatusCode, code: &str, message: &str) -> Response {
    json_response(
        status,
        &IamError {
            context: IamErrorContext {
                request_type: request_type.into(),
            },
            error_code: code.into(),
            error_message: message.into(),
        },
    )
}

/// `POST /identity/token`.
pub async fn token(st: State<AppState>, req: axum::extract::Request) -> Response {
    exchange(st, req, "incoming.Identity_Token").await
}

/// `POST /oidc/token`.
pub async fn oidc_token(st: State<AppState>, req: axum::extract::Request) -> Response {
    exchange(st, req, "incoming.OIDC_Token").await
}

async fn exchange(
    State(st): State<AppState>,
    req: axum::extract::Request,
    request_type: &'static str,
) -> Response {
    let err = |status, code, message| iam_error(request_type, status, code, message);
    let (parts, body) = req.into_parts();
    let ip = st.client_ip(&parts);
    let Ok(bytes) = axum::body::to_bytes(body, extract::BODY_LIMIT).await else {
        return err(
            StatusCode::PAYLOAD_TOO_LARGE,
            "BXNIM0109E",
            "Request body too large",
        );
    };
    let form = IdentityTokenForm::parse(&bytes);
    let (secret, refresh) = match form.grant_type.as_deref() {
        Some(APIKEY_GRANT) => (form.apikey.as_deref(), false),
        Some(REFRESH_GRANT) => (form.refresh_token.as_deref(), true),
        _ => {
            return err(
                StatusCode::BAD_REQUEST,
                "BXNIM0104E",
                "Unsupported grant_type: only urn:ibm:params:oauth:grant-type:apikey and refresh_token are supported",
            )
        }
    };
    let Some(secret) = secret.filter(|k| !k.is_empty()) else {
        let message = if refresh {
            "Property missing or empty: refresh_token"
        } else {
            "Property missing or empty: apikey"
        };
        return err(StatusCode::BAD_REQUEST, "BXNIM0109E", message);
    };
    if let Err(retry) = st.limiter.auth_allowed(ip) {
        let mut r = err(
            StatusCode::TOO_MANY_REQUESTS,
            "BXNIM0429E",
            "Too many failed API key attempts from this address; retry later",
        );
        if let Ok(v) = axum::http::HeaderValue::from_str(&retry.to_string()) {
            r.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
        }
        return r;
    }
    let issued = if refresh {
        st.svc.refresh_token(secret).await
    } else {
        st.svc.exchange_api_key(secret).await
    };
    match issued {
        Ok(t) => json_response(
            StatusCode::OK,
            &IdentityToken {
                access_token: t.access_token,
                expiration: t.expiration,
                expires_in: t.expires_in,
                refresh_token: t.refresh_token,
                scope: "ibm openid".into(),
                token_type: "Bearer".into(),
            },
        ),
        Err(e) if e.code == keyward_service::ErrorCode::Unavailable => {
            crate::error::log_server_error(&e, "API key could not be exchanged");
            let mut r = err(
                StatusCode::SERVICE_UNAVAILABLE,
                "BXNIM0500E",
                "The identity service is temporarily unavailable",
            );
            r.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(crate::error::UNAVAILABLE_RETRY_AFTER),
            );
            r
        }
        Err(_) => {
            st.limiter.auth_failed(ip);
            if refresh {
                err(
                    StatusCode::BAD_REQUEST,
                    "BXNIM0407E",
                    "Provided refresh token is invalid",
                )
            } else {
                err(
                    StatusCode::BAD_REQUEST,
                    "BXNIM0415E",
                    "Provided API key could not be found",
                )
            }
        }
    }
}

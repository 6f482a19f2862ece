//! `POST /identity/token`: the IAM API-key exchange the IBM SDKs perform.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use keyward_wire::req::IdentityTokenForm;
use keyward_wire::resp::{IamError, IamErrorContext, IdentityToken};

use crate::{extract, json_response, AppState};

const APIKEY_GRANT: &str = "urn:ibm:params:oauth:grant-type:apikey";

fn iam_error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(
        status,
        &IamError {
            context: IamErrorContext {
                request_type: "incoming.Identity_Token".into(),
            },
            error_code: code.into(),
            error_message: message.into(),
        },
    )
}

pub async fn token(State(st): State<AppState>, req: axum::extract::Request) -> Response {
    let (parts, body) = req.into_parts();
    let ip = st.client_ip(&parts);
    let Ok(bytes) = axum::body::to_bytes(body, extract::BODY_LIMIT).await else {
        return iam_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "BXNIM0109E",
            "Request body too large",
        );
    };
    let form = IdentityTokenForm::parse(&bytes);
    if form.grant_type.as_deref() != Some(APIKEY_GRANT) {
        return iam_error(
            StatusCode::BAD_REQUEST,
            "BXNIM0104E",
            "Unsupported grant_type: only urn:ibm:params:oauth:grant-type:apikey is supported",
        );
    }
    let Some(apikey) = form.apikey.as_deref().filter(|k| !k.is_empty()) else {
        return iam_error(
            StatusCode::BAD_REQUEST,
            "BXNIM0109E",
            "Property missing or empty: apikey",
        );
    };
    if let Err(retry) = st.limiter.auth_allowed(ip) {
        let mut r = iam_error(
            StatusCode::TOO_MANY_REQUESTS,
            "BXNIM0429E",
            "Too many failed API key attempts from this address; retry later",
        );
        if let Ok(v) = axum::http::HeaderValue::from_str(&retry.to_string()) {
            r.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
        }
        return r;
    }
    match st.svc.exchange_api_key(apikey).await {
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
            let mut r = iam_error(
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
            iam_error(
                StatusCode::BAD_REQUEST,
                "BXNIM0415E",
                "Provided API key could not be found",
            )
        }
    }
}

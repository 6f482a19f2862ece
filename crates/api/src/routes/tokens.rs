//! `/api/v2/import_token`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use crate::error::{op, ApiError};
use crate::extract::{self, opt_int, Auth};
use crate::wire::token_json;
use crate::{json_response, AppState};

const CREATE: &str = "Import token could not be created";
const GET: &str = "Import token could not be retrieved";

pub async fn create(
    State(st): State<AppState>,
    Auth(caller): Auth,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = extract::read_body(&headers, body, CREATE).await?;
    let obj = extract::object_or_empty(extract::parse_json(&bytes, CREATE)?, CREATE)?;
    let expiration = opt_int(&obj, "expiration", "expiration", CREATE)?;
    let max = opt_int(&obj, "maxallowedretrievals", "maxAllowedRetrievals", CREATE)?;
    let info = st
        .svc
        .create_import_token(&caller, expiration, max)
        .await
        .map_err(op(CREATE))?;
    Ok(json_response(StatusCode::OK, &token_json(&info)))
}

pub async fn get(State(st): State<AppState>, Auth(caller): Auth) -> Result<Response, ApiError> {
    let info = st.svc.get_import_token(&caller).await.map_err(op(GET))?;
    Ok(json_response(StatusCode::OK, &token_json(&info)))
}

//! `/api/v2/import_token`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use keyward_service::tokens::TokenAlgorithm;
use keyward_wire::req::ImportTokenRequest;

use crate::error::{op, ApiError};
use crate::extract::{self, Auth};
use crate::wire::token;
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
    let body: ImportTokenRequest = extract::object_body(&bytes, CREATE)?;
    let algorithm = TokenAlgorithm::from_wire(body.algorithm.as_deref()).map_err(op(CREATE))?;
    let info = st
        .svc
        .create_import_token(
            &caller,
            body.expiration,
            body.maxallowedretrievals,
            algorithm,
        )
        .await
        .map_err(op(CREATE))?;
    Ok(json_response(StatusCode::OK, &token(&info)))
}

pub async fn get(State(st): State<AppState>, Auth(caller): Auth) -> Result<Response, ApiError> {
    let info = st.svc.get_import_token(&caller).await.map_err(op(GET))?;
    Ok(json_response(StatusCode::OK, &token(&info)))
}

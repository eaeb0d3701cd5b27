//! Network policy (§3.9): `GET|POST /v1/sprites/{name}/policy/network`.
//!
//! POST answers 204 (what every SDK checks for) and puts the policy in force at once when the
//! sprite runs; a sleeping sprite gets it at its next start. The body is decoded strictly:
//! anything else than `{"rules":[…]}` with well-formed rules is 400 `invalid policy config`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use wisp_api::policy::NetworkPolicy;

use super::error::ApiError;
use super::extract::ApiPath;
use super::sprites::find_sprite;
use super::AppState;
use crate::auth::Caller;

#[utoipa::path(
    operation_id = "policy_get_network",
    get,
    path = "/v1/sprites/{name}/policy/network",
    tag = "network",
    params(crate::api::openapi::params::SpritePath),
    responses(
        (status = 200, description = "The policy; no rules: unrestricted", body = wisp_api::policy::NetworkPolicy),
        (status = 404, description = "No such sprite", body = wisp_api::error::ErrorBody),
    ),
)]
pub async fn get_network(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<NetworkPolicy>, ApiError> {
    let row = find_sprite(&st, &caller, &name)?;
    Ok(Json(st.manager.runtime().network_policy(&row.id).await?))
}

#[utoipa::path(
    operation_id = "policy_set_network",
    post,
    path = "/v1/sprites/{name}/policy/network",
    tag = "network",
    params(crate::api::openapi::params::SpritePath),
    request_body = wisp_api::policy::NetworkPolicy,
    responses(
        (status = 204, description = "In force"),
        (status = 400, description = "Invalid parameters", body = wisp_api::error::ErrorBody),
        (status = 404, description = "No such sprite", body = wisp_api::error::ErrorBody),
    ),
)]
pub async fn set_network(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let row = find_sprite(&st, &caller, &name)?;
    let policy = NetworkPolicy::from_json(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid policy config: {e}")))?;
    st.manager
        .runtime()
        .set_network_policy(&row.id, &policy)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

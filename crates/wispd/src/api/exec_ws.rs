//! `GET /v1/sprites/{name}/exec[/{session_id}]`: WebSocket exec and attach, or (without an
//! upgrade) the session list / one session.

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use wisp_api::SPRITE_CAPABILITIES;

use super::error::ApiError;
use super::exec::{bridge_options, parse_exec_params, start_session};
use super::exec_bridge;
use super::extract::{query_pairs, ApiPath};
use super::sessions;
use super::sprites::find_sprite;
use super::AppState;
use crate::auth::Caller;

type Upgrade = Result<WebSocketUpgrade, WebSocketUpgradeRejection>;

fn wants_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("websocket"))
}

#[utoipa::path(
    operation_id = "exec_ws_exec_get",
    get,
    path = "/v1/sprites/{name}/exec",
    tag = "exec",
    params(crate::api::openapi::params::SpritePath, crate::api::openapi::params::ExecQuery),
    responses(
        (status = 101, description = "With `Upgrade: websocket`: the exec session; binary frames carry stdin/stdout/stderr (one stream byte, then data), text frames `TextMessage`. Switched to a WebSocket"),
        (status = 200, description = "Without an upgrade: the sprite's exec sessions", body = wisp_api::exec::SessionList),
        (status = 400, description = "Invalid parameters", body = wisp_api::error::ErrorBody),
        (status = 404, description = "No such sprite", body = wisp_api::error::ErrorBody),
        (status = 503, description = "The sprite could not be woken or started", body = wisp_api::error::ErrorBody),
    ),
)]
pub async fn exec_get(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    ws: Upgrade,
) -> Result<Response, ApiError> {
    if !wants_websocket(&headers) {
        return sessions::list(&st, &caller, &name).await;
    }
    upgrade(st, caller, name, raw, None, ws).await
}

#[utoipa::path(
    operation_id = "exec_ws_session_get",
    get,
    path = "/v1/sprites/{name}/exec/{session_id}",
    tag = "exec",
    params(crate::api::openapi::params::SessionPath, crate::api::openapi::params::ExecQuery),
    responses(
        (status = 101, description = "With `Upgrade: websocket`: attached to the session. Switched to a WebSocket"),
        (status = 200, description = "Without an upgrade: the session", body = wisp_api::exec::SessionEntry),
        (status = 400, description = "Invalid parameters", body = wisp_api::error::ErrorBody),
        (status = 404, description = "No such sprite or session", body = wisp_api::error::ErrorBody),
    ),
)]
pub async fn session_get(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((name, session_id)): ApiPath<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    ws: Upgrade,
) -> Result<Response, ApiError> {
    if !wants_websocket(&headers) {
        return sessions::one(&st, &caller, &name, &session_id).await;
    }
    upgrade(st, caller, name, raw, Some(session_id), ws).await
}

/// `HEAD .../exec`: the Go SDK reads `Sprite-Version` here before attaching.
#[utoipa::path(
    operation_id = "exec_ws_exec_head",
    head,
    path = "/v1/sprites/{name}/exec",
    tag = "exec",
    params(crate::api::openapi::params::SpritePath),
    responses(
        (status = 200, description = "The sprite exists; `Sprite-Version` names the server"),
        (status = 404, description = "No such sprite", body = wisp_api::error::ErrorBody),
    ),
)]
pub async fn exec_head(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    find_sprite(&st, &caller, &name)?;
    Ok(StatusCode::OK)
}

/// Validates everything and starts (or attaches to) the session *before* upgrading, so that
/// every failure is an HTTP response with a JSON body.
async fn upgrade(
    st: AppState,
    caller: Caller,
    name: String,
    raw: Option<String>,
    path_session: Option<String>,
    ws: Upgrade,
) -> Result<Response, ApiError> {
    let ws = ws.map_err(|r| ApiError::new(r.status(), r.body_text()))?;
    let pairs = query_pairs(raw.as_deref());
    let params = parse_exec_params(&pairs, path_session.as_deref())?;
    let row = find_sprite(&st, &caller, &name)?;
    let started = start_session(&st, &row, &params).await?;
    let opts = bridge_options(&started, &params, &pairs, false);
    let stream = started.stream;
    let activity = started.activity;
    let manager = st.manager.clone();
    let sprite_id = row.id.clone();
    let mut res = ws
        .on_failed_upgrade(|e| tracing::debug!("exec upgrade failed: {e}"))
        .on_upgrade(move |socket| async move {
            exec_bridge::run(socket, stream, opts, &activity).await;
            manager.touch_active(&sprite_id);
            drop(activity);
        })
        .into_response();
    res.headers_mut().insert(
        "x-sprite-capabilities",
        HeaderValue::from_static(SPRITE_CAPABILITIES),
    );
    Ok(res)
}

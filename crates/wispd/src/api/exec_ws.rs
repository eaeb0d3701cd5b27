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
use super::exec::{parse_exec_params, start_session};
use super::exec_bridge::{self, BridgeOptions};
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
pub async fn exec_head(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    find_sprite(&st, &caller, &name)?;
    Ok(StatusCode::OK)
}

fn explicit_stdin(pairs: &[(String, String)]) -> bool {
    pairs
        .iter()
        .any(|(k, v)| k == "stdin" && matches!(v.as_str(), "true" | "1" | "True" | "TRUE" | "yes"))
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
    // An attacher gets the session's own mode. Stdin flows to an attached TTY session (keys
    // typed into a re-attached shell); to a non-TTY one only with an explicit stdin=true, so
    // that an attacher's immediate EOF frame (Go sends one when it has no stdin) cannot close
    // the stdin of a command someone else feeds.
    let opts = if started.is_owner {
        BridgeOptions {
            tty: params.tty,
            stdin: params.stdin,
            is_owner: true,
        }
    } else {
        let tty = started.stream.session.tty;
        BridgeOptions {
            tty,
            stdin: tty || explicit_stdin(&pairs),
            is_owner: false,
        }
    };
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

//! Checkpoints (§3.6): create, list, get, delete, restore.
//!
//! Create and restore answer NDJSON progress lines, as the SDKs expect. Both take
//! milliseconds, so the operation runs to its end before the response starts: a failure then
//! gets its real status (404, 409, 507, ...) with the JSON error body instead of a 200 whose
//! last line says "error".

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use tokio::sync::mpsc::UnboundedReceiver;
use wisp_api::checkpoint::{
    is_valid_checkpoint_id, Checkpoint, CreateCheckpointRequest, StreamEvent, CURRENT,
    MAX_COMMENT_BYTES,
};

use super::error::ApiError;
use super::extract::{query_pairs, ApiJson, ApiPath};
use super::sprites::find_sprite;
use super::AppState;
use crate::auth::Caller;
use crate::manager::Progress;
use crate::store::{CheckpointRow, CheckpointState};
use crate::timefmt;

fn flag(pairs: &[(String, String)], key: &str) -> bool {
    pairs
        .iter()
        .any(|(k, v)| k == key && matches!(v.as_str(), "" | "true" | "1"))
}

/// A checkpoint id from a path: anything that cannot name one is simply not found.
fn checkpoint_id(id: &str) -> Result<&str, ApiError> {
    if is_valid_checkpoint_id(id) {
        Ok(id)
    } else {
        Err(ApiError::not_found(format!("checkpoint {id:?} not found")))
    }
}

/// The ancestors of each checkpoint, nearest first, following `source_id` links.
fn histories(rows: &[CheckpointRow]) -> HashMap<String, Vec<String>> {
    let parent: HashMap<&str, Option<&str>> = rows
        .iter()
        .map(|r| (r.id.as_str(), r.source_id.as_deref()))
        .collect();
    rows.iter()
        .map(|r| {
            let mut out: Vec<String> = Vec::new();
            let mut next = r.source_id.as_deref();
            while let Some(id) = next {
                if out.iter().any(|x| x == id) || out.len() > rows.len() {
                    break;
                }
                out.push(id.to_string());
                next = parent.get(id).copied().flatten();
            }
            (r.id.clone(), out)
        })
        .collect()
}

fn object(row: &CheckpointRow, history: Vec<String>) -> Checkpoint {
    Checkpoint {
        id: row.id.clone(),
        create_time: row.created_at.clone(),
        comment: row.comment.clone(),
        is_auto: row.is_auto,
        source_id: row.source_id.clone(),
        history,
        health: String::new(),
    }
}

/// The pseudo entry for the live state.
fn current_entry(current: Option<String>, history: Vec<String>) -> Checkpoint {
    Checkpoint {
        id: CURRENT.to_string(),
        create_time: timefmt::now(),
        comment: String::new(),
        is_auto: false,
        source_id: current,
        history,
        health: String::new(),
    }
}

fn all_checkpoints(
    st: &AppState,
    sprite_id: &str,
    include_auto: bool,
) -> Result<Vec<Checkpoint>, ApiError> {
    let every = st.store.checkpoints(sprite_id, true)?;
    let hist = histories(&every);
    let current = st.store.current_checkpoint(sprite_id)?;
    let mut current_history: Vec<String> = current.iter().cloned().collect();
    if let Some(c) = &current {
        current_history.extend(hist.get(c).cloned().unwrap_or_default());
    }
    let mut out = vec![current_entry(current, current_history)];
    out.extend(
        every
            .iter()
            .filter(|r| include_auto || !r.is_auto)
            .map(|r| object(r, hist.get(&r.id).cloned().unwrap_or_default())),
    );
    Ok(out)
}

/// `GET .../checkpoints[?includeAuto=true][&history=<id>]`: newest first, `Current` on top.
/// `history=<id>` keeps the checkpoints that descend from `<id>`.
#[utoipa::path(
    operation_id = "checkpoints_list",
    get,
    path = "/v1/sprites/{name}/checkpoints",
    tag = "checkpoints",
    params(crate::api::openapi::params::SpritePath, crate::api::openapi::params::CheckpointListQuery),
    responses(
        (status = 200, description = "Newest first, the live state (`Current`) on top", body = Vec<wisp_api::checkpoint::Checkpoint>),
        (status = 404, description = "No such sprite", body = wisp_api::error::ErrorBody),
    ),
)]
pub async fn list(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Vec<Checkpoint>>, ApiError> {
    let pairs = query_pairs(raw.as_deref());
    let row = find_sprite(&st, &caller, &name)?;
    let include_auto = flag(&pairs, "includeAuto") || flag(&pairs, "include_auto");
    let mut all = all_checkpoints(&st, &row.id, include_auto)?;
    if let Some((_, h)) = pairs.iter().find(|(k, v)| k == "history" && !v.is_empty()) {
        all.retain(|c| c.id == *h || c.history.contains(h));
    }
    Ok(Json(all))
}

/// `GET .../checkpoints/{id}`.
#[utoipa::path(
    operation_id = "checkpoints_get",
    get,
    path = "/v1/sprites/{name}/checkpoints/{id}",
    tag = "checkpoints",
    params(crate::api::openapi::params::CheckpointPath),
    responses(
        (status = 200, description = "The checkpoint", body = wisp_api::checkpoint::Checkpoint),
        (status = 404, description = "No such sprite or checkpoint", body = wisp_api::error::ErrorBody),
    ),
)]
pub async fn get(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((name, id)): ApiPath<(String, String)>,
) -> Result<Json<Checkpoint>, ApiError> {
    let row = find_sprite(&st, &caller, &name)?;
    if id != CURRENT {
        checkpoint_id(&id)?;
    }
    all_checkpoints(&st, &row.id, true)?
        .into_iter()
        .find(|c| c.id == id)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("checkpoint {id:?} not found")))
}

/// `DELETE .../checkpoints/{id}`: 204; 409 for the current one.
#[utoipa::path(
    operation_id = "checkpoints_delete",
    delete,
    path = "/v1/sprites/{name}/checkpoints/{id}",
    tag = "checkpoints",
    params(crate::api::openapi::params::CheckpointPath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such sprite or checkpoint", body = wisp_api::error::ErrorBody),
        (status = 409, description = "The live state descends from it", body = wisp_api::error::ErrorBody),
    ),
)]
pub async fn delete(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((name, id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let row = find_sprite(&st, &caller, &name)?;
    if id == CURRENT || id == "active" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "the current state cannot be deleted",
        ));
    }
    let id = checkpoint_id(&id)?;
    st.manager.delete_checkpoint(&row, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Collected progress lines plus the final `complete` line, as an NDJSON body.
fn ndjson(mut rx: UnboundedReceiver<StreamEvent>, done: String, id: &str) -> Response {
    let mut lines = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        lines.push(ev);
    }
    lines.push(StreamEvent::Complete {
        data: done,
        time: timefmt::now(),
        id: Some(id.to_string()),
    });
    let mut body = Vec::new();
    for ev in &lines {
        if serde_json::to_writer(&mut body, ev).is_ok() {
            body.push(b'\n');
        }
    }
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from(body),
    )
        .into_response()
}

/// `POST .../checkpoint`.
#[utoipa::path(
    operation_id = "checkpoints_create",
    post,
    path = "/v1/sprites/{name}/checkpoint",
    tag = "checkpoints",
    params(crate::api::openapi::params::SpritePath),
    request_body(content = Option<wisp_api::checkpoint::CreateCheckpointRequest>, description = "Optional: no body is `{}`"),
    responses(
        (status = 200, description = "Progress, one JSON event a line; the last is `complete` or `error`", body = wisp_api::checkpoint::StreamEvent, content_type = "application/x-ndjson"),
        (status = 400, description = "Invalid parameters", body = wisp_api::error::ErrorBody),
        (status = 404, description = "No such sprite", body = wisp_api::error::ErrorBody),
        (status = 507, description = "The storage pool is full", body = wisp_api::error::ErrorBody),
    ),
)]
pub async fn create(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<CreateCheckpointRequest>,
) -> Result<Response, ApiError> {
    let comment = req.comment.unwrap_or_default();
    if comment.len() > MAX_COMMENT_BYTES {
        return Err(ApiError::bad_request(format!(
            "comment is longer than {MAX_COMMENT_BYTES} bytes"
        )));
    }
    let row = find_sprite(&st, &caller, &name)?;
    let _busy = st.manager.activity().begin(&row.id);
    let (progress, rx) = Progress::channel();
    let ck = st
        .manager
        .create_checkpoint(&row, comment, progress)
        .await?;
    let done = format!("Checkpoint {} created successfully", ck.id);
    Ok(ndjson(rx, done, &ck.id))
}

/// `POST .../checkpoints/{id}/restore`.
#[utoipa::path(
    operation_id = "checkpoints_restore",
    post,
    path = "/v1/sprites/{name}/checkpoints/{id}/restore",
    tag = "checkpoints",
    params(crate::api::openapi::params::CheckpointPath),
    responses(
        (status = 200, description = "Progress, one JSON event a line", body = wisp_api::checkpoint::StreamEvent, content_type = "application/x-ndjson"),
        (status = 404, description = "No such sprite or checkpoint", body = wisp_api::error::ErrorBody),
    ),
)]
pub async fn restore(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((name, id)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let row = find_sprite(&st, &caller, &name)?;
    let id = checkpoint_id(&id)?;
    let _busy = st.manager.activity().begin(&row.id);
    let (progress, rx) = Progress::channel();
    st.manager.restore(&row, id, progress).await?;
    Ok(ndjson(rx, format!("Restore from {id} complete"), id))
}

/// How long a detached restore waits before it starts, so that its caller reads the 202
/// before its processes are stopped.
const DETACHED_RESTORE_DELAY: Duration = Duration::from_millis(200);

/// `POST .../checkpoints/{id}/restore` from inside the sprite (§3.12, `crate::insprite`): the
/// restore stops the caller's own processes, so this answers 202 as soon as the checkpoint is
/// known to exist and restores in the background (the sprite's lock orders it after anything
/// already running; a failure is logged).
pub async fn restore_detached(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((name, id)): ApiPath<(String, String)>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let row = find_sprite(&st, &caller, &name)?;
    let id = checkpoint_id(&id)?.to_string();
    match st.store.checkpoint(&row.id, &id)? {
        Some(ck) if ck.state == CheckpointState::Ready => {}
        _ => return Err(ApiError::not_found(format!("checkpoint {id:?} not found"))),
    }
    let manager = st.manager.clone();
    let target = id.clone();
    tokio::spawn(async move {
        let _busy = manager.activity().begin(&row.id);
        tokio::time::sleep(DETACHED_RESTORE_DELAY).await;
        match manager.restore(&row, &target, Progress::default()).await {
            Ok(()) => tracing::info!(sprite_id = %row.id, checkpoint = %target,
                "restore requested from inside the sprite done"),
            Err(e) => tracing::warn!(sprite_id = %row.id, checkpoint = %target,
                "restore requested from inside the sprite failed: {e}"),
        }
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({
            "status": "restoring",
            "checkpoint": id,
            "message": format!(
                "Restoring from {id}: the sprite's processes stop and restart in a moment"
            ),
        })),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, source: Option<&str>) -> CheckpointRow {
        CheckpointRow {
            sprite_id: "s".into(),
            id: id.into(),
            state: crate::store::CheckpointState::Ready,
            is_auto: false,
            comment: String::new(),
            source_id: source.map(str::to_string),
            created_at: "t".into(),
        }
    }

    #[test]
    fn history_follows_sources() {
        let rows = vec![
            row("v3", Some("v1")),
            row("v2", Some("v1")),
            row("v1", Some("v0")),
            row("v0", None),
        ];
        let h = histories(&rows);
        assert_eq!(h["v3"], vec!["v1", "v0"]);
        assert_eq!(h["v0"], Vec::<String>::new());
        // A cycle (never written, but never trusted either) ends.
        let h = histories(&[row("a", Some("b")), row("b", Some("a"))]);
        assert!(h["a"].len() <= 2);
    }
}

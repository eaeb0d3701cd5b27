//! Exec sessions over plain HTTP: the list, one session, and kill.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;
use tokio::sync::mpsc;
use wisp_api::duration::parse_duration;
use wisp_api::exec::{signal_number, SessionEntry, SessionList};

use super::error::ApiError;
use super::extract::{query_pairs, ApiPath};
use super::sprites::find_sprite;
use super::AppState;
use crate::auth::Caller;
use crate::runtime::{ExecEvent, ExecEvents, Runtime, RuntimeError, SessionInfo};
use crate::store::SpriteRow;
use crate::timefmt;

/// A session counts as active when it wrote output this recently.
const ACTIVE_WINDOW_MS: i64 = 10_000;
const DEFAULT_KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest grace period a kill waits before SIGKILL. The wait outlives the request (the kill
/// finishes after its client goes) and keeps the sprite awake, so a `timeout` of years must
/// not pin it; services cap their durations the same way.
const MAX_KILL_TIMEOUT: Duration = Duration::from_secs(3600);
/// How long to wait for the process to go after SIGKILL.
const AFTER_KILL_WAIT: Duration = Duration::from_secs(5);

pub fn session_entry(s: &SessionInfo, now_ms: i64) -> SessionEntry {
    SessionEntry {
        id: s.session_id.clone(),
        command: s.command.clone(),
        workdir: s.workdir.clone(),
        created: timefmt::from_unix_secs(s.created).unwrap_or_default(),
        tty: s.tty,
        is_active: s
            .last_output_ms
            .is_some_and(|t| now_ms.saturating_sub(t) <= ACTIVE_WINDOW_MS),
        bytes_per_second: 0.0,
        last_activity: s.last_output_ms.and_then(timefmt::from_unix_millis),
    }
}

/// Sessions of a sprite. A cold sprite has none, so it is not woken for this.
async fn sessions_of(st: &AppState, row: &SpriteRow) -> Result<Vec<SessionInfo>, ApiError> {
    let runtime = st.manager.runtime();
    match runtime.is_running(&row.id).await {
        Ok(false) => return Ok(Vec::new()),
        Ok(true) | Err(RuntimeError::Unresponsive) => {}
        Err(e) => return Err(e.into()),
    }
    match runtime.list_sessions(&row.id).await {
        Err(RuntimeError::NotRunning) => Ok(Vec::new()),
        other => Ok(other?),
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub async fn list(st: &AppState, caller: &Caller, name: &str) -> Result<Response, ApiError> {
    let row = find_sprite(st, caller, name)?;
    let now = now_ms();
    let sessions: Vec<SessionEntry> = sessions_of(st, &row)
        .await?
        .iter()
        .map(|s| session_entry(s, now))
        .collect();
    Ok(Json(SessionList {
        count: sessions.len(),
        sessions,
    })
    .into_response())
}

pub async fn one(
    st: &AppState,
    caller: &Caller,
    name: &str,
    session_id: &str,
) -> Result<Response, ApiError> {
    let row = find_sprite(st, caller, name)?;
    let sessions = sessions_of(st, &row).await?;
    let s = sessions
        .iter()
        .find(|s| s.session_id == session_id)
        .ok_or_else(|| ApiError::session_not_found(session_id))?;
    Ok(Json(session_entry(s, now_ms())).into_response())
}

/// `signal` and `timeout` of a kill request.
pub fn parse_kill_params(pairs: &[(String, String)]) -> Result<(i32, String, Duration), ApiError> {
    let mut signal = "SIGTERM".to_string();
    let mut timeout = DEFAULT_KILL_TIMEOUT;
    for (k, v) in pairs {
        match k.as_str() {
            "signal" if !v.is_empty() => signal = v.clone(),
            "timeout" if !v.is_empty() => {
                timeout = parse_duration(v)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?
                    .min(MAX_KILL_TIMEOUT)
            }
            _ => {}
        }
    }
    let number = signal_number(&signal)
        .ok_or_else(|| ApiError::bad_request(format!("unknown signal {signal:?}")))?;
    let bare = signal.trim();
    let bare = bare
        .strip_prefix("SIG")
        .unwrap_or(bare)
        .to_ascii_uppercase();
    Ok((number, format!("SIG{bare}"), timeout))
}

/// `POST .../exec/{id}/kill`: signal, wait up to `timeout`, escalate to SIGKILL; progress is
/// streamed as NDJSON. `timeout=0` sends the signal and does not wait.
#[utoipa::path(
    operation_id = "sessions_kill",
    post,
    path = "/v1/sprites/{name}/exec/{session_id}/kill",
    tag = "exec",
    params(crate::api::openapi::params::SessionPath, crate::api::openapi::params::KillQuery),
    responses(
        (status = 200, description = "Progress, one JSON event a line", content_type = "application/x-ndjson"),
        (status = 400, description = "Invalid parameters", body = wisp_api::error::ErrorBody),
        (status = 404, description = "No such sprite or session", body = wisp_api::error::ErrorBody),
    ),
)]
pub async fn kill(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((name, session_id)): ApiPath<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (signal, signal_name, timeout) = parse_kill_params(&query_pairs(raw.as_deref()))?;
    let row = find_sprite(&st, &caller, &name)?;
    // In flight (counted before the wake) until the kill job ends.
    let activity = st.manager.activity().begin(&row.id);
    st.manager.wake(&row).await?;
    let runtime = st.manager.runtime().clone();
    // Attaching first tells whether the session exists (404 before any streaming) and is
    // how its exit status is learned.
    let stream = match runtime.attach(&row.id, &session_id).await {
        Ok(s) => s,
        Err(RuntimeError::SessionNotFound) => return Err(ApiError::session_not_found(&session_id)),
        Err(e) => return Err(e.into()),
    };
    let (tx, rx) = mpsc::channel::<serde_json::Value>(8);
    let job = KillJob {
        runtime,
        sprite_id: row.id.clone(),
        session_id,
        signal,
        signal_name,
        timeout,
        tx,
        _activity: activity,
    };
    tokio::spawn(job.run(stream.events, stream.input));
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        let v = rx.recv().await?;
        let mut line = serde_json::to_vec(&v).unwrap_or_default();
        line.push(b'\n');
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(line)), rx))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

struct KillJob {
    runtime: Arc<dyn Runtime>,
    sprite_id: String,
    session_id: String,
    signal: i32,
    signal_name: String,
    timeout: Duration,
    tx: mpsc::Sender<serde_json::Value>,
    _activity: crate::activity::ActivityGuard,
}

enum Waited {
    Exited(Option<i32>),
    TimedOut,
}

async fn wait_exit(events: &mut dyn ExecEvents, limit: Duration) -> Waited {
    let wait = async {
        loop {
            match events.next_event().await {
                Ok(Some(ExecEvent::Exit(code))) => return Some(code),
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return None,
            }
        }
    };
    match tokio::time::timeout(limit, wait).await {
        Ok(code) => Waited::Exited(code),
        Err(_) => Waited::TimedOut,
    }
}

impl KillJob {
    async fn emit(&self, v: serde_json::Value) {
        let _ = self.tx.send(v).await;
    }

    async fn complete(&self, code: Option<i32>) {
        match code {
            Some(c) => self.emit(json!({"type": "complete", "exit_code": c})).await,
            None => self.emit(json!({"type": "complete"})).await,
        }
    }

    async fn run(
        self,
        mut events: Box<dyn ExecEvents>,
        // Held until the end: dropping it would detach before the exit is seen.
        _input: Box<dyn crate::runtime::ExecInput>,
    ) {
        let pid = self
            .session_id
            .parse::<i64>()
            .map(|p| json!(p))
            .unwrap_or(json!(self.session_id));
        self.emit(json!({
            "type": "signal",
            "message": format!("Signaling {} to process group {}", self.signal_name, self.session_id),
            "signal": self.signal_name,
            "pid": pid,
        }))
        .await;
        match self
            .runtime
            .signal_session(&self.sprite_id, &self.session_id, self.signal)
            .await
        {
            Ok(()) => {}
            Err(RuntimeError::SessionNotFound) => {
                let code = match wait_exit(events.as_mut(), AFTER_KILL_WAIT).await {
                    Waited::Exited(c) => c,
                    Waited::TimedOut => None,
                };
                self.emit(json!({"type": "exited", "message": "process already exited"}))
                    .await;
                return self.complete(code).await;
            }
            Err(e) => {
                self.emit(json!({"type": "error", "message": e.to_string()}))
                    .await;
                return self.complete(None).await;
            }
        }
        if self.timeout.is_zero() {
            return self.complete(None).await;
        }
        match wait_exit(events.as_mut(), self.timeout).await {
            Waited::Exited(code) => {
                self.emit(json!({"type": "exited", "message": "process exited"}))
                    .await;
                self.complete(code).await;
            }
            Waited::TimedOut => {
                self.emit(json!({
                    "type": "timeout",
                    "message": format!("process did not exit within {:?}; sending SIGKILL", self.timeout),
                }))
                .await;
                let _ = self
                    .runtime
                    .signal_session(&self.sprite_id, &self.session_id, 9)
                    .await;
                self.emit(json!({"type": "killed", "message": "process killed"}))
                    .await;
                let code = match wait_exit(events.as_mut(), AFTER_KILL_WAIT).await {
                    Waited::Exited(c) => c,
                    Waited::TimedOut => None,
                };
                self.complete(code).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::extract::test_pairs as pairs;

    #[test]
    fn kill_params() {
        let (n, name, t) = parse_kill_params(&[]).unwrap();
        assert_eq!(
            (n, name.as_str(), t),
            (15, "SIGTERM", Duration::from_secs(10))
        );
        let (n, name, t) =
            parse_kill_params(&pairs(&[("signal", "int"), ("timeout", "0s")])).unwrap();
        assert_eq!((n, name.as_str(), t), (2, "SIGINT", Duration::ZERO));
        let (_, _, t) = parse_kill_params(&pairs(&[("timeout", "87600h")])).unwrap();
        assert_eq!(t, MAX_KILL_TIMEOUT);
        assert_eq!(
            parse_kill_params(&pairs(&[("signal", "BOGUS")]))
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            parse_kill_params(&pairs(&[("timeout", "soon")]))
                .unwrap_err()
                .status,
            400
        );
    }

    #[test]
    fn entries() {
        let s = SessionInfo {
            session_id: "42".into(),
            command: "/usr/bin/sleep 5".into(),
            workdir: "/home/sprite".into(),
            created: 1_769_855_293,
            tty: true,
            rows: 24,
            cols: 80,
            attached: 0,
            last_output_ms: Some(1_769_855_293_000),
            output_bytes: 10,
        };
        let e = session_entry(&s, 1_769_855_293_000 + 5_000);
        assert_eq!(e.id, "42");
        assert!(e.is_active);
        assert_eq!(e.created, "2026-01-31T10:28:13.000000Z");
        assert!(!session_entry(&s, 1_769_855_293_000 + 60_000).is_active);
        let v = serde_json::to_value(&e).unwrap();
        assert!(v["id"].is_string());
    }
}

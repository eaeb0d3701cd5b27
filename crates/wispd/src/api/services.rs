//! Services (§3.8): definitions, state, start/stop/restart, signals and logs.
//!
//! Every route wakes the sprite (counted in flight, as exec does) before it acts. The
//! operation itself runs before the response starts, so a refusal is a real status with a
//! JSON body; start, stop, restart, create and logs then stream NDJSON events
//! ([`ServiceLogEvent`]) of what followed, ending with `complete`.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use tokio::time::Instant;
use wisp_api::duration::parse_duration;
use wisp_api::service::{
    parse_signal, validate_service_name, LogEventType, Service, ServiceLogEvent, ServiceRequest,
    ServiceState, ServiceStatus, SignalRequest,
};

use super::error::ApiError;
use super::extract::{query_pairs, ApiJson, ApiPath};
use super::sprites::find_sprite;
use super::AppState;
use crate::activity::ActivityGuard;
use crate::auth::Caller;
use crate::manager::{ServiceError, ServiceView};
use crate::runtime::{RuntimeError, ServiceEvent, ServiceEventKind, ServiceEvents, WatchFrom};
use crate::store::SpriteRow;
use crate::timefmt;

/// How long create, start and restart stream output by default.
const DEFAULT_DURATION: Duration = Duration::from_secs(5);
/// SIGTERM → SIGKILL delay of a stop by default.
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest stream a client may ask for.
const MAX_DURATION: Duration = Duration::from_secs(3600);
/// How much longer than its timeout a stop (or delete) is waited for.
const STOP_MARGIN: Duration = Duration::from_secs(5);
/// The keeper's SIGTERM → SIGKILL delay for a deleted service.
const DELETE_STOP_TIMEOUT: Duration = Duration::from_secs(10);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/sprites/{name}/services", get(list))
        .route("/v1/sprites/{name}/services/signal", post(signal))
        .route(
            "/v1/sprites/{name}/services/{svc}",
            get(get_one).put(put).delete(delete),
        )
        .route("/v1/sprites/{name}/services/{svc}/start", post(start))
        .route("/v1/sprites/{name}/services/{svc}/stop", post(stop))
        .route("/v1/sprites/{name}/services/{svc}/restart", post(restart))
        .route("/v1/sprites/{name}/services/{svc}/logs", get(logs))
}

fn service_error(e: ServiceError) -> ApiError {
    match e {
        ServiceError::Manager(m) => m.into(),
        ServiceError::NotFound(n) => service_not_found(&n),
        ServiceError::NotRunning(n) => {
            ApiError::new(StatusCode::CONFLICT, format!("service {n} is not running"))
        }
        ServiceError::Invalid(m) => ApiError::bad_request(m),
        ServiceError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, m),
    }
}

fn service_not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("service not found: {name}"))
}

/// A service name from a path: anything that cannot name one is simply not found.
fn existing_name(name: &str) -> Result<&str, ApiError> {
    match validate_service_name(name) {
        Ok(()) => Ok(name),
        Err(_) => Err(service_not_found(name)),
    }
}

/// A Go-style duration from the query (`key`, else `alt`), at most [`MAX_DURATION`].
fn duration_param(
    pairs: &[(String, String)],
    keys: &[&str],
    default: Duration,
) -> Result<Duration, ApiError> {
    let Some((k, v)) = pairs
        .iter()
        .find(|(k, v)| keys.contains(&k.as_str()) && !v.is_empty())
    else {
        return Ok(default);
    };
    parse_duration(v)
        .map(|d| d.min(MAX_DURATION))
        .map_err(|e| ApiError::bad_request(format!("{k}: {e}")))
}

/// The sprite, awake, with the operation counted in flight until the guard drops.
async fn awake(
    st: &AppState,
    caller: &Caller,
    name: &str,
) -> Result<(SpriteRow, ActivityGuard), ApiError> {
    let row = find_sprite(st, caller, name)?;
    let activity = st.manager.activity().begin(&row.id);
    st.manager.wake(&row).await?;
    st.manager.touch_active(&row.id);
    Ok((row, activity))
}

fn object(v: ServiceView) -> Service {
    let r = v.row;
    let state = match v.state {
        Some(s) => ServiceState {
            name: r.name.clone(),
            status: ServiceStatus::parse(&s.status).unwrap_or(ServiceStatus::Starting),
            pid: s.pid,
            started_at: s.started_at_ms.and_then(timefmt::from_unix_millis),
            error: s.error,
            restart_count: s.restart_count,
            next_restart_at: s.next_restart_at_ms.and_then(timefmt::from_unix_millis),
        },
        None => ServiceState {
            name: r.name.clone(),
            status: if r.stopped {
                ServiceStatus::Stopped
            } else {
                ServiceStatus::Starting
            },
            pid: None,
            started_at: None,
            error: None,
            restart_count: 0,
            next_restart_at: None,
        },
    };
    Service {
        name: r.name,
        cmd: r.cmd,
        args: r.args,
        needs: r.needs,
        http_port: r.http_port,
        env: r.env,
        dir: r.dir,
        state: Some(state),
    }
}

/// `GET .../services`: a bare array, by name.
#[utoipa::path(
    operation_id = "services_list",
    get,
    path = "/v1/sprites/{name}/services",
    tag = "services",
    params(crate::api::openapi::params::SpritePath),
    responses(
        (status = 200, description = "Every service, by name", body = Vec<wisp_api::service::Service>),
        (status = 404, description = "No such sprite", body = wisp_api::error::ErrorBody),
        (status = 503, description = "The sprite could not be woken or started", body = wisp_api::error::ErrorBody),
    ),
)]
pub async fn list(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Vec<Service>>, ApiError> {
    let (row, _busy) = awake(&st, &caller, &name).await?;
    let all = st
        .manager
        .list_services(&row)
        .await
        .map_err(service_error)?;
    Ok(Json(all.into_iter().map(object).collect()))
}

/// `GET .../services/{svc}`.
#[utoipa::path(
    operation_id = "services_get_one",
    get,
    path = "/v1/sprites/{name}/services/{svc}",
    tag = "services",
    params(crate::api::openapi::params::ServicePath),
    responses(
        (status = 200, description = "The service and its state", body = wisp_api::service::Service),
        (status = 404, description = "No such sprite or service", body = wisp_api::error::ErrorBody),
        (status = 503, description = "The sprite could not be woken or started", body = wisp_api::error::ErrorBody),
    ),
)]
pub async fn get_one(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((name, svc)): ApiPath<(String, String)>,
) -> Result<Json<Service>, ApiError> {
    let svc = existing_name(&svc)?;
    let (row, _busy) = awake(&st, &caller, &name).await?;
    let v = st
        .manager
        .get_service(&row, svc)
        .await
        .map_err(service_error)?;
    Ok(Json(object(v)))
}

/// `PUT .../services/{svc}?duration=5s`: create or redefine, start, and stream the first
/// `duration` of what follows.
#[utoipa::path(
    operation_id = "services_put",
    put,
    path = "/v1/sprites/{name}/services/{svc}",
    tag = "services",
    params(crate::api::openapi::params::ServicePath, crate::api::openapi::params::ServiceStartQuery),
    request_body = wisp_api::service::ServiceRequest,
    responses(
        (status = 200, description = "Defined and started; its first `duration` of events", body = wisp_api::service::ServiceLogEvent, content_type = "application/x-ndjson"),
        (status = 400, description = "Invalid parameters", body = wisp_api::error::ErrorBody),
        (status = 404, description = "No such sprite", body = wisp_api::error::ErrorBody),
        (status = 409, description = "Conflicts with another service", body = wisp_api::error::ErrorBody),
        (status = 503, description = "The sprite could not be woken or started", body = wisp_api::error::ErrorBody),
    ),
)]
pub async fn put(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((name, svc)): ApiPath<(String, String)>,
    RawQuery(raw): RawQuery,
    ApiJson(req): ApiJson<ServiceRequest>,
) -> Result<Response, ApiError> {
    validate_service_name(&svc).map_err(|e| ApiError::bad_request(e.to_string()))?;
    req.validate().map_err(ApiError::bad_request)?;
    let pairs = query_pairs(raw.as_deref());
    let run = duration_param(&pairs, &["duration", "timeout"], DEFAULT_DURATION)?;
    let (row, busy) = awake(&st, &caller, &name).await?;
    let seq = st
        .manager
        .put_service(&row, &svc, req)
        .await
        .map_err(service_error)?;
    stream(&st, &row, &svc, seq, Plan::Run(run), busy).await
}

/// `DELETE .../services/{svc}`: 204 once its process is gone. Its log file is kept.
#[utoipa::path(
    operation_id = "services_delete",
    delete,
    path = "/v1/sprites/{name}/services/{svc}",
    tag = "services",
    params(crate::api::openapi::params::ServicePath),
    responses(
        (status = 204, description = "Stopped and removed; its log is kept"),
        (status = 404, description = "No such sprite or service", body = wisp_api::error::ErrorBody),
        (status = 503, description = "The sprite could not be woken or started", body = wisp_api::error::ErrorBody),
    ),
)]
pub async fn delete(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((name, svc)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let svc = existing_name(&svc)?;
    let (row, _busy) = awake(&st, &caller, &name).await?;
    let seq = st
        .manager
        .delete_service(&row, svc)
        .await
        .map_err(service_error)?;
    // The keeper forgets a removed service once its process has exited.
    let watch = st
        .manager
        .runtime()
        .watch_service(&row.id, svc, WatchFrom::After(seq), true)
        .await;
    if let Ok(mut events) = watch {
        let until = Instant::now() + DELETE_STOP_TIMEOUT + STOP_MARGIN;
        while let Ok(Ok(Some(ev))) = tokio::time::timeout_at(until, events.next_event()).await {
            if ev.kind == ServiceEventKind::Stopped {
                break;
            }
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `POST .../services/{svc}/start?duration=`.
#[utoipa::path(
    operation_id = "services_start",
    post,
    path = "/v1/sprites/{name}/services/{svc}/start",
    tag = "services",
    params(crate::api::openapi::params::ServicePath, crate::api::openapi::params::ServiceStartQuery),
    responses(
        (status = 200, description = "Started; its first `duration` of events", body = wisp_api::service::ServiceLogEvent, content_type = "application/x-ndjson"),
        (status = 400, description = "Invalid parameters", body = wisp_api::error::ErrorBody),
        (status = 404, description = "No such sprite or service", body = wisp_api::error::ErrorBody),
        (status = 503, description = "The sprite could not be woken or started", body = wisp_api::error::ErrorBody),
    ),
)]
pub async fn start(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((name, svc)): ApiPath<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let svc = existing_name(&svc)?;
    let pairs = query_pairs(raw.as_deref());
    let run = duration_param(&pairs, &["duration", "timeout"], DEFAULT_DURATION)?;
    let (row, busy) = awake(&st, &caller, &name).await?;
    let seq = st
        .manager
        .start_service(&row, svc)
        .await
        .map_err(service_error)?;
    stream(&st, &row, svc, seq, Plan::Run(run), busy).await
}

/// `POST .../services/{svc}/stop?timeout=10s`: `stopping` → `stopped` → `complete`; 409 when
/// it is stopped already.
#[utoipa::path(
    operation_id = "services_stop",
    post,
    path = "/v1/sprites/{name}/services/{svc}/stop",
    tag = "services",
    params(crate::api::openapi::params::ServicePath, crate::api::openapi::params::ServiceStopQuery),
    responses(
        (status = 200, description = "`stopping`, `stopped`, `complete`", body = wisp_api::service::ServiceLogEvent, content_type = "application/x-ndjson"),
        (status = 400, description = "Invalid parameters", body = wisp_api::error::ErrorBody),
        (status = 404, description = "No such sprite or service", body = wisp_api::error::ErrorBody),
        (status = 409, description = "Not running", body = wisp_api::error::ErrorBody),
        (status = 503, description = "The sprite could not be woken or started", body = wisp_api::error::ErrorBody),
    ),
)]
pub async fn stop(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((name, svc)): ApiPath<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let svc = existing_name(&svc)?;
    let pairs = query_pairs(raw.as_deref());
    let timeout = duration_param(&pairs, &["timeout"], DEFAULT_STOP_TIMEOUT)?;
    let (row, busy) = awake(&st, &caller, &name).await?;
    let seq = st
        .manager
        .stop_service(&row, svc, timeout)
        .await
        .map_err(service_error)?;
    stream(&st, &row, svc, seq, Plan::Stop(timeout + STOP_MARGIN), busy).await
}

/// `POST .../services/{svc}/restart?duration=&timeout=`: the stop's events, then the start's.
#[utoipa::path(
    operation_id = "services_restart",
    post,
    path = "/v1/sprites/{name}/services/{svc}/restart",
    tag = "services",
    params(crate::api::openapi::params::ServicePath, crate::api::openapi::params::ServiceRestartQuery),
    responses(
        (status = 200, description = "The stop's events, then the start's", body = wisp_api::service::ServiceLogEvent, content_type = "application/x-ndjson"),
        (status = 400, description = "Invalid parameters", body = wisp_api::error::ErrorBody),
        (status = 404, description = "No such sprite or service", body = wisp_api::error::ErrorBody),
        (status = 503, description = "The sprite could not be woken or started", body = wisp_api::error::ErrorBody),
    ),
)]
pub async fn restart(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((name, svc)): ApiPath<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let svc = existing_name(&svc)?;
    let pairs = query_pairs(raw.as_deref());
    let run = duration_param(&pairs, &["duration"], DEFAULT_DURATION)?;
    let timeout = duration_param(&pairs, &["timeout"], DEFAULT_STOP_TIMEOUT)?;
    let (row, busy) = awake(&st, &caller, &name).await?;
    let seq = st
        .manager
        .restart_service(&row, svc, timeout)
        .await
        .map_err(service_error)?;
    let plan = Plan::Restart {
        limit: timeout + STOP_MARGIN,
        run,
    };
    stream(&st, &row, svc, seq, plan, busy).await
}

/// `GET .../services/{svc}/logs?lines=N&duration=`: the last `lines` buffered output lines
/// (all by default), then what follows for `duration` (default 0).
#[utoipa::path(
    operation_id = "services_logs",
    get,
    path = "/v1/sprites/{name}/services/{svc}/logs",
    tag = "services",
    params(crate::api::openapi::params::ServicePath, crate::api::openapi::params::ServiceLogsQuery),
    responses(
        (status = 200, description = "Buffered lines, then `duration` of new output", body = wisp_api::service::ServiceLogEvent, content_type = "application/x-ndjson"),
        (status = 400, description = "Invalid parameters", body = wisp_api::error::ErrorBody),
        (status = 404, description = "No such sprite or service", body = wisp_api::error::ErrorBody),
        (status = 503, description = "The sprite could not be woken or started", body = wisp_api::error::ErrorBody),
    ),
)]
pub async fn logs(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((name, svc)): ApiPath<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let svc = existing_name(&svc)?;
    let pairs = query_pairs(raw.as_deref());
    let follow = duration_param(&pairs, &["duration"], Duration::ZERO)?;
    let lines = match pairs.iter().find(|(k, v)| k == "lines" && !v.is_empty()) {
        Some((_, v)) => Some(v.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!("lines: expected a number of lines, got {v:?}"))
        })?),
        None => None,
    };
    let (row, busy) = awake(&st, &caller, &name).await?;
    st.manager.check_service(&row, svc).map_err(service_error)?;
    let events = st
        .manager
        .runtime()
        .watch_service(&row.id, svc, WatchFrom::Tail(lines), !follow.is_zero())
        .await
        .map_err(|e| service_error(e.into()))?;
    Ok(ndjson(Streamer::new(
        svc,
        events,
        Plan::Follow(follow),
        busy,
    )))
}

/// `POST .../services/signal` with `{"name", "signal"}`: 204.
#[utoipa::path(
    operation_id = "services_signal",
    post,
    path = "/v1/sprites/{name}/services/signal",
    tag = "services",
    params(crate::api::openapi::params::SpritePath),
    request_body = wisp_api::service::SignalRequest,
    responses(
        (status = 204, description = "Sent"),
        (status = 400, description = "Invalid parameters", body = wisp_api::error::ErrorBody),
        (status = 404, description = "No such sprite or service", body = wisp_api::error::ErrorBody),
        (status = 409, description = "Not running", body = wisp_api::error::ErrorBody),
        (status = 503, description = "The sprite could not be woken or started", body = wisp_api::error::ErrorBody),
    ),
)]
pub async fn signal(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<SignalRequest>,
) -> Result<StatusCode, ApiError> {
    let signal = parse_signal(&req.signal)
        .ok_or_else(|| ApiError::bad_request(format!("invalid signal: {}", req.signal)))?;
    let svc = existing_name(&req.name)?;
    let (row, _busy) = awake(&st, &caller, &name).await?;
    st.manager
        .signal_service(&row, svc, signal)
        .await
        .map_err(service_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// When an operation's stream ends.
#[derive(Debug, Clone, Copy)]
enum Plan {
    /// Output for this long; earlier when the process exits or cannot start.
    Run(Duration),
    /// Until the `stopped` event (at most this long).
    Stop(Duration),
    /// The stop's events until `started` (at most `limit`), then like `Run(run)`.
    Restart { limit: Duration, run: Duration },
    /// Buffered lines, then new events for this long.
    Follow(Duration),
}

/// Starts following what an operation caused (events after `seq`).
async fn stream(
    st: &AppState,
    row: &SpriteRow,
    svc: &str,
    seq: u64,
    plan: Plan,
    busy: ActivityGuard,
) -> Result<Response, ApiError> {
    let events = st
        .manager
        .runtime()
        .watch_service(&row.id, svc, WatchFrom::After(seq), true)
        .await;
    let events = match events {
        Ok(e) => Some(e),
        // Removed meanwhile, or the sprite went away: the stream says only `complete`.
        Err(RuntimeError::ServiceNotFound(_) | RuntimeError::NotRunning) => None,
        Err(e) => return Err(service_error(e.into())),
    };
    let mut s = Streamer::new(svc, Box::new(NoEvents), plan, busy);
    match events {
        Some(e) => s.events = e,
        None => s.ending = true,
    }
    Ok(ndjson(s))
}

struct NoEvents;

#[async_trait::async_trait]
impl ServiceEvents for NoEvents {
    async fn next_event(&mut self) -> Result<Option<ServiceEvent>, RuntimeError> {
        Ok(None)
    }
}

/// Turns a service's runtime events into NDJSON lines according to a [`Plan`].
struct Streamer {
    name: String,
    events: Box<dyn ServiceEvents>,
    plan: Plan,
    deadline: Instant,
    /// Restart: the new process has started.
    started: bool,
    /// The last event was sent: `complete` comes next.
    ending: bool,
    done: bool,
    /// Keeps the sprite awake while the client reads.
    _busy: ActivityGuard,
}

impl Streamer {
    fn new(name: &str, events: Box<dyn ServiceEvents>, plan: Plan, busy: ActivityGuard) -> Self {
        let first = match plan {
            Plan::Run(d) | Plan::Stop(d) | Plan::Follow(d) => d,
            Plan::Restart { limit, .. } => limit,
        };
        Streamer {
            name: name.to_string(),
            events,
            plan,
            deadline: Instant::now() + first,
            started: false,
            ending: false,
            done: false,
            _busy: busy,
        }
    }

    /// Whether `kind` ends the stream (after it is sent).
    fn ends_with(&mut self, kind: ServiceEventKind) -> bool {
        use ServiceEventKind as K;
        match self.plan {
            Plan::Run(_) => matches!(kind, K::Exit | K::Error | K::Stopped),
            Plan::Stop(_) => kind == K::Stopped,
            Plan::Restart { run, .. } => {
                if !self.started {
                    if kind == K::Started {
                        self.started = true;
                        self.deadline = Instant::now() + run;
                    }
                    kind == K::Error
                } else {
                    matches!(kind, K::Exit | K::Error | K::Stopped)
                }
            }
            Plan::Follow(_) => false,
        }
    }

    /// The next NDJSON line; `None` after `complete`.
    async fn next_line(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        if !self.ending {
            let next = tokio::time::timeout_at(self.deadline, self.events.next_event()).await;
            match next {
                Ok(Ok(Some(ev))) => {
                    self.ending = self.ends_with(ev.kind);
                    return Some(line(&wire_event(ev)));
                }
                Ok(Err(e)) => {
                    self.ending = true;
                    let mut ev = ServiceLogEvent::new(LogEventType::Error, now_ms());
                    ev.data = Some(format!("lost the service's events: {e}"));
                    return Some(line(&ev));
                }
                Ok(Ok(None)) | Err(_) => {}
            }
        }
        self.done = true;
        Some(line(&ServiceLogEvent::complete(&self.name, now_ms())))
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn wire_event(ev: ServiceEvent) -> ServiceLogEvent {
    let kind = match ev.kind {
        ServiceEventKind::Started => LogEventType::Started,
        ServiceEventKind::Stdout => LogEventType::Stdout,
        ServiceEventKind::Stderr => LogEventType::Stderr,
        ServiceEventKind::Exit => LogEventType::Exit,
        ServiceEventKind::Stopping => LogEventType::Stopping,
        ServiceEventKind::Stopped => LogEventType::Stopped,
        ServiceEventKind::Error => LogEventType::Error,
    };
    let mut out = ServiceLogEvent::new(kind, ev.time_ms);
    out.data = ev.data;
    out.exit_code = ev.exit_code;
    if kind == LogEventType::Started {
        out.pid = ev.pid;
    }
    out
}

fn line(ev: &ServiceLogEvent) -> Bytes {
    let mut v = serde_json::to_vec(ev).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

fn ndjson(s: Streamer) -> Response {
    let body = futures_util::stream::unfold(s, |mut s| async move {
        let l = s.next_line().await?;
        Some((Ok::<_, std::convert::Infallible>(l), s))
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(body),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::extract::test_pairs as pairs;

    #[test]
    fn durations() {
        let d = |q: &[(&str, &str)]| {
            duration_param(&pairs(q), &["duration", "timeout"], DEFAULT_DURATION)
        };
        assert_eq!(d(&[]).unwrap(), DEFAULT_DURATION);
        assert_eq!(
            d(&[("duration", "1.5s")]).unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(d(&[("timeout", "2s")]).unwrap(), Duration::from_secs(2));
        assert_eq!(d(&[("duration", "")]).unwrap(), DEFAULT_DURATION);
        assert_eq!(d(&[("duration", "99h")]).unwrap(), MAX_DURATION);
        let e = d(&[("duration", "soon")]).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.body.error.starts_with("duration: "), "{}", e.body.error);
    }

    #[test]
    fn events_on_the_wire() {
        let ev = ServiceEvent {
            seq: 3,
            kind: ServiceEventKind::Started,
            data: None,
            exit_code: None,
            pid: Some(42),
            time_ms: 7,
        };
        assert_eq!(
            serde_json::to_value(wire_event(ev)).unwrap(),
            serde_json::json!({"type": "started", "timestamp": 7, "pid": 42})
        );
        let ev = ServiceEvent {
            seq: 4,
            kind: ServiceEventKind::Exit,
            data: None,
            exit_code: Some(3),
            pid: Some(42),
            time_ms: 8,
        };
        assert_eq!(
            serde_json::to_value(wire_event(ev)).unwrap(),
            serde_json::json!({"type": "exit", "exit_code": 3, "timestamp": 8})
        );
    }

    #[test]
    fn names_in_paths() {
        assert!(existing_name("web").is_ok());
        for bad in ["Web", "../x", "signal", ""] {
            assert_eq!(existing_name(bad).unwrap_err().status, 404, "{bad}");
        }
    }
}

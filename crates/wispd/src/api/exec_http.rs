//! `POST /v1/sprites/{name}/exec`: exec over plain HTTP (non-TTY only).
//!
//! The request body is stdin when `stdin=true`. The response streams
//! `[stream id][payload]` chunks (1 stdout, 2 stderr) and ends with `[3, exit code]`.

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures_util::StreamExt;
use wisp_api::exec::{encode_stream_frame, exit_byte, STREAM_EXIT, STREAM_STDERR, STREAM_STDOUT};

use super::error::ApiError;
use super::exec::{parse_exec_params, start_session};
use super::extract::{query_pairs, ApiPath};
use super::sprites::find_sprite;
use super::AppState;
use crate::auth::Caller;
use crate::runtime::{ExecEvent, ExecInput, ExecInputMsg};

/// Largest stdin accepted in a request body.
pub const STDIN_LIMIT: u64 = 64 << 20;

/// Parameters that make no sense without a WebSocket.
fn refuse_ws_only(pairs: &[(String, String)]) -> Result<(), ApiError> {
    for (k, v) in pairs {
        let refused = match k.as_str() {
            "tty" | "detachable" | "cc" => !matches!(v.as_str(), "" | "false" | "0"),
            "id" | "session_id" => !v.is_empty(),
            _ => false,
        };
        if refused {
            return Err(ApiError::bad_request(format!(
                "{k} is not supported by HTTP exec; use the WebSocket endpoint"
            )));
        }
    }
    Ok(())
}

#[utoipa::path(
    operation_id = "exec_http_exec_post",
    post,
    path = "/v1/sprites/{name}/exec",
    tag = "exec",
    params(crate::api::openapi::params::SpritePath, crate::api::openapi::params::ExecQuery),
    request_body(content = Vec<u8>, description = "stdin, when `stdin=true`", content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "The output as it comes: stream frames (one stream byte, then data; exit `[3, code]`)", content_type = "application/octet-stream"),
        (status = 400, description = "Invalid parameters", body = wisp_api::error::ErrorBody),
        (status = 404, description = "No such sprite", body = wisp_api::error::ErrorBody),
        (status = 413, description = "stdin is larger than 64 MiB", body = wisp_api::error::ErrorBody),
        (status = 503, description = "The sprite could not be woken or started", body = wisp_api::error::ErrorBody),
    ),
)]
pub async fn exec_post(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let pairs = query_pairs(raw.as_deref());
    refuse_ws_only(&pairs)?;
    let params = parse_exec_params(&pairs, None)?;
    let row = find_sprite(&st, &caller, &name)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if params.stdin && declared.is_some_and(|n| n > STDIN_LIMIT) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("stdin is larger than {STDIN_LIMIT} bytes"),
        ));
    }
    let started = start_session(&st, &row, &params).await?;
    let events = started.stream.events;
    // In flight until the response body ends or the client goes.
    let activity = started.activity;
    let input = started.stream.input;
    // The input half stays alive until the output ends: closing it would detach.
    let pump = if params.stdin {
        tokio::spawn(pump_stdin(body, input))
    } else {
        tokio::spawn(async move { input })
    };
    let state = Some((events, pump, activity));
    let output = futures_util::stream::unfold(state, |state| async move {
        let (mut events, pump, activity) = state?;
        let chunk = match events.next_event().await {
            Ok(Some(ExecEvent::Stdout(b))) => {
                activity.touch();
                encode_stream_frame(STREAM_STDOUT, &b)
            }
            Ok(Some(ExecEvent::Stderr(b))) => {
                activity.touch();
                encode_stream_frame(STREAM_STDERR, &b)
            }
            Ok(Some(ExecEvent::Exit(code))) => {
                let last = vec![STREAM_EXIT, exit_byte(code)];
                return Some((Ok::<_, std::io::Error>(Bytes::from(last)), None));
            }
            Ok(None) => return None,
            Err(e) => {
                tracing::debug!("http exec lost its session: {e}");
                return Some((Err(std::io::Error::other(e.to_string())), None));
            }
        };
        Some((Ok(Bytes::from(chunk)), Some((events, pump, activity))))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(output),
    )
        .into_response())
}

/// Copies the request body to stdin (up to [`STDIN_LIMIT`]), then sends EOF. Returns the
/// input half so that the caller decides when it is dropped.
async fn pump_stdin(body: Body, mut input: Box<dyn ExecInput>) -> Box<dyn ExecInput> {
    let mut stream = body.into_data_stream();
    let mut total: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else { break };
        total += chunk.len() as u64;
        if total > STDIN_LIMIT {
            tracing::debug!("http exec stdin over the limit; closing stdin");
            break;
        }
        if input.send(ExecInputMsg::Stdin(chunk)).await.is_err() {
            return input;
        }
    }
    let _ = input.send(ExecInputMsg::StdinEof).await;
    input
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::extract::test_pairs as pairs;

    #[test]
    fn ws_only_parameters() {
        assert!(refuse_ws_only(&pairs(&[("cmd", "ls"), ("tty", "false")])).is_ok());
        for bad in [
            ("tty", "true"),
            ("id", "12"),
            ("detachable", "true"),
            ("cc", "1"),
        ] {
            let e = refuse_ws_only(&pairs(&[("cmd", "ls"), bad])).unwrap_err();
            assert_eq!(e.status, 400, "{bad:?}");
        }
    }
}

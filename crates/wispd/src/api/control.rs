//! `GET /v1/sprites/{name}/control`: the control WebSocket (sprites-api.md §3.3).
//!
//! One persistent socket per client connection, reused for many operations, one at a time.
//! Control messages are text frames `control:{"type","id"?,"op"?,"args"?}`; between an
//! operation's start and its `op.complete`/`op.error`, every other frame belongs to the
//! operation and speaks the exec frame protocol (the bridge of `exec_bridge.rs`, in its
//! control dialect).
//!
//! * `op.start` with `op` `exec`: `args` mirror the exec query (`cmd` array, `path`, `env`
//!   array, `dir`, `tty`, `rows`, `cols`, `stdin`, `id` to attach, `max_run_after_disconnect`);
//!   strings, numbers and booleans are all accepted. `proxy`: a TCP connection into the
//!   sprite (`control_proxy.rs`). Other ops (`fs.*`) answer `op.error`.
//! * End of an exec op: non-TTY binary `[0x03, code]`, TTY text `exit`; then
//!   `control:op.complete {"exitCode", "ok"}`, and nothing else: Go hands any later non-control
//!   frame to the socket's next operation.
//! * Failures (bad arguments, a sprite that cannot start, a lost session) answer
//!   `control:op.error {"error", "code", "message"}` and leave the socket usable.
//! * `?op=exec&cmd=...` (or `?op=proxy&port=...`) on the upgrade starts an operation at once.
//! * Tolerated: Go's bare `{"type":"release"}` after each op, stray frames between ops (a
//!   late EOF, say), bare-JSON `op.start` (Go's fs helpers).
//! * An idle socket sends `{"type":"keepalive"}` every 15 s (the JS SDK counts messages as
//!   liveness) and does not keep the sprite awake: only a running operation counts as
//!   activity, and its start wakes the sprite. A socket that drops mid-op detaches from the
//!   session, which then lives on for its `max_run_after_disconnect`.

use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Map, Value};
use wisp_api::exec::{exit_byte, TextMessage, STREAM_EXIT};
use wisp_api::SPRITE_CAPABILITIES;

use super::control_proxy;
use super::error::ApiError;
use super::exec::{bridge_options, parse_exec_params, start_session, Started};
use super::exec_bridge::{self, close_message, json_message, Outcome, Rx, Tx, KEEPALIVE_INTERVAL};
use super::extract::{query_pairs, ApiPath};
use super::proxy::target_from_query;
use super::sprites::find_sprite;
use super::AppState;
use crate::auth::Caller;
use crate::store::SpriteState;

/// Prefix of every control message, both ways.
pub const CONTROL_PREFIX: &str = "control:";
/// How long a client's close handshake may take when the socket ends.
const CLOSE_FLUSH: Duration = Duration::from_secs(1);

/// Ops the SDKs know but this server does not run over control.
const UNSUPPORTED_OPS: &[&str] = &[
    "fs.read",
    "fs.write",
    "fs.list",
    "fs.delete",
    "fs.chmod",
    "fs.chown",
    "fs.copy",
    "fs.rename",
];

type Upgrade = Result<WebSocketUpgrade, WebSocketUpgradeRejection>;

/// A request to start an operation.
#[derive(Debug, Clone, PartialEq)]
pub struct OpStart {
    /// The envelope's `id`, echoed in the answer.
    pub id: Option<Value>,
    pub op: String,
    /// `args` as query pairs (the exec parameters' form).
    pub args: Vec<(String, String)>,
    /// Sent without the `control:` prefix (Go's proxy and fs helpers), and answered likewise.
    pub bare: bool,
}

/// What a text frame from the client means outside an operation.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientControl {
    Start(OpStart),
    /// `release`, unknown types, anything that is not a control message.
    Ignore,
    /// A `control:` frame whose JSON is unusable.
    Invalid(String),
}

/// `GET .../control` with an upgrade. The sprite is looked up (404) and an auto-started
/// operation's parameters checked (400) before upgrading; nothing is woken until an operation
/// starts, so that the Go SDK's dial on every `Sprite()` stays cheap.
#[utoipa::path(
    operation_id = "control_control_get",
    get,
    path = "/v1/sprites/{name}/control",
    tag = "exec",
    params(crate::api::openapi::params::SpritePath, crate::api::openapi::params::ControlQuery),
    responses(
        (status = 101, description = "The control socket: `control:{...}` text frames start operations (exec, proxy) one at a time. Switched to a WebSocket"),
        (status = 400, description = "Invalid parameters", body = wisp_api::error::ErrorBody),
        (status = 404, description = "No such sprite", body = wisp_api::error::ErrorBody),
        (status = 426, description = "Not a WebSocket upgrade", body = wisp_api::error::ErrorBody),
    ),
)]
pub async fn control_get(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
    RawQuery(raw): RawQuery,
    ws: Upgrade,
) -> Result<Response, ApiError> {
    let ws = ws.map_err(|r| ApiError::new(r.status(), r.body_text()))?;
    let row = find_sprite(&st, &caller, &name)?;
    let auto = auto_start(&query_pairs(raw.as_deref()))?;
    let ctl = Control {
        st,
        sprite_id: row.id,
        sprite_name: row.name,
    };
    let mut res = ws
        .on_failed_upgrade(|e| tracing::debug!("control upgrade failed: {e}"))
        .on_upgrade(move |socket| ctl.run(socket, auto))
        .into_response();
    res.headers_mut().insert(
        "x-sprite-capabilities",
        HeaderValue::from_static(SPRITE_CAPABILITIES),
    );
    Ok(res)
}

/// `?op=exec&cmd=...`: the operation to start on connect (every other pair is its args).
pub fn auto_start(pairs: &[(String, String)]) -> Result<Option<OpStart>, ApiError> {
    let Some(op) = pairs
        .iter()
        .find(|(k, v)| k == "op" && !v.is_empty())
        .map(|(_, v)| v.clone())
    else {
        return Ok(None);
    };
    let args: Vec<(String, String)> = pairs.iter().filter(|(k, _)| k != "op").cloned().collect();
    match op.as_str() {
        "exec" => {
            parse_exec_params(&args, None)?;
        }
        "proxy" => {
            if target_from_query(&args)
                .map_err(ApiError::bad_request)?
                .is_none()
            {
                return Err(ApiError::bad_request("proxy needs a port (1..65535)"));
            }
        }
        _ => {
            return Err(ApiError::bad_request(format!(
                "op {op:?} cannot be started from the URL; exec and proxy can"
            )))
        }
    }
    Ok(Some(OpStart {
        id: None,
        op,
        args,
        bare: false,
    }))
}

/// Parses a client text frame: `control:`-prefixed envelopes, and the bare forms some
/// clients send (`{"type":"release"}`, Go's bare `op.start` and legacy proxy `start`).
pub fn parse_text(text: &str) -> ClientControl {
    let (prefixed, body) = match text.strip_prefix(CONTROL_PREFIX) {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let value: Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(e) if prefixed => {
            return ClientControl::Invalid(format!("invalid control message: {e}"))
        }
        Err(_) => return ClientControl::Ignore,
    };
    let Some(obj) = value.as_object() else {
        return if prefixed {
            ClientControl::Invalid("a control message must be a JSON object".into())
        } else {
            ClientControl::Ignore
        };
    };
    let id = obj.get("id").filter(|v| !v.is_null()).cloned();
    match obj.get("type").and_then(Value::as_str) {
        Some("op.start") => {
            let Some(op) = obj
                .get("op")
                .and_then(Value::as_str)
                .filter(|o| !o.is_empty())
            else {
                return ClientControl::Invalid("op.start without an op".into());
            };
            ClientControl::Start(OpStart {
                id,
                op: op.to_string(),
                args: args_to_pairs(obj.get("args").unwrap_or(&Value::Null)),
                bare: !prefixed,
            })
        }
        // Go's proxy over control: {"type":"start","operation":"proxy","params":{...}}.
        Some("start") if !prefixed => match obj.get("operation").and_then(Value::as_str) {
            Some(op) => ClientControl::Start(OpStart {
                id,
                op: op.to_string(),
                args: args_to_pairs(obj.get("params").unwrap_or(&Value::Null)),
                bare: true,
            }),
            None => ClientControl::Ignore,
        },
        _ => ClientControl::Ignore,
    }
}

/// A scalar as a query value: strings as they are, numbers and booleans spelled out.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `args` as query pairs: an object's scalars and arrays of scalars (repeated keys), an
/// object value as `KEY=VALUE` entries (an `env` map), or a URL-encoded query string (Go's
/// fs helpers).
pub fn args_to_pairs(args: &Value) -> Vec<(String, String)> {
    match args {
        Value::String(q) => query_pairs(Some(q.trim_start_matches('?'))),
        Value::Object(map) => object_pairs(map),
        _ => Vec::new(),
    }
}

fn object_pairs(map: &Map<String, Value>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (k, v) in map {
        match v {
            Value::Array(items) => {
                out.extend(items.iter().filter_map(scalar).map(|s| (k.clone(), s)));
            }
            Value::Object(inner) => out.extend(
                inner
                    .iter()
                    .filter_map(|(ik, iv)| scalar(iv).map(|s| (k.clone(), format!("{ik}={s}")))),
            ),
            other => out.extend(scalar(other).map(|s| (k.clone(), s))),
        }
    }
    out
}

/// `control:{"type": kind, "id"?, "args": args}`.
pub fn control_message(kind: &str, id: Option<&Value>, args: Value) -> Message {
    let mut env = Map::new();
    env.insert("type".into(), Value::String(kind.into()));
    if let Some(id) = id {
        env.insert("id".into(), id.clone());
    }
    env.insert("args".into(), args);
    Message::Text(Utf8Bytes::from(format!(
        "{CONTROL_PREFIX}{}",
        Value::Object(env)
    )))
}

/// `control:op.error` with the SDKs' `error` and the old server's `code` and `message`.
pub fn op_error(id: Option<&Value>, code: &str, message: &str) -> Message {
    control_message(
        "op.error",
        id,
        json!({"error": message, "code": code, "message": message}),
    )
}

/// An `op.error` for a client that sent its start as bare JSON (Go's fs helpers): bare too,
/// with `error`/`code` at the top (their error shape) and in `args` (`op.error`'s).
pub fn bare_op_error(code: &str, message: &str) -> Message {
    let args = json!({"error": message, "code": code, "message": message});
    let frame = json!({"type": "op.error", "error": message, "code": code, "args": args});
    Message::Text(Utf8Bytes::from(frame.to_string()))
}

/// The frames that end an exec op: the exit (binary `[3, code]` without a TTY, text `exit`
/// with one), then `op.complete`.
pub fn end_of_op(code: i32, tty: bool, id: Option<&Value>) -> Vec<Message> {
    let byte = exit_byte(code);
    let exit = if tty {
        json_message(&TextMessage::Exit {
            exit_code: i32::from(byte),
            code: i32::from(byte),
        })
    } else {
        Message::Binary(Bytes::from(vec![STREAM_EXIT, byte]))
    };
    vec![
        exit,
        control_message("op.complete", id, json!({"exitCode": byte, "ok": true})),
    ]
}

fn keepalive() -> Message {
    json_message(&TextMessage::Keepalive)
}

/// One control socket, bound to one sprite.
struct Control {
    st: AppState,
    sprite_id: String,
    sprite_name: String,
}

impl Control {
    async fn run(self, socket: WebSocket, auto: Option<OpStart>) {
        tracing::info!(sprite = %self.sprite_name, sprite_id = %self.sprite_id,
            "control socket opened");
        let (mut tx, mut rx) = socket.split();
        if let Some(start) = auto {
            match self.op(&mut tx, rx, start).await {
                Some(r) => rx = r,
                None => return finish(tx).await,
            }
        }
        let period = KEEPALIVE_INTERVAL;
        let mut keepalive_timer =
            tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            let msg = tokio::select! {
                msg = rx.next() => msg,
                _ = keepalive_timer.tick() => {
                    if tx.send(keepalive()).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            match msg {
                None | Some(Err(_)) => return,
                Some(Ok(Message::Close(_))) => return finish(tx).await,
                Some(Ok(Message::Text(text))) => match parse_text(text.as_str()) {
                    ClientControl::Start(start) => {
                        match self.op(&mut tx, rx, start).await {
                            Some(r) => rx = r,
                            None => return finish(tx).await,
                        }
                        keepalive_timer.reset();
                    }
                    ClientControl::Invalid(message) => {
                        tracing::debug!(message, "bad control message");
                        if tx
                            .send(op_error(None, "op.invalid", &message))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    ClientControl::Ignore => {}
                },
                // Stray frames between ops (a late stdin EOF, say), pings and pongs.
                Some(Ok(_)) => {}
            }
        }
    }

    /// Runs one operation; returns the read half while the socket stays usable.
    async fn op(&self, tx: &mut Tx, rx: Rx, start: OpStart) -> Option<Rx> {
        tracing::debug!(sprite = %self.sprite_name, op = %start.op, "control op");
        let id = start.id.as_ref();
        let (code, message) = match start.op.as_str() {
            "exec" => return self.exec(tx, rx, &start).await,
            "proxy" => return control_proxy::run(&self.st, &self.sprite_id, tx, rx, &start).await,
            op if UNSUPPORTED_OPS.contains(&op) => (
                "op.not_supported",
                format!("{op} is not supported over the control connection by this server"),
            ),
            op => ("op.not_found", format!("unknown operation {op:?}")),
        };
        let refusal = if start.bare {
            bare_op_error(code, &message)
        } else {
            op_error(id, code, &message)
        };
        tx.send(refusal).await.ok()?;
        Some(rx)
    }

    async fn exec(&self, tx: &mut Tx, rx: Rx, start: &OpStart) -> Option<Rx> {
        let id = start.id.as_ref();
        let (started, opts) = match self.start_exec(start).await {
            Ok(s) => s,
            Err((params_ok, e)) => {
                let code = if params_ok { "op.failed" } else { "op.invalid" };
                tracing::debug!(sprite_id = %self.sprite_id, code, error = %e.body.error,
                    "control exec refused");
                tx.send(op_error(id, code, &e.body.error)).await.ok()?;
                return Some(rx);
            }
        };
        let Started {
            stream, activity, ..
        } = started;
        let (outcome, client) = exec_bridge::bridge(tx, rx, stream, opts, &activity).await;
        // The reader stops before the end of the op is sent: the next op.start can only come
        // after the client has seen it, and must reach this loop, not the old session.
        let rx = client.finish().await;
        self.st.manager.touch_active(&self.sprite_id);
        let rx = match outcome {
            Outcome::Exited(code) => {
                let rx = rx?;
                for m in end_of_op(code, opts.tty, id) {
                    tx.send(m).await.ok()?;
                }
                Some(rx)
            }
            Outcome::SessionLost(reason) => {
                let rx = rx?;
                tx.send(op_error(id, "op.failed", &reason)).await.ok()?;
                Some(rx)
            }
            Outcome::Violation(code, reason) => {
                let _ = tx.send(close_message(code, &reason)).await;
                None
            }
            Outcome::ClientGone => None,
        };
        drop(activity);
        rx
    }

    /// Checks the arguments and starts (or attaches to) the session; the error says whether
    /// the arguments were fine.
    async fn start_exec(
        &self,
        start: &OpStart,
    ) -> Result<(Started, exec_bridge::BridgeOptions), (bool, ApiError)> {
        let params = parse_exec_params(&start.args, None).map_err(|e| (false, e))?;
        let row = match self.st.store.sprite_by_id(&self.sprite_id) {
            Ok(Some(r)) if r.state == SpriteState::Ready => r,
            Ok(_) => return Err((true, ApiError::sprite_not_found())),
            Err(e) => return Err((true, e.into())),
        };
        let started = start_session(&self.st, &row, &params)
            .await
            .map_err(|e| (true, e))?;
        let opts = bridge_options(&started, &params, &start.args, true);
        Ok((started, opts))
    }
}

/// Flushes our reply to the client's close frame, if any.
async fn finish(mut tx: Tx) {
    let _ = tokio::time::timeout(CLOSE_FLUSH, tx.close()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn start(text: &str) -> OpStart {
        match parse_text(text) {
            ClientControl::Start(s) => s,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn sdk_envelopes() {
        // Python/JS: strings and arrays of strings.
        let s = start(
            r#"control:{"type":"op.start","op":"exec","args":{"cmd":["sh","-c","echo hi"],"env":["A=1"],"tty":"true","rows":"30","cols":"100","stdin":"false"}}"#,
        );
        assert_eq!(s.op, "exec");
        assert_eq!(s.id, None);
        assert!(!s.bare);
        let p = parse_exec_params(&s.args, None).unwrap();
        assert_eq!(p.cmd, ["sh", "-c", "echo hi"]);
        assert_eq!(p.env, [("A".to_string(), "1".to_string())]);
        assert!(p.tty && !p.stdin);
        assert_eq!((p.rows, p.cols), (30, 100));
        // Numbers, booleans, an env map, an id to echo.
        let s = start(
            r#"control:{"type":"op.start","id":"c1","op":"exec","args":{"cmd":["ls"],"tty":true,"rows":40,"cols":120,"stdin":true,"env":{"B":"2"},"max_run_after_disconnect":5}}"#,
        );
        assert_eq!(s.id, Some(json!("c1")));
        let p = parse_exec_params(&s.args, None).unwrap();
        assert!(p.tty && p.stdin);
        assert_eq!((p.rows, p.cols), (40, 120));
        assert_eq!(p.env, [("B".to_string(), "2".to_string())]);
        assert_eq!(p.max_run_after_disconnect, Some(Duration::from_secs(5)));
        // Go attach.
        let s = start(r#"control:{"type":"op.start","op":"exec","args":{"id":"123"}}"#);
        let p = parse_exec_params(&s.args, None).unwrap();
        assert_eq!(p.attach_id.as_deref(), Some("123"));
        // Go's bare fs form: args as a query string.
        let s = start(r#"{"type":"op.start","op":"fs.list","args":"path=%2Ftmp&recursive=true"}"#);
        assert_eq!(s.op, "fs.list");
        assert!(s.bare);
        assert_eq!(s.args, pairs(&[("path", "/tmp"), ("recursive", "true")]));
        // Go's legacy proxy start.
        let s = start(
            r#"{"type":"start","operation":"proxy","params":{"host":"localhost","port":8080}}"#,
        );
        assert_eq!(s.op, "proxy");
        assert!(s.bare);
        assert_eq!(s.args, pairs(&[("host", "localhost"), ("port", "8080")]));
    }

    #[test]
    fn everything_else() {
        for ignored in [
            r#"{"type":"release"}"#,
            r#"control:{"type":"release"}"#,
            r#"{"type":"keepalive"}"#,
            r#"{"type":"resize","cols":80,"rows":24}"#,
            "hello",
            "[1,2]",
            r#"control:{"type":"op.ack"}"#,
        ] {
            assert_eq!(parse_text(ignored), ClientControl::Ignore, "{ignored}");
        }
        for invalid in [
            "control:{nope",
            "control:[1]",
            r#"control:{"type":"op.start"}"#,
            r#"control:{"type":"op.start","op":""}"#,
        ] {
            assert!(
                matches!(parse_text(invalid), ClientControl::Invalid(_)),
                "{invalid}"
            );
        }
        // Non-scalar args are dropped, not fatal.
        let s = start(
            r#"control:{"type":"op.start","op":"exec","args":{"cmd":["a",{"x":1},null,"b"],"dir":null,"x":[[1]]}}"#,
        );
        assert_eq!(s.args, pairs(&[("cmd", "a"), ("cmd", "b")]));
    }

    #[test]
    fn url_auto_start() {
        assert_eq!(auto_start(&pairs(&[])).unwrap(), None);
        assert_eq!(auto_start(&pairs(&[("op", "")])).unwrap(), None);
        let s = auto_start(&pairs(&[("op", "exec"), ("cmd", "ls"), ("cmd", "-l")]))
            .unwrap()
            .unwrap();
        assert_eq!(s.args, pairs(&[("cmd", "ls"), ("cmd", "-l")]));
        assert_eq!(
            auto_start(&pairs(&[("op", "exec")])).unwrap_err().status,
            400
        );
        let s = auto_start(&pairs(&[("op", "proxy"), ("port", "8080")]))
            .unwrap()
            .unwrap();
        assert_eq!((s.op.as_str(), s.bare), ("proxy", false));
        for bad in [
            &[("op", "proxy")][..],
            &[("op", "proxy"), ("port", "0")],
            &[("op", "fs.read"), ("path", "/")],
        ] {
            assert_eq!(auto_start(&pairs(bad)).unwrap_err().status, 400);
        }
    }

    fn text_of(m: &Message) -> Value {
        let Message::Text(t) = m else { panic!("{m:?}") };
        let body = t
            .as_str()
            .strip_prefix(CONTROL_PREFIX)
            .unwrap_or(t.as_str());
        serde_json::from_str(body).unwrap()
    }

    #[test]
    fn end_sequences() {
        let id = json!(7);
        let non_tty = end_of_op(300, false, Some(&id));
        assert_eq!(non_tty.len(), 2);
        assert_eq!(non_tty[0], Message::Binary(Bytes::from_static(&[3, 255])));
        let Message::Text(t) = &non_tty[1] else {
            panic!()
        };
        assert!(t.as_str().starts_with("control:"));
        assert_eq!(
            text_of(&non_tty[1]),
            json!({"type": "op.complete", "id": 7, "args": {"exitCode": 255, "ok": true}})
        );
        let tty = end_of_op(3, true, None);
        assert_eq!(
            text_of(&tty[0]),
            json!({"type": "exit", "exit_code": 3, "code": 3})
        );
        assert_eq!(
            text_of(&tty[1]),
            json!({"type": "op.complete", "args": {"exitCode": 3, "ok": true}})
        );
        let bare = bare_op_error("op.not_supported", "no");
        let Message::Text(t) = &bare else { panic!() };
        assert!(t.as_str().starts_with('{'));
        assert_eq!(
            text_of(&bare),
            json!({"type": "op.error", "error": "no", "code": "op.not_supported",
                   "args": {"error": "no", "code": "op.not_supported", "message": "no"}})
        );
        assert_eq!(
            text_of(&op_error(None, "op.invalid", "bad")),
            json!({"type": "op.error", "args": {"error": "bad", "code": "op.invalid", "message": "bad"}})
        );
    }
}

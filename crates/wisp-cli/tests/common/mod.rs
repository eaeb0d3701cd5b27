//! A small in-process stand-in for wispd that speaks the public API (REST + exec WebSocket
//! framing), and helpers to run the `wisp` binary against it.

#![allow(dead_code)]

use std::process::Stdio;
use std::sync::{Arc, Mutex};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

pub const TOKEN: &str = "secret";

#[derive(Clone, Default)]
pub struct Mock {
    /// Raw query strings of exec requests, in order.
    pub exec_queries: Arc<Mutex<Vec<String>>>,
    /// What interactive sessions received: `text:{json}` or `bin:{escaped bytes}`.
    pub events: Arc<Mutex<Vec<String>>>,
}

impl Mock {
    pub fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }

    pub fn queries(&self) -> Vec<String> {
        self.exec_queries.lock().unwrap().clone()
    }
}

fn sprite(name: &str) -> Value {
    json!({
        "id": format!("sprite-{name}"), "name": name, "organization": "local",
        "status": "cold", "url": format!("http://{name}.localhost"),
        "url_settings": {"auth": "sprite"}, "labels": [],
        "created_at": "2026-01-31T10:28:13.5Z", "updated_at": "2026-01-31T10:28:13.5Z"
    })
}

fn err(status: StatusCode, msg: &str) -> Response {
    (status, Json(json!({ "error": msg }))).into_response()
}

/// The 401 response when the bearer token is wrong.
fn unauthorized(h: &HeaderMap) -> Option<Response> {
    let ok = h.get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer secret");
    (!ok).then(|| err(StatusCode::UNAUTHORIZED, "authentication failed"))
}

async fn list(h: HeaderMap, Query(q): Query<Vec<(String, String)>>) -> Response {
    if let Some(r) = unauthorized(&h) {
        return r;
    }
    let token = q.iter().find(|(k, _)| k == "continuation_token");
    match token.map(|(_, v)| v.as_str()) {
        None => Json(json!({"sprites": [sprite("alpha")], "has_more": true,
                            "next_continuation_token": "page2"}))
        .into_response(),
        Some("page2") => Json(
            json!({"sprites": [sprite("beta-long-name")], "has_more": false,
                                     "next_continuation_token": null}),
        )
        .into_response(),
        Some(_) => err(StatusCode::BAD_REQUEST, "bad token"),
    }
}

async fn create(h: HeaderMap, Json(body): Json<Value>) -> Response {
    if let Some(r) = unauthorized(&h) {
        return r;
    }
    let name = body["name"].as_str().unwrap_or_default();
    if name == "taken" {
        return err(
            StatusCode::CONFLICT,
            "A sprite named 'taken' already exists. Please choose a different name.",
        );
    }
    let mut s = sprite(name);
    s["labels"] = body.get("labels").cloned().unwrap_or(json!([]));
    (StatusCode::CREATED, Json(s)).into_response()
}

async fn get_one(h: HeaderMap, Path(name): Path<String>) -> Response {
    if let Some(r) = unauthorized(&h) {
        return r;
    }
    if name == "box" {
        Json(sprite("box")).into_response()
    } else {
        err(StatusCode::NOT_FOUND, "sprite not found")
    }
}

async fn destroy(h: HeaderMap, Path(name): Path<String>) -> Response {
    if let Some(r) = unauthorized(&h) {
        return r;
    }
    if name == "box" {
        StatusCode::NO_CONTENT.into_response()
    } else {
        err(StatusCode::NOT_FOUND, "sprite not found")
    }
}

async fn exec(
    State(m): State<Mock>,
    h: HeaderMap,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
    ws: WebSocketUpgrade,
) -> Response {
    if let Some(r) = unauthorized(&h) {
        return r;
    }
    if name != "box" {
        return err(StatusCode::NOT_FOUND, "sprite not found");
    }
    let raw = raw.unwrap_or_default();
    m.exec_queries.lock().unwrap().push(raw.clone());
    let pairs: Vec<(String, String)> = form_urlencoded::parse(raw.as_bytes())
        .into_owned()
        .collect();
    let cmd: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "cmd")
        .map(|(_, v)| v.clone())
        .collect();
    let tty = pairs.iter().any(|(k, v)| k == "tty" && v == "true");
    let events = m.events.clone();
    ws.on_upgrade(move |socket| session(socket, cmd, tty, events))
}

async fn send_exit(s: &mut WebSocket, code: u8, tty: bool) {
    if !tty {
        let _ = s.send(Message::Binary(vec![3, code].into())).await;
    }
    let text = format!(r#"{{"type":"exit","exit_code":{code},"code":{code}}}"#);
    let _ = s.send(Message::Text(text.into())).await;
    let _ = s.send(Message::Close(None)).await;
    // Read until the client's close: dropping a socket with unread input makes the kernel
    // send RST, which can discard output the client has not read yet.
    let drain = async { while let Some(Ok(_)) = s.recv().await {} };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), drain).await;
}

fn record(events: &Mutex<Vec<String>>, msg: &Message) {
    let e = match msg {
        Message::Text(t) => format!("text:{}", t.as_str()),
        Message::Binary(b) => format!("bin:{}", b.escape_ascii()),
        _ => return,
    };
    events.lock().unwrap().push(e);
}

async fn session(mut s: WebSocket, cmd: Vec<String>, tty: bool, events: Arc<Mutex<Vec<String>>>) {
    let info = r#"{"type":"session_info","session_id":"42","command":"x","created":0,"cols":0,"rows":0,"is_owner":true,"tty":false}"#;
    let _ = s.send(Message::Text(info.into())).await;
    let _ = s
        .send(Message::Text(r#"{"type":"keepalive"}"#.into()))
        .await;
    match cmd.first().map(String::as_str) {
        Some("echo") => {
            let mut out = vec![1u8];
            out.extend_from_slice(cmd[1..].join(" ").as_bytes());
            out.push(b'\n');
            let _ = s.send(Message::Binary(out.into())).await;
            let _ = s.send(Message::Binary(b"\x02oops\n".to_vec().into())).await;
            send_exit(&mut s, 7, false).await;
        }
        Some("cat") => {
            // Echo stdin frames back until EOF, then report how many bytes came.
            let mut total = 0usize;
            while let Some(Ok(msg)) = s.recv().await {
                if let Message::Binary(b) = msg {
                    match b.first() {
                        Some(0) => {
                            total += b.len() - 1;
                            let mut out = b.to_vec();
                            out[0] = 1;
                            let _ = s.send(Message::Binary(out.into())).await;
                        }
                        Some(4) => break,
                        _ => {}
                    }
                }
            }
            let msg = format!("\x02{total} bytes\n");
            let _ = s.send(Message::Binary(msg.into_bytes().into())).await;
            send_exit(&mut s, 0, false).await;
        }
        Some("tty") => {
            let _ = s.send(Message::Binary(b"raw\r\n".to_vec().into())).await;
            send_exit(&mut s, 3, tty).await;
        }
        Some("bash") | Some("sleepy") | Some("stubborn") => {
            // Interactive: say ready, record everything; `sleepy` exits 130 on a signal frame.
            let ready: &[u8] = if tty { b"ready\r\n" } else { b"\x01ready\n" };
            let _ = s.send(Message::Binary(ready.to_vec().into())).await;
            while let Some(Ok(msg)) = s.recv().await {
                record(&events, &msg);
                let is_signal = matches!(&msg, Message::Text(t) if t.as_str().contains("signal"));
                if cmd[0] == "sleepy" && is_signal {
                    let _ = s
                        .send(Message::Binary(b"\x01got INT\n".to_vec().into()))
                        .await;
                    send_exit(&mut s, 130, false).await;
                    break;
                }
            }
        }
        Some("drop") => {
            let _ = s
                .send(Message::Binary(b"\x01partial".to_vec().into()))
                .await;
            // Dropping the socket without an exit.
        }
        _ => send_exit(&mut s, 0, tty).await,
    }
}

pub async fn start() -> (String, Mock) {
    let mock = Mock::default();
    let app = Router::new()
        .route("/v1/sprites", get(list).post(create))
        .route("/v1/sprites/{name}", get(get_one).delete(destroy))
        .route("/v1/sprites/{name}/exec", get(exec))
        .with_state(mock.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), mock)
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub async fn wisp(api: &str, args: &[&str], stdin: Option<&[u8]>) -> Run {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_wisp"));
    cmd.args(args)
        .env_clear()
        .env("HOME", home.path())
        .env("WISP_API_URL", api)
        .env("WISP_TOKEN", TOKEN)
        .current_dir(home.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(data) = stdin {
        input.write_all(data).await.unwrap();
    }
    drop(input);
    let out = tokio::time::timeout(std::time::Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("wisp hung")
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

//! The sprite lifecycle and the exec protocol end to end, with `examples/fake_keeper.rs`
//! standing in for wisp-keeper (no root needed: commands run directly on the host).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{DaemonOptions, TestDaemon};
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

fn fake_keeper() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_BIN_EXE_wispd"))
        .parent()
        .expect("target dir")
        .join("examples/fake_keeper");
    assert!(
        p.exists(),
        "{} missing: build with `cargo test` (it builds examples)",
        p.display()
    );
    p
}

fn options(data_dir: Option<PathBuf>) -> DaemonOptions {
    DaemonOptions {
        args: vec!["--keeper-bin".into(), fake_keeper().display().to_string()],
        data_dir,
        ..Default::default()
    }
}

fn start() -> TestDaemon {
    TestDaemon::start_with(options(None))
}

async fn create(d: &TestDaemon, name: &str) -> Value {
    let res = d
        .client()
        .post(d.url("/v1/sprites"))
        .header("authorization", d.bearer())
        .json(&json!({"name": name, "labels": ["t"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED, "{}", d.log());
    res.json().await.unwrap()
}

async fn get_json(d: &TestDaemon, path: &str) -> (StatusCode, Value) {
    let res = d
        .client()
        .get(d.url(path))
        .header("authorization", d.bearer())
        .send()
        .await
        .unwrap();
    let s = res.status();
    (s, res.json().await.unwrap_or(Value::Null))
}

#[derive(Debug, Clone, PartialEq)]
enum Got {
    Text(Value),
    Binary(Vec<u8>),
    Close(Option<u16>),
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(d: &TestDaemon, path_and_query: &str) -> Ws {
    let (ws, res) = tokio_tungstenite::connect_async(d.ws_request(path_and_query))
        .await
        .unwrap_or_else(|e| panic!("{path_and_query}: {e:?}\n{}", d.log()));
    assert_eq!(res.headers()["x-sprite-capabilities"], "signal");
    assert_eq!(res.headers()["sprite-version"], wisp_api::SPRITE_VERSION);
    assert!(res.headers().get("sec-websocket-extensions").is_none());
    ws
}

/// Reads frames until the server's close frame (or the end), skipping keepalives.
async fn collect(ws: &mut Ws) -> Vec<Got> {
    let mut got = Vec::new();
    let read = async {
        while let Some(m) = ws.next().await {
            match m {
                Ok(Message::Text(t)) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    if v["type"] != "keepalive" {
                        got.push(Got::Text(v));
                    }
                }
                Ok(Message::Binary(b)) => got.push(Got::Binary(b.to_vec())),
                Ok(Message::Close(f)) => {
                    got.push(Got::Close(f.map(|f| u16::from(f.code))));
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("exec did not finish in time");
    got
}

fn stream_bytes(got: &[Got], id: u8) -> Vec<u8> {
    got.iter()
        .filter_map(|g| match g {
            Got::Binary(b) if b.first() == Some(&id) => Some(b[1..].to_vec()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn session_info(got: &[Got]) -> &Value {
    match got.first() {
        Some(Got::Text(v)) if v["type"] == "session_info" => v,
        other => panic!("first frame is not session_info: {other:?}"),
    }
}

#[tokio::test]
async fn sprite_crud() {
    let d = start();
    let s = create(&d, "alpha").await;
    assert!(s["id"].as_str().unwrap().starts_with("sprite-"));
    assert_eq!(s["status"], "running");
    assert_eq!(s["organization"], "default");
    assert_eq!(
        s["url"],
        format!("http://alpha.localhost:{}", d.addr.port())
    );
    assert_eq!(s["url_settings"], json!({"auth": "sprite"}));
    assert_eq!(s["labels"], json!(["t"]));
    assert!(s["last_started_at"].is_string());
    assert_eq!(s["last_running_at"], s["last_started_at"]);
    assert!(s["created_at"].as_str().unwrap().ends_with('Z'));

    let res = d
        .client()
        .post(d.url("/v1/sprites"))
        .header("authorization", d.bearer())
        .json(&json!({"name": "alpha"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CONFLICT);
    let b: Value = res.json().await.unwrap();
    assert_eq!(
        b["error"],
        "A sprite named 'alpha' already exists. Please choose a different name."
    );

    create(&d, "beta").await;
    create(&d, "gamma").await;
    let (_, page) = get_json(&d, "/v1/sprites?max_results=2").await;
    let names: Vec<_> = page["sprites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].clone())
        .collect();
    assert_eq!(names, [json!("alpha"), json!("beta")]);
    assert_eq!(page["has_more"], true);
    assert_eq!(page["org"]["running"], 3);
    let token = page["next_continuation_token"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, page) = get_json(
        &d,
        &format!("/v1/sprites?max_results=2&continuation_token={token}"),
    )
    .await;
    assert_eq!(page["sprites"][0]["name"], "gamma");
    assert_eq!(page["has_more"], false);
    assert_eq!(page["next_continuation_token"], Value::Null);
    let (_, page) = get_json(&d, "/v1/sprites?prefix=b").await;
    assert_eq!(page["sprites"].as_array().unwrap().len(), 1);

    let res = d
        .client()
        .put(d.url("/v1/sprites/alpha"))
        .header("authorization", d.bearer())
        .json(&json!({"url_settings": {"auth": "public"}, "labels": ["x", "y"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let u: Value = res.json().await.unwrap();
    assert_eq!(u["url_settings"]["auth"], "public");
    assert_eq!(u["labels"], json!(["x", "y"]));
    let res = d
        .client()
        .put(d.url("/v1/sprites/alpha"))
        .header("authorization", d.bearer())
        .json(&json!({"clear_labels": true}))
        .send()
        .await
        .unwrap();
    let u: Value = res.json().await.unwrap();
    assert_eq!(u["labels"], json!([]));
    assert_eq!(u["url_settings"]["auth"], "public");

    let res = d
        .client()
        .delete(d.url("/v1/sprites/alpha"))
        .header("authorization", d.bearer())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        get_json(&d, "/v1/sprites/alpha").await.0,
        StatusCode::NOT_FOUND
    );
    let id = s["id"].as_str().unwrap();
    assert!(!d.data_dir.join("sprites").join(id).exists());
    assert!(!d.data_dir.join("run").join(format!("{id}.sock")).exists());
}

#[tokio::test]
async fn non_tty_end_of_command_sequence() {
    let d = start();
    create(&d, "e").await;
    let mut ws = connect(
        &d,
        "/v1/sprites/e/exec?cmd=sh&cmd=-c&cmd=echo%20out%3B%20echo%20err%20%3E%262%3B%20exit%203&dir=/tmp",
    )
    .await;
    let got = collect(&mut ws).await;
    let info = session_info(&got);
    assert_eq!(info["is_owner"], true);
    assert_eq!(info["tty"], false);
    assert!(info["session_id"].is_string());
    assert!(info["created"].is_i64());
    assert_eq!(stream_bytes(&got, 1), b"out\n");
    assert_eq!(stream_bytes(&got, 2), b"err\n");
    let n = got.len();
    assert_eq!(got[n - 3], Got::Binary(vec![3, 3]));
    assert_eq!(
        got[n - 2],
        Got::Text(json!({"type": "exit", "exit_code": 3, "code": 3}))
    );
    assert_eq!(got[n - 1], Got::Close(Some(1000)));
}

#[tokio::test]
async fn stdin_env_and_dir() {
    let d = start();
    create(&d, "s").await;
    let mut ws = connect(&d, "/v1/sprites/s/exec?cmd=cat&stdin=true&dir=/tmp").await;
    ws.send(Message::Binary(b"\x00hello ".to_vec().into()))
        .await
        .unwrap();
    ws.send(Message::Binary(b"\x00world".to_vec().into()))
        .await
        .unwrap();
    ws.send(Message::Binary(vec![4].into())).await.unwrap();
    let got = collect(&mut ws).await;
    assert_eq!(stream_bytes(&got, 1), b"hello world");
    assert!(got.contains(&Got::Binary(vec![3, 0])));

    let mut ws = connect(
        &d,
        "/v1/sprites/s/exec?cmd=sh&cmd=-c&cmd=echo%20%24HOME%3A%24USER%3A%24FOO%3A%24PWD&env=FOO=bar&dir=/tmp",
    )
    .await;
    let got = collect(&mut ws).await;
    assert_eq!(stream_bytes(&got, 1), b"/home/sprite:sprite:bar:/tmp\n");

    // stdin=false (the default): the process reads /dev/null, stdin frames are dropped.
    let mut ws = connect(&d, "/v1/sprites/s/exec?cmd=cat&dir=/tmp").await;
    ws.send(Message::Binary(b"\x00ignored".to_vec().into()))
        .await
        .unwrap();
    let got = collect(&mut ws).await;
    assert_eq!(stream_bytes(&got, 1), b"");
    assert!(got.contains(&Got::Binary(vec![3, 0])));
}

#[tokio::test]
async fn malformed_frames_end_only_that_session() {
    let d = start();
    create(&d, "m").await;
    for (frame, code) in [
        (vec![], 1003u16),
        (vec![9u8, 1], 1008),
        (vec![1u8, 1], 1008),
    ] {
        let mut ws = connect(&d, "/v1/sprites/m/exec?cmd=cat&stdin=true&dir=/tmp").await;
        ws.send(Message::Binary(frame.clone().into()))
            .await
            .unwrap();
        let got = collect(&mut ws).await;
        assert_eq!(
            got.last(),
            Some(&Got::Close(Some(code))),
            "{frame:?}: {got:?}"
        );
    }
    // Pings are answered while a command runs.
    let mut ws = connect(&d, "/v1/sprites/m/exec?cmd=sleep&cmd=2&dir=/tmp").await;
    ws.send(Message::Ping(b"p".to_vec().into())).await.unwrap();
    let pong = async {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Pong(p) = m {
                return p.to_vec();
            }
        }
        Vec::new()
    };
    let p = tokio::time::timeout(Duration::from_secs(5), pong)
        .await
        .unwrap();
    assert_eq!(p, b"p");

    // Unknown text messages are ignored; the daemon is fine.
    let mut ws = connect(&d, "/v1/sprites/m/exec?cmd=echo&cmd=ok&dir=/tmp").await;
    ws.send(Message::Text("{\"type\":\"bogus\"}".into()))
        .await
        .unwrap();
    ws.send(Message::Text("not json".into())).await.unwrap();
    let got = collect(&mut ws).await;
    assert_eq!(stream_bytes(&got, 1), b"ok\n");
}

#[tokio::test]
async fn tty_sequence_and_signals() {
    let d = start();
    create(&d, "t").await;
    let mut ws = connect(
        &d,
        "/v1/sprites/t/exec?cmd=sh&cmd=-c&cmd=echo%20hi%3B%20exit%205&tty=true&dir=/tmp",
    )
    .await;
    let got = collect(&mut ws).await;
    assert_eq!(session_info(&got)["tty"], true);
    let n = got.len();
    assert_eq!(
        got[n - 2],
        Got::Text(json!({"type": "exit", "exit_code": 5, "code": 5}))
    );
    assert_eq!(got[n - 1], Got::Close(Some(1000)));
    // Raw bytes, and no binary exit frame in TTY mode.
    let raw: Vec<u8> = got
        .iter()
        .filter_map(|g| match g {
            Got::Binary(b) => Some(b.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(raw, b"hi\n");

    // A text signal message; a death by SIGTERM is 143.
    let mut ws = connect(&d, "/v1/sprites/t/exec?cmd=sleep&cmd=30&dir=/tmp").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    ws.send(Message::Text(
        "{\"type\":\"signal\",\"signal\":\"TERM\"}".into(),
    ))
    .await
    .unwrap();
    let got = collect(&mut ws).await;
    assert!(got.contains(&Got::Binary(vec![3, 143])), "{got:?}");

    // The JS SDK's binary control message in TTY mode.
    let mut ws = connect(&d, "/v1/sprites/t/exec?cmd=sleep&cmd=30&tty=true&dir=/tmp").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    ws.send(Message::Binary(
        br#"{"type":"signal","signal":"KILL"}"#.to_vec().into(),
    ))
    .await
    .unwrap();
    let got = collect(&mut ws).await;
    assert!(
        got.contains(&Got::Text(
            json!({"type": "exit", "exit_code": 137, "code": 137})
        )),
        "{got:?}"
    );
}

#[tokio::test]
async fn http_exec() {
    let d = start();
    create(&d, "h").await;
    let res = d
        .client()
        .post(d.url(
            "/v1/sprites/h/exec?cmd=sh&cmd=-c&cmd=cat%3B%20echo%20e%20%3E%262%3B%20exit%207&stdin=true&dir=/tmp",
        ))
        .header("authorization", d.bearer())
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "application/octet-stream");
    let body = res.bytes().await.unwrap().to_vec();
    assert!(body.ends_with(&[3, 7]), "{body:?}");
    assert!(body.windows(4).any(|w| w == b"\x01abc"), "{body:?}");
    assert!(body.windows(3).any(|w| w == b"\x02e\n"), "{body:?}");
}

#[tokio::test]
async fn sessions_attach_and_kill() {
    let d = start();
    create(&d, "k").await;
    // A command that outlives its first client.
    let mut ws = connect(
        &d,
        "/v1/sprites/k/exec?cmd=sh&cmd=-c&cmd=sleep%201%3B%20echo%20late&max_run_after_disconnect=0&dir=/tmp",
    )
    .await;
    let Some(Ok(Message::Text(t))) = ws.next().await else {
        panic!()
    };
    let info: Value = serde_json::from_str(t.as_str()).unwrap();
    let id = info["session_id"].as_str().unwrap().to_string();
    drop(ws);

    let (s, list) = get_json(&d, "/v1/sprites/k/exec").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["count"], 1);
    assert_eq!(list["sessions"][0]["id"], id.as_str());
    let (s, one) = get_json(&d, &format!("/v1/sprites/k/exec/{id}")).await;
    assert_eq!((s, &one["id"]), (StatusCode::OK, &json!(id)));

    // Attach, path form: session_info says not the owner, then the live output.
    let mut ws = connect(&d, &format!("/v1/sprites/k/exec/{id}")).await;
    let got = collect(&mut ws).await;
    assert_eq!(session_info(&got)["is_owner"], false);
    assert_eq!(stream_bytes(&got, 1), b"late\n");
    assert!(got.contains(&Got::Binary(vec![3, 0])));

    // An attacher feeds stdin when it says stdin=true (query form of attach this time).
    let mut ws = connect(
        &d,
        "/v1/sprites/k/exec?cmd=cat&stdin=true&max_run_after_disconnect=0&dir=/tmp",
    )
    .await;
    let Some(Ok(Message::Text(t))) = ws.next().await else {
        panic!()
    };
    let id = serde_json::from_str::<Value>(t.as_str()).unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    drop(ws);
    let mut ws = connect(&d, &format!("/v1/sprites/k/exec?id={id}&stdin=true")).await;
    ws.send(Message::Binary(b"\x00fed".to_vec().into()))
        .await
        .unwrap();
    ws.send(Message::Binary(vec![4].into())).await.unwrap();
    let got = collect(&mut ws).await;
    assert_eq!(stream_bytes(&got, 1), b"fed");
    assert!(got.contains(&Got::Binary(vec![3, 0])));

    // Unknown sessions: 404 on attach (both forms) and kill.
    for path in ["/v1/sprites/k/exec/999999", "/v1/sprites/k/exec?id=999999"] {
        let err = tokio_tungstenite::connect_async(d.ws_request(path))
            .await
            .expect_err(path);
        let tokio_tungstenite::tungstenite::Error::Http(res) = err else {
            panic!()
        };
        assert_eq!(res.status(), 404, "{path}");
        let b: Value = serde_json::from_slice(res.body().as_deref().unwrap()).unwrap();
        assert_eq!(b["error"], "session not found: 999999");
    }

    // Kill: signal, exited, complete with 143.
    let mut ws = connect(&d, "/v1/sprites/k/exec?cmd=sleep&cmd=30&dir=/tmp").await;
    let Some(Ok(Message::Text(t))) = ws.next().await else {
        panic!()
    };
    let id = serde_json::from_str::<Value>(t.as_str()).unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let res = d
        .client()
        .post(d.url(&format!(
            "/v1/sprites/k/exec/{id}/kill?signal=SIGTERM&timeout=5s"
        )))
        .header("authorization", d.bearer())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "application/x-ndjson");
    let text = res.text().await.unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let types: Vec<_> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["signal", "exited", "complete"], "{text}");
    assert_eq!(events[2]["exit_code"], 143);
    let got = collect(&mut ws).await;
    assert!(got.contains(&Got::Binary(vec![3, 143])));
    let (_, list) = get_json(&d, "/v1/sprites/k/exec").await;
    assert_eq!(list["count"], 0);
}

#[tokio::test]
async fn wake_from_cold_and_survive_wispd_crash() {
    let dir = tempfile::tempdir().unwrap();
    let _cleanup = common::KeeperCleanup(dir.path().to_path_buf());
    let mut d = TestDaemon::start_with(options(Some(dir.path().to_path_buf())));
    create(&d, "w").await;
    // Stop the keeper behind wispd's back: the sprite is cold.
    common::shutdown_keepers(&d.data_dir);
    let (_, s) = get_json(&d, "/v1/sprites/w").await;
    assert_eq!(s["status"], "cold");
    // Any exec wakes it; concurrent ones share one start.
    let (a, b) = tokio::join!(
        connect(&d, "/v1/sprites/w/exec?cmd=true&dir=/tmp"),
        connect(&d, "/v1/sprites/w/exec?cmd=true&dir=/tmp"),
    );
    for mut ws in [a, b] {
        assert!(collect(&mut ws).await.contains(&Got::Binary(vec![3, 0])));
    }
    let (_, s) = get_json(&d, "/v1/sprites/w").await;
    assert_eq!(s["status"], "running");
    assert_eq!(d.log().matches("waking sprite").count(), 1, "{}", d.log());

    // kill -9 wispd: the sprite keeps running and the new wispd finds it.
    d.kill9();
    let d2 = TestDaemon::start_with(options(Some(dir.path().to_path_buf())));
    let (_, s) = get_json(&d2, "/v1/sprites/w").await;
    assert_eq!(s["status"], "running");
    let mut ws = connect(&d2, "/v1/sprites/w/exec?cmd=echo&cmd=again&dir=/tmp").await;
    assert_eq!(stream_bytes(&collect(&mut ws).await, 1), b"again\n");
    // (The log file is shared with the first wispd: still only its one wake.)
    assert_eq!(d2.log().matches("waking sprite").count(), 1);
}

#[tokio::test]
async fn keepalive_while_silent() {
    let d = start();
    create(&d, "q").await;
    let mut ws = connect(&d, "/v1/sprites/q/exec?cmd=sleep&cmd=17&dir=/tmp").await;
    let mut keepalives = 0;
    let read = async {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Text(t) = m {
                if t.as_str() == r#"{"type":"keepalive"}"# {
                    keepalives += 1;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .unwrap();
    assert_eq!(keepalives, 1);
}

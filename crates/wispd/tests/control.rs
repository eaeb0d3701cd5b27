//! The control WebSocket (§3.3) against real sprites: many sequential operations on one
//! socket, both stdin dialects, TTY ops with resize, refused ops that leave the socket usable,
//! Go's `release`, auto-start from the URL, two sockets at once, a socket dropped mid-op, an
//! idle socket that does not keep its sprite awake, and TCP proxy ops (Go's bare form and the
//! prefixed one).

mod common;

use std::time::{Duration, Instant};

use common::{contains, TestDaemon, Ws};
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// Opens a control socket; checks the upgrade's headers.
async fn open(d: &TestDaemon, path_and_query: &str) -> Ws {
    let (ws, res) = tokio_tungstenite::connect_async(d.ws_request(path_and_query))
        .await
        .unwrap_or_else(|e| panic!("{path_and_query}: {e:?}\n{}", d.log()));
    assert_eq!(res.headers()["x-sprite-capabilities"], "signal");
    assert!(res.headers().get("sec-websocket-extensions").is_none());
    ws
}

async fn control(d: &TestDaemon, sprite: &str) -> Ws {
    open(d, &format!("/v1/sprites/{sprite}/control")).await
}

async fn send_control(ws: &mut Ws, msg: Value) {
    ws.send(Message::Text(format!("control:{msg}").into()))
        .await
        .expect("send control message");
}

async fn start(ws: &mut Ws, args: Value) {
    send_control(ws, json!({"type": "op.start", "op": "exec", "args": args})).await;
}

async fn binary(ws: &mut Ws, data: &[u8]) {
    ws.send(Message::Binary(data.to_vec().into()))
        .await
        .expect("send binary");
}

/// One frame of an op as the client saw it.
#[derive(Debug, Clone, PartialEq)]
enum Frame {
    /// A non-control text frame (JSON).
    Text(Value),
    Binary(Vec<u8>),
    /// A `control:` message (JSON after the prefix).
    Control(Value),
}

/// What one op looked like: its frames up to and including `op.complete`/`op.error`.
#[derive(Debug)]
struct Op {
    frames: Vec<Frame>,
}

impl Op {
    fn end(&self) -> &Value {
        match self.frames.last() {
            Some(Frame::Control(v)) => v,
            other => panic!("op did not end with a control message: {other:?}"),
        }
    }

    fn completed_with(&self) -> i64 {
        let end = self.end();
        assert_eq!(end["type"], "op.complete", "{:?}", self.frames);
        assert_eq!(end["args"]["ok"], true, "{end}");
        end["args"]["exitCode"].as_i64().expect("exitCode")
    }

    fn error(&self) -> (String, String) {
        let end = self.end();
        assert_eq!(end["type"], "op.error", "{:?}", self.frames);
        let args = &end["args"];
        assert_eq!(args["error"], args["message"]);
        (
            args["code"].as_str().unwrap().to_string(),
            args["error"].as_str().unwrap().to_string(),
        )
    }

    fn stream(&self, id: u8) -> Vec<u8> {
        self.frames
            .iter()
            .filter_map(|f| match f {
                Frame::Binary(b) if b.first() == Some(&id) => Some(b[1..].to_vec()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stream(1)).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stream(2)).into_owned()
    }

    fn session_info(&self) -> &Value {
        match self.frames.first() {
            Some(Frame::Text(v)) if v["type"] == "session_info" => v,
            other => panic!("first frame is not session_info: {other:?}"),
        }
    }

    /// The non-TTY end: `[3, code]` right before `op.complete`, and no other exit frame.
    fn assert_non_tty_end(&self, code: u8) {
        let n = self.frames.len();
        assert!(n >= 2, "{:?}", self.frames);
        assert_eq!(
            self.frames[n - 2],
            Frame::Binary(vec![3, code]),
            "{:?}",
            self.frames
        );
        assert_eq!(self.completed_with(), i64::from(code));
        let exits = self
            .frames
            .iter()
            .filter(|f| {
                matches!(f, Frame::Binary(b) if b.first() == Some(&3))
                    || matches!(f, Frame::Text(v) if v["type"] == "exit")
            })
            .count();
        assert_eq!(exits, 1, "{:?}", self.frames);
    }

    /// The TTY end: text `exit` right before `op.complete`.
    fn assert_tty_end(&self, code: u8) {
        let n = self.frames.len();
        assert_eq!(
            self.frames[n - 2],
            Frame::Text(json!({"type": "exit", "exit_code": code, "code": code})),
            "{:?}",
            self.frames
        );
        assert_eq!(self.completed_with(), i64::from(code));
    }
}

fn parse(msg: Message) -> Option<Frame> {
    match msg {
        Message::Text(t) => {
            let t = t.as_str();
            if let Some(rest) = t.strip_prefix("control:") {
                return Some(Frame::Control(
                    serde_json::from_str(rest).expect("control JSON"),
                ));
            }
            let v: Value = serde_json::from_str(t).expect("text frame JSON");
            (v["type"] != "keepalive").then_some(Frame::Text(v))
        }
        Message::Binary(b) => Some(Frame::Binary(b.to_vec())),
        Message::Close(f) => panic!("socket closed during an op: {f:?}"),
        _ => None,
    }
}

/// Reads frames up to the op's `op.complete` or `op.error`.
async fn read_op(ws: &mut Ws) -> Op {
    let mut frames = Vec::new();
    let read = async {
        loop {
            let m = ws
                .next()
                .await
                .expect("socket ended")
                .expect("socket error");
            if let Some(f) = parse(m) {
                let done = matches!(&f, Frame::Control(v)
                    if v["type"] == "op.complete" || v["type"] == "op.error");
                frames.push(f);
                if done {
                    break;
                }
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .is_err()
    {
        panic!("op did not end in time; frames so far: {frames:?}");
    }
    Op { frames }
}

/// Reads TTY output until `needle` appears; returns everything read.
async fn read_tty_until(ws: &mut Ws, out: &mut Vec<u8>, needle: &[u8]) {
    let read = async {
        while !contains(out, needle) {
            match parse(ws.next().await.expect("ended").expect("error")) {
                Some(Frame::Binary(b)) => out.extend_from_slice(&b),
                Some(Frame::Control(v)) => panic!("op ended waiting for output: {v}"),
                _ => {}
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .is_err()
    {
        panic!(
            "no {:?} in time; output: {:?}",
            String::from_utf8_lossy(needle),
            String::from_utf8_lossy(out)
        );
    }
}

/// Asserts that nothing (but keepalives) arrives for a moment.
async fn assert_quiet(ws: &mut Ws, for_: Duration) {
    let deadline = tokio::time::Instant::now() + for_;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return,
            Ok(Some(Ok(m))) => {
                if let Some(f) = parse(m) {
                    panic!("unexpected frame: {f:?}");
                }
            }
            Ok(other) => panic!("socket ended: {other:?}"),
        }
    }
}

#[tokio::test]
async fn many_ops_on_one_socket() {
    let d = TestDaemon::start_real();
    d.create("ctl-seq").await;
    let mut ws = control(&d, "ctl-seq").await;

    // Output, in order, ending with [3, 0] then op.complete.
    start(&mut ws, json!({"cmd": ["echo", "hello"]})).await;
    let op = read_op(&mut ws).await;
    let info = op.session_info();
    assert_eq!(info["is_owner"], true);
    assert_eq!(info["tty"], false);
    assert_eq!(info["command"], "echo hello");
    assert_eq!(op.stdout(), "hello\n");
    op.assert_non_tty_end(0);

    // stdout and stderr apart, an exit code, env and dir (Python's string form).
    start(
        &mut ws,
        json!({"cmd": ["sh", "-c", "echo \"$FOO\"; pwd; echo err >&2; exit 3"],
               "env": ["FOO=bar baz"], "dir": "/tmp", "stdin": "false"}),
    )
    .await;
    let op = read_op(&mut ws).await;
    assert_eq!(
        (op.stdout(), op.stderr()),
        ("bar baz\n/tmp\n".into(), "err\n".into())
    );
    op.assert_non_tty_end(3);

    // Stdin, Python/JS dialect: 0x00-prefixed frames, then [0x04].
    start(&mut ws, json!({"cmd": ["cat"], "stdin": "true"})).await;
    binary(&mut ws, b"\x00abc").await;
    binary(&mut ws, b"\x00\x00\x01\x04def").await;
    binary(&mut ws, &[4]).await;
    let op = read_op(&mut ws).await;
    assert_eq!(op.stream(1), b"abc\x00\x01\x04def");
    op.assert_non_tty_end(0);

    // Stdin, Go dialect: raw bytes (even ones that look like stream ids), then [0x04].
    start(&mut ws, json!({"cmd": ["cat"], "stdin": "true"})).await;
    binary(&mut ws, b"raw go bytes\n").await;
    binary(&mut ws, b"\x01\x02\x03 more").await;
    binary(&mut ws, &[4]).await;
    let op = read_op(&mut ws).await;
    assert_eq!(op.stream(1), b"raw go bytes\n\x01\x02\x03 more");
    op.assert_non_tty_end(0);

    // Without stdin the command reads EOF at once; a late stray EOF frame is harmless.
    start(&mut ws, json!({"cmd": ["cat"]})).await;
    binary(&mut ws, &[4]).await;
    let op = read_op(&mut ws).await;
    assert_eq!(op.stdout(), "");
    op.assert_non_tty_end(0);
    binary(&mut ws, &[4]).await;
    binary(&mut ws, b"\x00late").await;

    // A TTY op (numbers and booleans accepted), resized by a text and by a binary (JS) frame.
    start(
        &mut ws,
        json!({"cmd": ["sh", "-c", "stty size; read a; stty size; read b; stty size; exit 7"],
               "tty": true, "rows": 24, "cols": 80}),
    )
    .await;
    let mut out = Vec::new();
    read_tty_until(&mut ws, &mut out, b"24 80").await;
    ws.send(Message::Text(
        json!({"type": "resize", "cols": 100, "rows": 30})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    binary(&mut ws, b"x\r").await;
    read_tty_until(&mut ws, &mut out, b"30 100").await;
    binary(
        &mut ws,
        json!({"type": "resize", "cols": 120, "rows": 40})
            .to_string()
            .as_bytes(),
    )
    .await;
    binary(&mut ws, b"y\r").await;
    read_tty_until(&mut ws, &mut out, b"40 120").await;
    let op = read_op(&mut ws).await;
    op.assert_tty_end(7);
    assert!(
        !op.frames
            .iter()
            .any(|f| matches!(f, Frame::Binary(b) if b == &[3, 7])),
        "{:?}",
        op.frames
    );

    // A signal (text frame) ends a command; 128+15.
    start(&mut ws, json!({"cmd": ["sleep", "30"]})).await;
    let first = read_tty_frames(&mut ws, 1).await;
    assert!(matches!(&first[0], Frame::Text(v) if v["type"] == "session_info"));
    ws.send(Message::Text(
        json!({"type": "signal", "signal": "TERM"})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let op = read_op(&mut ws).await;
    op.assert_non_tty_end(143);

    // Still usable after all that.
    start(&mut ws, json!({"cmd": ["true"]})).await;
    read_op(&mut ws).await.assert_non_tty_end(0);
    ws.close(None).await.unwrap();
    d.delete("ctl-seq").await;
}

/// The next `n` frames (keepalives skipped).
async fn read_tty_frames(ws: &mut Ws, n: usize) -> Vec<Frame> {
    let mut out = Vec::new();
    while out.len() < n {
        let m = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("frame in time")
            .expect("ended")
            .expect("error");
        out.extend(parse(m));
    }
    out
}

#[tokio::test]
async fn refused_ops_leave_the_socket_usable() {
    let d = TestDaemon::start_real();
    d.create("ctl-err").await;
    let mut ws = control(&d, "ctl-err").await;

    // No command, a relative dir, a bad tty value: op.error, nothing else.
    for args in [
        json!({}),
        json!({"cmd": []}),
        json!({"cmd": ["ls"], "dir": "relative"}),
        json!({"cmd": ["ls"], "tty": "maybe"}),
        json!({"cmd": ["ls"], "env": ["NOEQUALS"]}),
    ] {
        start(&mut ws, args.clone()).await;
        let op = read_op(&mut ws).await;
        assert_eq!(op.frames.len(), 1, "{args}: {:?}", op.frames);
        let (code, msg) = op.error();
        assert_eq!(code, "op.invalid", "{args}: {msg}");
    }
    // Attaching to a session that does not exist.
    start(&mut ws, json!({"id": "999999"})).await;
    let (code, msg) = read_op(&mut ws).await.error();
    assert_eq!(code, "op.failed");
    assert!(msg.contains("session not found"), "{msg}");
    // Unknown and unsupported ops; the envelope id is echoed.
    send_control(
        &mut ws,
        json!({"type": "op.start", "id": "a1", "op": "frobnicate"}),
    )
    .await;
    let op = read_op(&mut ws).await;
    assert_eq!(op.end()["id"], "a1");
    assert_eq!(op.error().0, "op.not_found");
    send_control(
        &mut ws,
        json!({"type": "op.start", "op": "fs.read", "args": {"path": "/etc/hostname"}}),
    )
    .await;
    assert_eq!(read_op(&mut ws).await.error().0, "op.not_supported");
    // Go's bare fs form gets a bare answer, in its error shape and op.error's.
    ws.send(Message::Text(
        json!({"type": "op.start", "op": "fs.list", "args": "path=%2Ftmp"})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Message::Text(t) = &m else {
        panic!("{m:?}")
    };
    let v: Value = serde_json::from_str(t.as_str()).expect("bare JSON");
    assert_eq!(
        (v["type"].as_str(), v["code"].as_str()),
        (Some("op.error"), Some("op.not_supported"))
    );
    assert_eq!(v["args"]["error"], v["error"]);
    // A control frame that is not JSON.
    ws.send(Message::Text("control:{oops".into()))
        .await
        .unwrap();
    assert_eq!(read_op(&mut ws).await.error().0, "op.invalid");

    // Go's bare release, other bare JSON, text and stray binary frames: no answer at all.
    ws.send(Message::Text(r#"{"type":"release"}"#.into()))
        .await
        .unwrap();
    send_control(&mut ws, json!({"type": "release"})).await;
    ws.send(Message::Text("hello".into())).await.unwrap();
    binary(&mut ws, b"\x00stray").await;
    assert_quiet(&mut ws, Duration::from_millis(500)).await;

    // A command that does not exist is not an op error: 127 and a message, like exec.
    start(&mut ws, json!({"cmd": ["wisp-no-such-command"]})).await;
    let op = read_op(&mut ws).await;
    op.assert_non_tty_end(127);
    assert!(!op.stderr().is_empty());

    start(&mut ws, json!({"cmd": ["echo", "still", "here"]})).await;
    let op = read_op(&mut ws).await;
    assert_eq!(op.stdout(), "still here\n");
    op.assert_non_tty_end(0);
    // Go releases after every op.
    ws.send(Message::Text(r#"{"type":"release"}"#.into()))
        .await
        .unwrap();
    start(&mut ws, json!({"cmd": ["echo", "again"]})).await;
    assert_eq!(read_op(&mut ws).await.stdout(), "again\n");
    d.delete("ctl-err").await;
}

#[tokio::test]
async fn auto_start_and_handshake_refusals() {
    let d = TestDaemon::start_real();
    d.create("ctl-auto").await;

    let mut ws = open(
        &d,
        "/v1/sprites/ctl-auto/control?op=exec&cmd=sh&cmd=-c&cmd=echo%20auto%3B%20exit%205",
    )
    .await;
    let op = read_op(&mut ws).await;
    assert_eq!(op.session_info()["command"], "sh -c echo auto; exit 5");
    assert_eq!(op.stdout(), "auto\n");
    op.assert_non_tty_end(5);
    // The socket goes on like any other.
    start(&mut ws, json!({"cmd": ["echo", "next"]})).await;
    assert_eq!(read_op(&mut ws).await.stdout(), "next\n");

    // Refusals are HTTP answers before the upgrade.
    for (path, status) in [
        ("/v1/sprites/nope/control", 404),
        ("/v1/sprites/ctl-auto/control?op=exec", 400),
        ("/v1/sprites/ctl-auto/control?op=proxy", 400),
        ("/v1/sprites/ctl-auto/control?op=fs.read&path=/", 400),
    ] {
        match tokio_tungstenite::connect_async(d.ws_request(path)).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
                assert_eq!(res.status().as_u16(), status, "{path}");
                let body: Value =
                    serde_json::from_slice(res.body().as_deref().unwrap_or_default()).unwrap();
                assert!(body["error"].is_string(), "{body}");
            }
            other => panic!("{path}: {other:?}"),
        }
    }
    // Without a token.
    let res = d
        .client()
        .get(d.url("/v1/sprites/ctl-auto/control"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    d.delete("ctl-auto").await;
}

#[tokio::test]
async fn two_sockets_run_ops_at_once() {
    let d = TestDaemon::start_real();
    d.create("ctl-two").await;
    let mut a = control(&d, "ctl-two").await;
    let mut b = control(&d, "ctl-two").await;

    // A waits on its stdin while B runs several ops to the end.
    start(
        &mut a,
        json!({"cmd": ["sh", "-c", "read x; echo \"a got $x\""], "stdin": "true"}),
    )
    .await;
    let first = read_tty_frames(&mut a, 1).await;
    assert!(matches!(&first[0], Frame::Text(v) if v["type"] == "session_info"));
    for i in 0..3 {
        start(&mut b, json!({"cmd": ["sh", "-c", format!("echo b{i}")]})).await;
        let op = read_op(&mut b).await;
        assert_eq!(op.stdout(), format!("b{i}\n"));
        op.assert_non_tty_end(0);
    }
    binary(&mut a, b"\x00hello\n").await;
    let op = read_op(&mut a).await;
    assert_eq!(op.stdout(), "a got hello\n");
    op.assert_non_tty_end(0);

    // Both at the same time: two one-second sleeps take about one second.
    let t = Instant::now();
    start(&mut a, json!({"cmd": ["sh", "-c", "sleep 1; echo A"]})).await;
    start(&mut b, json!({"cmd": ["sh", "-c", "sleep 1; echo B"]})).await;
    let (oa, ob) = tokio::join!(read_op(&mut a), read_op(&mut b));
    assert_eq!((oa.stdout(), ob.stdout()), ("A\n".into(), "B\n".into()));
    assert!(
        t.elapsed() < Duration::from_millis(1900),
        "{:?}",
        t.elapsed()
    );
    d.delete("ctl-two").await;
}

#[tokio::test]
async fn a_dropped_socket_leaves_the_session_its_grace() {
    let d = TestDaemon::start_real();
    d.create("ctl-drop").await;

    // Long grace: the command outlives the socket and can be attached to from another one.
    let mut ws = control(&d, "ctl-drop").await;
    start(
        &mut ws,
        json!({"cmd": ["sh", "-c", "read x; echo \"got $x\"; touch /tmp/survived"],
               "stdin": "true", "max_run_after_disconnect": "60s"}),
    )
    .await;
    let first = read_tty_frames(&mut ws, 1).await;
    let Frame::Text(info) = &first[0] else {
        panic!("{first:?}")
    };
    let sid = info["session_id"].as_str().unwrap().to_string();
    drop(ws);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, list) = d.get_json("/v1/sprites/ctl-drop/exec").await;
    assert!(
        list["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == sid.as_str()),
        "{list}"
    );
    // Go's attach over control: `id`, plus stdin to feed a non-TTY session.
    let mut ws = control(&d, "ctl-drop").await;
    start(&mut ws, json!({"id": sid, "stdin": "true"})).await;
    let first = read_tty_frames(&mut ws, 1).await;
    let Frame::Text(info) = &first[0] else {
        panic!("{first:?}")
    };
    assert_eq!(info["type"], "session_info");
    assert_eq!(info["is_owner"], false);
    binary(&mut ws, b"\x00late\n").await;
    let op = read_op(&mut ws).await;
    assert_eq!(op.stdout(), "got late\n");
    op.assert_non_tty_end(0);
    assert_eq!(
        d.sh("ctl-drop", "ls /tmp/survived").await,
        "/tmp/survived\n"
    );

    // Short grace: the command is killed once it runs out.
    start(
        &mut ws,
        json!({"cmd": ["sh", "-c", "sleep 3; touch /tmp/too-late"],
               "max_run_after_disconnect": 1}),
    )
    .await;
    read_tty_frames(&mut ws, 1).await;
    drop(ws);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let e = d.exec("ctl-drop", &["ls", "/tmp/too-late"]).await;
    assert_ne!(e.code, Some(0), "{e:?}");
    d.delete("ctl-drop").await;
}

#[tokio::test]
async fn an_idle_socket_lets_the_sprite_sleep() {
    let d = TestDaemon::start_real_args(&["--idle-timeout", "2s"]);
    d.create("ctl-idle").await;
    let mut ws = control(&d, "ctl-idle").await;
    start(&mut ws, json!({"cmd": ["echo", "one"]})).await;
    assert_eq!(read_op(&mut ws).await.stdout(), "one\n");

    // The socket stays open and idle; the sprite goes warm regardless, and the socket gets a
    // keepalive (a bare text message) within 15 s.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut warm = false;
    let mut keepalive = false;
    while Instant::now() < deadline && !(warm && keepalive) {
        if let Ok(Some(Ok(Message::Text(t)))) =
            tokio::time::timeout(Duration::from_millis(250), ws.next()).await
        {
            assert_eq!(t.as_str(), r#"{"type":"keepalive"}"#);
            keepalive = true;
        }
        if !warm {
            let (_, s) = d.get_json("/v1/sprites/ctl-idle").await;
            warm = s["status"] == "warm";
        }
    }
    assert!(
        warm,
        "the sprite did not go warm with an idle control socket"
    );
    assert!(keepalive, "no keepalive on an idle control socket");

    // The next op wakes it, on the same socket.
    start(&mut ws, json!({"cmd": ["echo", "two"]})).await;
    let op = read_op(&mut ws).await;
    assert_eq!(op.stdout(), "two\n");
    op.assert_non_tty_end(0);
    let (_, s) = d.get_json("/v1/sprites/ctl-idle").await;
    assert_eq!(s["status"], "running");

    // While an op runs, the sprite stays awake past the idle timeout.
    start(&mut ws, json!({"cmd": ["sh", "-c", "sleep 4; echo three"]})).await;
    read_tty_frames(&mut ws, 1).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, s) = d.get_json("/v1/sprites/ctl-idle").await;
    assert_eq!(s["status"], "running");
    assert_eq!(read_op(&mut ws).await.stdout(), "three\n");
    d.delete("ctl-idle").await;
}

/// A TCP server on `port` inside the sprite (python stdlib, detached): echoes, or with
/// `once` says `bye` and hangs up.
async fn tcp_server(d: &TestDaemon, sprite: &str, port: u16, once: bool) {
    let handler = if once {
        "c.sendall(b'bye'); c.close()"
    } else {
        "threading.Thread(target=echo, args=(c,), daemon=True).start()"
    };
    let py = format!(
        "import socket, threading\n\
         def echo(c):\n    \
             while True:\n        \
                 d = c.recv(65536)\n        \
                 if not d: break\n        \
                 c.sendall(d)\n    \
             c.close()\n\
         s = socket.socket()\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('127.0.0.1', {port}))\n\
         s.listen(16)\n\
         while True:\n    \
             c, _ = s.accept()\n    \
             {handler}\n"
    );
    d.sh(
        sprite,
        &format!(
            "cat > /tmp/srv{port}.py <<'PYEOF'\n{py}PYEOF\n\
             setsid nohup python3 /tmp/srv{port}.py </dev/null >/tmp/srv{port}.log 2>&1 &\n\
             for i in $(seq 100); do\n\
               grep -q ':{port:04X} .* 0A ' /proc/net/tcp && exit 0\n\
               sleep 0.1\n\
             done\n\
             cat /tmp/srv{port}.log; exit 1"
        ),
    )
    .await;
}

/// The next frame, keepalives skipped.
async fn next_msg(ws: &mut Ws) -> Message {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(15), ws.next())
            .await
            .expect("no frame in time")
            .expect("connection ended")
            .expect("WebSocket error");
        match &m {
            Message::Text(t) if t.as_str() == r#"{"type":"keepalive"}"# => {}
            Message::Ping(_) | Message::Pong(_) => {}
            _ => return m,
        }
    }
}

fn text_json(m: &Message) -> Value {
    match m {
        Message::Text(t) => serde_json::from_str(t.as_str()).expect("JSON"),
        other => panic!("not a text frame: {other:?}"),
    }
}

/// Reads binary frames until `want` has arrived.
async fn read_bytes(ws: &mut Ws, want: &[u8]) {
    let mut got = Vec::new();
    while got.len() < want.len() {
        match next_msg(ws).await {
            Message::Binary(b) => got.extend_from_slice(&b),
            other => panic!("expected bytes, got {other:?} after {got:?}"),
        }
    }
    assert_eq!(got, want);
}

fn go_proxy_start(port: u16) -> Message {
    Message::Text(
        json!({"type": "start", "operation": "proxy",
               "params": {"host": "localhost", "port": port, "keep_alive": true}})
        .to_string()
        .into(),
    )
}

#[tokio::test]
async fn proxy_ops() {
    let d = TestDaemon::start_real();
    d.create("ctl-proxy").await;
    tcp_server(&d, "ctl-proxy", 7001, false).await;
    tcp_server(&d, "ctl-proxy", 7002, true).await;
    let mut ws = control(&d, "ctl-proxy").await;

    // Go's form: bare start, bare reply, raw bytes both ways, bare release; twice on one
    // socket, then an exec op on it.
    for round in 0..2 {
        ws.send(go_proxy_start(7001)).await.unwrap();
        assert_eq!(
            text_json(&next_msg(&mut ws).await),
            json!({"status": "connected", "target": "localhost:7001"})
        );
        let data = format!("hello {round}").into_bytes();
        binary(&mut ws, &data).await;
        read_bytes(&mut ws, &data).await;
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        binary(&mut ws, &big).await;
        read_bytes(&mut ws, &big).await;
        ws.send(Message::Text(r#"{"type":"release"}"#.into()))
            .await
            .unwrap();
    }
    start(&mut ws, json!({"cmd": ["echo", "after proxy"]})).await;
    let op = read_op(&mut ws).await;
    assert_eq!(op.stdout(), "after proxy\n");
    op.assert_non_tty_end(0);

    // The prefixed form: the target hangs up, op.complete, the socket goes on.
    send_control(
        &mut ws,
        json!({"type": "op.start", "id": 9, "op": "proxy", "args": {"port": "7002"}}),
    )
    .await;
    assert_eq!(text_json(&next_msg(&mut ws).await)["status"], "connected");
    read_bytes(&mut ws, b"bye").await;
    let m = next_msg(&mut ws).await;
    let Message::Text(t) = &m else {
        panic!("{m:?}")
    };
    let done: Value = serde_json::from_str(t.as_str().strip_prefix("control:").unwrap()).unwrap();
    assert_eq!(done["type"], "op.complete");
    assert_eq!(done["id"], 9);
    // Nothing listening, or no port: refused, socket usable.
    send_control(
        &mut ws,
        json!({"type": "op.start", "op": "proxy", "args": {"port": 7999}}),
    )
    .await;
    assert_eq!(read_op(&mut ws).await.error().0, "op.failed");
    send_control(
        &mut ws,
        json!({"type": "op.start", "op": "proxy", "args": {}}),
    )
    .await;
    assert_eq!(read_op(&mut ws).await.error().0, "op.failed");
    ws.send(go_proxy_start(7999)).await.unwrap();
    let r = text_json(&next_msg(&mut ws).await);
    assert_eq!(r["status"], "error", "{r}");
    ws.send(Message::Text(r#"{"type":"release"}"#.into()))
        .await
        .unwrap();
    start(&mut ws, json!({"cmd": ["true"]})).await;
    read_op(&mut ws).await.assert_non_tty_end(0);

    // Go's form when the target hangs up: its reads only end on a close frame.
    ws.send(go_proxy_start(7002)).await.unwrap();
    assert_eq!(text_json(&next_msg(&mut ws).await)["status"], "connected");
    read_bytes(&mut ws, b"bye").await;
    match next_msg(&mut ws).await {
        Message::Close(Some(f)) => assert_eq!(u16::from(f.code), 1000),
        other => panic!("expected close 1000, got {other:?}"),
    }

    // Auto-start from the URL.
    let mut ws = open(&d, "/v1/sprites/ctl-proxy/control?op=proxy&port=7001").await;
    assert_eq!(text_json(&next_msg(&mut ws).await)["status"], "connected");
    binary(&mut ws, b"auto").await;
    read_bytes(&mut ws, b"auto").await;
    send_control(&mut ws, json!({"type": "release"})).await;
    let m = next_msg(&mut ws).await;
    assert!(
        matches!(&m, Message::Text(t) if t.as_str().starts_with("control:")
            && t.as_str().contains("op.complete")),
        "{m:?}"
    );
    d.delete("ctl-proxy").await;
}

//! The exec protocol end to end against real sprites: the real `wispd`, its `wisp-keeper`s,
//! namespaces, cgroups and the Debian base image (run as root; see `common::real_options`).
//!
//! Each test starts its own daemon and sprite and destroys the sprite at the end.

mod common;

use std::time::Duration;

use common::{
    collect, collect_for, connect, connect_session, exec_path, raw_bytes, read_until,
    send_stdin_and_eof, session_info, stream_bytes, Exec, Got, TestDaemon, Ws,
};
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// Deterministic bytes that include every value (NUL and 0xFF among them).
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        // xorshift64*
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        out.extend_from_slice(&seed.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out[0] = 0x00;
    out[1] = 0xff;
    out[len / 2] = 0x04;
    out
}

fn text(v: Value) -> Message {
    Message::Text(v.to_string().into())
}

/// The TTY end of command: text exit, close 1000, and no binary exit frame.
fn assert_tty_end(got: &[Got], code: u8) {
    let n = got.len();
    assert!(n >= 2, "{got:?}");
    assert_eq!(
        got[n - 2..],
        [
            Got::Text(json!({"type": "exit", "exit_code": code, "code": code})),
            Got::Close(Some(1000)),
        ],
        "{got:?}"
    );
}

#[tokio::test]
async fn output_streams_exit_codes_and_options() {
    let d = TestDaemon::start_real();
    d.create("exec-out").await;

    let e = d.exec("exec-out", &["echo", "hello"]).await;
    let info = session_info(&e.got);
    assert_eq!(info["is_owner"], true);
    assert_eq!(info["tty"], false);
    assert_eq!(info["command"], "echo hello");
    let sid = info["session_id"].as_str().expect("session_id is a string");
    assert!(sid.parse::<u32>().is_ok(), "session id is a pid: {sid}");
    let now = chrono::Utc::now().timestamp();
    assert!(
        (info["created"].as_i64().unwrap() - now).abs() < 60,
        "{info}"
    );
    assert_eq!(e.stdout, b"hello\n");
    assert_eq!(e.stderr, b"");
    e.assert_ended_with(0);

    // stdout and stderr stay apart.
    let e = d
        .exec("exec-out", &["sh", "-c", "echo out; echo err >&2"])
        .await;
    assert_eq!(
        (e.stdout_str(), e.stderr_str()),
        ("out\n".into(), "err\n".into())
    );
    e.assert_ended_with(0);

    // Exit codes: binary [3, code], then the text exit, then close 1000, in this order, with
    // all output before them.
    let e = d.exec("exec-out", &["sh", "-c", "exit 42"]).await;
    e.assert_ended_with(42);
    let e = d
        .exec_q(
            "exec-out",
            &["sh", "-c", "echo out; echo err >&2; exit 3"],
            &[("dir", "/tmp")],
        )
        .await;
    assert_eq!(e.stdout, b"out\n");
    assert_eq!(e.stderr, b"err\n");
    e.assert_ended_with(3);
    let last_output = e
        .got
        .iter()
        .rposition(|g| matches!(g, Got::Binary(b) if b[0] == 1 || b[0] == 2))
        .unwrap();
    assert!(last_output < e.got.len() - 3, "{:?}", e.got);

    // Defaults: /home/sprite, user sprite, the default environment.
    assert_eq!(d.exec("exec-out", &["pwd"]).await.stdout, b"/home/sprite\n");
    assert_eq!(d.exec("exec-out", &["id", "-un"]).await.stdout, b"sprite\n");
    assert_eq!(d.exec("exec-out", &["id", "-u"]).await.stdout, b"1000\n");
    // Root through sudo, without a password.
    let e = d.exec("exec-out", &["sudo", "id", "-u"]).await;
    assert_eq!((e.stdout_str(), e.code), ("0\n".into(), Some(0)), "{e:?}");

    // env and dir.
    let e = d
        .exec_q("exec-out", &["printenv", "FOO"], &[("env", "FOO=bar")])
        .await;
    assert_eq!(e.stdout, b"bar\n");
    let e = d.exec_q("exec-out", &["pwd"], &[("dir", "/tmp")]).await;
    assert_eq!(e.stdout, b"/tmp\n");
    let e = d
        .exec_q(
            "exec-out",
            &["sh", "-c", "echo $HOME:$USER:$FOO:$PWD"],
            &[("env", "FOO=bar"), ("dir", "/tmp")],
        )
        .await;
    assert_eq!(e.stdout, b"/home/sprite:sprite:bar:/tmp\n");
    // Client env overrides the defaults and keeps PATH working.
    let e = d
        .exec_q("exec-out", &["printenv", "USER"], &[("env", "USER=other")])
        .await;
    assert_eq!(e.stdout, b"other\n");
    // `path` is the executable, `cmd` the argv (argv[0] included).
    let e = d
        .exec_q(
            "exec-out",
            &["my-name", "-c", "echo $0"],
            &[("path", "/bin/sh")],
        )
        .await;
    assert_eq!(e.stdout, b"my-name\n");

    // Arguments and env values arrive byte-exact, whatever they hold.
    let e = d
        .exec(
            "exec-out",
            &["printf", "%s|", "héllo wörld ✓", "a&b=c;$(x)", "", "  "],
        )
        .await;
    assert_eq!(e.stdout_str(), "héllo wörld ✓|a&b=c;$(x)||  |");
    let e = d
        .exec_q("exec-out", &["printenv", "A"], &[("env", "A=b=c d")])
        .await;
    assert_eq!(e.stdout, b"b=c d\n");

    // Failures to start: a message on stderr and the shell's codes.
    let e = d.exec("exec-out", &["no-such-command-xyz"]).await;
    assert_eq!(e.code, Some(127), "{e:?}");
    e.assert_ended_with(127);
    assert!(
        e.stderr_str().contains("no-such-command-xyz") && e.stderr_str().contains("not found"),
        "{e:?}"
    );
    let e = d
        .exec_q("exec-out", &["pwd"], &[("dir", "/no/such/dir")])
        .await;
    assert_ne!(e.code, Some(0), "{e:?}");
    assert!(e.stderr_str().contains("/no/such/dir"), "{e:?}");
    let e = d.exec("exec-out", &["/etc/hostname"]).await;
    assert_eq!(e.code, Some(126), "{e:?}");
    // A death by signal is 128 + n.
    let e = d.exec("exec-out", &["sh", "-c", "kill -SEGV $$"]).await;
    e.assert_ended_with(139);

    // A background child that keeps stdout open does not hold up the end of its command.
    let t = std::time::Instant::now();
    let e = d
        .exec("exec-out", &["sh", "-c", "sleep 20 & echo done"])
        .await;
    assert_eq!(e.stdout, b"done\n");
    e.assert_ended_with(0);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());

    d.delete("exec-out").await;
}

/// Sends `data` as several stdin frames of varying sizes, then EOF, while reading the output
/// (so that neither side's buffers can fill up and stall the other).
async fn cat_round_trip(d: &TestDaemon, sprite: &str, data: &[u8]) -> Exec {
    let ws = connect(d, &exec_path(sprite, &["cat"], &[("stdin", "true")])).await;
    let (mut tx, mut rx) = ws.split();
    let owned = data.to_vec();
    let writer = tokio::spawn(async move {
        let sizes = [1usize, 7, 4096, 65_536, 300_000, 1 << 20];
        let mut rest = &owned[..];
        let mut i = 0;
        while !rest.is_empty() {
            let n = sizes[i % sizes.len()].min(rest.len());
            let mut frame = Vec::with_capacity(n + 1);
            frame.push(0u8);
            frame.extend_from_slice(&rest[..n]);
            tx.send(Message::Binary(frame.into())).await.unwrap();
            rest = &rest[n..];
            i += 1;
        }
        tx.send(Message::Binary(vec![4].into())).await.unwrap();
        tx
    });
    let got = common::collect_stream(&mut rx, Duration::from_secs(60)).await;
    let _tx = writer.await.unwrap();
    Exec::from(got)
}

#[tokio::test]
async fn stdin() {
    let d = TestDaemon::start_real();
    d.create("exec-in").await;

    // 1.5 MiB of binary, NUL and 0xFF included, in frames of many sizes: byte-exact.
    let data = noise(3 << 19, 0x5eed);
    let e = cat_round_trip(&d, "exec-in", &data).await;
    assert_eq!(e.stdout.len(), data.len());
    assert!(e.stdout == data, "stdout differs from stdin");
    assert_eq!(e.stderr, b"");
    e.assert_ended_with(0);

    // A few small frames.
    let mut ws = connect(
        &d,
        &exec_path("exec-in", &["cat"], &[("stdin", "true"), ("dir", "/tmp")]),
    )
    .await;
    ws.send(Message::Binary(b"\x00hello ".to_vec().into()))
        .await
        .unwrap();
    ws.send(Message::Binary(b"\x00world".to_vec().into()))
        .await
        .unwrap();
    ws.send(Message::Binary(vec![4].into())).await.unwrap();
    let got = collect(&mut ws).await;
    assert_eq!(stream_bytes(&got, 1), b"hello world");
    Exec::from(got).assert_ended_with(0);

    // EOF right away: the command sees an empty stdin.
    let mut ws = connect(
        &d,
        &exec_path("exec-in", &["wc", "-c"], &[("stdin", "true")]),
    )
    .await;
    send_stdin_and_eof(&mut ws, b"").await;
    assert_eq!(stream_bytes(&collect(&mut ws).await, 1), b"0\n");

    // stdin=false (the default): the process reads /dev/null and stdin frames are dropped.
    let mut ws = connect(&d, &exec_path("exec-in", &["cat"], &[])).await;
    ws.send(Message::Binary(b"\x00ignored".to_vec().into()))
        .await
        .unwrap();
    let got = collect(&mut ws).await;
    assert_eq!(stream_bytes(&got, 1), b"");
    Exec::from(got).assert_ended_with(0);
    let e = d.exec("exec-in", &["readlink", "/proc/self/fd/0"]).await;
    assert_eq!(e.stdout, b"/dev/null\n");

    d.delete("exec-in").await;
}

#[tokio::test]
async fn tty_sessions_and_resize() {
    let d = TestDaemon::start_real();
    d.create("exec-tty").await;

    // A real terminal: /dev/pts/N, 24x80 by default, CRLF output, TERM set.
    let e = d.exec_q("exec-tty", &["tty"], &[("tty", "true")]).await;
    assert_eq!(session_info(&e.got)["tty"], true);
    let out = String::from_utf8(raw_bytes(&e.got)).unwrap();
    let n = out
        .strip_prefix("/dev/pts/")
        .and_then(|s| s.strip_suffix("\r\n"))
        .unwrap_or_else(|| panic!("tty printed {out:?}"));
    assert!(n.parse::<u32>().is_ok(), "{out:?}");
    assert_tty_end(&e.got, 0);
    let e = d
        .exec_q("exec-tty", &["stty", "size"], &[("tty", "true")])
        .await;
    assert_eq!(raw_bytes(&e.got), b"24 80\r\n");
    let e = d
        .exec_q(
            "exec-tty",
            &["stty", "size"],
            &[("tty", "true"), ("rows", "30"), ("cols", "100")],
        )
        .await;
    assert_eq!(session_info(&e.got)["rows"], 30);
    assert_eq!(raw_bytes(&e.got), b"30 100\r\n");
    let e = d
        .exec_q("exec-tty", &["printenv", "TERM"], &[("tty", "true")])
        .await;
    assert_eq!(raw_bytes(&e.got), b"xterm-256color\r\n");

    // Raw output, no stream ids and no binary exit frame; the text exit carries the code.
    let e = d
        .exec_q(
            "exec-tty",
            &["sh", "-c", "echo hi; exit 5"],
            &[("tty", "true")],
        )
        .await;
    assert_eq!(raw_bytes(&e.got), b"hi\r\n");
    assert_tty_end(&e.got, 5);

    // An interactive shell: the size changes with a resize message.
    let (mut ws, info) =
        connect_session(&d, &exec_path("exec-tty", &["bash"], &[("tty", "true")])).await;
    assert_eq!(
        (info["rows"].as_u64(), info["cols"].as_u64()),
        (Some(24), Some(80))
    );
    let mut out = Vec::new();
    ws.send(Message::Binary(b"stty size\n".to_vec().into()))
        .await
        .unwrap();
    read_until(&mut ws, &mut out, b"24 80\r\n").await;
    ws.send(text(json!({"type": "resize", "rows": 40, "cols": 120})))
        .await
        .unwrap();
    ws.send(Message::Binary(b"stty size\n".to_vec().into()))
        .await
        .unwrap();
    read_until(&mut ws, &mut out, b"40 120\r\n").await;
    // ^C reaches the foreground job through the terminal, as in a real one.
    // The job itself prints the marker: by then bash has made it the
    // terminal's foreground group, so the ^C cannot race job setup.
    ws.send(Message::Binary(
        b"sh -c 'echo ready-$((1+1)); exec sleep 100'\n"
            .to_vec()
            .into(),
    ))
    .await
    .unwrap();
    read_until(&mut ws, &mut out, b"ready-2\r\n").await;
    ws.send(Message::Binary(b"\x03".to_vec().into()))
        .await
        .unwrap();
    ws.send(Message::Binary(b"echo int-$((3*3))\n".to_vec().into()))
        .await
        .unwrap();
    read_until(&mut ws, &mut out, b"int-9\r\n").await;
    // The JS SDK sends resize as binary JSON in TTY mode.
    ws.send(Message::Binary(
        br#"{"type":"resize","rows":33,"cols":99}"#.to_vec().into(),
    ))
    .await
    .unwrap();
    ws.send(Message::Binary(b"stty size; exit 7\n".to_vec().into()))
        .await
        .unwrap();
    read_until(&mut ws, &mut out, b"33 99\r\n").await;
    let got = collect(&mut ws).await;
    assert_tty_end(&got, 7);

    d.delete("exec-tty").await;
}

#[tokio::test]
async fn signals() {
    let d = TestDaemon::start_real();
    d.create("exec-sig").await;

    // A text signal message: death by SIGTERM is 143.
    let (mut ws, _) = connect_session(&d, &exec_path("exec-sig", &["sleep", "100"], &[])).await;
    ws.send(text(json!({"type": "signal", "signal": "TERM"})))
        .await
        .unwrap();
    Exec::from(collect_for(&mut ws, Duration::from_secs(20)).await).assert_ended_with(143);

    // SIG-prefixed names work too; the whole process group gets it (HUP: a background job of
    // a non-interactive shell ignores INT).
    let (mut ws, _) = connect_session(
        &d,
        &exec_path(
            "exec-sig",
            &["sh", "-c", "sleep 100 & sleep 100; echo never"],
            &[],
        ),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    ws.send(text(json!({"type": "signal", "signal": "SIGHUP"})))
        .await
        .unwrap();
    let e = Exec::from(collect_for(&mut ws, Duration::from_secs(20)).await);
    assert_eq!(e.stdout, b"");
    e.assert_ended_with(129);
    let ps = d.exec("exec-sig", &["ps", "-e", "-o", "comm="]).await;
    assert!(!ps.stdout_str().contains("sleep"), "{}", ps.stdout_str());

    // The JS SDK's binary control message in TTY mode: KILL is 137.
    let (mut ws, _) = connect_session(
        &d,
        &exec_path("exec-sig", &["sleep", "100"], &[("tty", "true")]),
    )
    .await;
    ws.send(Message::Binary(
        br#"{"type":"signal","signal":"KILL"}"#.to_vec().into(),
    ))
    .await
    .unwrap();
    assert_tty_end(&collect_for(&mut ws, Duration::from_secs(20)).await, 137);

    d.delete("exec-sig").await;
}

/// A signal must reach a command that does not read its stdin, however much stdin the
/// client sent before: that is when one needs it most. (The HTTP kill endpoint, which uses
/// its own keeper connection, does get through.)
#[tokio::test]
async fn a_signal_is_not_stuck_behind_unread_stdin() {
    let d = TestDaemon::start_real();
    d.create("exec-hol").await;
    let (ws, _) = connect_session(
        &d,
        &exec_path("exec-hol", &["sleep", "60"], &[("stdin", "true")]),
    )
    .await;
    let (mut tx, mut rx) = ws.split();
    let mut frame = vec![0u8];
    frame.extend(noise(1 << 20, 7));
    tx.send(Message::Binary(frame.into())).await.unwrap();
    tx.send(text(json!({"type": "signal", "signal": "TERM"})))
        .await
        .unwrap();
    let got = tokio::time::timeout(
        Duration::from_secs(10),
        common::collect_stream(&mut rx, Duration::from_secs(120)),
    )
    .await;
    let got = got.unwrap_or_else(|_| {
        panic!("SIGTERM sent over the WebSocket was not delivered within 10 s")
    });
    Exec::from(got).assert_ended_with(143);
    d.delete("exec-hol").await;
}

#[tokio::test]
async fn concurrent_execs_on_one_sprite() {
    let d = TestDaemon::start_real();
    d.create("exec-many").await;
    let runs = (0..10).map(|i| {
        let d = &d;
        async move {
            let n = i.to_string();
            if i % 2 == 0 {
                let argv = [
                    "sh",
                    "-c",
                    "echo start-$0; sleep 0.3; echo end-$0 >&2; exit $((10 + $0))",
                    n.as_str(),
                ];
                (i, d.exec("exec-many", &argv).await, None)
            } else {
                let input = format!("input-{i}-").repeat(1000);
                let mut ws =
                    connect(d, &exec_path("exec-many", &["cat"], &[("stdin", "true")])).await;
                send_stdin_and_eof(&mut ws, input.as_bytes()).await;
                (i, Exec::from(collect(&mut ws).await), Some(input))
            }
        }
    });
    let results = futures_util::future::join_all(runs).await;
    let mut pids = std::collections::HashSet::new();
    for (i, e, input) in results {
        assert!(pids.insert(session_info(&e.got)["session_id"].clone()));
        match input {
            None => {
                assert_eq!(e.stdout_str(), format!("start-{i}\n"));
                assert_eq!(e.stderr_str(), format!("end-{i}\n"));
                e.assert_ended_with(10 + i as u8);
            }
            Some(input) => {
                assert!(e.stdout == input.as_bytes(), "exec {i}: wrong output");
                e.assert_ended_with(0);
            }
        }
    }
    d.delete("exec-many").await;
}

/// Splits an HTTP exec body whose payloads hold no byte 1, 2 or 3 (so that chunks can be
/// told apart however they were merged): stdout, stderr, and the exit code, which must come
/// last.
fn http_streams(body: &[u8]) -> (Vec<u8>, Vec<u8>, Option<u8>) {
    let (mut out, mut err, mut exit) = (Vec::new(), Vec::new(), None);
    let mut stream = None;
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            1 | 2 => stream = Some(body[i]),
            3 => {
                assert_eq!(i + 2, body.len(), "exit is not last: {body:?}");
                exit = Some(body[i + 1]);
                break;
            }
            b => match stream {
                Some(1) => out.push(b),
                Some(2) => err.push(b),
                _ => panic!("data before a stream id: {body:?}"),
            },
        }
        i += 1;
    }
    (out, err, exit)
}

#[tokio::test]
async fn http_exec() {
    let d = TestDaemon::start_real();
    d.create("exec-http").await;
    let post = |path: String, body: &'static str| {
        d.client()
            .post(d.url(&path))
            .header("authorization", d.bearer())
            .body(body)
            .send()
    };

    let res = post(
        exec_path(
            "exec-http",
            &["sh", "-c", "cat; echo e >&2; exit 7"],
            &[("stdin", "true"), ("dir", "/tmp")],
        ),
        "abc",
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "application/octet-stream");
    let body = res.bytes().await.unwrap().to_vec();
    assert_eq!(
        http_streams(&body),
        (b"abc".to_vec(), b"e\n".to_vec(), Some(7))
    );

    // Without stdin=true the body is not stdin; the defaults apply.
    let res = post(
        exec_path("exec-http", &["sh", "-c", "cat; echo $PWD:$(id -un)"], &[]),
        "dropped",
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = res.bytes().await.unwrap().to_vec();
    assert_eq!(
        http_streams(&body),
        (b"/home/sprite:sprite\n".to_vec(), vec![], Some(0))
    );

    // Unknown commands end with 127.
    let body = post(exec_path("exec-http", &["no-such-command-xyz"], &[]), "")
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    assert!(body.starts_with(b"\x02"), "{body:?}");
    assert!(body.ends_with(&[3, 127]), "{body:?}");

    // TTY needs the WebSocket.
    let res = post(exec_path("exec-http", &["ls"], &[("tty", "true")]), "")
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let b: Value = res.json().await.unwrap();
    assert!(b["error"].as_str().unwrap().contains("tty"), "{b}");

    d.delete("exec-http").await;
}

/// Reads the `session_info` of a fresh session and returns its id.
async fn session_id_of(ws: &mut Ws) -> String {
    let Some(Ok(Message::Text(t))) = ws.next().await else {
        panic!("no session_info")
    };
    let info: Value = serde_json::from_str(t.as_str()).unwrap();
    info["session_id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn sessions_list_attach_and_kill() {
    let d = TestDaemon::start_real();
    d.create("exec-sess").await;
    // A command that outlives its first client.
    let mut ws = connect(
        &d,
        &exec_path(
            "exec-sess",
            &["sh", "-c", "sleep 1; echo late"],
            &[("max_run_after_disconnect", "0")],
        ),
    )
    .await;
    let id = session_id_of(&mut ws).await;
    drop(ws);

    let (s, list) = d.get_json("/v1/sprites/exec-sess/exec").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["count"], 1, "{list}");
    let entry = &list["sessions"][0];
    assert_eq!(entry["id"], id.as_str());
    assert_eq!(entry["command"], "sh -c sleep 1; echo late");
    assert_eq!(entry["workdir"], "/home/sprite");
    assert_eq!(entry["tty"], false);
    assert!(entry["created"].as_str().unwrap().ends_with('Z'), "{entry}");
    let (s, one) = d
        .get_json(&format!("/v1/sprites/exec-sess/exec/{id}"))
        .await;
    assert_eq!((s, &one["id"]), (StatusCode::OK, &json!(id)));
    // The session is a process of the sprite, with the session id as its pid. (Until it has
    // exec'd, a fresh process still looks like its parent, the init.)
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let ps = d
            .exec("exec-sess", &["ps", "-o", "pid=,comm=", "-p", &id])
            .await;
        let row: Vec<String> = ps
            .stdout_str()
            .split_whitespace()
            .map(String::from)
            .collect();
        if row == [id.as_str(), "sh"] {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{row:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Attach, path form: session_info says not the owner, then the output.
    let mut ws = connect(&d, &format!("/v1/sprites/exec-sess/exec/{id}")).await;
    let got = collect(&mut ws).await;
    assert_eq!(session_info(&got)["is_owner"], false);
    assert_eq!(session_info(&got)["session_id"], id.as_str());
    assert_eq!(stream_bytes(&got, 1), b"late\n");
    Exec::from(got).assert_ended_with(0);
    // Gone from the list once it exited.
    let (_, list) = d.get_json("/v1/sprites/exec-sess/exec").await;
    assert_eq!(list["count"], 0, "{list}");
    let (s, _) = d
        .get_json(&format!("/v1/sprites/exec-sess/exec/{id}"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // An attacher feeds stdin when it says stdin=true (query form of attach this time).
    let mut ws = connect(
        &d,
        &exec_path(
            "exec-sess",
            &["cat"],
            &[("stdin", "true"), ("max_run_after_disconnect", "0")],
        ),
    )
    .await;
    let id = session_id_of(&mut ws).await;
    drop(ws);
    let mut ws = connect(
        &d,
        &format!("/v1/sprites/exec-sess/exec?id={id}&stdin=true"),
    )
    .await;
    send_stdin_and_eof(&mut ws, b"fed").await;
    let got = collect(&mut ws).await;
    assert_eq!(stream_bytes(&got, 1), b"fed");
    Exec::from(got).assert_ended_with(0);

    // max_run_after_disconnect: a detached command is killed once it runs out.
    let (ws, info) = connect_session(
        &d,
        &exec_path(
            "exec-sess",
            &["sleep", "300"],
            &[("max_run_after_disconnect", "1s")],
        ),
    )
    .await;
    let id = info["session_id"].as_str().unwrap().to_string();
    drop(ws);
    let detached = std::time::Instant::now();
    loop {
        let (_, list) = d.get_json("/v1/sprites/exec-sess/exec").await;
        let listed = list["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == id.as_str());
        if !listed {
            break;
        }
        assert!(detached.elapsed() < Duration::from_secs(6), "{list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        detached.elapsed() > Duration::from_millis(800),
        "killed after {:?}",
        detached.elapsed()
    );
    let ps = d.exec("exec-sess", &["ps", "-e", "-o", "comm="]).await;
    assert!(!ps.stdout_str().contains("sleep"), "{}", ps.stdout_str());

    // Unknown sessions: 404 on attach (both forms).
    for path in [
        "/v1/sprites/exec-sess/exec/999999",
        "/v1/sprites/exec-sess/exec?id=999999",
    ] {
        let err = tokio_tungstenite::connect_async(d.ws_request(path))
            .await
            .expect_err(path);
        let tokio_tungstenite::tungstenite::Error::Http(res) = err else {
            panic!("{path}: {err:?}")
        };
        assert_eq!(res.status(), 404, "{path}");
        let b: Value = serde_json::from_slice(res.body().as_deref().unwrap()).unwrap();
        assert_eq!(b["error"], "session not found: 999999");
    }
    let res = d
        .client()
        .post(d.url("/v1/sprites/exec-sess/exec/999999/kill"))
        .header("authorization", d.bearer())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);

    // Kill: signal, exited, complete with 143; the owner sees the same end.
    let mut ws = connect(&d, &exec_path("exec-sess", &["sleep", "30"], &[])).await;
    let id = session_id_of(&mut ws).await;
    let res = d
        .client()
        .post(d.url(&format!(
            "/v1/sprites/exec-sess/exec/{id}/kill?signal=SIGTERM&timeout=5s"
        )))
        .header("authorization", d.bearer())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "application/x-ndjson");
    let body = res.text().await.unwrap();
    let events: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let types: Vec<_> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["signal", "exited", "complete"], "{body}");
    assert_eq!(events[0]["pid"], id.parse::<i64>().unwrap());
    assert_eq!(events[2]["exit_code"], 143);
    Exec::from(collect(&mut ws).await).assert_ended_with(143);

    // A command that ignores SIGTERM is killed after the timeout.
    let mut ws = connect(
        &d,
        &exec_path(
            "exec-sess",
            &["sh", "-c", "trap '' TERM; echo ready; sleep 30"],
            &[],
        ),
    )
    .await;
    let id = session_id_of(&mut ws).await;
    let mut out = Vec::new();
    while !common::contains(&out, b"ready") {
        if let Some(Ok(Message::Binary(b))) = ws.next().await {
            out.extend_from_slice(&b[1..]);
        }
    }
    let body = d
        .client()
        .post(d.url(&format!(
            "/v1/sprites/exec-sess/exec/{id}/kill?timeout=300ms"
        )))
        .header("authorization", d.bearer())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let types: Vec<_> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["signal", "timeout", "killed", "complete"], "{body}");
    assert_eq!(events[3]["exit_code"], 137);
    Exec::from(collect(&mut ws).await).assert_ended_with(137);

    let (_, list) = d.get_json("/v1/sprites/exec-sess/exec").await;
    assert_eq!(list["count"], 0, "{list}");
    d.delete("exec-sess").await;
}

#[tokio::test]
async fn malformed_frames_end_only_their_session() {
    let d = TestDaemon::start_real();
    d.create("exec-bad").await;
    // A session that must not notice the others' trouble.
    let (mut bystander, _) =
        connect_session(&d, &exec_path("exec-bad", &["cat"], &[("stdin", "true")])).await;

    for (frame, code) in [
        (vec![], 1003u16),    // empty binary frame
        (vec![9u8, 1], 1008), // unknown stream id
        (vec![5u8], 1008),    // reserved stream id
        (vec![1u8, 1], 1008), // stdout is server → client only
        (vec![3u8, 0], 1008), // so is exit
    ] {
        let mut ws = connect(&d, &exec_path("exec-bad", &["cat"], &[("stdin", "true")])).await;
        ws.send(Message::Binary(frame.clone().into()))
            .await
            .unwrap();
        let got = collect(&mut ws).await;
        assert_eq!(
            got.last(),
            Some(&Got::Close(Some(code))),
            "{frame:?}: {got:?}"
        );
        assert!(
            !got.iter()
                .any(|g| matches!(g, Got::Text(v) if v["type"] == "exit")),
            "{got:?}"
        );
    }

    // Pings are answered while a command runs.
    let mut ws = connect(&d, &exec_path("exec-bad", &["sleep", "2"], &[])).await;
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

    // Unknown text messages are ignored.
    let mut ws = connect(&d, &exec_path("exec-bad", &["echo", "ok"], &[])).await;
    ws.send(Message::Text("{\"type\":\"bogus\"}".into()))
        .await
        .unwrap();
    ws.send(Message::Text("not json".into())).await.unwrap();
    ws.send(Message::Text(r#"{"type":"signal","signal":"NOPE"}"#.into()))
        .await
        .unwrap();
    let got = collect(&mut ws).await;
    assert_eq!(stream_bytes(&got, 1), b"ok\n");

    // The bystander still works, and so does a new exec.
    send_stdin_and_eof(&mut bystander, b"still here").await;
    let got = collect(&mut bystander).await;
    assert_eq!(stream_bytes(&got, 1), b"still here");
    Exec::from(got).assert_ended_with(0);
    assert_eq!(
        d.exec("exec-bad", &["echo", "fine"]).await.stdout,
        b"fine\n"
    );
    d.delete("exec-bad").await;
}

#[tokio::test]
async fn keepalive_while_silent() {
    let d = TestDaemon::start_real();
    d.create("exec-quiet").await;
    let mut ws = connect(&d, &exec_path("exec-quiet", &["sleep", "17"], &[])).await;
    let mut keepalives = 0;
    let mut exited = false;
    let read = async {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Text(t) = m {
                if t.as_str() == r#"{"type":"keepalive"}"# {
                    keepalives += 1;
                } else if t.as_str().contains(r#""type":"exit""#) {
                    exited = true;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .unwrap();
    assert_eq!(keepalives, 1);
    assert!(exited);
    d.delete("exec-quiet").await;
}

/// A client that stops reading holds back only its own command (backpressure), never the
/// rest of the sprite: listing sessions, resizing and other commands keep answering.
#[tokio::test]
async fn a_client_that_stops_reading_stalls_only_its_own_command() {
    let d = TestDaemon::start_real();
    d.create("slow-reader").await;
    // `yes` writes as fast as it can; this client never reads a frame after session_info.
    let (_stuck, info) = connect_session(&d, &exec_path("slow-reader", &["yes"], &[])).await;
    let id = info["session_id"].as_str().unwrap().to_string();
    // Let every buffer between `yes` and this socket fill up.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let list = tokio::time::timeout(
        Duration::from_secs(10),
        d.get_json("/v1/sprites/slow-reader/exec"),
    )
    .await
    .expect("listing sessions hung behind a stalled client");
    assert_eq!(list.0, StatusCode::OK);
    assert!(
        list.1["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == id.as_str()),
        "{}",
        list.1
    );
    let e = tokio::time::timeout(
        Duration::from_secs(10),
        d.exec("slow-reader", &["echo", "ok"]),
    )
    .await
    .expect("a new command hung behind a stalled client");
    assert_eq!(e.stdout, b"ok\n");
    d.delete("slow-reader").await;
}

//! The exec WebSocket: URL building, the handshake and the I/O loop shared by `exec` and
//! `console`.

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::{HeaderValue, AUTHORIZATION, USER_AGENT};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use wisp_api::exec::{
    decode_stream_frame, encode_stream_frame, StreamFrame, TextMessage, STREAM_STDIN,
    STREAM_STDIN_EOF,
};

use crate::client::{self, Client};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The Ctrl-\ byte: detaches `wisp console`.
pub const DETACH_KEY: u8 = 0x1c;
const PING_EVERY: Duration = Duration::from_secs(15);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
const DOUBLE_INTERRUPT: Duration = Duration::from_secs(1);

/// What to run, as sent in the exec query.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecRequest {
    pub cmd: Vec<String>,
    pub path: String,
    pub env: Vec<(String, String)>,
    pub dir: Option<String>,
    pub tty: bool,
    /// `(cols, rows)` of the local terminal.
    pub size: Option<(u16, u16)>,
    pub stdin: bool,
}

/// Percent-encodes a query component (spaces as `%20`, which every decoder reads as a space).
fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// The query string of `GET /v1/sprites/{name}/exec`, without the `?`.
pub fn build_query(req: &ExecRequest) -> String {
    let mut parts: Vec<String> = req.cmd.iter().map(|c| format!("cmd={}", enc(c))).collect();
    parts.push(format!("path={}", enc(&req.path)));
    parts.extend(
        req.env
            .iter()
            .map(|(k, v)| format!("env={}", enc(&format!("{k}={v}")))),
    );
    if let Some(d) = &req.dir {
        parts.push(format!("dir={}", enc(d)));
    }
    parts.push(format!("tty={}", req.tty));
    if let (true, Some((cols, rows))) = (req.tty, req.size) {
        parts.push(format!("rows={rows}"));
        parts.push(format!("cols={cols}"));
    }
    parts.push(format!("stdin={}", req.stdin));
    parts.join("&")
}

/// `http(s)://…` → `ws(s)://…`.
pub fn ws_base(api_url: &str) -> Result<String> {
    if let Some(rest) = api_url.strip_prefix("http://") {
        Ok(format!("ws://{rest}"))
    } else if let Some(rest) = api_url.strip_prefix("https://") {
        Ok(format!("wss://{rest}"))
    } else {
        Err(anyhow!("API URL {api_url:?} is not http:// or https://"))
    }
}

/// The full WebSocket URL for an exec on `sprite` (a checked name).
pub fn exec_url(api_url: &str, sprite: &str, req: &ExecRequest) -> Result<String> {
    Ok(format!(
        "{}{}/exec?{}",
        ws_base(api_url)?,
        client::sprite_path(sprite),
        build_query(req)
    ))
}

/// The environment sent with a command: `TERM` (TTY only) and `LANG=C.UTF-8` unless the user
/// sets them, then the user's entries. Nothing else from the local environment.
pub fn session_env(
    user: &[(String, String)],
    tty: bool,
    term: Option<String>,
) -> Vec<(String, String)> {
    let has = |k: &str| user.iter().any(|(uk, _)| uk == k);
    let mut env = Vec::new();
    if tty && !has("TERM") {
        if let Some(t) = term.filter(|t| !t.is_empty()) {
            env.push(("TERM".to_string(), t));
        }
    }
    if !has("LANG") {
        env.push(("LANG".to_string(), "C.UTF-8".to_string()));
    }
    env.extend(user.iter().cloned());
    env
}

/// Parses a `--env` value.
pub fn parse_env_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !k.contains('\0') && !v.contains('\0') => {
            Ok((k.to_string(), v.to_string()))
        }
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// Opens the exec WebSocket with the bearer token on the handshake.
pub async fn connect(client: &Client, sprite: &str, req: &ExecRequest) -> Result<Ws> {
    let url = exec_url(&client.settings().api_url, sprite, req)?;
    connect_url(client, sprite, &url).await
}

/// The WebSocket URL that attaches to session `id` of `sprite` (a checked name).
pub fn attach_url(api_url: &str, sprite: &str, id: &str) -> Result<String> {
    let id: String = form_urlencoded::byte_serialize(id.as_bytes()).collect();
    Ok(format!(
        "{}{}/exec/{id}",
        ws_base(api_url)?,
        client::sprite_path(sprite)
    ))
}

/// Opens an exec or attach WebSocket at `url`, with the bearer token on the handshake.
pub async fn connect_url(client: &Client, sprite: &str, url: &str) -> Result<Ws> {
    let settings = client.settings();
    let mut request = url
        .into_client_request()
        .with_context(|| format!("invalid exec URL {url}"))?;
    let headers = request.headers_mut();
    if let Some(token) = &settings.token {
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| anyhow!("the API token contains characters not allowed in a header"))?;
        headers.insert(AUTHORIZATION, value);
    }
    headers.insert(USER_AGENT, HeaderValue::from_static(client::USER_AGENT));
    let api = &settings.api_url;
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tokio_tungstenite::connect_async(request)).await {
        Err(_) => Err(anyhow!("wispd at {api} did not answer in time")),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(WsError::Http(resp))) => {
            let body = resp.body().as_deref().unwrap_or_default();
            Err(client::api_error(resp.status().as_u16(), body, settings.token_source).into())
        }
        Ok(Err(WsError::Io(e))) => Err(client::unreachable(api, &client::root_cause(&e))),
        Ok(Err(WsError::Tls(e))) => Err(anyhow!("TLS error talking to wispd at {api}: {e}")),
        Ok(Err(e)) => Err(anyhow!("cannot start a command on sprite {sprite}: {e}")),
    }
}

/// A received frame, reduced to what the loop acts on.
#[derive(Debug, PartialEq)]
pub enum Incoming<'a> {
    Stdout(&'a [u8]),
    Stderr(&'a [u8]),
    Exit(i32),
    /// The server closed the socket (with its reason, if any).
    Closed(Option<String>),
    Ignore,
}

/// Interprets a frame. TTY binary frames are raw output; non-TTY ones carry a stream id. Text
/// frames of any type other than `exit` are ignored (session_info, keepalive, port_opened…).
pub fn classify(msg: &Message, tty: bool) -> Incoming<'_> {
    match msg {
        Message::Binary(data) if tty => Incoming::Stdout(data),
        Message::Binary(data) => match decode_stream_frame(data) {
            Ok(StreamFrame::Stdout(b)) => Incoming::Stdout(b),
            Ok(StreamFrame::Stderr(b)) => Incoming::Stderr(b),
            Ok(StreamFrame::Exit(code)) => Incoming::Exit(i32::from(code)),
            _ => Incoming::Ignore,
        },
        Message::Text(text) => match exit_code_of(text.as_str()) {
            Some(code) => Incoming::Exit(code),
            None => Incoming::Ignore,
        },
        Message::Close(frame) => Incoming::Closed(frame.as_ref().map(describe_close)),
        _ => Incoming::Ignore,
    }
}

fn describe_close(f: &CloseFrame) -> String {
    if f.reason.is_empty() {
        format!("closed with code {}", u16::from(f.code))
    } else {
        format!("closed with code {}: {}", u16::from(f.code), f.reason)
    }
}

/// The exit code of an `{"type":"exit","exit_code":N}` message (`code` is accepted too).
pub fn exit_code_of(text: &str) -> Option<i32> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    if v.get("type")?.as_str()? != "exit" {
        return None;
    }
    let n = v
        .get("exit_code")
        .and_then(serde_json::Value::as_i64)
        .or_else(|| v.get("code").and_then(serde_json::Value::as_i64))?;
    Some(n.clamp(0, 255) as i32)
}

/// Splits input at the detach key: the bytes to send, and whether the key was pressed.
pub fn split_detach(data: &[u8], key: Option<u8>) -> (&[u8], bool) {
    match key.and_then(|k| data.iter().position(|&b| b == k)) {
        Some(pos) => (&data[..pos], true),
        None => (data, false),
    }
}

/// How the loop treats local input and output.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    pub tty: bool,
    /// Forward local stdin.
    pub stdin: bool,
    pub detach_key: Option<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The command ended (or the CLI must end) with this code.
    Exit(i32),
    /// The user pressed the detach key; the session goes on server-side.
    Detached,
}

enum Input {
    Data(Vec<u8>),
    Eof,
}

fn spawn_stdin_reader() -> mpsc::Receiver<Input> {
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match stdin.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    if tx.send(Input::Data(buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let _ = tx.send(Input::Eof).await;
    });
    rx
}

async fn next_input(rx: &mut Option<mpsc::Receiver<Input>>) -> Input {
    match rx {
        Some(rx) => rx.recv().await.unwrap_or(Input::Eof),
        None => std::future::pending().await,
    }
}

fn lost(cause: Option<String>) -> anyhow::Error {
    match cause {
        Some(c) => anyhow!("connection to the sprite was lost ({c})"),
        None => anyhow!("connection to the sprite was lost"),
    }
}

async fn write_out(w: &mut (impl AsyncWrite + Unpin), data: &[u8]) -> std::io::Result<()> {
    w.write_all(data).await?;
    w.flush().await
}

fn text(msg: &TextMessage) -> Result<Message> {
    Ok(Message::text(serde_json::to_string(msg)?))
}

/// Runs the session until the command exits, the user detaches or the connection drops.
pub async fn run(ws: Ws, opts: RunOptions) -> Result<Outcome> {
    let (mut sink, mut stream) = ws.split();
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();

    let mut stdin_rx = opts.stdin.then(spawn_stdin_reader);
    if !opts.stdin && !opts.tty {
        sink.send(Message::binary(vec![STREAM_STDIN_EOF]))
            .await
            .map_err(|e| lost(Some(e.to_string())))?;
    }
    // An attached session still has the size of the terminal it was started on.
    if let (true, Some((cols, rows))) = (opts.tty, crate::term::size()) {
        sink.send(text(&TextMessage::Resize { cols, rows })?)
            .await
            .map_err(|e| lost(Some(e.to_string())))?;
    }

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut winch = signal(SignalKind::window_change())?;
    let mut last_interrupt: Option<Instant> = None;
    let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);

    let outcome = loop {
        let outgoing: Message = tokio::select! {
            msg = stream.next() => {
                let msg = match msg {
                    None => return Err(lost(None)),
                    Some(Err(e)) => return Err(lost(Some(e.to_string()))),
                    Some(Ok(m)) => m,
                };
                match classify(&msg, opts.tty) {
                    Incoming::Stdout(b) => {
                        if write_out(&mut stdout, b).await.is_err() {
                            // Local stdout is gone (e.g. `| head`): behave like SIGPIPE.
                            break Outcome::Exit(141);
                        }
                        continue;
                    }
                    Incoming::Stderr(b) => {
                        let _ = write_out(&mut stderr, b).await;
                        continue;
                    }
                    Incoming::Exit(code) => break Outcome::Exit(code),
                    Incoming::Closed(reason) => return Err(lost(reason)),
                    Incoming::Ignore => continue,
                }
            }
            input = next_input(&mut stdin_rx) => match input {
                Input::Data(data) => {
                    let (data, detach) = split_detach(&data, opts.detach_key);
                    if detach {
                        if !data.is_empty() {
                            let _ = sink.send(stdin_frame(data, opts.tty)).await;
                        }
                        break Outcome::Detached;
                    }
                    stdin_frame(data, opts.tty)
                }
                Input::Eof => {
                    stdin_rx = None;
                    if opts.tty {
                        continue;
                    }
                    Message::binary(vec![STREAM_STDIN_EOF])
                }
            },
            _ = sigint.recv() => {
                let now = Instant::now();
                if last_interrupt.is_some_and(|t| now.duration_since(t) < DOUBLE_INTERRUPT) {
                    break Outcome::Exit(130);
                }
                last_interrupt = Some(now);
                text(&TextMessage::Signal { signal: "INT".into() })?
            }
            _ = sigterm.recv() => break Outcome::Exit(143),
            _ = sighup.recv() => break Outcome::Exit(129),
            _ = winch.recv(), if opts.tty => match crate::term::size() {
                Some((cols, rows)) => text(&TextMessage::Resize { cols, rows })?,
                None => continue,
            },
            _ = ping.tick() => Message::Ping(Default::default()),
        };
        if let Err(e) = sink.send(outgoing).await {
            return Err(lost(Some(e.to_string())));
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(Message::Close(None))).await;
    Ok(outcome)
}

fn stdin_frame(data: &[u8], tty: bool) -> Message {
    if tty {
        Message::binary(data.to_vec())
    } else {
        Message::binary(encode_stream_frame(STREAM_STDIN, data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    fn req() -> ExecRequest {
        ExecRequest {
            cmd: vec!["sh".into(), "-c".into(), "echo a+b & x=1".into()],
            path: "sh".into(),
            env: vec![
                ("LANG".into(), "C.UTF-8".into()),
                ("K".into(), "v w".into()),
            ],
            dir: Some("/tmp/my dir".into()),
            tty: false,
            size: Some((120, 40)),
            stdin: true,
        }
    }

    #[test]
    fn query_repeats_cmd_and_encodes() {
        assert_eq!(
            build_query(&req()),
            "cmd=sh&cmd=-c&cmd=echo%20a%2Bb%20%26%20x%3D1&path=sh&env=LANG%3DC.UTF-8\
             &env=K%3Dv%20w&dir=%2Ftmp%2Fmy%20dir&tty=false&stdin=true"
        );
        let mut r = req();
        r.tty = true;
        r.dir = None;
        r.env.clear();
        r.cmd = vec!["ünï".into()];
        r.path = "ünï".into();
        assert_eq!(
            build_query(&r),
            "cmd=%C3%BCn%C3%AF&path=%C3%BCn%C3%AF&tty=true&rows=40&cols=120&stdin=true"
        );
    }

    #[test]
    fn query_round_trips_through_the_server_parser() {
        let q = build_query(&req());
        let pairs: Vec<(String, String)> =
            form_urlencoded::parse(q.as_bytes()).into_owned().collect();
        let p = wisp_api::exec::ExecParams::from_pairs(
            pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        )
        .unwrap();
        assert_eq!(p.cmd, req().cmd);
        assert_eq!(p.env, req().env);
        assert_eq!(p.dir, "/tmp/my dir");
        assert!(p.stdin && !p.tty);
    }

    #[test]
    fn urls() {
        assert_eq!(
            exec_url("https://h:1/p", "box", &req()).unwrap(),
            format!("wss://h:1/p/v1/sprites/box/exec?{}", build_query(&req()))
        );
        assert!(exec_url("http://127.0.0.1:7575", "b", &req())
            .unwrap()
            .starts_with("ws://127.0.0.1:7575/v1/sprites/b/exec?cmd=sh"));
        assert!(ws_base("ftp://x").is_err());
    }

    #[test]
    fn env_defaults() {
        let user = vec![("A".to_string(), "1".to_string())];
        assert_eq!(
            session_env(&user, true, Some("xterm".into())),
            vec![
                ("TERM".into(), "xterm".into()),
                ("LANG".into(), "C.UTF-8".into()),
                ("A".into(), "1".into())
            ]
        );
        assert_eq!(
            session_env(&user, false, Some("xterm".into())),
            vec![("LANG".into(), "C.UTF-8".into()), ("A".into(), "1".into())]
        );
        let user = vec![
            ("LANG".to_string(), "de_DE.UTF-8".to_string()),
            ("TERM".to_string(), "dumb".to_string()),
        ];
        assert_eq!(session_env(&user, true, Some("xterm".into())), user);
    }

    #[test]
    fn env_pairs() {
        assert_eq!(parse_env_pair("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert_eq!(parse_env_pair("A="), Ok(("A".into(), "".into())));
        assert!(parse_env_pair("=x").is_err());
        assert!(parse_env_pair("noeq").is_err());
    }

    #[test]
    fn classify_non_tty() {
        let m = Message::binary(vec![1, b'h', b'i']);
        assert_eq!(classify(&m, false), Incoming::Stdout(b"hi"));
        let m = Message::binary(vec![2, b'e']);
        assert_eq!(classify(&m, false), Incoming::Stderr(b"e"));
        let m = Message::binary(vec![3, 7]);
        assert_eq!(classify(&m, false), Incoming::Exit(7));
        for junk in [vec![], vec![3], vec![9, 1], vec![0, 1], vec![4]] {
            assert_eq!(classify(&Message::binary(junk), false), Incoming::Ignore);
        }
    }

    #[test]
    fn classify_tty_and_text() {
        let m = Message::binary(vec![3, 7]);
        assert_eq!(classify(&m, true), Incoming::Stdout(&[3, 7]));
        let exit = Message::text(r#"{"type":"exit","exit_code":42,"code":42}"#);
        assert_eq!(classify(&exit, true), Incoming::Exit(42));
        assert_eq!(classify(&exit, false), Incoming::Exit(42));
        let only_code = Message::text(r#"{"type":"exit","code":3}"#);
        assert_eq!(classify(&only_code, true), Incoming::Exit(3));
        for t in [
            r#"{"type":"session_info","session_id":"1"}"#,
            r#"{"type":"keepalive"}"#,
            r#"{"type":"port_opened","port":8080}"#,
            r#"{"type":"exit"}"#,
            "not json",
            "[]",
        ] {
            assert_eq!(classify(&Message::text(t), true), Incoming::Ignore, "{t}");
        }
        assert_eq!(
            exit_code_of(r#"{"type":"exit","exit_code":999}"#),
            Some(255)
        );
    }

    #[test]
    fn classify_close() {
        assert_eq!(
            classify(&Message::Close(None), false),
            Incoming::Closed(None)
        );
        let m = Message::Close(Some(CloseFrame {
            code: CloseCode::Error,
            reason: "boom".into(),
        }));
        assert_eq!(
            classify(&m, false),
            Incoming::Closed(Some("closed with code 1011: boom".into()))
        );
    }

    #[test]
    fn detach_split() {
        assert_eq!(
            split_detach(b"ab\x1ccd", Some(DETACH_KEY)),
            (&b"ab"[..], true)
        );
        assert_eq!(split_detach(b"ab\x1ccd", None), (&b"ab\x1ccd"[..], false));
        assert_eq!(split_detach(b"abc", Some(DETACH_KEY)), (&b"abc"[..], false));
    }
}

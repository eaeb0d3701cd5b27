//! The exec WebSocket after the upgrade: session streams ⇄ frames (sprites-api.md §3.2).
//!
//! Two tasks per connection. The *reader* takes client frames and feeds the session's input;
//! the *writer* (this module's main loop) forwards output, sends keepalives and owns the
//! end-of-command sequence. They talk through a small channel so that the writer learns when
//! the client breaks the protocol or closes.
//!
//! [`bridge`] is the part shared with the control socket (`control.rs`, §3.3), which runs one
//! session at a time over a socket that outlives it: it can stop the reader and take the
//! socket's read half back once the session has ended.

use std::time::Duration;

use axum::extract::ws::{close_code, CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use wisp_api::exec::{
    decode_stream_frame, encode_stream_frame, exit_byte, parse_client_control, ClientControl,
    FrameError, StreamFrame, TextMessage, STREAM_EXIT, STREAM_STDERR, STREAM_STDIN,
    STREAM_STDIN_EOF, STREAM_STDOUT,
};

use crate::activity::ActivityGuard;
use crate::runtime::{ExecEvent, ExecEvents, ExecInput, ExecInputMsg, ExecStream, SessionInfo};

/// The JS SDK counts only received messages as liveness (§4.3): send one this often.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
/// How long to wait for the client's close frame after ours before dropping TCP: Node's
/// client loses buffered messages if the server drops the connection too early.
pub const CLOSE_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy)]
pub struct BridgeOptions {
    /// Framing: raw TTY bytes, or stream-id-prefixed frames.
    pub tty: bool,
    /// Whether client stdin reaches the process.
    pub stdin: bool,
    pub is_owner: bool,
    /// The control socket's dialect of client frames (see [`classify_control_binary`]).
    pub control: bool,
}

/// What one client frame means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAction {
    Input(ExecInputMsg),
    Ignore,
    /// Ends the session's connection with this close code and reason.
    Violation(u16, String),
}

/// Resize and signal messages (parsed by [`parse_client_control`]); `None` for anything else.
fn parse_control(bytes: &[u8]) -> Option<ClientAction> {
    Some(match parse_client_control(bytes)? {
        ClientControl::Resize { rows, cols } => {
            ClientAction::Input(ExecInputMsg::Resize { rows, cols })
        }
        ClientControl::Signal(n) => ClientAction::Input(ExecInputMsg::Signal(n)),
        ClientControl::Ignored => ClientAction::Ignore,
    })
}

/// A text frame: control messages; everything else is ignored.
pub fn classify_text(text: &str) -> ClientAction {
    parse_control(text.as_bytes()).unwrap_or(ClientAction::Ignore)
}

/// A binary frame.
pub fn classify_binary(data: Bytes, tty: bool, stdin: bool) -> ClientAction {
    if tty {
        if data.is_empty() {
            return ClientAction::Ignore;
        }
        // The JS SDK sends resize/signal as *binary* JSON in TTY mode.
        if data.first() == Some(&b'{') {
            if let Some(action) = parse_control(&data) {
                return action;
            }
        }
        return if stdin {
            ClientAction::Input(ExecInputMsg::Stdin(data))
        } else {
            ClientAction::Ignore
        };
    }
    match decode_stream_frame(&data) {
        Ok(StreamFrame::Stdin(_)) if stdin => {
            ClientAction::Input(ExecInputMsg::Stdin(data.slice(1..)))
        }
        Ok(StreamFrame::StdinEof) if stdin => ClientAction::Input(ExecInputMsg::StdinEof),
        // stdin=false: the process reads /dev/null; clients (Go) still send an EOF frame.
        Ok(StreamFrame::Stdin(_) | StreamFrame::StdinEof) => ClientAction::Ignore,
        Ok(StreamFrame::Stdout(_) | StreamFrame::Stderr(_) | StreamFrame::Exit(_))
        | Err(FrameError::ExitWithoutCode) => ClientAction::Violation(
            close_code::POLICY,
            format!("stream id {} is not accepted from clients", data[0]),
        ),
        Err(FrameError::Empty) => {
            ClientAction::Violation(close_code::UNSUPPORTED, "empty binary frame".into())
        }
        Err(e @ FrameError::UnknownStream(_)) => {
            ClientAction::Violation(close_code::POLICY, e.to_string())
        }
    }
}

/// A binary frame on the control socket (§3.3), whose clients disagree: in TTY mode as on
/// exec. Without a TTY, exactly `[0x04]` is EOF, a frame starting with `0x00` is prefixed stdin
/// (Python, JS), a JSON object with `type` resize or signal is a control message (JS sends them
/// as binary), anything else is raw stdin (Go). Nothing is a protocol violation.
pub fn classify_control_binary(data: Bytes, tty: bool, stdin: bool) -> ClientAction {
    if tty {
        return classify_binary(data, true, stdin);
    }
    if data.first() == Some(&b'{') {
        if let Some(action) = parse_control(&data) {
            return action;
        }
    }
    let msg = match data.first() {
        None => return ClientAction::Ignore,
        Some(&STREAM_STDIN_EOF) if data.len() == 1 => ExecInputMsg::StdinEof,
        Some(&STREAM_STDIN) => ExecInputMsg::Stdin(data.slice(1..)),
        Some(_) => ExecInputMsg::Stdin(data),
    };
    if stdin {
        ClientAction::Input(msg)
    } else {
        ClientAction::Ignore
    }
}

/// The frames that end a command: binary exit (non-TTY), text exit, close 1000.
pub fn end_of_command(code: i32, tty: bool) -> Vec<Message> {
    let byte = exit_byte(code);
    let mut out = Vec::with_capacity(3);
    if !tty {
        out.push(Message::Binary(Bytes::from(vec![STREAM_EXIT, byte])));
    }
    out.push(json_message(&TextMessage::Exit {
        exit_code: i32::from(byte),
        code: i32::from(byte),
    }));
    out.push(close_message(close_code::NORMAL, ""));
    out
}

pub fn json_message(m: &TextMessage) -> Message {
    Message::Text(Utf8Bytes::from(
        serde_json::to_string(m).unwrap_or_default(),
    ))
}

pub fn close_message(code: u16, reason: &str) -> Message {
    // A close reason may be at most 123 bytes.
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from(&reason[..end]),
    }))
}

#[derive(Debug)]
enum ClientEvent {
    Violation(u16, String),
    Closed,
}

/// How a bridged session ended.
#[derive(Debug)]
pub enum Outcome {
    Exited(i32),
    Violation(u16, String),
    SessionLost(String),
    ClientGone,
}

pub type Tx = SplitSink<WebSocket, Message>;
pub type Rx = SplitStream<WebSocket>;

/// The reading half of a bridged session: the reader task and what it reports.
pub struct ClientHalf {
    events: mpsc::Receiver<ClientEvent>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Option<Rx>>,
}

impl ClientHalf {
    /// Stops the reader (dropping the session's input) and returns the socket's read half,
    /// or `None` if the client closed or the connection failed.
    pub async fn finish(mut self) -> Option<Rx> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.ok().flatten()
    }

    /// Waits (at most `limit`) for the client's close frame, then ends the reader.
    async fn wait_closed(mut self, limit: Duration) {
        let wait = async {
            while let Some(ev) = self.events.recv().await {
                if matches!(ev, ClientEvent::Closed) {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(limit, wait).await;
        self.task.abort();
    }
}

fn session_info_message(session: &SessionInfo, opts: BridgeOptions) -> Message {
    json_message(&TextMessage::SessionInfo {
        session_id: session.session_id.clone(),
        command: session.command.clone(),
        created: session.created,
        cols: session.cols,
        rows: session.rows,
        is_owner: opts.is_owner,
        tty: opts.tty,
    })
}

/// Bridges one session over an upgraded socket: `session_info`, then output to the client
/// and client frames to the session until the session ends or the client goes. Sends no end
/// sequence: that is the caller's, and differs between exec and control sockets.
pub async fn bridge(
    tx: &mut Tx,
    rx: Rx,
    stream: ExecStream,
    opts: BridgeOptions,
    activity: &ActivityGuard,
) -> (Outcome, ClientHalf) {
    let ExecStream {
        session,
        mut events,
        input,
    } = stream;
    let (client_tx, mut client_rx) = mpsc::channel(4);
    let (stop_tx, stop_rx) = oneshot::channel();
    let sent_info = tx.send(session_info_message(&session, opts)).await.is_ok();
    let task = tokio::spawn(read_client(rx, input, opts, client_tx, stop_rx));
    let outcome = if sent_info {
        forward_output(tx, events.as_mut(), &mut client_rx, opts.tty, activity).await
    } else {
        Outcome::ClientGone
    };
    tracing::debug!(session_id = %session.session_id, ?outcome, "exec bridge ending");
    let half = ClientHalf {
        events: client_rx,
        stop: Some(stop_tx),
        task,
    };
    (outcome, half)
}

/// Runs one exec connection to the end; forwarded output counts as `activity`.
pub async fn run(
    socket: WebSocket,
    stream: ExecStream,
    opts: BridgeOptions,
    activity: &ActivityGuard,
) {
    let (mut tx, rx) = socket.split();
    let (outcome, client) = bridge(&mut tx, rx, stream, opts, activity).await;
    let closing = match outcome {
        Outcome::Exited(code) => end_of_command(code, opts.tty),
        Outcome::Violation(code, reason) => vec![close_message(code, &reason)],
        Outcome::SessionLost(reason) => vec![close_message(close_code::ERROR, &reason)],
        Outcome::ClientGone => Vec::new(),
    };
    if closing.is_empty() {
        // Flush the reply to a client's close frame, if any.
        let _ = tokio::time::timeout(Duration::from_secs(1), tx.close()).await;
        client.wait_closed(Duration::ZERO).await;
        return;
    }
    for m in closing {
        if tx.send(m).await.is_err() {
            client.wait_closed(Duration::ZERO).await;
            return;
        }
    }
    client.wait_closed(CLOSE_WAIT).await;
}

async fn forward_output(
    tx: &mut Tx,
    events: &mut dyn ExecEvents,
    client: &mut mpsc::Receiver<ClientEvent>,
    tty: bool,
    activity: &ActivityGuard,
) -> Outcome {
    let mut keepalive = tokio::time::interval_at(
        tokio::time::Instant::now() + KEEPALIVE_INTERVAL,
        KEEPALIVE_INTERVAL,
    );
    loop {
        let out = tokio::select! {
            ev = events.next_event() => match ev {
                Ok(Some(ExecEvent::Stdout(b))) => {
                    activity.touch();
                    output_message(tty, STREAM_STDOUT, b)
                }
                Ok(Some(ExecEvent::Stderr(b))) => {
                    activity.touch();
                    output_message(tty, STREAM_STDERR, b)
                }
                Ok(Some(ExecEvent::Exit(code))) => return Outcome::Exited(code),
                Ok(None) => return Outcome::SessionLost("the session ended without an exit status".into()),
                Err(e) => return Outcome::SessionLost(format!("lost the session: {e}")),
            },
            ev = client.recv() => match ev {
                Some(ClientEvent::Violation(code, reason)) => return Outcome::Violation(code, reason),
                Some(ClientEvent::Closed) | None => return Outcome::ClientGone,
            },
            _ = keepalive.tick() => json_message(&TextMessage::Keepalive),
        };
        if tx.send(out).await.is_err() {
            return Outcome::ClientGone;
        }
    }
}

fn output_message(tty: bool, stream: u8, data: Bytes) -> Message {
    if tty {
        Message::Binary(data)
    } else {
        Message::Binary(Bytes::from(encode_stream_frame(stream, &data)))
    }
}

/// Reads client frames until the client closes or `stop` fires; stdin and controls go to the
/// session. Keeps reading after a violation or a dead session, to see the client's close
/// frame. Returns the read half when stopped, `None` when the connection ended.
async fn read_client(
    mut rx: Rx,
    mut input: Box<dyn ExecInput>,
    opts: BridgeOptions,
    events: mpsc::Sender<ClientEvent>,
    mut stop: oneshot::Receiver<()>,
) -> Option<Rx> {
    let mut forwarding = true;
    let mut violated = false;
    loop {
        // Cancel-safe: a frame half read stays buffered in the socket.
        let msg = tokio::select! {
            biased;
            _ = &mut stop => return Some(rx),
            msg = rx.next() => msg,
        };
        let Some(Ok(msg)) = msg else { break };
        let action = match msg {
            Message::Binary(data) if opts.control => {
                classify_control_binary(data, opts.tty, opts.stdin)
            }
            Message::Binary(data) => classify_binary(data, opts.tty, opts.stdin),
            Message::Text(text) => classify_text(text.as_str()),
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        match action {
            ClientAction::Input(m) if forwarding => {
                // Stdin may wait on a full queue; the session's end must not wait for it.
                let sent = tokio::select! {
                    biased;
                    _ = &mut stop => return Some(rx),
                    sent = input.send(m) => sent,
                };
                if let Err(e) = sent {
                    tracing::debug!("session input closed: {e}");
                    forwarding = false;
                }
            }
            ClientAction::Input(_) | ClientAction::Ignore => {}
            ClientAction::Violation(code, reason) => {
                tracing::debug!(code, reason, "client broke the exec protocol");
                forwarding = false;
                if !violated {
                    violated = true;
                    // At most one violation and one close: never more than the channel holds.
                    let _ = events.send(ClientEvent::Violation(code, reason)).await;
                }
            }
        }
    }
    let _ = events.send(ClientEvent::Closed).await;
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(data: &[u8]) -> Bytes {
        Bytes::copy_from_slice(data)
    }

    #[test]
    fn non_tty_frames() {
        assert_eq!(
            classify_binary(b(&[0, b'h', b'i']), false, true),
            ClientAction::Input(ExecInputMsg::Stdin(b(b"hi")))
        );
        assert_eq!(
            classify_binary(b(&[4]), false, true),
            ClientAction::Input(ExecInputMsg::StdinEof)
        );
        assert_eq!(
            classify_binary(b(&[0, 1]), false, false),
            ClientAction::Ignore
        );
        assert_eq!(classify_binary(b(&[4]), false, false), ClientAction::Ignore);
        assert!(matches!(
            classify_binary(b(&[]), false, true),
            ClientAction::Violation(1003, _)
        ));
        assert!(matches!(
            classify_binary(b(&[9, 1]), false, true),
            ClientAction::Violation(1008, _)
        ));
        for wrong_way in [&[1u8, 0][..], &[2], &[3, 0], &[3]] {
            assert!(matches!(
                classify_binary(b(wrong_way), false, true),
                ClientAction::Violation(1008, _)
            ));
        }
    }

    #[test]
    fn tty_frames() {
        assert_eq!(
            classify_binary(b(b"ls\r"), true, true),
            ClientAction::Input(ExecInputMsg::Stdin(b(b"ls\r")))
        );
        assert_eq!(classify_binary(b(b""), true, true), ClientAction::Ignore);
        // The JS SDK's binary control messages.
        assert_eq!(
            classify_binary(b(br#"{"type":"resize","cols":100,"rows":30}"#), true, true),
            ClientAction::Input(ExecInputMsg::Resize {
                rows: 30,
                cols: 100
            })
        );
        assert_eq!(
            classify_binary(b(br#"{"type":"signal","signal":"SIGINT"}"#), true, true),
            ClientAction::Input(ExecInputMsg::Signal(2))
        );
        // Other JSON typed into a terminal is just input.
        let typed = br#"{"type":"exit","exit_code":1,"code":1}"#;
        assert_eq!(
            classify_binary(b(typed), true, true),
            ClientAction::Input(ExecInputMsg::Stdin(b(typed)))
        );
        assert_eq!(
            classify_binary(b(b"{not json"), true, true),
            ClientAction::Input(ExecInputMsg::Stdin(b(b"{not json")))
        );
    }

    #[test]
    fn control_dialect() {
        let input = |d: &[u8]| ClientAction::Input(ExecInputMsg::Stdin(b(d)));
        // Prefixed (Python, JS) and raw (Go) stdin; exactly [4] is EOF.
        assert_eq!(
            classify_control_binary(b(&[0, 1, 2]), false, true),
            input(&[1, 2])
        );
        assert_eq!(
            classify_control_binary(b(b"raw"), false, true),
            input(b"raw")
        );
        assert_eq!(
            classify_control_binary(b(&[1, 2]), false, true),
            input(&[1, 2])
        );
        assert_eq!(
            classify_control_binary(b(&[4, 4]), false, true),
            input(&[4, 4])
        );
        assert_eq!(
            classify_control_binary(b(&[4]), false, true),
            ClientAction::Input(ExecInputMsg::StdinEof)
        );
        assert_eq!(
            classify_control_binary(b(&[]), false, true),
            ClientAction::Ignore
        );
        assert_eq!(
            classify_control_binary(b(b"raw"), false, false),
            ClientAction::Ignore
        );
        assert_eq!(
            classify_control_binary(b(&[4]), false, false),
            ClientAction::Ignore
        );
        // JS sends signals as binary JSON, with or without a TTY.
        assert_eq!(
            classify_control_binary(b(br#"{"type":"signal","signal":"INT"}"#), false, false),
            ClientAction::Input(ExecInputMsg::Signal(2))
        );
        assert_eq!(
            classify_control_binary(b(br#"{"type":"resize","cols":90,"rows":20}"#), true, true),
            ClientAction::Input(ExecInputMsg::Resize { rows: 20, cols: 90 })
        );
        assert_eq!(classify_control_binary(b(b"{x"), false, true), input(b"{x"));
    }

    #[test]
    fn text_frames() {
        assert_eq!(
            classify_text(r#"{"type":"signal","signal":"TERM"}"#),
            ClientAction::Input(ExecInputMsg::Signal(15))
        );
        assert_eq!(
            classify_text(r#"{"type":"resize","cols":80,"rows":24}"#),
            ClientAction::Input(ExecInputMsg::Resize { rows: 24, cols: 80 })
        );
        assert_eq!(
            classify_text(r#"{"type":"resize","cols":0,"rows":24}"#),
            ClientAction::Ignore
        );
        assert_eq!(
            classify_text(r#"{"type":"signal","signal":"NOPE"}"#),
            ClientAction::Ignore
        );
        // Signal names are case-insensitive, their `SIG` prefix included.
        assert_eq!(
            classify_text(r#"{"type":"signal","signal":"sigint"}"#),
            ClientAction::Input(ExecInputMsg::Signal(2))
        );
        assert_eq!(
            classify_text(r#"{"type":"whatever"}"#),
            ClientAction::Ignore
        );
        assert_eq!(classify_text("garbage"), ClientAction::Ignore);
    }

    #[test]
    fn end_sequence() {
        let non_tty = end_of_command(300, false);
        assert_eq!(non_tty[0], Message::Binary(b(&[3, 255])));
        assert_eq!(
            non_tty[1],
            Message::Text(Utf8Bytes::from(
                r#"{"type":"exit","exit_code":255,"code":255}"#
            ))
        );
        assert!(matches!(&non_tty[2], Message::Close(Some(f)) if f.code == 1000));
        let tty = end_of_command(143, true);
        assert_eq!(tty.len(), 2);
        assert_eq!(
            tty[0],
            Message::Text(Utf8Bytes::from(
                r#"{"type":"exit","exit_code":143,"code":143}"#
            ))
        );
    }

    #[test]
    fn close_reason_is_truncated_on_a_char_boundary() {
        let long = "é".repeat(100);
        let Message::Close(Some(f)) = close_message(1011, &long) else {
            panic!()
        };
        assert!(f.reason.as_str().len() <= 123);
    }
}

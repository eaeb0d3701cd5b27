//! The exec WebSocket after the upgrade: session streams ⇄ frames (sprites-api.md §3.2).
//!
//! Two tasks per connection. The *reader* takes client frames and feeds the session's input;
//! the *writer* (this module's main loop) forwards output, sends keepalives and owns the
//! end-of-command sequence. They talk through a small channel so that the writer learns when
//! the client breaks the protocol or closes.

use std::time::Duration;

use axum::extract::ws::{close_code, CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use wisp_api::exec::{
    decode_stream_frame, encode_stream_frame, exit_byte, signal_number, FrameError, StreamFrame,
    TextMessage, STREAM_EXIT, STREAM_STDERR, STREAM_STDOUT,
};

use crate::activity::ActivityGuard;
use crate::runtime::{ExecEvent, ExecEvents, ExecInput, ExecInputMsg, ExecStream};

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
}

/// What one client frame means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAction {
    Input(ExecInputMsg),
    Ignore,
    /// Ends the session's connection with this close code and reason.
    Violation(u16, String),
}

/// Resize and signal messages; `None` for anything else (including other message types, so
/// that a TTY user typing JSON is not swallowed).
fn parse_control(bytes: &[u8]) -> Option<ClientAction> {
    match serde_json::from_slice::<TextMessage>(bytes).ok()? {
        TextMessage::Resize { cols, rows } if cols > 0 && rows > 0 => {
            Some(ClientAction::Input(ExecInputMsg::Resize { rows, cols }))
        }
        TextMessage::Resize { .. } => Some(ClientAction::Ignore),
        TextMessage::Signal { signal } => Some(match signal_number(&signal) {
            Some(n) => ClientAction::Input(ExecInputMsg::Signal(n)),
            None => {
                tracing::debug!(signal, "ignoring unknown signal name");
                ClientAction::Ignore
            }
        }),
        _ => None,
    }
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

fn json_message(m: &TextMessage) -> Message {
    Message::Text(Utf8Bytes::from(
        serde_json::to_string(m).unwrap_or_default(),
    ))
}

fn close_message(code: u16, reason: &str) -> Message {
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

#[derive(Debug)]
enum Outcome {
    Exited(i32),
    Violation(u16, String),
    SessionLost(String),
    ClientGone,
}

type Tx = SplitSink<WebSocket, Message>;

/// Runs one exec connection to the end; forwarded output counts as `activity`.
pub async fn run(
    socket: WebSocket,
    stream: ExecStream,
    opts: BridgeOptions,
    activity: &ActivityGuard,
) {
    let ExecStream {
        session,
        mut events,
        input,
    } = stream;
    let (mut tx, rx) = socket.split();
    let info = TextMessage::SessionInfo {
        session_id: session.session_id.clone(),
        command: session.command.clone(),
        created: session.created,
        cols: session.cols,
        rows: session.rows,
        is_owner: opts.is_owner,
        tty: opts.tty,
    };
    if tx.send(json_message(&info)).await.is_err() {
        return;
    }
    let (client_tx, mut client_rx) = mpsc::channel(4);
    let reader = tokio::spawn(read_client(rx, input, opts, client_tx));
    let outcome =
        forward_output(&mut tx, events.as_mut(), &mut client_rx, opts.tty, activity).await;
    tracing::debug!(session_id = %session.session_id, ?outcome, "exec connection ending");
    let closing = match outcome {
        Outcome::Exited(code) => end_of_command(code, opts.tty),
        Outcome::Violation(code, reason) => vec![close_message(code, &reason)],
        Outcome::SessionLost(reason) => vec![close_message(close_code::ERROR, &reason)],
        Outcome::ClientGone => Vec::new(),
    };
    if closing.is_empty() {
        // Flush the reply to a client's close frame, if any.
        let _ = tokio::time::timeout(Duration::from_secs(1), tx.close()).await;
    } else {
        let mut sent = true;
        for m in closing {
            if tx.send(m).await.is_err() {
                sent = false;
                break;
            }
        }
        if sent {
            let wait = async {
                while let Some(ev) = client_rx.recv().await {
                    if matches!(ev, ClientEvent::Closed) {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(CLOSE_WAIT, wait).await;
        }
    }
    reader.abort();
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

/// Reads client frames until the client closes; stdin and controls go to the session.
/// Keeps reading after a violation or a dead session, to see the client's close frame.
async fn read_client(
    mut rx: SplitStream<WebSocket>,
    mut input: Box<dyn ExecInput>,
    opts: BridgeOptions,
    events: mpsc::Sender<ClientEvent>,
) {
    let mut forwarding = true;
    while let Some(Ok(msg)) = rx.next().await {
        let action = match msg {
            Message::Binary(data) => classify_binary(data, opts.tty, opts.stdin),
            Message::Text(text) => classify_text(text.as_str()),
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        match action {
            ClientAction::Input(m) if forwarding => {
                if let Err(e) = input.send(m).await {
                    tracing::debug!("session input closed: {e}");
                    forwarding = false;
                }
            }
            ClientAction::Input(_) | ClientAction::Ignore => {}
            ClientAction::Violation(code, reason) => {
                tracing::debug!(code, reason, "client broke the exec protocol");
                forwarding = false;
                let _ = events.send(ClientEvent::Violation(code, reason)).await;
            }
        }
    }
    let _ = events.send(ClientEvent::Closed).await;
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

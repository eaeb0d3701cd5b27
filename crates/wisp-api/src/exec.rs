//! The exec protocol: query parameters, binary stream frames and JSON text messages.
//!
//! Non-TTY binary frames start with a one-byte stream id; TTY binary frames are raw terminal
//! bytes. Text frames carry JSON messages in both modes.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration::parse_duration;

pub const STREAM_STDIN: u8 = 0;
pub const STREAM_STDOUT: u8 = 1;
pub const STREAM_STDERR: u8 = 2;
pub const STREAM_EXIT: u8 = 3;
pub const STREAM_STDIN_EOF: u8 = 4;

/// Most bytes of argv plus environment one command may carry (the kernel allows more, but
/// these travel in single frames between wispd, the keeper and the sprite's init).
pub const MAX_ARGS_BYTES: usize = 128 * 1024;

/// Default working directory of a command.
pub const DEFAULT_DIR: &str = "/home/sprite";
/// How long a non-TTY command outlives its client by default.
pub const DEFAULT_NON_TTY_GRACE: Duration = Duration::from_secs(10);

/// A decoded non-TTY binary frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamFrame<'a> {
    Stdin(&'a [u8]),
    Stdout(&'a [u8]),
    Stderr(&'a [u8]),
    Exit(u8),
    StdinEof,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("empty binary frame")]
    Empty,
    #[error("unknown stream id {0}")]
    UnknownStream(u8),
    #[error("exit frame without a code")]
    ExitWithoutCode,
}

/// Decodes a non-TTY binary frame.
pub fn decode_stream_frame(frame: &[u8]) -> Result<StreamFrame<'_>, FrameError> {
    let (&id, payload) = frame.split_first().ok_or(FrameError::Empty)?;
    match id {
        STREAM_STDIN => Ok(StreamFrame::Stdin(payload)),
        STREAM_STDOUT => Ok(StreamFrame::Stdout(payload)),
        STREAM_STDERR => Ok(StreamFrame::Stderr(payload)),
        STREAM_EXIT => payload
            .first()
            .map(|&c| StreamFrame::Exit(c))
            .ok_or(FrameError::ExitWithoutCode),
        STREAM_STDIN_EOF => Ok(StreamFrame::StdinEof),
        other => Err(FrameError::UnknownStream(other)),
    }
}

/// Encodes a non-TTY binary frame: the stream id followed by the payload.
pub fn encode_stream_frame(stream: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(payload.len() + 1);
    v.push(stream);
    v.extend_from_slice(payload);
    v
}

/// Exit codes travel as one byte; larger values are clamped.
pub fn exit_byte(code: i32) -> u8 {
    code.clamp(0, 255) as u8
}

/// JSON text messages on an exec socket, both directions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TextMessage {
    Resize {
        cols: u16,
        rows: u16,
    },
    Signal {
        signal: String,
    },
    SessionInfo {
        session_id: String,
        command: String,
        created: i64,
        cols: u16,
        rows: u16,
        is_owner: bool,
        tty: bool,
    },
    Exit {
        exit_code: i32,
        /// Same value as `exit_code`; the Elixir SDK reads this key.
        code: i32,
    },
    PortOpened {
        port: u16,
        address: String,
        pid: u32,
    },
    PortClosed {
        port: u16,
        address: String,
        pid: u32,
    },
    Keepalive,
}

/// What a client's control message asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientControl {
    /// A new terminal size; both sides are at least 1.
    Resize { rows: u16, cols: u16 },
    /// A signal for the process, by number (one of [`signal_number`]'s).
    Signal(i32),
    /// A well-formed resize or signal that asks for nothing that can be done: a zero size, an
    /// unknown signal name.
    Ignored,
}

/// Parses a client's JSON control message (`resize`, `signal`), from a text frame or (JS SDK,
/// TTY mode) a binary one. `None` for anything else, other message types included, so that a
/// TTY user typing JSON is not swallowed.
pub fn parse_client_control(bytes: &[u8]) -> Option<ClientControl> {
    match serde_json::from_slice::<TextMessage>(bytes).ok()? {
        TextMessage::Resize { cols, rows } if cols > 0 && rows > 0 => {
            Some(ClientControl::Resize { rows, cols })
        }
        TextMessage::Resize { .. } => Some(ClientControl::Ignored),
        TextMessage::Signal { signal } => Some(
            signal_number(&signal)
                .map(ClientControl::Signal)
                .unwrap_or(ClientControl::Ignored),
        ),
        _ => None,
    }
}

/// Signal names accepted on the wire, with or without the `SIG` prefix.
pub fn signal_number(name: &str) -> Option<i32> {
    // Case-insensitive, the prefix included: upper-case first, then strip (`sigint`).
    let n = name.trim().to_ascii_uppercase();
    Some(match n.strip_prefix("SIG").unwrap_or(&n) {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "KILL" => 9,
        "USR1" => 10,
        "USR2" => 12,
        "PIPE" => 13,
        "ALRM" => 14,
        "TERM" => 15,
        "CONT" => 18,
        "STOP" => 19,
        "TSTP" => 20,
        "WINCH" => 28,
        _ => return None,
    })
}

/// What a client asked for on `GET|POST .../exec`, after defaults are applied.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecParams {
    pub cmd: Vec<String>,
    pub path: String,
    pub env: Vec<(String, String)>,
    pub dir: String,
    pub tty: bool,
    pub rows: u16,
    pub cols: u16,
    pub stdin: bool,
    /// `None` means: run until it exits, whatever the client does.
    pub max_run_after_disconnect: Option<Duration>,
    /// Attach to an existing session instead of starting a command.
    pub attach_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecParamsError {
    #[error("No command specified")]
    NoCommand,
    #[error("invalid value for {0}: {1:?}")]
    Invalid(&'static str, String),
    #[error("env entries must look like KEY=VALUE, got {0:?}")]
    BadEnv(String),
    #[error("dir must be an absolute path, got {0:?}")]
    RelativeDir(String),
}

fn parse_bool(key: &'static str, v: &str) -> Result<bool, ExecParamsError> {
    match v {
        "true" | "1" | "True" | "TRUE" | "yes" => Ok(true),
        "false" | "0" | "False" | "FALSE" | "no" | "" => Ok(false),
        _ => Err(ExecParamsError::Invalid(key, v.to_string())),
    }
}

fn parse_size(key: &'static str, v: &str) -> Result<u16, ExecParamsError> {
    match v.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(ExecParamsError::Invalid(key, v.to_string())),
    }
}

impl ExecParams {
    /// Parses decoded query pairs (keys may repeat). `id`/`session_id` select attach, in which
    /// case `cmd` and `path` are ignored.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, ExecParamsError> {
        let mut cmd = Vec::new();
        let mut path = None;
        let mut env = Vec::new();
        let mut dir = None;
        let mut tty = false;
        let mut rows = 24;
        let mut cols = 80;
        let mut stdin = None;
        let mut grace = None;
        let mut detachable = false;
        let mut attach_id = None;
        for (k, v) in pairs {
            match k {
                "cmd" | "cmd[]" => cmd.push(v.to_string()),
                "path" if !v.is_empty() => path = Some(v.to_string()),
                "env" | "env[]" => {
                    let (key, val) = v
                        .split_once('=')
                        .filter(|(key, _)| !key.is_empty() && !key.contains('\0'))
                        .ok_or_else(|| ExecParamsError::BadEnv(v.to_string()))?;
                    env.push((key.to_string(), val.to_string()));
                }
                "dir" if !v.is_empty() => dir = Some(v.to_string()),
                "tty" => tty = parse_bool("tty", v)?,
                "rows" => rows = parse_size("rows", v)?,
                "cols" => cols = parse_size("cols", v)?,
                "stdin" => stdin = Some(parse_bool("stdin", v)?),
                "max_run_after_disconnect" => {
                    grace = Some(parse_duration(v).map_err(|_| {
                        ExecParamsError::Invalid("max_run_after_disconnect", v.to_string())
                    })?)
                }
                "detachable" => detachable = parse_bool("detachable", v)?,
                "id" | "session_id" if !v.is_empty() => attach_id = Some(v.to_string()),
                // Legacy or informational parameters that change nothing here.
                _ => {}
            }
        }
        cmd.retain(|c| !c.is_empty() || attach_id.is_none());
        if attach_id.is_none() && cmd.is_empty() && path.is_none() {
            return Err(ExecParamsError::NoCommand);
        }
        if cmd.iter().chain(path.iter()).any(|c| c.contains('\0')) {
            return Err(ExecParamsError::Invalid(
                "cmd",
                "contains a NUL byte".into(),
            ));
        }
        if env.iter().any(|(_, v)| v.contains('\0')) {
            return Err(ExecParamsError::Invalid(
                "env",
                "contains a NUL byte".into(),
            ));
        }
        let size: usize = cmd.iter().map(|c| c.len() + 1).sum::<usize>()
            + env
                .iter()
                .map(|(k, v)| k.len() + v.len() + 2)
                .sum::<usize>();
        if size > MAX_ARGS_BYTES {
            return Err(ExecParamsError::Invalid(
                "cmd",
                format!("command and environment are {size} bytes; the limit is {MAX_ARGS_BYTES}"),
            ));
        }
        let path = path.or_else(|| cmd.first().cloned()).unwrap_or_default();
        if cmd.is_empty() && !path.is_empty() {
            cmd.push(path.clone());
        }
        let dir = dir.unwrap_or_else(|| DEFAULT_DIR.to_string());
        if !dir.starts_with('/') || dir.contains('\0') {
            return Err(ExecParamsError::RelativeDir(dir));
        }
        // Zero means "forever" on the wire; TTY and detachable sessions default to forever.
        let max_run_after_disconnect = match grace {
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
            None if tty || detachable => None,
            None => Some(DEFAULT_NON_TTY_GRACE),
        };
        Ok(ExecParams {
            cmd,
            path,
            env,
            dir,
            tty,
            rows,
            cols,
            stdin: stdin.unwrap_or(tty),
            max_run_after_disconnect,
            attach_id,
        })
    }
}

/// An entry of `GET .../exec` (the session list).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionEntry {
    pub id: String,
    pub command: String,
    pub workdir: String,
    pub created: String,
    pub tty: bool,
    pub is_active: bool,
    pub bytes_per_second: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity: Option<String>,
}

/// `GET .../exec` response body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionList {
    pub sessions: Vec<SessionEntry>,
    pub count: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(q: &[(&str, &str)]) -> Result<ExecParams, ExecParamsError> {
        ExecParams::from_pairs(q.iter().copied())
    }

    #[test]
    fn defaults() {
        let p = parse(&[("cmd", "echo"), ("cmd", "hi")]).unwrap();
        assert_eq!(p.cmd, vec!["echo", "hi"]);
        assert_eq!(p.path, "echo");
        assert_eq!(p.dir, "/home/sprite");
        assert!(!p.tty && !p.stdin);
        assert_eq!((p.rows, p.cols), (24, 80));
        assert_eq!(p.max_run_after_disconnect, Some(Duration::from_secs(10)));
    }

    #[test]
    fn tty_defaults_to_stdin_and_forever() {
        let p = parse(&[("cmd", "bash"), ("tty", "true")]).unwrap();
        assert!(p.stdin);
        assert_eq!(p.max_run_after_disconnect, None);
    }

    #[test]
    fn errors() {
        assert_eq!(parse(&[]), Err(ExecParamsError::NoCommand));
        assert!(matches!(
            parse(&[("cmd", "x"), ("env", "NOEQ")]),
            Err(ExecParamsError::BadEnv(_))
        ));
        assert!(matches!(
            parse(&[("cmd", "x"), ("rows", "0")]),
            Err(ExecParamsError::Invalid("rows", _))
        ));
        assert!(matches!(
            parse(&[("cmd", "x"), ("dir", "tmp")]),
            Err(ExecParamsError::RelativeDir(_))
        ));
    }

    #[test]
    fn nul_and_size_limits() {
        assert!(matches!(
            parse(&[("cmd", "x"), ("env", "A=b\0c")]),
            Err(ExecParamsError::Invalid("env", _))
        ));
        let big = "a".repeat(MAX_ARGS_BYTES);
        assert!(matches!(
            parse(&[("cmd", "echo"), ("cmd", &big)]),
            Err(ExecParamsError::Invalid("cmd", _))
        ));
    }

    #[test]
    fn attach_ignores_empty_cmd() {
        let p = parse(&[("session_id", "42"), ("cmd", ""), ("path", "")]).unwrap();
        assert_eq!(p.attach_id.as_deref(), Some("42"));
    }

    #[test]
    fn frames_round_trip() {
        let f = encode_stream_frame(STREAM_STDOUT, b"hi");
        assert_eq!(decode_stream_frame(&f), Ok(StreamFrame::Stdout(b"hi")));
        assert_eq!(decode_stream_frame(&[3, 42]), Ok(StreamFrame::Exit(42)));
        assert_eq!(decode_stream_frame(&[4]), Ok(StreamFrame::StdinEof));
        assert_eq!(decode_stream_frame(&[]), Err(FrameError::Empty));
        assert_eq!(decode_stream_frame(&[9]), Err(FrameError::UnknownStream(9)));
        assert_eq!(decode_stream_frame(&[3]), Err(FrameError::ExitWithoutCode));
    }

    #[test]
    fn exit_message_has_both_keys() {
        let s = serde_json::to_string(&TextMessage::Exit {
            exit_code: 3,
            code: 3,
        })
        .unwrap();
        assert_eq!(s, r#"{"type":"exit","exit_code":3,"code":3}"#);
    }

    #[test]
    fn signals() {
        assert_eq!(signal_number("INT"), Some(2));
        assert_eq!(signal_number("SIGTERM"), Some(15));
        assert_eq!(signal_number("BOGUS"), None);
        // Found by fuzzing: a lower-case prefix was not stripped, so `sigint` was refused
        // while `int` and `SIGINT` were accepted.
        assert_eq!(signal_number("sigint"), Some(2));
        assert_eq!(signal_number(" SigTerm "), Some(15));
        assert_eq!(signal_number("SIGSIGINT"), None);
        assert_eq!(signal_number("sig"), None);
    }
}

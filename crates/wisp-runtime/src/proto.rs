//! The keeper protocol: how wispd talks to the keeper of one sprite over its Unix socket.
//!
//! Every frame is `[u32 big-endian length of what follows][u8 kind][payload]`. A connection
//! starts with one `Request` frame from the client and one `Reply` frame from the keeper.
//! For `Spawn` and `Attach` the connection then carries the session's streams:
//! `Stdin`/`StdinEof`/`Control` from the client, `Stdout`/`Stderr`/`Exit` from the keeper.
//! Closing the connection detaches from the session; the keeper keeps the process (and its
//! output, in a scrollback buffer) until it exits or its `max_run_after_disconnect` runs out.
//! `WatchService` answers `Ok` and then carries `Event` frames (JSON [`ServiceEvent`]) until
//! the client closes the connection (or at once, without `follow`).
//! All other requests are one request, one reply, then the keeper closes the connection.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

/// Largest frame either side sends or accepts.
pub const MAX_FRAME: usize = 1 << 20;
/// Largest payload of a data frame the keeper sends; output is chunked to this.
pub const MAX_DATA_CHUNK: usize = 32 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Request = 1,
    Reply = 2,
    Stdin = 3,
    StdinEof = 4,
    Stdout = 5,
    Stderr = 6,
    /// Payload: the exit code as 4 bytes, big-endian `i32` (128+signal for signal deaths).
    Exit = 7,
    /// Payload: JSON [`Control`].
    Control = 8,
    /// Payload: JSON [`ServiceEvent`] (keeper → client, after `WatchService`).
    Event = 9,
}

impl Kind {
    pub fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Request,
            2 => Kind::Reply,
            3 => Kind::Stdin,
            4 => Kind::StdinEof,
            5 => Kind::Stdout,
            6 => Kind::Stderr,
            7 => Kind::Exit,
            8 => Kind::Control,
            9 => Kind::Event,
            _ => return None,
        })
    }
}

/// What a client can ask of a keeper.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Health check; answers `Pong`.
    Ping,
    /// Start a command in the sprite and stream it on this connection.
    Spawn(SpawnSpec),
    /// Attach to a running session: `Attached`, then the scrollback, then live output.
    Attach { session_id: String },
    /// Answers `Sessions`.
    ListSessions,
    /// Send a signal to a session's process group. Answers `Ok`.
    SignalSession { session_id: String, signal: i32 },
    /// Stop every process of the sprite, remove its cgroups, answer `Ok`, and exit.
    Shutdown,
    /// Freeze every process of the sprite (cgroup v2 `cgroup.freeze`); answers `Ok` once the
    /// kernel reports the cgroup frozen. The keeper itself is outside that cgroup and keeps
    /// serving. While frozen, `Spawn` and `Attach` would wait on a frozen init: the client
    /// (wispd's manager) sends `Thaw` before them.
    Freeze,
    /// Undo `Freeze`; answers `Ok` once the cgroup runs again. Thawing a running sprite is fine.
    Thaw,
    /// Replaces the whole set of services (definitions and which are stopped). The keeper
    /// starts what should run (in `needs` order), restarts services whose definition changed,
    /// and stops removed or stopped ones. Answers `ServiceSeq`: events after it are this
    /// request's doing (or later ones').
    SetServices { services: Vec<ServiceSpec> },
    /// Starts a service now (clearing a sticky stop and any restart backoff). `ServiceSeq`.
    StartService { name: String },
    /// Stops a service: SIGTERM to its process group, SIGKILL after `timeout_ms`. The stop is
    /// sticky until `StartService`. Answers `ServiceSeq` at once; the `stopped` event follows.
    /// Error `service_not_running` when it is stopped already.
    StopService { name: String, timeout_ms: u64 },
    /// Stops the service if it runs, then starts it again. `ServiceSeq`.
    RestartService { name: String, timeout_ms: u64 },
    /// Sends a signal to a service's process group. `Ok`; `service_not_running`.
    SignalService { name: String, signal: i32 },
    /// Answers `Services`.
    ListServices,
    /// Answers `Ok`, then sends the service's buffered events as `Event` frames: those after
    /// `after_seq` when given, else the last `tail` output lines (all when `None`). With
    /// `follow`, new events follow until the client closes the connection or the service is
    /// removed; without it, the keeper closes the connection after the buffered ones.
    WatchService {
        name: String,
        #[serde(default)]
        after_seq: Option<u64>,
        #[serde(default)]
        tail: Option<u64>,
        #[serde(default)]
        follow: bool,
    },
}

/// A service as wispd defines it for the keeper.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServiceSpec {
    pub name: String,
    /// How to start it (never a TTY, no stdin, no `max_run_after_disconnect`).
    pub spawn: SpawnSpec,
    /// Services that must run (and listen on their `http_port`, if any) before this one starts.
    #[serde(default)]
    pub needs: Vec<String>,
    #[serde(default)]
    pub http_port: Option<u16>,
    /// Stopped on request: the keeper does not start it.
    #[serde(default)]
    pub stopped: bool,
}

impl ServiceSpec {
    /// Whether `other` starts the same process the same way (the stop flag aside).
    pub fn same_definition(&self, other: &ServiceSpec) -> bool {
        self.spawn == other.spawn && self.needs == other.needs && self.http_port == other.http_port
    }
}

/// A service's state as the keeper reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServiceInfo {
    pub name: String,
    /// `stopped`, `starting`, `running`, `stopping` or `failed`.
    pub status: String,
    /// Process id inside the sprite.
    pub pid: Option<i32>,
    /// Unix milliseconds.
    pub started_at_ms: Option<i64>,
    pub error: Option<String>,
    pub restart_count: u32,
    /// Unix milliseconds.
    pub next_restart_at_ms: Option<i64>,
}

/// What happened to a service.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ServiceEventKind {
    Started,
    Stdout,
    Stderr,
    /// The process exited without being asked to.
    Exit,
    Stopping,
    /// The process exited after a stop.
    Stopped,
    /// It could not be started.
    Error,
}

/// One event of a service (one output line, a start, an exit, ...).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServiceEvent {
    /// Increases with every event of the keeper (all services share it).
    pub seq: u64,
    pub kind: ServiceEventKind,
    #[serde(default)]
    pub data: Option<String>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub pid: Option<i32>,
    /// Unix milliseconds.
    pub time_ms: i64,
}

/// A command to start inside the sprite.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SpawnSpec {
    /// argv, including argv[0].
    pub argv: Vec<String>,
    /// Executable; searched in the `PATH` of `env` when it has no `/`.
    pub path: String,
    /// The complete environment of the process.
    pub env: Vec<(String, String)>,
    /// Working directory inside the sprite.
    pub dir: String,
    /// User name inside the sprite (`sprite`, `root`); resolved from the sprite's /etc/passwd.
    pub user: String,
    pub tty: bool,
    pub rows: u16,
    pub cols: u16,
    /// Whether the process gets stdin from the client; otherwise it reads /dev/null.
    pub stdin: bool,
    /// How long the process may run with no client attached; `None` = until it exits.
    pub max_run_after_disconnect_ms: Option<u64>,
}

/// A session as the keeper reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SessionInfo {
    /// The process id inside the sprite, as a decimal string.
    pub session_id: String,
    /// The command line (argv joined by spaces).
    pub command: String,
    pub workdir: String,
    /// Unix seconds.
    pub created: i64,
    pub tty: bool,
    pub rows: u16,
    pub cols: u16,
    /// Number of clients attached right now.
    pub attached: u32,
    /// Unix milliseconds of the last output, if any.
    pub last_output_ms: Option<i64>,
    /// Output bytes over the session's life.
    pub output_bytes: u64,
}

/// What a keeper answers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Pong {
        init_pid: i32,
        sprite_id: String,
        /// The sprite's processes are frozen (absent from older keepers: not frozen).
        #[serde(default)]
        frozen: bool,
    },
    Spawned {
        session: SessionInfo,
    },
    Attached {
        session: SessionInfo,
    },
    Sessions {
        sessions: Vec<SessionInfo>,
    },
    /// The keeper's event sequence number when a service request was taken.
    ServiceSeq {
        seq: u64,
    },
    Services {
        services: Vec<ServiceInfo>,
    },
    Ok,
    /// `not_found` for unknown sessions; `service_not_found`, `service_not_running`; `failed`
    /// for anything else.
    Error {
        code: String,
        message: String,
    },
}

/// Mid-stream control messages from the client.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control {
    Resize { rows: u16, cols: u16 },
    Signal { signal: i32 },
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub kind: Kind,
    pub payload: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("keeper connection: {0}")]
    Io(#[from] io::Error),
    #[error("frame of {0} bytes is larger than the limit")]
    TooLarge(usize),
    #[error("empty frame")]
    Empty,
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("bad JSON in frame: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unexpected frame {0:?}")]
    Unexpected(Kind),
}

/// Encodes one frame.
pub fn encode(kind: Kind, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(payload.len() + 5);
    v.extend_from_slice(&((payload.len() + 1) as u32).to_be_bytes());
    v.push(kind as u8);
    v.extend_from_slice(payload);
    v
}

/// Encodes a JSON frame.
pub fn encode_json<T: Serialize>(kind: Kind, value: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail.
    encode(kind, &serde_json::to_vec(value).unwrap_or_default())
}

/// Encodes an exit frame.
pub fn encode_exit(code: i32) -> Vec<u8> {
    encode(Kind::Exit, &code.to_be_bytes())
}

/// Decodes the payload of an exit frame.
pub fn decode_exit(payload: &[u8]) -> Option<i32> {
    Some(i32::from_be_bytes(payload.try_into().ok()?))
}

/// Parses the length prefix; returns the number of bytes (kind + payload) that follow.
pub fn frame_len(header: [u8; 4]) -> Result<usize, ProtoError> {
    let len = u32::from_be_bytes(header) as usize;
    if len == 0 {
        return Err(ProtoError::Empty);
    }
    if len > MAX_FRAME + 1 {
        return Err(ProtoError::TooLarge(len));
    }
    Ok(len)
}

/// Splits a frame body (kind + payload) into a [`Frame`].
pub fn frame_from_body(mut body: Vec<u8>) -> Result<Frame, ProtoError> {
    if body.is_empty() {
        return Err(ProtoError::Empty);
    }
    let kind = Kind::from_u8(body[0]).ok_or(ProtoError::UnknownKind(body[0]))?;
    body.remove(0);
    Ok(Frame {
        kind,
        payload: body,
    })
}

/// Reads one frame from a blocking stream; `Ok(None)` on a clean end of stream.
pub fn read_frame(r: &mut impl Read) -> Result<Option<Frame>, ProtoError> {
    let mut header = [0u8; 4];
    match r.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = frame_len(header)?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    frame_from_body(body).map(Some)
}

/// Writes one frame to a blocking stream.
pub fn write_frame(w: &mut impl Write, kind: Kind, payload: &[u8]) -> io::Result<()> {
    w.write_all(&encode(kind, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let req = Request::Spawn(SpawnSpec {
            argv: vec!["echo".into(), "hi".into()],
            path: "echo".into(),
            env: vec![("A".into(), "b".into())],
            dir: "/".into(),
            user: "sprite".into(),
            tty: false,
            rows: 24,
            cols: 80,
            stdin: true,
            max_run_after_disconnect_ms: Some(10_000),
        });
        let bytes = encode_json(Kind::Request, &req);
        let mut cur = io::Cursor::new(bytes);
        let f = read_frame(&mut cur).unwrap().unwrap();
        assert_eq!(f.kind, Kind::Request);
        let back: Request = serde_json::from_slice(&f.payload).unwrap();
        assert_eq!(back, req);
        assert!(read_frame(&mut cur).unwrap().is_none());
    }

    #[test]
    fn pong_without_frozen_is_not_frozen() {
        let r: Reply =
            serde_json::from_str(r#"{"reply":"pong","init_pid":5,"sprite_id":"s"}"#).unwrap();
        assert_eq!(
            r,
            Reply::Pong {
                init_pid: 5,
                sprite_id: "s".into(),
                frozen: false
            }
        );
        let req: Request = serde_json::from_str(r#"{"op":"freeze"}"#).unwrap();
        assert_eq!(req, Request::Freeze);
    }

    #[test]
    fn service_messages() {
        let req: Request = serde_json::from_str(r#"{"op":"watch_service","name":"web"}"#).unwrap();
        assert_eq!(
            req,
            Request::WatchService {
                name: "web".into(),
                after_seq: None,
                tail: None,
                follow: false
            }
        );
        let ev = ServiceEvent {
            seq: 9,
            kind: ServiceEventKind::Stopped,
            data: None,
            exit_code: Some(143),
            pid: Some(7),
            time_ms: 1,
        };
        let bytes = encode_json(Kind::Event, &ev);
        let f = read_frame(&mut io::Cursor::new(bytes)).unwrap().unwrap();
        assert_eq!(f.kind, Kind::Event);
        assert_eq!(
            serde_json::from_slice::<ServiceEvent>(&f.payload).unwrap(),
            ev
        );
        let r: Reply = serde_json::from_str(r#"{"reply":"service_seq","seq":3}"#).unwrap();
        assert_eq!(r, Reply::ServiceSeq { seq: 3 });
    }

    #[test]
    fn exit_code() {
        let f = encode_exit(-1);
        assert_eq!(decode_exit(&f[5..]), Some(-1));
    }

    #[test]
    fn rejects_bad_frames() {
        assert!(matches!(frame_len([0, 0, 0, 0]), Err(ProtoError::Empty)));
        assert!(matches!(
            frame_len(u32::MAX.to_be_bytes()),
            Err(ProtoError::TooLarge(_))
        ));
        assert!(matches!(
            frame_from_body(vec![99]),
            Err(ProtoError::UnknownKind(99))
        ));
    }
}

//! Async client side of the keeper protocol (`wisp_runtime::proto`) over a Unix socket.

use std::io;
use std::path::Path;

use async_trait::async_trait;
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use wisp_runtime::proto::{
    self, decode_exit, encode, encode_json, frame_from_body, frame_len, Control, Frame, Kind,
    ProtoError, Reply, Request, ServiceEvent, SessionInfo,
};

use super::{
    ExecEvent, ExecEvents, ExecInput, ExecInputMsg, ExecStream, RuntimeError, ServiceEvents,
};

/// Reads whole frames. Bytes are buffered here, not in the future, so [`Self::next_frame`] is
/// cancel-safe.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        FrameReader {
            inner,
            buf: BytesMut::with_capacity(16 * 1024),
        }
    }

    /// The next frame; `Ok(None)` on a clean end of stream (between frames).
    pub async fn next_frame(&mut self) -> Result<Option<Frame>, ProtoError> {
        loop {
            if self.buf.len() >= 4 {
                let header = [self.buf[0], self.buf[1], self.buf[2], self.buf[3]];
                let len = frame_len(header)?;
                if self.buf.len() >= 4 + len {
                    self.buf.advance(4);
                    let body = self.buf.split_to(len);
                    return frame_from_body(body.to_vec()).map(Some);
                }
                self.buf.reserve(4 + len - self.buf.len());
            }
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "keeper closed the connection mid-frame",
                )
                .into());
            }
        }
    }
}

/// One connection to a keeper.
#[derive(Debug)]
pub struct KeeperConn {
    reader: FrameReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl KeeperConn {
    pub async fn connect(socket: &Path) -> io::Result<Self> {
        let (r, w) = UnixStream::connect(socket).await?.into_split();
        Ok(KeeperConn {
            reader: FrameReader::new(r),
            writer: w,
        })
    }

    /// Sends the connection's request and reads the keeper's reply.
    pub async fn call(&mut self, req: &Request) -> Result<Reply, ProtoError> {
        self.writer
            .write_all(&encode_json(Kind::Request, req))
            .await?;
        match self.reader.next_frame().await? {
            Some(Frame {
                kind: Kind::Reply,
                payload,
            }) => Ok(serde_json::from_slice(&payload)?),
            Some(f) => Err(ProtoError::Unexpected(f.kind)),
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "keeper closed the connection without a reply",
            )
            .into()),
        }
    }

    /// Waits until the keeper closes the connection (frames are discarded).
    pub async fn wait_closed(&mut self) {
        while let Ok(Some(_)) = self.reader.next_frame().await {}
    }

    /// Turns a connection whose request was `Spawn`/`Attach` into the session's streams.
    pub fn into_exec(self, session: SessionInfo) -> ExecStream {
        ExecStream {
            session,
            events: Box::new(KeeperEvents {
                reader: self.reader,
                done: false,
            }),
            input: Box::new(KeeperInput {
                writer: self.writer,
            }),
        }
    }
}

impl KeeperConn {
    /// Turns a connection whose request was `WatchService` (answered `Ok`) into its events.
    pub fn into_service_events(self) -> Box<dyn ServiceEvents> {
        Box::new(KeeperServiceEvents {
            reader: self.reader,
            _writer: self.writer,
        })
    }
}

/// The `Event` frames of a `WatchService` connection. The write half is kept: the keeper
/// takes its closing for the client's leaving.
struct KeeperServiceEvents {
    reader: FrameReader<OwnedReadHalf>,
    _writer: OwnedWriteHalf,
}

#[async_trait]
impl ServiceEvents for KeeperServiceEvents {
    async fn next_event(&mut self) -> Result<Option<ServiceEvent>, RuntimeError> {
        match self.reader.next_frame().await? {
            None => Ok(None),
            Some(Frame {
                kind: Kind::Event,
                payload,
            }) => Ok(Some(
                serde_json::from_slice(&payload).map_err(ProtoError::from)?,
            )),
            Some(f) => Err(ProtoError::Unexpected(f.kind).into()),
        }
    }
}

struct KeeperEvents {
    reader: FrameReader<OwnedReadHalf>,
    done: bool,
}

#[async_trait]
impl ExecEvents for KeeperEvents {
    async fn next_event(&mut self) -> Result<Option<ExecEvent>, RuntimeError> {
        if self.done {
            return Ok(None);
        }
        let Some(frame) = self.reader.next_frame().await? else {
            self.done = true;
            return Ok(None);
        };
        let event = match frame.kind {
            Kind::Stdout => ExecEvent::Stdout(Bytes::from(frame.payload)),
            Kind::Stderr => ExecEvent::Stderr(Bytes::from(frame.payload)),
            Kind::Exit => {
                self.done = true;
                ExecEvent::Exit(
                    decode_exit(&frame.payload).ok_or(ProtoError::Unexpected(Kind::Exit))?,
                )
            }
            other => return Err(ProtoError::Unexpected(other).into()),
        };
        Ok(Some(event))
    }
}

struct KeeperInput {
    writer: OwnedWriteHalf,
}

#[async_trait]
impl ExecInput for KeeperInput {
    async fn send(&mut self, msg: ExecInputMsg) -> Result<(), RuntimeError> {
        let io_err = |e: io::Error| RuntimeError::from(ProtoError::Io(e));
        match msg {
            ExecInputMsg::Stdin(data) => {
                for chunk in data.chunks(proto::MAX_DATA_CHUNK) {
                    self.writer
                        .write_all(&encode(Kind::Stdin, chunk))
                        .await
                        .map_err(io_err)?;
                }
            }
            ExecInputMsg::StdinEof => self
                .writer
                .write_all(&encode(Kind::StdinEof, &[]))
                .await
                .map_err(io_err)?,
            ExecInputMsg::Resize { rows, cols } => self
                .writer
                .write_all(&encode_json(Kind::Control, &Control::Resize { rows, cols }))
                .await
                .map_err(io_err)?,
            ExecInputMsg::Signal(signal) => self
                .writer
                .write_all(&encode_json(Kind::Control, &Control::Signal { signal }))
                .await
                .map_err(io_err)?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wisp_runtime::proto::encode_exit;

    #[tokio::test]
    async fn reads_frames_split_anywhere() {
        let mut wire = encode(Kind::Stdout, b"hello");
        wire.extend(encode(Kind::Stderr, b""));
        wire.extend(encode_exit(137));
        // Feed the bytes one at a time: frames must still come out whole.
        let (mut a, b) = tokio::io::duplex(1);
        let writer = tokio::spawn(async move {
            for byte in wire {
                a.write_all(&[byte]).await.unwrap();
            }
        });
        let mut r = FrameReader::new(b);
        let f = r.next_frame().await.unwrap().unwrap();
        assert_eq!(
            (f.kind, f.payload.as_slice()),
            (Kind::Stdout, &b"hello"[..])
        );
        let f = r.next_frame().await.unwrap().unwrap();
        assert_eq!((f.kind, f.payload.len()), (Kind::Stderr, 0));
        let f = r.next_frame().await.unwrap().unwrap();
        assert_eq!(decode_exit(&f.payload), Some(137));
        writer.await.unwrap();
        assert!(r.next_frame().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn truncated_and_bad_frames_are_errors() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(&[0, 0, 0, 5, 5]).await.unwrap();
        drop(a);
        let mut r = FrameReader::new(b);
        assert!(r.next_frame().await.is_err());

        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(&[0, 0, 0, 1, 99]).await.unwrap();
        let mut r = FrameReader::new(b);
        assert!(matches!(
            r.next_frame().await,
            Err(ProtoError::UnknownKind(99))
        ));

        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let mut r = FrameReader::new(b);
        assert!(matches!(r.next_frame().await, Err(ProtoError::TooLarge(_))));
    }

    #[tokio::test]
    async fn spawn_round_trip_over_a_socket() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("k.sock");
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            let mut r = FrameReader::new(r);
            let req = r.next_frame().await.unwrap().unwrap();
            assert_eq!(req.kind, Kind::Request);
            let session = SessionInfo {
                session_id: "7".into(),
                command: "cat".into(),
                workdir: "/".into(),
                created: 1,
                tty: false,
                rows: 24,
                cols: 80,
                attached: 1,
                last_output_ms: None,
                output_bytes: 0,
            };
            w.write_all(&encode_json(Kind::Reply, &Reply::Spawned { session }))
                .await
                .unwrap();
            // Echo stdin back as stdout until EOF, then exit 3.
            loop {
                let f = r.next_frame().await.unwrap().unwrap();
                match f.kind {
                    Kind::Stdin => w
                        .write_all(&encode(Kind::Stdout, &f.payload))
                        .await
                        .unwrap(),
                    Kind::Control => {
                        let c: Control = serde_json::from_slice(&f.payload).unwrap();
                        assert_eq!(c, Control::Signal { signal: 2 });
                    }
                    Kind::StdinEof => break,
                    k => panic!("unexpected {k:?}"),
                }
            }
            w.write_all(&encode_exit(3)).await.unwrap();
        });
        let mut conn = KeeperConn::connect(&sock).await.unwrap();
        let reply = conn
            .call(&Request::Attach {
                session_id: "7".into(),
            })
            .await
            .unwrap();
        let Reply::Spawned { session } = reply else {
            panic!("{reply:?}")
        };
        let mut s = conn.into_exec(session);
        s.input
            .send(ExecInputMsg::Stdin(Bytes::from_static(b"ping")))
            .await
            .unwrap();
        s.input.send(ExecInputMsg::Signal(2)).await.unwrap();
        s.input.send(ExecInputMsg::StdinEof).await.unwrap();
        assert_eq!(
            s.events.next_event().await.unwrap(),
            Some(ExecEvent::Stdout(Bytes::from_static(b"ping")))
        );
        assert_eq!(
            s.events.next_event().await.unwrap(),
            Some(ExecEvent::Exit(3))
        );
        assert_eq!(s.events.next_event().await.unwrap(), None);
        server.await.unwrap();
    }
}

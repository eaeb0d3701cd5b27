//! The `proxy` op of the control socket (§3.3, §3.4): a TCP connection into the sprite over a
//! pooled control socket.
//!
//! The Go SDK uses it for `ProxyPort` whenever `/control` upgrades: bare JSON
//! `{"type":"start","operation":"proxy","params":{"host","port","keep_alive":true}}`, then it
//! expects the plain proxy's bare reply `{"status":"connected","target":"host:port"}` and raw
//! binary frames both ways; it ends its side with a bare `{"type":"release"}` and puts the
//! socket back in its pool. The prefixed `control:op.start` form with `op` `proxy` and
//! `args {"host","port"}` works too.
//!
//! * Refused (no port, unknown host, nothing listening): the bare form gets
//!   `{"status":"error","error":…}` (Go then releases the socket), the prefixed form
//!   `control:op.error`; the socket stays usable.
//! * The client's `release` (or any `control:` message) ends the op: the TCP connection is
//!   shut down; the prefixed form then gets `control:op.complete`.
//! * The target closing ends the op too. The bare form's client only learns of an EOF from a
//!   close frame (its reads skip text), so the socket is closed with 1000; the prefixed form
//!   gets `control:op.complete` and keeps its socket.
//!
//! The sprite is woken at the start and counts as in flight while the connection is open.

use std::net::IpAddr;

use axum::extract::ws::Message;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::control::{control_message, op_error, OpStart, CONTROL_PREFIX};
use super::exec_bridge::{close_message, Rx, Tx};
use super::proxy::{target_from_query, Target};
use super::AppState;
use crate::activity::ActivityGuard;
use crate::ingress::{connect_sprite, resolve};
use crate::store::{SpriteRow, SpriteState};

const READ_BUF: usize = 64 << 10;

/// How the relay ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The client released the socket.
    Released,
    /// The target closed (or failed).
    TargetClosed,
    /// The client closed the socket or the connection failed.
    ClientGone,
}

/// Runs one proxy op; returns the read half while the socket stays usable.
pub async fn run(
    st: &AppState,
    sprite_id: &str,
    tx: &mut Tx,
    rx: Rx,
    start: &OpStart,
) -> Option<Rx> {
    let id = start.id.as_ref();
    let refuse = |message: String| {
        if start.bare {
            Message::Text(
                json!({"status": "error", "error": message})
                    .to_string()
                    .into(),
            )
        } else {
            op_error(id, "op.failed", &message)
        }
    };
    let target = match target_from_query(&start.args) {
        Ok(Some(t)) => t,
        Ok(None) => {
            tx.send(refuse("proxy needs a port (1..65535)".into()))
                .await
                .ok()?;
            return Some(rx);
        }
        Err(e) => {
            tx.send(refuse(e)).await.ok()?;
            return Some(rx);
        }
    };
    let (stream, activity) = match open(st, sprite_id, &target).await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(sprite_id, "control proxy: {e}");
            tx.send(refuse(e)).await.ok()?;
            return Some(rx);
        }
    };
    let hello = json!({"status": "connected", "target": target.display()}).to_string();
    tx.send(Message::Text(hello.into())).await.ok()?;
    let mut rx = rx;
    let end = relay(tx, &mut rx, stream, &activity).await;
    st.manager.touch_active(sprite_id);
    tracing::debug!(sprite_id, target = %target.display(), ?end, "control proxy ended");
    match end {
        End::ClientGone => None,
        End::TargetClosed if start.bare => {
            let _ = tx.send(close_message(1000, "target closed")).await;
            None
        }
        End::Released if start.bare => Some(rx),
        End::Released | End::TargetClosed => {
            tx.send(control_message("op.complete", id, json!({"ok": true})))
                .await
                .ok()?;
            Some(rx)
        }
    }
}

/// Wakes the sprite and connects to the target from inside its network namespace (the
/// plain proxy's rules: `localhost`, IP literals, names in the sprite's `/etc/hosts`).
async fn open(
    st: &AppState,
    sprite_id: &str,
    target: &Target,
) -> Result<(TcpStream, ActivityGuard), String> {
    let row: SpriteRow = match st.store.sprite_by_id(sprite_id) {
        Ok(Some(r)) if r.state == SpriteState::Ready => r,
        Ok(_) => return Err("sprite not found".into()),
        Err(e) => return Err(e.to_string()),
    };
    let activity = st.manager.activity().begin(&row.id);
    st.manager.wake(&row).await.map_err(|e| e.to_string())?;
    st.manager.touch_active(&row.id);
    let runtime = st.manager.runtime().clone();
    let root = match target.host.parse::<IpAddr>() {
        Ok(_) => None,
        Err(_) => runtime.root_dir(&row.id).await.ok(),
    };
    let addrs = resolve(&target.host, target.port, root.as_deref()).map_err(|e| e.to_string())?;
    let stream = connect_sprite(&runtime, &row.id, &addrs)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", target.display()))?;
    Ok((stream, activity))
}

/// Whether a client text frame ends the op: a bare `release`, or any control message.
fn ends_op(text: &str) -> bool {
    if text.starts_with(CONTROL_PREFIX) {
        return true;
    }
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .is_some_and(|v| v["type"] == "release")
}

/// Raw bytes both ways until the client releases, either side closes, or the target fails.
async fn relay(tx: &mut Tx, rx: &mut Rx, stream: TcpStream, activity: &ActivityGuard) -> End {
    let (mut tcp_r, mut tcp_w) = stream.into_split();
    let to_target = async {
        // `next` is cancel-safe: a frame half read stays in the socket for the next op.
        while let Some(msg) = rx.next().await {
            match msg {
                Ok(Message::Binary(b)) => {
                    activity.touch();
                    if tcp_w.write_all(&b).await.is_err() {
                        // The target stopped reading; its side ends the op.
                        return None;
                    }
                }
                Ok(Message::Text(t)) if ends_op(t.as_str()) => {
                    let _ = tcp_w.shutdown().await;
                    return Some(End::Released);
                }
                Ok(Message::Close(_)) | Err(_) => return Some(End::ClientGone),
                Ok(_) => {}
            }
        }
        Some(End::ClientGone)
    };
    let to_client = async {
        let mut buf = vec![0u8; READ_BUF];
        loop {
            match tcp_r.read(&mut buf).await {
                Ok(0) | Err(_) => return End::TargetClosed,
                Ok(n) => {
                    activity.touch();
                    let frame = Message::Binary(Bytes::copy_from_slice(&buf[..n]));
                    if tx.send(frame).await.is_err() {
                        return End::ClientGone;
                    }
                }
            }
        }
    };
    tokio::pin!(to_client);
    tokio::select! {
        end = to_target => match end {
            Some(end) => end,
            None => (&mut to_client).await,
        },
        end = &mut to_client => end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_ends_an_op() {
        assert!(ends_op(r#"{"type":"release"}"#));
        assert!(ends_op(r#"control:{"type":"op.cancel"}"#));
        assert!(!ends_op(r#"{"type":"resize","cols":1,"rows":1}"#));
        assert!(!ends_op("hello"));
    }
}

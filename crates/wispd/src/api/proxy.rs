//! `GET /v1/sprites/{name}/proxy` (§3.4): a TCP connection to a port inside the sprite,
//! carried over a WebSocket.
//!
//! 1. The target comes from the query (`?host=&port=`, checked before the upgrade: 400) or
//!    from the first text frame `{"host": "localhost", "port": N}` (bad → close 1003).
//! 2. wispd connects from inside the sprite's network namespace (no route needed;
//!    `localhost` is the sprite's own loopback). Hosts: `localhost`, IP literals and names in
//!    the sprite's `/etc/hosts`; DNS names are not resolved (the connection would leave the
//!    sprite's network from wispd's side). Failure → close 1011 with the reason.
//! 3. Success → text `{"status":"connected","target":"host:port"}`, then binary frames are
//!    raw bytes both ways (text frames from the client are ignored). The target's EOF closes
//!    the WebSocket (1000); the client's close closes the TCP connection.
//!
//! The sprite is woken before the upgrade and stays in flight while the tunnel is open.

use std::net::SocketAddr;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::error::ApiError;
use super::exec_bridge::close_message;
use super::extract::{query_pairs, ApiPath};
use super::sprites::find_sprite;
use super::AppState;
use crate::activity::ActivityGuard;
use crate::auth::Caller;
use crate::ingress::{connect_sprite, resolve};
use crate::store::SpriteRow;

/// How long the client has to send its init message (the JS SDK waits 10 s for the reply).
const INIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
const READ_BUF: usize = 64 << 10;

/// Where to connect, as the client named it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Target {
    #[serde(default = "default_host")]
    pub host: String,
    pub port: u16,
}

fn default_host() -> String {
    "localhost".into()
}

impl Target {
    /// `host:port`, IPv6 literals bracketed.
    pub fn display(&self) -> String {
        let h = self.host.trim_start_matches('[').trim_end_matches(']');
        if h.contains(':') {
            format!("[{h}]:{}", self.port)
        } else {
            format!("{h}:{}", self.port)
        }
    }

    fn check(self) -> Result<Self, String> {
        if self.port == 0 {
            return Err("port must be 1..65535".into());
        }
        if self.host.len() > 255 {
            return Err("host is too long".into());
        }
        Ok(self)
    }
}

/// `{"host"?, "port"}`.
pub fn parse_init(text: &str) -> Result<Target, String> {
    let t: Target = serde_json::from_str(text).map_err(|e| format!("invalid init message: {e}"))?;
    t.check().map_err(|e| format!("invalid init message: {e}"))
}

/// The target in the query, if the client put it there.
pub fn target_from_query(pairs: &[(String, String)]) -> Result<Option<Target>, String> {
    let get = |k: &str| pairs.iter().rev().find(|(key, _)| key == k).map(|(_, v)| v);
    let Some(port) = get("port") else {
        return Ok(None);
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("port: {port:?} is not a port number"))?;
    let host = get("host")
        .filter(|h| !h.is_empty())
        .cloned()
        .unwrap_or_else(default_host);
    Target { host, port }.check().map(Some)
}

#[utoipa::path(
    operation_id = "proxy_proxy_get",
    get,
    path = "/v1/sprites/{name}/proxy",
    tag = "network",
    params(crate::api::openapi::params::SpritePath, crate::api::openapi::params::ProxyQuery),
    responses(
        (status = 101, description = "A TCP connection into the sprite; without `port` in the query the first text frame is `{\"host\"?, \"port\"}`. Switched to a WebSocket"),
        (status = 400, description = "Invalid parameters", body = wisp_api::error::ErrorBody),
        (status = 404, description = "No such sprite", body = wisp_api::error::ErrorBody),
        (status = 426, description = "Not a WebSocket upgrade", body = wisp_api::error::ErrorBody),
        (status = 503, description = "The sprite could not be woken or started", body = wisp_api::error::ErrorBody),
    ),
)]
pub async fn proxy_get(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
    RawQuery(raw): RawQuery,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let row = find_sprite(&st, &caller, &name)?;
    let ws = ws.map_err(|r| ApiError::new(r.status(), r.body_text()))?;
    let query_target =
        target_from_query(&query_pairs(raw.as_deref())).map_err(ApiError::bad_request)?;
    let activity = st.manager.activity().begin(&row.id);
    st.manager.wake(&row).await?;
    st.manager.touch_active(&row.id);
    Ok(ws
        .on_failed_upgrade(|e| tracing::debug!("proxy upgrade failed: {e}"))
        .on_upgrade(move |socket| run(st, row, socket, query_target, activity))
        .into_response())
}

/// Waits for the init frame; `Err(None)` when the client went away.
async fn read_init(socket: &mut WebSocket) -> Result<Target, Option<String>> {
    let wait = async {
        loop {
            match socket.recv().await {
                Some(Ok(Message::Text(t))) => return parse_init(t.as_str()).map_err(Some),
                Some(Ok(Message::Binary(b))) => {
                    return match std::str::from_utf8(&b) {
                        Ok(t) => parse_init(t).map_err(Some),
                        Err(_) => Err(Some("invalid init message: not JSON".into())),
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return Err(None),
            }
        }
    };
    match tokio::time::timeout(INIT_TIMEOUT, wait).await {
        Ok(r) => r,
        Err(_) => Err(Some("no init message within 10s".into())),
    }
}

async fn run(
    st: AppState,
    row: SpriteRow,
    mut socket: WebSocket,
    query_target: Option<Target>,
    activity: ActivityGuard,
) {
    let target = match query_target {
        Some(t) => t,
        None => match read_init(&mut socket).await {
            Ok(t) => t,
            Err(Some(reason)) => {
                let _ = socket.send(close_message(1003, &reason)).await;
                return;
            }
            Err(None) => return,
        },
    };
    let runtime = st.manager.runtime().clone();
    let shown = target.display();
    let addrs: Result<Vec<SocketAddr>, String> = {
        let root = match target.host.parse::<std::net::IpAddr>() {
            Ok(_) => None,
            Err(_) => runtime.root_dir(&row.id).await.ok(),
        };
        resolve(&target.host, target.port, root.as_deref()).map_err(|e| e.to_string())
    };
    let stream = match addrs {
        Ok(addrs) => connect_sprite(&runtime, &row.id, &addrs)
            .await
            .map_err(|e| format!("cannot connect to {shown}: {e}")),
        Err(e) => Err(e),
    };
    let stream = match stream {
        Ok(s) => s,
        Err(reason) => {
            tracing::debug!(sprite = %row.name, "proxy: {reason}");
            let _ = socket.send(close_message(1011, &reason)).await;
            return;
        }
    };
    let hello = serde_json::json!({"status": "connected", "target": shown}).to_string();
    if socket.send(Message::Text(hello.into())).await.is_err() {
        return;
    }
    relay(socket, stream, &activity).await;
    st.manager.touch_active(&row.id);
}

/// Raw bytes both ways until either side ends.
async fn relay(socket: WebSocket, stream: tokio::net::TcpStream, activity: &ActivityGuard) {
    let (mut tcp_r, mut tcp_w) = stream.into_split();
    let (mut ws_tx, mut ws_rx) = socket.split();
    let to_target = async {
        while let Some(msg) = ws_rx.next().await {
            match msg {
                Ok(Message::Binary(b)) => {
                    activity.touch();
                    if tcp_w.write_all(&b).await.is_err() {
                        return false;
                    }
                }
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let _ = tcp_w.shutdown().await;
        true
    };
    let to_client = async {
        let mut buf = vec![0u8; READ_BUF];
        loop {
            match tcp_r.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    activity.touch();
                    if ws_tx
                        .send(Message::Binary(Bytes::copy_from_slice(&buf[..n])))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) => {
                    let _ = ws_tx.send(close_message(1011, &e.to_string())).await;
                    return;
                }
            }
        }
        let _ = ws_tx.send(close_message(1000, "target closed")).await;
    };
    tokio::pin!(to_client);
    tokio::select! {
        ok = to_target => {
            if !ok {
                // The target stopped reading: say so, then stop.
                let _ = (&mut to_client).await;
            }
        }
        _ = &mut to_client => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::extract::test_pairs as pairs;

    #[test]
    fn init_messages() {
        assert_eq!(
            parse_init(r#"{"port":8080}"#).unwrap(),
            Target {
                host: "localhost".into(),
                port: 8080
            }
        );
        assert_eq!(
            parse_init(r#"{"host":"::1","port":1}"#).unwrap().display(),
            "[::1]:1"
        );
        for bad in [
            r#"{"port":0}"#,
            r#"{"port":70000}"#,
            r#"{}"#,
            "nope",
            r#"{"port":"x"}"#,
        ] {
            assert!(parse_init(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn query_targets() {
        assert_eq!(target_from_query(&pairs(&[])).unwrap(), None);
        assert_eq!(
            target_from_query(&pairs(&[("port", "22")]))
                .unwrap()
                .unwrap()
                .display(),
            "localhost:22"
        );
        assert_eq!(
            target_from_query(&pairs(&[("host", "10.0.0.1"), ("port", "5")]))
                .unwrap()
                .unwrap()
                .display(),
            "10.0.0.1:5"
        );
        assert!(target_from_query(&pairs(&[("port", "0")])).is_err());
        assert!(target_from_query(&pairs(&[("port", "x")])).is_err());
    }
}

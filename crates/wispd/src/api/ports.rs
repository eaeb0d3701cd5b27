//! `GET /v1/sprites/{name}/ports/watch` (§3.5): the TCP ports listening inside a sprite.
//!
//! On connect: `{"type":"port_list","ports":[{"port":8080,"address":"0.0.0.0","protocol":"tcp"}]}`,
//! then `{"type":"port_opened"|"port_closed","port":..,"address":..,"protocol":"tcp"}` as
//! they change. wispd polls the LISTEN sockets of the sprite's network namespace
//! (`/proc/<init>/net/tcp` and `tcp6`) every [`POLL_EVERY`]. Watching does not wake the sprite
//! nor keep it awake; a cold sprite has no ports (and its ports show up again when it wakes).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde_json::{json, Value};

use super::error::ApiError;
use super::extract::ApiPath;
use super::sprites::find_sprite;
use super::AppState;
use crate::auth::Caller;
use crate::store::SpriteRow;

pub const POLL_EVERY: Duration = Duration::from_millis(500);

/// A listening socket.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ListenPort {
    pub port: u16,
    pub address: IpAddr,
}

impl ListenPort {
    fn json(&self, kind: Option<&str>) -> Value {
        let mut v = json!({
            "port": self.port,
            "address": self.address.to_string(),
            "protocol": "tcp",
        });
        if let Some(k) = kind {
            v["type"] = json!(k);
        }
        v
    }
}

#[utoipa::path(
    operation_id = "ports_ports_watch",
    get,
    path = "/v1/sprites/{name}/ports/watch",
    tag = "network",
    params(crate::api::openapi::params::SpritePath),
    responses(
        (status = 101, description = "Text frames `PortsMessage`: the listening ports, then changes. Switched to a WebSocket"),
        (status = 404, description = "No such sprite", body = wisp_api::error::ErrorBody),
        (status = 426, description = "Not a WebSocket upgrade", body = wisp_api::error::ErrorBody),
    ),
)]
pub async fn ports_watch(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let row = find_sprite(&st, &caller, &name)?;
    let ws = ws.map_err(|r| ApiError::new(r.status(), r.body_text()))?;
    Ok(ws
        .on_failed_upgrade(|e| tracing::debug!("ports watch upgrade failed: {e}"))
        .on_upgrade(move |socket| watch(st, row, socket))
        .into_response())
}

async fn watch(st: AppState, row: SpriteRow, mut socket: WebSocket) {
    let mut known = listening(&st, &row).await;
    let list: Vec<Value> = known.iter().map(|p| p.json(None)).collect();
    let first = json!({"type": "port_list", "ports": list}).to_string();
    if socket.send(Message::Text(first.into())).await.is_err() {
        return;
    }
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = socket.recv() => match msg {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            _ = tick.tick() => {
                let now = listening(&st, &row).await;
                let events = known
                    .difference(&now)
                    .map(|p| p.json(Some("port_closed")))
                    .chain(now.difference(&known).map(|p| p.json(Some("port_opened"))))
                    .collect::<Vec<_>>();
                for e in events {
                    if socket.send(Message::Text(e.to_string().into())).await.is_err() {
                        return;
                    }
                }
                known = now;
            }
        }
    }
}

/// The sprite's listening TCP sockets; none when it is cold.
async fn listening(st: &AppState, row: &SpriteRow) -> BTreeSet<ListenPort> {
    let Ok(netns) = st.manager.runtime().netns_path(&row.id).await else {
        return BTreeSet::new();
    };
    // `/proc/<pid>/ns/net` → `/proc/<pid>/net/`: the socket tables of that namespace.
    let Some(proc_dir) = netns.parent().and_then(Path::parent).map(PathBuf::from) else {
        return BTreeSet::new();
    };
    tokio::task::spawn_blocking(move || {
        let mut out = BTreeSet::new();
        for (file, v6) in [("tcp", false), ("tcp6", true)] {
            if let Ok(text) = std::fs::read_to_string(proc_dir.join("net").join(file)) {
                out.extend(parse_proc_net_tcp(&text, v6));
            }
        }
        out
    })
    .await
    .unwrap_or_default()
}

/// LISTEN (`st` = `0A`) entries of a `/proc/net/tcp{,6}` table.
pub fn parse_proc_net_tcp(text: &str, v6: bool) -> Vec<ListenPort> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let local = f.nth(1)?;
            let state = f.nth(1)?;
            if state != "0A" {
                return None;
            }
            let (addr, port) = local.split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            let address = if v6 {
                if addr.len() != 32 {
                    return None;
                }
                let mut bytes = [0u8; 16];
                for i in 0..4 {
                    let word = u32::from_str_radix(&addr[i * 8..i * 8 + 8], 16).ok()?;
                    bytes[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
                }
                IpAddr::V6(Ipv6Addr::from(bytes))
            } else {
                let word = u32::from_str_radix(addr, 16).ok()?;
                IpAddr::V4(Ipv4Addr::from(word.to_ne_bytes()))
            };
            Some(ListenPort { port, address })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_endian = "little")]
    fn parses_proc_tables() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
           0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1 1 0 100 0 0 10 0\n\
           1: 0100007F:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0\n\
           2: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000  1000        0 3 1 0 100 0 0 10 0\n";
        assert_eq!(
            parse_proc_net_tcp(v4, false),
            vec![
                ListenPort {
                    port: 8080,
                    address: "0.0.0.0".parse().unwrap()
                },
                ListenPort {
                    port: 22,
                    address: "127.0.0.1".parse().unwrap()
                },
            ]
        );
        let v6 = "  sl  local_address                         remote_address                        st\n\
           0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 0\n\
           1: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 0\n";
        assert_eq!(
            parse_proc_net_tcp(v6, true),
            vec![
                ListenPort {
                    port: 8080,
                    address: "::1".parse().unwrap()
                },
                ListenPort {
                    port: 80,
                    address: "::".parse().unwrap()
                },
            ]
        );
    }
}

//! `wisp proxy [-s NAME] [LOCAL:]REMOTE`: forwards 127.0.0.1:LOCAL to port REMOTE inside the
//! sprite (its own `localhost`), one proxy WebSocket (§3.4) per accepted connection.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio_tungstenite::tungstenite::Message;

use super::Ctx;
use crate::cli::ProxyArgs;
use crate::client::{sprite_path, Client};
use crate::exec_ws::{connect_url, ws_base, Ws};

/// How long wispd has to connect to the target (the JS SDK waits 10 s too).
const CONNECTED_TIMEOUT: Duration = Duration::from_secs(10);

/// `5432` → (5432, 5432); `3001:3000` → (3001, 3000). Local port 0 picks a free one.
pub fn parse_spec(spec: &str) -> Result<(u16, u16)> {
    let port = |s: &str, what: &str, zero_ok: bool| -> Result<u16> {
        match s.parse::<u16>() {
            Ok(0) if !zero_ok => bail!("{what} port must be 1..65535"),
            Ok(p) => Ok(p),
            Err(_) => bail!("{what} port {s:?} is not a port number (expected [LOCAL:]REMOTE)"),
        }
    };
    match spec.split_once(':') {
        None => {
            let p = port(spec, "remote", false)?;
            Ok((p, p))
        }
        Some((l, r)) => Ok((port(l, "local", true)?, port(r, "remote", false)?)),
    }
}

pub async fn run(ctx: &Ctx, args: ProxyArgs) -> Result<i32> {
    let (local, remote) = parse_spec(&args.ports)?;
    let name = ctx.sprite(None)?;
    let client = ctx.client()?;
    // Fail now, not at the first connection, on an unknown sprite or a bad token.
    client.get_json(&sprite_path(&name), &[]).await?;
    let listener = TcpListener::bind(("127.0.0.1", local))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{local}"))?;
    let addr = listener.local_addr()?;
    println!("Forwarding {addr} -> {name}:{remote}");
    eprintln!("(Ctrl-C to stop)");
    let url = format!(
        "{}{}/proxy",
        ws_base(&client.settings().api_url)?,
        sprite_path(&name)
    );
    let client = std::sync::Arc::new(client);
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => r.context("accepting a connection")?,
            _ = int.recv() => return Ok(0),
            _ = term.recv() => return Ok(0),
        };
        let _ = tcp.set_nodelay(true);
        let (client, url, name) = (client.clone(), url.clone(), name.clone());
        tokio::spawn(async move {
            if let Err(e) = forward(&client, &url, &name, remote, tcp).await {
                eprintln!("{peer}: {e:#}");
            }
        });
    }
}

/// One local connection: open the proxy WebSocket, ask for the port, relay.
async fn forward(
    client: &Client,
    url: &str,
    name: &str,
    remote: u16,
    tcp: TcpStream,
) -> Result<()> {
    let mut ws = connect_url(client, name, url).await?;
    let init = serde_json::json!({"host": "localhost", "port": remote}).to_string();
    ws.send(Message::Text(init.into())).await?;
    tokio::time::timeout(CONNECTED_TIMEOUT, wait_connected(&mut ws, name, remote))
        .await
        .map_err(|_| anyhow!("wispd did not connect to {name}:{remote} in time"))??;
    relay(ws, tcp).await
}

async fn wait_connected(ws: &mut Ws, name: &str, remote: u16) -> Result<()> {
    while let Some(msg) = ws.next().await {
        match msg? {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap_or_default();
                if v["status"] == "connected" {
                    return Ok(());
                }
            }
            Message::Close(f) => {
                let why = f.map(|f| f.reason.to_string()).unwrap_or_default();
                bail!("cannot connect to {name}:{remote}: {why}");
            }
            _ => {}
        }
    }
    bail!("wispd closed the proxy connection to {name}:{remote}")
}

async fn relay(ws: Ws, tcp: TcpStream) -> Result<()> {
    let (mut tcp_r, mut tcp_w) = tcp.into_split();
    let (mut tx, mut rx) = ws.split();
    // A WebSocket cannot half-close: after the local side's EOF, keep relaying the target's
    // answer until it hangs up (or the local side goes away entirely).
    let up = async {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = tcp_r.read(&mut buf).await?;
            if n == 0 {
                return std::future::pending::<Result<()>>().await;
            }
            tx.send(Message::Binary(buf[..n].to_vec().into())).await?;
        }
    };
    let down = async {
        while let Some(msg) = rx.next().await {
            match msg? {
                Message::Binary(b) => tcp_w.write_all(&b).await?,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = tcp_w.shutdown().await;
        Ok::<_, anyhow::Error>(())
    };
    tokio::select! {
        r = up => r,
        r = down => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        assert_eq!(parse_spec("5432").unwrap(), (5432, 5432));
        assert_eq!(parse_spec("3001:3000").unwrap(), (3001, 3000));
        assert_eq!(parse_spec("0:80").unwrap(), (0, 80));
        for bad in ["", "0", "x", "1:0", "1:x", "70000", "1:2:3"] {
            assert!(parse_spec(bad).is_err(), "{bad}");
        }
    }
}

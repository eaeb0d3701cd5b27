//! The sprites' resolver: a small DNS forwarder on each slot's gateway address, port 53,
//! over UDP and TCP.
//!
//! Hand-rolled rather than hickory-server: all it has to do is read the question name, answer
//! REFUSED when the sprite's policy denies it, otherwise pass the query bytes unchanged to an
//! upstream and the answer bytes unchanged back (EDNS, DNSSEC bits and the client's id intact,
//! no cache whose semantics could differ from the upstream's), and read the A/AAAA records of
//! the answer so that the sprite may connect to them. That is a few hundred lines with no
//! dependency, against a resolver framework we would use a sliver of. The message codec is
//! `wisp_api::dns` (pure, fuzzed); this module is the sockets and the policy.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

use wisp_api::dns::{
    answer_addrs, error_reply, parse_query, HEADER, RCODE_FORMERR, RCODE_REFUSED, RCODE_SERVFAIL,
};

use super::slot::SlotInfo;
use super::Network;

const UDP_UPSTREAM_TIMEOUT: Duration = Duration::from_millis(2000);
const TCP_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);
/// A client's TCP connection may stay idle this long between queries.
const TCP_IDLE: Duration = Duration::from_secs(10);

fn unspecified_for(addr: &SocketAddr) -> SocketAddr {
    if addr.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    }
}

async fn forward_udp(query: &[u8], upstream: SocketAddr) -> io::Result<Vec<u8>> {
    let sock = UdpSocket::bind(unspecified_for(&upstream)).await?;
    sock.connect(upstream).await?;
    sock.send(query).await?;
    let mut buf = vec![0u8; 65535];
    let deadline = tokio::time::Instant::now() + UDP_UPSTREAM_TIMEOUT;
    loop {
        let n = tokio::time::timeout_at(deadline, sock.recv(&mut buf))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        // Same id, and an answer: anything else is noise (or spoofing); keep waiting.
        if n >= HEADER && buf[..2] == query[..2] && buf[2] & 0x80 != 0 {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn forward_tcp(query: &[u8], upstream: SocketAddr) -> io::Result<Vec<u8>> {
    let exchange = async {
        let mut s = TcpStream::connect(upstream).await?;
        let mut framed = (query.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(query);
        s.write_all(&framed).await?;
        let len = s.read_u16().await? as usize;
        let mut buf = vec![0u8; len];
        s.read_exact(&mut buf).await?;
        Ok(buf)
    };
    tokio::time::timeout(TCP_UPSTREAM_TIMEOUT, exchange)
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
}

/// Asks each upstream in turn (twice round for UDP).
async fn forward(query: &[u8], upstreams: &[SocketAddr], tcp: bool) -> Option<Vec<u8>> {
    let rounds = if tcp { 1 } else { 2 };
    for _ in 0..rounds {
        for up in upstreams {
            let r = if tcp {
                forward_tcp(query, *up).await
            } else {
                forward_udp(query, *up).await
            };
            match r {
                Ok(a) => return Some(a),
                Err(e) => tracing::debug!(upstream = %up, "DNS upstream: {e}"),
            }
        }
    }
    None
}

/// The answer to one query from the sprite of slot `index`; `None` drops it.
async fn handle(net: &Network, index: u32, query: &[u8], tcp: bool) -> Option<Vec<u8>> {
    let q = match parse_query(query) {
        Ok(q) => q,
        Err(true) => return Some(error_reply(query, HEADER, RCODE_FORMERR)),
        Err(false) => return None,
    };
    if !net.dns_allows(index, &q.name) {
        tracing::debug!(slot = index, name = %q.name, "DNS refused by policy");
        return Some(error_reply(query, q.end, RCODE_REFUSED));
    }
    let Some(answer) = forward(query, net.upstreams(), tcp).await else {
        return Some(error_reply(query, q.end, RCODE_SERVFAIL));
    };
    let addrs = answer_addrs(&answer);
    if !addrs.is_empty() {
        // Before the sprite sees the answer, so that its connect cannot race the allow set.
        match net.learn(index, &q.name, &addrs).await {
            Ok(true) => {}
            Ok(false) => return Some(error_reply(query, q.end, RCODE_REFUSED)),
            Err(e) => {
                tracing::warn!(slot = index, name = %q.name, "allowing resolved addresses: {e}");
                return Some(error_reply(query, q.end, RCODE_SERVFAIL));
            }
        }
    }
    Some(answer)
}

/// Binds the resolver on the slot's gateway (UDP and TCP port 53) and serves it until the
/// returned tasks are aborted.
pub fn serve(net: &Arc<Network>, slot: &SlotInfo, port: u16) -> io::Result<Vec<JoinHandle<()>>> {
    let addr = SocketAddr::from((slot.addrs.gateway, port));
    let udp = std::net::UdpSocket::bind(addr)?;
    udp.set_nonblocking(true)?;
    let udp = Arc::new(UdpSocket::from_std(udp)?);
    let tcp = std::net::TcpListener::bind(addr)?;
    tcp.set_nonblocking(true)?;
    let tcp = TcpListener::from_std(tcp)?;
    let sprite = IpAddr::V4(slot.addrs.sprite);
    let index = slot.index;
    let weak = Arc::downgrade(net);
    let u = tokio::spawn(serve_udp(weak.clone(), index, sprite, udp));
    let t = tokio::spawn(serve_tcp(weak, index, sprite, tcp));
    Ok(vec![u, t])
}

async fn serve_udp(net: Weak<Network>, index: u32, sprite: IpAddr, sock: Arc<UdpSocket>) {
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(slot = index, "DNS recv: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if peer.ip() != sprite {
            continue;
        }
        let Some(net) = net.upgrade() else {
            return;
        };
        let query = buf[..n].to_vec();
        let sock = sock.clone();
        tokio::spawn(async move {
            if let Some(answer) = handle(&net, index, &query, false).await {
                let _ = sock.send_to(&answer, peer).await;
            }
        });
    }
}

async fn serve_tcp(net: Weak<Network>, index: u32, sprite: IpAddr, listener: TcpListener) {
    loop {
        let (mut conn, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(slot = index, "DNS accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if peer.ip() != sprite {
            continue;
        }
        let net = net.clone();
        tokio::spawn(async move {
            loop {
                let Ok(Ok(len)) = tokio::time::timeout(TCP_IDLE, conn.read_u16()).await else {
                    return;
                };
                let mut query = vec![0u8; len as usize];
                if conn.read_exact(&mut query).await.is_err() {
                    return;
                }
                let Some(n) = net.upgrade() else {
                    return;
                };
                let Some(answer) = handle(&n, index, &query, true).await else {
                    return;
                };
                let mut framed = (answer.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&answer);
                if conn.write_all(&framed).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// `nameserver` lines of a resolv.conf, as upstream addresses (port 53).
pub fn nameservers(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
        })
        .filter_map(|ip| ip.split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// `1.2.3.4`, `1.2.3.4:5353`, `::1` or `[::1]:5353`.
pub fn parse_upstream(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("{s:?} is not an IP address or IP:PORT"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_forms() {
        assert_eq!(
            nameservers("# x\nnameserver 10.0.0.53\nnameserver fe80::1%eth0\nsearch a\n"),
            vec![
                "10.0.0.53:53".parse().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
        assert_eq!(
            parse_upstream("127.0.0.1:5353").unwrap(),
            "127.0.0.1:5353".parse().unwrap()
        );
        assert_eq!(parse_upstream("::1").unwrap(), "[::1]:53".parse().unwrap());
        assert!(parse_upstream("dns.google").is_err());
    }
}

//! The sprites' resolver: a small DNS forwarder on each slot's gateway address, port 53,
//! over UDP and TCP.
//!
//! Hand-rolled rather than hickory-server: all it has to do is read the question name, answer
//! REFUSED when the sprite's policy denies it, otherwise pass the query bytes unchanged to an
//! upstream and the answer bytes unchanged back (EDNS, DNSSEC bits and the client's id intact,
//! no cache whose semantics could differ from the upstream's), and read the A/AAAA records of
//! the answer so that the sprite may connect to them. That is a few hundred lines with no
//! dependency, against a resolver framework we would use a sliver of.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

use super::slot::SlotInfo;
use super::Network;

pub const RCODE_FORMERR: u8 = 1;
pub const RCODE_SERVFAIL: u8 = 2;
pub const RCODE_REFUSED: u8 = 5;
const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const HEADER: usize = 12;

const UDP_UPSTREAM_TIMEOUT: Duration = Duration::from_millis(2000);
const TCP_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);
/// A client's TCP connection may stay idle this long between queries.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// The question of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// Lower case, without the final dot (`""` for the root).
    pub name: String,
    pub qtype: u16,
    /// Offset just past the question section.
    pub end: usize,
}

/// Reads a (possibly compressed) name at `pos`; returns it and the offset after it.
fn read_name(msg: &[u8], mut pos: usize) -> Option<(String, usize)> {
    let mut labels: Vec<String> = Vec::new();
    let mut end = None;
    let mut jumps = 0;
    loop {
        let len = *msg.get(pos)? as usize;
        match len & 0xc0 {
            0x00 => {
                if len == 0 {
                    let after = end.unwrap_or(pos + 1);
                    return Some((labels.join("."), after));
                }
                let label = msg.get(pos + 1..pos + 1 + len)?;
                labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
                if labels.iter().map(|l| l.len() + 1).sum::<usize>() > 255 {
                    return None;
                }
                pos += 1 + len;
            }
            0xc0 => {
                let target = ((len & 0x3f) << 8) | *msg.get(pos + 1)? as usize;
                if end.is_none() {
                    end = Some(pos + 2);
                }
                jumps += 1;
                if jumps > 32 || target >= msg.len() {
                    return None;
                }
                pos = target;
            }
            _ => return None,
        }
    }
}

fn u16_at(msg: &[u8], pos: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*msg.get(pos)?, *msg.get(pos + 1)?]))
}

/// The single question of a query. `Err(true)`: a DNS header but no usable question
/// (answer FORMERR); `Err(false)`: not even a header (drop it).
pub fn parse_query(msg: &[u8]) -> Result<Question, bool> {
    if msg.len() < HEADER {
        return Err(false);
    }
    // A response sent to us, or anything but one question: refuse to guess.
    if msg[2] & 0x80 != 0 || u16_at(msg, 4) != Some(1) {
        return Err(true);
    }
    let (name, pos) = read_name(msg, HEADER).ok_or(true)?;
    let qtype = u16_at(msg, pos).ok_or(true)?;
    u16_at(msg, pos + 2).ok_or(true)?;
    Ok(Question {
        name,
        qtype,
        end: pos + 4,
    })
}

/// An answer with only a header (and the question, up to `question_end`) and `rcode`.
pub fn error_reply(query: &[u8], question_end: usize, rcode: u8) -> Vec<u8> {
    let keep = question_end.clamp(HEADER, query.len().max(HEADER));
    let mut r = query[..keep.min(query.len())].to_vec();
    r.resize(keep, 0);
    // QR, same opcode and RD; RA; rcode.
    r[2] = 0x80 | (r[2] & 0x79);
    r[3] = 0x80 | (rcode & 0x0f);
    let qd = if question_end > HEADER { 1u16 } else { 0 };
    r[4..6].copy_from_slice(&qd.to_be_bytes());
    r[6..12].fill(0);
    r
}

/// Every A and AAAA record in the answer section, with its TTL.
pub fn answer_addrs(msg: &[u8]) -> Vec<(IpAddr, u32)> {
    let mut out = Vec::new();
    let (Some(qd), Some(an)) = (u16_at(msg, 4), u16_at(msg, 6)) else {
        return out;
    };
    let mut pos = HEADER;
    for _ in 0..qd {
        let Some((_, p)) = read_name(msg, pos) else {
            return out;
        };
        pos = p + 4;
    }
    for _ in 0..an {
        let Some((_, p)) = read_name(msg, pos) else {
            return out;
        };
        let (Some(ty), Some(rdlen)) = (u16_at(msg, p), u16_at(msg, p + 8)) else {
            return out;
        };
        let ttl = match msg.get(p + 4..p + 8) {
            Some(b) => u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            None => return out,
        };
        let data = p + 10;
        let Some(rdata) = msg.get(data..data + rdlen as usize) else {
            return out;
        };
        match (ty, rdata.len()) {
            (TYPE_A, 4) => out.push((
                IpAddr::V4(Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3])),
                ttl,
            )),
            (TYPE_AAAA, 16) => {
                let a: [u8; 16] = rdata.try_into().unwrap_or([0; 16]);
                out.push((IpAddr::V6(Ipv6Addr::from(a)), ttl));
            }
            _ => {}
        }
        pos = data + rdlen as usize;
    }
    out
}

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

    /// A query for `name` of type `qtype` with id 0x1234 and RD set.
    pub fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.').filter(|l| !l.is_empty()) {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&1u16.to_be_bytes());
        q
    }

    #[test]
    fn questions() {
        let q = query("WWW.Example.com", TYPE_A);
        let parsed = parse_query(&q).unwrap();
        assert_eq!(parsed.name, "www.example.com");
        assert_eq!(parsed.qtype, TYPE_A);
        assert_eq!(parsed.end, q.len());
        assert_eq!(parse_query(&q[..5]), Err(false));
        assert_eq!(parse_query(&q[..q.len() - 1]), Err(true));
        let mut two = q.clone();
        two[5] = 2;
        assert_eq!(parse_query(&two), Err(true));
        // A pointer loop is refused, not followed forever.
        let mut looped = q[..12].to_vec();
        looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(parse_query(&looped), Err(true));
    }

    #[test]
    fn refusals_echo_the_question() {
        let q = query("denied.example", TYPE_AAAA);
        let end = parse_query(&q).unwrap().end;
        let r = error_reply(&q, end, RCODE_REFUSED);
        assert_eq!(&r[..2], &[0x12, 0x34]);
        assert_eq!(r[2] & 0x80, 0x80, "QR");
        assert_eq!(r[2] & 0x01, 0x01, "RD kept");
        assert_eq!(r[3] & 0x0f, RCODE_REFUSED);
        assert_eq!(&r[4..12], &[0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&r[12..], &q[12..]);
        let f = error_reply(&q[..12], HEADER, RCODE_FORMERR);
        assert_eq!(f.len(), 12);
        assert_eq!(&f[4..6], &[0, 0]);
    }

    #[test]
    fn addresses_of_an_answer() {
        // Question, then a CNAME (compressed owner), an A and an AAAA.
        let mut m = query("a.example", TYPE_A);
        m[2] = 0x81;
        m[3] = 0x80;
        m[7] = 3;
        let rr = |m: &mut Vec<u8>, ty: u16, ttl: u32, data: &[u8]| {
            m.extend_from_slice(&[0xc0, 12]);
            m.extend_from_slice(&ty.to_be_bytes());
            m.extend_from_slice(&1u16.to_be_bytes());
            m.extend_from_slice(&ttl.to_be_bytes());
            m.extend_from_slice(&(data.len() as u16).to_be_bytes());
            m.extend_from_slice(data);
        };
        rr(&mut m, 5, 60, &[1, b'b', 0xc0, 14]);
        rr(&mut m, TYPE_A, 300, &[198, 18, 0, 7]);
        let mut v6 = [0u8; 16];
        v6[0] = 0x20;
        v6[1] = 0x01;
        v6[15] = 9;
        rr(&mut m, TYPE_AAAA, 30, &v6);
        assert_eq!(
            answer_addrs(&m),
            vec![
                (IpAddr::V4(Ipv4Addr::new(198, 18, 0, 7)), 300),
                (IpAddr::V6(Ipv6Addr::from(v6)), 30)
            ]
        );
        // Truncated: whatever was whole.
        assert_eq!(answer_addrs(&m[..m.len() - 3]).len(), 1);
    }

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

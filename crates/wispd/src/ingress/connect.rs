//! TCP connections to ports inside a sprite, without any route to it: the socket is made in
//! the sprite's network namespace (`wisp_sys::netns`), so `127.0.0.1` is the sprite's own
//! loopback. Used by the sprite URL and the TCP proxy.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustix::fs::{openat2, Mode, OFlags, ResolveFlags, CWD};
use tokio::net::{TcpSocket, TcpStream};

use crate::runtime::{Runtime, RuntimeError};

/// How long a connect into a sprite may take (it is local: only a frozen or overloaded sprite
/// takes long).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The sprite's namespace could not be found (it is cold, or its keeper is gone).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("{host} does not resolve inside the sprite (use localhost, an IP address or a name from its /etc/hosts)")]
    Unresolved { host: String },
    #[error("connecting to {addr} in the sprite: {source}")]
    Io {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

impl ConnectError {
    /// Connection refused: nothing listens there.
    pub fn is_refused(&self) -> bool {
        matches!(self, ConnectError::Io { source, .. } if source.kind() == io::ErrorKind::ConnectionRefused)
    }
}

/// Connects to `addr` inside the sprite whose network namespace is `netns`.
pub async fn connect_in(netns: &Path, addr: SocketAddr) -> Result<TcpStream, ConnectError> {
    let io_err = |source| ConnectError::Io { addr, source };
    let path = netns.to_path_buf();
    let fd: OwnedFd =
        tokio::task::spawn_blocking(move || wisp_sys::netns::tcp_socket_in(&path, addr.is_ipv6()))
            .await
            .map_err(|e| io_err(io::Error::other(e)))?
            .map_err(io_err)?;
    let socket = TcpSocket::from_std_stream(std::net::TcpStream::from(fd));
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(addr)).await {
        Ok(r) => r.map_err(io_err)?,
        Err(_) => return Err(io_err(io::Error::new(io::ErrorKind::TimedOut, "timed out"))),
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Connects to the first of `addrs` that accepts, inside sprite `sprite_id` (which must be
/// running). The last error wins when none does.
pub async fn connect_sprite(
    runtime: &Arc<dyn Runtime>,
    sprite_id: &str,
    addrs: &[SocketAddr],
) -> Result<TcpStream, ConnectError> {
    let netns = runtime.netns_path(sprite_id).await?;
    let mut last = None;
    for addr in addrs {
        match connect_in(&netns, *addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or(ConnectError::Unresolved {
        host: "(no address)".into(),
    }))
}

/// Loopback addresses in the order they are tried for `localhost`.
pub fn localhost(port: u16) -> Vec<SocketAddr> {
    vec![
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
        SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
    ]
}

/// Resolves `host` as the sprite would without DNS: `localhost`, an IP literal (IPv6 with or
/// without brackets), or a name in the sprite's own `/etc/hosts` (read through `root`, the
/// sprite's root as seen from the host, without leaving it). DNS names are not resolved: the
/// sprite's resolver is not ours to query, and a name resolving to an address outside would
/// make this a way out of the sprite's network.
pub fn resolve(
    host: &str,
    port: u16,
    root: Option<&Path>,
) -> Result<Vec<SocketAddr>, ConnectError> {
    let h = host.trim();
    let bare = h
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(h);
    if h.is_empty() || h.eq_ignore_ascii_case("localhost") {
        return Ok(localhost(port));
    }
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let unresolved = || ConnectError::Unresolved {
        host: host.to_string(),
    };
    let hosts = root.and_then(read_hosts).ok_or_else(unresolved)?;
    let found = hosts_lookup(&hosts, h);
    if found.is_empty() {
        return Err(unresolved());
    }
    Ok(found
        .into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect())
}

/// `/etc/hosts` of a sprite (at most 64 KiB), resolved inside its root.
fn read_hosts(root: &Path) -> Option<String> {
    use std::io::Read;
    let dir = openat2(
        CWD,
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::empty(),
    )
    .ok()?;
    let fd = openat2(
        dir.as_fd(),
        "etc/hosts",
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV,
    )
    .ok()?;
    let file = std::fs::File::from(fd);
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    file.take(64 << 10).read_to_string(&mut text).ok()?;
    Some(text)
}

/// Addresses of `name` in a hosts file, in file order.
fn hosts_lookup(hosts: &str, name: &str) -> Vec<IpAddr> {
    hosts
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let ip: IpAddr = fields.next()?.parse().ok()?;
            fields.any(|n| n.eq_ignore_ascii_case(name)).then_some(ip)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_without_dns() {
        assert_eq!(resolve("localhost", 80, None).unwrap(), localhost(80));
        assert_eq!(resolve("", 80, None).unwrap(), localhost(80));
        assert_eq!(
            resolve("10.1.2.3", 5, None).unwrap(),
            vec!["10.1.2.3:5".parse().unwrap()]
        );
        assert_eq!(
            resolve("[::1]", 5, None).unwrap(),
            vec!["[::1]:5".parse().unwrap()]
        );
        assert_eq!(
            resolve("::1", 5, None).unwrap(),
            vec!["[::1]:5".parse().unwrap()]
        );
        assert!(matches!(
            resolve("example.com", 5, None),
            Err(ConnectError::Unresolved { .. })
        ));
    }

    #[test]
    fn hosts_file() {
        let h = "127.0.0.1 localhost\n127.0.1.1 box box.local # me\n# 1.2.3.4 box\n::1 ip6-localhost box\n";
        assert_eq!(
            hosts_lookup(h, "BOX"),
            vec![
                "127.0.1.1".parse::<IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
        assert!(hosts_lookup(h, "me").is_empty());
    }
}

//! Reaching a port inside another network namespace without any routing.
//!
//! A socket belongs to the network namespace it was *created* in, whichever thread later
//! connects, reads or writes it. Namespaces are per thread, so the socket is created on a
//! short-lived dedicated thread that `setns`es into the target namespace, makes the socket and
//! ends: no thread of the caller (a tokio worker or blocking-pool thread, say) ever changes
//! namespace, and the one that did never runs anything else. The connect itself then happens on
//! the caller's thread; `127.0.0.1` means the target namespace's own loopback.

use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{setns, CloneFlags};
use nix::sys::socket::{
    connect, getsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
    SockaddrIn6,
};

/// Runs `f` on a new thread whose network namespace is the one named by `netns` (a
/// `/proc/<pid>/ns/net` path or a bind mount of one). The thread ends when `f` returns, so it
/// is never reused in the wrong namespace; it also switches back to its original namespace
/// first (best effort: it exits either way).
pub fn in_netns<T, F>(netns: &Path, f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    // Opened here so that a missing namespace is an ordinary error on the caller's thread.
    let target = File::open(netns)?;
    let handle = std::thread::Builder::new()
        .name("wisp-netns".into())
        .spawn(move || -> io::Result<T> {
            let own = File::open("/proc/thread-self/ns/net")?;
            setns(target.as_fd(), CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            let out = f();
            if let Err(e) = setns(own.as_fd(), CloneFlags::CLONE_NEWNET) {
                // The thread ends right below, so nothing else ever runs on it.
                eprintln!("wisp-netns: cannot return to the original network namespace: {e}");
            }
            out
        })?;
    handle
        .join()
        .map_err(|_| io::Error::other("the network namespace thread panicked"))?
}

/// A new, unconnected, non-blocking TCP socket (IPv4 or IPv6) that lives in `netns`.
pub fn tcp_socket_in(netns: &Path, v6: bool) -> io::Result<OwnedFd> {
    in_netns(netns, move || {
        let family = if v6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        socket(
            family,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .map_err(io::Error::from)
    })
}

/// Connects to `addr` as seen from inside `netns` (blocking, at most `timeout`). The returned
/// stream is in blocking mode; for tokio, set it non-blocking and use
/// `tokio::net::TcpStream::from_std`.
pub fn connect_tcp_in(netns: &Path, addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let fd = tcp_socket_in(netns, addr.is_ipv6())?;
    connect_with_timeout(&fd, addr, timeout)?;
    let stream = TcpStream::from(fd);
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// Non-blocking connect of `fd`, waited for with `poll`.
fn connect_with_timeout(fd: &OwnedFd, addr: SocketAddr, timeout: Duration) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let res = match addr {
        SocketAddr::V4(a) => connect(fd.as_raw_fd(), &SockaddrIn::from(a)),
        SocketAddr::V6(a) => connect(fd.as_raw_fd(), &SockaddrIn6::from(a)),
    };
    match res {
        Ok(()) => return Ok(()),
        Err(Errno::EINPROGRESS) | Err(Errno::EINTR) => {}
        Err(e) => return Err(e.into()),
    }
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connecting to {addr} timed out"),
            ));
        }
        let ms =
            PollTimeout::try_from(left.max(Duration::from_millis(1))).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLOUT)];
        match poll(&mut fds, ms) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => break,
            Err(e) => return Err(e.into()),
        }
    }
    match getsockopt(fd, sockopt::SocketError)? {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// Our own namespace works like any other: connect to a listener on our loopback.
    #[test]
    fn connects_in_own_namespace() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.write_all(b"hi").unwrap();
        });
        let mut s =
            connect_tcp_in(Path::new("/proc/self/ns/net"), addr, Duration::from_secs(5)).unwrap();
        let mut buf = [0u8; 2];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");
        t.join().unwrap();
    }

    #[test]
    fn refused_and_missing_namespace() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let e = connect_tcp_in(Path::new("/proc/self/ns/net"), addr, Duration::from_secs(5))
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        let e = connect_tcp_in(
            Path::new("/nonexistent/ns/net"),
            addr,
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    /// The calling thread's namespace never changes.
    #[test]
    fn caller_namespace_unchanged() {
        let before = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        let _ = tcp_socket_in(Path::new("/proc/1/ns/net"), false);
        let after = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        assert_eq!(before, after);
    }
}

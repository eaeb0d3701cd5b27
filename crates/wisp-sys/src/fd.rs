//! File descriptor ownership and passing.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::cmsg_space;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

/// Takes ownership of a descriptor that the kernel just handed us (e.g. via SCM_RIGHTS).
fn own(fd: RawFd) -> OwnedFd {
    // SAFETY: only called on descriptors freshly received from recvmsg(SCM_RIGHTS), which
    // the kernel installed in our table for us alone; nothing else holds or closes them.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Sends `data` plus up to a few descriptors over a Unix socket in one message.
pub fn send_with_fds(
    sock: BorrowedFd<'_>,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
) -> nix::Result<usize> {
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let iov = [IoSlice::new(data)];
    if raw.is_empty() {
        sendmsg::<()>(sock.as_raw_fd(), &iov, &[], MsgFlags::MSG_NOSIGNAL, None)
    } else {
        let cmsg = [ControlMessage::ScmRights(&raw)];
        sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None)
    }
}

/// Receives one message and any descriptors that came with it (at most 8).
/// Returns `(bytes read, descriptors)`; zero bytes means the peer closed.
pub fn recv_with_fds(sock: BorrowedFd<'_>, buf: &mut [u8]) -> nix::Result<(usize, Vec<OwnedFd>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = cmsg_space!([RawFd; 8]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(list) = c {
            fds.extend(list.into_iter().map(own));
        }
    }
    Ok((msg.bytes, fds))
}

/// Closes every descriptor from `first` upwards except those in `keep`.
pub fn close_all_from(first: RawFd, keep: &[RawFd]) {
    let mut keep: Vec<RawFd> = keep.iter().copied().filter(|&k| k >= first).collect();
    keep.sort_unstable();
    let mut lo = first as u32;
    for k in keep {
        if (k as u32) > lo {
            close_range(lo, k as u32 - 1);
        }
        lo = k as u32 + 1;
    }
    close_range(lo, u32::MAX);
}

fn close_range(lo: u32, hi: u32) {
    // SAFETY: close_range only closes descriptors; callers use it right before exec or in a
    // freshly forked child where no Rust object still relies on the closed descriptors.
    unsafe {
        libc::syscall(libc::SYS_close_range, lo, hi, 0u32);
    }
}

/// Takes ownership of a descriptor inherited across exec, after checking it is open.
pub fn adopt_inherited(fd: RawFd) -> Option<OwnedFd> {
    if fd < 3 || nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).is_err() {
        return None;
    }
    // SAFETY: the descriptor is open (F_GETFD succeeded), was handed to this image on purpose
    // by its previous image, and nothing else in this fresh process refers to it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let _ = nix::fcntl::fcntl(
        fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    Some(owned)
}

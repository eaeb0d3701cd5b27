//! Process creation: fork, and clone into new namespaces.

use nix::sched::CloneFlags;
use nix::unistd::{ForkResult, Pid};

/// Result of [`fork_single_threaded`].
pub enum Forked {
    Parent(Pid),
    Child,
}

/// fork(2). Only for callers that are single-threaded at the time of the call (the sprite's
/// init, or the keeper before it starts any thread).
pub fn fork_single_threaded() -> nix::Result<Forked> {
    // SAFETY: the caller guarantees the process has one thread, so the child inherits no
    // locks held by other threads and may allocate freely before exec.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Parent { child } => Ok(Forked::Parent(child)),
        ForkResult::Child => Ok(Forked::Child),
    }
}

/// Starts `child` in a new process created with `flags` (namespaces) and SIGCHLD as its exit
/// signal. The child runs on its own 1 MiB stack and exits with the closure's return value.
/// Only for single-threaded callers, like [`fork_single_threaded`].
pub fn clone_into_namespaces(
    flags: CloneFlags,
    child: Box<dyn FnMut() -> isize + '_>,
) -> nix::Result<Pid> {
    let mut stack = vec![0u8; 1 << 20];
    // SAFETY: without CLONE_VM the child gets a copy of our address space, so this behaves
    // like fork with the closure as the child's entry point; the stack buffer lives until
    // clone returns in the parent (the child uses its own copy). The caller is single-
    // threaded, so the copied heap holds no lock owned by another thread.
    unsafe {
        nix::sched::clone(
            child,
            &mut stack,
            flags,
            Some(nix::sys::signal::Signal::SIGCHLD as i32),
        )
    }
}

/// Restores the default disposition of `sig` (for a child about to exec).
pub fn reset_signal(sig: nix::sys::signal::Signal) {
    // SAFETY: installing SIG_DFL registers no Rust handler, so no handler can run code that is
    // not async-signal-safe.
    let _ = unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigDfl) };
}

/// Ends the process at once, without running destructors or atexit handlers; for a forked
/// child whose exec failed (it must not flush or free the parent's copied state).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions; it never returns.
    unsafe { libc::_exit(code) }
}

/// Removes every capability not in `keep` from the calling thread's bounding set, so neither
/// this process nor anything it execs (setuid-root programs such as sudo included) can ever
/// hold them. Capability numbers are the kernel's (`linux/capability.h`).
pub fn restrict_bounding_set(keep: &[u32]) -> nix::Result<()> {
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    for cap in 0..=last {
        if keep.contains(&cap) {
            continue;
        }
        // SAFETY: PR_CAPBSET_DROP takes an integer capability number and touches no memory.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if r != 0 {
            let e = nix::errno::Errno::last();
            // EINVAL: a capability this kernel does not know; nothing to drop.
            if e != nix::errno::Errno::EINVAL {
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Installs a seccomp BPF program on the calling thread, without setting `no_new_privs`: the
/// caller must hold CAP_SYS_ADMIN (so setuid programs run later keep working). The filter is
/// inherited across fork and exec and can never be removed.
pub fn install_seccomp_filter(program: &[libc::sock_filter]) -> std::io::Result<()> {
    let len = u16::try_from(program.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "filter too long"))?;
    let prog = libc::sock_fprog {
        len,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at `program`, which outlives the call; the kernel copies the
    // instructions and validates them before installing, and reads no other memory.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &prog as *const libc::sock_fprog as libc::c_ulong,
            0,
            0,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

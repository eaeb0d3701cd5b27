//! The filesystem identity of the calling thread: fsuid, fsgid and supplementary groups.
//!
//! Linux keeps credentials per thread; glibc's `setfsuid`/`setgroups` wrappers broadcast a
//! change to every thread of the process (`setgroups`) or are at least not guaranteed to stay
//! per-thread, so these go straight to the raw syscalls, which change the calling thread only.
//! With an fsuid other than 0 the kernel also drops the filesystem capabilities
//! (`CAP_DAC_OVERRIDE`, `CAP_CHOWN`, `CAP_FOWNER`, ...) from the thread's effective set, so
//! a root daemon gets the ordinary permission checks of that user; switching back to fsuid 0
//! raises them again from the permitted set.
//!
//! [`FsIdentity::enter`] switches and returns a guard that switches back when dropped, on the
//! same thread (the guard is not `Send`). A thread pool thread therefore never keeps a
//! borrowed identity after its job.

use std::io;
use std::marker::PhantomData;

/// Who file operations should run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsIdentity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the primary group may be repeated here).
    pub groups: Vec<u32>,
}

/// Restores the thread's previous identity when dropped. Not `Send`: credentials are per
/// thread, so it must be dropped where it was made.
#[derive(Debug)]
#[must_use = "the identity is switched back as soon as the guard is dropped"]
pub struct FsIdGuard {
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    _not_send: PhantomData<*const ()>,
}

/// Sets the thread's fsuid; returns the previous one. The syscall reports no error, so the
/// result is checked by asking for the current value (an invalid id changes nothing and
/// returns the current one).
fn set_fsuid(uid: u32) -> io::Result<u32> {
    // SAFETY: setfsuid takes an integer and touches only the calling thread's credentials;
    // no memory is passed.
    let prev = unsafe { libc::syscall(libc::SYS_setfsuid, uid as libc::c_uint) } as u32;
    // SAFETY: as above; u32::MAX (-1) is never a valid id, so this only reads.
    let now = unsafe { libc::syscall(libc::SYS_setfsuid, u32::MAX as libc::c_uint) } as u32;
    if now == uid {
        Ok(prev)
    } else {
        Err(io::Error::from_raw_os_error(libc::EPERM))
    }
}

/// Like [`set_fsuid`] for the fsgid.
fn set_fsgid(gid: u32) -> io::Result<u32> {
    // SAFETY: setfsgid takes an integer and touches only the calling thread's credentials.
    let prev = unsafe { libc::syscall(libc::SYS_setfsgid, gid as libc::c_uint) } as u32;
    // SAFETY: as above; -1 only reads the current value.
    let now = unsafe { libc::syscall(libc::SYS_setfsgid, u32::MAX as libc::c_uint) } as u32;
    if now == gid {
        Ok(prev)
    } else {
        Err(io::Error::from_raw_os_error(libc::EPERM))
    }
}

/// The calling thread's supplementary groups.
fn thread_groups() -> io::Result<Vec<u32>> {
    // SAFETY: with size 0 getgroups writes nothing and returns the count.
    let n = unsafe {
        libc::syscall(
            libc::SYS_getgroups,
            0 as libc::c_int,
            std::ptr::null_mut::<libc::gid_t>(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut groups = vec![0 as libc::gid_t; n as usize];
    // SAFETY: the buffer holds exactly `n` gid_t values, the size we pass; the kernel writes
    // at most that many (EINVAL if the list grew meanwhile, which cannot happen for the
    // calling thread's own credentials).
    let got = unsafe {
        libc::syscall(
            libc::SYS_getgroups,
            groups.len() as libc::c_int,
            groups.as_mut_ptr(),
        )
    };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    groups.truncate(got as usize);
    Ok(groups)
}

/// Sets the calling thread's supplementary groups (the raw syscall: per thread, unlike
/// glibc's `setgroups`, which changes every thread of the process).
fn set_thread_groups(groups: &[u32]) -> io::Result<()> {
    let list: Vec<libc::gid_t> = groups.to_vec();
    // SAFETY: the pointer and length describe `list`, which lives until the call returns; the
    // kernel only reads it.
    let r = unsafe { libc::syscall(libc::SYS_setgroups, list.len(), list.as_ptr()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl FsIdentity {
    /// Switches the calling thread to this identity until the guard is dropped. Needs
    /// `CAP_SETUID` and `CAP_SETGID` (root).
    pub fn enter(&self) -> io::Result<FsIdGuard> {
        let old_groups = thread_groups()?;
        set_thread_groups(&self.groups)?;
        let old_gid = match set_fsgid(self.gid) {
            Ok(g) => g,
            Err(e) => {
                let _ = set_thread_groups(&old_groups);
                return Err(e);
            }
        };
        let old_uid = match set_fsuid(self.uid) {
            Ok(u) => u,
            Err(e) => {
                let _ = set_fsgid(old_gid);
                let _ = set_thread_groups(&old_groups);
                return Err(e);
            }
        };
        Ok(FsIdGuard {
            uid: old_uid,
            gid: old_gid,
            groups: old_groups,
            _not_send: PhantomData,
        })
    }
}

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAP_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Makes the calling thread's effective capabilities equal to its permitted ones (undoing
/// what a switch away from fsuid 0 dropped). Per thread, like every capability call.
fn raise_effective_caps() -> io::Result<()> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: the header and the two data words are valid, writable and of the layout
    // version 3 expects; pid 0 is the calling thread.
    if unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            data.as_mut_ptr(),
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    for d in &mut data {
        d.effective = d.permitted;
    }
    // SAFETY: as above; the kernel only reads the data, and refuses anything beyond the
    // permitted set.
    if unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl FsIdentity {
    /// Like [`FsIdentity::enter`], but the thread keeps every capability it holds (the
    /// kernel drops the filesystem ones on the switch; they are raised again). For root of
    /// a sprite with its own user namespace: host root acting through the sprite's id-mapped
    /// mounts must carry an id they can store (its own, 0, has no place there), yet keep
    /// root's power over the files.
    pub fn enter_keeping_caps(&self) -> io::Result<FsIdGuard> {
        let guard = self.enter()?;
        raise_effective_caps()?;
        Ok(guard)
    }
}

impl Drop for FsIdGuard {
    fn drop(&mut self) {
        // The uid first: going back to fsuid 0 restores the filesystem capabilities.
        let restored = set_fsuid(self.uid)
            .and_then(|_| set_fsgid(self.gid))
            .and_then(|_| set_thread_groups(&self.groups));
        if let Err(e) = restored {
            // A pool thread must never run later jobs under a borrowed identity, and there is
            // no caller to hand the error to: stop here.
            eprintln!("wisp-sys: cannot restore the thread's filesystem identity: {e}");
            std::process::abort();
        }
    }
}

/// The calling thread's current fsuid and fsgid (for tests and diagnostics).
pub fn current() -> (u32, u32) {
    // SAFETY: -1 is never a valid id, so these calls change nothing and return the current
    // values.
    let uid = unsafe { libc::syscall(libc::SYS_setfsuid, u32::MAX as libc::c_uint) } as u32;
    // SAFETY: as above.
    let gid = unsafe { libc::syscall(libc::SYS_setfsgid, u32::MAX as libc::c_uint) } as u32;
    (uid, gid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn switch_is_per_thread_and_restored() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let before = current();
        let id = FsIdentity {
            uid: 1000,
            gid: 1000,
            groups: vec![1000],
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            let g = id.enter().unwrap();
            tx.send((current(), thread_groups().unwrap())).unwrap();
            done_rx.recv().unwrap();
            drop(g);
            current()
        });
        let (inside, groups) = rx.recv().unwrap();
        assert_eq!(inside, (1000, 1000));
        assert_eq!(groups, vec![1000]);
        // This thread is untouched while the other one is switched.
        assert_eq!(current(), before);
        done_tx.send(()).unwrap();
        assert_eq!(t.join().unwrap(), before);
    }

    #[test]
    fn permissions_are_checked_for_the_fsuid() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = std::env::temp_dir().join(format!("wisp-fsid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("secret");
        std::fs::File::create(&secret)
            .unwrap()
            .write_all(b"x")
            .unwrap();
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let s2 = secret.clone();
        let denied = std::thread::spawn(move || {
            let _g = FsIdentity {
                uid: 1000,
                gid: 1000,
                groups: vec![],
            }
            .enter()
            .unwrap();
            std::fs::read(&s2).map_err(|e| e.kind())
        })
        .join()
        .unwrap();
        assert_eq!(denied, Err(io::ErrorKind::PermissionDenied));
        // Root again afterwards, on this thread and the other.
        assert_eq!(std::fs::read(&secret).unwrap(), b"x");
        // Keeping the capabilities: another owner, and root's access all the same.
        let s3 = secret.clone();
        let (read, who) = std::thread::spawn(move || {
            let _g = FsIdentity {
                uid: 1000,
                gid: 1000,
                groups: vec![],
            }
            .enter_keeping_caps()
            .unwrap();
            (std::fs::read(&s3).map_err(|e| e.kind()), current())
        })
        .join()
        .unwrap();
        assert_eq!(read, Ok(b"x".to_vec()));
        assert_eq!(who, (1000, 1000));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

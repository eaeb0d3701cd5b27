//! Id-mapped mounts: a view of a directory tree whose file owners are shifted through a user
//! namespace's mapping, so a sprite whose root is host uid N sees the root-owned base image,
//! and its own layer (stored with plain ids 0..65535 on disk), as owned by its own root.
//!
//! The kernel only idmaps a detached mount: `open_tree(OPEN_TREE_CLONE)` makes one, then
//! `mount_setattr(MOUNT_ATTR_IDMAP)` sets the mapping, then `move_mount` attaches it. rustix
//! has the first and the last; `mount_setattr` is a raw syscall here.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::NixPath;

const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const AT_RECURSIVE: libc::c_int = 0x8000;
const OPEN_TREE_CLONE: libc::c_uint = 1;

/// `struct mount_attr` of `linux/mount.h` (MOUNT_ATTR_SIZE_VER0).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// A detached copy of the tree at `path` whose ids are mapped through `userns`: a file owned
/// by id `k` on disk shows as the host id that `userns` maps `k` to, and a file created by
/// that host id is stored as `k`.
pub fn idmapped_tree(path: &Path, userns: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let tree = path.with_nix_path(|p| {
        // SAFETY: `p` is a NUL-terminated path that lives for the call; open_tree reads it and
        // returns a new descriptor or -1, and touches no other memory of ours.
        unsafe {
            libc::syscall(
                libc::SYS_open_tree,
                libc::AT_FDCWD,
                p.as_ptr(),
                OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
            )
        }
    })?;
    if tree < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: open_tree returned a new descriptor that nothing else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(tree as libc::c_int) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: `attr` is a valid mount_attr that outlives the call, and its size is passed
    // with it; the empty path with AT_EMPTY_PATH makes the call act on `tree` itself.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            (libc::AT_EMPTY_PATH | AT_RECURSIVE) as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(tree)
}

/// Attaches a detached mount (from [`idmapped_tree`]) on `target` in the caller's mount
/// namespace.
pub fn attach(tree: impl AsFd, target: &Path) -> io::Result<()> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    let r = target.with_nix_path(|t| {
        // SAFETY: both paths are NUL-terminated and live for the call; the kernel only reads
        // them. The source is the mount behind `tree` (empty path + F_EMPTY_PATH).
        unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                tree.as_fd().as_raw_fd(),
                c"".as_ptr(),
                libc::AT_FDCWD,
                t.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        }
    })?;
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

//! Paths inside a sprite, and the only way the fs API reaches a sprite's files.
//!
//! A request's path is first made absolute and clean *lexically* ([`clean`]: joined onto
//! `workingDir`, `.` and `..` folded, `..` stopping at `/`), the way Go's `path.Join` does. It
//! is then resolved by the kernel from a descriptor of the sprite's root with `openat2` and
//! `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`: absolute symlinks and `..` inside symlink
//! targets stay inside the sprite, and `/proc/<pid>/root`-style magic links are refused. Names
//! are acted on through a descriptor of their parent with `*at()` calls on the final
//! component, which is always a plain name (never `.` or `..`). No host path is ever built
//! from a request.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use rustix::fs::{openat2, Mode, OFlags, ResolveFlags, CWD};
use rustix::io::Errno;

use crate::runtime::idmap::IdMap;
use wisp_api::fs_path::{self, PathError};

use super::errors::FsError;

/// How often `openat2` is retried when it reports a concurrent rename (`EAGAIN`).
const EAGAIN_RETRIES: usize = 16;

pub use wisp_api::fs_path::{join, split};

/// `path` resolved against `working_dir` (default `/`) into a clean absolute path
/// ([`wisp_api::fs_path::clean`]).
pub fn clean(working_dir: Option<&str>, path: &str) -> Result<String, FsError> {
    fs_path::clean(working_dir, path).map_err(|e| match e {
        PathError::TooLong(p) => FsError::errno("resolve", &p, Errno::NAMETOOLONG),
        e @ (PathError::Empty | PathError::Nul) => FsError::bad(e.to_string()),
    })
}

/// A descriptor of a running sprite's root directory, as its processes see it.
#[derive(Debug)]
pub struct SpriteRoot {
    fd: OwnedFd,
    ids: IdMap,
}

impl SpriteRoot {
    /// Opens `root` (`/proc/<init>/root`, from [`crate::runtime::Runtime::root_dir`]) through
    /// a descriptor of its `/proc/<init>` directory, which names that one process even if the
    /// pid is reused later. The caller confirms afterwards that the sprite's init still has
    /// this pid (see `mod.rs`), so the descriptor cannot belong to another process.
    pub fn open(root: &Path) -> std::io::Result<SpriteRoot> {
        let (Some(proc_dir), Some(leaf)) = (root.parent(), root.file_name()) else {
            return Err(std::io::Error::other(format!(
                "unexpected sprite root path {}",
                root.display()
            )));
        };
        let pid_dir = rustix::fs::open(
            proc_dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let fd = rustix::fs::openat(
            &pid_dir,
            leaf,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let map_fd = rustix::fs::openat(
            &pid_dir,
            "uid_map",
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(map_fd), &mut text)?;
        let ids = IdMap::parse(&text).unwrap_or(IdMap::IDENTITY);
        Ok(SpriteRoot { fd, ids })
    }

    /// How the sprite's ids map to the host's.
    pub fn ids(&self) -> IdMap {
        self.ids
    }

    /// `openat2` of a clean absolute sprite path with the resolution rules above. The final
    /// component is followed if it is a symlink, unless `flags` holds `NOFOLLOW`.
    pub fn open_path(
        &self,
        op: &'static str,
        path: &str,
        flags: OFlags,
        mode: Mode,
    ) -> Result<OwnedFd, FsError> {
        open_in_root(&self.fd, path, flags, mode).map_err(|e| FsError::errno(op, path, e))
    }

    /// An `O_PATH` descriptor of `path` (final symlink followed).
    pub fn locate(&self, op: &'static str, path: &str) -> Result<OwnedFd, FsError> {
        self.open_path(op, path, OFlags::PATH, Mode::empty())
    }

    /// The parent directory of `path` (an `O_PATH` descriptor) and the final name. `/` has
    /// no parent: `EINVAL`-style 400.
    pub fn parent<'p>(
        &self,
        op: &'static str,
        path: &'p str,
    ) -> Result<(OwnedFd, &'p str), FsError> {
        let (parent, name) = split(path).ok_or_else(|| {
            FsError::bad(format!(
                "{op}: the sprite's root directory itself cannot be used here"
            ))
        })?;
        let fd = self.open_path(op, parent, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())?;
        Ok((fd, name))
    }
}

/// `openat2(dirfd, path, flags | O_CLOEXEC, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`,
/// retried on `EAGAIN`.
pub fn open_in_root(
    dirfd: &OwnedFd,
    path: &str,
    flags: OFlags,
    mode: Mode,
) -> Result<OwnedFd, Errno> {
    let rel = path.trim_start_matches('/');
    let rel = if rel.is_empty() { "." } else { rel };
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    let mut tries = 0;
    loop {
        match openat2(dirfd.as_fd(), rel, flags | OFlags::CLOEXEC, mode, resolve) {
            Err(Errno::AGAIN) if tries < EAGAIN_RETRIES => tries += 1,
            other => return other,
        }
    }
}

/// A new descriptor of the very file `fd` refers to (an `O_PATH` one, say), opened with
/// `flags` and checked against the calling thread's identity, through the process's own
/// `/proc/self/fd` link (the inode itself: no path is resolved again).
pub fn reopen(fd: &OwnedFd, flags: OFlags) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        CWD,
        format!("/proc/self/fd/{}", fd.as_raw_fd()),
        flags | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// `chmod` of the file `fd` refers to (`fchmod` does not take `O_PATH` descriptors), through
/// `/proc/self/fd` like [`reopen`]. Never called on a symlink.
pub fn chmod_fd(fd: &OwnedFd, mode: u32) -> Result<(), Errno> {
    rustix::fs::chmodat(
        CWD,
        format!("/proc/self/fd/{}", fd.as_raw_fd()),
        Mode::from_raw_mode(mode),
        rustix::fs::AtFlags::empty(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_their_api_form() {
        assert_eq!(clean(Some("/home/sprite"), "../x").unwrap(), "/home/x");
        for bad in ["", "a\0b"] {
            assert!(matches!(clean(None, bad), Err(FsError::Bad(_))), "{bad:?}");
        }
        assert_eq!(
            clean(None, &"a/".repeat(3000)).unwrap_err().raw(),
            Some(Errno::NAMETOOLONG)
        );
    }
}

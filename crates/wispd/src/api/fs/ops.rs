//! The blocking file operations behind list, delete, rename, chmod and chown. Each runs on a
//! pool thread as the request's identity (see `session.rs`) and takes clean absolute sprite
//! paths (see `resolve.rs`).
//!
//! Symlink policy: a path's *final* symlink is followed (inside the sprite) by list, chmod
//! and chown, like `ls`, `chmod` and `chown`; delete and rename act on the link itself, like
//! `rm` and `mv`. Recursive walks never follow a symlink: every directory below the top is
//! opened relative to its parent with `O_NOFOLLOW`, so a directory swapped for a symlink
//! mid-walk fails the open instead of leading elsewhere. Recursive chmod skips symlinks;
//! recursive chown changes the links themselves (`chown -R` does the same).

use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{
    fstat, openat, statat, unlinkat, AtFlags, Dir, FileType, Gid, Mode, OFlags, Stat, Uid,
};
use rustix::io::Errno;

use super::errors::FsError;
use super::resolve::{chmod_fd, join, reopen, split, SpriteRoot};
use super::types::{mode_string, ChmodItem, ChownItem, Entry, ListResponse};
use crate::api::error::ApiError;

/// Most entries one `list` answers with.
pub const MAX_LIST_ENTRIES: usize = 100_000;
/// Deepest directory nesting a recursive operation walks.
pub const MAX_DEPTH: usize = 256;

pub fn file_type(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

pub fn is_dir(st: &Stat) -> bool {
    file_type(st) == FileType::Directory
}

/// A directory's entry names (without `.` and `..`), sorted.
pub fn read_names(dir: &OwnedFd) -> Result<Vec<OsString>, Errno> {
    let mut d = Dir::read_from(dir)?;
    let mut names = Vec::new();
    while let Some(e) = d.read() {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsStr::from_bytes(n).to_os_string());
        }
    }
    names.sort();
    Ok(names)
}

/// The sprite path of `name` in the directory at `dir_path` (lossy for names that are not
/// UTF-8, which JSON cannot carry).
pub fn child_path(dir_path: &str, name: &OsStr) -> String {
    join(dir_path, &name.to_string_lossy())
}

fn too_deep(path: &str) -> FsError {
    FsError::bad(format!(
        "{path}: directory tree is deeper than {MAX_DEPTH} levels"
    ))
}

/// `list`: a file (or anything not a directory) lists as itself, a directory as its children
/// (and with `recursive`, everything below, parents before children). A recursive walk does
/// not descend into other filesystems mounted below the directory (like `find -xdev`) or into
/// subdirectories it may not read.
pub fn list(root: &SpriteRoot, path: &str, recursive: bool) -> Result<ListResponse, FsError> {
    let fd = root.locate("list", path)?;
    let st = fstat(&fd).map_err(|e| FsError::errno("stat", path, e))?;
    let mut entries = Vec::new();
    if is_dir(&st) {
        let dir = reopen(&fd, OFlags::RDONLY | OFlags::DIRECTORY)
            .map_err(|e| FsError::errno("list", path, e))?;
        list_dir(&dir, path, st.st_dev, recursive, 0, &mut entries)?;
    } else {
        let name = split(path).map(|(_, n)| n).unwrap_or("/");
        entries.push(Entry::new(name, path, &st));
    }
    Ok(ListResponse {
        path: path.to_string(),
        count: entries.len(),
        entries,
    })
}

fn list_dir(
    dir: &OwnedFd,
    path: &str,
    dev: u64,
    recursive: bool,
    depth: usize,
    out: &mut Vec<Entry>,
) -> Result<(), FsError> {
    if depth > MAX_DEPTH {
        return Err(too_deep(path));
    }
    let names = read_names(dir).map_err(|e| FsError::errno("list", path, e))?;
    for name in names {
        let st = match statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => continue, // removed meanwhile
            Err(e) => return Err(FsError::errno("stat", &child_path(path, &name), e)),
        };
        let cpath = child_path(path, &name);
        out.push(Entry::new(&name.to_string_lossy(), &cpath, &st));
        if out.len() > MAX_LIST_ENTRIES {
            return Err(FsError::bad(format!(
                "list {path}: more than {MAX_LIST_ENTRIES} entries; list a smaller directory"
            )));
        }
        if recursive && is_dir(&st) && st.st_dev as u64 == dev {
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            match openat(dir, &name, flags, Mode::empty()) {
                Ok(sub) => list_dir(&sub, &cpath, dev, true, depth + 1, out)?,
                // Unreadable, or swapped meanwhile: listed, not descended into.
                Err(Errno::ACCESS | Errno::PERM | Errno::NOENT | Errno::LOOP | Errno::NOTDIR) => {}
                Err(e) => return Err(FsError::errno("list", &cpath, e)),
            }
        }
    }
    Ok(())
}

/// `delete`: a file or symlink (the link itself), an empty directory, or with `recursive`
/// a whole tree. Returns the deleted paths, children before their directory.
pub fn delete(root: &SpriteRoot, path: &str, recursive: bool) -> Result<Vec<String>, FsError> {
    let (parent, name) = root.parent("delete", path)?;
    let st = statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| FsError::errno("delete", path, e))?;
    let mut deleted = Vec::new();
    if is_dir(&st) && recursive {
        remove_tree(&parent, OsStr::new(name), path, 0, &mut deleted)?;
    } else {
        let flags = if is_dir(&st) {
            AtFlags::REMOVEDIR
        } else {
            AtFlags::empty()
        };
        unlinkat(&parent, name, flags).map_err(|e| FsError::errno("delete", path, e))?;
        deleted.push(path.to_string());
    }
    Ok(deleted)
}

fn remove_tree(
    parent: &OwnedFd,
    name: &OsStr,
    path: &str,
    depth: usize,
    out: &mut Vec<String>,
) -> Result<(), FsError> {
    if depth > MAX_DEPTH {
        return Err(too_deep(path));
    }
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let dir = openat(parent, name, flags, Mode::empty())
        .map_err(|e| FsError::errno("delete", path, e))?;
    for child in read_names(&dir).map_err(|e| FsError::errno("delete", path, e))? {
        let cpath = child_path(path, &child);
        let st = match statat(&dir, &child, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(FsError::errno("delete", &cpath, e)),
        };
        if is_dir(&st) {
            remove_tree(&dir, &child, &cpath, depth + 1, out)?;
        } else {
            match unlinkat(&dir, &child, AtFlags::empty()) {
                Ok(()) => out.push(cpath),
                Err(Errno::NOENT) => {}
                Err(e) => return Err(FsError::errno("delete", &cpath, e)),
            }
        }
    }
    unlinkat(parent, name, AtFlags::REMOVEDIR).map_err(|e| FsError::errno("delete", path, e))?;
    out.push(path.to_string());
    Ok(())
}

/// `rename`: `rename(2)` of the names (a symlink moves as a link; an existing `dest` file or
/// empty directory is replaced).
pub fn rename(root: &SpriteRoot, source: &str, dest: &str) -> Result<(), FsError> {
    let (sp, sn) = root.parent("rename", source)?;
    let (dp, dn) = root.parent("rename", dest)?;
    rustix::fs::renameat(&sp, sn, &dp, dn).map_err(|e| {
        // The kernel does not say which side is missing; name the source unless it exists.
        let which = if e == Errno::NOENT && statat(&sp, sn, AtFlags::SYMLINK_NOFOLLOW).is_ok() {
            dest
        } else {
            source
        };
        FsError::errno("rename", which, e)
    })
}

/// `chmod` of `path` (its final symlink followed) and, with `recursive`, of everything below
/// it but symlinks, children before their directory.
pub fn chmod(
    root: &SpriteRoot,
    path: &str,
    mode: u32,
    recursive: bool,
) -> Result<Vec<ChmodItem>, FsError> {
    let fd = root.locate("chmod", path)?;
    let st = fstat(&fd).map_err(|e| FsError::errno("chmod", path, e))?;
    let mut out = Vec::new();
    if recursive && is_dir(&st) {
        let dir = reopen(&fd, OFlags::RDONLY | OFlags::DIRECTORY)
            .map_err(|e| FsError::errno("chmod", path, e))?;
        chmod_children(&dir, path, mode, 0, &mut out)?;
    }
    chmod_fd(&fd, mode).map_err(|e| FsError::errno("chmod", path, e))?;
    out.push(ChmodItem {
        path: path.to_string(),
        mode: mode_string(mode),
    });
    Ok(out)
}

fn chmod_children(
    dir: &OwnedFd,
    path: &str,
    mode: u32,
    depth: usize,
    out: &mut Vec<ChmodItem>,
) -> Result<(), FsError> {
    if depth > MAX_DEPTH {
        return Err(too_deep(path));
    }
    for name in read_names(dir).map_err(|e| FsError::errno("chmod", path, e))? {
        let cpath = child_path(path, &name);
        let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = match openat(dir, &name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(FsError::errno("chmod", &cpath, e)),
        };
        let st = fstat(&fd).map_err(|e| FsError::errno("chmod", &cpath, e))?;
        match file_type(&st) {
            FileType::Symlink => continue,
            FileType::Directory => {
                let sub = reopen(&fd, OFlags::RDONLY | OFlags::DIRECTORY)
                    .map_err(|e| FsError::errno("chmod", &cpath, e))?;
                chmod_children(&sub, &cpath, mode, depth + 1, out)?;
            }
            _ => {}
        }
        chmod_fd(&fd, mode).map_err(|e| FsError::errno("chmod", &cpath, e))?;
        out.push(ChmodItem {
            path: cpath,
            mode: mode_string(mode),
        });
    }
    Ok(())
}

/// `chown` of `path` (its final symlink followed) and, with `recursive`, of everything below
/// it (symlinks themselves, not their targets). `None` leaves that id as it is.
pub fn chown(
    root: &SpriteRoot,
    path: &str,
    uid: Option<u32>,
    gid: Option<u32>,
    recursive: bool,
) -> Result<Vec<ChownItem>, FsError> {
    let ids = root.ids();
    // The sprite's ids, as the host stores them.
    let host = |what: &str, id: Option<u32>| match id {
        None => Ok(None),
        Some(id) => ids.to_host(id).map(Some).ok_or_else(|| {
            FsError::Api(ApiError::bad_request(format!(
                "{what} {id} does not exist in the sprite (ids go up to {})",
                ids.count - 1
            )))
        }),
    };
    let (uid, gid) = (host("uid", uid)?, host("gid", gid)?);
    let fd = root.locate("chown", path)?;
    let st = fstat(&fd).map_err(|e| FsError::errno("chown", path, e))?;
    let mut out = Vec::new();
    if recursive && is_dir(&st) {
        let dir = reopen(&fd, OFlags::RDONLY | OFlags::DIRECTORY)
            .map_err(|e| FsError::errno("chown", path, e))?;
        chown_children(&dir, path, uid, gid, 0, &mut out)?;
    }
    out.push(chown_fd(&fd, path, uid, gid)?);
    for item in &mut out {
        item.uid = ids.to_sprite(item.uid);
        item.gid = ids.to_sprite(item.gid);
    }
    Ok(out)
}

fn chown_fd(
    fd: &OwnedFd,
    path: &str,
    uid: Option<u32>,
    gid: Option<u32>,
) -> Result<ChownItem, FsError> {
    rustix::fs::chownat(
        fd,
        "",
        uid.map(Uid::from_raw),
        gid.map(Gid::from_raw),
        AtFlags::EMPTY_PATH,
    )
    .map_err(|e| FsError::errno("chown", path, e))?;
    let st = fstat(fd).map_err(|e| FsError::errno("chown", path, e))?;
    Ok(ChownItem {
        path: path.to_string(),
        uid: st.st_uid,
        gid: st.st_gid,
    })
}

fn chown_children(
    dir: &OwnedFd,
    path: &str,
    uid: Option<u32>,
    gid: Option<u32>,
    depth: usize,
    out: &mut Vec<ChownItem>,
) -> Result<(), FsError> {
    if depth > MAX_DEPTH {
        return Err(too_deep(path));
    }
    for name in read_names(dir).map_err(|e| FsError::errno("chown", path, e))? {
        let cpath = child_path(path, &name);
        let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = match openat(dir, &name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(FsError::errno("chown", &cpath, e)),
        };
        let st = fstat(&fd).map_err(|e| FsError::errno("chown", &cpath, e))?;
        if is_dir(&st) {
            let sub = reopen(&fd, OFlags::RDONLY | OFlags::DIRECTORY)
                .map_err(|e| FsError::errno("chown", &cpath, e))?;
            chown_children(&sub, &cpath, uid, gid, depth + 1, out)?;
        }
        out.push(chown_fd(&fd, &cpath, uid, gid)?);
    }
    Ok(())
}

//! The blocking halves of `read` and `write`: opening a file to stream out, and the temporary
//! file an upload streams into, renamed over the target only once it is complete (a failed
//! or cut-off upload never leaves a partial file; its temporary file is removed).

use std::ffi::OsString;
use std::fs::File;
use std::os::fd::OwnedFd;

use axum::http::StatusCode;
use rustix::fs::{
    fstat, mkdirat, openat, renameat, statat, unlinkat, AtFlags, FileType, Mode, OFlags, Stat,
};
use rustix::io::Errno;

use super::errors::FsError;
use super::ops::{file_type, is_dir, MAX_DEPTH};
use super::resolve::{chmod_fd, reopen, split, SpriteRoot};
use super::types::{mode_string, WriteResponse};
use crate::api::error::ApiError;

/// Mode of directories that `mkdirParents` creates.
const NEW_DIR_MODE: u32 = 0o755;

/// A 4xx that is not an errno of ours, with its errno-style `code`.
pub fn coded(status: StatusCode, code: &str, msg: String) -> FsError {
    let mut e = ApiError::new(status, msg);
    e.body.code = Some(code.to_string());
    FsError::Api(e)
}

/// Opens a regular file for reading (its final symlink followed); returns it and its size.
/// Directories are `EISDIR`; devices, FIFOs and sockets are refused without being opened.
pub fn open_for_read(root: &SpriteRoot, path: &str) -> Result<(File, u64), FsError> {
    let fd = root.locate("read", path)?;
    let st = fstat(&fd).map_err(|e| FsError::errno("read", path, e))?;
    match file_type(&st) {
        FileType::RegularFile => {}
        FileType::Directory => return Err(FsError::errno("read", path, Errno::ISDIR)),
        _ => {
            return Err(coded(
                StatusCode::BAD_REQUEST,
                "EINVAL",
                format!("read {path}: not a regular file"),
            ))
        }
    }
    let file = reopen(&fd, OFlags::RDONLY).map_err(|e| FsError::errno("read", path, e))?;
    Ok((File::from(file), st.st_size.max(0) as u64))
}

/// The directory `path` (an `O_PATH` descriptor), created with its missing parents (mode
/// 0755, owned by the request's identity) like `mkdir -p`, at most `MAX_DEPTH - depth`
/// levels (`depth = MAX_DEPTH - 1`: `path` itself only, when its parent exists).
pub fn ensure_dir(root: &SpriteRoot, path: &str, depth: usize) -> Result<OwnedFd, FsError> {
    let open = || {
        root.open_path(
            "mkdir",
            path,
            OFlags::PATH | OFlags::DIRECTORY,
            Mode::empty(),
        )
    };
    match open() {
        Err(e) if e.raw() == Some(Errno::NOENT) && depth < MAX_DEPTH => {
            let Some((parent, name)) = split(path) else {
                return Err(e);
            };
            let pfd = ensure_dir(root, parent, depth + 1)?;
            match mkdirat(&pfd, name, Mode::from_raw_mode(NEW_DIR_MODE)) {
                Ok(()) => {
                    // The exact mode, whatever the daemon's umask.
                    let flags =
                        OFlags::PATH | OFlags::NOFOLLOW | OFlags::DIRECTORY | OFlags::CLOEXEC;
                    if let Ok(fd) = openat(&pfd, name, flags, Mode::empty()) {
                        let _ = chmod_fd(&fd, NEW_DIR_MODE);
                    }
                }
                Err(Errno::EXIST) => {}
                Err(e) => return Err(FsError::errno("mkdir", path, e)),
            }
            open()
        }
        other => other,
    }
}

/// An upload in progress: a temporary file next to the target. Dropped before
/// [`Upload::commit`], it removes the temporary file.
#[derive(Debug)]
pub struct Upload {
    parent: OwnedFd,
    tmp: OsString,
    name: String,
    path: String,
    existing: Option<Stat>,
    done: bool,
}

/// Starts an upload to `path`: its directory (created if `mkdir_parents`), then a new
/// temporary file in it, created as the request's identity.
pub fn begin_write(
    root: &SpriteRoot,
    path: &str,
    mkdir_parents: bool,
) -> Result<(Upload, File), FsError> {
    let (parent_path, name) =
        split(path).ok_or_else(|| FsError::errno("write", path, Errno::ISDIR))?;
    // Without mkdirParents only the file's own directory may be created, and only if its
    // parent exists: the SDKs' `mkdir(parents=False)` writes `DIR/.keep` that way and must
    // behave like mkdir(2).
    let depth = if mkdir_parents { 0 } else { MAX_DEPTH - 1 };
    let parent = ensure_dir(root, parent_path, depth)?;
    let existing = match statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if is_dir(&st) => return Err(FsError::errno("write", path, Errno::ISDIR)),
        Ok(st) => Some(st),
        Err(Errno::NOENT) => None,
        Err(e) => return Err(FsError::errno("write", path, e)),
    };
    let (tmp, file) = create_temp(&parent, path)?;
    Ok((
        Upload {
            parent,
            tmp,
            name: name.to_string(),
            path: path.to_string(),
            existing,
            done: false,
        },
        file,
    ))
}

/// A new empty file `.wisp-upload-<random>` (mode 0600) in `dir`.
pub fn create_temp(dir: &OwnedFd, path: &str) -> Result<(OsString, File), FsError> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut last = Errno::EXIST;
    for _ in 0..16 {
        let tmp = OsString::from(format!(".wisp-upload-{:016x}", rand::random::<u64>()));
        match openat(dir, &tmp, flags, Mode::from_raw_mode(0o600)) {
            Ok(fd) => return Ok((tmp, File::from(fd))),
            Err(Errno::EXIST) => last = Errno::EXIST,
            Err(e) => return Err(FsError::errno("write", path, e)),
        }
    }
    Err(FsError::errno("write", path, last))
}

impl Upload {
    /// Finishes the upload: data to disk, the requested mode, then the rename over the
    /// target. As root, a replaced file keeps its owner and group. Returns the answer and
    /// whether the file is new.
    pub fn commit(
        mut self,
        file: File,
        mode: u32,
        as_root: bool,
    ) -> Result<(WriteResponse, bool), FsError> {
        let err = |e: Errno| FsError::errno("write", &self.path, e);
        let io_err = |e: std::io::Error| {
            FsError::errno(
                "write",
                &self.path,
                Errno::from_io_error(&e).unwrap_or(Errno::IO),
            )
        };
        file.sync_all().map_err(io_err)?;
        if as_root {
            if let Some(st) = &self.existing {
                rustix::fs::fchown(
                    &file,
                    Some(rustix::fs::Uid::from_raw(st.st_uid)),
                    Some(rustix::fs::Gid::from_raw(st.st_gid)),
                )
                .map_err(err)?;
            }
        }
        // After any chown, which clears set-id bits.
        rustix::fs::fchmod(&file, Mode::from_raw_mode(mode)).map_err(err)?;
        renameat(&self.parent, &self.tmp, &self.parent, self.name.as_str()).map_err(err)?;
        self.done = true;
        let st = fstat(&file).map_err(err)?;
        Ok((
            WriteResponse {
                path: self.path.clone(),
                size: st.st_size.max(0) as u64,
                mode: mode_string(st.st_mode),
            },
            self.existing.is_none(),
        ))
    }

    pub fn path(&self) -> &str {
        &self.path
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.done {
            // The exact directory and a plain name of our own: safe with any credentials.
            let _ = unlinkat(&self.parent, &self.tmp, AtFlags::empty());
        }
    }
}

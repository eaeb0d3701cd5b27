//! `copy`: a file, or with `recursive` a directory tree, to an exact destination path.
//!
//! The source's final symlink is followed (like `cp`); below it nothing is followed: symlinks
//! are copied as symlinks (their target text unchanged; it is only ever resolved inside the
//! sprite), devices, FIFOs and sockets are skipped. A file lands through a temporary file and
//! a rename, replacing what was there; a directory is created or merged into. Without
//! `preserveAttrs` copies get the source's permission bits and the caller as owner; with it
//! also the source's owner (root only; otherwise left as is) and times.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};

use axum::http::StatusCode;
use rustix::fs::{
    fstat, mkdirat, openat, readlinkat, statat, symlinkat, unlinkat, AtFlags, FileType, Mode,
    OFlags, Stat, Timespec, Timestamps,
};
use rustix::io::Errno;

use super::errors::FsError;
use super::ops::{child_path, file_type, is_dir, read_names, MAX_DEPTH};
use super::resolve::{reopen, SpriteRoot};
use super::transfer::{coded, create_temp};
use super::types::{CopiedItem, CopyResponse};

struct Copier {
    preserve: bool,
    as_root: bool,
    copied: Vec<CopiedItem>,
    total_bytes: u64,
    /// Directories this copy created or merged into: never copied from (a destination inside
    /// its own source would otherwise recurse forever).
    made: HashSet<(u64, u64)>,
}

pub fn copy(
    root: &SpriteRoot,
    source: &str,
    dest: &str,
    recursive: bool,
    preserve: bool,
    as_root: bool,
) -> Result<CopyResponse, FsError> {
    let src = root.locate("copy", source)?;
    let st = fstat(&src).map_err(|e| FsError::errno("copy", source, e))?;
    let (dparent, dname) = root.parent("copy", dest)?;
    // Not following a final symlink: that would resolve outside the sprite root.
    if let Ok(dst) = statat(&dparent, dname, AtFlags::SYMLINK_NOFOLLOW) {
        if (dst.st_dev, dst.st_ino) == (st.st_dev, st.st_ino) {
            return Err(coded(
                StatusCode::BAD_REQUEST,
                "EINVAL",
                format!("copy {source}: source and destination are the same file"),
            ));
        }
    }
    let mut c = Copier {
        preserve,
        as_root,
        copied: Vec::new(),
        total_bytes: 0,
        made: HashSet::new(),
    };
    match file_type(&st) {
        FileType::Directory if !recursive => {
            return Err(coded(
                StatusCode::BAD_REQUEST,
                "EISDIR",
                format!("copy {source}: is a directory (set recursive to copy it)"),
            ))
        }
        FileType::Directory => {
            let dir = reopen(&src, OFlags::RDONLY | OFlags::DIRECTORY)
                .map_err(|e| FsError::errno("copy", source, e))?;
            c.copy_dir(&dir, &st, source, &dparent, OsStr::new(dname), dest, 0)?;
        }
        FileType::RegularFile => {
            let file =
                reopen(&src, OFlags::RDONLY).map_err(|e| FsError::errno("copy", source, e))?;
            c.copy_file(file, &st, source, &dparent, OsStr::new(dname), dest)?;
        }
        _ => {
            return Err(coded(
                StatusCode::BAD_REQUEST,
                "EINVAL",
                format!("copy {source}: not a regular file or directory"),
            ))
        }
    }
    Ok(CopyResponse {
        count: c.copied.len(),
        copied: c.copied,
        total_bytes: c.total_bytes,
    })
}

fn timestamps(st: &Stat) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: st.st_atime,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: Timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec as _,
        },
    }
}

impl Copier {
    fn record(&mut self, source: &str, dest: &str) {
        self.copied.push(CopiedItem {
            source: source.to_string(),
            dest: dest.to_string(),
        });
    }

    /// Owner (if preserving and allowed), mode, then times of a copy, via its descriptor.
    fn apply_attrs<Fd: AsFd>(&self, fd: Fd, st: &Stat, dest: &str) -> Result<(), FsError> {
        let err = |e| FsError::errno("copy", dest, e);
        if self.preserve && self.as_root {
            rustix::fs::fchown(
                &fd,
                Some(rustix::fs::Uid::from_raw(st.st_uid)),
                Some(rustix::fs::Gid::from_raw(st.st_gid)),
            )
            .map_err(err)?;
        }
        let bits = if self.preserve { 0o7777 } else { 0o777 };
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(st.st_mode & bits)).map_err(err)?;
        if self.preserve {
            rustix::fs::futimens(&fd, &timestamps(st)).map_err(err)?;
        }
        Ok(())
    }

    fn copy_file(
        &mut self,
        src: OwnedFd,
        st: &Stat,
        source: &str,
        dparent: &OwnedFd,
        dname: &OsStr,
        dest: &str,
    ) -> Result<(), FsError> {
        let (tmp, mut out) = create_temp(dparent, dest)?;
        let result = (|| {
            let mut input = File::from(src);
            let n = std::io::copy(&mut input, &mut out).map_err(|e| {
                let errno = Errno::from_io_error(&e).unwrap_or(Errno::IO);
                FsError::errno("copy", dest, errno)
            })?;
            self.apply_attrs(&out, st, dest)?;
            Ok::<u64, FsError>(n)
        })();
        let finish = result.and_then(|n| {
            rustix::fs::renameat(dparent, &tmp, dparent, dname)
                .map_err(|e| FsError::errno("copy", dest, e))?;
            Ok(n)
        });
        match finish {
            Ok(n) => {
                self.total_bytes += n;
                self.record(source, dest);
                Ok(())
            }
            Err(e) => {
                let _ = unlinkat(dparent, &tmp, AtFlags::empty());
                Err(e)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn copy_dir(
        &mut self,
        src: &OwnedFd,
        st: &Stat,
        source: &str,
        dparent: &OwnedFd,
        dname: &OsStr,
        dest: &str,
        depth: usize,
    ) -> Result<(), FsError> {
        if depth > MAX_DEPTH {
            return Err(FsError::bad(format!(
                "{source}: directory tree is deeper than {MAX_DEPTH} levels"
            )));
        }
        match mkdirat(dparent, dname, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(FsError::errno("copy", dest, e)),
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let out = openat(dparent, dname, flags, Mode::empty()).map_err(|e| {
            // An existing non-directory (or a symlink) in the way.
            let e = if e == Errno::LOOP { Errno::NOTDIR } else { e };
            FsError::errno("copy", dest, e)
        })?;
        let out_st = fstat(&out).map_err(|e| FsError::errno("copy", dest, e))?;
        self.made
            .insert((out_st.st_dev as u64, out_st.st_ino as u64));
        self.record(source, dest);
        for name in read_names(src).map_err(|e| FsError::errno("copy", source, e))? {
            let cs = child_path(source, &name);
            let cd = child_path(dest, &name);
            let cst = match statat(src, &name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(s) => s,
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(FsError::errno("copy", &cs, e)),
            };
            match file_type(&cst) {
                FileType::Directory => {
                    if self.made.contains(&(cst.st_dev as u64, cst.st_ino as u64)) {
                        continue;
                    }
                    let sub = openat(src, &name, flags, Mode::empty())
                        .map_err(|e| FsError::errno("copy", &cs, e))?;
                    self.copy_dir(&sub, &cst, &cs, &out, &name, &cd, depth + 1)?;
                }
                FileType::RegularFile => {
                    let rflags =
                        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
                    let f = openat(src, &name, rflags, Mode::empty())
                        .map_err(|e| FsError::errno("copy", &cs, e))?;
                    // Swapped for something else since the stat: skip it.
                    let fst = fstat(&f).map_err(|e| FsError::errno("copy", &cs, e))?;
                    if file_type(&fst) != FileType::RegularFile {
                        continue;
                    }
                    self.copy_file(f, &fst, &cs, &out, &name, &cd)?;
                }
                FileType::Symlink => {
                    let target = readlinkat(src, &name, Vec::new())
                        .map_err(|e| FsError::errno("copy", &cs, e))?;
                    match symlinkat(target.as_c_str(), &out, &name) {
                        Ok(()) => {}
                        Err(Errno::EXIST) => {
                            let existing = statat(&out, &name, AtFlags::SYMLINK_NOFOLLOW)
                                .map_err(|e| FsError::errno("copy", &cd, e))?;
                            if is_dir(&existing) {
                                return Err(FsError::errno("copy", &cd, Errno::ISDIR));
                            }
                            unlinkat(&out, &name, AtFlags::empty())
                                .map_err(|e| FsError::errno("copy", &cd, e))?;
                            symlinkat(target.as_c_str(), &out, &name)
                                .map_err(|e| FsError::errno("copy", &cd, e))?;
                        }
                        Err(e) => return Err(FsError::errno("copy", &cd, e)),
                    }
                    self.record(&cs, &cd);
                }
                _ => {}
            }
        }
        // Last, so that a read-only source directory does not stop its own copy.
        self.apply_attrs(&out, st, dest)
    }
}

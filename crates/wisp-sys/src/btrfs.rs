//! The handful of btrfs ioctls the storage pool needs: subvolumes, snapshots and simple quotas.
//!
//! Hand-rolled on purpose: the only maintained Rust binding (`btrfsutil`) links the C
//! `libbtrfsutil`, which is not on a default host, and it has no quota calls. Running the
//! `btrfs` tool instead costs a process start (~1–2 ms) on every checkpoint. The structures below
//! follow `include/uapi/linux/btrfs.h`; each size is checked at compile time.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

const MAGIC: u8 = 0x94;
/// `BTRFS_PATH_NAME_MAX`.
const NAME_MAX: usize = 4087;
/// `BTRFS_SUBVOL_RDONLY`.
const SUBVOL_RDONLY: u64 = 1 << 1;
/// `BTRFS_FIRST_FREE_OBJECTID`: the inode number of every subvolume's root directory.
const FIRST_FREE_OBJECTID: u64 = 256;

/// `struct btrfs_ioctl_vol_args`.
#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; NAME_MAX + 1],
}

/// `struct btrfs_ioctl_vol_args_v2` (the qgroup-inherit union left zero).
#[repr(C)]
struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; 4040],
}

/// `struct btrfs_ioctl_ino_lookup_args`.
#[repr(C)]
struct InoLookupArgs {
    treeid: u64,
    objectid: u64,
    name: [u8; 4080],
}

/// `struct btrfs_ioctl_quota_ctl_args`.
#[repr(C)]
struct QuotaCtlArgs {
    cmd: u64,
    status: u64,
}

/// `struct btrfs_ioctl_qgroup_limit_args` with its `struct btrfs_qgroup_limit` inlined.
#[repr(C)]
struct QgroupLimitArgs {
    qgroupid: u64,
    flags: u64,
    max_rfer: u64,
    max_excl: u64,
    rsv_rfer: u64,
    rsv_excl: u64,
}

const _: () = assert!(std::mem::size_of::<VolArgs>() == 4096);
const _: () = assert!(std::mem::size_of::<VolArgsV2>() == 4096);
const _: () = assert!(std::mem::size_of::<InoLookupArgs>() == 4096);
const _: () = assert!(std::mem::size_of::<QuotaCtlArgs>() == 16);
const _: () = assert!(std::mem::size_of::<QgroupLimitArgs>() == 48);

nix::ioctl_write_ptr!(ioc_subvol_create, MAGIC, 14, VolArgs);
nix::ioctl_write_ptr!(ioc_snap_destroy, MAGIC, 15, VolArgs);
nix::ioctl_readwrite!(ioc_ino_lookup, MAGIC, 18, InoLookupArgs);
nix::ioctl_write_ptr!(ioc_snap_create_v2, MAGIC, 23, VolArgsV2);
nix::ioctl_readwrite!(ioc_quota_ctl, MAGIC, 40, QuotaCtlArgs);
// The kernel header declares QGROUP_LIMIT with _IOR although it only reads the argument.
nix::ioctl_read!(ioc_qgroup_limit, MAGIC, 43, QgroupLimitArgs);

/// `BTRFS_QUOTA_CTL_ENABLE` and `BTRFS_QUOTA_CTL_ENABLE_SIMPLE_QUOTA`.
const QUOTA_CTL_ENABLE: u64 = 1;
const QUOTA_CTL_ENABLE_SIMPLE: u64 = 4;
/// `BTRFS_QGROUP_LIMIT_MAX_RFER`, `BTRFS_QGROUP_LIMIT_MAX_EXCL`.
const LIMIT_MAX_RFER: u64 = 1;
const LIMIT_MAX_EXCL: u64 = 2;

fn open_dir(path: &Path) -> io::Result<File> {
    File::open(path)
}

/// A single path component, NUL-free, that fits the kernel's name field.
fn component(name: &str, cap: usize) -> io::Result<CString> {
    let bad =
        name.is_empty() || name == "." || name == ".." || name.contains('/') || name.len() >= cap;
    if bad {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid subvolume name {name:?}"),
        ));
    }
    CString::new(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

fn fill(dst: &mut [u8], name: &CString) {
    let b = name.as_bytes();
    dst[..b.len()].copy_from_slice(b);
}

/// Creates an empty subvolume `parent/name`.
pub fn create_subvolume(parent: &Path, name: &str) -> io::Result<()> {
    let dir = open_dir(parent)?;
    let name = component(name, NAME_MAX + 1)?;
    let mut args = VolArgs {
        fd: 0,
        name: [0; NAME_MAX + 1],
    };
    fill(&mut args.name, &name);
    // SAFETY: `dir` is an open descriptor for the whole call and `args` is a fully
    // initialised `btrfs_ioctl_vol_args` with a NUL-terminated name, as the ioctl expects.
    unsafe { ioc_subvol_create(dir.as_raw_fd(), &args) }?;
    Ok(())
}

/// Snapshots the subvolume at `source` as `parent/name`, read-only when asked.
pub fn snapshot(source: &Path, parent: &Path, name: &str, readonly: bool) -> io::Result<()> {
    let src = open_dir(source)?;
    let dir = open_dir(parent)?;
    let name = component(name, 4040)?;
    let mut args = VolArgsV2 {
        fd: i64::from(src.as_raw_fd()),
        transid: 0,
        flags: if readonly { SUBVOL_RDONLY } else { 0 },
        unused: [0; 4],
        name: [0; 4040],
    };
    fill(&mut args.name, &name);
    // SAFETY: both descriptors stay open for the call; `args` is a fully initialised
    // `btrfs_ioctl_vol_args_v2` whose `fd` names the source subvolume and whose name is
    // NUL-terminated. No qgroup-inherit pointer is passed (flag unset, union zeroed).
    unsafe { ioc_snap_create_v2(dir.as_raw_fd(), &args) }?;
    Ok(())
}

/// Deletes the subvolume `parent/name` (read-only snapshots included), whatever it holds.
/// The space comes back asynchronously, when the cleaner gets to it.
pub fn delete_subvolume(parent: &Path, name: &str) -> io::Result<()> {
    let dir = open_dir(parent)?;
    let name = component(name, NAME_MAX + 1)?;
    let mut args = VolArgs {
        fd: 0,
        name: [0; NAME_MAX + 1],
    };
    fill(&mut args.name, &name);
    // SAFETY: as in `create_subvolume`.
    unsafe { ioc_snap_destroy(dir.as_raw_fd(), &args) }?;
    Ok(())
}

/// Whether `path` is the root of a subvolume (its inode number is 256 on btrfs).
pub fn is_subvolume(path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::symlink_metadata(path)?;
    Ok(md.is_dir() && md.ino() == FIRST_FREE_OBJECTID && is_btrfs(path)?)
}

/// The id of the subvolume that holds `path`.
pub fn subvolume_id(path: &Path) -> io::Result<u64> {
    let f = open_dir(path)?;
    let mut args = InoLookupArgs {
        treeid: 0,
        objectid: FIRST_FREE_OBJECTID,
        name: [0; 4080],
    };
    // SAFETY: `f` is open for the call and `args` is a fully initialised
    // `btrfs_ioctl_ino_lookup_args`; the kernel writes `treeid` and `name` in place.
    unsafe { ioc_ino_lookup(f.as_raw_fd(), &mut args) }?;
    Ok(args.treeid)
}

/// Which quota accounting is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaMode {
    /// Simple quotas (Linux 6.7+): extents are charged to the subvolume that wrote them;
    /// snapshots stay cheap.
    Simple,
    /// Full qgroups: exact shared/exclusive accounting, but every snapshot costs tens of ms.
    Full,
}

/// Turns quotas on for the filesystem holding `path`: simple quotas where the kernel has
/// them, full qgroups otherwise. Idempotent.
pub fn enable_quota(path: &Path) -> io::Result<QuotaMode> {
    let f = open_dir(path)?;
    let ctl = |cmd: u64| -> io::Result<()> {
        let mut args = QuotaCtlArgs { cmd, status: 0 };
        // SAFETY: `f` is open for the call; `args` is a fully initialised
        // `btrfs_ioctl_quota_ctl_args`.
        unsafe { ioc_quota_ctl(f.as_raw_fd(), &mut args) }?;
        Ok(())
    };
    match ctl(QUOTA_CTL_ENABLE_SIMPLE) {
        Ok(()) => Ok(QuotaMode::Simple),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            ctl(QUOTA_CTL_ENABLE)?;
            Ok(QuotaMode::Full)
        }
        Err(e) => Err(e),
    }
}

/// Limits the subvolume `subvol_id` (qgroup `0/<id>`) to `bytes`, or lifts the limit.
/// Under simple quotas the referenced and exclusive counts are the same: what the
/// subvolume itself wrote. Under full qgroups the exclusive count is used, so data shared
/// with snapshots is not charged twice.
pub fn limit_subvolume(
    path: &Path,
    subvol_id: u64,
    bytes: Option<u64>,
    mode: QuotaMode,
) -> io::Result<()> {
    let f = open_dir(path)?;
    let flag = match mode {
        QuotaMode::Simple => LIMIT_MAX_RFER,
        QuotaMode::Full => LIMIT_MAX_EXCL,
    };
    // `u64::MAX` with the flag set means "no limit" to the kernel.
    let value = bytes.unwrap_or(u64::MAX);
    let mut args = QgroupLimitArgs {
        qgroupid: subvol_id,
        flags: flag,
        max_rfer: if flag == LIMIT_MAX_RFER { value } else { 0 },
        max_excl: if flag == LIMIT_MAX_EXCL { value } else { 0 },
        rsv_rfer: 0,
        rsv_excl: 0,
    };
    // SAFETY: `f` is open for the call; `args` is a fully initialised
    // `btrfs_ioctl_qgroup_limit_args` (qgroupid 0 would mean "the subvolume of f", so the
    // id is always passed explicitly).
    unsafe { ioc_qgroup_limit(f.as_raw_fd(), &mut args) }?;
    Ok(())
}

/// Whether `path` is on btrfs.
pub fn is_btrfs(path: &Path) -> io::Result<bool> {
    let st = nix::sys::statfs::statfs(path).map_err(io::Error::from)?;
    Ok(st.filesystem_type() == nix::sys::statfs::BTRFS_SUPER_MAGIC)
}

/// Flushes every dirty page of the filesystem holding `path` (`syncfs(2)`).
pub fn sync_filesystem(path: &Path) -> io::Result<()> {
    let f = open_dir(path)?;
    nix::unistd::syncfs(f.as_raw_fd()).map_err(io::Error::from)
}

//! Finding or making the btrfs the pool lives on.
//!
//! If the data dir is on btrfs, the pool is a plain directory in it. Otherwise the pool is a
//! sparse file, `<data-dir>/pool.img`, formatted once and loop-mounted at `<data-dir>/pool`
//! on every start (a reboot unmounts it; a restart of wispd finds it still mounted).

use std::path::{Path, PathBuf};
use std::process::Command;

use wisp_sys::btrfs::{self, QuotaMode};

use super::{BtrfsPool, StorageError};

/// Default size of a new pool file: the hosted product provisions 100 GB per sprite; a pool
/// is shared, so take the smaller of that and 90% of the free space of the data dir's disk.
const DEFAULT_MAX_SIZE: u64 = 100 << 30;
const MIN_SIZE: u64 = 1 << 30;

#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub data_dir: PathBuf,
    /// Size of a new pool file; `None` for the default. Ignored once the file exists.
    pub size: Option<u64>,
    /// Limit of each sprite's live layer.
    pub sprite_quota: Option<u64>,
}

/// Opens the pool, formatting and mounting it when needed, and turns quotas on.
pub fn open_pool(cfg: &PoolConfig) -> Result<BtrfsPool, StorageError> {
    let root = cfg.data_dir.join("pool");
    let native = btrfs::is_btrfs(&cfg.data_dir)
        .map_err(|e| StorageError::io(format!("statfs {}", cfg.data_dir.display()), e))?;
    std::fs::create_dir_all(&root)
        .map_err(|e| StorageError::io(format!("creating {}", root.display()), e))?;
    if !native && !is_mount_point(&root)? {
        let image = cfg.data_dir.join("pool.img");
        if !image.exists() {
            make_image(
                &image,
                cfg.size.unwrap_or_else(|| default_size(&cfg.data_dir)),
            )?;
        }
        mount_image(&image, &root)?;
    }
    if !btrfs::is_btrfs(&root).map_err(|e| StorageError::io("statfs pool", e))? {
        return Err(StorageError::Setup(format!(
            "{} is mounted but is not btrfs; unmount it and start again",
            root.display()
        )));
    }
    let quota = match btrfs::enable_quota(&root) {
        Ok(mode) => Some(mode),
        Err(e) => {
            tracing::warn!("btrfs quotas unavailable, disk limits are not enforced: {e}");
            None
        }
    };
    if quota == Some(QuotaMode::Full) {
        tracing::warn!(
            "this kernel has no btrfs simple quotas (Linux 6.7+): using full qgroups, which make \
             every checkpoint tens of milliseconds slower"
        );
    }
    tracing::info!(pool = %root.display(), native, ?quota, "storage pool ready");
    BtrfsPool::new(root, quota, cfg.sprite_quota)
}

fn default_size(data_dir: &Path) -> u64 {
    let free = nix::sys::statvfs::statvfs(data_dir)
        .map(|s| s.blocks_available() * s.fragment_size())
        .unwrap_or(DEFAULT_MAX_SIZE);
    (free / 10 * 9).clamp(MIN_SIZE, DEFAULT_MAX_SIZE)
}

fn is_mount_point(path: &Path) -> Result<bool, StorageError> {
    crate::fsutil::is_mount_point(path)
        .map_err(|e| StorageError::io(format!("checking whether {} is a mount", path.display()), e))
}

fn run(cmd: &mut Command, what: &str, hint: &str) -> Result<(), StorageError> {
    let out = cmd.output().map_err(|e| {
        StorageError::Setup(format!(
            "{what}: cannot run {:?} ({e}); {hint}",
            cmd.get_program()
        ))
    })?;
    if !out.status.success() {
        return Err(StorageError::Setup(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Makes a sparse file of `size` bytes holding an empty btrfs: first under a temporary name,
/// so that a crash never leaves a half-formatted pool under the real one.
fn make_image(image: &Path, size: u64) -> Result<(), StorageError> {
    let tmp = image.with_extension("img.new");
    let _ = std::fs::remove_file(&tmp);
    let f = std::fs::File::create(&tmp)
        .map_err(|e| StorageError::io(format!("creating {}", tmp.display()), e))?;
    f.set_len(size)
        .map_err(|e| StorageError::io(format!("sizing {}", tmp.display()), e))?;
    drop(f);
    tracing::info!(image = %image.display(), size, "formatting a new storage pool");
    run(
        Command::new("mkfs.btrfs")
            .args(["-q", "-f", "-L", "wisp-pool"])
            .arg(&tmp),
        "formatting the storage pool",
        "install btrfs-progs (apt-get install btrfs-progs)",
    )?;
    std::fs::rename(&tmp, image)
        .map_err(|e| StorageError::io(format!("renaming {}", tmp.display()), e))
}

fn mount_image(image: &Path, root: &Path) -> Result<(), StorageError> {
    // discard=async punches freed space back out of the sparse file; the loop device goes
    // away by itself when the pool is unmounted (mount sets autoclear).
    run(
        Command::new("mount")
            .args(["-t", "btrfs", "-o", "loop,noatime,discard=async"])
            .arg(image)
            .arg(root),
        "mounting the storage pool",
        "mount(8) from util-linux is needed",
    )
}

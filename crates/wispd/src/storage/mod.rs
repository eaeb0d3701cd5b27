//! Where sprites' writable layers and checkpoints live: a copy-on-write storage pool.
//!
//! [`StoragePool`] is the seam; [`BtrfsPool`] is the one backend today (one subvolume per
//! sprite's live layer, one read-only snapshot per checkpoint). A microVM runtime will want
//! block images instead: a second backend implements the same trait. Why btrfs, and the
//! numbers behind it, are in ARCHITECTURE.md ("Storage").
//!
//! Every method is synchronous (ioctls and renames that take milliseconds) and idempotent, so
//! that crash recovery can replay it; async callers use `spawn_blocking`.

mod btrfs_pool;
mod pool_mount;
pub mod views;

use std::io;
use std::path::PathBuf;

pub use btrfs_pool::BtrfsPool;
pub use pool_mount::{open_pool, PoolConfig};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The pool (or the sprite's quota) has no room left: HTTP 507.
    #[error("the storage pool is full ({0}); delete checkpoints or sprites, or grow the pool")]
    Full(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("storage pool setup: {0}")]
    Setup(String),
}

impl StorageError {
    /// Classifies an I/O error: no space and quota exceeded become [`StorageError::Full`].
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        let what = what.into();
        match source.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => {
                StorageError::Full(format!("{what}: {source}"))
            }
            Some(libc::ENOENT) => StorageError::NotFound(what),
            _ => StorageError::Io { what, source },
        }
    }
}

/// The overlay directories of a sprite's live layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerDirs {
    pub upper: PathBuf,
    pub work: PathBuf,
}

/// A copy-on-write home for sprites' writable layers and their checkpoints. Sprite and
/// checkpoint ids are validated by the caller (they are path components here).
pub trait StoragePool: Send + Sync + std::fmt::Debug + 'static {
    /// The overlay upper and work dirs of the sprite's live layer.
    fn layer_dirs(&self, sprite_id: &str) -> LayerDirs;
    /// Makes an empty live layer (a no-op if it exists), limited to the pool's per-sprite
    /// quota.
    fn create(&self, sprite_id: &str) -> Result<(), StorageError>;
    /// [`StorageError::Full`] when the pool is down to its reserve: new sprites, forks and
    /// user checkpoints stop there, so that the space left keeps restores and deletes (which
    /// free space) working.
    fn check_space(&self) -> Result<(), StorageError>;
    /// Whether the sprite has a live layer.
    fn exists(&self, sprite_id: &str) -> bool;
    /// Flushes the live layer's dirty data, so that a following checkpoint is quick.
    fn sync(&self, sprite_id: &str) -> Result<(), StorageError>;
    /// Takes a read-only checkpoint of the live layer. The caller makes the layer consistent
    /// (processes frozen or stopped). A no-op if the checkpoint exists.
    fn checkpoint(&self, sprite_id: &str, checkpoint_id: &str) -> Result<(), StorageError>;
    fn has_checkpoint(&self, sprite_id: &str, checkpoint_id: &str) -> bool;
    /// The upper dir as it was when the checkpoint was taken (read-only).
    fn checkpoint_upper(&self, sprite_id: &str, checkpoint_id: &str) -> PathBuf;
    /// Replaces the live layer by a writable copy of the checkpoint. The sprite must not run.
    /// Replaying it after a crash gives the same result.
    fn restore(&self, sprite_id: &str, checkpoint_id: &str) -> Result<(), StorageError>;
    /// Makes `new_id`'s live layer a writable copy of `src_id`'s checkpoint; the two share
    /// unchanged data and are independent afterwards.
    fn fork(&self, src_id: &str, checkpoint_id: &str, new_id: &str) -> Result<(), StorageError>;
    /// Deletes a checkpoint; a no-op if it does not exist.
    fn delete_checkpoint(&self, sprite_id: &str, checkpoint_id: &str) -> Result<(), StorageError>;
    /// Deletes the live layer and every checkpoint; a no-op if nothing is left.
    fn destroy(&self, sprite_id: &str) -> Result<(), StorageError>;
    /// Ids of the sprites that have anything in the pool (for leak checks at start).
    fn sprite_ids(&self) -> Result<Vec<String>, StorageError>;
    /// Frees what interrupted operations left behind (replaced layers awaiting deletion).
    fn collect_garbage(&self) -> Result<(), StorageError>;
}

//! [`BtrfsPool`]: live layers as btrfs subvolumes, checkpoints as read-only snapshots.
//!
//! ```text
//! <root>/sprites/<sprite-id>/live                  subvolume: upper/ and work/ of the overlay
//! <root>/sprites/<sprite-id>/checkpoints/<id>      read-only snapshot of live
//! <root>/trash/<name>                              replaced layers, deleted in the background
//! ```
//!
//! A snapshot is atomic, so a checkpoint either exists whole or not at all. Replacing the
//! live layer (restore, fork) goes through a new name and a rename, so a crash leaves either
//! the old layer, the new one, or none (then a replay makes the new one).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use wisp_sys::btrfs::{self, QuotaMode};

use super::{LayerDirs, StorageError, StoragePool};

#[derive(Debug)]
pub struct BtrfsPool {
    root: PathBuf,
    quota: Option<QuotaMode>,
    /// Per-sprite limit of the live layer's own writes.
    sprite_quota: Option<u64>,
}

const LIVE: &str = "live";
const LIVE_NEW: &str = "live.new";

impl BtrfsPool {
    /// A pool rooted at `root`, a directory on a mounted btrfs. `quota` says which quota
    /// accounting is on (`None`: limits are not enforced); `sprite_quota` limits each live
    /// layer.
    pub fn new(
        root: PathBuf,
        quota: Option<QuotaMode>,
        sprite_quota: Option<u64>,
    ) -> Result<Self, StorageError> {
        for dir in [root.join("sprites"), root.join("trash")] {
            fs::create_dir_all(&dir)
                .map_err(|e| StorageError::io(format!("creating {}", dir.display()), e))?;
        }
        Ok(BtrfsPool {
            root,
            quota,
            sprite_quota,
        })
    }

    fn sprite_dir(&self, id: &str) -> PathBuf {
        self.root.join("sprites").join(id)
    }

    fn live(&self, id: &str) -> PathBuf {
        self.sprite_dir(id).join(LIVE)
    }

    fn checkpoints_dir(&self, id: &str) -> PathBuf {
        self.sprite_dir(id).join("checkpoints")
    }

    fn checkpoint_path(&self, id: &str, ckpt: &str) -> PathBuf {
        self.checkpoints_dir(id).join(ckpt)
    }

    fn ensure_dirs(&self, id: &str) -> Result<(), StorageError> {
        let dir = self.checkpoints_dir(id);
        fs::create_dir_all(&dir)
            .map_err(|e| StorageError::io(format!("creating {}", dir.display()), e))
    }

    /// Makes `upper/` and `work/` in a live layer (a crash can leave a bare subvolume).
    fn ensure_layer_dirs(&self, id: &str) -> Result<(), StorageError> {
        let d = self.layer_dirs(id);
        for dir in [&d.upper, &d.work] {
            match fs::create_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(StorageError::io(format!("creating {}", dir.display()), e));
                }
            }
        }
        // The root of the sprite's filesystem comes from the image; the upper dir itself
        // must not shadow its mode with our umask.
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::set_permissions(&d.upper, fs::Permissions::from_mode(0o755));
        Ok(())
    }

    fn apply_quota(&self, id: &str) -> Result<(), StorageError> {
        let quota = self.sprite_quota;
        let Some(mode) = self.quota else {
            return Ok(());
        };
        let live = self.live(id);
        let subvol = btrfs::subvolume_id(&live)
            .map_err(|e| StorageError::io(format!("looking up {}", live.display()), e))?;
        btrfs::limit_subvolume(&live, subvol, quota, mode)
            .map_err(|e| StorageError::io(format!("limiting {}", live.display()), e))
    }

    /// Moves a subvolume out of the way under `trash/` (atomic), to be deleted later.
    fn to_trash(&self, path: &Path) -> Result<(), StorageError> {
        let name = format!(
            "{}-{}",
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            uuid::Uuid::new_v4().simple()
        );
        let dest = self.root.join("trash").join(name);
        fs::rename(path, &dest)
            .map_err(|e| StorageError::io(format!("moving {} to the trash", path.display()), e))
    }

    fn delete(&self, path: &Path) -> Result<(), StorageError> {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Ok(());
        };
        match btrfs::delete_subvolume(parent, &name.to_string_lossy()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::io(format!("deleting {}", path.display()), e)),
        }
    }

    /// Snapshots `source` as a new writable live layer of `id`: first under a temporary name,
    /// then renamed over whatever was live (which goes to the trash).
    fn replace_live_with(&self, id: &str, source: &Path) -> Result<(), StorageError> {
        self.ensure_dirs(id)?;
        let dir = self.sprite_dir(id);
        let staged = dir.join(LIVE_NEW);
        if staged.exists() {
            self.delete(&staged)?;
        }
        btrfs::snapshot(source, &dir, LIVE_NEW, false)
            .map_err(|e| StorageError::io(format!("snapshotting {}", source.display()), e))?;
        let live = self.live(id);
        if live.exists() {
            self.to_trash(&live)?;
        }
        fs::rename(&staged, &live)
            .map_err(|e| StorageError::io(format!("renaming {}", staged.display()), e))?;
        self.ensure_layer_dirs(id)?;
        self.apply_quota(id)
    }
}

/// Space kept free for metadata, restores and deletes: 2% of the pool, within 16 MiB–1 GiB.
fn reserve(total: u64) -> u64 {
    (total / 50).clamp(16 << 20, 1 << 30)
}

impl StoragePool for BtrfsPool {
    fn check_space(&self) -> Result<(), StorageError> {
        let st = nix::sys::statvfs::statvfs(&self.root)
            .map_err(|e| StorageError::io("statfs of the pool", e.into()))?;
        let total = st.blocks() * st.fragment_size();
        let free = st.blocks_available() * st.fragment_size();
        if free < reserve(total) {
            return Err(StorageError::Full(format!(
                "{} MiB free of {} MiB",
                free >> 20,
                total >> 20
            )));
        }
        Ok(())
    }

    fn layer_dirs(&self, sprite_id: &str) -> LayerDirs {
        let live = self.live(sprite_id);
        LayerDirs {
            upper: live.join("upper"),
            work: live.join("work"),
        }
    }

    fn create(&self, sprite_id: &str) -> Result<(), StorageError> {
        self.ensure_dirs(sprite_id)?;
        let live = self.live(sprite_id);
        if !live.exists() {
            self.check_space()?;
            btrfs::create_subvolume(&self.sprite_dir(sprite_id), LIVE)
                .map_err(|e| StorageError::io(format!("creating {}", live.display()), e))?;
        }
        self.ensure_layer_dirs(sprite_id)?;
        self.apply_quota(sprite_id)
    }

    fn exists(&self, sprite_id: &str) -> bool {
        self.live(sprite_id).is_dir()
    }

    fn sync(&self, sprite_id: &str) -> Result<(), StorageError> {
        let live = self.live(sprite_id);
        btrfs::sync_filesystem(&live)
            .map_err(|e| StorageError::io(format!("syncing {}", live.display()), e))
    }

    fn checkpoint(&self, sprite_id: &str, checkpoint_id: &str) -> Result<(), StorageError> {
        self.ensure_dirs(sprite_id)?;
        if self.has_checkpoint(sprite_id, checkpoint_id) {
            return Ok(());
        }
        let live = self.live(sprite_id);
        if !live.exists() {
            return Err(StorageError::NotFound(format!("live layer of {sprite_id}")));
        }
        btrfs::snapshot(&live, &self.checkpoints_dir(sprite_id), checkpoint_id, true)
            .map_err(|e| StorageError::io(format!("checkpointing {}", live.display()), e))
    }

    fn has_checkpoint(&self, sprite_id: &str, checkpoint_id: &str) -> bool {
        self.checkpoint_path(sprite_id, checkpoint_id).is_dir()
    }

    fn checkpoint_upper(&self, sprite_id: &str, checkpoint_id: &str) -> PathBuf {
        self.checkpoint_path(sprite_id, checkpoint_id).join("upper")
    }

    fn restore(&self, sprite_id: &str, checkpoint_id: &str) -> Result<(), StorageError> {
        let source = self.checkpoint_path(sprite_id, checkpoint_id);
        if !source.is_dir() {
            return Err(StorageError::NotFound(format!(
                "checkpoint {checkpoint_id}"
            )));
        }
        // The replaced layer waits in the trash: deleting a subvolume drops its cached pages,
        // which costs hundreds of ms for a warm multi-GB layer. The caller collects it after
        // the sprite runs again.
        self.replace_live_with(sprite_id, &source)
    }

    fn fork(&self, src_id: &str, checkpoint_id: &str, new_id: &str) -> Result<(), StorageError> {
        let source = self.checkpoint_path(src_id, checkpoint_id);
        if !source.is_dir() {
            return Err(StorageError::NotFound(format!(
                "checkpoint {checkpoint_id}"
            )));
        }
        self.check_space()?;
        self.replace_live_with(new_id, &source)
    }

    fn delete_checkpoint(&self, sprite_id: &str, checkpoint_id: &str) -> Result<(), StorageError> {
        self.delete(&self.checkpoint_path(sprite_id, checkpoint_id))
    }

    fn destroy(&self, sprite_id: &str) -> Result<(), StorageError> {
        let dir = self.sprite_dir(sprite_id);
        if !dir.exists() {
            return Ok(());
        }
        let ckpts = self.checkpoints_dir(sprite_id);
        if let Ok(entries) = fs::read_dir(&ckpts) {
            for e in entries.flatten() {
                self.delete(&e.path())?;
            }
        }
        for name in [LIVE, LIVE_NEW] {
            let p = dir.join(name);
            if p.exists() {
                self.delete(&p)?;
            }
        }
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::io(format!("removing {}", dir.display()), e)),
        }
    }

    fn sprite_ids(&self) -> Result<Vec<String>, StorageError> {
        let dir = self.root.join("sprites");
        let entries = fs::read_dir(&dir)
            .map_err(|e| StorageError::io(format!("listing {}", dir.display()), e))?;
        Ok(entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect())
    }

    fn collect_garbage(&self) -> Result<(), StorageError> {
        let trash = self.root.join("trash");
        let entries = match fs::read_dir(&trash) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StorageError::io(format!("listing {}", trash.display()), e)),
        };
        for e in entries.flatten() {
            self.delete(&e.path())?;
        }
        Ok(())
    }
}

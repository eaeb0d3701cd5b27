//! Where a sprite's files live on the host.
//!
//! Sockets go to `<data-dir>/run/<id>.sock`: a Unix socket path must fit in `sun_path`
//! (108 bytes), so it stays short and flat.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpritePaths {
    /// `<data-dir>/sprites/<id>`: everything persistent of the sprite.
    pub base: PathBuf,
    /// Host side of `/.sprite`.
    pub sprite_dir: PathBuf,
    /// Host side of `/.sprite/checkpoints` (a shared tmpfs holding the views).
    pub checkpoint_views: PathBuf,
    /// Empty mount point of the root (mounted only inside the sprite's mount namespace).
    pub root: PathBuf,
    pub socket: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
}

impl SpritePaths {
    pub fn new(data_dir: &Path, sprite_id: &str) -> Self {
        let base = data_dir.join("sprites").join(sprite_id);
        let run = data_dir.join("run");
        SpritePaths {
            sprite_dir: base.join("sprite-dir"),
            checkpoint_views: base.join("sprite-dir").join("checkpoints"),
            root: base.join("root"),
            base,
            socket: run.join(format!("{sprite_id}.sock")),
            config: run.join(format!("{sprite_id}.json")),
            log: data_dir
                .join("logs")
                .join(format!("{sprite_id}.keeper.log")),
        }
    }
}

/// Longest socket path the kernel accepts (`sun_path` minus the terminating NUL).
pub const MAX_SOCKET_PATH: usize = 107;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let p = SpritePaths::new(Path::new("/var/lib/wisp"), "sprite-1");
        assert_eq!(
            p.checkpoint_views,
            Path::new("/var/lib/wisp/sprites/sprite-1/sprite-dir/checkpoints")
        );
        assert_eq!(p.socket, Path::new("/var/lib/wisp/run/sprite-1.sock"));
        assert_eq!(p.config, Path::new("/var/lib/wisp/run/sprite-1.json"));
        assert_eq!(p.log, Path::new("/var/lib/wisp/logs/sprite-1.keeper.log"));
        // The default data dir with a full sprite id fits in sun_path.
        let id = format!("sprite-{}", uuid::Uuid::new_v4());
        let p = SpritePaths::new(Path::new("/var/lib/wisp"), &id);
        assert!(p.socket.as_os_str().len() <= MAX_SOCKET_PATH);
    }
}

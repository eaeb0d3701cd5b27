//! Read-only views of a sprite's latest checkpoints at `/.sprite/checkpoints/<id>/` inside it.
//!
//! The host side of that directory (`<sprite-dir>/checkpoints`) is a small tmpfs made a
//! *shared* mount before the sprite's keeper starts. The sprite's mount namespace gets a copy
//! of it, which its init turns into a read-only *slave*: every view wispd mounts or unmounts
//! here later propagates into the running sprite, and nothing propagates back.
//!
//! A view is an overlay with two lower layers and no upper (so read-only by construction):
//! the checkpoint's upper dir over the base image, i.e. the sprite's whole filesystem as it
//! was at that checkpoint. When the sprite has its own user namespace both layers are
//! id-mapped through it, so the files show inside with the owners they have in the sprite
//! (and a sprite user can read its own private files there), not as `nobody`.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::fsutil::is_mount_point;

/// How many checkpoints are visible inside a sprite.
pub const VISIBLE: usize = 5;

/// One checkpoint to show: its id and its (read-only) upper dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub id: String,
    pub upper: PathBuf,
}

fn ctx(what: String) -> impl FnOnce(nix::Error) -> io::Error {
    move |e| io::Error::new(io::Error::from(e).kind(), format!("{what}: {e}"))
}

/// The views mounted in `dir`: its entries that are mount points. Views are only ever
/// mounted directly in `dir` (a tmpfs of empty mount point directories), so its entries are
/// the whole story, without reading the host's mount table.
fn mounts_below(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        if is_mount_point(&path)? {
            found.push(path);
        }
    }
    Ok(found)
}

/// Makes `dir` the shared tmpfs the views hang from (a no-op if it already is). Must run
/// before the sprite's keeper starts, or the sprite will not see later views.
pub fn prepare(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    if !is_mount_point(dir)? {
        // Tiny on purpose: it only ever holds empty mount point directories.
        mount(
            Some("wisp-checkpoints"),
            dir,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("size=64k,nr_inodes=256,mode=755"),
        )
        .map_err(ctx(format!("mounting tmpfs on {}", dir.display())))?;
    }
    mount(
        None::<&str>,
        dir,
        None::<&str>,
        MsFlags::MS_SHARED,
        None::<&str>,
    )
    .map_err(ctx(format!("making {} shared", dir.display())))
}

/// The running sprite's user namespace, and a private host directory where id-mapped
/// layers are attached for the moment it takes to mount a view over them (overlay takes
/// its own copies of its layers; the attachments go right after).
pub struct IdMapping {
    pub userns: File,
    pub staging: PathBuf,
}

/// Mounts one view on `target`, over id-mapped layers when `idmap` is given.
fn mount_view(target: &Path, v: &View, base: &Path, idmap: Option<&IdMapping>) -> io::Result<()> {
    let mut attached = Vec::new();
    let mounted = (|| {
        let layers = match idmap {
            None => vec![v.upper.clone(), base.to_path_buf()],
            Some(m) => {
                let mut layers = Vec::new();
                for (i, src) in [&v.upper, &base.to_path_buf()].into_iter().enumerate() {
                    let at = m.staging.join(format!("{}-{i}", v.id));
                    std::fs::create_dir_all(&at)?;
                    let tree = wisp_sys::idmap::idmapped_tree(src, m.userns.as_fd())?;
                    wisp_sys::idmap::attach(tree, &at)?;
                    attached.push(at.clone());
                    layers.push(at);
                }
                layers
            }
        };
        let opts = format!("lowerdir={}:{}", layers[0].display(), layers[1].display());
        mount(
            Some("wisp-checkpoint"),
            target,
            Some("overlay"),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(opts.as_str()),
        )
        .map_err(ctx(format!(
            "mounting checkpoint view {}",
            target.display()
        )))
    })();
    for at in attached {
        let _ = umount2(&at, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&at);
    }
    mounted
}

/// Makes the views under `dir` exactly `wanted` over the base image `base`.
pub fn sync(dir: &Path, wanted: &[View], base: &Path, idmap: Option<&IdMapping>) -> io::Result<()> {
    prepare(dir)?;
    let mounted = mounts_below(dir)?;
    for mp in &mounted {
        let keep = wanted.iter().any(|v| dir.join(&v.id) == *mp);
        if !keep {
            umount2(mp, MntFlags::MNT_DETACH)
                .map_err(ctx(format!("unmounting {}", mp.display())))?;
            let _ = std::fs::remove_dir(mp);
        }
    }
    for v in wanted {
        let target = dir.join(&v.id);
        if mounted.contains(&target) {
            continue;
        }
        match std::fs::create_dir(&target) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        mount_view(&target, v, base, idmap)?;
    }
    Ok(())
}

/// Unmounts every view and the tmpfs itself (the sprite stopped or is being destroyed).
pub fn clear(dir: &Path) -> io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for mp in mounts_below(dir)? {
        umount2(&mp, MntFlags::MNT_DETACH).map_err(ctx(format!("unmounting {}", mp.display())))?;
    }
    if is_mount_point(dir)? {
        umount2(dir, MntFlags::MNT_DETACH).map_err(ctx(format!("unmounting {}", dir.display())))?;
    }
    Ok(())
}

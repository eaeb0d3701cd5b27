//! The part of a sprite's root that needs host privileges, built by the keeper inside the
//! new init's mount namespace before init runs: the overlay root (over id-mapped layers when
//! the sprite has its own user namespace) and /sys.
//!
//! Why the keeper and not init: root in the sprite's user namespace may not id-map a mount
//! (that takes CAP_SYS_ADMIN over the filesystem, i.e. the host), nor mount sysfs for a
//! network namespace the host owns (the pooled slot). Mounting the overlay with the host's
//! credentials also keeps its `trusted.overlay.*` metadata working, so sprite layers written
//! before user namespaces existed read the same inside one. Init then mounts the rest
//! (/proc, /dev, /run, the masks) as root of its own namespaces.

use std::fs::{self, File};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use nix::sched::{setns, CloneFlags};

use crate::config::{KeeperConfig, IDS_PER_SPRITE};

/// Where the id-mapped layers are attached (inside the sprite's mount namespace only; the
/// directories themselves are empty on the host).
fn staging(cfg: &KeeperConfig) -> PathBuf {
    let mut s = cfg.root_mount.clone().into_os_string();
    s.push(".layers");
    PathBuf::from(s)
}

/// The keeper's own namespaces, to come back to after working in the sprite's.
pub(crate) struct HomeNs {
    mnt: File,
    net: File,
}

impl HomeNs {
    pub(crate) fn open() -> Result<Self, String> {
        let open = |p: &str| File::open(p).map_err(|e| format!("opening {p}: {e}"));
        Ok(HomeNs {
            mnt: open("/proc/self/ns/mnt")?,
            net: open("/proc/self/ns/net")?,
        })
    }

    pub(crate) fn enter_net(&self, ns: &File) -> Result<(), String> {
        setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("joining the sprite's network namespace: {e}"))
    }

    /// Back to the keeper's mount and network namespaces. Failing here would leave the keeper
    /// working in the sprite's view of the world: callers treat it as fatal.
    pub(crate) fn restore(&self) -> Result<(), String> {
        setns(self.mnt.as_fd(), CloneFlags::CLONE_NEWNS)
            .and_then(|_| setns(self.net.as_fd(), CloneFlags::CLONE_NEWNET))
            .and_then(|_| nix::unistd::chdir("/"))
            .map_err(|e| format!("returning to the keeper's namespaces: {e}"))
    }
}

/// Writes the id maps of the new init (`pid`), root inside = `base` on the host.
pub(crate) fn write_id_maps(pid: i32, base: u32) -> Result<(), String> {
    let map = format!("0 {base} {IDS_PER_SPRITE}\n");
    for file in ["uid_map", "gid_map"] {
        let p = format!("/proc/{pid}/{file}");
        fs::write(&p, &map).map_err(|e| format!("writing {p}: {e}"))?;
    }
    Ok(())
}

/// Builds the overlay root and /sys of init `pid` in its namespaces. With `userns` (the
/// sprite's user namespace), every layer is id-mapped through it.
/// Runs on the keeper's only thread (setns of a mount namespace needs that).
pub(crate) fn build(
    cfg: &KeeperConfig,
    pid: i32,
    userns: Option<(&File, u32)>,
    home: &HomeNs,
) -> Result<(), String> {
    let open = |what: &str| {
        let p = format!("/proc/{pid}/ns/{what}");
        File::open(&p).map_err(|e| format!("opening {p}: {e}"))
    };
    let (mnt, net) = (open("mnt")?, open("net")?);
    let stage = staging(cfg);
    let layer_dirs: Vec<PathBuf> = (0..cfg.lower.len())
        .map(|i| stage.join(i.to_string()))
        .chain([stage.join("rw")])
        .collect();
    if userns.is_some() {
        for d in &layer_dirs {
            fs::create_dir_all(d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
        }
    }
    home.enter_net(&net)?;
    let built = (|| {
        if userns.is_some() {
            // The sprite's network namespace is the host's (a pooled slot), so root inside
            // has no CAP_NET_BIND_SERVICE or CAP_NET_RAW there. Its servers may still bind
            // low ports and ping, as Docker allows by default; both settings are per network
            // namespace.
            let _ = fs::write("/proc/sys/net/ipv4/ip_unprivileged_port_start", "0");
            let _ = fs::write("/proc/sys/net/ipv4/ping_group_range", "0 2147483647");
        }
        setns(mnt.as_fd(), CloneFlags::CLONE_NEWNS)
            .map_err(|e| format!("joining the sprite's mount namespace: {e}"))?;
        // Nothing mounted below may propagate back to the host; mounts the host makes under
        // the sprite dir (checkpoint views) still propagate in.
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_SLAVE,
            None::<&str>,
        )
        .map_err(|e| format!("making / a slave: {e}"))?;
        let (lower, upper, work) = match userns {
            Some((ns, _)) => {
                let mut sources = cfg.lower.clone();
                sources.push(layer_parent(cfg)?);
                for (src, dst) in sources.iter().zip(&layer_dirs) {
                    let tree = wisp_sys::idmap::idmapped_tree(src, ns.as_fd())
                        .map_err(|e| format!("id-mapping {}: {e}", src.display()))?;
                    wisp_sys::idmap::attach(tree, dst)
                        .map_err(|e| format!("attaching {}: {e}", dst.display()))?;
                }
                let rw = stage.join("rw");
                let lower = layer_dirs[..cfg.lower.len()].to_vec();
                (
                    lower,
                    rw.join(file_name(&cfg.upper)?),
                    rw.join(file_name(&cfg.work)?),
                )
            }
            None => (cfg.lower.clone(), cfg.upper.clone(), cfg.work.clone()),
        };
        let lower = lower
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let opts = format!(
            "lowerdir={lower},upperdir={},workdir={}",
            upper.display(),
            work.display()
        );
        // overlayfs does its own work (the work dir, copy-up, whiteouts) with the mounter's
        // credentials. Host root's id 0 has no place on the id-mapped upper layer, so the
        // mounter carries the sprite root's host id while keeping root's capabilities (which
        // also keep the `trusted.overlay.*` metadata of existing layers in use).
        let as_sprite_root = match userns {
            Some((_, base)) => Some(
                wisp_sys::fsid::FsIdentity {
                    uid: base,
                    gid: base,
                    groups: Vec::new(),
                }
                .enter_keeping_caps()
                .map_err(|e| format!("taking the sprite root's ids: {e}"))?,
            ),
            None => None,
        };
        mount(
            Some("overlay"),
            &cfg.root_mount,
            Some("overlay"),
            MsFlags::MS_NOATIME,
            Some(opts.as_str()),
        )
        .map_err(|e| format!("mounting the sprite's root: {e}"))?;
        drop(as_sprite_root);
        let sys = cfg.root_mount.join("sys");
        if sys.is_dir() {
            // sysfs shows the network devices of the namespace it is mounted from: this one.
            mount(
                Some("sysfs"),
                &sys,
                Some("sysfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                None::<&str>,
            )
            .map_err(|e| format!("mounting /sys: {e}"))?;
        }
        Ok(())
    })();
    home.restore()?;
    built
}

/// The directory holding both the upper and the work dir (overlay wants them on one mount).
fn layer_parent(cfg: &KeeperConfig) -> Result<PathBuf, String> {
    match (cfg.upper.parent(), cfg.work.parent()) {
        (Some(a), Some(b)) if a == b => Ok(a.to_path_buf()),
        _ => Err(format!(
            "the upper dir {} and work dir {} must share a parent",
            cfg.upper.display(),
            cfg.work.display()
        )),
    }
}

fn file_name(p: &Path) -> Result<&std::ffi::OsStr, String> {
    p.file_name()
        .ok_or_else(|| format!("{} has no file name", p.display()))
}

/// Removes the staging directories, which are empty on the host. Never recursive: if a
/// layer were ever attached on the host by mistake, this must not delete through it.
pub(crate) fn remove_staging(cfg: &KeeperConfig) {
    let stage = staging(cfg);
    if let Ok(entries) = fs::read_dir(&stage) {
        for e in entries.flatten() {
            let _ = fs::remove_dir(e.path());
        }
    }
    let _ = fs::remove_dir(stage);
}

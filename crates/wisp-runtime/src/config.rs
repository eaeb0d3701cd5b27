//! What wispd hands a keeper when it starts one (`wisp-keeper --config FILE`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Resource limits of one sprite. `None` leaves that resource unlimited.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Limits {
    /// Memory limit in bytes (memory.max / memory.limit_in_bytes).
    pub memory_bytes: Option<u64>,
    /// CPU limit in thousandths of a CPU (1000 = one full CPU).
    pub cpu_millis: Option<u64>,
    /// Maximum number of tasks (pids.max).
    pub pids_max: Option<u64>,
}

/// Everything a keeper needs to start and hold one sprite.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeeperConfig {
    /// Stable id of the sprite (`sprite-<uuid>`); names cgroups and logs.
    pub sprite_id: String,
    /// Hostname inside the sprite (the sprite's name).
    pub hostname: String,
    /// Unix socket the keeper listens on.
    pub socket: PathBuf,
    /// An empty directory used as the mount point of the sprite's root. The mount exists only
    /// inside the sprite's mount namespace, so nothing shows on the host.
    pub root_mount: PathBuf,
    /// Read-only image layers, uppermost first.
    pub lower: Vec<PathBuf>,
    /// The sprite's persistent writable layer and overlayfs work dir (same filesystem).
    pub upper: PathBuf,
    pub work: PathBuf,
    /// Host directory shown read-only at `/.sprite` inside the sprite.
    pub sprite_dir: PathBuf,
    pub limits: Limits,
    /// Name of the cgroup parent under every hierarchy (`wisp`); the sprite's cgroup is
    /// `<parent>/<sprite_id>`.
    pub cgroup_parent: String,
    /// A network namespace to run the sprite in (a bind-mounted namespace file, prepared by
    /// wispd with the sprite's interface and routes). `None`: a fresh namespace with only a
    /// loopback.
    #[serde(default)]
    pub netns: Option<PathBuf>,
    /// Written to `/etc/resolv.conf` inside the sprite at every start (its resolver is the
    /// host end of its network). `None` leaves the file alone.
    #[serde(default)]
    pub resolv_conf: Option<String>,
    /// Run the sprite in its own user namespace: root inside is an unprivileged host uid.
    /// `None` (the `--no-hardening` benchmark baseline, and configs written by older wispd)
    /// runs it with host ids.
    #[serde(default)]
    pub userns: Option<UserNamespace>,
    /// Benchmark baseline (`wispd --no-hardening`): commands keep every capability and get no
    /// seccomp filter, and /proc is not masked.
    #[serde(default)]
    pub unhardened: bool,
}

/// Where a sprite's ids come from on the host. Each sprite gets [`IDS_PER_SPRITE`] host ids
/// starting at `first_host_id + slot * IDS_PER_SPRITE`; a keeper holds its slot's lock file
/// in `lock_dir` for its whole life, so two running sprites never share ids. The slot may
/// differ from one start to the next: the disk stores plain ids 0..65535 and the layers are
/// id-mapped at every start, so nothing on disk depends on it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UserNamespace {
    pub first_host_id: u32,
    pub slots: u32,
    pub lock_dir: PathBuf,
}

/// Ids mapped into each sprite: 0..65535, as on a normal Linux system.
pub const IDS_PER_SPRITE: u32 = 65536;

impl UserNamespace {
    /// The host ids of sprites: 20,480 ranges of 65,536 from 0x2000_0000 (536,870,912) up
    /// to 0x6FFF_FFFF, the upper part of what systemd sets aside for containers and far
    /// from the ids of host users. The range locks are host-wide, so every wispd on the
    /// host (tests run several) hands out disjoint ranges.
    pub fn host_default() -> UserNamespace {
        UserNamespace {
            first_host_id: 0x2000_0000,
            slots: (0x7000_0000 - 0x2000_0000) / IDS_PER_SPRITE,
            lock_dir: PathBuf::from("/run/wisp/id-ranges"),
        }
    }
}

impl KeeperConfig {
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

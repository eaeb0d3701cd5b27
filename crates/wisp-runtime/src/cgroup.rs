//! A sprite's cgroups, on the cgroup v1 + v2 hybrid layout and on v2-only hosts.
//!
//! On v2-only hosts one cgroup `<root>/<parent>/<id>` carries limits, freeze and kill. On the
//! hybrid layout the limits live in the v1 memory, cpu and pids hierarchies, and a cgroup in
//! the v2 mount (which has no controllers there) still gives `cgroup.freeze` and
//! `cgroup.kill`, so freezing and killing work the same way on both.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::config::Limits;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const V1_CONTROLLERS: &[&str] = &["memory", "cpu", "cpuacct", "pids", "freezer"];

/// Where this host keeps its cgroup hierarchies.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// The v2 mount, if any (the root on v2-only hosts, `unified` on hybrid ones).
    pub v2: Option<PathBuf>,
    /// True when the v2 mount owns the memory/cpu/pids controllers.
    pub v2_controllers: bool,
    /// v1 mount points by controller name.
    pub v1: Vec<(String, PathBuf)>,
}

impl Layout {
    /// Reads the layout from /proc/self/mountinfo.
    pub fn detect() -> io::Result<Layout> {
        let info = fs::read_to_string("/proc/self/mountinfo")?;
        Ok(Self::parse(&info))
    }

    /// Parses mountinfo text (split out for tests).
    pub fn parse(mountinfo: &str) -> Layout {
        let mut v2 = None;
        let mut v1 = Vec::new();
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let fields: Vec<&str> = left.split(' ').collect();
            let rfields: Vec<&str> = right.split(' ').collect();
            let (Some(mount_point), Some(fstype)) = (fields.get(4), rfields.first()) else {
                continue;
            };
            if !mount_point.starts_with(CGROUP_ROOT) {
                continue;
            }
            match *fstype {
                "cgroup2" => v2 = Some(PathBuf::from(mount_point)),
                "cgroup" => {
                    let opts = rfields.get(2).copied().unwrap_or("");
                    for opt in opts.split(',') {
                        if V1_CONTROLLERS.contains(&opt) && !v1.iter().any(|(c, _)| c == opt) {
                            v1.push((opt.to_string(), PathBuf::from(mount_point)));
                        }
                    }
                }
                _ => {}
            }
        }
        let v2_controllers = v1.is_empty() && v2.is_some();
        Layout {
            v2,
            v2_controllers,
            v1,
        }
    }

    /// Every directory that makes up one sprite's cgroup.
    pub fn sprite_dirs(&self, parent: &str, sprite_id: &str) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for (_, mount) in &self.v1 {
            let d = mount.join(parent).join(sprite_id);
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
        if let Some(v2) = &self.v2 {
            dirs.push(v2.join(parent).join(sprite_id));
        }
        dirs
    }
}

/// The cgroups of one sprite.
#[derive(Debug)]
pub struct SpriteCgroup {
    layout: Layout,
    parent: String,
    dirs: Vec<PathBuf>,
    v2: Option<PathBuf>,
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    fs::write(path, value).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

impl SpriteCgroup {
    /// Creates (or reuses) the sprite's cgroups and applies `limits`.
    pub fn create(parent: &str, sprite_id: &str, limits: &Limits) -> io::Result<SpriteCgroup> {
        let layout = Layout::detect()?;
        let dirs = layout.sprite_dirs(parent, sprite_id);
        if dirs.is_empty() {
            return Err(io::Error::other(
                "no cgroup hierarchy is mounted under /sys/fs/cgroup",
            ));
        }
        if layout.v2_controllers {
            if let Some(v2) = &layout.v2 {
                enable_v2_controllers(v2, parent, limits)?;
            }
        }
        for d in &dirs {
            fs::create_dir_all(d)?;
        }
        let v2 = layout.v2.as_ref().map(|v| v.join(parent).join(sprite_id));
        let cg = SpriteCgroup {
            parent: parent.to_string(),
            dirs,
            v2,
            layout,
        };
        cg.apply(limits)?;
        Ok(cg)
    }

    fn v1_dir(&self, controller: &str) -> Option<PathBuf> {
        self.layout
            .v1
            .iter()
            .find(|(c, _)| c == controller)
            .map(|(_, m)| m.join(&self.parent).join(self.id()))
    }

    fn id(&self) -> &str {
        self.dirs
            .first()
            .and_then(|d| d.file_name())
            .and_then(|n| n.to_str())
            .unwrap_or("")
    }

    fn apply(&self, limits: &Limits) -> io::Result<()> {
        if self.layout.v2_controllers {
            let Some(v2) = &self.v2 else { return Ok(()) };
            if let Some(m) = limits.memory_bytes {
                write(&v2.join("memory.max"), &m.to_string())?;
                let _ = write(&v2.join("memory.swap.max"), "0");
            }
            if let Some(c) = limits.cpu_millis {
                write(&v2.join("cpu.max"), &format!("{} 100000", c * 100))?;
            }
            if let Some(p) = limits.pids_max {
                write(&v2.join("pids.max"), &p.to_string())?;
            }
            return Ok(());
        }
        if let (Some(m), Some(d)) = (limits.memory_bytes, self.v1_dir("memory")) {
            write(&d.join("memory.limit_in_bytes"), &m.to_string())?;
        }
        if let (Some(c), Some(d)) = (limits.cpu_millis, self.v1_dir("cpu")) {
            write(&d.join("cpu.cfs_period_us"), "100000")?;
            write(&d.join("cpu.cfs_quota_us"), &(c * 100).to_string())?;
        }
        if let (Some(p), Some(d)) = (limits.pids_max, self.v1_dir("pids")) {
            write(&d.join("pids.max"), &p.to_string())?;
        }
        Ok(())
    }

    /// Moves a process into every hierarchy of the sprite's cgroup.
    pub fn add_pid(&self, pid: i32) -> io::Result<()> {
        for d in &self.dirs {
            write(&d.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Kills every process in the cgroup and removes its directories.
    pub fn destroy(&self) -> io::Result<()> {
        if self.is_frozen() {
            // Fatal signals reach frozen tasks, but a thawed cgroup dies faster and cleaner.
            let _ = self.set_frozen(false);
        }
        kill_and_remove(&self.dirs)
    }

    /// The sprite's cgroup in the v2 mount: the one with `cgroup.freeze` on both layouts.
    fn v2_dir(&self) -> io::Result<&Path> {
        self.v2.as_deref().ok_or_else(|| {
            io::Error::other("no cgroup v2 mount: freezing a sprite needs cgroup.freeze")
        })
    }

    /// Whether the sprite was asked to be frozen (`cgroup.freeze` reads 1).
    pub fn is_frozen(&self) -> bool {
        self.v2
            .as_ref()
            .and_then(|d| fs::read_to_string(d.join("cgroup.freeze")).ok())
            .is_some_and(|s| s.trim() == "1")
    }

    /// Freezes (`true`) or thaws every process of the sprite through the v2 `cgroup.freeze`,
    /// and returns once `cgroup.events` reports the new state (at most [`FREEZE_TIMEOUT`]).
    /// A freeze that does not complete in time is undone, so the sprite is never left half
    /// frozen.
    pub fn set_frozen(&self, frozen: bool) -> io::Result<()> {
        let dir = self.v2_dir()?;
        let want = if frozen { "1" } else { "0" };
        write(&dir.join("cgroup.freeze"), want)?;
        let deadline = Instant::now() + FREEZE_TIMEOUT;
        loop {
            if events_frozen(dir)? == frozen {
                return Ok(());
            }
            if Instant::now() > deadline {
                if frozen {
                    let _ = write(&dir.join("cgroup.freeze"), "0");
                }
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the sprite did not {} within {} ms",
                        if frozen { "freeze" } else { "thaw" },
                        FREEZE_TIMEOUT.as_millis()
                    ),
                ));
            }
            sleep(Duration::from_millis(1));
        }
    }
}

/// How long a freeze or thaw may take to complete.
pub const FREEZE_TIMEOUT: Duration = Duration::from_secs(2);

/// The `frozen` field of a v2 cgroup's `cgroup.events`.
fn events_frozen(dir: &Path) -> io::Result<bool> {
    let path = dir.join("cgroup.events");
    let text = fs::read_to_string(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    Ok(parse_events_frozen(&text))
}

fn parse_events_frozen(events: &str) -> bool {
    events
        .lines()
        .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["frozen", "1"])
}

/// The v2 controllers a set of limits needs.
fn needed_controllers(limits: &Limits) -> Vec<&'static str> {
    let mut v = Vec::new();
    if limits.cpu_millis.is_some() {
        v.push("cpu");
    }
    if limits.memory_bytes.is_some() {
        v.push("memory");
    }
    if limits.pids_max.is_some() {
        v.push("pids");
    }
    v
}

/// Enables the controllers the limits need on every level above the sprite's cgroup. A limit
/// whose controller the host does not offer is an error: a sprite must never run unbounded
/// because a limit silently did not apply.
fn enable_v2_controllers(v2: &Path, parent: &str, limits: &Limits) -> io::Result<()> {
    let available = fs::read_to_string(v2.join("cgroup.controllers")).unwrap_or_default();
    let needed = needed_controllers(limits);
    if let Some(missing) = needed
        .iter()
        .find(|c| !available.split_whitespace().any(|a| a == **c))
    {
        return Err(io::Error::other(format!(
            "the {missing} cgroup controller is not available in {} (needed for the sprite's limits)",
            v2.display()
        )));
    }
    if needed.is_empty() {
        fs::create_dir_all(v2.join(parent))?;
        return Ok(());
    }
    let enable: String = needed.iter().map(|c| format!("+{c} ")).collect();
    let enable = enable.trim_end();
    write(&v2.join("cgroup.subtree_control"), enable)?;
    fs::create_dir_all(v2.join(parent))?;
    write(&v2.join(parent).join("cgroup.subtree_control"), enable)
}

fn procs(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

fn kill_and_remove(dirs: &[PathBuf]) -> io::Result<()> {
    let existing: Vec<&PathBuf> = dirs.iter().filter(|d| d.exists()).collect();
    for d in &existing {
        if d.join("cgroup.kill").exists() {
            let _ = write(&d.join("cgroup.kill"), "1");
        }
    }
    // Fallback for kernels without cgroup.kill, and for v1-only hierarchies.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut left = 0;
        for d in &existing {
            for pid in procs(d) {
                left += 1;
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        if left == 0 {
            break;
        }
        if Instant::now() > deadline {
            return Err(io::Error::other(format!(
                "{left} processes of the sprite did not die within 10 s"
            )));
        }
        sleep(Duration::from_millis(5));
    }
    for d in &existing {
        remove_dir_retrying(d)?;
    }
    Ok(())
}

fn remove_dir_retrying(d: &Path) -> io::Result<()> {
    // rmdir fails with EBUSY for a moment after the last task left.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match fs::remove_dir(d) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() < deadline && e.raw_os_error() == Some(libc::EBUSY) => {
                sleep(Duration::from_millis(5))
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("removing cgroup {}: {e}", d.display()),
                ))
            }
        }
    }
}

/// Kills whatever is left in a sprite's cgroups and removes them. Safe to call when they do
/// not exist. wispd uses it on destroy, after the keeper is gone.
pub fn remove_sprite_cgroups(parent: &str, sprite_id: &str) -> io::Result<()> {
    let layout = Layout::detect()?;
    kill_and_remove(&layout.sprite_dirs(parent, sprite_id))
}

/// Memory a sprite's processes use now (page cache included), from `memory.current` (v2
/// controllers) or `memory.usage_in_bytes` (v1).
pub fn sprite_memory_bytes(layout: &Layout, parent: &str, sprite_id: &str) -> io::Result<u64> {
    let file = if layout.v2_controllers {
        layout
            .v2
            .as_ref()
            .map(|v2| v2.join(parent).join(sprite_id).join("memory.current"))
    } else {
        layout
            .v1
            .iter()
            .find(|(c, _)| c == "memory")
            .map(|(_, m)| m.join(parent).join(sprite_id).join("memory.usage_in_bytes"))
    };
    let file = file.ok_or_else(|| io::Error::other("no memory controller"))?;
    fs::read_to_string(&file)?.trim().parse().map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", file.display()),
        )
    })
}

/// Every cgroup directory a sprite would use, whether or not it exists (for leak checks).
pub fn sprite_cgroup_dirs(parent: &str, sprite_id: &str) -> io::Result<Vec<PathBuf>> {
    Ok(Layout::detect()?.sprite_dirs(parent, sprite_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
33 30 0:29 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
34 30 0:30 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
35 30 0:31 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd
";

    const V2: &str = "30 25 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";

    #[test]
    fn hybrid_layout() {
        let l = Layout::parse(HYBRID);
        assert_eq!(l.v2, Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert!(!l.v2_controllers);
        assert_eq!(l.v1.len(), 3);
        let dirs = l.sprite_dirs("wisp", "s1");
        assert!(dirs.contains(&PathBuf::from("/sys/fs/cgroup/memory/wisp/s1")));
        assert!(dirs.contains(&PathBuf::from("/sys/fs/cgroup/unified/wisp/s1")));
        assert!(!dirs.iter().any(|d| d.starts_with("/sys/fs/cgroup/systemd")));
    }

    #[test]
    fn v2_only_layout() {
        let l = Layout::parse(V2);
        assert!(l.v2_controllers);
        assert_eq!(
            l.sprite_dirs("wisp", "s1"),
            vec![PathBuf::from("/sys/fs/cgroup/wisp/s1")]
        );
    }

    #[test]
    fn controllers_for_limits() {
        assert!(needed_controllers(&Limits::default()).is_empty());
        let l = Limits {
            memory_bytes: Some(1),
            cpu_millis: None,
            pids_max: Some(2),
        };
        assert_eq!(needed_controllers(&l), vec!["memory", "pids"]);
    }

    #[test]
    fn frozen_field_of_events() {
        assert!(parse_events_frozen("populated 1\nfrozen 1\n"));
        assert!(!parse_events_frozen("populated 1\nfrozen 0\n"));
        assert!(!parse_events_frozen(""));
    }

    #[test]
    fn combined_v1_mount() {
        let l = Layout::parse(
            "32 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n",
        );
        assert_eq!(l.sprite_dirs("wisp", "x").len(), 1);
    }
}

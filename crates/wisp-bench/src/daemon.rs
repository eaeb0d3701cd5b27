//! A private wispd for one benchmark run: its own data dir, a loopback port, killed at the end.
//! Stopping (or dropping) it also unmounts what wispd mounted there (the btrfs storage pool, a
//! loop mount when the data dir is not on btrfs; the network slots' namespace files), removes
//! its nftables table and the data dir; [`Daemon::stop`] then checks that nothing is left.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub struct Daemon {
    child: Child,
    stopped: bool,
    pub data_dir: PathBuf,
    pub base_url: String,
    pub token: String,
}

impl Daemon {
    pub fn start(wispd: &Path, image_dir: &Path, extra: &[String]) -> Result<Daemon> {
        Self::start_named(wispd, image_dir, extra, "")
    }

    /// Like [`Daemon::start`], for a second daemon: `name` tells its data dir apart.
    pub fn start_named(
        wispd: &Path,
        image_dir: &Path,
        extra: &[String],
        name: &str,
    ) -> Result<Daemon> {
        let suffix = if name.is_empty() {
            String::new()
        } else {
            format!("-{name}")
        };
        let data_dir =
            std::env::temp_dir().join(format!("wisp-bench-{}{suffix}", std::process::id()));
        std::fs::create_dir_all(&data_dir)?;
        // Mount points in /proc/self/mountinfo are canonical paths.
        let data_dir = data_dir.canonicalize()?;
        let log = std::fs::File::create(data_dir.join("wispd.log"))?;
        let child = Command::new(wispd)
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--image-dir")
            .arg(image_dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", wispd.display()))?;
        let mut d = Daemon {
            child,
            stopped: false,
            data_dir,
            base_url: String::new(),
            token: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let addr = std::fs::read_to_string(d.data_dir.join("wispd.addr"));
            let token = std::fs::read_to_string(d.data_dir.join("admin-token"));
            if let (Ok(a), Ok(t)) = (addr, token) {
                d.base_url = format!("http://{}", a.trim());
                d.token = t.trim().to_string();
                return Ok(d);
            }
            if let Some(status) = d.child.try_wait()? {
                bail!(
                    "wispd exited with {status}; see {}",
                    d.data_dir.join("wispd.log").display()
                );
            }
            if Instant::now() > deadline {
                bail!("wispd did not start within 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Daemon {
    /// wispd's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where wispd keeps its network slots' namespace files (`wv<N>`, one per slot).
    pub fn netns_dir(&self) -> PathBuf {
        self.data_dir.join("run/netns")
    }

    /// The storage pool (`<data-dir>/pool`, a btrfs).
    pub fn pool_dir(&self) -> PathBuf {
        self.data_dir.join("pool")
    }

    /// The overlay upper dir of a sprite's live layer: what the sprite wrote.
    pub fn upper_dir(&self, sprite_id: &str) -> PathBuf {
        self.pool_dir()
            .join("sprites")
            .join(sprite_id)
            .join("live/upper")
    }

    /// Keepers whose config lives under this data dir: one per running or warm sprite while
    /// wispd runs; left over after it stops only if deleting the sprites failed (sprites
    /// outlive wispd by design).
    pub fn keepers(&self) -> Vec<u32> {
        let needle = self.data_dir.join("run");
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        procs
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                    let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
                    args.first().is_some_and(|a0| a0.ends_with(b"wisp-keeper"))
                        && args
                            .iter()
                            .any(|a| a.starts_with(needle.as_os_str().as_encoded_bytes()))
                })
            })
            .collect()
    }

    /// Mount points under the data dir, deepest first.
    fn mounts(&self) -> Vec<PathBuf> {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut m: Vec<PathBuf> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(PathBuf::from)
            .filter(|p| p.starts_with(&self.data_dir))
            .collect();
        m.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        m
    }
}

impl Daemon {
    /// Stops wispd and removes what it left (see [`Daemon::cleanup`]), then checks that no
    /// keeper, mount, loop device, nftables table or data dir of this run is left.
    pub fn stop(mut self) -> Result<()> {
        self.cleanup();
        // A lazy unmount lets go of the loop device once the last user is gone.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = self.leftovers();
            if left.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("left after the run: {}", left.join("; "));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        let keepers = self.keepers();
        if !keepers.is_empty() {
            left.push(format!("keepers {keepers:?}"));
        }
        let mounts = self.mounts();
        if !mounts.is_empty() {
            left.push(format!("mounts {mounts:?}"));
        }
        let dir = self.data_dir.to_string_lossy().into_owned();
        match Command::new("losetup").arg("-a").output() {
            Ok(o) => {
                let out = String::from_utf8_lossy(&o.stdout);
                for l in out.lines().filter(|l| l.contains(&dir)) {
                    left.push(format!("loop device {l}"));
                }
            }
            Err(e) => left.push(format!("losetup -a: {e}")),
        }
        let tables = self.nft_tables();
        if !tables.is_empty() {
            left.push(format!("nftables tables {tables:?}"));
        }
        if self.data_dir.exists() {
            left.push(format!("data dir {dir}"));
        }
        left
    }

    /// The nftables tables wispd made for this data dir (their comment is the data dir).
    fn nft_tables(&self) -> Vec<String> {
        let Ok(out) = Command::new("nft")
            .args(["-t", "list", "ruleset", "inet"])
            .output()
        else {
            return Vec::new();
        };
        let want = format!("comment \"{}\"", self.data_dir.display());
        let mut tables = Vec::new();
        let mut current: Option<String> = None;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(rest) = line.strip_prefix("table inet ") {
                current = Some(rest.trim_end_matches('{').trim().to_string());
            } else if line.trim() == want {
                tables.extend(current.take());
            }
        }
        tables
    }

    /// Kills wispd, then any keeper it left, unmounts everything under the data dir (`umount
    /// -l`, which also frees the pool's loop device), deletes wispd's nftables table and
    /// removes the data dir. Runs once.
    fn cleanup(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        for pid in self.keepers() {
            eprintln!("killing leftover keeper {pid}");
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        for m in self.mounts() {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
        for t in self.nft_tables() {
            let _ = Command::new("nft")
                .args(["delete", "table", "inet", &t])
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.cleanup();
    }
}

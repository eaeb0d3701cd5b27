//! A private wispd for one benchmark run: its own data dir, a loopback port, killed at the end.
//! Dropping it also unmounts what wispd mounted there (the btrfs storage pool, a loop mount
//! when the data dir is not on btrfs) and removes the data dir.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub struct Daemon {
    child: Child,
    pub data_dir: PathBuf,
    pub base_url: String,
    pub token: String,
}

impl Daemon {
    pub fn start(wispd: &Path, image_dir: &Path, extra: &[String]) -> Result<Daemon> {
        let data_dir = std::env::temp_dir().join(format!("wisp-bench-{}", std::process::id()));
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

    /// Keepers whose config lives under this data dir: left over only if deleting the
    /// sprites failed (sprites outlive wispd by design).
    fn leftover_keepers(&self) -> Vec<u32> {
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

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        for pid in self.leftover_keepers() {
            eprintln!("killing leftover keeper {pid}");
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        for m in self.mounts() {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

//! A private wispd for one benchmark run: its own data dir, a loopback port, killed at the end.

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

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

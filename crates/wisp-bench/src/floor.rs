//! The floor: what the same work costs with plain util-linux and coreutils tools and no daemon.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Scratch dirs for one floor sandbox (an overlay over the same image Wisp uses).
pub struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    pub fn new(tag: &str) -> Result<Scratch> {
        let dir = std::env::temp_dir().join(format!("wisp-floor-{}-{tag}", std::process::id()));
        for d in ["upper", "work", "merged"] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        Ok(Scratch { dir })
    }

    fn script(&self, lower: &Path, tail: &str) -> String {
        let d = self.dir.display();
        format!(
            "mount --make-rprivate / && \
             mount -t overlay overlay -o lowerdir={},upperdir={d}/upper,workdir={d}/work {d}/merged && \
             mount -t proc proc {d}/merged/proc && cd {d}/merged && pivot_root . . && umount -l . && {tail}",
            lower.display()
        )
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn unshare(script: &str) -> Command {
    let mut c = Command::new("unshare");
    c.args([
        "--mount", "--pid", "--uts", "--ipc", "--net", "--fork", "/bin/sh", "-c", script,
    ]);
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// One fresh sandbox from nothing to the exit of `true`: unshare + overlay + pivot_root.
pub fn unshare_true(lower: &Path, i: usize) -> Result<Duration> {
    let s = Scratch::new(&format!("c{i}"))?;
    let script = s.script(lower, "exec /bin/true");
    let t = Instant::now();
    let out = unshare(&script).output().context("running unshare")?;
    let el = t.elapsed();
    if !out.status.success() {
        bail!(
            "unshare floor failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(el)
}

/// A long-lived floor sandbox to `nsenter` into.
pub struct Running {
    child: Child,
    _scratch: Scratch,
}

impl Running {
    pub fn start(lower: &Path) -> Result<Running> {
        let scratch = Scratch::new("run")?;
        let child = unshare(&scratch.script(lower, "exec /bin/sleep 3600"))
            .stderr(Stdio::null())
            .spawn()
            .context("starting the floor sandbox")?;
        std::thread::sleep(Duration::from_millis(200));
        Ok(Running {
            child,
            _scratch: scratch,
        })
    }

    /// Host pid of the sandbox's init (the child of `unshare --fork`).
    fn inner_pid(&self) -> Result<u32> {
        let children =
            std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.child.id()))?;
        children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .context("floor sandbox has no init")
    }

    /// `nsenter -t PID -a /bin/true`.
    pub fn nsenter_true(&self) -> Result<Duration> {
        let pid = self.inner_pid()?.to_string();
        let t = Instant::now();
        let st = Command::new("nsenter")
            .args(["-t", &pid, "-a", "/bin/true"])
            .stdin(Stdio::null())
            .status()?;
        let el = t.elapsed();
        if !st.success() {
            bail!("nsenter failed: {st}");
        }
        Ok(el)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(p) = self.inner_pid() {
            let _ = Command::new("kill").args(["-9", &p.to_string()]).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The storage peer: `cp -a --reflink=never SRC DST` (a real copy of the data), or with
/// `--reflink=always` (a clone sharing the data), then `sync -f DST` (syncfs of DST's
/// filesystem), timed together. A plain `cp -a` is no baseline on btrfs: coreutils 9 clones
/// by default. DST must not exist; it is removed again (untimed) before returning.
pub fn copy_tree(src: &Path, dst: &Path, reflink: bool) -> Result<Duration> {
    let mut cp = Command::new("cp");
    cp.arg("-a").arg(if reflink {
        "--reflink=always"
    } else {
        "--reflink=never"
    });
    cp.arg(src).arg(dst);
    let mut sync = Command::new("sync");
    sync.arg("-f").arg(dst);
    let t = Instant::now();
    crate::peers::run(&mut cp, "cp -a")?;
    crate::peers::run(&mut sync, "sync -f")?;
    let el = t.elapsed();
    std::fs::remove_dir_all(dst).with_context(|| format!("removing {}", dst.display()))?;
    if let Some(parent) = dst.parent() {
        crate::peers::run(Command::new("sync").arg("-f").arg(parent), "sync -f")?;
    }
    Ok(el)
}

/// Whether an executable named `cmd` is on `$PATH`.
pub fn on_path(cmd: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(cmd))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

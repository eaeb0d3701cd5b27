//! The base image: a Debian bookworm root filesystem that every sprite's overlay uses as its
//! read-only lower layer.
//!
//! Layout under the image dir:
//!
//! ```text
//! <image_dir>/.build.lock                 flock(2)ed while a build runs (one builder per host)
//! <image_dir>/debian-bookworm/rootfs/     the finished tree, never modified after READY exists
//! <image_dir>/debian-bookworm/READY       written last; without it the image does not exist
//! <image_dir>/debian-bookworm/rootfs.tmp-<pid>/   a build in progress (or a dead one)
//! ```
//!
//! A build runs `debootstrap --variant=minbase` into the temp dir, configures the tree (user
//! `sprite`, sudo, empty resolv.conf, no apt caches, `/.sprite` mount point), renames it to
//! `rootfs`, syncs, and only then writes `READY`. Whatever a crash leaves behind (a temp dir, a
//! `rootfs` without `READY`, even mounts debootstrap made inside it) is removed by the next build.
//!
//! Concurrency: callers in one process coalesce on a per-dir tokio mutex; processes coalesce on
//! the lock file. Everyone re-checks `READY` after taking each lock, so N concurrent callers
//! cause exactly one debootstrap.
//!
//! To force a rebuild, stop the sprites and delete `<image_dir>/debian-bookworm`.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex as StdMutex, OnceLock};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// Directory name of the (only) base image under the image dir.
pub const IMAGE_NAME: &str = "debian-bookworm";
/// Debian release the image is built from.
pub const SUITE: &str = "bookworm";
/// Mirror used when the host's apt configuration names none that serves [`SUITE`].
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// Environment variable that overrides the mirror.
pub const MIRROR_ENV: &str = "WISP_DEBIAN_MIRROR";
/// Packages installed on top of debootstrap's minbase variant.
pub const PACKAGES: &[&str] = &[
    "bash",
    "coreutils",
    "procps",
    "iproute2",
    "curl",
    "ca-certificates",
    "git",
    "python3",
    "sudo",
    "less",
    "vim-tiny",
    "nano",
    "tmux",
    "locales",
    "iputils-ping",
    "netbase",
    "psmisc",
];
/// uid and gid of the `sprite` user inside the image.
pub const SPRITE_UID: u32 = 1000;

/// One progress report of a build. `total` is an estimate that may grow or shrink while the
/// build runs; `done <= total` always holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageProgress {
    pub step: String,
    pub done: u64,
    pub total: u64,
}

/// Why the base image could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("debootstrap is not installed: apt-get install debootstrap")]
    DebootstrapMissing,
    #[error("building the base image needs root (debootstrap and chroot); running as uid {uid}")]
    NotRoot { uid: u32 },
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("debootstrap from {mirror} failed ({status}); last output:\n{tail}")]
    Debootstrap {
        mirror: String,
        status: ExitStatus,
        tail: String,
    },
    #[error("configuring the image failed at `{step}` ({status}): {output}")]
    Configure {
        step: String,
        status: ExitStatus,
        output: String,
    },
    #[error("a leftover mount under {} could not be removed: {mountpoint}", path.display())]
    StaleMount { path: PathBuf, mountpoint: String },
    #[error("image build task failed")]
    Task(#[source] tokio::task::JoinError),
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ImageError {
    let path = path.to_path_buf();
    move |source| ImageError::Io { op, path, source }
}

/// `<image_dir>/debian-bookworm/rootfs`: where the image is (or will be).
pub fn rootfs_path(image_dir: &Path) -> PathBuf {
    image_dir.join(IMAGE_NAME).join("rootfs")
}

/// Whether a finished image exists under `image_dir` (its READY marker is there).
pub fn is_ready(image_dir: &Path) -> bool {
    image_dir.join(IMAGE_NAME).join("READY").is_file() && rootfs_path(image_dir).is_dir()
}

/// Returns the base image's rootfs, building it first if it does not exist yet. Progress is
/// logged with `tracing`. Concurrent callers (threads or processes) share one build.
pub async fn ensure_base_image(image_dir: &Path) -> Result<PathBuf, ImageError> {
    if is_ready(image_dir) {
        return Ok(rootfs_path(image_dir));
    }
    let logger = ProgressLogger::default();
    build_base_image(image_dir, &|p| logger.report(p)).await
}

/// Builds the base image unless it already exists, reporting progress to `progress`, and
/// returns its rootfs. Takes the same locks as [`ensure_base_image`]; an existing image is
/// kept (one report with `step = "ready"`).
pub async fn build_base_image(
    image_dir: &Path,
    progress: &(dyn Fn(ImageProgress) + Send + Sync),
) -> Result<PathBuf, ImageError> {
    tokio::fs::create_dir_all(image_dir)
        .await
        .map_err(io_err("creating image dir", image_dir))?;
    let image_dir = tokio::fs::canonicalize(image_dir)
        .await
        .map_err(io_err("resolving image dir", image_dir))?;

    // In-process: one builder per image dir.
    let local = process_lock(&image_dir);
    let _local_guard = local.lock().await;
    if is_ready(&image_dir) {
        progress(ready_progress());
        return Ok(rootfs_path(&image_dir));
    }

    // Across processes: the lock file.
    let lock_path = image_dir.join(".build.lock");
    let _file_lock = {
        let path = lock_path.clone();
        tokio::task::spawn_blocking(move || FileLock::acquire(&path))
            .await
            .map_err(ImageError::Task)?
            .map_err(io_err("locking", &lock_path))?
    };
    if is_ready(&image_dir) {
        progress(ready_progress());
        return Ok(rootfs_path(&image_dir));
    }

    build_locked(&image_dir, progress).await
}

fn ready_progress() -> ImageProgress {
    ImageProgress {
        step: "ready".into(),
        done: 1,
        total: 1,
    }
}

/// Per-image-dir async mutexes shared by every caller in this process.
fn process_lock(image_dir: &Path) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: OnceLock<StdMutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>> =
        OnceLock::new();
    let mut map = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    map.entry(image_dir.to_path_buf()).or_default().clone()
}

/// An exclusive flock(2) on a file, released when dropped.
struct FileLock {
    _lock: Flock<File>,
}

impl FileLock {
    fn acquire(path: &Path) -> io::Result<Self> {
        let mut file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        loop {
            match Flock::lock(file, FlockArg::LockExclusive) {
                Ok(lock) => return Ok(Self { _lock: lock }),
                Err((f, Errno::EINTR)) => file = f,
                Err((_, errno)) => return Err(io::Error::from(errno)),
            }
        }
    }
}

/// The build proper; the caller holds both locks.
async fn build_locked(
    image_dir: &Path,
    progress: &(dyn Fn(ImageProgress) + Send + Sync),
) -> Result<PathBuf, ImageError> {
    let uid = nix::unistd::geteuid().as_raw();
    if uid != 0 {
        return Err(ImageError::NotRoot { uid });
    }
    let debootstrap = find_program("debootstrap", std::env::var_os("PATH").as_deref())
        .ok_or(ImageError::DebootstrapMissing)?;

    let base = image_dir.join(IMAGE_NAME);
    let rootfs = base.join("rootfs");
    tokio::fs::create_dir_all(&base)
        .await
        .map_err(io_err("creating", &base))?;

    // Whatever is here without READY is the debris of a dead build.
    progress(ImageProgress {
        step: "removing leftovers of earlier builds".into(),
        done: 0,
        total: ESTIMATED_STEPS,
    });
    {
        let base = base.clone();
        tokio::task::spawn_blocking(move || remove_stale(&base))
            .await
            .map_err(ImageError::Task)??;
    }

    let tmp = base.join(format!("rootfs.tmp-{}", std::process::id()));
    let mirror = choose_mirror();
    tracing::info!(%mirror, dir = %tmp.display(), "building base image with debootstrap");
    let mut tracker = ProgressTracker::new();
    run_debootstrap(&debootstrap, &tmp, &mirror, &mut tracker, progress).await?;

    configure_rootfs(&tmp, &mirror, &mut tracker, progress).await?;

    // Make sure no mount debootstrap made is left inside before the tree becomes the image.
    {
        let tmp = tmp.clone();
        tokio::task::spawn_blocking(move || unmount_under(&tmp))
            .await
            .map_err(ImageError::Task)??;
    }
    tracker.step(progress, "publishing image");
    tokio::fs::rename(&tmp, &rootfs)
        .await
        .map_err(io_err("renaming build dir to", &rootfs))?;
    // Everything must be on disk before READY says so.
    run_checked("sync", Command::new("sync"), "sync").await?;
    let ready = base.join("READY");
    let ready_tmp = base.join("READY.tmp");
    let stamp = format!("{}\n", chrono::Utc::now().to_rfc3339());
    tokio::fs::write(&ready_tmp, stamp)
        .await
        .map_err(io_err("writing", &ready_tmp))?;
    tokio::fs::rename(&ready_tmp, &ready)
        .await
        .map_err(io_err("writing", &ready))?;
    run_checked("sync", Command::new("sync"), "sync").await?;
    progress(ImageProgress {
        step: "ready".into(),
        done: tracker.total,
        total: tracker.total,
    });
    tracing::info!(rootfs = %rootfs.display(), "base image ready");
    Ok(rootfs)
}

/// Finds an executable named `name` in `path_var` (a PATH value) or the sbin dirs, which are
/// often missing from a non-login root PATH.
fn find_program(name: &str, path_var: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let mut dirs: Vec<PathBuf> = path_var
        .map(|p| std::env::split_paths(p).collect())
        .unwrap_or_default();
    if path_var.is_some() || dirs.is_empty() {
        for d in ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
            dirs.push(PathBuf::from(d));
        }
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    })
}

/// Removes `rootfs` and `rootfs.tmp-*` under `base` (no READY exists, so neither is in use),
/// unmounting anything a dead debootstrap left mounted inside them first.
fn remove_stale(base: &Path) -> Result<(), ImageError> {
    let _ = std::fs::remove_file(base.join("READY.tmp"));
    let entries = std::fs::read_dir(base).map_err(io_err("reading", base))?;
    for entry in entries {
        let entry = entry.map_err(io_err("reading", base))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == "rootfs" || name.starts_with("rootfs.tmp-") {
            let path = entry.path();
            tracing::info!(path = %path.display(), "removing leftover of an unfinished image build");
            unmount_under(&path)?;
            if path.is_dir() {
                std::fs::remove_dir_all(&path).map_err(io_err("removing", &path))?;
            } else {
                std::fs::remove_file(&path).map_err(io_err("removing", &path))?;
            }
        }
    }
    Ok(())
}

/// Lazily unmounts every mount point at or below `dir` (deepest first) and verifies none is
/// left, so that a recursive delete can never reach into /proc, /sys or a bind-mounted /dev.
fn unmount_under(dir: &Path) -> Result<(), ImageError> {
    let list = |dir: &Path| -> Result<Vec<String>, ImageError> {
        let path = Path::new("/proc/self/mountinfo");
        let text = std::fs::read_to_string(path).map_err(io_err("reading", path))?;
        Ok(mounts_under(&text, dir))
    };
    let mut mounts = list(dir)?;
    if mounts.is_empty() {
        return Ok(());
    }
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in &mounts {
        tracing::warn!(mountpoint = %m, "unmounting leftover mount in image build dir");
        let _ = std::process::Command::new("umount")
            .arg("--lazy")
            .arg(m)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    if let Some(m) = list(dir)?.into_iter().next() {
        return Err(ImageError::StaleMount {
            path: dir.to_path_buf(),
            mountpoint: m,
        });
    }
    Ok(())
}

/// Mount points (field 5 of mountinfo, octal escapes decoded) equal to `dir` or below it.
fn mounts_under(mountinfo: &str, dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().trim_end_matches('/').to_string();
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(crate::fsutil::unescape_mountinfo)
        .filter(|m| *m == prefix || m.starts_with(&format!("{prefix}/")))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// debootstrap and its progress

/// Steps a bookworm minbase build with [`PACKAGES`] reports (measured: ~710 debootstrap lines)
/// plus the configuration steps; the first estimate of `total`.
const ESTIMATED_STEPS: u64 = 720;
/// Configuration steps after debootstrap (see `configure_rootfs`), plus publishing.
const CONFIGURE_STEPS: u64 = 9;

/// Turns debootstrap's `I: ...` lines into [`ImageProgress`] reports.
#[derive(Debug)]
struct ProgressTracker {
    done: u64,
    total: u64,
    retrieved: u64,
    extracted: u64,
    unpacked: u64,
    configured: u64,
}

impl ProgressTracker {
    fn new() -> Self {
        Self {
            done: 0,
            total: ESTIMATED_STEPS,
            retrieved: 0,
            extracted: 0,
            unpacked: 0,
            configured: 0,
        }
    }

    /// Feeds one line of debootstrap output; returns a report when the line is a step.
    fn line(&mut self, line: &str) -> Option<ImageProgress> {
        let msg = line.strip_prefix("I: ")?.trim();
        let (verb, rest) = msg.split_once(' ').unwrap_or((msg, ""));
        let pkg = rest
            .split_whitespace()
            .next()
            .unwrap_or("")
            .trim_end_matches("...");
        let step = match verb {
            "Retrieving" => {
                // Index files (InRelease, Packages) are retrieved too; count only packages.
                if !matches!(pkg, "InRelease" | "Release" | "Packages" | "Release.gpg") {
                    self.retrieved += 1;
                }
                format!("retrieving {pkg}")
            }
            "Validating" => format!("validating {pkg}"),
            "Extracting" => {
                self.extracted += 1;
                format!("extracting {pkg}")
            }
            // Phase headers: "Unpacking required packages...", "Configuring the base system...".
            "Unpacking" | "Configuring" if matches!(pkg, "required" | "the") => {
                format!("{} {}", verb.to_lowercase(), rest.trim_end_matches("..."))
            }
            "Unpacking" => {
                self.unpacked += 1;
                format!("unpacking {pkg}")
            }
            "Configuring" => {
                self.configured += 1;
                format!("configuring {pkg}")
            }
            "Installing" => "installing core packages".into(),
            "Resolving" => "resolving dependencies".into(),
            "Base" => "base system installed".into(),
            _ => return None,
        };
        self.done += 1;
        self.reestimate();
        if verb == "Base" {
            // Only the configuration steps and the final report remain.
            self.total = self.done + CONFIGURE_STEPS + 1;
        }
        Some(self.report(step))
    }

    /// Once retrieval is over the package count N is known: each package is then unpacked and
    /// configured once, and about 60 % of them (the required set) extracted first.
    fn reestimate(&mut self) {
        if self.extracted > 0 || self.unpacked > 0 {
            let n = self.retrieved;
            let extract_left = (n * 6 / 10).saturating_sub(self.extracted);
            let extract_left = if self.unpacked > 0 { 0 } else { extract_left };
            let left = extract_left
                + n.saturating_sub(self.unpacked)
                + n.saturating_sub(self.configured)
                + 2
                + CONFIGURE_STEPS;
            self.total = self.done + left;
        }
        self.total = self.total.max(self.done + 1);
    }

    /// Counts one configuration step (after debootstrap) and reports it.
    fn step(&mut self, progress: &(dyn Fn(ImageProgress) + Send + Sync), step: &str) {
        self.done += 1;
        self.total = self.total.max(self.done + 1);
        progress(self.report(step.to_string()));
    }

    fn report(&self, step: String) -> ImageProgress {
        ImageProgress {
            step,
            done: self.done,
            total: self.total,
        }
    }
}

async fn run_debootstrap(
    debootstrap: &Path,
    target: &Path,
    mirror: &str,
    tracker: &mut ProgressTracker,
    progress: &(dyn Fn(ImageProgress) + Send + Sync),
) -> Result<(), ImageError> {
    progress(tracker.report(format!("debootstrap {SUITE} from {mirror}")));
    // If this process dies mid-build, debootstrap must not go on writing into a directory the
    // next build is about to delete: setpriv(1) makes the kernel kill it with its parent.
    let mut cmd = match find_program("setpriv", std::env::var_os("PATH").as_deref()) {
        Some(setpriv) => {
            let mut c = Command::new(setpriv);
            c.arg("--pdeathsig").arg("KILL").arg(debootstrap);
            c
        }
        None => Command::new(debootstrap),
    };
    cmd.arg("--variant=minbase")
        .arg(format!("--include={}", PACKAGES.join(",")))
        .arg(SUITE)
        .arg(target)
        .arg(mirror)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("LC_ALL", "C")
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(io_err("starting", debootstrap))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");

    // Both streams carry `I:` lines (which one depends on the debootstrap version).
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(64);
    let tx2 = tx.clone();
    let out_task = tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            if tx.send(l).await.is_err() {
                break;
            }
        }
    });
    let err_task = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            if tx2.send(l).await.is_err() {
                break;
            }
        }
    });

    let mut tail: std::collections::VecDeque<String> = Default::default();
    while let Some(line) = rx.recv().await {
        tracing::debug!(target: "wispd::image::debootstrap", "{line}");
        if let Some(p) = tracker.line(&line) {
            progress(p);
        }
        if tail.len() == 30 {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    let _ = out_task.await;
    let _ = err_task.await;
    let status = child
        .wait()
        .await
        .map_err(io_err("waiting for", debootstrap))?;
    if !status.success() {
        // debootstrap keeps its own log in the target; its end is the most useful part.
        let log = target.join("debootstrap/debootstrap.log");
        if let Ok(text) = tokio::fs::read_to_string(&log).await {
            for l in text
                .lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                tail.push_back(format!("[debootstrap.log] {l}"));
            }
        }
        return Err(ImageError::Debootstrap {
            mirror: mirror.to_string(),
            status,
            tail: Vec::from(tail).join("\n"),
        });
    }
    Ok(())
}

/// Runs a command, failing with its output when it exits non-zero.
async fn run_checked(step: &str, mut cmd: Command, what: &str) -> Result<(), ImageError> {
    let out = cmd
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| ImageError::Io {
            op: "running",
            path: PathBuf::from(what),
            source,
        })?;
    if !out.status.success() {
        let mut output = String::from_utf8_lossy(&out.stderr).into_owned();
        output.push_str(&String::from_utf8_lossy(&out.stdout));
        return Err(ImageError::Configure {
            step: step.to_string(),
            status: out.status,
            output: output.trim().to_string(),
        });
    }
    Ok(())
}

/// A command run inside the new tree with chroot(8) and a clean environment.
fn chroot_cmd(rootfs: &Path, argv: &[&str]) -> Command {
    let mut cmd = Command::new("chroot");
    cmd.arg(rootfs)
        .args(argv)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", "/root")
        .env("LC_ALL", "C")
        .env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}

async fn write_file(path: PathBuf, contents: String, mode: u32) -> Result<(), ImageError> {
    use std::os::unix::fs::PermissionsExt;
    tokio::fs::write(&path, contents)
        .await
        .map_err(io_err("writing", &path))?;
    tokio::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
        .await
        .map_err(io_err("setting mode of", &path))
}

/// Empties a directory without removing it.
async fn clear_dir(dir: &Path, keep: impl Fn(&str) -> bool) -> Result<(), ImageError> {
    let mut entries = match tokio::fs::read_dir(dir).await {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("reading", dir)(e)),
    };
    while let Some(entry) = entries.next_entry().await.map_err(io_err("reading", dir))? {
        let name = entry.file_name();
        if keep(&name.to_string_lossy()) {
            continue;
        }
        let path = entry.path();
        let ft = entry.file_type().await.map_err(io_err("reading", &path))?;
        if ft.is_dir() {
            tokio::fs::remove_dir_all(&path).await
        } else {
            tokio::fs::remove_file(&path).await
        }
        .map_err(io_err("removing", &path))?;
    }
    Ok(())
}

/// Turns a fresh debootstrap tree into a sprite image. Must report exactly
/// [`CONFIGURE_STEPS`] - 1 steps (publishing is the last one).
async fn configure_rootfs(
    rootfs: &Path,
    mirror: &str,
    tracker: &mut ProgressTracker,
    progress: &(dyn Fn(ImageProgress) + Send + Sync),
) -> Result<(), ImageError> {
    let uid = SPRITE_UID.to_string();

    tracker.step(progress, "creating user sprite");
    run_checked(
        "groupadd sprite",
        chroot_cmd(rootfs, &["groupadd", "--gid", &uid, "sprite"]),
        "chroot",
    )
    .await?;
    run_checked(
        "useradd sprite",
        chroot_cmd(
            rootfs,
            &[
                "useradd",
                "--uid",
                &uid,
                "--gid",
                &uid,
                "--groups",
                "sudo",
                "--create-home",
                "--home-dir",
                "/home/sprite",
                "--skel",
                "/etc/skel",
                "--shell",
                "/bin/bash",
                "sprite",
            ],
        ),
        "chroot",
    )
    .await?;
    // No password login at all ('*' matches no password); sudo needs none.
    run_checked(
        "usermod --password",
        chroot_cmd(rootfs, &["usermod", "--password", "*", "sprite"]),
        "chroot",
    )
    .await?;

    tracker.step(progress, "configuring sudo");
    let sudoers_d = rootfs.join("etc/sudoers.d");
    tokio::fs::create_dir_all(&sudoers_d)
        .await
        .map_err(io_err("creating", &sudoers_d))?;
    write_file(
        sudoers_d.join("sprite"),
        "sprite ALL=(ALL) NOPASSWD:ALL\n".into(),
        0o440,
    )
    .await?;

    tracker.step(progress, "generating locale en_US.UTF-8");
    let locale_gen = rootfs.join("etc/locale.gen");
    write_file(locale_gen, "en_US.UTF-8 UTF-8\n".into(), 0o644).await?;
    run_checked("locale-gen", chroot_cmd(rootfs, &["locale-gen"]), "chroot").await?;
    write_file(
        rootfs.join("etc/default/locale"),
        "LANG=C.UTF-8\n".into(),
        0o644,
    )
    .await?;

    tracker.step(progress, "writing host files");
    // The runtime provides hostname, hosts and resolv.conf per sprite; the image's are generic.
    write_file(rootfs.join("etc/hostname"), "sprite\n".into(), 0o644).await?;
    write_file(
        rootfs.join("etc/hosts"),
        "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n\
         ff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n"
            .into(),
        0o644,
    )
    .await?;
    let resolv = rootfs.join("etc/resolv.conf");
    // debootstrap may leave a symlink or the host's copy: replace it with an empty file.
    let _ = tokio::fs::remove_file(&resolv).await;
    write_file(resolv, String::new(), 0o644).await?;

    tracker.step(progress, "removing apt caches");
    clear_dir(&rootfs.join("var/cache/apt/archives"), |n| {
        n == "partial" || n == "lock"
    })
    .await?;
    clear_dir(&rootfs.join("var/cache/apt/archives/partial"), |_| false).await?;
    clear_dir(&rootfs.join("var/cache/apt"), |n| n == "archives").await?;
    clear_dir(&rootfs.join("var/lib/apt/lists"), |_| false).await?;
    // debootstrap's working dir (its log and package lists) is not needed any more.
    let dbs = rootfs.join("debootstrap");
    if tokio::fs::metadata(&dbs).await.is_ok() {
        tokio::fs::remove_dir_all(&dbs)
            .await
            .map_err(io_err("removing", &dbs))?;
    }

    tracker.step(progress, "creating /.sprite and /home/sprite");
    let dot_sprite = rootfs.join(".sprite");
    tokio::fs::create_dir_all(&dot_sprite)
        .await
        .map_err(io_err("creating", &dot_sprite))?;
    let home = rootfs.join("home/sprite");
    tokio::fs::create_dir_all(&home)
        .await
        .map_err(io_err("creating", &home))?;
    run_checked(
        "chown /home/sprite",
        chroot_cmd(
            rootfs,
            &["chown", "-R", &format!("{uid}:{uid}"), "/home/sprite"],
        ),
        "chroot",
    )
    .await?;

    tracker.step(progress, "checking the image");
    // The image must be able to run what the API promises: a shell as the user, and a sudoers
    // configuration that sudo accepts (running sudo itself would leave files in the home dir).
    run_checked(
        "visudo -c",
        chroot_cmd(rootfs, &["visudo", "-c", "-q"]),
        "chroot",
    )
    .await?;
    run_checked(
        "check sprite user",
        chroot_cmd(
            rootfs,
            &[
                "su",
                "-s",
                "/bin/bash",
                "sprite",
                "-c",
                "test \"$(id -u):$HOME\" = 1000:/home/sprite",
            ],
        ),
        "chroot",
    )
    .await?;

    tracker.step(progress, "writing /etc/wisp-image");
    let info = format!(
        "name={IMAGE_NAME}\nsuite={SUITE}\nvariant=minbase\nbuilt={}\nmirror={mirror}\npackages={}\n",
        chrono::Utc::now().to_rfc3339(),
        PACKAGES.join(",")
    );
    write_file(rootfs.join("etc/wisp-image"), info, 0o644).await?;
    Ok(())
}

/// Logs build progress at info level: every phase change, and at most every 10 % otherwise.
#[derive(Default)]
struct ProgressLogger {
    last: StdMutex<(String, u64)>,
}

impl ProgressLogger {
    fn report(&self, p: ImageProgress) {
        let phase = p.step.split(' ').next().unwrap_or("").to_string();
        let pct = (p.done * 100).checked_div(p.total).unwrap_or(100);
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.0 != phase || pct >= last.1 + 10 || p.step == "ready" {
            tracing::info!(step = %p.step, done = p.done, total = p.total, "building base image: {pct}%");
            *last = (phase, pct);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Choosing the mirror

/// The mirror debootstrap downloads from: `$WISP_DEBIAN_MIRROR`, else the host's apt mirror
/// for bookworm (or for the host's own Debian release), else deb.debian.org.
pub fn choose_mirror() -> String {
    if let Ok(m) = std::env::var(MIRROR_ENV) {
        let m = m.trim();
        if !m.is_empty() {
            return m.to_string();
        }
    }
    let host_codename = host_debian_codename(Path::new("/etc/os-release"));
    host_mirror(Path::new("/etc/apt"), SUITE, host_codename.as_deref())
        .unwrap_or_else(|| DEFAULT_MIRROR.to_string())
}

/// `VERSION_CODENAME` of the host if it is Debian (an Ubuntu mirror has no bookworm).
fn host_debian_codename(os_release: &Path) -> Option<String> {
    let text = std::fs::read_to_string(os_release).ok()?;
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(|v| v.trim().trim_matches('"').to_string())
    };
    (field("ID")? == "debian")
        .then(|| field("VERSION_CODENAME"))
        .flatten()
        .filter(|c| !c.is_empty())
}

/// One `deb` source: its URIs and suites.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptSource {
    pub uris: Vec<String>,
    pub suites: Vec<String>,
}

/// Reads `<apt_dir>/sources.list` and `<apt_dir>/sources.list.d/*.{list,sources}` in apt's
/// order and picks the mirror for `suite` (see [`pick_mirror`]).
pub fn host_mirror(apt_dir: &Path, suite: &str, host_codename: Option<&str>) -> Option<String> {
    let mut sources = Vec::new();
    if let Ok(text) = std::fs::read_to_string(apt_dir.join("sources.list")) {
        sources.extend(parse_one_line_sources(&text));
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(apt_dir.join("sources.list.d"))
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        match f.extension().and_then(|e| e.to_str()) {
            Some("list") => sources.extend(parse_one_line_sources(&text)),
            Some("sources") => sources.extend(parse_deb822_sources(&text)),
            _ => {}
        }
    }
    pick_mirror(&sources, suite, host_codename)
}

/// The first URI (in order) of a source whose suites include `suite` or `host_codename`
/// (exactly, or as `<codename>-updates` and the like), that is not a security mirror and that
/// debootstrap can fetch from (http, https, ftp or file).
pub fn pick_mirror(
    sources: &[AptSource],
    suite: &str,
    host_codename: Option<&str>,
) -> Option<String> {
    let wanted = |s: &str| {
        let s = s.trim_end_matches('/');
        if s.ends_with("-security") || s.contains("/updates") {
            return false;
        }
        [Some(suite), host_codename]
            .into_iter()
            .flatten()
            .any(|c| s == c || s.strip_prefix(c).is_some_and(|rest| rest.starts_with('-')))
    };
    sources
        .iter()
        .filter(|src| src.suites.iter().any(|s| wanted(s)))
        .flat_map(|src| src.uris.iter())
        .find(|uri| {
            let u = uri.to_ascii_lowercase();
            let scheme_ok = ["http://", "https://", "ftp://", "file:/"]
                .iter()
                .any(|p| u.starts_with(p));
            scheme_ok && !u.contains("security")
        })
        .map(|u| u.trim_end_matches('/').to_string())
}

/// Parses the one-line format: `deb [opt=val ...] URI SUITE [COMPONENT...]`.
pub fn parse_one_line_sources(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(rest) = line.strip_prefix("deb") else {
            continue;
        };
        // `deb-src` lines are not binary sources.
        if !rest.starts_with(char::is_whitespace) {
            continue;
        }
        let mut rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix('[') {
            let Some(end) = r.find(']') else { continue };
            rest = r[end + 1..].trim_start();
        }
        let mut fields = rest.split_whitespace();
        let (Some(uri), Some(suite)) = (fields.next(), fields.next()) else {
            continue;
        };
        out.push(AptSource {
            uris: vec![uri.to_string()],
            suites: vec![suite.to_string()],
        });
    }
    out
}

/// Parses the deb822 format (`*.sources`): stanzas separated by blank lines with `Types:`,
/// `URIs:`, `Suites:` and `Enabled:` fields; continuation lines start with whitespace.
pub fn parse_deb822_sources(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    let mut stanza: Vec<(String, String)> = Vec::new();
    let flush = |stanza: &mut Vec<(String, String)>, out: &mut Vec<AptSource>| {
        let get = |k: &str| {
            stanza
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.as_str())
        };
        let types = get("Types").unwrap_or("");
        let enabled = get("Enabled").map(|v| v.trim().to_ascii_lowercase());
        if types.split_whitespace().any(|t| t == "deb") && enabled.as_deref() != Some("no") {
            let uris: Vec<String> = get("URIs")
                .unwrap_or("")
                .split_whitespace()
                .map(String::from)
                .collect();
            let suites: Vec<String> = get("Suites")
                .unwrap_or("")
                .split_whitespace()
                .map(String::from)
                .collect();
            if !uris.is_empty() && !suites.is_empty() {
                out.push(AptSource { uris, suites });
            }
        }
        stanza.clear();
    };
    for raw in text.lines() {
        if raw.trim_start().starts_with('#') {
            continue;
        }
        if raw.trim().is_empty() {
            flush(&mut stanza, &mut out);
            continue;
        }
        if raw.starts_with([' ', '\t']) {
            if let Some(last) = stanza.last_mut() {
                let cont = raw.trim();
                if cont != "." {
                    last.1.push(' ');
                    last.1.push_str(cont);
                }
            }
            continue;
        }
        if let Some((k, v)) = raw.split_once(':') {
            stanza.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    flush(&mut stanza, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEB822: &str = "\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
# http://snapshot.debian.org/archive/debian-security/20250520T000000Z
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
";

    #[test]
    fn deb822_host_fixture() {
        let s = parse_deb822_sources(DEB822);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].uris, ["http://deb.debian.org/debian"]);
        assert_eq!(s[0].suites, ["bookworm", "bookworm-updates"]);
        assert_eq!(
            pick_mirror(&s, "bookworm", None).as_deref(),
            Some("http://deb.debian.org/debian")
        );
    }

    #[test]
    fn deb822_security_first_disabled_and_multiline() {
        let text = "\
Types: deb deb-src
URIs: https://security.debian.org/debian-security
Suites: bookworm-security

Types: deb
URIs: http://disabled.example/debian
Suites: bookworm
Enabled: no

Types: deb-src
URIs: http://src-only.example/debian
Suites: bookworm

Types: deb
URIs:
 http://mirror.example/debian/
 http://second.example/debian
Suites: bookworm
 bookworm-updates
Components: main
";
        let s = parse_deb822_sources(text);
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(s[1].uris.len(), 2);
        assert_eq!(s[1].suites, ["bookworm", "bookworm-updates"]);
        assert_eq!(
            pick_mirror(&s, "bookworm", None).as_deref(),
            Some("http://mirror.example/debian")
        );
    }

    #[test]
    fn one_line_forms() {
        let text = "\
# a comment
deb-src http://src.example/debian bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] https://packages.cloud.google.com/apt cloud-sdk-bookworm main
deb http://security.debian.org/debian-security bookworm-security main
deb [ trusted=yes ] http://ftp.de.debian.org/debian/ bookworm main contrib # trailing
deb http://ftp.de.debian.org/debian bookworm-updates main
";
        let s = parse_one_line_sources(text);
        assert_eq!(s.len(), 4, "{s:?}");
        assert_eq!(s[0].suites, ["cloud-sdk-bookworm"]);
        assert_eq!(s[2].uris, ["http://ftp.de.debian.org/debian/"]);
        // cloud-sdk-bookworm is not bookworm; security is skipped; trailing slash trimmed.
        assert_eq!(
            pick_mirror(&s, "bookworm", None).as_deref(),
            Some("http://ftp.de.debian.org/debian")
        );
    }

    #[test]
    fn host_codename_and_fallback() {
        let trixie = parse_one_line_sources("deb http://mirror.example/debian trixie main\n");
        assert_eq!(pick_mirror(&trixie, "bookworm", None), None);
        assert_eq!(
            pick_mirror(&trixie, "bookworm", Some("trixie")).as_deref(),
            Some("http://mirror.example/debian")
        );
        let ubuntu = parse_one_line_sources("deb http://archive.ubuntu.com/ubuntu jammy main\n");
        assert_eq!(pick_mirror(&ubuntu, "bookworm", None), None);
        let cdrom = parse_one_line_sources("deb cdrom:[Debian]/ bookworm main\n");
        assert_eq!(pick_mirror(&cdrom, "bookworm", None), None);
    }

    fn scratch_dir(tag: &str) -> PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let d = std::env::temp_dir().join(format!(
            "wisp-image-test-{}-{tag}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn host_mirror_reads_files_in_order() {
        let apt = scratch_dir("apt");
        std::fs::write(apt.join("sources.list"), "# empty\n").unwrap();
        std::fs::create_dir(apt.join("sources.list.d")).unwrap();
        std::fs::write(
            apt.join("sources.list.d/debian.sources"),
            DEB822.replace("deb.debian.org", "mirror.example"),
        )
        .unwrap();
        std::fs::write(
            apt.join("sources.list.d/a.list"),
            "deb http://first.example/debian bookworm main\n",
        )
        .unwrap();
        std::fs::write(
            apt.join("sources.list.d/z.list.disabled"),
            "deb http://never.example/debian bookworm main\n",
        )
        .unwrap();
        assert_eq!(
            host_mirror(&apt, "bookworm", None).as_deref(),
            Some("http://first.example/debian")
        );
        std::fs::remove_file(apt.join("sources.list.d/a.list")).unwrap();
        assert_eq!(
            host_mirror(&apt, "bookworm", None).as_deref(),
            Some("http://mirror.example/debian")
        );
        std::fs::remove_dir_all(&apt).unwrap();
    }

    #[test]
    fn os_release_codename_only_for_debian() {
        let d = scratch_dir("osr");
        let f = d.join("os-release");
        std::fs::write(&f, "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_CODENAME=bookworm\n").unwrap();
        assert_eq!(host_debian_codename(&f).as_deref(), Some("bookworm"));
        std::fs::write(&f, "ID=ubuntu\nID_LIKE=debian\nVERSION_CODENAME=jammy\n").unwrap();
        assert_eq!(host_debian_codename(&f), None);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn progress_from_debootstrap_lines() {
        let mut t = ProgressTracker::new();
        let lines = [
            "I: Target architecture can be executed",
            "I: Retrieving InRelease ",
            "I: Checking Release signature",
            "I: Retrieving Packages ",
            "I: Validating Packages ",
            "I: Resolving dependencies of required packages...",
            "I: Retrieving adduser 3.134",
            "I: Validating adduser 3.134",
            "I: Retrieving bash 5.2.15-2+b13",
            "I: Validating bash 5.2.15-2+b13",
            "W: some warning",
            "I: Chosen extractor for .deb packages: dpkg-deb",
            "I: Extracting bash...",
            "I: Installing core packages...",
            "I: Unpacking required packages...",
            "I: Unpacking adduser...",
            "I: Unpacking bash...",
            "I: Configuring adduser...",
            "I: Configuring bash...",
            "I: Base system installed successfully.",
        ];
        let reports: Vec<ImageProgress> = lines.iter().filter_map(|l| t.line(l)).collect();
        assert_eq!(reports[0].step, "retrieving InRelease");
        assert!(reports.iter().any(|r| r.step == "extracting bash"));
        assert!(reports
            .iter()
            .any(|r| r.step.starts_with("configuring adduser")));
        assert_eq!(t.retrieved, 2);
        assert_eq!(t.unpacked, 2);
        assert!(reports
            .iter()
            .any(|r| r.step == "unpacking required packages"));
        for w in reports.windows(2) {
            assert!(w[1].done > w[0].done);
        }
        for r in &reports {
            assert!(r.done < r.total, "{r:?}");
        }
        // At the end only the configuration steps remain.
        let last = reports.last().unwrap();
        assert_eq!(last.total - last.done, CONFIGURE_STEPS + 1, "{last:?}");
    }

    #[test]
    fn mountinfo_filter() {
        let info = "\
22 1 8:1 / / rw - ext4 /dev/sda1 rw
90 22 0:5 / /var/img/debian-bookworm/rootfs.tmp-7/proc rw - proc proc rw
91 22 0:6 / /var/img/debian-bookworm/rootfs.tmp-7/sys rw - sysfs sys rw
92 22 0:7 / /var/img/debian-bookworm/rootfs.tmp-77 rw - tmpfs t rw
93 22 0:8 / /var/img/with\\040space rw - tmpfs t rw
";
        let dir = Path::new("/var/img/debian-bookworm/rootfs.tmp-7");
        assert_eq!(
            mounts_under(info, dir),
            [
                "/var/img/debian-bookworm/rootfs.tmp-7/proc",
                "/var/img/debian-bookworm/rootfs.tmp-7/sys"
            ]
        );
        assert_eq!(
            mounts_under(info, Path::new("/var/img/with space")),
            ["/var/img/with space"]
        );
    }

    #[test]
    fn find_program_searches_path_then_sbin() {
        let d = scratch_dir("bin");
        assert_eq!(find_program("wisp-no-such-tool", Some(d.as_os_str())), None);
        let tool = d.join("wisp-fake-tool");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        assert_eq!(find_program("wisp-fake-tool", Some(d.as_os_str())), None);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            find_program("wisp-fake-tool", Some(d.as_os_str())),
            Some(tool)
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn missing_debootstrap_message() {
        assert_eq!(
            ImageError::DebootstrapMissing.to_string(),
            "debootstrap is not installed: apt-get install debootstrap"
        );
    }

    #[tokio::test]
    async fn ready_image_is_returned_without_building() {
        let d = scratch_dir("ready");
        let base = d.join(IMAGE_NAME);
        std::fs::create_dir_all(base.join("rootfs/etc")).unwrap();
        std::fs::write(base.join("READY"), "x\n").unwrap();
        let got = ensure_base_image(&d).await.unwrap();
        assert_eq!(got, rootfs_path(&d));
        let seen = StdMutex::new(Vec::new());
        let got2 = build_base_image(&d, &|p| seen.lock().unwrap().push(p))
            .await
            .unwrap();
        assert_eq!(got2, rootfs_path(&d.canonicalize().unwrap()));
        assert_eq!(seen.into_inner().unwrap(), [ready_progress()]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn stale_builds_are_removed() {
        let d = scratch_dir("stale");
        let base = d.join(IMAGE_NAME);
        std::fs::create_dir_all(base.join("rootfs.tmp-123/etc")).unwrap();
        std::fs::create_dir_all(base.join("rootfs/usr")).unwrap();
        std::fs::write(base.join("READY.tmp"), "").unwrap();
        std::fs::write(base.join("keep-me"), "").unwrap();
        remove_stale(&base).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(&base)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["keep-me"]);
        std::fs::remove_dir_all(&d).unwrap();
    }
}

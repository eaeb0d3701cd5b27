//! The container peers, on the same Debian image Wisp uses: `bwrap`, `crun run`, `podman run
//! --rm` (no network and the default CNI bridge), `podman exec`, `podman commit` and
//! `lxc-attach`. `bench/run` installs them from Debian packages when missing; a peer that
//! still cannot run becomes a skipped figure with the reason.
//!
//! Everything a peer leaves is undone by [`Peers`]' drop: containers, the imported podman
//! image, the LXC container, its cgroups, the CNI bridge, the nftables tables iptables-nft made
//! for it, `ip_forward`, the hugetlb v1 mount and the scratch dir.

use std::borrow::BorrowMut;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::floor::on_path;

/// podman asks for RLIMIT_NOFILE 1048576 and a high RLIMIT_NPROC; this host's bounding set
/// lacks CAP_SYS_RESOURCE, so nothing can go above the hard limits (primitives.md §2).
const PODMAN_ULIMITS: [&str; 4] = [
    "--ulimit",
    "nofile=20000:20000",
    "--ulimit",
    "nproc=4096:4096",
];

/// Runs a command to its end; an error carries its stderr. Returns stdout.
pub fn run(mut cmd: impl BorrowMut<Command>, what: &str) -> Result<String> {
    let out = cmd
        .borrow_mut()
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Times one run of `cmd`, which must succeed.
fn timed(mut cmd: impl BorrowMut<Command>, what: &str) -> Result<Duration> {
    cmd.borrow_mut().stdout(Stdio::null());
    let t = Instant::now();
    run(cmd, what)?;
    Ok(t.elapsed())
}

fn cmd(program: &str, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.args(args);
    c
}

/// The tables in `nft list tables` (`family name`).
fn nft_tables() -> BTreeSet<String> {
    Command::new("nft")
        .args(["list", "tables"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.strip_prefix("table "))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
const HUGETLB_V1: &str = "/sys/fs/cgroup/hugetlb";
const CNI_BRIDGE: &str = "cni-podman0";
/// State dirs podman, CNI, crun and LXC make on first use; removed at the end if the run made
/// them (and nothing is mounted below them).
const STATE_DIRS: [&str; 6] = [
    "/var/lib/containers",
    "/var/lib/cni",
    "/run/containers",
    "/run/libpod",
    "/run/crun",
    "/run/lxc",
];
/// Which of [`STATE_DIRS`] existed at the start of the run (the first call, which `main` makes
/// before anything runs a peer: even `podman --version` makes /run/crun), so that no later
/// [`Peers`] takes a dir an earlier one left for the host's.
pub fn state_dirs_at_start() -> &'static [bool] {
    static AT_START: std::sync::OnceLock<Vec<bool>> = std::sync::OnceLock::new();
    AT_START.get_or_init(|| STATE_DIRS.iter().map(|d| Path::new(d).exists()).collect())
}

/// Parent cgroups podman (`libpod_parent`, with conmon's below) and LXC (`lxc.pivot`) make in
/// every hierarchy and leave behind, empty.
const CGROUP_PARENTS: [&str; 2] = ["libpod_parent", "lxc.pivot"];

/// The cgroup dirs named in [`CGROUP_PARENTS`], in every hierarchy under /sys/fs/cgroup.
fn cgroup_parents() -> BTreeSet<PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|h| CGROUP_PARENTS.map(|c| h.path().join(c)))
        .filter(|p| p.is_dir())
        .collect()
}

/// Removes the cgroup tree at `dir`, deepest first (rmdir: cgroups cannot be unlinked, and
/// one that still has a process stays, which the caller reports).
fn remove_cgroup_tree(dir: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)?.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup_tree(&e.path())?;
        }
    }
    std::fs::remove_dir(dir)
}

/// Whether a `conmon` or `podman` process is running (this run's, after its containers: the
/// host has no other podman user while the bench runs).
fn podman_busy() -> bool {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            std::fs::read_to_string(e.path().join("comm"))
                .is_ok_and(|c| matches!(c.trim(), "conmon" | "podman"))
        })
}

/// Whether anything is mounted at or below `dir`.
fn mounted_below(dir: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| Path::new(m).starts_with(dir))
}

pub struct Peers {
    rootfs: PathBuf,
    /// Scratch dir: the OCI bundle.
    dir: PathBuf,
    /// Prefix of every name this run gives (containers, image, LXC container).
    tag: String,
    hugetlb_mounted: bool,
    image: Option<String>,
    containers: Vec<String>,
    lxc: Option<String>,
    /// What the host had before podman's default network touched it.
    ip_forward: Option<String>,
    had_bridge: bool,
    tables_before: Option<BTreeSet<String>>,
    cgroups_before: Option<BTreeSet<PathBuf>>,
    state_dirs_before: Vec<bool>,
}

impl Peers {
    /// `rootfs`: the Debian image's root, used read-only (bwrap, crun) or as the lower layer
    /// (LXC) or imported (podman).
    pub fn new(rootfs: &Path) -> Result<Peers> {
        let tag = format!("wisp-bench-{}", std::process::id());
        let dir = std::env::temp_dir().join(format!("{tag}-peers"));
        std::fs::create_dir_all(&dir)?;
        Ok(Peers {
            rootfs: rootfs.to_path_buf(),
            dir,
            tag,
            hugetlb_mounted: false,
            image: None,
            containers: Vec::new(),
            lxc: None,
            ip_forward: std::fs::read_to_string(IP_FORWARD).ok(),
            had_bridge: link_exists(CNI_BRIDGE),
            tables_before: Some(nft_tables()),
            cgroups_before: Some(cgroup_parents()),
            state_dirs_before: state_dirs_at_start().to_vec(),
        })
    }

    /// crun 1.8 refuses the hybrid cgroup layout while cgroup2 still owns a controller, and
    /// here `hugetlb` is bound to cgroup2 at boot: mounting it as a v1 hierarchy moves it
    /// (primitives.md §2). Wisp uses no hugetlb controller. The kernel keeps that hierarchy
    /// until reboot even after the unmount at the end, so crun keeps working.
    fn hugetlb_fix(&mut self) -> Result<()> {
        let ctrl = std::fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers")
            .unwrap_or_default();
        if !ctrl.split_whitespace().any(|c| c == "hugetlb") {
            return Ok(());
        }
        std::fs::create_dir_all(HUGETLB_V1)?;
        run(
            cmd(
                "mount",
                &["-t", "cgroup", "-o", "hugetlb", "cgroup", HUGETLB_V1],
            ),
            "mount the hugetlb v1 hierarchy (crun needs cgroup2 without controllers)",
        )?;
        self.hugetlb_mounted = true;
        Ok(())
    }

    /// Why `tool` cannot run, if it cannot.
    pub fn missing(tool: &str, package: &str) -> Option<String> {
        (!on_path(tool)).then(|| format!("{tool} not installed (Debian package {package})"))
    }

    /// `bwrap --unshare-all --ro-bind ROOTFS / --proc /proc --dev /dev --tmpfs /tmp /bin/true`:
    /// bubblewrap 0.8 has no overlay, so the root is the image read-only.
    pub fn bwrap_true(&self) -> Result<Duration> {
        let r = self.rootfs.to_string_lossy();
        timed(
            cmd(
                "bwrap",
                &[
                    "--unshare-all",
                    "--ro-bind",
                    &r,
                    "/",
                    "--proc",
                    "/proc",
                    "--dev",
                    "/dev",
                    "--tmpfs",
                    "/tmp",
                    "/bin/true",
                ],
            ),
            "bwrap",
        )
    }

    /// An OCI bundle from `crun spec`'s defaults (mount, pid, net, ipc, uts namespaces) running
    /// `/bin/true` on the image, read-only.
    fn bundle(&mut self) -> Result<PathBuf> {
        let b = self.dir.join("bundle");
        if b.join("config.json").exists() {
            return Ok(b);
        }
        self.hugetlb_fix()?;
        std::fs::create_dir_all(&b)?;
        run(cmd("crun", &["spec"]).current_dir(&b), "crun spec")?;
        let p = b.join("config.json");
        let mut spec: serde_json::Value = serde_json::from_slice(&std::fs::read(&p)?)?;
        spec["process"]["terminal"] = false.into();
        spec["process"]["args"] = serde_json::json!(["/bin/true"]);
        spec["root"]["path"] = self.rootfs.to_string_lossy().into_owned().into();
        spec["root"]["readonly"] = true.into();
        std::fs::write(&p, serde_json::to_vec_pretty(&spec)?)?;
        Ok(b)
    }

    /// `crun run -b BUNDLE ID` (it deletes the container when `true` exits).
    pub fn crun_true(&mut self, i: usize) -> Result<Duration> {
        let b = self.bundle()?;
        let id = format!("{}-crun{i}", self.tag);
        timed(
            cmd("crun", &["run", "-b", &b.to_string_lossy(), &id]),
            "crun run",
        )
    }

    /// The image as a local podman image (`tar | podman import`; never a registry pull).
    fn image(&mut self) -> Result<String> {
        if let Some(i) = &self.image {
            return Ok(i.clone());
        }
        self.hugetlb_fix()?;
        let name = format!("localhost/{}:latest", self.tag);
        eprintln!("  podman import of {} as {name}...", self.rootfs.display());
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(&self.rootfs)
            .args(["-cf", "-", "."])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("running tar")?;
        let stdin = tar.stdout.take().context("tar stdout")?;
        let out = Command::new("podman")
            .args(["import", "-q", "-", &name])
            .stdin(stdin)
            .output()
            .context("running podman import")?;
        let st = tar.wait()?;
        ensure!(
            out.status.success() && st.success(),
            "podman import failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        self.image = Some(name.clone());
        Ok(name)
    }

    /// `podman run --rm [--network=none] IMAGE /bin/true`. The default network is podman's CNI
    /// bridge: it makes `cni-podman0`, iptables rules and sets `ip_forward`, all undone at the
    /// end; `true` sends nothing.
    pub fn podman_run_true(&mut self, network: bool) -> Result<Duration> {
        let img = self.image()?;
        let mut c = cmd("podman", &["run", "--rm"]);
        if !network {
            c.arg("--network=none");
        }
        c.args(PODMAN_ULIMITS).args([&img, "/bin/true"]);
        timed(&mut c, "podman run")
    }

    /// The name of this run's container `what`.
    pub fn container_name(&self, what: &str) -> String {
        format!("{}-{what}", self.tag)
    }

    /// Starts a detached podman container `what` running `sleep infinity`; returns its name.
    pub fn podman_start(&mut self, what: &str) -> Result<String> {
        let img = self.image()?;
        let name = self.container_name(what);
        self.containers.push(name.clone());
        run(
            cmd("podman", &["run", "-d", "--name", &name, "--network=none"])
                .args(PODMAN_ULIMITS)
                .args([&img, "/bin/sleep", "infinity"]),
            "podman run -d",
        )?;
        Ok(name)
    }

    /// `podman exec NAME /bin/true`.
    pub fn podman_exec_true(&self, name: &str) -> Result<Duration> {
        timed(cmd("podman", &["exec", name, "/bin/true"]), "podman exec")
    }

    /// Runs `script` with `sh -c` in podman container `name` to its end.
    pub fn podman_sh(&self, name: &str, script: &str) -> Result<()> {
        run(
            cmd("podman", &["exec", name, "sh", "-c", script]),
            "podman exec sh",
        )
        .map(drop)
    }

    /// `podman commit NAME IMAGE` timed, then the new image removed (untimed).
    pub fn podman_commit(&self, name: &str, i: usize) -> Result<Duration> {
        let img = format!("localhost/{}-commit:{i}", self.tag);
        let el = timed(
            cmd("podman", &["commit", "-q", name, &img]),
            "podman commit",
        )?;
        run(cmd("podman", &["rmi", "-f", &img]), "podman rmi")?;
        Ok(el)
    }

    pub fn podman_rm(&mut self, name: &str) {
        let _ = run(cmd("podman", &["rm", "-f", "-t", "0", name]), "podman rm");
        self.containers.retain(|c| c != name);
    }

    /// An LXC container on an overlay over the image (empty network namespace, `sleep
    /// infinity` as init), started; returns its name.
    pub fn lxc_start(&mut self) -> Result<String> {
        let name = format!("{}-lxc", self.tag);
        let dir = Path::new("/var/lib/lxc").join(&name);
        std::fs::create_dir_all(dir.join("delta0"))?;
        self.lxc = Some(name.clone());
        let mut f = std::fs::File::create(dir.join("config"))?;
        write!(
            f,
            "lxc.uts.name = {name}\n\
             lxc.rootfs.path = overlay:{}:{}\n\
             lxc.net.0.type = empty\n\
             lxc.apparmor.profile = unconfined\n\
             lxc.autodev = 1\n\
             lxc.tty.max = 0\n\
             lxc.pty.max = 16\n\
             lxc.mount.auto = cgroup:mixed proc:mixed sys:ro\n\
             lxc.init.cmd = /bin/sleep infinity\n\
             lxc.signal.halt = SIGKILL\n",
            self.rootfs.display(),
            dir.join("delta0").display()
        )?;
        drop(f);
        run(cmd("lxc-start", &["-n", &name, "-d"]), "lxc-start")?;
        run(
            cmd("lxc-wait", &["-n", &name, "-s", "RUNNING", "-t", "10"]),
            "lxc-wait",
        )?;
        Ok(name)
    }

    /// `lxc-attach -n NAME -- /bin/true`.
    pub fn lxc_attach_true(&self, name: &str) -> Result<Duration> {
        timed(
            cmd("lxc-attach", &["-n", name, "--", "/bin/true"]),
            "lxc-attach",
        )
    }

    fn lxc_cleanup(&mut self) {
        let Some(name) = self.lxc.take() else {
            return;
        };
        let _ = run(cmd("lxc-stop", &["-n", &name, "-k"]), "lxc-stop");
        let _ = std::fs::remove_dir_all(Path::new("/var/lib/lxc").join(&name));
        // LXC names its cgroups after the container (lxc.payload.NAME, lxc.monitor.NAME).
        for h in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten() {
            let Ok(h) = h else { continue };
            for sub in ["lxc.payload", "lxc.monitor"] {
                let _ = std::fs::remove_dir(h.path().join(format!("{sub}.{name}")));
            }
        }
    }

    /// Undoes everything; returns what could not be undone.
    pub fn cleanup(&mut self) -> Vec<String> {
        let mut left = Vec::new();
        self.lxc_cleanup();
        for c in std::mem::take(&mut self.containers) {
            let _ = run(cmd("podman", &["rm", "-f", "-t", "0", &c]), "podman rm");
        }
        if let Some(img) = self.image.take() {
            if let Err(e) = run(cmd("podman", &["rmi", "-f", &img]), "podman rmi") {
                left.push(e.to_string());
            }
        }
        if !self.had_bridge && link_exists(CNI_BRIDGE) {
            let _ = run(cmd("ip", &["link", "del", CNI_BRIDGE]), "ip link del");
        }
        if let Some(before) = self.tables_before.take() {
            // iptables-nft makes these for the CNI plugins' rules; other tables (wispd's
            // `inet wisp-*`, also those of other daemons on the host) are not ours.
            for t in nft_tables().difference(&before) {
                let ours = ["ip ", "ip6 "].iter().any(|f| t.starts_with(f))
                    && ["filter", "nat", "mangle", "raw"]
                        .iter()
                        .any(|n| t.ends_with(&format!(" {n}")));
                if ours {
                    let mut c = Command::new("nft");
                    c.arg("delete").arg("table").args(t.split_whitespace());
                    if let Err(e) = run(&mut c, "nft delete table") {
                        left.push(e.to_string());
                    }
                }
            }
        }
        if let Some(v) = self.ip_forward.take() {
            if std::fs::read_to_string(IP_FORWARD).ok().as_ref() != Some(&v) {
                let _ = std::fs::write(IP_FORWARD, v);
            }
        }
        // conmon starts `podman container cleanup` when a container exits, after `podman rm`
        // returned; it calls crun, which makes /run/crun again: let them finish first (they
        // also still sit in the `libpod_parent/conmon` cgroups).
        let deadline = Instant::now() + Duration::from_secs(15);
        while podman_busy() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if let Some(before) = self.cgroups_before.take() {
            for c in cgroup_parents().difference(&before) {
                if let Err(e) = remove_cgroup_tree(c) {
                    left.push(format!("cgroup {}: {e}", c.display()));
                }
            }
        }
        for (d, existed) in STATE_DIRS
            .iter()
            .zip(std::mem::take(&mut self.state_dirs_before))
        {
            let d = Path::new(d);
            if !existed && d.exists() {
                if mounted_below(d) {
                    left.push(format!("{} (mounts below it)", d.display()));
                } else if let Err(e) = std::fs::remove_dir_all(d) {
                    left.push(format!("{}: {e}", d.display()));
                }
            }
        }
        // Last: podman and LXC made their parent cgroups in this hierarchy too.
        if std::mem::take(&mut self.hugetlb_mounted) {
            if let Err(e) = run(cmd("umount", &[HUGETLB_V1]), "umount hugetlb") {
                left.push(e.to_string());
            }
            let _ = std::fs::remove_dir(HUGETLB_V1);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        left
    }
}

impl Drop for Peers {
    fn drop(&mut self) {
        for l in self.cleanup() {
            eprintln!("peers: left after the run: {l}");
        }
    }
}

//! The sprite's init: pid 1 of the sprite's pid namespace.
//!
//! It builds the sprite's root (overlay + /proc, /sys, /dev, /run), pivots into it, and then
//! serves the keeper over a SOCK_SEQPACKET pair: it forks the commands the keeper asks for
//! (so they start inside every namespace and the root, as the right user), passes their
//! pipe/PTY ends back with SCM_RIGHTS, reaps every zombie of the sprite, and reports the exit
//! codes of the commands it started. It is single-threaded, so fork is safe here.

use std::collections::HashSet;
use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{unshare, CloneFlags};
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::sys::signal::{kill, sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{
    chdir, dup2, execve, pipe2, pivot_root, setgid, setgroups, setsid, setuid, Gid, Pid, Uid,
};
use serde::{Deserialize, Serialize};
use wisp_sys::process::{fork_single_threaded, Forked};

use crate::config::KeeperConfig;
use crate::passwd;
use crate::proto::SpawnSpec;

/// Keeper → init.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub(crate) enum ToInit {
    Spawn { req: u64, spec: SpawnSpec },
    Signal { pid: i32, signal: i32 },
}

/// Init → keeper. `Spawned` carries descriptors: the PTY master for a TTY command; else
/// the write end of stdin (only when `has_stdin`), then the read ends of stdout and stderr.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub(crate) enum FromInit {
    Ready,
    Failed {
        message: String,
    },
    Spawned {
        req: u64,
        pid: i32,
        has_stdin: bool,
    },
    /// `code` is `resource_exhausted` when the sprite hit a limit (pids, memory, files).
    SpawnFailed {
        req: u64,
        code: String,
        message: String,
    },
    Exited {
        pid: i32,
        code: i32,
    },
}

pub(crate) const MSG_MAX: usize = 256 * 1024;

pub(crate) fn send(sock: &OwnedFd, msg: &FromInit, fds: &[std::os::fd::BorrowedFd<'_>]) -> bool {
    let bytes = serde_json::to_vec(msg).unwrap_or_default();
    wisp_sys::fd::send_with_fds(sock.as_fd(), &bytes, fds).is_ok()
}

/// Entry point of the cloned child. Never returns normally: the value is the exit status.
pub(crate) fn run(cfg: &KeeperConfig, chan: &OwnedFd, sync: &OwnedFd) -> isize {
    // Wait until the keeper has put us into the sprite's cgroups.
    let mut b = [0u8; 1];
    if nix::unistd::read(sync.as_raw_fd(), &mut b) != Ok(1) {
        return 1;
    }
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    // Reach the root and the sprite dir while we still have the host's root ids: as the
    // sprite's root we could not even pass through wispd's private (0700) directories.
    // From here on the root is `.` and the sprite dir is this descriptor.
    let sprite_dir = match chdir(cfg.root_mount.as_path()).and_then(|_| {
        open(
            cfg.sprite_dir.as_path(),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
    }) {
        Ok(fd) => fd,
        Err(e) => {
            let message = format!("opening the sprite's root and dir: {e}");
            send(chan, &FromInit::Failed { message }, &[]);
            return 1;
        }
    };
    if cfg.userns.is_some() {
        // The keeper has written our id maps by now, but we still carry the host's root ids,
        // which mean nothing in here (files we create would have no owner): become this
        // namespace's root.
        let root = (Gid::from_raw(0), Uid::from_raw(0));
        let became = setgroups(&[])
            .and_then(|_| nix::unistd::setresgid(root.0, root.0, root.0))
            .and_then(|_| nix::unistd::setresuid(root.1, root.1, root.1));
        if let Err(e) = became {
            let message = format!("becoming root of the sprite's user namespace: {e}");
            send(chan, &FromInit::Failed { message }, &[]);
            return 1;
        }
    }
    if let Err(message) = setup(cfg, sprite_dir) {
        send(chan, &FromInit::Failed { message }, &[]);
        return 1;
    }
    wisp_sys::fd::close_all_from(3, &[chan.as_raw_fd()]);
    // Start over as a fresh image: pid 1 then shows as `wisp-init` instead of the keeper's
    // command line (host paths), and holds none of the keeper's memory.
    if let Err(e) = nix::fcntl::fcntl(
        chan.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    ) {
        send(
            chan,
            &FromInit::Failed {
                message: format!("fcntl: {e}"),
            },
            &[],
        );
        return 1;
    }
    let argv = [c"wisp-init"];
    let mut env =
        vec![CString::new(format!("{INIT_FD_ENV}={}", chan.as_raw_fd())).unwrap_or_default()];
    if cfg.unhardened {
        env.push(CString::new(format!("{UNHARDENED_ENV}=1")).unwrap_or_default());
    }
    let e = execve(c"/proc/self/exe", &argv, &env).unwrap_err();
    send(
        chan,
        &FromInit::Failed {
            message: format!("re-exec of init: {e}"),
        },
        &[],
    );
    1
}

/// Set in the environment of the re-executed init; holds the keeper channel's descriptor.
pub(crate) const INIT_FD_ENV: &str = "WISP_INIT_FD";
/// Set (to 1) in the re-executed init's environment for [`KeeperConfig::unhardened`].
const UNHARDENED_ENV: &str = "WISP_INIT_UNHARDENED";

/// Whether this init runs the benchmark baseline without capability and seccomp limits.
static UNHARDENED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// Entry point of the re-executed init (`wisp-init`, pid 1 of the sprite).
pub(crate) fn main_reexec(fd: i32) -> ! {
    let chan = match wisp_sys::fd::adopt_inherited(fd) {
        Some(c) => c,
        None => wisp_sys::process::exit_now(1),
    };
    let _ = UNHARDENED.set(std::env::var_os(UNHARDENED_ENV).is_some());
    std::env::remove_var(INIT_FD_ENV);
    std::env::remove_var(UNHARDENED_ENV);
    // exec of /proc/self/exe named us `exe` (comm, what ps and pgrep show).
    let _ = nix::sys::prctl::set_name(c"wisp-init");
    if !send(&chan, &FromInit::Ready, &[]) {
        wisp_sys::process::exit_now(1);
    }
    serve(&chan);
    wisp_sys::process::exit_now(0)
}

fn ctx<T>(what: &str, r: nix::Result<T>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

fn ensure_dir(p: &Path, mode: u32) -> Result<(), String> {
    if !p.is_dir() {
        fs::create_dir_all(p).map_err(|e| format!("mkdir {}: {e}", p.display()))?;
        let _ = fs::set_permissions(p, fs::Permissions::from_mode(mode));
    }
    Ok(())
}

fn mount_fs(
    src: &str,
    target: &Path,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), String> {
    ctx(
        &format!("mount {fstype} on {}", target.display()),
        mount(Some(src), target, Some(fstype), flags, data),
    )
}

fn bind(src: &Path, target: &Path, readonly: bool) -> Result<(), String> {
    ctx(
        &format!("bind {} on {}", src.display(), target.display()),
        mount(
            Some(src),
            target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        ),
    )?;
    if readonly {
        ctx(
            &format!("remount {} read-only", target.display()),
            mount(
                None::<&str>,
                target,
                None::<&str>,
                MsFlags::MS_BIND
                    | MsFlags::MS_REMOUNT
                    | MsFlags::MS_RDONLY
                    | MsFlags::MS_NOSUID
                    | MsFlags::MS_NODEV,
                None::<&str>,
            ),
        )?;
    }
    Ok(())
}

/// Builds the sprite's root and pivots into it.
fn setup(cfg: &KeeperConfig, sprite_dir_fd: std::os::fd::RawFd) -> Result<(), String> {
    // Our stdio still points at the keeper's; the sprite gets none of it.
    if let Ok(null) = open("/dev/null", OFlag::O_RDWR, Mode::empty()) {
        for fd in 0..3 {
            let _ = dup2(null, fd);
        }
        let _ = nix::unistd::close(null);
    }
    ctx(
        "unshare cgroup namespace",
        unshare(CloneFlags::CLONE_NEWCGROUP),
    )?;
    // The keeper has mounted the overlay root and /sys already (see `rootfs`), and made this
    // namespace's mounts slaves: nothing below propagates back to the host, while the
    // checkpoint views wispd mounts under the shared `<sprite-dir>/checkpoints` still
    // propagate in. Everything else of the host's tree is detached below with the old root.
    let root = Path::new(".");
    let sprite_dir = root.join(".sprite");
    ensure_dir(&sprite_dir, 0o755)?;
    let source = format!("/proc/self/fd/{sprite_dir_fd}");
    bind(Path::new(&source), &sprite_dir, true)?;
    let _ = nix::unistd::close(sprite_dir_fd);
    // The views' tmpfs came along with the recursive bind; the sprite may read it only.
    let views = sprite_dir.join("checkpoints");
    if views.is_dir() {
        ctx(
            "remount /.sprite/checkpoints read-only",
            mount(
                None::<&str>,
                &views,
                None::<&str>,
                MsFlags::MS_BIND
                    | MsFlags::MS_REMOUNT
                    | MsFlags::MS_RDONLY
                    | MsFlags::MS_NOSUID
                    | MsFlags::MS_NODEV
                    | MsFlags::MS_NOEXEC,
                None::<&str>,
            ),
        )?;
    }

    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let proc_dir = root.join("proc");
    ensure_dir(&proc_dir, 0o555)?;
    mount_fs("proc", &proc_dir, "proc", nosuid, None)?;
    if !cfg.unhardened {
        protect_kernel_files(root)?;
    }

    let dev = root.join("dev");
    ensure_dir(&dev, 0o755)?;
    mount_fs(
        "tmpfs",
        &dev,
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=755,size=65536k"),
    )?;
    // Device nodes are bind mounts of the host's, so this keeps working in a user namespace.
    for node in ["null", "zero", "full", "random", "urandom", "tty"] {
        let target = dev.join(node);
        fs::File::create(&target).map_err(|e| format!("create {}: {e}", target.display()))?;
        bind(&Path::new("/dev").join(node), &target, false)?;
    }
    let pts = dev.join("pts");
    ensure_dir(&pts, 0o755)?;
    mount_fs(
        "devpts",
        &pts,
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )?;
    let shm = dev.join("shm");
    ensure_dir(&shm, 0o1777)?;
    mount_fs("shm", &shm, "tmpfs", nosuid, Some("mode=1777,size=65536k"))?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(target, dev.join(link)).map_err(|e| format!("symlink /dev/{link}: {e}"))?;
    }
    let run = root.join("run");
    ensure_dir(&run, 0o755)?;
    mount_fs(
        "tmpfs",
        &run,
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=755,size=65536k"),
    )?;
    ensure_dir(&root.join("tmp"), 0o1777)?;

    ctx("chdir to new root", chdir(root))?;
    ctx("pivot_root", pivot_root(".", "."))?;
    ctx("detach old root", umount2(".", MntFlags::MNT_DETACH))?;
    ctx("chdir /", chdir("/"))?;

    ctx("sethostname", nix::unistd::sethostname(&cfg.hostname))?;
    write_hosts(&cfg.hostname);
    if let Some(text) = &cfg.resolv_conf {
        write_resolv_conf(text);
    }
    // A pooled slot comes with lo up, and belongs to the host: only a fresh one is ours.
    if cfg.netns.is_none() {
        ctx("bring up lo", wisp_sys::net::loopback_up())?;
    }
    Ok(())
}

/// Read-only and masked paths of /proc and /sys, as the OCI runtime defaults have them.
/// The user namespace already keeps root inside from writing the host's /proc/sys files
/// (they belong to host root); these are a second layer, and they hide what /proc would
/// tell about the host (kcore, keys, timers). Commands lack CAP_SYS_ADMIN, so they cannot
/// unmount any of this.
fn protect_kernel_files(root: &Path) -> Result<(), String> {
    for ro in [
        "proc/sys",
        "proc/sysrq-trigger",
        "proc/irq",
        "proc/bus",
        "proc/fs",
    ] {
        let p = root.join(ro);
        if p.exists() {
            bind(&p, &p, true)?;
        }
    }
    for masked in [
        "proc/kcore",
        "proc/keys",
        "proc/timer_list",
        "proc/latency_stats",
        "proc/sched_debug",
        "proc/timer_stats",
    ] {
        let p = root.join(masked);
        if p.exists() {
            bind(Path::new("/dev/null"), &p, false)?;
        }
    }
    for masked_dir in ["proc/acpi", "proc/scsi", "sys/firmware"] {
        let p = root.join(masked_dir);
        if p.is_dir() {
            mount_fs(
                "tmpfs",
                &p,
                "tmpfs",
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("size=0"),
            )?;
        }
    }
    Ok(())
}

/// Makes the sprite's name resolve (sudo looks it up on every call).
fn write_hosts(name: &str) {
    let hosts = fs::read_to_string("/etc/hosts").unwrap_or_default();
    if hosts.split_whitespace().any(|w| w == name) {
        return;
    }
    let content = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{name}\n"
    );
    let _ = fs::write("/etc/hosts", content);
}

/// Replaces /etc/resolv.conf (a symlink to a host-side resolver stub included) with `text`.
fn write_resolv_conf(text: &str) {
    let path = Path::new("/etc/resolv.conf");
    if fs::symlink_metadata(path).is_ok_and(|m| !m.is_file()) {
        let _ = fs::remove_file(path);
    }
    let _ = fs::write(path, text);
}

fn serve(chan: &OwnedFd) {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    if sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None).is_err() {
        return;
    }
    let Ok(sfd) = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
    else {
        return;
    };
    let mut ours: HashSet<i32> = HashSet::new();
    let mut buf = vec![0u8; MSG_MAX];
    loop {
        let (chan_ready, sig_ready) = {
            let mut fds = [
                PollFd::new(chan.as_fd(), PollFlags::POLLIN),
                PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(_) => return,
            }
            let r = |f: &PollFd| f.revents().is_some_and(|e| !e.is_empty());
            (r(&fds[0]), r(&fds[1]))
        };
        if sig_ready {
            while let Ok(Some(_)) = sfd.read_signal() {}
            reap(chan, &mut ours);
        }
        if chan_ready {
            let n = match wisp_sys::fd::recv_with_fds(chan.as_fd(), &mut buf) {
                Ok((0, _)) | Err(_) => return, // keeper gone: the sprite ends with us
                Ok((n, _)) => n,
            };
            match serde_json::from_slice::<ToInit>(&buf[..n]) {
                Ok(ToInit::Spawn { req, spec }) => match spawn(&spec) {
                    Ok((pid, has_stdin, fds)) => {
                        ours.insert(pid);
                        let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
                        send(
                            chan,
                            &FromInit::Spawned {
                                req,
                                pid,
                                has_stdin,
                            },
                            &borrowed,
                        );
                    }
                    Err(SpawnError { code, message }) => {
                        let code = code.to_string();
                        send(chan, &FromInit::SpawnFailed { req, code, message }, &[]);
                    }
                },
                Ok(ToInit::Signal { pid, signal }) => {
                    if let Ok(sig) = Signal::try_from(signal) {
                        // Commands are session leaders: signal the whole group first.
                        if kill(Pid::from_raw(-pid), sig).is_err() {
                            let _ = kill(Pid::from_raw(pid), sig);
                        }
                    }
                }
                Err(_) => {}
            }
        }
    }
}

fn reap(chan: &OwnedFd, ours: &mut HashSet<i32>) {
    loop {
        let (pid, code) = match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => (pid.as_raw(), code),
            Ok(WaitStatus::Signaled(pid, sig, _)) => (pid.as_raw(), 128 + sig as i32),
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => continue,
        };
        if ours.remove(&pid) {
            send(chan, &FromInit::Exited { pid, code }, &[]);
        }
    }
}

/// The capabilities root inside a sprite keeps: the common container default set (what
/// Docker and Podman grant) minus CAP_MKNOD, since a sprite has no device cgroup rules. No
/// CAP_SYS_ADMIN (mount), CAP_SYS_MODULE, CAP_SYS_TIME, CAP_SYS_BOOT, CAP_SYS_PTRACE,
/// CAP_SYS_RAWIO, CAP_NET_ADMIN or CAP_BPF.
const KEPT_CAPABILITIES: &[u32] = &[
    0,  // CAP_CHOWN
    1,  // CAP_DAC_OVERRIDE
    3,  // CAP_FOWNER
    4,  // CAP_FSETID
    5,  // CAP_KILL
    6,  // CAP_SETGID
    7,  // CAP_SETUID
    8,  // CAP_SETPCAP
    10, // CAP_NET_BIND_SERVICE
    13, // CAP_NET_RAW
    18, // CAP_SYS_CHROOT
    29, // CAP_AUDIT_WRITE
    31, // CAP_SETFCAP
];

/// Hard limit of open files per process in a sprite (soft limit 1024, as on Debian).
const MAX_OPEN_FILES: u64 = 65536;

/// Why init could not start a command.
pub(crate) struct SpawnError {
    pub code: &'static str,
    pub message: String,
}

impl SpawnError {
    fn failed(message: String) -> Self {
        SpawnError {
            code: "failed",
            message,
        }
    }
}

/// Like `ctx`, but tells the sprite's own limits (pids, memory, open files) apart from
/// other failures, so the API can say so.
fn sctx<T>(what: &str, r: nix::Result<T>) -> Result<T, SpawnError> {
    r.map_err(|e| SpawnError {
        code: match e {
            Errno::EAGAIN | Errno::ENOMEM | Errno::EMFILE | Errno::ENFILE => "resource_exhausted",
            _ => "failed",
        },
        message: format!("{what}: {}", e.desc()),
    })
}

/// What the child side of a spawn holds before exec.
struct ChildIo {
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
    tty: bool,
}

fn spawn(spec: &SpawnSpec) -> Result<(i32, bool, Vec<OwnedFd>), SpawnError> {
    let user = passwd::lookup_in_root(&spec.user)
        .ok_or_else(|| SpawnError::failed(format!("unknown user {:?} in the sprite", spec.user)))?;
    let (child_io, parent_fds, has_stdin) = if spec.tty {
        let ws = nix::pty::Winsize {
            ws_row: spec.rows,
            ws_col: spec.cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = sctx("openpty", nix::pty::openpty(Some(&ws), None))?;
        let slave = pty.slave;
        let io = ChildIo {
            stdin: sctx("dup", slave.try_clone().map_err(|_| Errno::EMFILE))?,
            stdout: sctx("dup", slave.try_clone().map_err(|_| Errno::EMFILE))?,
            stderr: slave,
            tty: true,
        };
        (io, vec![pty.master], true)
    } else {
        let (in_r, in_w) = if spec.stdin {
            let (r, w) = sctx("pipe", pipe2(OFlag::O_CLOEXEC))?;
            (r, Some(w))
        } else {
            (sctx("open /dev/null", open_owned("/dev/null"))?, None)
        };
        let (out_r, out_w) = sctx("pipe", pipe2(OFlag::O_CLOEXEC))?;
        let (err_r, err_w) = sctx("pipe", pipe2(OFlag::O_CLOEXEC))?;
        let mut parent = Vec::new();
        let has_stdin = in_w.is_some();
        parent.extend(in_w);
        parent.push(out_r);
        parent.push(err_r);
        let io = ChildIo {
            stdin: in_r,
            stdout: out_w,
            stderr: err_w,
            tty: false,
        };
        (io, parent, has_stdin)
    };
    // Prepare everything that allocates before forking; the child only does syscalls.
    let argv: Vec<CString> = spec
        .argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| SpawnError::failed("argument contains a NUL byte".into()))?;
    let env: Vec<CString> = spec
        .env
        .iter()
        .map(|(k, v)| CString::new(format!("{k}={v}")))
        .collect::<Result<_, _>>()
        .map_err(|_| SpawnError::failed("environment contains a NUL byte".into()))?;
    let path_var = spec
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or("/usr/local/bin:/usr/bin:/bin");
    let candidates = resolve_candidates(&spec.path, path_var);
    // Compiled once, in init, so that the child only installs it.
    let filters = crate::seccomp::programs().map_err(|e| SpawnError::failed(e.to_string()))?;
    match sctx("fork", fork_single_threaded())? {
        Forked::Child => {
            let code = exec_child(spec, &user, child_io, &argv, &env, &candidates, filters);
            wisp_sys::process::exit_now(code)
        }
        Forked::Parent(pid) => Ok((pid.as_raw(), has_stdin, parent_fds)),
    }
}

fn open_owned(path: &str) -> nix::Result<OwnedFd> {
    fs::File::open(path)
        .map(OwnedFd::from)
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
}

/// The executables to try, in order: the path itself when it names one, else each `PATH` dir.
fn resolve_candidates(path: &str, path_var: &str) -> Vec<CString> {
    if path.contains('/') {
        return CString::new(path).into_iter().collect();
    }
    path_var
        .split(':')
        .filter(|d| !d.is_empty())
        .filter_map(|d| CString::new(format!("{}/{path}", d.trim_end_matches('/'))).ok())
        .collect()
}

fn exec_child(
    spec: &SpawnSpec,
    user: &passwd::User,
    io: ChildIo,
    argv: &[CString],
    env: &[CString],
    candidates: &[CString],
    filters: &[seccompiler::BpfProgram],
) -> i32 {
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    for sig in [
        Signal::SIGPIPE,
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        // The parent may have ignored some (std ignores SIGPIPE); commands expect defaults.
        wisp_sys::process::reset_signal(sig);
    }
    let _ = setsid();
    if io.tty {
        let _ = wisp_sys::tty::set_controlling_tty(io.stdin.as_fd());
    }
    for (fd, target) in [(&io.stdin, 0), (&io.stdout, 1), (&io.stderr, 2)] {
        if dup2(fd.as_raw_fd(), target).is_err() {
            return 126;
        }
    }
    drop(io);
    wisp_sys::fd::close_all_from(3, &[]);
    // The host's (or wispd's unit's) open-file limit may be huge; a sprite gets the usual one.
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let hard = hard.min(MAX_OPEN_FILES);
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard.min(1024), hard);
    }
    let hardened = UNHARDENED.get() != Some(&true);
    if hardened && wisp_sys::process::restrict_bounding_set(KEPT_CAPABILITIES).is_err() {
        let _ = writeln!(std::io::stderr(), "wisp: cannot restrict capabilities");
        return 126;
    }
    // While still privileged: without CAP_SYS_ADMIN the kernel would demand no_new_privs,
    // which would break sudo.
    let filtered = if hardened {
        crate::seccomp::install(filters)
    } else {
        Ok(())
    };
    if let Err(e) = filtered {
        let _ = writeln!(
            std::io::stderr(),
            "wisp: cannot install the seccomp filter: {e}"
        );
        return 126;
    }
    let groups: Vec<Gid> = user.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    if setgroups(&groups).is_err()
        || setgid(Gid::from_raw(user.gid)).is_err()
        || setuid(Uid::from_raw(user.uid)).is_err()
    {
        let _ = writeln!(
            std::io::stderr(),
            "wisp: cannot switch to user {}",
            spec.user
        );
        return 126;
    }
    if let Err(e) = chdir(spec.dir.as_str()) {
        let _ = writeln!(
            std::io::stderr(),
            "wisp: cannot change directory to {}: {}",
            spec.dir,
            e.desc()
        );
        return 1;
    }
    // As shells do: "permission denied" wins over "not found" when several candidates fail.
    let mut worst = Errno::ENOENT;
    for c in candidates {
        let Err(e) = execve(c, argv, env);
        if worst != Errno::EACCES && !matches!(e, Errno::ENOENT | Errno::ENOTDIR) {
            worst = e;
        }
    }
    let (code, msg) = match worst {
        Errno::ENOENT => (127, "command not found".to_string()),
        Errno::EACCES => (126, "Permission denied".to_string()),
        e => (126, e.desc().to_string()),
    };
    let _ = writeln!(std::io::stderr(), "wisp: {}: {msg}", spec.path);
    code
}

pub(crate) fn kill_pid(pid: i32) {
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
}

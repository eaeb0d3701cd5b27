//! The keeper: one detached process per running sprite (`wisp-keeper --config FILE`).
//!
//! Start-up: new session, cgroups, clone the sprite's init into fresh mount, pid, uts, ipc and
//! network namespaces, place it in the cgroups, wait for it to build the root, then listen on
//! the socket and print `READY <init pid>`. Each client connection gets a thread. When init
//! dies, or on `Shutdown`, the keeper kills what is left, removes its cgroups and socket, and
//! exits.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::CloneFlags;
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use crate::cgroup::SpriteCgroup;
use crate::config::{KeeperConfig, UserNamespace, IDS_PER_SPRITE};
use crate::init::{self, FromInit, ToInit, MSG_MAX};
use crate::proto::{self, Control, Kind, Reply, Request, SpawnSpec};
use crate::rootfs;
use crate::services::{self, Spawned, Supervisor};
use crate::session::{lock, ClientConn, Outputs, Session};

macro_rules! log {
    ($($arg:tt)*) => {{
        let _ = writeln!(io::stderr(), "{} keeper[{}]: {}", crate::session::now_ms(), std::process::id(), format!($($arg)*));
    }};
}

#[derive(Default)]
struct Tables {
    sessions: HashMap<i32, Arc<Session>>,
    early_exits: HashMap<i32, i32>,
    /// Processes init forked whose session could not be set up (killed; exit ignored).
    abandoned: std::collections::HashSet<i32>,
    /// Processes of services: their exits go to the supervisor.
    service_pids: std::collections::HashSet<i32>,
}

/// Result of a spawn as init reports it.
type SpawnResult = Result<(i32, bool, Vec<OwnedFd>), Reply>;

struct Keeper {
    _lock: Flock<File>,
    /// The sprite's range of host ids, held while it runs (`None` without a user namespace).
    _id_slot: Option<Flock<File>>,
    cfg: KeeperConfig,
    init_pid: i32,
    cgroup: SpriteCgroup,
    chan: OwnedFd,
    next_req: AtomicU64,
    pending: Mutex<HashMap<u64, Sender<SpawnResult>>>,
    /// Sessions and exits that arrived before their session was registered, under one lock
    /// so that an exit is never lost between the two.
    tables: Mutex<Tables>,
    exiting: Mutex<bool>,
    services: Arc<Supervisor>,
}

/// Entry point of the `wisp-keeper` binary.
pub fn main() -> ! {
    if let Some(fd) = std::env::var(init::INIT_FD_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
    {
        if std::process::id() == 1 {
            init::main_reexec(fd);
        }
    }
    let args: Vec<String> = std::env::args().collect();
    let path = match args.as_slice() {
        [_, flag, path] if flag == "--config" => path.clone(),
        _ => {
            eprintln!("usage: wisp-keeper --config FILE");
            std::process::exit(2);
        }
    };
    let cfg = match fs::read(&path)
        .map_err(|e| format!("reading {path}: {e}"))
        .and_then(|b| KeeperConfig::from_json(&b).map_err(|e| format!("parsing {path}: {e}")))
    {
        Ok(c) => c,
        Err(e) => fail(&e),
    };
    match start(cfg) {
        Ok(k) => serve(k),
        Err(e) => fail(&e),
    }
}

fn fail(msg: &str) -> ! {
    log!("start failed: {msg}");
    let mut out = io::stdout();
    let _ = writeln!(out, "ERROR {}", msg.replace('\n', " "));
    let _ = out.flush();
    std::process::exit(1)
}

fn start(cfg: KeeperConfig) -> Result<Arc<Keeper>, String> {
    // Own session: wispd's terminal, process group and death do not reach us.
    let _ = nix::unistd::setsid();
    // Two keepers for one sprite would mount one upper dir twice and steal each other's
    // socket: a keeper holds this lock for its whole life, and only its holder may replace
    // the socket.
    let lock = lock_sprite(&cfg)?;
    fs::create_dir_all(&cfg.root_mount)
        .map_err(|e| format!("creating {}: {e}", cfg.root_mount.display()))?;
    let cgroup = SpriteCgroup::create(&cfg.cgroup_parent, &cfg.sprite_id, &cfg.limits)
        .map_err(|e| format!("creating cgroups: {e}"))?;
    let (chan, init_end) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| format!("socketpair: {e}"))?;
    let (sync_r, sync_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let home = rootfs::HomeNs::open()?;
    let id_slot = match &cfg.userns {
        Some(u) => Some(lock_id_slot(u, &cfg.sprite_id)?),
        None => None,
    };
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC;
    if id_slot.is_some() {
        flags |= CloneFlags::CLONE_NEWUSER;
    }
    // A prepared network namespace (wispd's slot) is entered here, so that init starts in
    // it: once in its own user namespace, init could no longer join one the host owns.
    // Without one the sprite gets a fresh namespace with only a loopback.
    match &cfg.netns {
        Some(p) => {
            let ns = File::open(p).map_err(|e| format!("opening {}: {e}", p.display()))?;
            home.enter_net(&ns)?;
        }
        None => flags |= CloneFlags::CLONE_NEWNET,
    }
    let child_cfg = cfg.clone();
    let cloned = wisp_sys::process::clone_into_namespaces(
        flags,
        Box::new(|| init::run(&child_cfg, &init_end, &sync_r)),
    );
    home.restore()?;
    let pid = cloned.map_err(|e| {
        let _ = cgroup.destroy();
        format!("clone: {e}")
    })?;
    drop(init_end);
    drop(sync_r);
    let cleanup = |msg: String| {
        init::kill_pid(pid.as_raw());
        let _ = waitpid(pid, None);
        let _ = cgroup.destroy();
        rootfs::remove_staging(&cfg);
        msg
    };
    let userns = match &id_slot {
        Some((_, base)) => {
            let opened = rootfs::write_id_maps(pid.as_raw(), *base).and_then(|_| {
                let p = format!("/proc/{}/ns/user", pid.as_raw());
                File::open(&p).map_err(|e| format!("opening {p}: {e}"))
            });
            Some(opened.map_err(&cleanup)?)
        }
        None => None,
    };
    let mapped = userns.as_ref().zip(id_slot.as_ref().map(|(_, base)| *base));
    if let Err(e) = rootfs::build(&cfg, pid.as_raw(), mapped, &home) {
        return Err(cleanup(e));
    }
    drop(userns);
    if let Err(e) = cgroup.add_pid(pid.as_raw()) {
        return Err(cleanup(format!("joining cgroups: {e}")));
    }
    if nix::unistd::write(&sync_w, b"1").is_err() {
        return Err(cleanup("init died before start".into()));
    }
    drop(sync_w);
    match wait_ready(&chan) {
        Ok(()) => {}
        Err(e) => return Err(cleanup(e)),
    }
    Ok(Arc::new(Keeper {
        _lock: lock,
        _id_slot: id_slot.map(|(l, _)| l),
        init_pid: pid.as_raw(),
        cgroup,
        chan,
        next_req: AtomicU64::new(1),
        pending: Mutex::new(HashMap::new()),
        tables: Mutex::new(Tables::default()),
        exiting: Mutex::new(false),
        services: Supervisor::new(cfg.sprite_dir.join("logs").join("services")),
        cfg,
    }))
}

/// The lock file next to the socket (`<id>.lock`), held exclusively.
pub fn lock_path(cfg: &KeeperConfig) -> std::path::PathBuf {
    cfg.socket.with_extension("lock")
}

fn lock_sprite(cfg: &KeeperConfig) -> Result<Flock<File>, String> {
    let path = lock_path(cfg);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    try_lock(&path)?.ok_or_else(|| format!("a keeper already runs sprite {}", cfg.sprite_id))
}

/// An exclusive flock on `path` (created if missing); `None` if someone else holds it.
fn try_lock(path: &std::path::Path) -> Result<Option<Flock<File>>, String> {
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| format!("opening {}: {e}", path.display()))?;
    Ok(Flock::lock(f, FlockArg::LockExclusiveNonblock).ok())
}

/// Takes a free range of host ids for the sprite's user namespace: the first slot, from a
/// point that depends on the sprite (so restarts usually land on the same one), whose lock
/// no live keeper holds. Returns the held lock and the range's first host id.
fn lock_id_slot(u: &UserNamespace, sprite_id: &str) -> Result<(Flock<File>, u32), String> {
    fs::create_dir_all(&u.lock_dir)
        .map_err(|e| format!("creating {}: {e}", u.lock_dir.display()))?;
    if u.slots == 0 {
        return Err("no id ranges are configured for user namespaces".into());
    }
    let start = sprite_id.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    }) % u.slots;
    for i in 0..u.slots {
        let slot = (start + i) % u.slots;
        if let Some(lock) = try_lock(&u.lock_dir.join(format!("{slot}.lock")))? {
            return Ok((lock, u.first_host_id + slot * IDS_PER_SPRITE));
        }
    }
    Err(format!(
        "all {} id ranges for sprites are in use: stop a sprite or raise the number of ranges",
        u.slots
    ))
}

fn recv_init(chan: &OwnedFd) -> Option<(FromInit, Vec<OwnedFd>)> {
    let mut buf = vec![0u8; MSG_MAX];
    match wisp_sys::fd::recv_with_fds(chan.as_fd(), &mut buf) {
        Ok((0, _)) | Err(_) => None,
        Ok((n, fds)) => serde_json::from_slice(&buf[..n]).ok().map(|m| (m, fds)),
    }
}

fn wait_ready(chan: &OwnedFd) -> Result<(), String> {
    let mut fds = [PollFd::new(chan.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::from(30_000u16)) {
        Ok(0) => return Err("the sprite's init did not start within 30 s".into()),
        Ok(_) => {}
        Err(e) => return Err(format!("poll: {e}")),
    }
    match recv_init(chan) {
        Some((FromInit::Ready, _)) => Ok(()),
        Some((FromInit::Failed { message }, _)) => Err(format!("setting up the sprite: {message}")),
        _ => Err("the sprite's init exited during setup".into()),
    }
}

fn serve(k: Arc<Keeper>) -> ! {
    let listener = match bind(&k.cfg.socket) {
        Ok(l) => l,
        Err(e) => {
            let msg = format!("listening on {}: {e}", k.cfg.socket.display());
            k.stop();
            fail(&msg)
        }
    };
    let mut out = io::stdout();
    let _ = writeln!(out, "READY {}", k.init_pid);
    let _ = out.flush();
    // Let go of wispd's pipe so its reader sees EOF.
    if let Ok(null) = File::options().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2(null.as_raw_fd(), 1);
    }
    log!(
        "sprite {} running, init pid {}",
        k.cfg.sprite_id,
        k.init_pid
    );
    let reader = k.clone();
    std::thread::spawn(move || reader.read_init());
    let host: Arc<dyn services::Host> = k.clone();
    let supervisor = k.services.clone();
    std::thread::spawn(move || supervisor.run(host));
    for conn in listener.incoming() {
        match conn {
            Ok(c) => {
                let k = k.clone();
                std::thread::spawn(move || k.handle(c));
            }
            Err(e) => {
                log!("accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    k.shutdown(None)
}

fn bind(path: &std::path::Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let _ = fs::remove_file(path);
    let l = UnixListener::bind(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

impl Keeper {
    fn read_init(self: Arc<Self>) {
        while let Some((msg, fds)) = recv_init(&self.chan) {
            match msg {
                FromInit::Spawned {
                    req,
                    pid,
                    has_stdin,
                } => {
                    let tx = lock(&self.pending).remove(&req);
                    let delivered = tx.is_some_and(|tx| tx.send(Ok((pid, has_stdin, fds))).is_ok());
                    if !delivered {
                        // Its requester gave up waiting: nobody will ever read this process.
                        self.abandon(pid);
                    }
                }
                FromInit::SpawnFailed { req, code, message } => {
                    if let Some(tx) = lock(&self.pending).remove(&req) {
                        let _ = tx.send(Err(Reply::Error { code, message }));
                    }
                }
                FromInit::Exited { pid, code } => {
                    let (session, service) = {
                        let mut t = lock(&self.tables);
                        let s = t.sessions.get(&pid).cloned();
                        let service = s.is_none() && t.service_pids.remove(&pid);
                        if s.is_none() && !service && !t.abandoned.remove(&pid) {
                            t.early_exits.insert(pid, code);
                        }
                        (s, service)
                    };
                    if let Some(s) = session {
                        s.set_exit(code);
                    }
                    if service {
                        self.services.exited(pid, code);
                    }
                }
                FromInit::Ready | FromInit::Failed { .. } => {}
            }
        }
        log!("init exited; stopping the sprite");
        self.shutdown(None);
    }

    fn to_init(&self, msg: &ToInit) -> bool {
        let bytes = serde_json::to_vec(msg).unwrap_or_default();
        wisp_sys::fd::send_with_fds(self.chan.as_fd(), &bytes, &[]).is_ok()
    }

    fn signal(&self, pid: i32, signal: i32) {
        self.to_init(&ToInit::Signal { pid, signal });
    }

    /// Kills the sprite and removes its cgroups and socket. Runs once; a second caller
    /// (another thread racing to stop) blocks forever, as the first one exits the process.
    fn stop(&self) {
        let mut exiting = lock(&self.exiting);
        if *exiting {
            drop(exiting);
            loop {
                std::thread::park();
            }
        }
        *exiting = true;
        init::kill_pid(self.init_pid);
        let _ = waitpid(Pid::from_raw(self.init_pid), None);
        if let Err(e) = self.cgroup.destroy() {
            log!("removing cgroups: {e}");
        }
        let _ = fs::remove_file(&self.cfg.socket);
        log!("sprite {} stopped", self.cfg.sprite_id);
    }

    /// Stops the sprite, answers the client that asked for it, and exits.
    fn shutdown(&self, reply_to: Option<&mut UnixStream>) -> ! {
        self.stop();
        if let Some(s) = reply_to {
            let _ = proto::write_frame(
                s,
                Kind::Reply,
                &serde_json::to_vec(&Reply::Ok).unwrap_or_default(),
            );
        }
        std::process::exit(0)
    }

    fn handle(self: Arc<Self>, mut conn: UnixStream) {
        let req = match proto::read_frame(&mut conn) {
            Ok(Some(f)) if f.kind == Kind::Request => serde_json::from_slice::<Request>(&f.payload),
            _ => return,
        };
        let reply = |conn: &mut UnixStream, r: &Reply| {
            let _ = proto::write_frame(
                conn,
                Kind::Reply,
                &serde_json::to_vec(r).unwrap_or_default(),
            );
        };
        let req = match req {
            Ok(r) => r,
            Err(e) => {
                reply(&mut conn, &error("failed", format!("bad request: {e}")));
                return;
            }
        };
        match req {
            Request::Ping => reply(
                &mut conn,
                &Reply::Pong {
                    init_pid: self.init_pid,
                    sprite_id: self.cfg.sprite_id.clone(),
                    frozen: self.cgroup.is_frozen(),
                },
            ),
            Request::Freeze => reply(&mut conn, &self.freeze(true)),
            Request::Thaw => reply(&mut conn, &self.freeze(false)),
            Request::ListSessions => {
                // Copy first: info() waits for each session's state, which a slow client may
                // hold; the table lock must never wait behind it.
                let all: Vec<_> = lock(&self.tables).sessions.values().cloned().collect();
                let mut sessions: Vec<_> = all.iter().map(|s| s.info()).collect();
                sessions.sort_by_key(|s| s.created);
                reply(&mut conn, &Reply::Sessions { sessions });
            }
            Request::SignalSession { session_id, signal } => match self.find(&session_id) {
                Some(s) => {
                    self.signal(s.pid, signal);
                    reply(&mut conn, &Reply::Ok);
                }
                None => reply(&mut conn, &not_found(&session_id)),
            },
            Request::Shutdown => self.shutdown(Some(&mut conn)),
            Request::SetServices { services } => {
                let seq = self.services.set(services, &*self);
                reply(&mut conn, &Reply::ServiceSeq { seq });
            }
            Request::StartService { name } => {
                let r = self.services.start(&name);
                reply(&mut conn, &seq_reply(r));
            }
            Request::StopService { name, timeout_ms } => {
                let r = self
                    .services
                    .stop(&name, Duration::from_millis(timeout_ms), &*self);
                reply(&mut conn, &seq_reply(r));
            }
            Request::RestartService { name, timeout_ms } => {
                let r = self
                    .services
                    .restart(&name, Duration::from_millis(timeout_ms), &*self);
                reply(&mut conn, &seq_reply(r));
            }
            Request::SignalService { name, signal } => {
                let r = match self.services.signal(&name, signal, &*self) {
                    Ok(()) => Reply::Ok,
                    Err(e) => e.into(),
                };
                reply(&mut conn, &r);
            }
            Request::ListServices => reply(
                &mut conn,
                &Reply::Services {
                    services: self.services.list(),
                },
            ),
            Request::WatchService {
                name,
                after_seq,
                tail,
                follow,
            } => self
                .services
                .watch(&mut conn, &name, after_seq, tail, follow),
            Request::Spawn(spec) => match self.spawn(&spec) {
                Ok((session, outputs)) => {
                    reply(
                        &mut conn,
                        &Reply::Spawned {
                            session: session.info(),
                        },
                    );
                    let client = match conn.try_clone() {
                        Ok(c) => Arc::new(Mutex::new(c)),
                        Err(_) => return,
                    };
                    let _ = session.attach(&client, false);
                    let pump_session = session.clone();
                    let k = self.clone();
                    std::thread::spawn(move || {
                        let pid = pump_session.pid;
                        pump_session.pump(outputs, &|p| k.signal(p, libc::SIGKILL));
                        let mut t = lock(&k.tables);
                        if t.sessions
                            .get(&pid)
                            .is_some_and(|s| Arc::ptr_eq(s, &pump_session))
                        {
                            t.sessions.remove(&pid);
                        }
                    });
                    self.stream(&session, &client, conn);
                }
                Err(e) => reply(&mut conn, &e),
            },
            Request::Attach { session_id } => {
                let Some(session) = self.find(&session_id) else {
                    reply(&mut conn, &not_found(&session_id));
                    return;
                };
                reply(
                    &mut conn,
                    &Reply::Attached {
                        session: session.info(),
                    },
                );
                let client = match conn.try_clone() {
                    Ok(c) => Arc::new(Mutex::new(c)),
                    Err(_) => return,
                };
                if let Err(code) = session.attach(&client, true) {
                    // Finished between lookup and attach.
                    let _ = proto::write_frame(&mut conn, Kind::Exit, &code.to_be_bytes());
                    return;
                }
                self.stream(&session, &client, conn);
            }
        }
    }

    /// Freezes or thaws the sprite's cgroup. The keeper is not in it and keeps serving; the
    /// grace timers of detached sessions keep running, and a kill they send to a frozen
    /// sprite takes effect on thaw.
    fn freeze(&self, frozen: bool) -> Reply {
        match self.cgroup.set_frozen(frozen) {
            Ok(()) => {
                let what = if frozen { "frozen" } else { "thawed" };
                log!("sprite {} {what}", self.cfg.sprite_id);
                Reply::Ok
            }
            Err(e) => error("failed", e.to_string()),
        }
    }

    fn find(&self, id: &str) -> Option<Arc<Session>> {
        let pid: i32 = id.parse().ok()?;
        lock(&self.tables).sessions.get(&pid).cloned()
    }

    fn spawn(&self, spec: &SpawnSpec) -> Result<(Arc<Session>, Outputs), Reply> {
        let (pid, has_stdin, fds) = self.spawn_process(spec)?;
        self.register(spec, pid, has_stdin, fds)
            .inspect_err(|_| self.abandon(pid))
    }

    /// Asks init to start a command; returns its pid, whether it has a stdin pipe, and the
    /// descriptors init handed over.
    fn spawn_process(&self, spec: &SpawnSpec) -> Result<(i32, bool, Vec<OwnedFd>), Reply> {
        if spec.argv.is_empty() {
            return Err("no command".into());
        }
        let req = self.next_req.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = channel();
        lock(&self.pending).insert(req, tx);
        if !self.to_init(&ToInit::Spawn {
            req,
            spec: spec.clone(),
        }) {
            lock(&self.pending).remove(&req);
            return Err("the sprite's init is not running".into());
        }
        rx.recv_timeout(Duration::from_secs(30))
            .map_err(|_| "the sprite's init did not answer".to_string())?
    }

    /// Kills a process init started for a session that could not be set up, and makes sure
    /// its exit code is not taken for that of a later process with the same pid.
    fn abandon(&self, pid: i32) {
        {
            let mut t = lock(&self.tables);
            if t.early_exits.remove(&pid).is_some() {
                return; // already gone
            }
            t.abandoned.insert(pid);
        }
        self.signal(pid, libc::SIGKILL);
    }

    /// Wraps what init handed over for `pid` into a registered session.
    fn register(
        &self,
        spec: &SpawnSpec,
        pid: i32,
        has_stdin: bool,
        fds: Vec<OwnedFd>,
    ) -> Result<(Arc<Session>, Outputs), Reply> {
        let mut fds = fds.into_iter();
        let bad = || "init sent the wrong descriptors".to_string();
        let grace = spec.max_run_after_disconnect_ms.map(Duration::from_millis);
        let command = spec.argv.join(" ");
        let (session, wake_r, outputs) = if spec.tty {
            let master = fds.next().ok_or_else(bad)?;
            let reader = master.try_clone().map_err(|e| e.to_string())?;
            let writer = master.try_clone().map_err(|e| e.to_string())?;
            let (s, wake_r) = Session::new(
                pid,
                command,
                spec.dir.clone(),
                true,
                spec.rows,
                spec.cols,
                grace,
                Some(File::from(writer)),
                Some(File::from(master)),
            )
            .map_err(|e| e.to_string())?;
            (s, wake_r, (reader, None))
        } else {
            let stdin = if has_stdin {
                Some(File::from(fds.next().ok_or_else(bad)?))
            } else {
                None
            };
            let stdout = fds.next().ok_or_else(bad)?;
            let stderr = fds.next().ok_or_else(bad)?;
            let (s, wake_r) = Session::new(
                pid,
                command,
                spec.dir.clone(),
                false,
                spec.rows,
                spec.cols,
                grace,
                stdin,
                None,
            )
            .map_err(|e| e.to_string())?;
            (s, wake_r, (stdout, Some(stderr)))
        };
        let early = {
            let mut t = lock(&self.tables);
            t.sessions.insert(pid, session.clone());
            t.early_exits.remove(&pid)
        };
        if let Some(code) = early {
            session.set_exit(code);
        }
        let outputs = Outputs {
            stdout: outputs.0,
            stderr: outputs.1,
            wake_r,
        };
        Ok((session, outputs))
    }

    /// Reads the client's stdin and control frames until it goes away, then detaches it.
    fn stream(&self, session: &Arc<Session>, client: &ClientConn, mut conn: UnixStream) {
        while let Ok(Some(frame)) = proto::read_frame(&mut conn) {
            match frame.kind {
                Kind::Stdin => session.write_stdin(&frame.payload),
                Kind::StdinEof => session.close_stdin(),
                Kind::Control => match serde_json::from_slice::<Control>(&frame.payload) {
                    Ok(Control::Resize { rows, cols }) => session.resize(rows, cols),
                    Ok(Control::Signal { signal }) => self.signal(session.pid, signal),
                    Err(_) => {}
                },
                _ => break,
            }
        }
        session.detach(client);
    }
}

impl services::Host for Keeper {
    fn spawn_service(&self, spec: &SpawnSpec) -> Result<Spawned, String> {
        let (pid, _, fds) = self.spawn_process(spec).map_err(|r| match r {
            Reply::Error { message, .. } => message,
            other => format!("{other:?}"),
        })?;
        let mut fds = fds.into_iter();
        let (Some(stdout), Some(stderr), None) = (fds.next(), fds.next(), fds.next()) else {
            self.abandon(pid);
            return Err("init sent the wrong descriptors".into());
        };
        let early_exit = {
            let mut t = lock(&self.tables);
            let early = t.early_exits.remove(&pid);
            if early.is_none() {
                t.service_pids.insert(pid);
            }
            early
        };
        Ok(Spawned {
            pid,
            stdout,
            stderr,
            early_exit,
        })
    }

    fn signal(&self, pid: i32, signal: i32) {
        Keeper::signal(self, pid, signal);
    }

    fn is_frozen(&self) -> bool {
        self.cgroup.is_frozen()
    }

    fn init_host_pid(&self) -> i32 {
        self.init_pid
    }
}

fn seq_reply(r: Result<u64, services::ServiceError>) -> Reply {
    match r {
        Ok(seq) => Reply::ServiceSeq { seq },
        Err(e) => e.into(),
    }
}

fn error(code: &str, message: String) -> Reply {
    Reply::Error {
        code: code.into(),
        message,
    }
}

fn not_found(id: &str) -> Reply {
    error("not_found", format!("session not found: {id}"))
}

/// Any other failure is `failed`.
impl From<String> for Reply {
    fn from(message: String) -> Reply {
        error("failed", message)
    }
}

impl From<&str> for Reply {
    fn from(message: &str) -> Reply {
        error("failed", message.to_string())
    }
}

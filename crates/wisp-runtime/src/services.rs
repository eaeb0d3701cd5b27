//! Services: long-running commands the keeper starts, watches and restarts by itself, so they
//! outlive wispd (restarts, kill -9) exactly like the sprite does.
//!
//! wispd hands the keeper the whole set of definitions (`Request::SetServices`) after every
//! start of the sprite and whenever it changes; the [`Supervisor`] makes reality follow:
//!
//! * A service starts once every service it `needs` runs (and, for one with an `http_port`,
//!   listens on it; at most [`PORT_WAIT`]), so a boot starts them in dependency order. Nothing
//!   starts while the sprite is frozen.
//! * A process that exits without being asked to is restarted after a backoff that doubles
//!   from 1 s to 30 s, and starts again from 1 s once a run lasted 60 s; `restart_count` counts
//!   those restarts.
//! * A stop sends SIGTERM to the process group, SIGKILL after the timeout, and is sticky.
//! * Each output line goes, timestamped and tagged `[stdout]`/`[stderr]`, to
//!   `<sprite-dir>/logs/services/<name>.log` (`/.sprite/logs/services/<name>.log` inside) and
//!   into a bounded in-memory tail of events that clients read or follow (`WatchService`).
//!
//! A service process is spawned through init like a session's, but it has no client, no
//! scrollback and no grace timer: its own pump thread turns its output into log lines.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::proto::{
    self, Kind, Reply, ServiceEvent, ServiceEventKind, ServiceInfo, ServiceSpec, SpawnSpec,
    MAX_DATA_CHUNK,
};
use crate::session::{lock, now_ms};

macro_rules! log {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), "{} keeper[{}]: {}", now_ms(), std::process::id(), format!($($arg)*));
    }};
}

/// First restart delay after a crash; it doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A run at least this long resets the backoff.
pub const BACKOFF_RESET: Duration = Duration::from_secs(60);
/// SIGTERM → SIGKILL delay of a stop that wispd did not time itself (removal, redefinition).
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a dependent waits for a needed service's `http_port` to listen before starting
/// anyway.
pub const PORT_WAIT: Duration = Duration::from_secs(10);
/// Events kept per service (lines and lifecycle events), and their bytes.
const TAIL_EVENTS: usize = 2000;
const TAIL_BYTES: usize = 1 << 20;
/// Longer lines are split.
const MAX_LINE: usize = 16 * 1024;
/// A log file this big is rotated (one previous file is kept).
const MAX_LOG_BYTES: u64 = 8 << 20;
/// After the process exits, output still in its pipes is read until this much quiet.
const DRAIN_QUIET: Duration = Duration::from_millis(30);
/// How often the supervisor looks again while a service waits (dependencies, a frozen sprite).
const RECHECK: Duration = Duration::from_millis(100);
/// How often a follower checks that its client is still there.
const FOLLOW_TICK: Duration = Duration::from_millis(500);

/// What the supervisor needs of its keeper.
pub(crate) trait Host: Send + Sync {
    /// Starts a command in the sprite (no TTY, no stdin) and registers its pid so that its
    /// exit reaches [`Supervisor::exited`].
    fn spawn_service(&self, spec: &SpawnSpec) -> Result<Spawned, String>;
    /// Signals a process group (the process when it has none).
    fn signal(&self, pid: i32, signal: i32);
    fn is_frozen(&self) -> bool;
    /// Host pid of the sprite's init (its `/proc/<pid>/net` is the sprite's network).
    fn init_host_pid(&self) -> i32;
}

/// A started service process.
pub(crate) struct Spawned {
    pub pid: i32,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    /// Its exit, when it came before the pid was registered.
    pub early_exit: Option<i32>,
}

/// Why a service request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ServiceError {
    NotFound(String),
    NotRunning(String),
}

impl From<ServiceError> for Reply {
    fn from(e: ServiceError) -> Reply {
        let (code, message) = match e {
            ServiceError::NotFound(n) => ("service_not_found", format!("service not found: {n}")),
            ServiceError::NotRunning(n) => {
                ("service_not_running", format!("service {n} is not running"))
            }
        };
        Reply::Error {
            code: code.into(),
            message,
        }
    }
}

/// Shared by a service's process record and its pump thread.
struct ProcShared {
    exit: Mutex<Option<i32>>,
    wake_w: File,
}

impl ProcShared {
    fn set_exit(&self, code: i32) {
        *lock(&self.exit) = Some(code);
        let _ = (&self.wake_w).write(&[1]);
    }
}

struct Proc {
    pid: i32,
    started: Instant,
    started_ms: i64,
    stopping: bool,
    /// When a stop turns into SIGKILL.
    kill_at: Option<Instant>,
    shared: Arc<ProcShared>,
}

struct Svc {
    spec: ServiceSpec,
    /// No longer defined: dropped once its process is gone.
    removed: bool,
    /// Sticky stop.
    stopped: bool,
    proc: Option<Proc>,
    spawning: bool,
    restart_count: u32,
    backoff: Duration,
    /// (when, Unix ms) of the next try after a crash.
    next_restart: Option<(Instant, i64)>,
    error: Option<String>,
    /// Start again as soon as the current process is gone (restart, new definition).
    restart_now: bool,
    events: VecDeque<ServiceEvent>,
    event_bytes: usize,
}

impl Svc {
    fn new(spec: ServiceSpec) -> Self {
        Svc {
            stopped: spec.stopped,
            spec,
            removed: false,
            proc: None,
            spawning: false,
            restart_count: 0,
            backoff: FIRST_BACKOFF,
            next_restart: None,
            error: None,
            restart_now: false,
            events: VecDeque::new(),
            event_bytes: 0,
        }
    }

    fn status(&self) -> &'static str {
        match &self.proc {
            Some(p) if p.stopping => "stopping",
            Some(_) => "running",
            None if self.spawning => "starting",
            None if self.stopped || self.removed => "stopped",
            None if self.next_restart.is_some() => "failed",
            None => "starting",
        }
    }

    /// Whether it should have a process now (backoff and dependencies aside).
    fn wants_to_run(&self) -> bool {
        !self.removed && !self.stopped && self.proc.is_none() && !self.spawning
    }

    fn reset_backoff(&mut self) {
        self.restart_count = 0;
        self.backoff = FIRST_BACKOFF;
        self.next_restart = None;
        self.error = None;
    }

    fn info(&self) -> ServiceInfo {
        ServiceInfo {
            name: self.spec.name.clone(),
            status: self.status().to_string(),
            pid: self.proc.as_ref().map(|p| p.pid),
            started_at_ms: self.proc.as_ref().map(|p| p.started_ms),
            error: self.error.clone(),
            restart_count: self.restart_count,
            next_restart_at_ms: self.next_restart.map(|(_, ms)| ms),
        }
    }
}

#[derive(Default)]
struct State {
    services: BTreeMap<String, Svc>,
    /// Sequence number of the latest event.
    seq: u64,
    /// Exits of registered service pids that arrived before their service recorded the pid.
    early: HashMap<i32, i32>,
}

/// Appends an event to a service's tail.
fn record(seq: &mut u64, svc: &mut Svc, kind: ServiceEventKind, f: impl FnOnce(&mut ServiceEvent)) {
    *seq += 1;
    let mut ev = ServiceEvent {
        seq: *seq,
        kind,
        data: None,
        exit_code: None,
        pid: None,
        time_ms: now_ms(),
    };
    f(&mut ev);
    svc.event_bytes += event_size(&ev);
    svc.events.push_back(ev);
    while svc.events.len() > TAIL_EVENTS || svc.event_bytes > TAIL_BYTES {
        match svc.events.pop_front() {
            Some(old) => svc.event_bytes -= event_size(&old),
            None => break,
        }
    }
}

fn event_size(ev: &ServiceEvent) -> usize {
    64 + ev.data.as_ref().map_or(0, String::len)
}

pub(crate) struct Supervisor {
    log_dir: PathBuf,
    state: Mutex<State>,
    /// Wakes the supervisor thread (a definition, a stop or an exit changed something).
    work: Condvar,
    /// Wakes followers (new events).
    news: Condvar,
}

impl Supervisor {
    pub fn new(log_dir: PathBuf) -> Arc<Self> {
        Arc::new(Supervisor {
            log_dir,
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            news: Condvar::new(),
        })
    }

    fn changed(&self) {
        self.work.notify_all();
        self.news.notify_all();
    }

    /// Begins stopping a running process: SIGTERM now, SIGKILL at `timeout`.
    fn begin_stop(seq: &mut u64, svc: &mut Svc, timeout: Duration, host: &dyn Host) {
        let Some(p) = svc.proc.as_mut() else { return };
        if p.stopping {
            return;
        }
        p.stopping = true;
        p.kill_at = Some(Instant::now() + timeout);
        let pid = p.pid;
        host.signal(pid, libc::SIGTERM);
        record(seq, svc, ServiceEventKind::Stopping, |e| e.pid = Some(pid));
    }

    /// `SetServices`: makes `specs` the whole set.
    pub fn set(&self, specs: Vec<ServiceSpec>, host: &dyn Host) -> u64 {
        let mut st = lock(&self.state);
        let before = st.seq;
        let State { services, seq, .. } = &mut *st;
        let wanted: HashMap<String, ServiceSpec> =
            specs.into_iter().map(|s| (s.name.clone(), s)).collect();
        let mut gone = Vec::new();
        for (name, svc) in services.iter_mut() {
            if wanted.contains_key(name) || svc.removed {
                continue;
            }
            svc.removed = true;
            svc.restart_now = false;
            svc.next_restart = None;
            if svc.proc.is_some() {
                Self::begin_stop(seq, svc, DEFAULT_STOP_TIMEOUT, host);
            } else if !svc.spawning {
                gone.push(name.clone());
            }
        }
        for name in gone {
            services.remove(&name);
        }
        for (name, spec) in wanted {
            let Some(svc) = services.get_mut(&name) else {
                services.insert(name, Svc::new(spec));
                continue;
            };
            svc.removed = false;
            if !svc.spec.same_definition(&spec) {
                svc.reset_backoff();
                if svc.proc.is_some() && !spec.stopped {
                    svc.restart_now = true;
                    Self::begin_stop(seq, svc, DEFAULT_STOP_TIMEOUT, host);
                }
            }
            if spec.stopped && !svc.stopped {
                svc.restart_now = false;
                svc.next_restart = None;
                Self::begin_stop(seq, svc, DEFAULT_STOP_TIMEOUT, host);
            } else if !spec.stopped && svc.stopped {
                svc.reset_backoff();
            }
            svc.stopped = spec.stopped;
            svc.spec = spec;
        }
        drop(st);
        self.changed();
        before
    }

    /// `StartService`: clears a sticky stop and any backoff; starts it as soon as it may.
    pub fn start(&self, name: &str) -> Result<u64, ServiceError> {
        let mut st = lock(&self.state);
        let before = st.seq;
        let svc = find(&mut st.services, name)?;
        svc.stopped = false;
        svc.spec.stopped = false;
        if svc.proc.is_none() {
            svc.reset_backoff();
        } else if svc.proc.as_ref().is_some_and(|p| p.stopping) {
            svc.reset_backoff();
            svc.restart_now = true;
        }
        drop(st);
        self.changed();
        Ok(before)
    }

    /// `StopService`.
    pub fn stop(
        &self,
        name: &str,
        timeout: Duration,
        host: &dyn Host,
    ) -> Result<u64, ServiceError> {
        let mut st = lock(&self.state);
        let before = st.seq;
        let State { services, seq, .. } = &mut *st;
        let svc = find(services, name)?;
        if svc.proc.is_none() && !svc.spawning && svc.stopped {
            return Err(ServiceError::NotRunning(name.to_string()));
        }
        svc.stopped = true;
        svc.spec.stopped = true;
        svc.restart_now = false;
        svc.next_restart = None;
        if svc.proc.is_some() {
            Self::begin_stop(seq, svc, timeout, host);
        } else if !svc.spawning {
            // Waiting for a restart or for its dependencies: nothing to kill.
            record(seq, svc, ServiceEventKind::Stopping, |_| {});
            record(seq, svc, ServiceEventKind::Stopped, |_| {});
        }
        drop(st);
        self.changed();
        Ok(before)
    }

    /// `RestartService`.
    pub fn restart(
        &self,
        name: &str,
        timeout: Duration,
        host: &dyn Host,
    ) -> Result<u64, ServiceError> {
        let mut st = lock(&self.state);
        let before = st.seq;
        let State { services, seq, .. } = &mut *st;
        let svc = find(services, name)?;
        svc.stopped = false;
        svc.spec.stopped = false;
        svc.reset_backoff();
        if svc.proc.is_some() || svc.spawning {
            svc.restart_now = true;
            Self::begin_stop(seq, svc, timeout, host);
        }
        drop(st);
        self.changed();
        Ok(before)
    }

    /// `SignalService`.
    pub fn signal(&self, name: &str, signal: i32, host: &dyn Host) -> Result<(), ServiceError> {
        let mut st = lock(&self.state);
        let svc = find(&mut st.services, name)?;
        match &svc.proc {
            Some(p) => {
                host.signal(p.pid, signal);
                Ok(())
            }
            None => Err(ServiceError::NotRunning(name.to_string())),
        }
    }

    /// `ListServices`, by name.
    pub fn list(&self) -> Vec<ServiceInfo> {
        let st = lock(&self.state);
        st.services
            .values()
            .filter(|s| !s.removed)
            .map(Svc::info)
            .collect()
    }

    /// A service process exited (from the keeper's init reader).
    pub fn exited(&self, pid: i32, code: i32) {
        let mut st = lock(&self.state);
        let shared = st
            .services
            .values()
            .filter_map(|s| s.proc.as_ref())
            .find(|p| p.pid == pid)
            .map(|p| p.shared.clone());
        match shared {
            Some(s) => s.set_exit(code),
            None => {
                st.early.insert(pid, code);
            }
        }
    }

    /// The supervisor thread: kills overdue stops and starts what should run.
    pub fn run(self: Arc<Self>, host: Arc<dyn Host>) {
        loop {
            let mut st = lock(&self.state);
            let now = Instant::now();
            let mut wait = Duration::from_secs(60);
            for svc in st.services.values_mut() {
                let Some(p) = svc.proc.as_mut() else { continue };
                match p.kill_at {
                    Some(at) if at <= now => {
                        host.signal(p.pid, libc::SIGKILL);
                        p.kill_at = None;
                    }
                    Some(at) => wait = wait.min(at - now),
                    None => {}
                }
            }
            let mut frozen: Option<bool> = None;
            let mut next: Option<String> = None;
            for (name, svc) in &st.services {
                if !svc.wants_to_run() {
                    continue;
                }
                if let Some((at, _)) = svc.next_restart {
                    if at > now {
                        wait = wait.min(at - now);
                        continue;
                    }
                }
                let ready = svc
                    .spec
                    .needs
                    .iter()
                    .all(|n| st.services.get(n).is_some_and(|d| is_ready(d, &*host)));
                if !ready || *frozen.get_or_insert_with(|| host.is_frozen()) {
                    wait = wait.min(RECHECK);
                    continue;
                }
                next = Some(name.clone());
                break;
            }
            let Some(name) = next else {
                let _ = self.work.wait_timeout(st, wait);
                continue;
            };
            let Some(svc) = st.services.get_mut(&name) else {
                continue;
            };
            svc.spawning = true;
            if svc.next_restart.take().is_some() {
                svc.restart_count += 1;
            }
            let spawn = svc.spec.spawn.clone();
            drop(st);
            let result = host.spawn_service(&spawn);
            self.spawned(&name, spawn, result, &*host);
        }
    }

    /// Records the outcome of a spawn.
    fn spawned(
        self: &Arc<Self>,
        name: &str,
        spawn: SpawnSpec,
        result: Result<Spawned, String>,
        host: &dyn Host,
    ) {
        let mut st = lock(&self.state);
        let State {
            services,
            seq,
            early,
        } = &mut *st;
        let Some(svc) = services.get_mut(name) else {
            // Cannot happen (a spawning service is never dropped); do not leak the process.
            if let Ok(s) = result {
                host.signal(s.pid, libc::SIGKILL);
            }
            return;
        };
        svc.spawning = false;
        match result {
            Ok(s) => {
                let exit = early.remove(&s.pid).or(s.early_exit);
                let (wake_r, wake_w) = match nix::unistd::pipe2(
                    nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK,
                ) {
                    Ok(p) => p,
                    Err(e) => {
                        // Without a pump nobody would notice its end: kill it and retry later.
                        host.signal(s.pid, libc::SIGKILL);
                        failed_start(svc, format!("pipe: {e}"));
                        drop(st);
                        self.changed();
                        return;
                    }
                };
                let shared = Arc::new(ProcShared {
                    exit: Mutex::new(exit),
                    wake_w: File::from(wake_w),
                });
                let pid = s.pid;
                svc.proc = Some(Proc {
                    pid,
                    started: Instant::now(),
                    started_ms: now_ms(),
                    stopping: false,
                    kill_at: None,
                    shared: shared.clone(),
                });
                svc.error = None;
                record(seq, svc, ServiceEventKind::Started, |e| e.pid = Some(pid));
                if svc.removed || svc.stopped {
                    Self::begin_stop(seq, svc, DEFAULT_STOP_TIMEOUT, host);
                } else if svc.spec.spawn != spawn || svc.restart_now {
                    svc.restart_now = true;
                    Self::begin_stop(seq, svc, DEFAULT_STOP_TIMEOUT, host);
                }
                let log = self.open_log(name);
                let me = self.clone();
                let name = name.to_string();
                let outputs = [s.stdout, s.stderr];
                let started = std::thread::Builder::new()
                    .name(format!("svc-{name}"))
                    .spawn(move || me.pump(&name, pid, outputs, wake_r, shared, log));
                if let Err(e) = started {
                    log!("service pump thread: {e}");
                    host.signal(pid, libc::SIGKILL);
                }
            }
            Err(message) => {
                record(seq, svc, ServiceEventKind::Error, |e| {
                    e.data = Some(message.clone())
                });
                failed_start(svc, message);
            }
        }
        drop(st);
        self.changed();
    }

    fn open_log(&self, name: &str) -> Option<LogFile> {
        let opened = fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&self.log_dir)
            .and_then(|()| LogFile::open(self.log_dir.join(format!("{name}.log"))));
        match opened {
            Ok(f) => Some(f),
            Err(e) => {
                log!("service {name}: opening its log: {e}");
                None
            }
        }
    }

    /// One output line of the process `pid` of service `name`.
    fn line(
        &self,
        name: &str,
        pid: i32,
        kind: ServiceEventKind,
        text: String,
        log: &mut Option<LogFile>,
    ) {
        let ms = now_ms();
        if let Some(f) = log.as_mut() {
            let tag = if kind == ServiceEventKind::Stderr {
                "stderr"
            } else {
                "stdout"
            };
            if let Err(e) = f.write_line(&format!("{} [{tag}] {text}\n", rfc3339_ms(ms))) {
                log!("service {name}: writing its log: {e}");
                *log = None;
            }
        }
        let mut st = lock(&self.state);
        let State { services, seq, .. } = &mut *st;
        if let Some(svc) = services.get_mut(name) {
            record(seq, svc, kind, |e| {
                e.data = Some(text);
                e.pid = Some(pid);
                e.time_ms = ms;
            });
        }
        drop(st);
        self.news.notify_all();
    }

    /// Reads a service's output into log lines until it has exited and its pipes are drained,
    /// then records the exit.
    fn pump(
        &self,
        name: &str,
        pid: i32,
        outputs: [OwnedFd; 2],
        wake_r: OwnedFd,
        shared: Arc<ProcShared>,
        mut log: Option<LogFile>,
    ) {
        let [out, err] = outputs;
        let mut srcs = [Some(File::from(out)), Some(File::from(err))];
        let kinds = [ServiceEventKind::Stdout, ServiceEventKind::Stderr];
        let mut partial: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
        let mut wake = File::from(wake_r);
        let mut buf = vec![0u8; MAX_DATA_CHUNK];
        let mut quiet_since: Option<Instant> = None;
        loop {
            let exited = lock(&shared.exit).is_some();
            if exited && srcs.iter().all(Option::is_none) {
                break;
            }
            if exited && quiet_since.is_some_and(|q| q.elapsed() >= DRAIN_QUIET) {
                break;
            }
            let mut fds = vec![PollFd::new(wake.as_fd(), PollFlags::POLLIN)];
            let mut idx = [None, None];
            for (i, src) in srcs.iter().enumerate() {
                if let Some(f) = src {
                    fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
                    idx[i] = Some(fds.len() - 1);
                }
            }
            let timeout = if exited {
                PollTimeout::try_from(DRAIN_QUIET.as_millis() as i32 + 1)
                    .unwrap_or(PollTimeout::MAX)
            } else {
                PollTimeout::NONE
            };
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(_) => std::thread::sleep(DRAIN_QUIET),
            }
            let ready = |i: Option<usize>| {
                i.and_then(|i| fds[i].revents())
                    .is_some_and(|e| !e.is_empty())
            };
            let wake_ready = ready(Some(0));
            let readable = [ready(idx[0]), ready(idx[1])];
            drop(fds);
            if wake_ready {
                let mut sink = [0u8; 64];
                while matches!(wake.read(&mut sink), Ok(n) if n > 0) {}
            }
            let mut got = false;
            for i in 0..2 {
                if !readable[i] {
                    continue;
                }
                let Some(f) = srcs[i].as_mut() else { continue };
                match f.read(&mut buf) {
                    Ok(0) => srcs[i] = None,
                    Ok(n) => {
                        got = true;
                        partial[i].extend_from_slice(&buf[..n]);
                        for line in take_lines(&mut partial[i]) {
                            self.line(name, pid, kinds[i], line, &mut log);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => srcs[i] = None,
                }
            }
            if exited {
                if got {
                    quiet_since = None;
                } else if quiet_since.is_none() {
                    quiet_since = Some(Instant::now());
                }
            }
        }
        for i in 0..2 {
            if !partial[i].is_empty() {
                let rest = std::mem::take(&mut partial[i]);
                self.line(name, pid, kinds[i], lossy_line(&rest), &mut log);
            }
        }
        let code = lock(&shared.exit).unwrap_or(255);
        self.finished(name, pid, code);
    }

    /// The process `pid` of service `name` is gone: record it, and restart or forget.
    fn finished(&self, name: &str, pid: i32, code: i32) {
        let mut st = lock(&self.state);
        let State { services, seq, .. } = &mut *st;
        let Some(svc) = services.get_mut(name) else {
            return;
        };
        let Some(p) = svc.proc.take_if(|p| p.pid == pid) else {
            return;
        };
        if p.stopping {
            record(seq, svc, ServiceEventKind::Stopped, |e| {
                e.exit_code = Some(code);
                e.pid = Some(pid);
            });
        } else {
            record(seq, svc, ServiceEventKind::Exit, |e| {
                e.exit_code = Some(code);
                e.pid = Some(pid);
            });
        }
        if svc.removed {
            services.remove(name);
        } else if svc.restart_now && !svc.stopped {
            svc.restart_now = false;
            svc.next_restart = None;
        } else if !svc.stopped && !p.stopping {
            if p.started.elapsed() >= BACKOFF_RESET {
                svc.backoff = FIRST_BACKOFF;
            }
            svc.error = Some(exit_message(code));
            schedule_restart(svc);
        }
        drop(st);
        self.changed();
    }

    /// `WatchService`: answers `Ok`, then writes events as `Event` frames.
    pub fn watch(
        &self,
        conn: &mut UnixStream,
        name: &str,
        after_seq: Option<u64>,
        tail: Option<u64>,
        follow: bool,
    ) {
        let (first, mut last) = {
            let st = lock(&self.state);
            let Some(svc) = st
                .services
                .get(name)
                .filter(|s| !s.removed || after_seq.is_some())
            else {
                write_reply(conn, &ServiceError::NotFound(name.to_string()).into());
                return;
            };
            let events: Vec<ServiceEvent> = match after_seq {
                Some(after) => svc
                    .events
                    .iter()
                    .filter(|e| e.seq > after)
                    .cloned()
                    .collect(),
                None => {
                    let lines: Vec<&ServiceEvent> = svc
                        .events
                        .iter()
                        .filter(|e| {
                            matches!(e.kind, ServiceEventKind::Stdout | ServiceEventKind::Stderr)
                        })
                        .collect();
                    let skip = match tail {
                        Some(n) => lines.len().saturating_sub(n as usize),
                        None => 0,
                    };
                    lines.into_iter().skip(skip).cloned().collect()
                }
            };
            (events, st.seq)
        };
        write_reply(conn, &Reply::Ok);
        if !send_events(conn, &first) || !follow {
            return;
        }
        loop {
            let (batch, gone) = {
                let st = lock(&self.state);
                let (st, _) = self
                    .news
                    .wait_timeout_while(st, FOLLOW_TICK, |st| st.seq == last)
                    .unwrap_or_else(|p| p.into_inner());
                let svc = st.services.get(name);
                let batch: Vec<ServiceEvent> = svc
                    .map(|s| s.events.iter().filter(|e| e.seq > last).cloned().collect())
                    .unwrap_or_default();
                last = st.seq;
                (batch, svc.is_none())
            };
            if !send_events(conn, &batch) || gone || hung_up(conn) {
                return;
            }
        }
    }
}

/// A service's log file on the host. Past [`MAX_LOG_BYTES`] it becomes `<name>.log.1` (the
/// previous one is dropped) and a new one starts: the sprite directory is outside the
/// sprite's disk quota.
struct LogFile {
    file: File,
    size: u64,
    path: PathBuf,
}

impl LogFile {
    fn open(path: PathBuf) -> std::io::Result<LogFile> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o644)
            .open(&path)?;
        let size = file.metadata()?.len();
        Ok(LogFile { file, size, path })
    }

    fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        if self.size > 0 && self.size + line.len() as u64 > MAX_LOG_BYTES {
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            fs::rename(&self.path, old)?;
            *self = LogFile::open(self.path.clone())?;
        }
        self.file.write_all(line.as_bytes())?;
        self.size += line.len() as u64;
        Ok(())
    }
}

/// A start that failed before any process ran: try again after the backoff.
fn failed_start(svc: &mut Svc, message: String) {
    svc.error = Some(message);
    if !svc.removed && !svc.stopped {
        schedule_restart(svc);
    }
}

fn find<'a>(
    services: &'a mut BTreeMap<String, Svc>,
    name: &str,
) -> Result<&'a mut Svc, ServiceError> {
    services
        .get_mut(name)
        .filter(|s| !s.removed)
        .ok_or_else(|| ServiceError::NotFound(name.to_string()))
}

/// Schedules the next try after the current backoff, and doubles it.
fn schedule_restart(svc: &mut Svc) {
    let delay = svc.backoff;
    svc.next_restart = Some((Instant::now() + delay, now_ms() + delay.as_millis() as i64));
    svc.backoff = (svc.backoff * 2).min(MAX_BACKOFF);
}

fn exit_message(code: i32) -> String {
    if code > 128 && code < 128 + 65 {
        format!("killed by signal {}", code - 128)
    } else {
        format!("exited with code {code}")
    }
}

/// Whether a needed service is up: running, and listening on its `http_port` if it has one
/// (or has been running for [`PORT_WAIT`] without).
fn is_ready(svc: &Svc, host: &dyn Host) -> bool {
    let Some(p) = svc.proc.as_ref().filter(|p| !p.stopping) else {
        return false;
    };
    match svc.spec.http_port {
        None => true,
        Some(port) => p.started.elapsed() >= PORT_WAIT || listening(host.init_host_pid(), port),
    }
}

/// Whether a TCP socket listens on `port` in the network namespace of `pid`.
pub(crate) fn listening(pid: i32, port: u16) -> bool {
    ["tcp", "tcp6"].iter().any(|f| {
        fs::read_to_string(format!("/proc/{pid}/net/{f}"))
            .map(|t| tcp_table_listens(&t, port))
            .unwrap_or(false)
    })
}

/// Parses `/proc/net/tcp{,6}`: `sl local_address rem_address st ...`, state `0A` = LISTEN.
fn tcp_table_listens(table: &str, port: u16) -> bool {
    table.lines().skip(1).any(|l| {
        let mut f = l.split_whitespace();
        let local = f.nth(1);
        let state = f.nth(1);
        state == Some("0A")
            && local
                .and_then(|a| a.rsplit_once(':'))
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                == Some(port)
    })
}

/// Splits complete lines off the front of `buf` (and overlong ones, in pieces).
fn take_lines(buf: &mut Vec<u8>) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) if i <= MAX_LINE => {
                let line: Vec<u8> = buf.drain(..=i).collect();
                out.push(lossy_line(&line[..i]));
            }
            _ if buf.len() > MAX_LINE => {
                let piece: Vec<u8> = buf.drain(..MAX_LINE).collect();
                out.push(lossy_line(&piece));
            }
            _ => return out,
        }
    }
}

fn lossy_line(b: &[u8]) -> String {
    let b = b.strip_suffix(b"\r").unwrap_or(b);
    String::from_utf8_lossy(b).into_owned()
}

fn write_reply(conn: &mut UnixStream, r: &Reply) {
    let _ = proto::write_frame(
        conn,
        Kind::Reply,
        &serde_json::to_vec(r).unwrap_or_default(),
    );
}

fn send_events(conn: &mut UnixStream, events: &[ServiceEvent]) -> bool {
    events.iter().all(|e| {
        proto::write_frame(
            conn,
            Kind::Event,
            &serde_json::to_vec(e).unwrap_or_default(),
        )
        .is_ok()
    })
}

/// Whether the client closed its end (it sends nothing after its request).
fn hung_up(conn: &mut UnixStream) -> bool {
    let readable = {
        let mut fds = [PollFd::new(conn.as_fd(), PollFlags::POLLIN)];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
    };
    if !readable {
        return false;
    }
    let mut b = [0u8; 64];
    !matches!(conn.read(&mut b), Ok(n) if n > 0)
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds (`2026-01-31T10:28:13.366Z`).
pub(crate) fn rfc3339_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_769_855_293_366), "2026-01-31T10:28:13.366Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
    }

    #[test]
    fn lines() {
        let mut b = b"one\ntwo\r\nthr".to_vec();
        assert_eq!(take_lines(&mut b), ["one", "two"]);
        assert_eq!(b, b"thr");
        let mut b = vec![b'x'; MAX_LINE * 2 + 3];
        let l = take_lines(&mut b);
        assert_eq!(l.len(), 2);
        assert_eq!(b.len(), 3);
        let mut b = b"\xff\n".to_vec();
        assert_eq!(take_lines(&mut b), ["\u{fffd}"]);
    }

    #[test]
    fn log_files_rotate() {
        let dir = std::env::temp_dir().join(format!("wisp-svc-log-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("web.log");
        let mut log = LogFile::open(path.clone()).unwrap();
        let line = format!("{}\n", "x".repeat(1023));
        for _ in 0..(MAX_LOG_BYTES / 1024 + 10) {
            log.write_line(&line).unwrap();
        }
        let old = fs::metadata(dir.join("web.log.1")).unwrap().len();
        let new = fs::metadata(&path).unwrap().len();
        assert!(old <= MAX_LOG_BYTES && old > MAX_LOG_BYTES - 1024, "{old}");
        assert_eq!(new, 10 * 1024);
        // Reopening appends where it was.
        let mut log = LogFile::open(path.clone()).unwrap();
        log.write_line("y\n").unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), 10 * 1024 + 2);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tcp_table() {
        let t = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
                 0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1 1\n   \
                 1: 0100007F:1F91 0100007F:D2A4 01 00000000:00000000 00:00000000 00000000  1000        0 2 1\n";
        assert!(tcp_table_listens(t, 8080));
        assert!(!tcp_table_listens(t, 8081), "established, not listening");
        assert!(!tcp_table_listens(t, 80));
        let t6 = "  sl  local_address                         remote_address                        st\n   \
                  0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A\n";
        assert!(tcp_table_listens(t6, 8080));
    }

    #[test]
    fn backoff_doubles_to_the_cap() {
        let spec = ServiceSpec {
            name: "s".into(),
            spawn: SpawnSpec {
                argv: vec!["true".into()],
                path: "true".into(),
                env: vec![],
                dir: "/".into(),
                user: "sprite".into(),
                tty: false,
                rows: 0,
                cols: 0,
                stdin: false,
                max_run_after_disconnect_ms: None,
            },
            needs: vec![],
            http_port: None,
            stopped: false,
        };
        let mut svc = Svc::new(spec);
        let mut delays = Vec::new();
        for _ in 0..8 {
            let before = svc.backoff;
            schedule_restart(&mut svc);
            delays.push(before.as_secs());
        }
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(svc.status(), "failed");
        svc.reset_backoff();
        assert_eq!(svc.backoff, FIRST_BACKOFF);
        assert_eq!(svc.status(), "starting");
        svc.stopped = true;
        assert_eq!(svc.status(), "stopped");
    }

    #[test]
    fn tails_are_bounded() {
        let spec = ServiceSpec {
            name: "s".into(),
            spawn: SpawnSpec {
                argv: vec![],
                path: String::new(),
                env: vec![],
                dir: "/".into(),
                user: "sprite".into(),
                tty: false,
                rows: 0,
                cols: 0,
                stdin: false,
                max_run_after_disconnect_ms: None,
            },
            needs: vec![],
            http_port: None,
            stopped: false,
        };
        let mut svc = Svc::new(spec);
        let mut seq = 0;
        for i in 0..TAIL_EVENTS + 10 {
            record(&mut seq, &mut svc, ServiceEventKind::Stdout, |e| {
                e.data = Some(i.to_string())
            });
        }
        assert_eq!(svc.events.len(), TAIL_EVENTS);
        assert_eq!(svc.events.back().unwrap().seq, seq);
        for _ in 0..100 {
            record(&mut seq, &mut svc, ServiceEventKind::Stdout, |e| {
                e.data = Some("x".repeat(MAX_LINE))
            });
        }
        assert!(svc.event_bytes <= TAIL_BYTES);
    }
}

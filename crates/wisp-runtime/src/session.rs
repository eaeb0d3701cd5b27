//! One command running in a sprite, as its keeper holds it: output pump, scrollback, the
//! clients attached to it, and its exit.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::proto::{self, Kind, SessionInfo, MAX_DATA_CHUNK};
use crate::stdin_queue::StdinQueue;

/// Bytes of output kept for clients that attach later.
const SCROLLBACK_BYTES: usize = 1 << 20;
/// After the process exits, output still buffered in pipes is drained until this much quiet.
const DRAIN_QUIET: Duration = Duration::from_millis(30);

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The writing half of a client connection.
pub(crate) type ClientConn = Arc<Mutex<UnixStream>>;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking thread must not take the whole keeper down with poisoned locks.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct State {
    scrollback: VecDeque<(Kind, Vec<u8>)>,
    scrollback_bytes: usize,
    clients: Vec<ClientConn>,
    finished: bool,
    detached_since: Option<Instant>,
    killed_for_grace: bool,
}

#[derive(Default)]
struct Meta {
    rows: u16,
    cols: u16,
    last_output_ms: Option<i64>,
    output_bytes: u64,
    attached: u32,
}

pub(crate) struct Session {
    pub pid: i32,
    pub command: String,
    pub workdir: String,
    pub created: i64,
    pub tty: bool,
    grace: Option<Duration>,
    stdin: Option<Arc<StdinQueue>>,
    master: Option<File>,
    state: Mutex<State>,
    /// What `info()` reports, kept apart from `state`: `state` is held while output is written
    /// to clients, and a slow client must not stall listing or resizing.
    meta: Mutex<Meta>,
    /// Kept apart from `state` so that reporting an exit never waits for a client write.
    exit: Mutex<Option<i32>>,
    wake_w: File,
}

/// Output sources of a session, handed to its pump thread.
pub(crate) struct Outputs {
    pub stdout: OwnedFd,
    pub stderr: Option<OwnedFd>,
    pub wake_r: OwnedFd,
}

impl Session {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        pid: i32,
        command: String,
        workdir: String,
        tty: bool,
        rows: u16,
        cols: u16,
        grace: Option<Duration>,
        stdin: Option<File>,
        master: Option<File>,
    ) -> std::io::Result<(Arc<Session>, OwnedFd)> {
        let (wake_r, wake_w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)?;
        let s = Session {
            pid,
            command,
            workdir,
            created: now_ms() / 1000,
            tty,
            grace,
            stdin: stdin.map(StdinQueue::start),
            master,
            state: Mutex::new(State {
                scrollback: VecDeque::new(),
                scrollback_bytes: 0,
                clients: Vec::new(),
                finished: false,
                detached_since: None,
                killed_for_grace: false,
            }),
            meta: Mutex::new(Meta {
                rows,
                cols,
                ..Meta::default()
            }),
            exit: Mutex::new(None),
            wake_w: File::from(wake_w),
        };
        Ok((Arc::new(s), wake_r))
    }

    pub fn info(&self) -> SessionInfo {
        let m = lock(&self.meta);
        SessionInfo {
            session_id: self.pid.to_string(),
            command: self.command.clone(),
            workdir: self.workdir.clone(),
            created: self.created,
            tty: self.tty,
            rows: m.rows,
            cols: m.cols,
            attached: m.attached,
            last_output_ms: m.last_output_ms,
            output_bytes: m.output_bytes,
        }
    }

    fn wake(&self) {
        let _ = (&self.wake_w).write(&[1]);
    }

    /// Adds a client after writing it the scrollback; atomic with respect to live output.
    /// When the session already finished, returns its exit code instead.
    pub fn attach(&self, conn: &ClientConn, replay: bool) -> Result<(), i32> {
        let mut st = lock(&self.state);
        if st.finished {
            return Err(lock(&self.exit).unwrap_or(255));
        }
        if replay {
            let mut c = lock(conn);
            for (kind, data) in &st.scrollback {
                if proto::write_frame(&mut *c, *kind, data).is_err() {
                    return Ok(());
                }
            }
        }
        st.clients.push(conn.clone());
        lock(&self.meta).attached = st.clients.len() as u32;
        st.detached_since = None;
        drop(st);
        self.wake();
        Ok(())
    }

    pub fn detach(&self, conn: &ClientConn) {
        let mut st = lock(&self.state);
        st.clients.retain(|c| !Arc::ptr_eq(c, conn));
        lock(&self.meta).attached = st.clients.len() as u32;
        if st.clients.is_empty() && st.detached_since.is_none() {
            st.detached_since = Some(Instant::now());
        }
        drop(st);
        self.wake();
    }

    pub fn write_stdin(&self, data: &[u8]) {
        if let Some(q) = &self.stdin {
            q.push(data);
        }
    }

    pub fn close_stdin(&self) {
        if let (false, Some(q)) = (self.tty, &self.stdin) {
            q.eof();
        }
    }

    pub fn resize(&self, rows: u16, cols: u16) {
        if let Some(m) = &self.master {
            if rows > 0 && cols > 0 && wisp_sys::tty::set_window_size(m.as_fd(), rows, cols).is_ok()
            {
                let mut m = lock(&self.meta);
                m.rows = rows;
                m.cols = cols;
            }
        }
    }

    pub fn set_exit(&self, code: i32) {
        *lock(&self.exit) = Some(code);
        self.wake();
    }

    fn broadcast(&self, st: &mut State, kind: Kind, data: &[u8]) {
        {
            let mut m = lock(&self.meta);
            m.output_bytes += data.len() as u64;
            m.last_output_ms = Some(now_ms());
        }
        st.scrollback.push_back((kind, data.to_vec()));
        st.scrollback_bytes += data.len();
        while st.scrollback_bytes > SCROLLBACK_BYTES {
            match st.scrollback.pop_front() {
                Some((_, d)) => st.scrollback_bytes -= d.len(),
                None => break,
            }
        }
        let mut gone = false;
        st.clients.retain(|c| {
            let ok = proto::write_frame(&mut *lock(c), kind, data).is_ok();
            gone |= !ok;
            ok
        });
        if gone {
            lock(&self.meta).attached = st.clients.len() as u32;
        }
        if gone && st.clients.is_empty() {
            st.detached_since = Some(Instant::now());
        }
    }

    /// Runs until the process has exited and its output is drained, then sends the exit to
    /// every attached client. `kill_group` is asked to SIGKILL the process group when the
    /// session outlives its `max_run_after_disconnect`.
    pub fn pump(self: &Arc<Self>, out: Outputs, kill_group: &dyn Fn(i32)) {
        let mut stdout = Some(File::from(out.stdout));
        let mut stderr = out.stderr.map(File::from);
        let mut wake = File::from(out.wake_r);
        let mut buf = vec![0u8; MAX_DATA_CHUNK];
        let mut quiet_since: Option<Instant> = None;
        loop {
            let (exited, timeout) = {
                let mut st = lock(&self.state);
                let exited = lock(&self.exit).is_some();
                let mut timeout = if exited { Some(DRAIN_QUIET) } else { None };
                if !exited && st.clients.is_empty() {
                    if let (Some(grace), Some(since)) = (self.grace, st.detached_since) {
                        let left = grace.saturating_sub(since.elapsed());
                        if left.is_zero() {
                            if !st.killed_for_grace {
                                st.killed_for_grace = true;
                                kill_group(self.pid);
                            }
                        } else {
                            timeout = Some(left);
                        }
                    }
                }
                (exited, timeout)
            };
            if exited && stdout.is_none() && stderr.is_none() {
                break;
            }
            if exited && quiet_since.is_some_and(|q| q.elapsed() >= DRAIN_QUIET) {
                break;
            }
            let mut fds = Vec::with_capacity(3);
            fds.push(PollFd::new(wake.as_fd(), PollFlags::POLLIN));
            let out_idx = stdout.as_ref().map(|f| {
                fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
                fds.len() - 1
            });
            let err_idx = stderr.as_ref().map(|f| {
                fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
                fds.len() - 1
            });
            let t = match timeout {
                Some(d) => PollTimeout::try_from(d.as_millis().min(60_000) as i32 + 1)
                    .unwrap_or(PollTimeout::MAX),
                None => PollTimeout::NONE,
            };
            match poll(&mut fds, t) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(_) => break,
            }
            let ready = |i: Option<usize>| {
                i.and_then(|i| fds[i].revents())
                    .is_some_and(|e| !e.is_empty())
            };
            let (wake_ready, out_ready, err_ready) =
                (ready(Some(0)), ready(out_idx), ready(err_idx));
            drop(fds);
            if wake_ready {
                let mut sink = [0u8; 64];
                while matches!(wake.read(&mut sink), Ok(n) if n > 0) {}
            }
            let mut got_data = false;
            for (ready, src, kind) in [
                (out_ready, &mut stdout, Kind::Stdout),
                (err_ready, &mut stderr, Kind::Stderr),
            ] {
                if !ready {
                    continue;
                }
                let Some(f) = src.as_mut() else { continue };
                match f.read(&mut buf) {
                    Ok(0) => *src = None,
                    Ok(k) => {
                        got_data = true;
                        let mut st = lock(&self.state);
                        self.broadcast(&mut st, kind, &buf[..k]);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    // EIO on a PTY master: every slave end is closed.
                    Err(_) => *src = None,
                }
            }
            if exited {
                if got_data {
                    quiet_since = None;
                } else if quiet_since.is_none() {
                    quiet_since = Some(Instant::now());
                }
            }
        }
        if let Some(q) = &self.stdin {
            q.close();
        }
        let mut st = lock(&self.state);
        st.finished = true;
        let code = lock(&self.exit).unwrap_or(255);
        lock(&self.meta).attached = 0;
        for c in st.clients.drain(..) {
            let mut c = lock(&c);
            let _ = proto::write_frame(&mut *c, Kind::Exit, &code.to_be_bytes());
            let _ = c.shutdown(std::net::Shutdown::Write);
        }
    }
}

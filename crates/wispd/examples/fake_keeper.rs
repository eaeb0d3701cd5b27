//! Test fixture: a stand-in for `wisp-keeper` that speaks the keeper protocol but runs
//! commands directly on the host: no namespaces, no cgroups, no PTYs (a "TTY" session is two
//! pipes with stderr folded into stdout). It lets wispd's exec paths be tested without root:
//! `wispd --keeper-bin target/debug/examples/fake_keeper`.
//!
//! Not for anything but tests.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use wisp_runtime::config::KeeperConfig;
use wisp_runtime::proto::{
    encode, encode_exit, encode_json, read_frame, Control, Kind, Reply, Request, SessionInfo,
    SpawnSpec,
};

struct Session {
    info: Mutex<SessionInfo>,
    pid: i32,
    stdin: Mutex<Option<ChildStdin>>,
    clients: Mutex<HashMap<u64, UnixStream>>,
    grace: Option<Duration>,
}

struct Keeper {
    cfg: KeeperConfig,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    next_client: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, flag, path] = args.as_slice() else {
        eprintln!("usage: fake_keeper --config FILE");
        std::process::exit(2);
    };
    if flag != "--config" {
        std::process::exit(2);
    }
    let cfg = match std::fs::read(path).map(|b| KeeperConfig::from_json(&b)) {
        Ok(Ok(c)) => c,
        _ => {
            println!("ERROR cannot read config {path}");
            std::process::exit(1);
        }
    };
    let _ = nix::unistd::setsid();
    let _ = std::fs::remove_file(&cfg.socket);
    let listener = match UnixListener::bind(&cfg.socket) {
        Ok(l) => l,
        Err(e) => {
            println!("ERROR binding {}: {e}", cfg.socket.display());
            std::process::exit(1);
        }
    };
    println!("READY {}", std::process::id());
    let _ = io::stdout().flush();
    eprintln!("fake keeper for {} ready", cfg.sprite_id);
    let k = Arc::new(Keeper {
        cfg,
        sessions: Mutex::new(HashMap::new()),
        next_client: AtomicU64::new(1),
    });
    for conn in listener.incoming().flatten() {
        let k = k.clone();
        std::thread::spawn(move || k.handle(conn));
    }
}

impl Keeper {
    fn handle(self: Arc<Self>, mut conn: UnixStream) {
        let Ok(Some(frame)) = read_frame(&mut conn) else {
            return;
        };
        let Ok(req) = serde_json::from_slice::<Request>(&frame.payload) else {
            return;
        };
        let reply = |conn: &mut UnixStream, r: &Reply| {
            let _ = conn.write_all(&encode_json(Kind::Reply, r));
        };
        match req {
            Request::Ping => reply(
                &mut conn,
                &Reply::Pong {
                    init_pid: std::process::id() as i32,
                    sprite_id: self.cfg.sprite_id.clone(),
                },
            ),
            Request::ListSessions => {
                let sessions = lock(&self.sessions)
                    .values()
                    .map(|s| lock(&s.info).clone())
                    .collect();
                reply(&mut conn, &Reply::Sessions { sessions });
            }
            Request::SignalSession { session_id, signal } => {
                let found = lock(&self.sessions).get(&session_id).cloned();
                match found {
                    Some(s) => {
                        signal_group(s.pid, signal);
                        reply(&mut conn, &Reply::Ok);
                    }
                    None => reply(&mut conn, &not_found()),
                }
            }
            Request::Shutdown => {
                for s in lock(&self.sessions).values() {
                    signal_group(s.pid, 9);
                }
                reply(&mut conn, &Reply::Ok);
                let _ = std::fs::remove_file(&self.cfg.socket);
                std::process::exit(0);
            }
            Request::Spawn(spec) => self.spawn(conn, spec),
            Request::Attach { session_id } => {
                let found = lock(&self.sessions).get(&session_id).cloned();
                match found {
                    Some(s) => {
                        let info = lock(&s.info).clone();
                        reply(&mut conn, &Reply::Attached { session: info });
                        let id = self.register(&s, &conn);
                        self.serve_client(s, conn, id);
                    }
                    None => reply(&mut conn, &not_found()),
                }
            }
        }
    }

    fn spawn(self: Arc<Self>, mut conn: UnixStream, spec: SpawnSpec) {
        let mut cmd = Command::new(&spec.path);
        cmd.arg0(spec.argv.first().cloned().unwrap_or_default())
            .args(spec.argv.iter().skip(1))
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&spec.dir)
            .process_group(0)
            .stdin(if spec.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child: Child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                // Like the real keeper: a shell-style message and 127.
                let info = session_info("0", &spec);
                let _ =
                    conn.write_all(&encode_json(Kind::Reply, &Reply::Spawned { session: info }));
                let msg = format!("{}: {e}\n", spec.path);
                let _ = conn.write_all(&encode(Kind::Stderr, msg.as_bytes()));
                let _ = conn.write_all(&encode_exit(127));
                return;
            }
        };
        let pid = child.id() as i32;
        let session = Arc::new(Session {
            info: Mutex::new(session_info(&pid.to_string(), &spec)),
            pid,
            stdin: Mutex::new(child.stdin.take()),
            clients: Mutex::new(HashMap::new()),
            grace: spec.max_run_after_disconnect_ms.map(Duration::from_millis),
        });
        lock(&self.sessions).insert(pid.to_string(), session.clone());
        let info = lock(&session.info).clone();
        let _ = conn.write_all(&encode_json(Kind::Reply, &Reply::Spawned { session: info }));
        // Registered before any output can be produced, so none is lost.
        let client = self.register(&session, &conn);
        let out_kind = Kind::Stdout;
        let err_kind = if spec.tty { Kind::Stdout } else { Kind::Stderr };
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            let s = session.clone();
            readers.push(std::thread::spawn(move || pump(out, out_kind, &s)));
        }
        if let Some(err) = child.stderr.take() {
            let s = session.clone();
            readers.push(std::thread::spawn(move || pump(err, err_kind, &s)));
        }
        let k = self.clone();
        let s = session.clone();
        std::thread::spawn(move || {
            let status = child.wait();
            for r in readers {
                let _ = r.join();
            }
            let code = match status {
                Ok(st) => st.code().or(st.signal().map(|n| 128 + n)).unwrap_or(255),
                Err(_) => 255,
            };
            lock(&k.sessions).remove(&s.pid.to_string());
            for (_, mut c) in lock(&s.clients).drain() {
                let _ = c.write_all(&encode_exit(code));
                let _ = c.shutdown(std::net::Shutdown::Both);
            }
        });
        self.serve_client(session, conn, client);
    }

    fn register(&self, s: &Session, conn: &UnixStream) -> u64 {
        let id = self.next_client.fetch_add(1, Ordering::SeqCst);
        if let Ok(writer) = conn.try_clone() {
            lock(&s.clients).insert(id, writer);
            lock(&s.info).attached += 1;
        }
        id
    }

    /// Feeds a client's stdin/control frames to the session until it leaves.
    fn serve_client(self: Arc<Self>, s: Arc<Session>, conn: UnixStream, id: u64) {
        let mut conn = conn;
        while let Ok(Some(f)) = read_frame(&mut conn) {
            match f.kind {
                Kind::Stdin => {
                    if let Some(stdin) = lock(&s.stdin).as_mut() {
                        let _ = stdin.write_all(&f.payload);
                    }
                }
                Kind::StdinEof => {
                    lock(&s.stdin).take();
                }
                Kind::Control => {
                    if let Ok(Control::Signal { signal }) = serde_json::from_slice(&f.payload) {
                        signal_group(s.pid, signal);
                    }
                }
                _ => break,
            }
        }
        lock(&s.clients).remove(&id);
        let left = {
            let mut info = lock(&s.info);
            info.attached = info.attached.saturating_sub(1);
            info.attached
        };
        if left == 0 {
            if let Some(grace) = s.grace {
                let s = s.clone();
                let k = self.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(grace);
                    // Only a session still running: its pid may be anyone's once it exited.
                    let alive = lock(&k.sessions).contains_key(&s.pid.to_string());
                    if alive && lock(&s.info).attached == 0 {
                        signal_group(s.pid, 9);
                    }
                });
            }
        }
    }
}

fn session_info(id: &str, spec: &SpawnSpec) -> SessionInfo {
    SessionInfo {
        session_id: id.to_string(),
        command: spec.argv.join(" "),
        workdir: spec.dir.clone(),
        created: now_ms() / 1000,
        tty: spec.tty,
        rows: spec.rows,
        cols: spec.cols,
        attached: 0,
        last_output_ms: None,
        output_bytes: 0,
    }
}

fn not_found() -> Reply {
    Reply::Error {
        code: "not_found".into(),
        message: "session not found".into(),
    }
}

fn signal_group(pid: i32, signal: i32) {
    if let Ok(sig) = Signal::try_from(signal) {
        let _ = killpg(Pid::from_raw(pid), sig);
    }
}

fn pump(mut r: impl Read, kind: Kind, s: &Session) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        {
            let mut info = lock(&s.info);
            info.last_output_ms = Some(now_ms());
            info.output_bytes += n as u64;
        }
        let frame = encode(kind, &buf[..n]);
        for c in lock(&s.clients).values_mut() {
            let _ = c.write_all(&frame);
        }
    }
}

//! Shared helpers for wispd's integration tests: start the real `wispd` binary on a free
//! port with its own data dir, read its address and admin token, kill it on drop.
//!
//! ```ignore
//! mod common;
//! let d = common::TestDaemon::start();
//! let res = d.client().get(d.url("/v1/sprites")).bearer_auth(&d.token).send().await?;
//!
//! // Restart on the same data dir (after a kill -9, say):
//! let dir = tempfile::tempdir()?;
//! let mut d1 = TestDaemon::start_with(DaemonOptions { data_dir: Some(dir.path().into()), ..Default::default() });
//! d1.kill9();
//! let d2 = TestDaemon::start_with(DaemonOptions { data_dir: Some(dir.path().into()), ..Default::default() });
//! ```
#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How to start a daemon.
#[derive(Debug, Clone, Default)]
pub struct DaemonOptions {
    /// Extra command-line arguments (e.g. `--keeper-bin`, `--default-memory-mb`).
    pub args: Vec<String>,
    /// Use this data dir (it is kept); `None` makes a temporary one owned by the daemon.
    pub data_dir: Option<PathBuf>,
    /// Extra environment variables.
    pub envs: Vec<(String, String)>,
    /// Let wispd use (and build on first use) the real base image. Otherwise, unless `args`
    /// names `--rootfs`, wispd gets `--rootfs <data-dir>/test-rootfs`, an empty directory, so
    /// that no test accidentally starts a debootstrap.
    pub real_image: bool,
}

/// A running `wispd`.
pub struct TestDaemon {
    pub child: Child,
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`
    pub base_url: String,
    /// The admin token from `<data-dir>/admin-token`.
    pub token: String,
    pub data_dir: PathBuf,
    /// wispd's stderr goes here.
    pub log_path: PathBuf,
    owned_dir: Option<TempDir>,
}

impl TestDaemon {
    pub fn start() -> Self {
        Self::start_with(DaemonOptions::default())
    }

    pub fn start_with(opts: DaemonOptions) -> Self {
        let (owned_dir, data_dir) = match &opts.data_dir {
            Some(d) => (None, d.clone()),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("wispd-test-")
                    .tempdir()
                    .expect("temp dir");
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        fs::create_dir_all(&data_dir).expect("data dir");
        let addr_file = data_dir.join("wispd.addr");
        let _ = fs::remove_file(&addr_file);
        let log_path = data_dir.join("wispd.test.log");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wispd"));
        cmd.arg("--data-dir")
            .arg(&data_dir)
            .arg("--listen")
            .arg("127.0.0.1:0");
        let names_rootfs = opts
            .args
            .iter()
            .any(|a| a == "--rootfs" || a.starts_with("--rootfs="));
        if !opts.real_image && !names_rootfs {
            let rootfs = data_dir.join("test-rootfs");
            fs::create_dir_all(&rootfs).expect("rootfs dir");
            cmd.arg("--rootfs").arg(rootfs);
        }
        cmd.args(&opts.args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info,wispd=debug".into()),
            )
            .envs(opts.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        let mut child = cmd.spawn().expect("spawning wispd");

        let deadline = Instant::now() + Duration::from_secs(30);
        let addr: SocketAddr = loop {
            if let Ok(text) = fs::read_to_string(&addr_file) {
                if let Ok(a) = text.trim().parse() {
                    break a;
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "wispd exited early ({status}):\n{}",
                    fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "wispd did not write {} in time:\n{}",
                    addr_file.display(),
                    fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let token = fs::read_to_string(data_dir.join("admin-token"))
            .expect("admin-token")
            .trim()
            .to_string();
        TestDaemon {
            child,
            addr,
            base_url: format!("http://{addr}"),
            token,
            data_dir,
            log_path,
            owned_dir,
        }
    }

    /// `http://127.0.0.1:PORT{path}`
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// `ws://127.0.0.1:PORT{path}`
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// A plain client (no default auth: tests choose their headers).
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client")
    }

    /// `Bearer <admin token>`
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// A WebSocket handshake request with the admin token.
    pub fn ws_request(
        &self,
        path_and_query: &str,
    ) -> tokio_tungstenite::tungstenite::handshake::client::Request {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = self
            .ws_url(path_and_query)
            .into_client_request()
            .expect("ws request");
        req.headers_mut().insert(
            "authorization",
            self.bearer().parse().expect("header value"),
        );
        req
    }

    /// wispd's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGKILL, like a crash; waits for the process.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait (at most 15 s, then SIGKILL).
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                self.kill9();
                panic!("wispd did not exit on SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        self.kill9();
        // Sprites outlive wispd by design; a test's own temporary data dir takes its sprites
        // with it. (Callers that pass `data_dir` clean up with `shutdown_keepers`.)
        if self.owned_dir.is_some() {
            shutdown_keepers(&self.data_dir);
        }
        if std::thread::panicking() {
            eprintln!(
                "--- wispd log ({}) ---\n{}",
                self.log_path.display(),
                self.log()
            );
        }
    }
}

/// Shuts down the keepers of a caller-owned data dir when dropped, even if the test panics:
/// `let _cleanup = KeeperCleanup(dir.path().to_path_buf());` (declare it after the
/// `TempDir` so that it runs first).
pub struct KeeperCleanup(pub PathBuf);

impl Drop for KeeperCleanup {
    fn drop(&mut self) {
        shutdown_keepers(&self.0);
    }
}

/// Asks every keeper with a socket under `<data_dir>/run` to shut down (best effort).
pub fn shutdown_keepers(data_dir: &Path) {
    use wisp_runtime::proto::{encode_json, Kind, Request};
    let Ok(entries) = fs::read_dir(data_dir.join("run")) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_some_and(|x| x == "sock") {
            if let Ok(mut s) = std::os::unix::net::UnixStream::connect(&path) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let _ = s.write_all(&encode_json(Kind::Request, &Request::Shutdown));
                let _ = wisp_runtime::proto::read_frame(&mut s);
            }
        }
    }
}

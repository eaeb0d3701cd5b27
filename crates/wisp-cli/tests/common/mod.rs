//! Starts the real `wispd` (and through it real keepers, namespaces, cgroups and the Debian base
//! image) for the CLI's integration tests, and runs the real `wisp` binary against it.
//!
//! Needs root, the base image under `$WISP_IMAGE_DIR` (default `/var/tmp/wisp-test-images`;
//! `sudo ./scripts/test-all image` builds it) and the daemon binaries in the same target dir
//! as `wisp` (`cargo build --workspace`). The CLI never links daemon code, and neither do its
//! tests: they only speak the public API, like the CLI.
//!
//! ```ignore
//! let d = Daemon::start();
//! d.create("box").await;
//! let r = d.wisp(&["exec", "-s", "box", "--", "true"]).run().await;
//! assert_eq!(r.code, 0);
//! ```
//!
//! Each test starts its own daemon on a free port with a temporary data dir. Dropping the
//! [`Daemon`] destroys every sprite through the API, stops wispd, and fails the test if
//! anything (a sprite, a keeper) was left behind.
#![allow(dead_code)]

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use tempfile::TempDir;

/// How long one `wisp` run may take before the test calls it hung.
pub const WISP_TIMEOUT: Duration = Duration::from_secs(30);

/// The directory holding `wisp`, and (after `cargo build --workspace`) `wispd` and
/// `wisp-keeper`.
fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_wisp"))
        .parent()
        .expect("the wisp binary has a directory")
        .to_path_buf()
}

fn daemon_bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the workspace first: cargo build --workspace",
        path.display()
    );
    path
}

/// `$WISP_IMAGE_DIR`, else `/var/tmp/wisp-test-images`.
pub fn image_dir() -> PathBuf {
    std::env::var_os("WISP_IMAGE_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/wisp-test-images"))
}

/// A running `wispd` with its own data dir.
pub struct Daemon {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// The admin token wispd wrote to `<data-dir>/admin-token`.
    pub token: String,
    data: TempDir,
}

impl Daemon {
    /// Starts wispd on a free port with a new temporary data dir.
    pub fn start() -> Daemon {
        Daemon::start_with_keeper(&daemon_bin("wisp-keeper"))
    }

    /// Like [`Daemon::start`], with another keeper binary.
    pub fn start_with_keeper(keeper: &Path) -> Daemon {
        let data = Daemon::new_data_dir();
        let (child, url, token) = spawn_wispd(data.path(), keeper);
        Daemon {
            child,
            url,
            token,
            data,
        }
    }

    /// Checks what every daemon needs and makes a temporary data dir.
    fn new_data_dir() -> TempDir {
        assert!(
            nix::unistd::geteuid().is_root(),
            "these tests start the real wispd (namespaces, cgroups, overlayfs): run them as root"
        );
        let images = image_dir();
        assert!(
            images.join("debian-bookworm/READY").is_file(),
            "no base image under {} (set WISP_IMAGE_DIR, or build it: sudo ./scripts/test-all image)",
            images.display()
        );
        tempfile::Builder::new()
            .prefix("wisp-cli-test-")
            .tempdir()
            .expect("temp dir")
    }

    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    /// wispd's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(log_path(self.data.path())).unwrap_or_default()
    }

    /// SIGKILL, like a crash. Sprites and their keepers keep running.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts wispd again on the same data dir, with the real keeper (after
    /// [`Daemon::kill9`]); it listens on a new port, so `url` changes.
    pub fn restart(&mut self) {
        self.kill9();
        let (child, url, token) = spawn_wispd(self.data.path(), &daemon_bin("wisp-keeper"));
        self.child = child;
        self.url = url;
        self.token = token;
    }

    /// A JSON request with the admin token: status and body (`Null` when there is none).
    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        api_call(&self.url, &self.token, method, path, body)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}\n{}", self.log()))
    }

    /// Creates a sprite through the API, asserting 201.
    pub async fn create(&self, name: &str) {
        let (status, body) = self
            .api(
                reqwest::Method::POST,
                "/v1/sprites",
                Some(json!({ "name": name })),
            )
            .await;
        assert_eq!(status, 201, "creating {name}: {body}\n{}", self.log());
    }

    /// Creates several sprites at once.
    pub async fn create_all(&self, names: &[String]) {
        futures_util::future::join_all(names.iter().map(|n| self.create(n))).await;
    }

    /// `wisp ARGS` with this daemon's URL and admin token in `WISP_API_URL` / `WISP_TOKEN`.
    pub fn wisp(&self, args: &[&str]) -> Wisp {
        Wisp::new(&self.url)
            .env("WISP_TOKEN", &self.token)
            .args(args)
    }

    /// Runs `wisp ARGS` with no input.
    pub async fn run(&self, args: &[&str]) -> Run {
        self.wisp(args).run().await
    }

    /// Destroys every sprite, stops wispd, and stops any keeper that is still there.
    /// Returns what went wrong.
    fn cleanup(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        if !matches!(self.child.try_wait(), Ok(None)) {
            // The test killed it; sprites outlive wispd, so bring it back to destroy them.
            self.restart();
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        problems.extend(rt.block_on(destroy_all(&self.url, &self.token)));

        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                problems.push("wispd did not exit within 10 s of SIGTERM".into());
                self.kill9();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        for sock in keeper_sockets(self.data.path()) {
            problems.push(format!("a keeper was left running: {}", sock.display()));
            shutdown_keeper(&sock);
        }
        // A keeper that removed its socket may take a moment more to exit.
        let deadline = Instant::now() + Duration::from_secs(3);
        while !self.keeper_pids().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        for pid in self.keeper_pids() {
            problems.push(format!("a process of this daemon was left running: {pid}"));
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        // wispd leaves its storage pool (a loop-mounted btrfs under the data dir) mounted
        // when it exits, as it must across restarts; a test's daemon takes it along.
        unmount_under(self.data.path());
        problems
    }

    /// Pids of the processes started for this daemon's sprites that still run: keepers run
    /// as `wisp-keeper --config <data-dir>/run/<id>.json`.
    pub fn keeper_pids(&self) -> Vec<i32> {
        pids_mentioning(&self.data.path().join("run").display().to_string())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Own thread, own runtime: the caller is usually a test's async runtime, which must
        // not be blocked on from inside.
        let problems = std::thread::scope(|s| {
            s.spawn(|| self.cleanup())
                .join()
                .unwrap_or_else(|_| vec!["cleanup panicked".to_string()])
        });
        if std::thread::panicking() || !problems.is_empty() {
            eprintln!(
                "--- wispd log ({}) ---\n{}",
                log_path(self.data.path()).display(),
                self.log()
            );
        }
        if !problems.is_empty() && !std::thread::panicking() {
            panic!("cleanup of the test daemon: {problems:?}");
        }
    }
}

fn log_path(data: &Path) -> PathBuf {
    data.join("wispd.test.log")
}

/// Starts wispd on `data` with `keeper` as its keeper binary; returns it with its URL and
/// admin token once it listens.
fn spawn_wispd(data: &Path, keeper: &Path) -> (Child, String, String) {
    let wispd = daemon_bin("wispd");
    let addr_file = data.join("wispd.addr");
    let _ = fs::remove_file(&addr_file);
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(data))
        .expect("log file");
    let mut child = Command::new(wispd)
        .arg("--data-dir")
        .arg(data)
        .args(["--listen", "127.0.0.1:0"])
        .arg("--image-dir")
        .arg(image_dir())
        .arg("--keeper-bin")
        .arg(keeper)
        // Nothing from the caller's environment (WISP_ROOTFS, say) may change the daemon.
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info,wispd=debug".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawning wispd");
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        if let Some(t) = fs::read_to_string(&addr_file)
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
        {
            break t;
        }
        let log = || fs::read_to_string(log_path(data)).unwrap_or_default();
        if let Ok(Some(status)) = child.try_wait() {
            panic!("wispd exited early ({status}):\n{}", log());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "wispd did not write {} in time:\n{}",
                addr_file.display(),
                log()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let token = fs::read_to_string(data.join("admin-token"))
        .expect("admin-token")
        .trim()
        .to_string();
    (child, format!("http://{addr}"), token)
}

async fn api_call(
    url: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, Value), reqwest::Error> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()?;
    let mut rb = client
        .request(method, format!("{url}{path}"))
        .bearer_auth(token);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let res = rb.send().await?;
    let status = res.status().as_u16();
    let text = res.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// Lists every sprite (all pages) and destroys each one; returns what failed.
async fn destroy_all(url: &str, token: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let path = match &next {
            Some(t) => format!("/v1/sprites?continuation_token={t}"),
            None => "/v1/sprites".to_string(),
        };
        let page = match api_call(url, token, reqwest::Method::GET, &path, None).await {
            Ok((200, page)) => page,
            other => return vec![format!("listing sprites: {other:?}")],
        };
        for s in page["sprites"].as_array().into_iter().flatten() {
            names.extend(s["name"].as_str().map(str::to_string));
        }
        next = page["next_continuation_token"].as_str().map(str::to_string);
        if page["has_more"] != true || next.is_none() {
            break;
        }
    }
    let deletes = names.iter().map(|name| async move {
        let path = format!("/v1/sprites/{name}");
        match api_call(url, token, reqwest::Method::DELETE, &path, None).await {
            Ok((204, _)) => None,
            other => Some(format!("destroying {name}: {other:?}")),
        }
    });
    futures_util::future::join_all(deletes)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Keeper sockets, `<data>/run/<id>.sock`, that still exist.
fn keeper_sockets(data: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(data.join("run")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sock"))
        .collect()
}

/// Processes whose command line contains `needle` (zombies excluded).
fn pids_mentioning(needle: &str) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            // A zombie has an empty command line.
            String::from_utf8_lossy(&cmdline).contains(needle)
        })
        .collect()
}

/// Last resort when wispd could not destroy a sprite: the keeper protocol's `Shutdown`
/// request (`[u32 BE length][kind 1 = request][{"op":"shutdown"}]`, see
/// crates/wisp-runtime/src/proto.rs), which stops the sprite's processes and removes its
/// cgroups.
fn shutdown_keeper(sock: &Path) {
    let payload = br#"{"op":"shutdown"}"#;
    let mut frame = ((payload.len() + 1) as u32).to_be_bytes().to_vec();
    frame.push(1);
    frame.extend_from_slice(payload);
    if let Ok(mut s) = std::os::unix::net::UnixStream::connect(sock) {
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let _ = s.write_all(&frame);
        let _ = s.read(&mut [0u8; 256]);
    }
}

/// A `wisp` command with a clean environment: only `HOME` (a new empty directory, also the
/// working directory), `WISP_API_URL` and what the test adds.
pub struct Wisp {
    cmd: tokio::process::Command,
    input: Vec<u8>,
    home: TempDir,
}

/// What a finished `wisp` did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub raw_stdout: Vec<u8>,
}

impl Wisp {
    pub fn new(api_url: &str) -> Wisp {
        let home = tempfile::Builder::new()
            .prefix("wisp-cli-home-")
            .tempdir()
            .expect("temp dir");
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_wisp"));
        cmd.env_clear()
            .env("HOME", home.path())
            .env("WISP_API_URL", api_url)
            .current_dir(home.path())
            .kill_on_drop(true);
        Wisp {
            cmd,
            input: Vec::new(),
            home,
        }
    }

    pub fn args(mut self, args: &[&str]) -> Wisp {
        self.cmd.args(args);
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Wisp {
        self.cmd.env(key, value);
        self
    }

    pub fn env_remove(mut self, key: &str) -> Wisp {
        self.cmd.env_remove(key);
        self
    }

    pub fn cwd(mut self, dir: &Path) -> Wisp {
        self.cmd.current_dir(dir);
        self
    }

    /// Bytes for wisp's stdin (a pipe, closed after them).
    pub fn stdin(mut self, data: &[u8]) -> Wisp {
        self.input = data.to_vec();
        self
    }

    /// Runs to the end; panics if wisp takes longer than [`WISP_TIMEOUT`].
    pub async fn run(mut self) -> Run {
        use tokio::io::AsyncWriteExt;
        let mut child = self
            .cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning wisp");
        let mut stdin = child.stdin.take().expect("stdin");
        let input = std::mem::take(&mut self.input);
        // Feed stdin while the output is read: large inputs must not deadlock on full pipes.
        let feed = tokio::spawn(async move {
            let _ = stdin.write_all(&input).await;
        });
        let out = tokio::time::timeout(WISP_TIMEOUT, child.wait_with_output())
            .await
            .expect("wisp hung")
            .expect("waiting for wisp");
        let _ = feed.await;
        drop(self.home);
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            raw_stdout: out.stdout,
        }
    }

    /// Starts wisp with stdin and stdout piped and stderr to a file, for tests that talk to
    /// it while it runs.
    pub fn spawn(mut self) -> Spawned {
        let stderr_path = self.home.path().join("wisp.stderr");
        let stderr = fs::File::create(&stderr_path).expect("stderr file");
        let child = self
            .cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawning wisp");
        Spawned {
            child,
            stderr_path,
            _home: self.home,
        }
    }
}

/// A running `wisp` (see [`Wisp::spawn`]); killed when dropped.
pub struct Spawned {
    pub child: tokio::process::Child,
    stderr_path: PathBuf,
    _home: TempDir,
}

impl Spawned {
    pub fn pid(&self) -> u32 {
        self.child.id().expect("wisp still running")
    }

    /// What wisp wrote to stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Reads stdout until `out` contains `needle`; panics (with wisp's stderr) after 30 s or
    /// at EOF.
    pub async fn read_until(&mut self, out: &mut Vec<u8>, needle: &[u8]) {
        use tokio::io::AsyncReadExt;
        let stdout = self.child.stdout.as_mut().expect("stdout");
        let read = async {
            let mut buf = [0u8; 4096];
            while !out.windows(needle.len()).any(|w| w == needle) {
                let n = stdout.read(&mut buf).await.expect("read");
                if n == 0 {
                    return false;
                }
                out.extend_from_slice(&buf[..n]);
            }
            true
        };
        let found = tokio::time::timeout(Duration::from_secs(30), read).await;
        if found != Ok(true) {
            let why = if found.is_err() { "no" } else { "EOF before" };
            panic!(
                "{why} {:?} on wisp's stdout; got {:?}; stderr: {:?}",
                String::from_utf8_lossy(needle),
                String::from_utf8_lossy(out),
                self.stderr()
            );
        }
    }

    /// Reads the rest of stdout and waits for the exit (at most 20 s). The [`Run`]'s stdout
    /// is what came after the last [`Spawned::read_until`].
    pub async fn finish(mut self) -> Run {
        use tokio::io::AsyncReadExt;
        let mut rest = Vec::new();
        let stdout = self.child.stdout.as_mut().expect("stdout");
        let read = stdout.read_to_end(&mut rest);
        if tokio::time::timeout(Duration::from_secs(20), read)
            .await
            .is_err()
        {
            panic!("wisp did not finish; stderr: {:?}", self.stderr());
        }
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("wisp did not exit; stderr: {:?}", self.stderr()))
            .expect("wait");
        Run {
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&rest).into_owned(),
            stderr: self.stderr(),
            raw_stdout: rest,
        }
    }
}

/// A port on 127.0.0.1 that nobody listens on (bound, then released).
pub fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", l.local_addr().expect("addr"));
    drop(l);
    url
}

/// Lazily unmounts every mount at or below `dir`, deepest first.
pub fn unmount_under(dir: &Path) {
    let Ok(dir) = dir.canonicalize() else {
        return;
    };
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(&dir))
        .collect();
    mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for m in mounts {
        let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
    }
}

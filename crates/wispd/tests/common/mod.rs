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
//!
//! // Real sprites (root, and the base image under $WISP_IMAGE_DIR or /var/tmp/wisp-test-images):
//! let d = TestDaemon::start_real();
//! d.create("box").await;
//! let e = d.exec_q("box", &["pwd"], &[("dir", "/tmp")]).await;
//! assert_eq!(e.stdout, b"/tmp\n");
//! e.assert_ended_with(0);
//! d.delete("box").await;
//! ```
//!
//! Sprites outlive wispd by design: a daemon with its own temporary data dir shuts its keepers
//! down on drop; with a caller's data dir, hold a [`KeeperCleanup`] for it.
#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio_tungstenite::tungstenite::Message;

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
            unmount_all(&self.data_dir);
            remove_nft_tables(&self.data_dir);
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
        unmount_all(&self.0);
        remove_nft_tables(&self.0);
    }
}

/// Deletes the nftables tables wispd made for `data_dir` (each names its data dir in its
/// comment). A killed wispd leaves its table; the next wispd to start would remove it only
/// once the dir is gone, and until then it shows up as a leak in `nft list tables`.
pub fn remove_nft_tables(data_dir: &Path) {
    let dir = data_dir
        .canonicalize()
        .unwrap_or_else(|_| data_dir.to_path_buf());
    let want = format!("comment \"{}\"", dir.display());
    let Ok(out) = Command::new("nft")
        .args(["-t", "list", "ruleset", "inet"])
        .output()
    else {
        return;
    };
    let mut table = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(rest) = line.strip_prefix("table inet ") {
            table = Some(rest.trim_end_matches('{').trim().to_string());
        } else if line.trim() == want {
            if let Some(t) = table.take() {
                let _ = Command::new("nft")
                    .args(["delete", "table", "inet", &t])
                    .status();
            }
        }
    }
}

/// Lazily unmounts everything wispd mounted under `data_dir` (the storage pool, checkpoint
/// views), deepest first, so that the directory can be removed.
pub fn unmount_all(data_dir: &Path) {
    let Ok(dir) = data_dir.canonicalize() else {
        return;
    };
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
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

// ---------------------------------------------------------------------------------------------
// Real sprites: the real keeper, namespaces, cgroups and the Debian base image.
// ---------------------------------------------------------------------------------------------

/// Where the base image is: `$WISP_IMAGE_DIR`, else `/var/tmp/wisp-test-images` (the cache
/// `scripts/test-all` builds once, before the tests).
pub fn image_dir() -> PathBuf {
    std::env::var_os("WISP_IMAGE_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/wisp-test-images"))
}

/// Options for a wispd with the real keeper and base image, plus `args`.
pub fn real_options(args: &[&str], data_dir: Option<PathBuf>) -> DaemonOptions {
    let dir = image_dir();
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests start real sprites (namespaces, cgroups, overlayfs): run them as root"
    );
    assert!(
        dir.join("debian-bookworm/READY").is_file(),
        "no base image under {} (set WISP_IMAGE_DIR, or build it: sudo ./scripts/test-all image)",
        dir.display()
    );
    let mut all = vec!["--image-dir".to_string(), dir.display().to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    DaemonOptions {
        args: all,
        data_dir,
        real_image: true,
        ..Default::default()
    }
}

impl TestDaemon {
    /// A wispd that runs real sprites on the shared base image.
    pub fn start_real() -> Self {
        Self::start_with(real_options(&[], None))
    }

    /// Like [`TestDaemon::start_real`], with extra wispd arguments.
    pub fn start_real_args(args: &[&str]) -> Self {
        Self::start_with(real_options(args, None))
    }

    /// Sends a JSON request with the admin token; returns status and body (`Null` if none).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (status, text) = self.send_text(method, path, body).await;
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Sends a request with the admin token (and a JSON body, if any); returns the status and
    /// the body as text.
    async fn send_text(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, String) {
        let mut rb = self
            .client()
            .request(method, self.url(path))
            .header("authorization", self.bearer());
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let res = rb
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}\n{}", self.log()));
        let status = res.status();
        (status, res.text().await.unwrap_or_default())
    }

    /// Sends a request and reads an NDJSON answer (or a JSON error, as its one line).
    pub async fn ndjson(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Vec<Value>) {
        let (status, text) = self.send_text(method, path, body).await;
        let lines = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
            .collect();
        (status, lines)
    }

    pub async fn get_json(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// Creates a sprite (asserting 201) and returns its object.
    pub async fn create(&self, name: &str) -> Value {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/v1/sprites",
                Some(json!({"name": name, "labels": ["t"]})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}\n{}", self.log());
        body
    }

    /// Destroys a sprite, asserting 204.
    pub async fn delete(&self, name: &str) {
        let (status, body) = self
            .call(
                reqwest::Method::DELETE,
                &format!("/v1/sprites/{name}"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}\n{}", self.log());
    }

    /// Runs a command over the exec WebSocket (no stdin) and collects everything.
    pub async fn exec(&self, sprite: &str, argv: &[&str]) -> Exec {
        self.exec_q(sprite, argv, &[]).await
    }

    /// Like [`TestDaemon::exec`] with extra query parameters (`("env", "A=b")`, ...).
    pub async fn exec_q(&self, sprite: &str, argv: &[&str], extra: &[(&str, &str)]) -> Exec {
        let mut ws = connect(self, &exec_path(sprite, argv, extra)).await;
        Exec::from(collect(&mut ws).await)
    }

    /// Like [`TestDaemon::exec_q`], but a refused upgrade is an `Err((status, body))`.
    pub async fn try_exec(
        &self,
        sprite: &str,
        argv: &[&str],
        extra: &[(&str, &str)],
    ) -> Result<Exec, (u16, String)> {
        let req = self.ws_request(&exec_path(sprite, argv, extra));
        match tokio_tungstenite::connect_async(req).await {
            Ok((mut ws, _)) => Ok(Exec::from(collect(&mut ws).await)),
            Err(tokio_tungstenite::tungstenite::Error::Http(res)) => Err((
                res.status().as_u16(),
                String::from_utf8_lossy(res.body().as_deref().unwrap_or_default()).into_owned(),
            )),
            Err(e) => panic!("exec {argv:?}: {e:?}\n{}", self.log()),
        }
    }

    /// `sh -c script` in the sprite, asserting exit 0; returns stdout as a string.
    pub async fn sh(&self, sprite: &str, script: &str) -> String {
        let e = self.exec(sprite, &["sh", "-c", script]).await;
        assert_eq!(e.code, Some(0), "{script}: {e:?}");
        e.stdout_str()
    }
}

/// `/v1/sprites/{sprite}/exec?cmd=..&cmd=..&k=v`, URL-encoded.
pub fn exec_path(sprite: &str, argv: &[&str], extra: &[(&str, &str)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for a in argv {
        q.append_pair("cmd", a);
    }
    for (k, v) in extra {
        q.append_pair(k, v);
    }
    format!("/v1/sprites/{sprite}/exec?{}", q.finish())
}

/// One frame as the client saw it (keepalives are dropped by [`collect`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Got {
    Text(Value),
    Binary(Vec<u8>),
    Close(Option<u16>),
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens an exec WebSocket and checks the upgrade's headers.
pub async fn connect(d: &TestDaemon, path_and_query: &str) -> Ws {
    let (ws, res) = tokio_tungstenite::connect_async(d.ws_request(path_and_query))
        .await
        .unwrap_or_else(|e| panic!("{path_and_query}: {e:?}\n{}", d.log()));
    assert_eq!(res.headers()["x-sprite-capabilities"], "signal");
    assert_eq!(res.headers()["sprite-version"], wisp_api::SPRITE_VERSION);
    assert!(res.headers().get("sec-websocket-extensions").is_none());
    ws
}

/// Opens an exec WebSocket and reads its first frame, which must be `session_info`.
pub async fn connect_session(d: &TestDaemon, path_and_query: &str) -> (Ws, Value) {
    let mut ws = connect(d, path_and_query).await;
    let first = tokio::time::timeout(Duration::from_secs(30), ws.next())
        .await
        .expect("no session_info in time");
    let Some(Ok(Message::Text(t))) = first else {
        panic!("first frame is not text: {first:?}")
    };
    let info: Value = serde_json::from_str(t.as_str()).expect("session_info JSON");
    assert_eq!(info["type"], "session_info", "{info}");
    (ws, info)
}

/// Reads frames until the server's close frame (or the end), skipping keepalives.
pub async fn collect(ws: &mut Ws) -> Vec<Got> {
    collect_for(ws, Duration::from_secs(60)).await
}

pub async fn collect_for(ws: &mut Ws, limit: Duration) -> Vec<Got> {
    collect_stream(ws, limit).await
}

/// [`collect`] for any stream of messages (the read half of a split socket, say).
pub async fn collect_stream<S>(ws: &mut S, limit: Duration) -> Vec<Got>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    read_frames(ws, limit, usize::MAX).await
}

/// The next `n` frames (keepalives skipped); fewer if the connection ends first.
pub async fn next_frames(ws: &mut Ws, n: usize) -> Vec<Got> {
    read_frames(ws, Duration::from_secs(30), n).await
}

async fn read_frames<S>(ws: &mut S, limit: Duration, max: usize) -> Vec<Got>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let mut got = Vec::new();
    let read = async {
        while got.len() < max {
            let Some(m) = ws.next().await else { break };
            match m {
                Ok(Message::Text(t)) => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("text frame JSON");
                    if v["type"] != "keepalive" {
                        got.push(Got::Text(v));
                    }
                }
                Ok(Message::Binary(b)) => got.push(Got::Binary(b.to_vec())),
                Ok(Message::Close(f)) => {
                    got.push(Got::Close(f.map(|f| u16::from(f.code))));
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    };
    if tokio::time::timeout(limit, read).await.is_err() {
        panic!("no end of the exec within {limit:?}; got so far: {got:?}");
    }
    got
}

/// Reads TTY output (raw binary frames) until `needle` shows up; returns all output so far.
pub async fn read_until(ws: &mut Ws, out: &mut Vec<u8>, needle: &[u8]) {
    let read = async {
        while !contains(out, needle) {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) => out.extend_from_slice(&b),
                Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!(
                    "connection ended waiting for {:?}: {other:?}; output: {:?}",
                    String::from_utf8_lossy(needle),
                    String::from_utf8_lossy(out)
                ),
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .is_err()
    {
        panic!(
            "no {:?} in time; output: {:?}",
            String::from_utf8_lossy(needle),
            String::from_utf8_lossy(out)
        );
    }
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// Payloads of the binary frames of one stream id, concatenated.
pub fn stream_bytes(got: &[Got], id: u8) -> Vec<u8> {
    got.iter()
        .filter_map(|g| match g {
            Got::Binary(b) if b.first() == Some(&id) => Some(b[1..].to_vec()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// Every binary payload concatenated (TTY output).
pub fn raw_bytes(got: &[Got]) -> Vec<u8> {
    got.iter()
        .filter_map(|g| match g {
            Got::Binary(b) => Some(b.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

pub fn session_info(got: &[Got]) -> &Value {
    match got.first() {
        Some(Got::Text(v)) if v["type"] == "session_info" => v,
        other => panic!("first frame is not session_info: {other:?}"),
    }
}

/// Sends stdin (non-TTY framing) and then EOF.
pub async fn send_stdin_and_eof(ws: &mut Ws, data: &[u8]) {
    let mut frame = vec![0u8];
    frame.extend_from_slice(data);
    ws.send(Message::Binary(frame.into())).await.expect("stdin");
    ws.send(Message::Binary(vec![4].into())).await.expect("eof");
}

/// What a finished exec looked like.
#[derive(Debug, Clone)]
pub struct Exec {
    pub got: Vec<Got>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// From the text `exit` message.
    pub code: Option<i64>,
}

impl From<Vec<Got>> for Exec {
    fn from(got: Vec<Got>) -> Self {
        let code = got.iter().find_map(|g| match g {
            Got::Text(v) if v["type"] == "exit" => v["exit_code"].as_i64(),
            _ => None,
        });
        Exec {
            stdout: stream_bytes(&got, 1),
            stderr: stream_bytes(&got, 2),
            code,
            got,
        }
    }
}

impl Exec {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Asserts the non-TTY end of command: binary `[3, code]`, text exit, close 1000, in
    /// that order and at the very end.
    pub fn assert_ended_with(&self, code: u8) {
        let n = self.got.len();
        assert!(n >= 3, "{:?}", self.got);
        assert_eq!(
            self.got[n - 3..],
            [
                Got::Binary(vec![3, code]),
                Got::Text(json!({"type": "exit", "exit_code": code, "code": code})),
                Got::Close(Some(1000)),
            ],
            "{:?}",
            self.got
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Looking at the host: processes, namespaces, mounts, cgroups.
// ---------------------------------------------------------------------------------------------

/// Pids of every process on the host.
pub fn host_pids() -> Vec<i32> {
    fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// `/proc/PID/cmdline` with NULs as spaces ("" once the process is gone).
pub fn cmdline(pid: i32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// The host pid of the keeper of sprite `id`: `wisp-keeper --config <data>/run/<id>.json`.
pub fn keeper_pid(id: &str) -> Option<i32> {
    host_pids().into_iter().find(|&p| {
        let c = cmdline(p);
        c.contains("wisp-keeper") && c.contains(&format!("{id}.json"))
    })
}

/// The host pid of a sprite's init: the (only) child of its keeper's main thread.
pub fn init_pid(keeper: i32) -> Option<i32> {
    fs::read_to_string(format!("/proc/{keeper}/task/{keeper}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The inode of a namespace link, `/proc/PID/ns/KIND` (`pid:[4026532xxx]` → 4026532xxx).
pub fn ns_inode(pid: i32, kind: &str) -> Option<u64> {
    let link = fs::read_link(format!("/proc/{pid}/ns/{kind}")).ok()?;
    let s = link.to_string_lossy();
    s.split_once('[')?.1.trim_end_matches(']').parse().ok()
}

/// When a process started, in clock ticks since boot (`/proc/PID/stat` field 22). With its
/// pid, this names a process even after the pid is reused.
pub fn start_ticks(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(22 - 3)?
        .parse()
        .ok()
}

/// Now, in the clock of [`start_ticks`].
pub fn now_ticks() -> u64 {
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let up: f64 = fs::read_to_string("/proc/uptime")
        .expect("/proc/uptime")
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .expect("uptime");
    (up * hz) as u64
}

/// Whether the process `pid` that started at `start` ([`start_ticks`]) still runs (a zombie
/// does not: it only waits for its parent to reap it).
pub fn runs(pid: i32, start: Option<u64>) -> bool {
    let state = fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s[s.rfind(')')? + 1..]
                .split_whitespace()
                .next()
                .map(String::from)
        });
    start.is_some() && start_ticks(pid) == start && state.is_some_and(|s| s != "Z")
}

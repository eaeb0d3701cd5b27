//! Interactive behaviour against the real wispd: raw mode on a pseudo-terminal, Ctrl-C as a
//! byte, resize, detach, and Ctrl-C as a signal without a terminal.

mod common;

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use nix::pty::{openpty, Winsize};
use nix::sys::signal::{kill, Signal};
use nix::sys::termios::{tcgetattr, LocalFlags};
use nix::unistd::Pid;
use serde_json::Value;
use tempfile::TempDir;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use common::{Daemon, Spawned};

fn signal(pid: u32, sig: Signal) {
    kill(Pid::from_raw(pid as i32), sig).unwrap();
}

/// `wisp` in its own session with a pseudo-terminal as controlling terminal, stdin, stdout
/// and stderr, like in a terminal emulator.
struct Pty {
    child: Child,
    master: std::fs::File,
    slave: OwnedFd,
    output: Arc<Mutex<Vec<u8>>>,
    _home: TempDir,
}

impl Pty {
    /// Runs wisp on a 100x30 terminal.
    fn spawn(d: &Daemon, args: &[&str]) -> Pty {
        let size = Winsize {
            ws_row: 30,
            ws_col: 100,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = openpty(Some(&size), None).unwrap();
        let home = tempfile::tempdir().unwrap();
        let child = std::process::Command::new("setsid")
            .arg("--ctty")
            .arg(env!("CARGO_BIN_EXE_wisp"))
            .args(args)
            .env_clear()
            .env("HOME", home.path())
            .env("TERM", "xterm-test")
            .env("WISP_API_URL", &d.url)
            .env("WISP_TOKEN", &d.token)
            .current_dir(home.path())
            .stdin(Stdio::from(pty.slave.try_clone().unwrap()))
            .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
            .stderr(Stdio::from(pty.slave.try_clone().unwrap()))
            .spawn()
            .unwrap();
        let master = std::fs::File::from(pty.master);
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone().unwrap();
        let sink = output.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Pty {
            child,
            master,
            slave: pty.slave,
            output,
            _home: home,
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    async fn wait_for(&self, needle: &str) {
        for _ in 0..1500 {
            if self.text().contains(needle) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "no {needle:?} on the terminal, which shows {:?}",
            self.text()
        );
    }

    fn type_keys(&mut self, keys: &[u8]) {
        self.master.write_all(keys).unwrap();
    }

    fn canonical(&self) -> bool {
        tcgetattr(&self.slave)
            .unwrap()
            .local_flags
            .contains(LocalFlags::ICANON)
    }

    /// The path of the terminal, `/dev/pts/N`.
    fn path(&self) -> PathBuf {
        nix::unistd::ttyname(&self.slave).unwrap()
    }

    /// Resizes the terminal as a terminal emulator does: the kernel sends SIGWINCH to its
    /// foreground process group, which is wisp.
    fn resize(&self, cols: u16, rows: u16) {
        let st = std::process::Command::new("stty")
            .arg("-F")
            .arg(self.path())
            .args(["cols", &cols.to_string(), "rows", &rows.to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }

    async fn wait_exit(&mut self) -> i32 {
        for _ in 0..1500 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.child.kill();
        panic!("wisp did not exit; terminal shows {:?}", self.text());
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_raw_mode_ctrl_c_resize_and_detach() {
    let d = Daemon::start();
    d.create("console-box").await;
    let mut p = Pty::spawn(&d, &["console", "-s", "console-box"]);

    // A login shell on a remote terminal of the local size and TERM. (`""` keeps the
    // markers out of the echo of the typed line.)
    p.type_keys(b"echo \"TE\"\"RM=$TERM SIZE=$(stty size)\"\r");
    p.wait_for("TERM=xterm-test SIZE=30 100").await;
    assert!(!p.canonical(), "terminal not in raw mode");

    // Ctrl-C is a byte for the remote terminal, not a signal for wisp.
    p.type_keys(b"stty -icanon -isig; echo RE\"\"ADY; od -An -tx1 -N3; stty sane\r");
    p.wait_for("READY").await;
    p.type_keys(b"ab\x03");
    p.wait_for(" 61 62 03").await;
    assert!(p.child.try_wait().unwrap().is_none(), "wisp exited");

    // A resize of the local terminal reaches the remote one.
    p.resize(120, 40);
    p.type_keys(
        b"for i in $(seq 200); do [ \"$(stty size)\" = \"40 120\" ] && break; sleep 0.05; done; \
          echo \"NEW\"\"SIZE=$(stty size)\"\r",
    );
    p.wait_for("NEWSIZE=40 120").await;

    // Ctrl-\ detaches: what came before it is sent, what follows is not.
    p.type_keys(b"xy\x1czz");
    assert_eq!(p.wait_exit().await, 0, "{}", p.text());
    p.wait_for("detached").await;
    assert!(p.canonical(), "terminal not restored");

    // The shell goes on in the sprite with "xy" typed and no "zz": attach to it and press
    // Enter.
    let (status, sessions) = d
        .api(reqwest::Method::GET, "/v1/sprites/console-box/exec", None)
        .await;
    assert_eq!(status, 200, "{sessions}");
    let list = sessions["sessions"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{sessions}");
    assert_eq!(list[0]["tty"], true);
    let id = list[0]["id"].as_str().unwrap();
    let url = format!(
        "{}/v1/sprites/console-box/exec/{id}",
        d.url.replacen("http://", "ws://", 1)
    );
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", d.token).parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws.send(Message::binary(b"\r".to_vec())).await.unwrap();
    let mut seen = Vec::new();
    let read = async {
        while !String::from_utf8_lossy(&seen).contains("command not found") {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) => seen.extend_from_slice(&b),
                Some(Ok(_)) => {}
                other => panic!("attach ended: {other:?}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .unwrap_or_else(|_| panic!("no answer: {:?}", String::from_utf8_lossy(&seen)));
    let seen = String::from_utf8_lossy(&seen).into_owned();
    assert!(seen.contains("bash: xy: command not found"), "{seen}");
    assert!(!seen.contains("zz"), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_tty_restores_terminal_on_exit() {
    let d = Daemon::start();
    d.create("tty-exit").await;
    let mut p = Pty::spawn(
        &d,
        &[
            "exec",
            "-s",
            "tty-exit",
            "-t",
            "--",
            "sh",
            "-c",
            r#"echo "tty=$(tty) size=$(stty size) TERM=$TERM"; exit 3"#,
        ],
    );
    assert_eq!(p.wait_exit().await, 3, "{}", p.text());
    p.wait_for("TERM=xterm-test").await;
    assert!(
        p.text()
            .contains("tty=/dev/pts/0 size=30 100 TERM=xterm-test\r\n"),
        "{}",
        p.text()
    );
    assert!(p.canonical(), "terminal not restored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_and_destroy_on_a_terminal() {
    let d = Daemon::start();
    let mut p = Pty::spawn(&d, &["create", "term-box"]);
    assert_eq!(p.wait_exit().await, 0, "{}", p.text());
    let port = d.url.rsplit(':').next().unwrap();
    p.wait_for(&format!(
        "created sprite term-box\r\nurl: http://term-box.localhost:{port}\r\n"
    ))
    .await;

    // Destroy asks first; anything but yes keeps the sprite.
    let mut p = Pty::spawn(&d, &["destroy", "term-box"]);
    p.wait_for("Destroy sprite term-box? Its files and checkpoints will be deleted. [y/N] ")
        .await;
    p.type_keys(b"n\r");
    assert_eq!(p.wait_exit().await, 1, "{}", p.text());
    p.wait_for("aborted").await;
    let (status, _) = d
        .api(reqwest::Method::GET, "/v1/sprites/term-box", None)
        .await;
    assert_eq!(status, 200);

    let mut p = Pty::spawn(&d, &["rm", "term-box"]);
    p.wait_for("[y/N] ").await;
    p.type_keys(b"y\r");
    assert_eq!(p.wait_exit().await, 0, "{}", p.text());
    p.wait_for("destroyed sprite term-box").await;
    let (status, _) = d
        .api(reqwest::Method::GET, "/v1/sprites/term-box", None)
        .await;
    assert_eq!(status, 404);
}

/// `wisp exec` without a terminal (stdin and stdout pipes), once the command has printed
/// `ready`.
async fn spawn_piped(d: &Daemon, sprite: &str, script: &str) -> Spawned {
    let mut w = d
        .wisp(&["exec", "-s", sprite, "--", "sh", "-c", script])
        .spawn();
    w.read_until(&mut Vec::new(), b"ready\n").await;
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_is_forwarded_as_a_signal() {
    let d = Daemon::start();
    d.create("ctrl-c").await;

    // The command handles SIGINT: wisp reports its exit code.
    let w = spawn_piped(
        &d,
        "ctrl-c",
        r#"trap 'echo got INT; exit 5' INT; echo ready; while :; do sleep 0.1; done"#,
    )
    .await;
    signal(w.pid(), Signal::SIGINT);
    let r = w.finish().await;
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (5, "got INT\n"),
        "{}",
        r.stderr
    );

    // The command dies of SIGINT: 130, like a local one.
    let w = spawn_piped(&d, "ctrl-c", "echo ready; exec sleep 60").await;
    signal(w.pid(), Signal::SIGINT);
    let r = w.finish().await;
    assert_eq!((r.code, r.stdout.as_str()), (130, ""), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_ctrl_c_exits_130() {
    let d = Daemon::start();
    d.create("ctrl-c-twice").await;
    let w = spawn_piped(
        &d,
        "ctrl-c-twice",
        r#"trap 'echo INT >>/tmp/ints' INT; echo ready; while :; do sleep 0.1; done"#,
    )
    .await;
    let pid = w.pid();
    signal(pid, Signal::SIGINT);
    tokio::time::sleep(Duration::from_millis(100)).await;
    signal(pid, Signal::SIGINT);
    let r = w.finish().await;
    assert_eq!(r.code, 130, "{}", r.stderr);

    // Only the first Ctrl-C was forwarded; the command ignores it and goes on.
    let ints = || async {
        let r = d
            .run(&["exec", "-s", "ctrl-c-twice", "--", "cat", "/tmp/ints"])
            .await;
        r.stdout
    };
    for _ in 0..100 {
        if !ints().await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ints().await, "INT\n");
    let (_, sessions) = d
        .api(reqwest::Method::GET, "/v1/sprites/ctrl-c-twice/exec", None)
        .await;
    let running: Vec<&Value> = sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["command"].as_str().unwrap_or("").contains("trap"))
        .collect();
    assert_eq!(running.len(), 1, "{sessions}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_list_attach_detach_and_kill() {
    let d = Daemon::start();
    d.create("sess-box").await;
    // A console left running in the background (detached at once).
    let mut p = Pty::spawn(&d, &["console", "-s", "sess-box"]);
    p.type_keys(b"echo \"MA\"\"RK=$((6*7))\"\r");
    p.wait_for("MARK=42").await;
    p.type_keys(b"\x1c");
    assert_eq!(p.wait_exit().await, 0, "{}", p.text());

    // `wisp sessions` (and `wisp exec` without a command) list it.
    let r = d.run(&["sessions", "-s", "sess-box"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let line = r.stdout.lines().nth(1).unwrap_or_default().to_string();
    assert!(
        line.contains("bash -l") && line.contains("yes"),
        "{}",
        r.stdout
    );
    let id = line.split_whitespace().next().unwrap().to_string();
    let r2 = d.run(&["exec", "-s", "sess-box"]).await;
    assert!(r2.stdout.contains(&id), "{r2:?}");
    let r3 = d.run(&["sessions", "ls", "--json", "-s", "sess-box"]).await;
    let v: serde_json::Value = serde_json::from_str(&r3.stdout).unwrap();
    assert_eq!(v[0]["id"], id.as_str());

    // Attach: the scrollback comes back, the shell answers, Ctrl-\ detaches again.
    let mut a = Pty::spawn(&d, &["attach", "-s", "sess-box", &id]);
    a.wait_for("MARK=42").await;
    a.type_keys(b"echo \"AG\"\"AIN=$((2*3))\"\r");
    a.wait_for("AGAIN=6").await;
    a.type_keys(b"\x1c");
    assert_eq!(a.wait_exit().await, 0, "{}", a.text());
    a.wait_for("detached").await;

    // Kill ends it; an unknown id is a readable error.
    let r = d
        .run(&[
            "sessions", "kill", "-s", "sess-box", &id, "--signal", "KILL",
        ])
        .await;
    assert_eq!(r.code, 0, "{r:?}");
    let r = d.run(&["sessions", "-s", "sess-box"]).await;
    assert!(!r.stdout.contains(&id), "{r:?}");
    let r = d.run(&["attach", "-s", "sess-box", "999999"]).await;
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("no session 999999"), "{r:?}");
}

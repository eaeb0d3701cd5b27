//! Interactive behaviour: raw mode on a pseudo-terminal, detach, resize and Ctrl-C handling.

mod common;

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::pty::{openpty, Winsize};
use nix::sys::signal::{kill, Signal};
use nix::sys::termios::{tcgetattr, LocalFlags};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;

use common::{start, TOKEN};

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn wait_child(child: &mut Child) -> i32 {
    for _ in 0..500 {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.kill();
    panic!("wisp did not exit");
}

fn signal(pid: u32, sig: Signal) {
    kill(Pid::from_raw(pid as i32), sig).unwrap();
}

struct Pty {
    child: Child,
    master: std::fs::File,
    slave: OwnedFd,
    output: Arc<Mutex<Vec<u8>>>,
}

impl Pty {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    fn canonical(&self) -> bool {
        tcgetattr(&self.slave)
            .unwrap()
            .local_flags
            .contains(LocalFlags::ICANON)
    }
}

/// Runs wisp in a new session with a pseudo-terminal of 100x30 as stdin, stdout and stderr.
fn spawn_in_pty(api: &str, args: &[&str]) -> Pty {
    let size = Winsize {
        ws_row: 30,
        ws_col: 100,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = openpty(Some(&size), None).unwrap();
    let home = tempfile::tempdir().unwrap().keep();
    let child = std::process::Command::new("setsid")
        .arg(env!("CARGO_BIN_EXE_wisp"))
        .args(args)
        .env_clear()
        .env("HOME", &home)
        .env("TERM", "xterm-test")
        .env("WISP_API_URL", api)
        .env("WISP_TOKEN", TOKEN)
        .current_dir(&home)
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
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_raw_mode_resize_and_detach() {
    let (api, mock) = start().await;
    let mut p = spawn_in_pty(&api, &["console", "-s", "box"]);
    wait_until("ready", || p.text().contains("ready")).await;
    assert!(!p.canonical(), "terminal not in raw mode");
    assert_eq!(
        mock.queries(),
        vec![
            "cmd=bash&cmd=-l&path=%2Fbin%2Fbash&env=TERM%3Dxterm-test&env=LANG%3DC.UTF-8\
              &tty=true&rows=30&cols=100&stdin=true"
        ]
    );

    // Ctrl-C is an ordinary byte in raw mode.
    p.master.write_all(b"ab\x03").unwrap();
    wait_until("stdin bytes", || {
        mock.events().contains(&"bin:ab\\x03".to_string())
    })
    .await;

    signal(p.child.id(), Signal::SIGWINCH);
    let resize = r#"text:{"type":"resize","cols":100,"rows":30}"#.to_string();
    wait_until("resize", || mock.events().contains(&resize)).await;

    p.master.write_all(b"xy\x1czz").unwrap();
    assert_eq!(wait_child(&mut p.child).await, 0);
    wait_until("detached message", || p.text().contains("detached")).await;
    assert!(p.canonical(), "terminal not restored");
    assert!(mock.events().contains(&"bin:xy".to_string()));
    assert!(!mock.events().iter().any(|e| e.contains("zz")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_tty_restores_terminal_on_exit() {
    let (api, _) = start().await;
    let mut p = spawn_in_pty(&api, &["exec", "-s", "box", "-t", "tty"]);
    assert_eq!(wait_child(&mut p.child).await, 3);
    wait_until("output", || p.text().contains("raw")).await;
    assert!(p.canonical(), "terminal not restored");
}

async fn spawn_piped(api: &str, cmd: &str) -> (tokio::process::Child, tokio::process::ChildStdout) {
    let home = tempfile::tempdir().unwrap().keep();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_wisp"))
        .args(["exec", "-s", "box", cmd])
        .env_clear()
        .env("HOME", &home)
        .env("WISP_API_URL", api)
        .env("WISP_TOKEN", TOKEN)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !seen.ends_with(b"ready\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), stdout.read(&mut buf))
            .await
            .expect("no ready")
            .unwrap();
        assert!(n > 0, "eof before ready");
        seen.extend_from_slice(&buf[..n]);
    }
    (child, stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_is_forwarded_as_a_signal() {
    let (api, mock) = start().await;
    let (mut child, mut stdout) = spawn_piped(&api, "sleepy").await;
    signal(child.id().unwrap(), Signal::SIGINT);
    let mut rest = String::new();
    tokio::time::timeout(Duration::from_secs(10), stdout.read_to_string(&mut rest))
        .await
        .expect("wisp did not finish")
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("wisp did not exit")
        .unwrap();
    assert_eq!(status.code(), Some(130));
    assert_eq!(rest, "got INT\n");
    assert!(mock
        .events()
        .contains(&r#"text:{"type":"signal","signal":"INT"}"#.to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_ctrl_c_exits_130() {
    let (api, mock) = start().await;
    let (mut child, _stdout) = spawn_piped(&api, "stubborn").await;
    let pid = child.id().unwrap();
    signal(pid, Signal::SIGINT);
    tokio::time::sleep(Duration::from_millis(100)).await;
    signal(pid, Signal::SIGINT);
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("wisp did not exit")
        .unwrap();
    assert_eq!(status.code(), Some(130));
    let signals = mock
        .events()
        .iter()
        .filter(|e| e.contains("signal"))
        .count();
    assert_eq!(signals, 1);
}

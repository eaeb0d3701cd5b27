//! `wisp proxy` and `wisp url` against the real wispd (see `common`): a local port forwarded
//! to a server inside a sprite (several connections at once, the target's refusal, bad specs
//! and unknown sprites refused before listening), and a sprite's URL shown and switched
//! between public and private. Loopback only.

mod common;

use std::time::Duration;

use common::Daemon;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A TCP echo server (python stdlib); `PORT` is replaced.
const ECHO: &str = r#"import socket, threading
def echo(c):
    while True:
        d = c.recv(65536)
        if not d: break
        c.sendall(d)
    c.close()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', PORT))
s.listen(16)
while True:
    c, _ = s.accept()
    threading.Thread(target=echo, args=(c,), daemon=True).start()
"#;

/// Starts [`ECHO`] on 0.0.0.0:`port` in `sprite`, detached; waits until it listens.
async fn start_echo(d: &Daemon, sprite: &str, port: u16) {
    let script = format!(
        "cat > /tmp/echo.py <<'EOF'\n{}EOF\n\
         setsid nohup python3 /tmp/echo.py </dev/null >/tmp/echo.log 2>&1 &\n\
         for i in $(seq 100); do grep -q ':{port:04X} .* 0A ' /proc/net/tcp && exit 0; sleep 0.1; done\n\
         cat /tmp/echo.log; exit 1",
        ECHO.replace("PORT", &port.to_string())
    );
    let r = d
        .run(&["exec", "-s", sprite, "--", "sh", "-c", &script])
        .await;
    assert_eq!(r.code, 0, "{r:?}");
}

/// The local address out of `Forwarding 127.0.0.1:PORT -> NAME:REMOTE`.
fn forwarded_addr(stdout: &[u8]) -> String {
    let text = String::from_utf8_lossy(stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("Forwarding "))
        .expect("the Forwarding line");
    line.split_whitespace().nth(1).unwrap().to_string()
}

async fn echo_round_trip(addr: &str, msg: &[u8]) {
    let mut s = TcpStream::connect(addr).await.expect("local connect");
    s.write_all(msg).await.unwrap();
    let mut got = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(15), s.read_exact(&mut got))
        .await
        .expect("no echo in time")
        .expect("echo");
    assert_eq!(got, msg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_forwards_a_local_port() {
    let d = Daemon::start();
    d.create("np").await;
    start_echo(&d, "np", 9000).await;

    let mut p = d.wisp(&["proxy", "-s", "np", "0:9000"]).spawn();
    let mut out = Vec::new();
    p.read_until(&mut out, b" -> np:9000\n").await;
    let addr = forwarded_addr(&out);
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");

    // One WebSocket per connection, several at once, large payloads intact.
    let big: Vec<u8> = (0..512u32 << 10).map(|i| (i % 241) as u8).collect();
    let a = echo_round_trip(&addr, b"one");
    let b = echo_round_trip(&addr, &big);
    let c = echo_round_trip(&addr, b"three");
    tokio::join!(a, b, c);

    // Ctrl-C stops it cleanly.
    kill(Pid::from_raw(p.pid() as i32), Signal::SIGINT).unwrap();
    let r = p.finish().await;
    assert_eq!(r.code, 0, "{r:?}");

    // A port with nothing behind it: the local connection is closed and the reason shown.
    let mut p = d.wisp(&["proxy", "-s", "np", "0:9999"]).spawn();
    let mut out = Vec::new();
    p.read_until(&mut out, b" -> np:9999\n").await;
    let addr = forwarded_addr(&out);
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(15), s.read(&mut buf))
        .await
        .expect("the local connection stayed open")
        .unwrap_or(0);
    assert_eq!(n, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !p.stderr().contains("refused") {
        assert!(
            std::time::Instant::now() < deadline,
            "stderr: {}",
            p.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        p.stderr().contains("cannot connect to np:9999"),
        "{}",
        p.stderr()
    );
    kill(Pid::from_raw(p.pid() as i32), Signal::SIGINT).unwrap();
    p.finish().await;

    // Refused before listening: unknown sprite, bad port specs.
    let r = d.run(&["proxy", "-s", "nosuch", "9000"]).await;
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("not found"), "{}", r.stderr);
    for bad in ["0", "x", "1:0", "99999"] {
        let r = d.run(&["proxy", "-s", "np", bad]).await;
        assert_ne!(r.code, 0, "{bad}");
        assert!(r.stderr.contains("port"), "{bad}: {}", r.stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_shows_and_sets_auth() {
    let d = Daemon::start();
    d.create("nu").await;
    let port = d.url.rsplit(':').next().unwrap().to_string();
    let expected = format!("http://nu.localhost:{port}\n");

    let r = d.run(&["url", "-s", "nu"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, expected);
    assert!(r.stderr.contains("auth: sprite"), "{}", r.stderr);

    let r = d.run(&["url", "-s", "nu", "--public"]).await;
    assert_eq!((r.code, r.stdout.as_str()), (0, expected.as_str()), "{r:?}");
    assert!(r.stderr.contains("auth: public"), "{}", r.stderr);
    let (_, v) = d.api(reqwest::Method::GET, "/v1/sprites/nu", None).await;
    assert_eq!(v["url_settings"]["auth"], "public");

    // Public: the URL answers without a token (502 here: nothing listens on 8080).
    let res = reqwest::Client::new()
        .get(format!("{}/", d.url))
        .header("host", format!("nu.localhost:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 502);

    let r = d.run(&["url", "nu", "--private"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("auth: sprite"), "{}", r.stderr);
    let (_, v) = d.api(reqwest::Method::GET, "/v1/sprites/nu", None).await;
    assert_eq!(v["url_settings"]["auth"], "sprite");
    let res = reqwest::Client::new()
        .get(format!("{}/", d.url))
        .header("host", format!("nu.localhost:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    let r = d.run(&["url", "-s", "nu", "--public", "--private"]).await;
    assert_eq!(r.code, 2, "{r:?}");
    let r = d.run(&["url", "-s", "nosuch"]).await;
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("not found"), "{}", r.stderr);
}

//! Sprite URL ingress: throughput and latency of HTTP through wispd's sprite URL against a
//! direct connection into the sprite's network namespace (the floor: no proxy at all), same
//! app, same client, same run. Traffic stays on loopback and in the sprite's namespace.
//!
//! The client is a minimal HTTP/1.1 keep-alive loop on the bench's single-threaded runtime,
//! the same for both paths, so it caps both alike; the app is python's `ThreadingHTTPServer`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::client::Api;
use crate::daemon::Daemon;
use crate::stats::{Figure, Quantity};

const SPRITE: &str = "bench-url";
const PORT: u16 = 8080;
/// Bytes of `GET /big`.
const BIG: usize = 8 << 20;

/// `GET /` answers a short text, `GET /big` 8 MiB.
const APP: &str = r#"import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
BIG = b"x" * (8 << 20)
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def log_message(self, *a):
        pass
    def do_GET(self):
        body = BIG if self.path == "/big" else b"hello from the bench app"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), H).serve_forever()
"#;

pub struct Options {
    /// Seconds of load per path and concurrency.
    pub secs: u64,
}

#[derive(Clone)]
enum Target {
    /// Connect inside the sprite's network namespace to 127.0.0.1:PORT.
    Direct(PathBuf),
    /// wispd's listener, with the sprite's Host.
    Url(String, String),
}

impl Target {
    fn label(&self) -> &'static str {
        match self {
            Target::Direct(_) => "direct: GET into the sprite's netns",
            Target::Url(..) => "wisp: GET through the sprite URL",
        }
    }

    async fn connect(&self) -> Result<BufReader<TcpStream>> {
        let s = match self {
            Target::Direct(ns) => {
                let ns = ns.clone();
                let std = tokio::task::spawn_blocking(move || {
                    wisp_sys::netns::connect_tcp_in(
                        &ns,
                        ([127, 0, 0, 1], PORT).into(),
                        Duration::from_secs(5),
                    )
                })
                .await??;
                std.set_nonblocking(true)?;
                TcpStream::from_std(std)?
            }
            Target::Url(addr, _) => TcpStream::connect(addr.as_str()).await?,
        };
        s.set_nodelay(true)?;
        Ok(BufReader::new(s))
    }

    fn host(&self) -> String {
        match self {
            Target::Direct(_) => format!("127.0.0.1:{PORT}"),
            Target::Url(_, h) => h.clone(),
        }
    }
}

/// One `GET path` on a keep-alive connection; returns the body's length. Understands
/// `Content-Length` and chunked bodies.
async fn get(s: &mut BufReader<TcpStream>, host: &str, path: &str) -> Result<usize> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    s.get_mut().write_all(req.as_bytes()).await?;
    let mut line = String::new();
    s.read_line(&mut line).await?;
    ensure!(line.starts_with("HTTP/1.1 200"), "answer: {}", line.trim());
    let (mut len, mut chunked) = (None, false);
    loop {
        line.clear();
        ensure!(s.read_line(&mut line).await? > 0, "connection closed");
        let l = line.trim_end().to_ascii_lowercase();
        if l.is_empty() {
            break;
        }
        if let Some(v) = l.strip_prefix("content-length:") {
            len = Some(v.trim().parse::<usize>()?);
        } else if l.starts_with("transfer-encoding:") && l.contains("chunked") {
            chunked = true;
        }
    }
    match (len, chunked) {
        (Some(n), false) => {
            discard(s, n).await?;
            Ok(n)
        }
        (_, true) => {
            let mut total = 0;
            loop {
                line.clear();
                s.read_line(&mut line).await?;
                let n = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .context("chunk size")?;
                discard(s, n + 2).await?;
                if n == 0 {
                    return Ok(total);
                }
                total += n;
            }
        }
        _ => bail!("an answer with neither Content-Length nor chunks"),
    }
}

/// Reads and drops `n` bytes.
async fn discard(s: &mut BufReader<TcpStream>, mut n: usize) -> Result<()> {
    let mut buf = vec![0u8; n.min(64 << 10)];
    while n > 0 {
        let k = s.read(&mut buf[..n.min(64 << 10)]).await?;
        ensure!(k > 0, "connection closed in a body");
        n -= k;
    }
    Ok(())
}

/// `conns` connections each sending `GET path` back to back for `secs`: every request's
/// latency.
async fn load(t: &Target, conns: usize, secs: u64, path: &str) -> Result<Vec<Duration>> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let host = t.host();
    let tasks = (0..conns).map(|_| {
        let host = host.clone();
        async move {
            let mut s = t.connect().await?;
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let at = Instant::now();
                get(&mut s, &host, path).await?;
                lat.push(at.elapsed());
            }
            Ok::<_, anyhow::Error>(lat)
        }
    });
    let mut all = Vec::new();
    for r in futures_util::future::join_all(tasks).await {
        all.extend(r?);
    }
    Ok(all)
}

/// The host pid of the app of sprite `id` (its cgroup path holds the id).
fn app_pid(id: &str) -> Result<u32> {
    for e in std::fs::read_dir("/proc")?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        if cmd.windows(15).any(|w| w == b"/tmp/bench-app.") && cg.contains(id) {
            return Ok(pid);
        }
    }
    bail!("no app process in sprite {id}")
}

/// Latency figures and throughput quantities at 1 and 16 connections, and bulk MiB/s, for the
/// URL and direct. Deletes its sprite.
pub async fn run(
    api: &Api,
    daemon: &Daemon,
    opts: &Options,
) -> Result<(Vec<Figure>, Vec<Quantity>)> {
    let id = api.create_public(SPRITE).await?;
    let script = format!(
        "cat > /tmp/bench-app.py <<'EOF'\n{APP}EOF\n\
         setsid nohup python3 /tmp/bench-app.py {PORT} </dev/null >/tmp/app.log 2>&1 &\n\
         for i in $(seq 100); do\n\
           python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {PORT}))' \
             2>/dev/null && exit 0\n\
           sleep 0.1\n\
         done\n\
         cat /tmp/app.log; exit 1"
    );
    let code = api.exec_ws(SPRITE, &["sh", "-c", &script]).await?;
    ensure!(code == 0, "starting the app in {SPRITE} exited {code}");
    let netns = PathBuf::from(format!("/proc/{}/ns/net", app_pid(&id)?));
    let addr = daemon.base_url.trim_start_matches("http://").to_string();
    let port = addr.rsplit(':').next().unwrap_or_default();
    let targets = [
        Target::Direct(netns),
        Target::Url(addr.clone(), format!("{SPRITE}.localhost:{port}")),
    ];
    for t in &targets {
        load(t, 2, 1, "/").await.context(t.label())?;
    }
    let mut figures = Vec::new();
    let mut quantities = Vec::new();
    for conns in [1, 16] {
        eprintln!(
            "ingress: GET / at {conns} connections, {} s per path...",
            opts.secs
        );
        let mut pair = Vec::new();
        for t in &targets {
            let lat = load(t, conns, opts.secs, "/").await.context(t.label())?;
            let rps = lat.len() as f64 / opts.secs as f64;
            pair.push((
                Figure::from_samples(&format!("{}, {conns} conn", t.label()), &lat),
                rps,
            ));
        }
        let (direct, direct_rps) = pair.remove(0);
        let (mut url, url_rps) = pair.remove(0);
        url.compare(&direct);
        quantities.push(Quantity::new(
            &format!("direct: requests/s, GET /, {conns} conn"),
            direct_rps,
            "req/s",
            "into the sprite's netns, no proxy",
        ));
        quantities.push(Quantity::new(
            &format!("wisp: requests/s through the sprite URL, {conns} conn"),
            url_rps,
            "req/s",
            format!(
                "{} of direct",
                crate::report::fmt_ratio(url_rps / direct_rps)
            ),
        ));
        figures.push(url);
        figures.push(direct);
    }
    eprintln!("ingress: bulk GET of 8 MiB, {} s per path...", opts.secs);
    let mut mibs = Vec::new();
    for t in &targets {
        let at = Instant::now();
        let lat = load(t, 1, opts.secs, "/big").await.context(t.label())?;
        mibs.push((lat.len() * BIG) as f64 / (1 << 20) as f64 / at.elapsed().as_secs_f64());
    }
    quantities.push(Quantity::new(
        "direct: bulk GET of 8 MiB, 1 conn",
        mibs[0],
        "MiB/s",
        "into the sprite's netns, no proxy",
    ));
    quantities.push(Quantity::new(
        "wisp: bulk GET of 8 MiB through the sprite URL, 1 conn",
        mibs[1],
        "MiB/s",
        format!("{} of direct", crate::report::fmt_ratio(mibs[1] / mibs[0])),
    ));
    api.delete(SPRITE).await?;
    Ok((figures, quantities))
}

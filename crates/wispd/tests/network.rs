//! Per-sprite networking on real namespaces (root): slots, isolation, NAT, the resolver and
//! egress policies, slot reuse and reattachment after a crash.
//!
//! Traffic stays on this machine: the "internet" is a network namespace each test makes
//! (`FakeNet`: a veth to the host, TEST-NET addresses 198.18.K.0/30 for the link and
//! 198.19.K.0/24 plus 172.31.K.0/24 on its loopback, routed to it), DNS upstreams are
//! responders the tests run on 127.0.0.1, and sprites only talk to those, to each other and
//! to the host.

mod common;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{DaemonOptions, KeeperCleanup, TestDaemon};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// A fake internet in a namespace of our own.
// ---------------------------------------------------------------------------------------------

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().expect("running ip");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

const SERVER: &str = r#"
import socketserver, sys
class H(socketserver.StreamRequestHandler):
    def handle(self):
        self.wfile.write(("you are %s\n" % self.client_address[0]).encode())
        for line in self.rfile:
            self.wfile.write(line)
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer.daemon_threads = True
socketserver.ThreadingTCPServer(("0.0.0.0", int(sys.argv[1])), H).serve_forever()
"#;

/// A namespace standing in for the internet, with a TCP greeter on port 8080 of every
/// address (it answers `you are <peer>` and then echoes lines).
struct FakeNet {
    k: u32,
    ns: String,
    server: Child,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl FakeNet {
    fn new() -> Self {
        for _ in 0..64 {
            let k = (std::process::id() * 7 + NEXT.fetch_add(1, Ordering::SeqCst)) % 250 + 1;
            let ns = format!("wtn{k}");
            if ip(&["netns", "add", &ns]).is_err() {
                continue;
            }
            let host = format!("wtx{k}");
            let link = format!("198.18.{k}");
            let (host_addr, ns_addr, gw) = (
                format!("{link}.1/30"),
                format!("{link}.2/30"),
                format!("{link}.1"),
            );
            let setup = [
                vec![
                    "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
                vec!["addr", "add", &host_addr, "dev", &host],
                vec!["link", "set", &host, "up"],
                vec!["-n", &ns, "addr", "add", &ns_addr, "dev", "eth0"],
                vec!["-n", &ns, "link", "set", "eth0", "up"],
                vec!["-n", &ns, "link", "set", "lo", "up"],
                vec!["-n", &ns, "route", "add", "default", "via", &gw],
            ];
            let mut ok = true;
            for args in &setup {
                if let Err(e) = ip(args) {
                    eprintln!("{e}");
                    ok = false;
                    break;
                }
            }
            for a in [
                "198.19.K.1/32",
                "198.19.K.2/32",
                "198.19.K.3/32",
                "172.31.K.1/32",
            ] {
                let a = a.replace('K', &k.to_string());
                ok = ok && ip(&["-n", &ns, "addr", "add", &a, "dev", "lo"]).is_ok();
            }
            for net in [format!("198.19.{k}.0/24"), format!("172.31.{k}.0/24")] {
                ok = ok
                    && ip(&[
                        "route",
                        "add",
                        &net,
                        "via",
                        &format!("{link}.2"),
                        "dev",
                        &host,
                    ])
                    .is_ok();
            }
            if !ok {
                let _ = ip(&["netns", "del", &ns]);
                let _ = ip(&["link", "del", &host]);
                continue;
            }
            let server = Command::new("ip")
                .args(["netns", "exec", &ns, "python3", "-c", SERVER, "8080"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .expect("starting the fake internet's server");
            let me = FakeNet { k, ns, server };
            me.wait_listening();
            return me;
        }
        panic!("could not make a fake internet namespace");
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let out = Command::new("ip")
                .args(["netns", "exec", &self.ns, "ss", "-Hltn", "sport = :8080"])
                .output()
                .expect("ss");
            if !out.stdout.is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the fake internet's server did not start");
    }

    /// `198.19.K.n`
    fn addr(&self, n: u8) -> String {
        format!("198.19.{}.{n}", self.k)
    }

    /// The host's address on the link: what masquerade makes sprites look like.
    fn host_side(&self) -> String {
        format!("198.18.{}.1", self.k)
    }

    /// A private-range address that is routed into this namespace too.
    fn private_addr(&self) -> String {
        format!("172.31.{}.1", self.k)
    }
}

impl Drop for FakeNet {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        // The veth (and with it our routes) goes with the namespace.
        let _ = ip(&["netns", "del", &self.ns]);
        let _ = ip(&["link", "del", &format!("wtx{}", self.k)]);
    }
}

// ---------------------------------------------------------------------------------------------
// A DNS upstream on 127.0.0.1.
// ---------------------------------------------------------------------------------------------

/// Answers A queries for the names it knows (TTL 60) and NXDOMAIN for the others; remembers
/// every name it was asked.
struct Upstream {
    addr: std::net::SocketAddr,
    asked: Arc<Mutex<Vec<String>>>,
}

fn qname(msg: &[u8]) -> Option<(String, usize)> {
    let mut pos = 12;
    let mut labels = Vec::new();
    loop {
        let len = *msg.get(pos)? as usize;
        if len == 0 {
            return Some((labels.join("."), pos + 1));
        }
        labels.push(String::from_utf8_lossy(msg.get(pos + 1..pos + 1 + len)?).to_lowercase());
        pos += 1 + len;
    }
}

impl Upstream {
    async fn start(names: HashMap<String, Ipv4Addr>) -> Self {
        // UDP and TCP on the same port.
        let (sock, tcp) = loop {
            let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let port = sock.local_addr().unwrap().port();
            if let Ok(t) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                break (sock, t);
            }
        };
        let addr = sock.local_addr().unwrap();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let names = Arc::new(names);
        let (log, known) = (asked.clone(), names.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                    return;
                };
                if let Some(r) = Self::answer(&buf[..n], &known, &log) {
                    let _ = sock.send_to(&r, peer).await;
                }
            }
        });
        let log = asked.clone();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut c, _)) = tcp.accept().await {
                let (names, log) = (names.clone(), log.clone());
                tokio::spawn(async move {
                    let Ok(len) = c.read_u16().await else { return };
                    let mut q = vec![0u8; len as usize];
                    if c.read_exact(&mut q).await.is_err() {
                        return;
                    }
                    if let Some(r) = Self::answer(&q, &names, &log) {
                        let mut framed = (r.len() as u16).to_be_bytes().to_vec();
                        framed.extend_from_slice(&r);
                        let _ = c.write_all(&framed).await;
                    }
                });
            }
        });
        Upstream { addr, asked }
    }

    fn answer(
        q: &[u8],
        names: &HashMap<String, Ipv4Addr>,
        log: &Mutex<Vec<String>>,
    ) -> Option<Vec<u8>> {
        let (name, end) = qname(q)?;
        log.lock().unwrap().push(name.clone());
        let qtype = u16::from_be_bytes([*q.get(end)?, *q.get(end + 1)?]);
        let mut r = q.get(..end + 4)?.to_vec();
        r[2] = 0x81;
        r[3] = 0x80;
        r[6..12].fill(0);
        match names.get(&name) {
            Some(ip) if qtype == 1 => {
                r[7] = 1;
                r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
                r.extend_from_slice(&ip.octets());
            }
            Some(_) => {}
            None => r[3] = 0x83,
        }
        Some(r)
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

// ---------------------------------------------------------------------------------------------
// Probes run inside sprites.
// ---------------------------------------------------------------------------------------------

/// `python3 -c PROBE HOST PORT TIMEOUT`: connects, sends a line, prints `ok <first line>`,
/// `timeout <s>`, `err <errno> <s>` or `gai <error>`.
const PROBE: &str = r#"
import socket, sys, time, errno
host, port, t = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = time.time()
try:
    c = socket.create_connection((host, port), timeout=t)
    c.sendall(b"hi\n")
    print("ok", c.makefile().readline().strip())
except socket.gaierror as e:
    print("gai", e)
except socket.timeout:
    print("timeout %.2f" % (time.time() - s))
except OSError as e:
    print("err", errno.errorcode.get(e.errno, e.errno), "%.2f" % (time.time() - s))
"#;

/// `python3 -c DNSQ NAME udp|tcp`: asks the sprite's resolver (from /etc/resolv.conf)
/// for NAME's A record and prints `rcode R answers N`.
const DNSQ: &str = r#"
import socket, struct, sys
name, proto = sys.argv[1], sys.argv[2]
gw = [l.split()[1] for l in open("/etc/resolv.conf") if l.startswith("nameserver")][0]
q = struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
if proto == "udp":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    s.sendto(q, (gw, 53))
    r = s.recv(4096)
else:
    s = socket.create_connection((gw, 53), timeout=5)
    s.sendall(struct.pack(">H", len(q)) + q)
    n = struct.unpack(">H", s.recv(2))[0]
    r = b""
    while len(r) < n:
        r += s.recv(n - len(r))
print("rcode", r[3] & 15, "answers", struct.unpack(">H", r[6:8])[0])
"#;

/// `sudo python3 -c SPOOF SRC DST PORT TEXT`: one UDP datagram with a forged source address.
const SPOOF: &str = r#"
import socket, struct, sys
src, dst, port, msg = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].encode()
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
udp = struct.pack(">HHHH", 40000, port, 8 + len(msg), 0) + msg
hdr = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                  socket.inet_aton(src), socket.inet_aton(dst))
s.sendto(hdr + udp, (dst, 0))
"#;

/// `python3 -c UDP_LOG PORT`: prints every datagram received on PORT.
const UDP_LOG: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
while True:
    data, peer = s.recvfrom(2048)
    print(data.decode(errors="replace"), peer[0], flush=True)
"#;

async fn probe(d: &TestDaemon, sprite: &str, host: &str, port: u16, timeout: f64) -> String {
    let e = d
        .exec(
            sprite,
            &[
                "python3",
                "-c",
                PROBE,
                host,
                &port.to_string(),
                &timeout.to_string(),
            ],
        )
        .await;
    assert_eq!(e.code, Some(0), "{e:?}");
    e.stdout_str().trim().to_string()
}

async fn dns(d: &TestDaemon, sprite: &str, name: &str, proto: &str) -> String {
    let e = d.exec(sprite, &["python3", "-c", DNSQ, name, proto]).await;
    assert_eq!(e.code, Some(0), "{e:?}");
    e.stdout_str().trim().to_string()
}

/// The sprite's `eth0` address.
async fn sprite_ip(d: &TestDaemon, sprite: &str) -> String {
    let out = d.sh(sprite, "ip -4 -o addr show eth0").await;
    out.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .unwrap_or_else(|| panic!("no address in {out:?}"))
        .to_string()
}

async fn set_policy(d: &TestDaemon, sprite: &str, policy: Value) -> (StatusCode, Value) {
    d.call(
        Method::POST,
        &format!("/v1/sprites/{sprite}/policy/network"),
        Some(policy),
    )
    .await
}

fn assert_fast_refusal(out: &str) {
    let mut w = out.split_whitespace();
    assert_eq!(w.next(), Some("err"), "{out}");
    let errno = w.next().unwrap_or_default();
    assert!(
        ["ECONNREFUSED", "EHOSTUNREACH", "ENETUNREACH", "EACCES"].contains(&errno),
        "{out}"
    );
    let secs: f64 = w.next().unwrap_or("9").parse().unwrap_or(9.0);
    assert!(secs < 1.0, "refusal took {secs} s: {out}");
}

fn daemon(upstream: &Upstream, extra: &[&str]) -> TestDaemon {
    let up = upstream.addr.to_string();
    let mut args = vec!["--dns-upstream", up.as_str(), "--idle-timeout", "0"];
    args.extend_from_slice(extra);
    TestDaemon::start_real_args(&args)
}

// ---------------------------------------------------------------------------------------------
// What the host sees of our state.
// ---------------------------------------------------------------------------------------------

fn netns_dir(d: &std::path::Path) -> std::path::PathBuf {
    d.join("run").join("netns")
}

/// Names in the daemon's netns dir (`wv12`, `wv12.owner`, …).
fn netns_entries(data_dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(netns_dir(data_dir))
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn host_links() -> Vec<String> {
    let out = Command::new("ip").args(["-o", "link"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

/// The daemon's own nftables table, as text.
fn own_table(data_dir: &std::path::Path) -> Option<(String, String)> {
    let dir = data_dir.canonicalize().ok()?;
    let out = Command::new("nft")
        .args(["list", "tables", "inet"])
        .output()
        .ok()?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.trim_start_matches("table inet ").trim();
        if !name.starts_with("wisp") {
            continue;
        }
        let t = Command::new("nft")
            .args(["list", "table", "inet", name])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&t.stdout).into_owned();
        if text.contains(&format!("comment \"{}\"", dir.display())) {
            return Some((name.to_string(), text));
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn isolation_and_nat() {
    let net = FakeNet::new();
    let upstream = Upstream::start(HashMap::new()).await;
    let d = daemon(&upstream, &[]);
    d.create("net-a").await;
    d.create("net-b").await;

    // Each sprite has eth0 with its own /30 and the resolver on its gateway.
    let a_ip = sprite_ip(&d, "net-a").await;
    let b_ip = sprite_ip(&d, "net-b").await;
    assert_ne!(a_ip, b_ip);
    let resolv = d.sh("net-a", "cat /etc/resolv.conf").await;
    let gw = resolv
        .split_whitespace()
        .nth(1)
        .expect("a nameserver")
        .to_string();
    assert!(resolv.starts_with("nameserver "), "{resolv}");

    // Out to the (fake) internet through NAT: the server sees the host's side of its link.
    let out = probe(&d, "net-a", &net.addr(1), 8080, 5.0).await;
    assert_eq!(
        out,
        format!("ok you are {}", net.host_side()),
        "{}",
        d.log()
    );

    // Sprite to sprite: dropped (a server in b answers b itself, not a).
    d.exec_q(
        "net-b",
        &[
            "sh",
            "-c",
            "nohup python3 -m http.server 8081 >/dev/null 2>&1 &",
        ],
        &[],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let own = probe(&d, "net-b", &b_ip, 8081, 2.0).await;
        if own.starts_with("ok") {
            break;
        }
        assert!(Instant::now() < deadline, "b's own server: {own}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = probe(&d, "net-a", &b_ip, 8081, 1.5).await;
    assert!(!out.starts_with("ok"), "a reached b: {out}");

    // Sprite to host: a server on the host is not reachable, on its gateway nor elsewhere.
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let out = probe(&d, "net-a", &gw, port, 1.5).await;
    assert!(!out.starts_with("ok"), "a reached the host: {out}");
    let out = probe(&d, "net-a", &net.host_side(), port, 1.5).await;
    assert!(!out.starts_with("ok"), "a reached the host: {out}");
    assert!(
        tokio::time::timeout(Duration::from_millis(100), listener.accept())
            .await
            .is_err(),
        "the host accepted a connection from a sprite"
    );

    // Private ranges: rejected at once, even where a route exists.
    assert_fast_refusal(&probe(&d, "net-a", &net.private_addr(), 8080, 5.0).await);

    // The resolver answers (our upstream: NXDOMAIN) over UDP and TCP.
    assert_eq!(
        dns(&d, "net-a", "unknown.test", "udp").await,
        "rcode 3 answers 0"
    );
    assert_eq!(
        dns(&d, "net-a", "unknown.test", "tcp").await,
        "rcode 3 answers 0"
    );
    assert!(upstream.asked().contains(&"unknown.test".to_string()));

    d.delete("net-a").await;
    d.delete("net-b").await;
}

#[tokio::test]
async fn forged_sources_never_leave_the_host() {
    let net = FakeNet::new();
    let upstream = Upstream::start(HashMap::new()).await;
    // With its user namespace, root in a sprite has no raw sockets at all: the network
    // namespace belongs to the host, and CAP_NET_RAW inside counts for nothing there.
    let hardened = daemon(&upstream, &[]);
    hardened.create("net-raw").await;
    let e = hardened
        .exec(
            "net-raw",
            &[
                "sudo",
                "python3",
                "-c",
                SPOOF,
                "203.0.113.7",
                &net.addr(1),
                "9999",
                "x",
            ],
        )
        .await;
    assert_ne!(e.code, Some(0), "{e:?}");
    assert!(e.stderr_str().contains("Operation not permitted"), "{e:?}");
    hardened.delete("net-raw").await;
    drop(hardened);

    // The firewall is the second wall: without the user namespace (`--no-hardening`, where
    // root inside has raw sockets), forged source addresses still never leave the host.
    let d = daemon(&upstream, &["--no-hardening"]);
    d.create("net-a").await;
    d.create("net-b").await;
    let a_ip = sprite_ip(&d, "net-a").await;
    let b_ip = sprite_ip(&d, "net-b").await;
    let mut log = Command::new("ip")
        .args(["netns", "exec", &net.ns, "python3", "-c", UDP_LOG, "9999"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (src, text) in [
        (a_ip.as_str(), "real"),
        ("203.0.113.7", "forged"),
        (b_ip.as_str(), "other"),
    ] {
        let e = d
            .exec(
                "net-a",
                &[
                    "sudo",
                    "python3",
                    "-c",
                    SPOOF,
                    src,
                    &net.addr(1),
                    "9999",
                    text,
                ],
            )
            .await;
        assert_eq!(e.code, Some(0), "{e:?}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = log.kill();
    let out = log.wait_with_output().unwrap();
    let got = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        got,
        format!("real {}\n", net.host_side()),
        "datagrams seen outside"
    );

    d.delete("net-a").await;
    d.delete("net-b").await;
}

#[tokio::test]
async fn allowlist_policy() {
    let net = FakeNet::new();
    let names: HashMap<String, Ipv4Addr> = [
        ("allowed.test", net.addr(1)),
        ("denied.test", net.addr(2)),
        ("api.wild.test", net.addr(2)),
    ]
    .into_iter()
    .map(|(n, a)| (n.to_string(), a.parse().unwrap()))
    .collect();
    let upstream = Upstream::start(names).await;
    let d = daemon(&upstream, &[]);
    d.create("pol").await;

    // Unrestricted by default; the policy is readable inside.
    let (s, body) = d.get_json("/v1/sprites/pol/policy/network").await;
    assert_eq!((s, body), (StatusCode::OK, json!({"rules": []})));
    assert_eq!(
        d.sh("pol", "cat /.sprite/policy/network.json").await,
        "{\n  \"rules\": []\n}\n"
    );
    assert!(probe(&d, "pol", &net.addr(3), 8080, 5.0)
        .await
        .starts_with("ok"));

    // Bad documents: 400, nothing changes.
    for bad in [
        json!({}),
        json!({"rules": [{"domain": "a.test"}]}),
        json!({"rules": [{"include": "everything"}]}),
        json!({"rules": [], "extra": true}),
    ] {
        let (s, body) = set_policy(&d, "pol", bad.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap_or_default()
                .starts_with("invalid policy config"),
            "{body}"
        );
    }
    let (s, _) = d
        .call(
            Method::POST,
            "/v1/sprites/nope/policy/network",
            Some(json!({"rules": []})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let policy = json!({"rules": [
        {"domain": "allowed.test", "action": "allow"},
        {"domain": "*.wild.test", "action": "deny"},
        {"domain": "denied.test", "action": "deny"},
    ]});
    let started = Instant::now();
    let (s, body) = set_policy(&d, "pol", policy.clone()).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
    eprintln!("policy applied in {:?}", started.elapsed());
    assert_eq!(d.get_json("/v1/sprites/pol/policy/network").await.1, policy);
    let inside: Value =
        serde_json::from_str(&d.sh("pol", "cat /.sprite/policy/network.json").await).unwrap();
    assert_eq!(inside, policy);
    let e = d
        .exec(
            "pol",
            &["sh", "-c", "echo '{}' > /.sprite/policy/network.json"],
        )
        .await;
    assert_ne!(e.code, Some(0), "the policy file is writable inside");

    // Denied and unlisted names: REFUSED, and the upstream never hears of them.
    let before = upstream.asked().len();
    assert_eq!(
        dns(&d, "pol", "denied.test", "udp").await,
        "rcode 5 answers 0"
    );
    assert_eq!(
        dns(&d, "pol", "api.wild.test", "tcp").await,
        "rcode 5 answers 0"
    );
    assert_eq!(
        dns(&d, "pol", "unlisted.test", "udp").await,
        "rcode 5 answers 0"
    );
    assert_eq!(upstream.asked().len(), before, "{:?}", upstream.asked());
    assert!(probe(&d, "pol", "denied.test", 8080, 5.0)
        .await
        .starts_with("gai"));

    // Raw addresses nobody resolved: rejected at once (not a timeout).
    assert_fast_refusal(&probe(&d, "pol", &net.addr(3), 8080, 5.0).await);
    // The allowed name resolves and connects.
    let out = probe(&d, "pol", "allowed.test", 8080, 5.0).await;
    assert_eq!(out, format!("ok you are {}", net.host_side()));
    // Its address is in the sprite's allow set (with a timeout), so the raw address works too.
    assert!(probe(&d, "pol", &net.addr(1), 8080, 5.0)
        .await
        .starts_with("ok"));

    // A live change cuts an open connection to a destination it blocks.
    const HOLD: &str = r#"
import socket, time, sys
c = socket.create_connection(("allowed.test", 8080), timeout=5)
f = c.makefile("rwb")
f.readline()
start = time.time()
for i in range(100):
    try:
        c.settimeout(2)
        f.write(b"ping\n"); f.flush()
        if not f.readline():
            raise OSError("closed")
        print("ok", flush=True)
    except OSError as e:
        print("cut %.2f %s" % (time.time() - start, type(e).__name__), flush=True)
        sys.exit(0)
    time.sleep(0.2)
print("never cut")
"#;
    let (dd, hold) = (Arc::new(d), HOLD.to_string());
    let d2 = dd.clone();
    let held = tokio::spawn(async move { d2.exec("pol", &["python3", "-c", &hold]).await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (s, _) = set_policy(
        &dd,
        "pol",
        json!({"rules": [
            {"domain": "allowed.test", "action": "deny"},
            {"domain": "other.test", "action": "allow"},
        ]}),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let e = held.await.unwrap();
    let out = e.stdout_str();
    assert!(out.starts_with("ok\n"), "{out}");
    assert!(out.contains("cut "), "{out}\n{}", dd.log());
    assert_fast_refusal(&probe(&dd, "pol", &net.addr(1), 8080, 5.0).await);

    // `{"rules":[]}`: unrestricted again.
    let (s, _) = set_policy(&dd, "pol", json!({"rules": []})).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(probe(&dd, "pol", &net.addr(3), 8080, 5.0)
        .await
        .starts_with("ok"));
    assert_eq!(
        dns(&dd, "pol", "denied.test", "udp").await,
        "rcode 0 answers 1"
    );

    // A policy set while the sprite is cold is in force from its next start.
    let (s, _) = dd
        .call(Method::POST, "/v1/sprites/pol/sleep?mode=cold", None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = set_policy(&dd, "pol", json!({"rules": [{"include": "defaults"}]})).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(
        dns(&dd, "pol", "allowed.test", "udp").await,
        "rcode 5 answers 0"
    );
    assert_fast_refusal(&probe(&dd, "pol", &net.addr(3), 8080, 5.0).await);
    dd.delete("pol").await;
}

#[tokio::test]
async fn slots_are_pooled_reused_and_not_leaked() {
    let upstream = Upstream::start(HashMap::new()).await;
    let d = daemon(&upstream, &["--net-pool-size", "2"]);
    let dir = d.data_dir.clone();
    // The pool fills in the background.
    let deadline = Instant::now() + Duration::from_secs(10);
    while netns_entries(&dir).len() < 2 {
        assert!(Instant::now() < deadline, "{:?}", netns_entries(&dir));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let idle = netns_entries(&dir);

    // Create and cold wake take a slot from the pool.
    let mut creates = Vec::new();
    for name in ["pool-a", "pool-b", "pool-c"] {
        let t = Instant::now();
        d.create(name).await;
        creates.push(t.elapsed());
    }
    let owners: Vec<String> = netns_entries(&dir)
        .into_iter()
        .filter(|n| n.ends_with(".owner"))
        .collect();
    assert_eq!(owners.len(), 3, "{owners:?}");
    let first = idle[0].clone();
    assert!(
        owners.contains(&format!("{first}.owner")),
        "the first create did not take an idle slot: {owners:?} {idle:?}"
    );
    let a_ip = sprite_ip(&d, "pool-a").await;
    let mut wakes = Vec::new();
    for _ in 0..3 {
        let (s, _) = d
            .call(Method::POST, "/v1/sprites/pool-a/sleep?mode=cold", None)
            .await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        let t = Instant::now();
        let e = d.exec("pool-a", &["true"]).await;
        wakes.push(t.elapsed());
        e.assert_ended_with(0);
    }
    // A cold sprite gets a (pooled) slot again: addresses are reused, not leaked.
    let a_ip2 = sprite_ip(&d, "pool-a").await;
    eprintln!("pool-a address {a_ip} then {a_ip2}");
    eprintln!("create (pool of 2): {creates:?}; cold wake: {wakes:?}");

    for name in ["pool-a", "pool-b", "pool-c"] {
        d.delete(name).await;
    }
    // After destroy: only the idle pool is left (no owner files, nothing wired in nft).
    let deadline = Instant::now() + Duration::from_secs(10);
    let left = loop {
        let left = netns_entries(&dir);
        if left.len() <= 2 || Instant::now() > deadline {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        left.len() <= 2 && left.iter().all(|n| !n.ends_with(".owner")),
        "{left:?}"
    );
    let links = host_links();
    for slot in &left {
        assert!(links.contains(slot), "{slot} has no host interface");
    }
    let (table, text) = own_table(&dir).expect("the daemon's nft table");
    assert!(
        !text.contains("elements"),
        "leftover set or map elements:\n{text}"
    );
    for slot in ["pool-a", "pool-b", "pool-c"] {
        assert!(!text.contains(slot));
    }
    // Slot build times, from the daemon's log.
    let times: Vec<String> = d
        .log()
        .lines()
        .filter(|l| l.contains("network slot built"))
        .filter_map(|l| l.split("netns_ms=").nth(1))
        .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
        .collect();
    eprintln!("slot builds (netns+veth+addresses, ms): {times:?}");

    // When the daemon goes, its slots go with its data dir; its table is removed by the next
    // wispd that starts.
    drop(d);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let links = host_links();
        let still: Vec<&String> = left.iter().filter(|s| links.contains(s)).collect();
        if still.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "interfaces left behind: {still:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let d2 = daemon(&upstream, &["--net-pool-size", "0"]);
    let out = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(&table),
        "table {table} of a gone daemon is still there"
    );
    drop(d2);
}

#[tokio::test]
async fn restart_reattaches_slots() {
    let net = FakeNet::new();
    let names: HashMap<String, Ipv4Addr> = [("allowed.test", net.addr(1))]
        .into_iter()
        .map(|(n, a)| (n.to_string(), a.parse().unwrap()))
        .collect();
    let upstream = Upstream::start(names).await;
    let dir = tempfile::Builder::new()
        .prefix("wispd-net-restart-")
        .tempdir()
        .unwrap();
    let _cleanup = KeeperCleanup(dir.path().to_path_buf());
    let up = upstream.addr.to_string();
    let args = [
        "--dns-upstream",
        up.as_str(),
        "--idle-timeout",
        "0",
        "--net-pool-size",
        "1",
    ];
    let opts = || -> DaemonOptions { common::real_options(&args, Some(dir.path().to_path_buf())) };
    let mut d1 = TestDaemon::start_with(opts());
    d1.create("keep").await;
    let gone_id = d1.create("gone").await["id"].as_str().unwrap().to_string();
    let (s, _) = set_policy(
        &d1,
        "keep",
        json!({"rules": [{"domain": "allowed.test", "action": "allow"}]}),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let ip_before = sprite_ip(&d1, "keep").await;
    d1.exec_q(
        "keep",
        &["sh", "-c", "nohup sleep 1000 >/dev/null 2>&1 &"],
        &[],
    )
    .await;
    d1.kill9();
    // "gone" stops while wispd is down: its slot must go back to the pool at the restart.
    {
        use std::io::Write;
        use wisp_runtime::proto::{encode_json, Kind, Request};
        let sock = dir.path().join("run").join(format!("{gone_id}.sock"));
        let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&encode_json(Kind::Request, &Request::Shutdown))
            .unwrap();
        let _ = wisp_runtime::proto::read_frame(&mut s);
    }

    let d2 = TestDaemon::start_with(opts());
    assert!(d2
        .sh("keep", "pgrep -x sleep")
        .await
        .trim()
        .parse::<u32>()
        .is_ok());
    assert_eq!(sprite_ip(&d2, "keep").await, ip_before);
    let out = probe(&d2, "keep", "allowed.test", 8080, 5.0).await;
    assert!(out.starts_with("ok"), "{out}\n{}", d2.log());
    assert_fast_refusal(&probe(&d2, "keep", &net.addr(2), 8080, 5.0).await);
    let owners: Vec<String> = netns_entries(dir.path())
        .into_iter()
        .filter(|n| n.ends_with(".owner"))
        .collect();
    assert_eq!(owners.len(), 1, "{owners:?}");
    d2.delete("keep").await;
    d2.delete("gone").await;
    drop(d2);
}

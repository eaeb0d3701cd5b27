//! Sprite URLs (§3.10) against the real wispd and real sprites: routing by Host, `sprite` and
//! `public` auth (bearer token and login cookie), streaming both ways, WebSocket passthrough,
//! X-Forwarded-*, wake from warm and cold, 502 with nothing listening, 404 for unknown sprites
//! and bad hosts, and a client that never reads not stalling others. Loopback only.

mod common;

use std::time::{Duration, Instant};

use common::TestDaemon;
use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// The app started in sprites (python stdlib): `/headers` echoes the request headers as JSON,
/// `/stream` sends five chunks 0.4 s apart, `/big` is 32 MiB, `/ws` is a WebSocket echo,
/// `POST` answers the SHA-256 of the body, anything else `hello from <hostname> <path>`.
pub const APP: &str = r#"import base64, hashlib, json, socket, struct, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *a):
        pass

    def send_body(self, code, body, ctype="text/plain"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/headers":
            h = {k.lower(): v for k, v in self.headers.items()}
            self.send_body(200, json.dumps(h).encode(), "application/json")
        elif self.path == "/stream":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(5):
                c = ("chunk%d\n" % i).encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(c), c))
                self.wfile.flush()
                time.sleep(0.4)
            self.wfile.write(b"0\r\n\r\n")
        elif self.path == "/big":
            self.send_body(200, b"x" * (32 << 20))
        elif self.path == "/ws":
            self.websocket()
        else:
            msg = "hello from %s %s" % (socket.gethostname(), self.path)
            self.send_body(200, msg.encode())

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        data = self.rfile.read(n)
        self.send_body(200, hashlib.sha256(data).hexdigest().encode())

    def websocket(self):
        key = self.headers["Sec-WebSocket-Key"]
        acc = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", acc)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        r = self.rfile
        while True:
            h = r.read(2)
            if len(h) < 2:
                return
            op, n = h[0] & 0x0F, h[1] & 0x7F
            if n == 126:
                n = struct.unpack(">H", r.read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", r.read(8))[0]
            mask = r.read(4) if h[1] & 0x80 else b"\0\0\0\0"
            data = bytearray(r.read(n))
            for i in range(n):
                data[i] ^= mask[i % 4]
            if op == 8:
                self.wfile.write(b"\x88\x02\x03\xe8")
                self.wfile.flush()
                return
            if op in (1, 2):
                hdr = bytes([0x80 | op])
                if n < 126:
                    hdr += bytes([n])
                elif n < 65536:
                    hdr += bytes([126]) + struct.pack(">H", n)
                else:
                    hdr += bytes([127]) + struct.pack(">Q", n)
                self.wfile.write(hdr + bytes(data))
                self.wfile.flush()


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), H).serve_forever()
"#;

/// Writes [`APP`] into the sprite and starts it detached on `port`; waits until it listens.
pub async fn start_app(d: &TestDaemon, sprite: &str, port: u16) {
    d.sh(
        sprite,
        &format!("cat > /tmp/app.py <<'PYEOF'\n{APP}\nPYEOF\n"),
    )
    .await;
    d.sh(
        sprite,
        &format!(
            "setsid nohup python3 /tmp/app.py {port} </dev/null >/tmp/app.log 2>&1 &\n\
             for i in $(seq 100); do\n\
               python3 -c 'import socket,sys; socket.create_connection((\"127.0.0.1\", {port}))' \
                 2>/dev/null && exit 0\n\
               sleep 0.1\n\
             done\n\
             cat /tmp/app.log; exit 1"
        ),
    )
    .await;
}

/// `name.localhost:PORT`: the sprite's host under the default URL base.
fn host(d: &TestDaemon, name: &str) -> String {
    format!("{name}.localhost:{}", d.addr.port())
}

/// A request to the sprite URL (sent to wispd's address with the sprite's Host).
fn url_req(d: &TestDaemon, method: Method, name: &str, path: &str) -> reqwest::RequestBuilder {
    d.client()
        .request(method, d.url(path))
        .header("host", host(d, name))
}

async fn text(res: reqwest::Response) -> (StatusCode, String) {
    let s = res.status();
    (s, res.text().await.unwrap_or_default())
}

async fn get(d: &TestDaemon, name: &str, path: &str, auth: bool) -> (StatusCode, String) {
    let mut rb = url_req(d, Method::GET, name, path);
    if auth {
        rb = rb.header("authorization", d.bearer());
    }
    text(rb.send().await.expect("request")).await
}

async fn set_auth(d: &TestDaemon, name: &str, auth: &str) {
    let (s, body) = d
        .call(
            Method::PUT,
            &format!("/v1/sprites/{name}"),
            Some(json!({"url_settings": {"auth": auth}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["url_settings"]["auth"], auth);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn routing_auth_headers_and_streaming() {
    let d = TestDaemon::start_real();
    let obj = d.create("web").await;
    assert_eq!(
        obj["url"],
        format!("http://web.localhost:{}", d.addr.port())
    );
    start_app(&d, "web", 8080).await;

    // `sprite` auth (the default): nothing without a token.
    let (s, body) = get(&d, "web", "/", false).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON error");
    assert!(v["error"]
        .as_str()
        .unwrap()
        .contains("authentication required"));
    let res = url_req(&d, Method::GET, "web", "/")
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(res.text().await.unwrap().contains("/.wisp/login"));
    let res = url_req(&d, Method::GET, "web", "/")
        .header("authorization", "Bearer default/o1/t1/nope")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    // With the org token: the app answers, on any path, and the API is still the API.
    let (s, body) = get(&d, "web", "/some/path?q=1", true).await;
    assert_eq!(s, StatusCode::OK, "{body}\n{}", d.log());
    assert_eq!(body, "hello from web /some/path?q=1");
    let (s, list) = d.get_json("/v1/sprites").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["sprites"][0]["name"], "web", "{list}");

    // What the app sees: forwarded headers, no org token.
    let (s, body) = get(&d, "web", "/headers", true).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let h: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["x-forwarded-for"], "127.0.0.1", "{h}");
    assert_eq!(h["x-forwarded-proto"], "http", "{h}");
    assert_eq!(h["x-forwarded-host"], host(&d, "web"), "{h}");
    assert_eq!(h["host"], host(&d, "web"), "{h}");
    assert!(h.get("authorization").is_none(), "{h}");

    // Cookie login: /.wisp/login?token= sets an HttpOnly session cookie and redirects.
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = |q: String| {
        no_redirect
            .get(d.url(&format!("/.wisp/login?{q}")))
            .header("host", host(&d, "web"))
            .send()
    };
    let res = login(format!(
        "token={}&next=/headers",
        form_urlencoded::byte_serialize(d.token.as_bytes()).collect::<String>()
    ))
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()["location"], "/headers");
    let set_cookie = res.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(
        !set_cookie.contains(&d.token),
        "the cookie must not hold the token"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let res = url_req(&d, Method::GET, "web", "/headers")
        .header("cookie", format!("{cookie}; app=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let h: Value = res.json().await.unwrap();
    assert_eq!(h["cookie"], "app=1", "wispd's cookie reached the app: {h}");
    // A forged or foreign cookie is refused, as is a bad token at login.
    let forged = format!("{}0", &cookie[..cookie.len() - 1]);
    let res = url_req(&d, Method::GET, "web", "/")
        .header("cookie", forged)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = login("token=default/o/t/x".into()).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = login(String::new()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.text().await.unwrap().contains("<form"));
    // Open redirects are not followed.
    let res = login(format!(
        "token={}&next=//evil.example",
        form_urlencoded::byte_serialize(d.token.as_bytes()).collect::<String>()
    ))
    .await
    .unwrap();
    assert_eq!(res.headers()["location"], "/");

    // Streaming response: the first chunk arrives long before the last one is written.
    let t0 = Instant::now();
    let mut res = url_req(&d, Method::GET, "web", "/stream")
        .header("authorization", d.bearer())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let first = res.chunk().await.unwrap().unwrap();
    let first_at = t0.elapsed();
    assert!(first.starts_with(b"chunk0"), "{first:?}");
    let mut all = first.to_vec();
    while let Some(c) = res.chunk().await.unwrap() {
        all.extend_from_slice(&c);
    }
    let total = t0.elapsed();
    assert_eq!(
        String::from_utf8(all).unwrap(),
        "chunk0\nchunk1\nchunk2\nchunk3\nchunk4\n"
    );
    assert!(
        first_at + Duration::from_millis(1000) < total,
        "not streamed: first chunk after {first_at:?}, all after {total:?}"
    );

    // Streaming request body: 8 MiB up, the app answers its SHA-256.
    let body: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
    let expected = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&body))
    };
    let stream = futures_util::stream::iter(
        body.chunks(64 << 10)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let res = url_req(&d, Method::POST, "web", "/upload")
        .header("authorization", d.bearer())
        .header("content-length", body.len().to_string())
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    let (s, sum) = text(res).await;
    assert_eq!((s, sum), (StatusCode::OK, expected));

    // `public`: no token needed, and the app's own Authorization passes through.
    set_auth(&d, "web", "public").await;
    let (s, body) = get(&d, "web", "/", false).await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "hello from web /"));
    let res = url_req(&d, Method::GET, "web", "/headers")
        .header("authorization", "Basic YXBwOnB3")
        .send()
        .await
        .unwrap();
    let h: Value = res.json().await.unwrap();
    assert_eq!(h["authorization"], "Basic YXBwOnB3");
    set_auth(&d, "web", "sprite").await;
    let (s, _) = get(&d, "web", "/", false).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    d.delete("web").await;
    let (s, _) = get(&d, "web", "/", true).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn errors_and_wake() {
    let d = TestDaemon::start_real();
    d.create("app").await;
    set_auth(&d, "app", "public").await;

    // Nothing listening on 8080: 502 with a clear message, JSON or HTML.
    let (s, body) = get(&d, "app", "/", false).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("nothing is listening on port 8080 in sprite app"),
        "{v}"
    );
    let res = url_req(&d, Method::GET, "app", "/")
        .header("accept", "text/html,*/*")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    assert!(res.text().await.unwrap().contains("<h1>502"));

    // Unknown sprite and hosts that are not sprite names: 404 JSON.
    for h in ["nosuch", "a.b", "Bad_Name"] {
        let res = d
            .client()
            .get(d.url("/"))
            .header("host", format!("{h}.localhost:{}", d.addr.port()))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{h}");
        let v: Value = res.json().await.unwrap();
        assert!(v["error"].is_string(), "{v}");
    }

    // Warm: the request thaws the sprite and the frozen app answers.
    start_app(&d, "app", 8080).await;
    let (s, _) = d
        .call(Method::POST, "/v1/sprites/app/sleep?mode=warm", None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(d.get_json("/v1/sprites/app").await.1["status"], "warm");
    let (s, body) = get(&d, "app", "/after-warm", false).await;
    assert_eq!(
        (s, body.as_str()),
        (StatusCode::OK, "hello from app /after-warm")
    );
    assert_eq!(d.get_json("/v1/sprites/app").await.1["status"], "running");

    // Cold: the request starts the sprite; the hand-started app is gone, so 502 after the
    // wake; once it is started again it answers.
    let (s, _) = d
        .call(Method::POST, "/v1/sprites/app/sleep?mode=cold", None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(d.get_json("/v1/sprites/app").await.1["status"], "cold");
    let (s, body) = get(&d, "app", "/", false).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(d.get_json("/v1/sprites/app").await.1["status"], "running");
    start_app(&d, "app", 8080).await;
    let (s, body) = get(&d, "app", "/after-cold", false).await;
    assert_eq!(
        (s, body.as_str()),
        (StatusCode::OK, "hello from app /after-cold")
    );
    d.delete("app").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn websocket_and_slow_client() {
    let d = TestDaemon::start_real();
    d.create("ws").await;
    start_app(&d, "ws", 8080).await;

    // WebSocket echo through the URL (with the token on the handshake).
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{}/ws", host(&d, "ws"))
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", d.bearer().parse().unwrap());
    let tcp = tokio::net::TcpStream::connect(d.addr).await.unwrap();
    let (mut ws, res) = tokio_tungstenite::client_async(req, tcp)
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", d.log()));
    assert_eq!(res.status(), 101);
    ws.send(Message::Text("hello".into())).await.unwrap();
    let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    ws.send(Message::Binary(big.clone().into())).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got, Message::Text("hello".into()));
    let got = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got, Message::Binary(big.into()));
    // The open tunnel keeps the sprite in flight: it cannot go warm under the client.
    ws.close(None).await.unwrap();

    // Without a token the upgrade is refused like any request.
    let req = format!("ws://{}/ws", host(&d, "ws"))
        .into_client_request()
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(d.addr).await.unwrap();
    match tokio_tungstenite::client_async(req, tcp).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => assert_eq!(res.status(), 401),
        other => panic!("expected 401, got {other:?}"),
    }

    // A client that asks for 32 MiB and never reads does not stall another request.
    let mut slow = tokio::net::TcpStream::connect(d.addr).await.unwrap();
    slow.write_all(
        format!(
            "GET /big HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\n\r\n",
            host(&d, "ws"),
            d.bearer()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut first = [0u8; 12];
    slow.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t0 = Instant::now();
    for i in 0..5 {
        let (s, body) = tokio::time::timeout(
            Duration::from_secs(10),
            get(&d, "ws", &format!("/other{i}"), true),
        )
        .await
        .expect("a request stalled behind the slow client");
        assert_eq!(
            (s, body),
            (StatusCode::OK, format!("hello from ws /other{i}"))
        );
    }
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    drop(slow);
    d.delete("ws").await;
}

/// The `--ingress-listen` listener over TLS: sprite URLs only, `X-Forwarded-Proto: https`,
/// `Secure` login cookies; the API and other hosts are not served there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_ingress_listener() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=tw.localhost"])
        .args(["-addext", "subjectAltName=DNS:tw.localhost,DNS:localhost"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (the openssl package) makes the test certificate");
    assert!(out.status.success(), "{out:?}");
    let d = TestDaemon::start_real_args(&[
        "--ingress-listen",
        "127.0.0.1:0",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    // The listener's port is in the log line `sprite URLs on 127.0.0.1:PORT`.
    let deadline = Instant::now() + Duration::from_secs(10);
    let port: u16 = loop {
        let log = d.log();
        if let Some(rest) = log.split("sprite URLs on 127.0.0.1:").nth(1) {
            break rest
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .unwrap();
        }
        assert!(Instant::now() < deadline, "no ingress listener:\n{log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    d.create("tw").await;
    start_app(&d, "tw", 8080).await;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap(),
        )
        .resolve("tw.localhost", addr)
        .resolve("localhost", addr)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = format!("https://tw.localhost:{port}");

    let res = client.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = client
        .get(format!("{base}/headers"))
        .header("authorization", d.bearer())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let h: Value = res.json().await.unwrap();
    assert_eq!(h["x-forwarded-proto"], "https", "{h}");
    assert_eq!(h["x-forwarded-host"], format!("tw.localhost:{port}"), "{h}");

    let token: String = form_urlencoded::byte_serialize(d.token.as_bytes()).collect();
    let res = client
        .get(format!("{base}/.wisp/login?token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let set_cookie = res.headers()["set-cookie"].to_str().unwrap();
    assert!(set_cookie.contains("; Secure"), "{set_cookie}");

    // Not a sprite's host: 404, and the API is not served on this listener.
    let res = client
        .get(format!("https://localhost:{port}/v1/sprites"))
        .header("authorization", d.bearer())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let v: Value = res.json().await.unwrap();
    assert!(
        v["error"].as_str().unwrap().contains("no sprite at host"),
        "{v}"
    );
    d.delete("tw").await;
}

/// How a measurement connects to the app.
#[derive(Clone)]
enum Path {
    /// Straight into the sprite's network namespace (`wisp_sys::netns`): the floor.
    Direct(std::path::PathBuf),
    /// Through wispd's sprite URL.
    Ingress(std::net::SocketAddr, String),
}

impl Path {
    fn name(&self) -> &'static str {
        match self {
            Path::Direct(_) => "direct (netns connect)",
            Path::Ingress(..) => "sprite URL (wispd)",
        }
    }

    async fn connect(&self) -> tokio::net::TcpStream {
        match self {
            Path::Direct(ns) => {
                let ns = ns.clone();
                let s = tokio::task::spawn_blocking(move || {
                    wisp_sys::netns::connect_tcp_in(
                        &ns,
                        "127.0.0.1:8080".parse().unwrap(),
                        Duration::from_secs(5),
                    )
                })
                .await
                .unwrap()
                .expect("direct connect");
                s.set_nonblocking(true).unwrap();
                tokio::net::TcpStream::from_std(s).unwrap()
            }
            Path::Ingress(addr, _) => tokio::net::TcpStream::connect(addr).await.unwrap(),
        }
    }

    fn host(&self) -> &str {
        match self {
            Path::Direct(_) => "127.0.0.1:8080",
            Path::Ingress(_, h) => h,
        }
    }
}

/// `conns` keep-alive connections each sending `GET path` back to back for `secs`; returns
/// the latencies of every request.
async fn load(path: &Path, conns: usize, secs: u64, req_path: &str) -> Vec<Duration> {
    use http_body_util::BodyExt;
    let deadline = Instant::now() + Duration::from_secs(secs);
    let tasks = (0..conns).map(|_| {
        let path = path.clone();
        let req_path = req_path.to_string();
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(path.connect().await);
            let (mut tx, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let req = hyper::Request::get(req_path.as_str())
                    .header("host", path.host())
                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                    .unwrap();
                let t = Instant::now();
                tx.ready().await.expect("connection ready");
                let res = tx.send_request(req).await.expect("request");
                assert_eq!(res.status(), 200);
                res.into_body().collect().await.expect("body");
                lat.push(t.elapsed());
            }
            lat
        })
    });
    let mut all = Vec::new();
    for t in futures_util::future::join_all(tasks).await {
        all.extend(t.unwrap());
    }
    all.sort();
    all
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

/// The host pid of the app (`python3 /tmp/app.py`) of sprite `id`.
fn app_pid(id: &str) -> u32 {
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        if common::contains(&cmd, b"/tmp/app.py") && cg.contains(id) {
            return pid;
        }
    }
    panic!("no app process for {id}");
}

/// Throughput and added latency of the sprite URL against connecting straight into the
/// sprite, at 1, 16 and 64 concurrent keep-alive connections, and bulk transfer speed.
/// `cargo test --release -p wispd --test ingress -- --ignored --nocapture measure`
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement, not a test; run it with --ignored --nocapture (and --release)"]
async fn measure_ingress_overhead() {
    let d = TestDaemon::start_real();
    let obj = d.create("bench").await;
    set_auth(&d, "bench", "public").await;
    start_app(&d, "bench", 8080).await;
    let id = obj["id"].as_str().unwrap();
    let netns = std::path::PathBuf::from(format!("/proc/{}/ns/net", app_pid(id)));
    let paths = [
        Path::Direct(netns),
        Path::Ingress(d.addr, host(&d, "bench")),
    ];
    // Warm-up.
    for p in &paths {
        load(p, 4, 1, "/").await;
    }
    println!("| path | conns | req/s | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|");
    for conns in [1, 16, 64] {
        for p in &paths {
            let secs = 4;
            let lat = load(p, conns, secs, "/").await;
            println!(
                "| {} | {conns} | {:.0} | {:.3} | {:.3} |",
                p.name(),
                lat.len() as f64 / secs as f64,
                pct(&lat, 0.5),
                pct(&lat, 0.99)
            );
        }
    }
    for p in &paths {
        let t = Instant::now();
        let lat = load(p, 1, 3, "/big").await;
        let mb = lat.len() as f64 * 32.0;
        println!(
            "bulk 32 MiB GETs, {}: {:.0} MiB/s",
            p.name(),
            mb / t.elapsed().as_secs_f64()
        );
    }
    d.delete("bench").await;
}

/// The service that owns `http_port` gets the URL's traffic, and a request to a cold sprite
/// starts it (the service comes up with the sprite) and waits for it to listen.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn service_http_port_and_cold_wake() {
    let d = TestDaemon::start_real();
    d.create("svc").await;
    set_auth(&d, "svc", "public").await;
    d.sh(
        "svc",
        &format!("cat > /tmp/app.py <<'PYEOF'\n{APP}\nPYEOF\n"),
    )
    .await;
    let res = d
        .client()
        .put(d.url("/v1/sprites/svc/services/web?duration=0s"))
        .header("authorization", d.bearer())
        .json(&json!({"cmd": "python3", "args": ["/tmp/app.py", "8081"], "http_port": 8081}))
        .send()
        .await
        .unwrap();
    let (s, body) = text(res).await;
    assert_eq!(s, StatusCode::OK, "{body}");

    let (s, body) = get(&d, "svc", "/first", false).await;
    assert_eq!(
        (s, body.as_str()),
        (StatusCode::OK, "hello from svc /first")
    );

    let (s, _) = d
        .call(Method::POST, "/v1/sprites/svc/sleep?mode=cold", None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(d.get_json("/v1/sprites/svc").await.1["status"], "cold");
    let (s, body) = get(&d, "svc", "/after-cold", false).await;
    assert_eq!(
        (s, body.as_str()),
        (StatusCode::OK, "hello from svc /after-cold"),
        "{}",
        d.log()
    );
    assert_eq!(d.get_json("/v1/sprites/svc").await.1["status"], "running");
    d.delete("svc").await;
}

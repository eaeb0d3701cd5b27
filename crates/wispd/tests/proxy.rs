//! TCP proxy (§3.4) and ports watch (§3.5) against the real wispd and real sprites, over raw
//! WebSockets: a round trip to a server inside the sprite (init frame and query forms), names
//! from the sprite's /etc/hosts, target EOF, bad init → 1003, refused port → 1011, HTTP
//! refusals before the upgrade; ports opened and closed. Loopback only.

mod common;

use std::time::Duration;

use common::TestDaemon;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

/// A TCP echo server on `port` (python stdlib), detached; `once` makes it say `bye` and hang
/// up instead.
fn server(port: u16, once: bool) -> String {
    let handler = if once {
        "c.sendall(b'bye'); c.close()"
    } else {
        "threading.Thread(target=echo, args=(c,), daemon=True).start()"
    };
    format!(
        "import socket, threading\n\
         def echo(c):\n    \
             while True:\n        \
                 d = c.recv(65536)\n        \
                 if not d: break\n        \
                 c.sendall(d)\n    \
             c.close()\n\
         s = socket.socket(socket.AF_INET6)\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)\n\
         s.bind(('::', {port}))\n\
         s.listen(16)\n\
         while True:\n    \
             c, _ = s.accept()\n    \
             {handler}\n"
    )
}

async fn start_server(d: &TestDaemon, sprite: &str, port: u16, once: bool) {
    d.sh(
        sprite,
        &format!(
            "cat > /tmp/srv{port}.py <<'PYEOF'\n{}PYEOF\n\
             setsid nohup python3 /tmp/srv{port}.py </dev/null >/tmp/srv{port}.log 2>&1 &\n\
             echo $! > /tmp/srv{port}.pid\n\
             for i in $(seq 100); do\n\
               grep -q ':{:04X} .* 0A ' /proc/net/tcp6 && exit 0\n\
               sleep 0.1\n\
             done\n\
             cat /tmp/srv{port}.log; exit 1",
            server(port, once),
            port
        ),
    )
    .await;
}

type Ws = common::Ws;

async fn open(d: &TestDaemon, path: &str) -> Ws {
    let (ws, res) = tokio_tungstenite::connect_async(d.ws_request(path))
        .await
        .unwrap_or_else(|e| panic!("{path}: {e:?}\n{}", d.log()));
    assert_eq!(res.status(), 101);
    ws
}

async fn next(ws: &mut Ws) -> Message {
    tokio::time::timeout(Duration::from_secs(15), ws.next())
        .await
        .expect("no frame in time")
        .expect("connection ended")
        .expect("WebSocket error")
}

async fn expect_connected(ws: &mut Ws, target: &str) {
    match next(ws).await {
        Message::Text(t) => {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            assert_eq!(v["status"], "connected", "{v}");
            assert_eq!(v["target"], target, "{v}");
        }
        other => panic!("expected the connected message, got {other:?}"),
    }
}

async fn expect_close(ws: &mut Ws) -> (u16, String) {
    loop {
        match next(ws).await {
            Message::Close(Some(f)) => return (u16::from(f.code), f.reason.to_string()),
            Message::Close(None) => return (1005, String::new()),
            Message::Binary(_) | Message::Text(_) | Message::Ping(_) | Message::Pong(_) => {}
            Message::Frame(_) => {}
        }
    }
}

/// Reads binary frames until `n` bytes came.
async fn read_bytes(ws: &mut Ws, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < n {
        match next(ws).await {
            Message::Binary(b) => out.extend_from_slice(&b),
            Message::Text(_) | Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("after {} bytes: {other:?}", out.len()),
        }
    }
    out
}

async fn init(ws: &mut Ws, text: &str) {
    ws.send(Message::Text(text.into())).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proxy_round_trips_and_errors() {
    let d = TestDaemon::start_real();
    d.create("px").await;
    start_server(&d, "px", 9000, false).await;
    start_server(&d, "px", 9001, true).await;

    // Init frame, then raw bytes both ways (a small and a 1 MiB message).
    let mut ws = open(&d, "/v1/sprites/px/proxy").await;
    init(&mut ws, r#"{"host":"localhost","port":9000}"#).await;
    expect_connected(&mut ws, "localhost:9000").await;
    ws.send(Message::Binary(b"ping".to_vec().into()))
        .await
        .unwrap();
    assert_eq!(read_bytes(&mut ws, 4).await, b"ping");
    // Text frames are not data.
    ws.send(Message::Text("ignored".into())).await.unwrap();
    let big: Vec<u8> = (0..1u32 << 20).map(|i| (i % 253) as u8).collect();
    ws.send(Message::Binary(big.clone().into())).await.unwrap();
    assert_eq!(read_bytes(&mut ws, big.len()).await, big);
    ws.close(None).await.unwrap();

    // The query form needs no init frame; IPv4, IPv6 and the sprite's own name (from its
    // /etc/hosts) all reach the sprite, not the host.
    for (q, shown) in [
        ("port=9000", "localhost:9000"),
        ("host=127.0.0.1&port=9000", "127.0.0.1:9000"),
        ("host=::1&port=9000", "[::1]:9000"),
        ("host=px&port=9000", "px:9000"),
    ] {
        let mut ws = open(&d, &format!("/v1/sprites/px/proxy?{q}")).await;
        expect_connected(&mut ws, shown).await;
        ws.send(Message::Binary(b"hi".to_vec().into()))
            .await
            .unwrap();
        assert_eq!(read_bytes(&mut ws, 2).await, b"hi", "{q}");
        ws.close(None).await.unwrap();
    }

    // The target hanging up closes the WebSocket normally, after its bytes.
    let mut ws = open(&d, "/v1/sprites/px/proxy").await;
    init(&mut ws, r#"{"port":9001}"#).await;
    expect_connected(&mut ws, "localhost:9001").await;
    assert_eq!(read_bytes(&mut ws, 3).await, b"bye");
    assert_eq!(expect_close(&mut ws).await.0, 1000);

    // Bad init → 1003.
    for bad in [
        "nope",
        r#"{"port":0}"#,
        r#"{"host":"x"}"#,
        r#"{"port":65536}"#,
    ] {
        let mut ws = open(&d, "/v1/sprites/px/proxy").await;
        init(&mut ws, bad).await;
        let (code, reason) = expect_close(&mut ws).await;
        assert_eq!(code, 1003, "{bad}: {reason}");
        assert!(reason.contains("invalid init message"), "{reason}");
    }
    // Nothing listening → 1011 with the reason; an unresolvable name too.
    let mut ws = open(&d, "/v1/sprites/px/proxy").await;
    init(&mut ws, r#"{"port":9999}"#).await;
    let (code, reason) = expect_close(&mut ws).await;
    assert_eq!(code, 1011, "{reason}");
    assert!(reason.contains("refused"), "{reason}");
    let mut ws = open(&d, "/v1/sprites/px/proxy").await;
    init(&mut ws, r#"{"host":"example.invalid","port":80}"#).await;
    let (code, reason) = expect_close(&mut ws).await;
    assert_eq!(code, 1011, "{reason}");
    assert!(reason.contains("does not resolve"), "{reason}");

    // Refusals before the upgrade are HTTP statuses.
    let refused = |path: &'static str, auth: bool| {
        let mut req = d.ws_request(path);
        if !auth {
            req.headers_mut().remove("authorization");
        }
        async move {
            match tokio_tungstenite::connect_async(req).await {
                Err(tokio_tungstenite::tungstenite::Error::Http(res)) => res.status().as_u16(),
                other => panic!("{path}: expected a refusal, got {other:?}"),
            }
        }
    };
    assert_eq!(refused("/v1/sprites/px/proxy?port=0", true).await, 400);
    assert_eq!(refused("/v1/sprites/px/proxy?port=x", true).await, 400);
    assert_eq!(refused("/v1/sprites/nosuch/proxy", true).await, 404);
    assert_eq!(refused("/v1/sprites/px/proxy", false).await, 401);

    // A cold sprite is woken by the proxy (the server is gone then: 1011).
    let (s, _) = d
        .call(
            reqwest::Method::POST,
            "/v1/sprites/px/sleep?mode=cold",
            None,
        )
        .await;
    assert_eq!(s, 204);
    let mut ws = open(&d, "/v1/sprites/px/proxy?port=9000").await;
    assert_eq!(expect_close(&mut ws).await.0, 1011);
    assert_eq!(d.get_json("/v1/sprites/px").await.1["status"], "running");
    d.delete("px").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ports_watch() {
    let d = TestDaemon::start_real();
    d.create("pw").await;
    start_server(&d, "pw", 9000, false).await;
    let mut ws = open(&d, "/v1/sprites/pw/ports/watch").await;
    let Message::Text(t) = next(&mut ws).await else {
        panic!("no port_list")
    };
    let v: Value = serde_json::from_str(t.as_str()).unwrap();
    assert_eq!(v["type"], "port_list", "{v}");
    let ports: Vec<u64> = v["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_u64().unwrap())
        .collect();
    assert_eq!(ports, vec![9000], "{v}");
    assert_eq!(v["ports"][0]["address"], "::");
    assert_eq!(v["ports"][0]["protocol"], "tcp");

    start_server(&d, "pw", 9005, false).await;
    let Message::Text(t) = next(&mut ws).await else {
        panic!("no event")
    };
    let v: Value = serde_json::from_str(t.as_str()).unwrap();
    assert_eq!(
        (v["type"].as_str(), v["port"].as_u64()),
        (Some("port_opened"), Some(9005)),
        "{v}"
    );
    d.sh("pw", "kill $(cat /tmp/srv9005.pid)").await;
    let Message::Text(t) = next(&mut ws).await else {
        panic!("no event")
    };
    let v: Value = serde_json::from_str(t.as_str()).unwrap();
    assert_eq!(
        (v["type"].as_str(), v["port"].as_u64()),
        (Some("port_closed"), Some(9005)),
        "{v}"
    );
    ws.close(None).await.unwrap();
    d.delete("pw").await;
}

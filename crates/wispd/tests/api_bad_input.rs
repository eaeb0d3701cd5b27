//! Every bad-input case of the API that needs no running sprite, against the real binary.

mod common;

use common::{DaemonOptions, TestDaemon};
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};

const VERSION: &str = wisp_api::SPRITE_VERSION;

/// Status, JSON body, and the check that `Sprite-Version` is there.
async fn parts(res: Response) -> (StatusCode, Value) {
    let status = res.status();
    assert_eq!(
        res.headers()
            .get("sprite-version")
            .and_then(|v| v.to_str().ok()),
        Some(VERSION),
        "Sprite-Version on {status}"
    );
    let text = res.text().await.expect("body");
    let body =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text:?}"));
    (status, body)
}

async fn call(
    d: &TestDaemon,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut rb = d
        .client()
        .request(method, d.url(path))
        .header("authorization", d.bearer());
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    parts(rb.send().await.expect("request")).await
}

#[tokio::test]
async fn authentication() {
    let d = TestDaemon::start();
    let c = d.client();
    let unauthorized = json!({"error": "authentication failed"});

    let (s, b) = parts(c.get(d.url("/v1/sprites")).send().await.unwrap()).await;
    assert_eq!((s, &b), (StatusCode::UNAUTHORIZED, &unauthorized));

    for bad in [
        "Bearer nope".to_string(),
        "Bearer a/b/c/d".to_string(),
        // Right shape and ids, wrong secret.
        format!("Bearer {}x", d.token),
        format!("Token {}", d.token),
        "Basic Zm9vOmJhcg==".to_string(),
    ] {
        let res = c
            .get(d.url("/v1/sprites"))
            .header("authorization", &bad)
            .send()
            .await
            .unwrap();
        let (s, b) = parts(res).await;
        assert_eq!((s, &b), (StatusCode::UNAUTHORIZED, &unauthorized), "{bad}");
    }

    // Also before any WebSocket upgrade.
    let res = c
        .get(d.url("/v1/sprites/x/exec?cmd=ls"))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(parts(res).await.0, StatusCode::UNAUTHORIZED);

    // Bearer and Basic (user `bearer`) both work.
    let (s, _) = call(&d, Method::GET, "/v1/sprites", None).await;
    assert_eq!(s, StatusCode::OK);
    let res = c
        .get(d.url("/v1/sprites"))
        .basic_auth("bearer", Some(&d.token))
        .send()
        .await
        .unwrap();
    assert_eq!(parts(res).await.0, StatusCode::OK);

    let (s, b) = call(&d, Method::GET, "/v1/organization", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, json!({"organization": "default", "resources": {}}));
    assert_eq!(d.token.split('/').count(), 4);
    assert!(d.token.starts_with("default/o"));
}

#[tokio::test]
async fn invalid_names_on_create() {
    let d = TestDaemon::start();
    for name in ["Bad", "a_b", "-a", "a-", "a.b", "ü", &"a".repeat(64)] {
        let (s, b) = call(&d, Method::POST, "/v1/sprites", Some(json!({"name": name}))).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{name}");
        assert_eq!(b["errors"], json!(["invalid sprite name format"]), "{name}");
        assert!(b["error"]
            .as_str()
            .unwrap()
            .contains("invalid sprite name format"));
    }
    for body in [json!({}), json!({"name": ""}), json!({"name": null})] {
        let (s, b) = call(&d, Method::POST, "/v1/sprites", Some(body.clone())).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(b["error"], "name is required", "{body}");
    }
    // An empty body (no JSON at all) is the same as {}.
    let res = d
        .client()
        .post(d.url("/v1/sprites"))
        .header("authorization", d.bearer())
        .send()
        .await
        .unwrap();
    let (s, b) = parts(res).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("name is required"))
    );
}

#[tokio::test]
async fn invalid_settings() {
    let d = TestDaemon::start();
    let bad_auth = json!({"name": "ok", "url_settings": {"auth": "open"}});
    let (s, b) = call(&d, Method::POST, "/v1/sprites", Some(bad_auth)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        b["errors"],
        json!(["invalid auth type, must be one of: sprite, public"])
    );

    let bad_access = json!({"name": "ok", "url_settings": {"private_access": "everyone"}});
    let (s, b) = call(&d, Method::POST, "/v1/sprites", Some(bad_access)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(b["errors"].is_array());

    let bad_labels = json!({"name": "ok", "labels": [""]});
    let (s, b) = call(&d, Method::POST, "/v1/sprites", Some(bad_labels)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(b["errors"].is_array());

    // Update validates its body first (the sprite does not even exist).
    let (s, b) = call(
        &d,
        Method::PUT,
        "/v1/sprites/nope",
        Some(json!({"url_settings": {"auth": "nobody"}})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        b["errors"],
        json!(["invalid auth type, must be one of: sprite, public"])
    );
}

#[tokio::test]
async fn unknown_sprite_is_404_everywhere() {
    let d = TestDaemon::start();
    let not_found = json!({"error": "sprite not found"});
    for (m, path, body) in [
        (Method::GET, "/v1/sprites/nope", None),
        (
            Method::PUT,
            "/v1/sprites/nope",
            Some(json!({"labels": ["a"]})),
        ),
        (Method::DELETE, "/v1/sprites/nope", None),
        (Method::GET, "/v1/sprites/nope/exec", None),
        (Method::POST, "/v1/sprites/nope/exec?cmd=ls", None),
        (Method::GET, "/v1/sprites/nope/exec/12", None),
        (Method::POST, "/v1/sprites/nope/exec/12/kill", None),
        // Names that cannot exist are just not found.
        (Method::GET, "/v1/sprites/NOPE", None),
        (Method::GET, "/v1/sprites/a%2Fb", None),
    ] {
        let (s, b) = call(&d, m.clone(), path, body).await;
        assert_eq!((s, &b), (StatusCode::NOT_FOUND, &not_found), "{m} {path}");
    }
    let res = d
        .client()
        .head(d.url("/v1/sprites/nope/exec"))
        .header("authorization", d.bearer())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(res.headers()["sprite-version"], VERSION);

    // The WebSocket handshake fails as a real HTTP response with a JSON body.
    let err = tokio_tungstenite::connect_async(d.ws_request("/v1/sprites/nope/exec?cmd=ls"))
        .await
        .expect_err("handshake must fail");
    let tokio_tungstenite::tungstenite::Error::Http(res) = err else {
        panic!("{err:?}")
    };
    assert_eq!(res.status(), 404);
    assert_eq!(res.headers()["sprite-version"], VERSION);
    let body: Value = serde_json::from_slice(res.body().as_deref().unwrap_or_default()).unwrap();
    assert_eq!(body, not_found);
}

#[tokio::test]
async fn routing_errors_are_json() {
    let d = TestDaemon::start();
    for path in ["/", "/v1", "/v1/nope", "/v2/sprites", "/v1/sprites/x/nope"] {
        let (s, b) = call(&d, Method::GET, path, None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}");
        assert!(b["error"].is_string(), "{path}");
    }
    for (m, path) in [
        (Method::PATCH, "/v1/sprites"),
        (Method::DELETE, "/v1/sprites"),
        (Method::POST, "/v1/sprites/x"),
        (Method::PUT, "/v1/sprites/x/exec"),
        (Method::GET, "/v1/sprites/x/exec/1/kill"),
    ] {
        let (s, b) = call(&d, m.clone(), path, None).await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{m} {path}");
        assert!(b["error"].is_string(), "{m} {path}");
    }
    // An upgrade endpoint asked without an upgrade: a JSON 400, at once.
    let (s, b) = call(&d, Method::GET, "/v1/sprites/x/control", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(b["error"].is_string(), "{b}");
}

#[tokio::test]
async fn malformed_and_oversize_bodies() {
    let d = TestDaemon::start();
    let c = d.client();
    for raw in ["{nope", "[1,2", "\"name\"", "{\"name\": 5}"] {
        let res = c
            .post(d.url("/v1/sprites"))
            .header("authorization", d.bearer())
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        let (s, b) = parts(res).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{raw}");
        assert!(b["error"].as_str().unwrap().contains("JSON"), "{raw}: {b}");
    }
    let big = format!("{{\"name\":\"x\",\"pad\":\"{}\"}}", "a".repeat(2 << 20));
    let res = c
        .post(d.url("/v1/sprites"))
        .header("authorization", d.bearer())
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    let (s, b) = parts(res).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(b["error"].is_string());
}

#[tokio::test]
async fn list_parameters() {
    let d = TestDaemon::start();
    for q in [
        "max_results=abc",
        "max_results=1.5",
        "continuation_token=zz",
    ] {
        let (s, b) = call(&d, Method::GET, &format!("/v1/sprites?{q}"), None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{q}");
        assert!(b["error"].is_string());
    }
    for q in [
        "max_results=100",
        "max_results=0",
        "max_results=-1",
        "bulk_load=true&prefix=a",
    ] {
        let (s, b) = call(&d, Method::GET, &format!("/v1/sprites?{q}"), None).await;
        assert_eq!(s, StatusCode::OK, "{q}");
        assert_eq!(b["sprites"], json!([]));
        assert_eq!(b["has_more"], false);
        assert_eq!(b["next_continuation_token"], Value::Null);
        assert_eq!(b["org"]["name"], "default");
    }
}

#[tokio::test]
async fn exec_query_errors() {
    let d = TestDaemon::start();
    // WebSocket without a command: 400 before any upgrade (and before the sprite lookup).
    for q in [
        "",
        "?cmd=",
        "?tty=true",
        "?cmd=ls&rows=0",
        "?cmd=ls&dir=relative",
        "?cmd=ls&env=NOEQ",
    ] {
        let err = tokio_tungstenite::connect_async(d.ws_request(&format!("/v1/sprites/x/exec{q}")))
            .await
            .expect_err("handshake must fail");
        let tokio_tungstenite::tungstenite::Error::Http(res) = err else {
            panic!("{q}: {err:?}")
        };
        assert_eq!(res.status(), 400, "{q}");
        let body: Value =
            serde_json::from_slice(res.body().as_deref().unwrap_or_default()).unwrap();
        if q.is_empty() || q == "?cmd=" || q == "?tty=true" {
            assert_eq!(body["error"], "No command specified", "{q}");
        }
    }
    // HTTP exec refuses what only makes sense on a WebSocket.
    for q in [
        "cmd=ls&tty=true",
        "cmd=ls&id=5",
        "cmd=ls&detachable=true",
        "cmd=ls&cc=true",
        "",
    ] {
        let (s, b) = call(&d, Method::POST, &format!("/v1/sprites/x/exec?{q}"), None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{q}");
        assert!(b["error"].is_string());
    }
    // Kill with a bad signal or timeout.
    for q in ["signal=BOGUS", "timeout=soon"] {
        let (s, _) = call(
            &d,
            Method::POST,
            &format!("/v1/sprites/x/exec/1/kill?{q}"),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{q}");
    }
}

#[tokio::test]
async fn failed_create_rolls_back() {
    // A keeper that dies at once: the create fails, and leaves nothing behind.
    let d = TestDaemon::start_with(DaemonOptions {
        args: vec!["--keeper-bin".into(), "/bin/false".into()],
        ..Default::default()
    });
    let (s, b) = call(
        &d,
        Method::POST,
        "/v1/sprites",
        Some(json!({"name": "doomed"})),
    )
    .await;
    assert!(s.is_server_error(), "{s} {b}");
    assert!(b["error"].as_str().unwrap().contains("keeper"), "{b}");
    let (s, _) = call(&d, Method::GET, "/v1/sprites/doomed", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let sprites_dir = d.data_dir.join("sprites");
    assert_eq!(std::fs::read_dir(&sprites_dir).unwrap().count(), 0);
    // The name is free again (and fails the same way).
    let (s, _) = call(
        &d,
        Method::POST,
        "/v1/sprites",
        Some(json!({"name": "doomed"})),
    )
    .await;
    assert!(s.is_server_error());
}

#[tokio::test]
async fn restart_keeps_state_and_sigterm_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    // Unmounts the storage pool and network namespaces before the dir goes.
    let _cleanup = common::KeeperCleanup(dir.path().to_path_buf());
    let opts = DaemonOptions {
        data_dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    };
    let mut d1 = TestDaemon::start_with(opts.clone());
    let token = d1.token.clone();
    assert!(d1.log().contains(&format!("listening on {}", d1.addr)));
    d1.kill9();
    let mut d2 = TestDaemon::start_with(opts.clone());
    assert_eq!(d2.token, token, "a restart keeps the admin token");
    let (s, _) = call(&d2, Method::GET, "/v1/sprites", None).await;
    assert_eq!(s, StatusCode::OK);
    let status = d2.terminate();
    assert!(status.success(), "{status}");
    assert!(!dir.path().join("wispd.addr").exists());

    // A lost admin-token file gets a new, working token.
    std::fs::remove_file(dir.path().join("admin-token")).unwrap();
    let d3 = TestDaemon::start_with(opts);
    assert_ne!(d3.token, token);
    let (s, _) = call(&d3, Method::GET, "/v1/sprites", None).await;
    assert_eq!(s, StatusCode::OK);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join("admin-token"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn second_daemon_on_same_data_dir_refuses() {
    let d = TestDaemon::start();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wispd"))
        .arg("--data-dir")
        .arg(&d.data_dir)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("another wispd"));
}

//! The in-sprite API (§3.12) on `/.sprite/api.sock`, driven from inside real sprites with
//! `curl --unix-socket` as the `sprite` user: checkpoints (a restore answers 202 and happens
//! afterwards), services, keep-awake tasks, isolation between sprites, and a wispd kill -9 and
//! restart.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{real_options, KeeperCleanup, TestDaemon};
use reqwest::Method;
use serde_json::{json, Value};

/// A request from inside `sprite` to its own API socket: (status, body). The body is JSON when
/// it parses, else the last NDJSON line, else a string.
async fn api(
    d: &TestDaemon,
    sprite: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let url = format!("http://sprite{path}");
    let body = body.map(|b| b.to_string());
    let mut argv = vec![
        "curl",
        "-sS",
        "--path-as-is",
        "--unix-socket",
        "/.sprite/api.sock",
        "-w",
        "\n%{http_code}",
        "-X",
        method,
    ];
    if let Some(b) = &body {
        argv.extend(["-H", "content-type: application/json", "--data-binary", b]);
    }
    argv.push(&url);
    let e = d.exec(sprite, &argv).await;
    assert_eq!(e.code, Some(0), "curl {method} {path}: {e:?}");
    let out = e.stdout_str();
    let (text, status) = out.rsplit_once('\n').expect("status line");
    let status: u16 = status.trim().parse().expect("status");
    let text = text.trim();
    let value = serde_json::from_str(text)
        .or_else(|_| serde_json::from_str(text.lines().last().unwrap_or("")))
        .unwrap_or_else(|_| Value::String(text.to_string()));
    (status, value)
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect()
}

fn socket_path(data_dir: &Path, sprite_id: &str) -> PathBuf {
    data_dir
        .join("sprites")
        .join(sprite_id)
        .join("sprite-dir")
        .join("api.sock")
}

#[tokio::test]
async fn checkpoints_from_inside() {
    let d = TestDaemon::start_real();
    let s = d.create("ins-ck").await;
    let id = s["id"].as_str().unwrap();

    // The socket: 0666 on the host, reachable on the read-only /.sprite by the sprite user.
    let host = socket_path(&d.data_dir, id);
    let mode = std::fs::metadata(&host).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o666);
    let out = d
        .sh(
            "ins-ck",
            "id -u; stat -c %a /.sprite/api.sock; touch /.sprite/x 2>&1 || echo read-only",
        )
        .await;
    assert!(out.starts_with("1000\n666\n"), "{out}");
    assert!(out.trim_end().ends_with("read-only"), "{out}");

    let (status, list) = api(&d, "ins-ck", "GET", "/v1/checkpoints", None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(ids(&list), ["Current", "v0"]);

    // Create: the NDJSON stream of the public API, ending in `complete`.
    d.sh("ins-ck", "echo one > ~/state").await;
    let (status, last) = api(
        &d,
        "ins-ck",
        "POST",
        "/v1/checkpoint",
        Some(json!({"comment": "from inside"})),
    )
    .await;
    assert_eq!(status, 200, "{last}");
    assert_eq!(last["type"], "complete", "{last}");
    assert_eq!(last["id"], "v1");
    // The public API sees it, with its comment.
    let (_, c) = d.get_json("/v1/sprites/ins-ck/checkpoints/v1").await;
    assert_eq!(c["comment"], "from inside");
    let (status, c) = api(&d, "ins-ck", "GET", "/v1/checkpoints/v1", None).await;
    assert_eq!((status, c["comment"].as_str()), (200, Some("from inside")));
    let (status, list) = api(&d, "ins-ck", "GET", "/v1/checkpoints", None).await;
    assert_eq!(status, 200);
    assert_eq!(ids(&list), ["Current", "v1", "v0"]);
    // The current checkpoint cannot be deleted; unknown ones are 404.
    let (status, _) = api(&d, "ins-ck", "DELETE", "/v1/checkpoints/v1", None).await;
    assert_eq!(status, 409);
    let (status, _) = api(&d, "ins-ck", "GET", "/v1/checkpoints/v9", None).await;
    assert_eq!(status, 404);
    let (status, _) = api(&d, "ins-ck", "POST", "/v1/checkpoints/v9/restore", None).await;
    assert_eq!(status, 404);

    // Restore from inside: 202 at once; the sprite comes back with v1's files.
    d.sh("ins-ck", "echo two > ~/state").await;
    let t = Instant::now();
    let (status, body) = api(&d, "ins-ck", "POST", "/v1/checkpoints/v1/restore", None).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["checkpoint"], "v1");
    assert!(t.elapsed() < Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let e = d.exec("ins-ck", &["cat", "/home/sprite/state"]).await;
        if e.stdout == b"one\n" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not restored: {e:?}\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The restore took an automatic checkpoint first.
    let (_, list) = d
        .get_json("/v1/sprites/ins-ck/checkpoints?includeAuto=true")
        .await;
    assert!(ids(&list).iter().any(|i| i.starts_with("auto-")), "{list}");
    // And the socket works after the restart of the sprite's processes.
    let (status, _) = api(&d, "ins-ck", "GET", "/v1/checkpoints", None).await;
    assert_eq!(status, 200);

    // Destroy removes the socket with everything else.
    d.delete("ins-ck").await;
    assert!(!host.exists());
}

#[tokio::test]
async fn keep_awake_tasks() {
    let d = TestDaemon::start_real();
    let s = d.create("ins-task").await;
    let id = s["id"].as_str().unwrap().to_string();

    let (status, list) = api(&d, "ins-task", "GET", "/v1/tasks", None).await;
    assert_eq!((status, list), (200, json!({"tasks": []})));

    let (status, t) = api(
        &d,
        "ins-task",
        "POST",
        "/v1/tasks",
        Some(json!({"name": "agent", "expire": "1h"})),
    )
    .await;
    assert_eq!(status, 201, "{t}");
    assert_eq!(t["name"], "agent");
    let started = t["started_at"].as_str().unwrap().to_string();
    let expires = t["expires_at"].as_str().unwrap().to_string();
    let start = chrono::DateTime::parse_from_rfc3339(&started).unwrap();
    let end = chrono::DateTime::parse_from_rfc3339(&expires).unwrap();
    assert_eq!((end - start).num_seconds(), 3600);
    // Taken.
    let (status, e) = api(
        &d,
        "ins-task",
        "POST",
        "/v1/tasks",
        Some(json!({"name": "agent", "expire": 60})),
    )
    .await;
    assert_eq!(status, 409, "{e}");
    assert!(e["error"].is_string());
    // Bad requests.
    for body in [
        json!({"expire": 60}),
        json!({"name": "x", "expire": "2h"}),
        json!({"name": "x", "expire": 0}),
        json!({"name": "x", "expire": "soon"}),
        json!({"name": "a/b"}),
    ] {
        let (status, _) = api(&d, "ins-task", "POST", "/v1/tasks", Some(body.clone())).await;
        assert_eq!(status, 400, "{body}");
    }
    let (status, one) = api(&d, "ins-task", "GET", "/v1/tasks/agent", None).await;
    assert_eq!(
        (status, one["expires_at"].as_str()),
        (200, Some(expires.as_str()))
    );
    let (status, _) = api(&d, "ins-task", "GET", "/v1/tasks/nope", None).await;
    assert_eq!(status, 404);

    // Refresh (both PUT forms): started_at stays, expires_at moves; PUT creates too.
    let (status, t) = api(
        &d,
        "ins-task",
        "PUT",
        "/v1/tasks/agent",
        Some(json!({"expire": "5m"})),
    )
    .await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["started_at"], started.as_str());
    assert!(t["expires_at"].as_str().unwrap() < expires.as_str());
    let (status, t) = api(
        &d,
        "ins-task",
        "PUT",
        "/v1/tasks",
        Some(json!({"name": "other", "expire": 120})),
    )
    .await;
    assert_eq!((status, t["name"].as_str()), (200, Some("other")));
    let (_, list) = api(&d, "ins-task", "GET", "/v1/tasks", None).await;
    let names: Vec<&str> = list["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["agent", "other"]);
    // Kept on the host, outside /.sprite.
    let file = d.data_dir.join("sprites").join(&id).join("tasks.json");
    assert!(file.exists());
    let (status, _) = api(&d, "ins-task", "GET", "/v1/../tasks.json", None).await;
    assert_eq!(status, 404);

    // Expiry.
    let (status, _) = api(
        &d,
        "ins-task",
        "POST",
        "/v1/tasks",
        Some(json!({"name": "short", "expire": 1})),
    )
    .await;
    assert_eq!(status, 201);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, _) = api(&d, "ins-task", "GET", "/v1/tasks/short", None).await;
    assert_eq!(status, 404);
    // An expired name is free again.
    let (status, _) = api(
        &d,
        "ins-task",
        "POST",
        "/v1/tasks",
        Some(json!({"name": "short", "expire": "30s"})),
    )
    .await;
    assert_eq!(status, 201);

    // Delete.
    for name in ["agent", "other", "short"] {
        let (status, _) = api(&d, "ins-task", "DELETE", &format!("/v1/tasks/{name}"), None).await;
        assert_eq!(status, 204, "{name}");
    }
    let (status, _) = api(&d, "ins-task", "DELETE", "/v1/tasks/agent", None).await;
    assert_eq!(status, 404);
    let (_, list) = api(&d, "ins-task", "GET", "/v1/tasks", None).await;
    assert_eq!(list, json!({"tasks": []}));
    assert!(!file.exists());
    d.delete("ins-task").await;
}

#[tokio::test]
async fn a_sprite_reaches_only_itself() {
    let d = TestDaemon::start_real();
    d.create("ins-a").await;
    d.create("ins-b").await;
    // B gets a checkpoint and a task of its own.
    let (status, _) = d
        .call(
            Method::POST,
            "/v1/sprites/ins-b/checkpoint",
            Some(json!({"comment": "b only"})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = api(
        &d,
        "ins-b",
        "POST",
        "/v1/tasks",
        Some(json!({"name": "b-task"})),
    )
    .await;
    assert_eq!(status, 201);

    // A lists only its own.
    let (_, list) = api(&d, "ins-a", "GET", "/v1/checkpoints", None).await;
    assert_eq!(ids(&list), ["Current", "v0"]);
    assert!(!list.to_string().contains("b only"));
    let (_, tasks) = api(&d, "ins-a", "GET", "/v1/tasks", None).await;
    assert_eq!(tasks, json!({"tasks": []}));
    let (status, _) = api(&d, "ins-a", "GET", "/v1/checkpoints/v1", None).await;
    assert_eq!(status, 404);
    let (status, _) = api(&d, "ins-a", "DELETE", "/v1/tasks/b-task", None).await;
    assert_eq!(status, 404);
    // Same task name in A: a different hold.
    let (status, _) = api(
        &d,
        "ins-a",
        "POST",
        "/v1/tasks",
        Some(json!({"name": "b-task"})),
    )
    .await;
    assert_eq!(status, 201);

    // Paths that name sprites, or reach outside, match nothing.
    for (method, path) in [
        ("GET", "/v1/sprites/ins-b/checkpoints"),
        ("GET", "/v1/sprites/ins-a/checkpoints"),
        ("DELETE", "/v1/sprites/ins-b/checkpoints/v1"),
        ("POST", "/v1/sprites/ins-b/checkpoints/v1/restore"),
        ("GET", "/v1/../v1/sprites/ins-b/checkpoints"),
        ("GET", "/v1/checkpoints/../../ins-b/checkpoints"),
        ("GET", "/v1/checkpoints/%2e%2e/v1"),
        ("GET", "/v1/sprites"),
        ("POST", "/v1/sprites"),
        ("DELETE", "/v1/sprites/ins-b"),
        ("GET", "/v1/exec"),
        ("GET", "/v1/fs/read?path=/etc/hostname"),
        ("POST", "/v1/sleep"),
        ("GET", "/v1/organization"),
        ("GET", "/"),
        ("GET", "/v2/checkpoints"),
    ] {
        let (status, body) = api(&d, "ins-a", method, path, None).await;
        assert!(
            status == 404 || status == 405,
            "{method} {path}: {status} {body}"
        );
    }
    // B's checkpoint is untouched, its task still live.
    let (status, _) = d.get_json("/v1/sprites/ins-b/checkpoints/v1").await;
    assert_eq!(status, 200);
    let (_, tasks) = api(&d, "ins-b", "GET", "/v1/tasks", None).await;
    assert_eq!(tasks["tasks"].as_array().unwrap().len(), 1);
    d.delete("ins-a").await;
    d.delete("ins-b").await;
}

#[tokio::test]
async fn sockets_and_tasks_survive_a_wispd_kill9() {
    let dir = tempfile::Builder::new()
        .prefix("wispd-insprite-")
        .tempdir()
        .unwrap();
    let _cleanup = KeeperCleanup(dir.path().to_path_buf());
    let mut d1 = TestDaemon::start_with(real_options(&[], Some(dir.path().to_path_buf())));
    let s = d1.create("ins-restart").await;
    let id = s["id"].as_str().unwrap().to_string();
    let (status, _) = api(
        &d1,
        "ins-restart",
        "POST",
        "/v1/tasks",
        Some(json!({"name": "hold", "expire": "30m"})),
    )
    .await;
    assert_eq!(status, 201);
    d1.kill9();
    // Nothing listens now; the file stays.
    assert!(socket_path(dir.path(), &id).exists());
    let d2 = TestDaemon::start_with(real_options(&[], Some(dir.path().to_path_buf())));
    let (status, tasks) = api(&d2, "ins-restart", "GET", "/v1/tasks", None).await;
    assert_eq!(status, 200, "{tasks}");
    assert_eq!(tasks["tasks"][0]["name"], "hold", "{tasks}");
    let (status, list) = api(&d2, "ins-restart", "GET", "/v1/checkpoints", None).await;
    assert_eq!(status, 200);
    assert_eq!(ids(&list), ["Current", "v0"]);
    d2.delete("ins-restart").await;
}

#[tokio::test]
async fn services_from_inside() {
    let d = TestDaemon::start_real();
    d.create("ins-svc").await;
    let (status, list) = api(&d, "ins-svc", "GET", "/v1/services", None).await;
    assert_eq!((status, list), (200, json!([])));
    let (status, last) = api(
        &d,
        "ins-svc",
        "PUT",
        "/v1/services/sleeper?duration=0s",
        Some(json!({"cmd": "sleep", "args": ["100000"]})),
    )
    .await;
    assert_eq!(status, 200, "{last}");
    let (status, one) = api(&d, "ins-svc", "GET", "/v1/services/sleeper", None).await;
    assert_eq!(
        (status, one["name"].as_str()),
        (200, Some("sleeper")),
        "{one}"
    );
    // The public API sees the same service.
    let (status, one) = d.get_json("/v1/sprites/ins-svc/services/sleeper").await;
    assert_eq!(status, 200, "{one}");
    let (status, _) = api(&d, "ins-svc", "DELETE", "/v1/services/sleeper", None).await;
    assert_eq!(status, 204);
    let (status, _) = api(&d, "ins-svc", "GET", "/v1/services/sleeper", None).await;
    assert_eq!(status, 404);
    d.delete("ins-svc").await;
}

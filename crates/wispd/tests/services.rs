//! Services (§3.8) against the real wispd, keepers and sprites: definitions and their
//! shapes, NDJSON streams, logs, sticky stops, cold and warm wakes, crash restarts with
//! backoff, `needs` order, signals, delete, restore, and supervision by the keeper across a
//! wispd kill -9.

mod common;

use std::time::{Duration, Instant};

use common::{real_options, KeeperCleanup, TestDaemon};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn svc_path(sprite: &str, svc: &str) -> String {
    format!("/v1/sprites/{sprite}/services/{svc}")
}

/// PUTs a definition, asserting 200; returns the NDJSON lines.
async fn put(d: &TestDaemon, sprite: &str, svc: &str, def: Value, duration: &str) -> Vec<Value> {
    let path = format!("{}?duration={duration}", svc_path(sprite, svc));
    let (status, lines) = d.ndjson(Method::PUT, &path, Some(def)).await;
    assert_eq!(status, StatusCode::OK, "{lines:?}\n{}", d.log());
    assert_complete(&lines, svc);
    lines
}

/// The last line is `complete` with the service's log file.
fn assert_complete(lines: &[Value], svc: &str) {
    let last = lines.last().unwrap_or_else(|| panic!("no lines"));
    assert_eq!(last["type"], "complete", "{lines:?}");
    let log = format!("/.sprite/logs/services/{svc}.log");
    for k in ["combined", "stdout", "stderr"] {
        assert_eq!(last["log_files"][k], log.as_str(), "{last}");
    }
    assert!(
        last["timestamp"].as_i64().unwrap() > 1_700_000_000_000,
        "{last}"
    );
}

fn types(lines: &[Value]) -> Vec<&str> {
    lines.iter().map(|l| l["type"].as_str().unwrap()).collect()
}

fn data_of<'a>(lines: &'a [Value], kind: &str) -> Vec<&'a str> {
    lines
        .iter()
        .filter(|l| l["type"] == kind)
        .map(|l| l["data"].as_str().unwrap())
        .collect()
}

async fn get(d: &TestDaemon, sprite: &str, svc: &str) -> Value {
    let (status, body) = d.get_json(&svc_path(sprite, svc)).await;
    assert_eq!(status, StatusCode::OK, "{body}\n{}", d.log());
    body
}

/// Polls the service until `ok(service object)` holds (at most 20 s); returns the object.
async fn until(
    d: &TestDaemon,
    sprite: &str,
    svc: &str,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = get(d, sprite, svc).await;
        if ok(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{svc}: never {what}: {v}\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn running(v: &Value) -> bool {
    v["state"]["status"] == "running"
}

fn pid(v: &Value) -> i64 {
    v["state"]["pid"]
        .as_i64()
        .unwrap_or_else(|| panic!("no pid: {v}"))
}

/// Whether process `pid` exists in the sprite (as the `sprite` user sees it).
async fn alive(d: &TestDaemon, sprite: &str, pid: i64) -> bool {
    let e = d
        .exec(sprite, &["sh", "-c", &format!("kill -0 {pid}")])
        .await;
    e.code == Some(0)
}

async fn sleep_sprite(d: &TestDaemon, sprite: &str, mode: &str) {
    let (status, body) = d
        .call(
            Method::POST,
            &format!("/v1/sprites/{sprite}/sleep?mode={mode}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
}

async fn sprite_status(d: &TestDaemon, sprite: &str) -> String {
    let (_, body) = d.get_json(&format!("/v1/sprites/{sprite}")).await;
    body["status"].as_str().unwrap_or_default().to_string()
}

/// Prints a line, one on stderr, then ticks on stdout every 200 ms.
fn ticker() -> Value {
    json!({
        "cmd": "sh",
        "args": ["-c", "echo hello; echo oops >&2; while :; do echo tick; sleep 0.2; done"],
        "env": {"GREETING": "hi"},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn define_list_logs_stop_start_signal_delete() {
    let d = TestDaemon::start_real_args(&["--idle-timeout", "0"]);
    let sp = "svc-basic";
    d.create(sp).await;
    let (status, body) = d.get_json(&format!("/v1/sprites/{sp}/services")).await;
    assert_eq!((status, body), (StatusCode::OK, json!([])));

    // Create: started → output → complete, no exit.
    let lines = put(&d, sp, "ticker", ticker(), "1s").await;
    assert_eq!(lines[0]["type"], "started", "{lines:?}");
    let first_pid = lines[0]["pid"].as_i64().unwrap();
    assert_eq!(data_of(&lines, "stdout")[0], "hello", "{lines:?}");
    assert_eq!(data_of(&lines, "stderr"), ["oops"], "{lines:?}");
    assert!(!types(&lines).contains(&"exit"), "{lines:?}");

    // Shapes.
    let (status, all) = d.get_json(&format!("/v1/sprites/{sp}/services")).await;
    assert_eq!(status, StatusCode::OK);
    let all = all.as_array().unwrap().clone();
    assert_eq!(all.len(), 1);
    let s = &all[0];
    assert_eq!(s["name"], "ticker");
    assert_eq!(s["cmd"], "sh");
    assert_eq!(s["args"][0], "-c");
    assert_eq!(s["needs"], json!([]));
    assert_eq!(s["env"], json!({"GREETING": "hi"}));
    assert!(s.get("http_port").is_none(), "{s}");
    let st = &s["state"];
    assert_eq!(st["name"], "ticker");
    assert_eq!(st["status"], "running");
    assert_eq!(st["pid"], first_pid);
    assert_eq!(st["restart_count"], 0);
    assert!(st["started_at"].as_str().unwrap().ends_with('Z'), "{st}");
    assert!(st.get("next_restart_at").is_none(), "{st}");
    assert_eq!(get(&d, sp, "ticker").await, *s);

    // It runs as `sprite` in /home/sprite with its env, seen from inside.
    let info = d
        .sh(
            sp,
            &format!(
                "ps -o user= -p {first_pid}; readlink /proc/{first_pid}/cwd; \
                 tr '\\0' '\\n' < /proc/{first_pid}/environ | grep GREETING"
            ),
        )
        .await;
    assert_eq!(info, "sprite\n/home/sprite\nGREETING=hi\n");
    let pgrep = d.sh(sp, "pgrep -f 'echo tick'").await;
    assert!(pgrep.lines().any(|l| l == first_pid.to_string()), "{pgrep}");

    // Logs: the buffered lines, the last N, and following.
    let logs = format!("{}/logs", svc_path(sp, "ticker"));
    let (status, lines) = d.ndjson(Method::GET, &logs, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_complete(&lines, "ticker");
    assert!(data_of(&lines, "stdout").contains(&"hello"), "{lines:?}");
    assert_eq!(data_of(&lines, "stderr"), ["oops"]);
    assert!(types(&lines[..lines.len() - 1])
        .iter()
        .all(|t| *t == "stdout" || *t == "stderr"));
    let (_, lines) = d
        .ndjson(Method::GET, &format!("{logs}?lines=2"), None)
        .await;
    assert_eq!(lines.len(), 3, "{lines:?}");
    let t0 = Instant::now();
    let (_, lines) = d
        .ndjson(Method::GET, &format!("{logs}?lines=0&duration=1s"), None)
        .await;
    assert!(t0.elapsed() >= Duration::from_millis(900));
    assert!(data_of(&lines, "stdout").len() >= 3, "{lines:?}");
    assert!(
        data_of(&lines, "stdout").iter().all(|l| *l == "tick"),
        "{lines:?}"
    );
    // The log file inside, timestamped and tagged.
    let log = d.sh(sp, "cat /.sprite/logs/services/ticker.log").await;
    let first: Vec<&str> = log.lines().take(3).collect();
    assert!(
        first.iter().any(|l| l.ends_with(" [stdout] hello")),
        "{log}"
    );
    assert!(first.iter().any(|l| l.ends_with(" [stderr] oops")), "{log}");
    assert!(
        first[0].starts_with("20") && first[0].as_bytes()[10] == b'T',
        "{log}"
    );
    assert!(
        d.exec(
            sp,
            &["sh", "-c", "echo x >> /.sprite/logs/services/ticker.log"]
        )
        .await
        .code
            != Some(0)
    );

    // Stop: stopping → stopped (TERM: 143) → complete; sticky; a second stop is 409.
    let (status, lines) = d
        .ndjson(
            Method::POST,
            &format!("{}/stop", svc_path(sp, "ticker")),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{lines:?}");
    assert_eq!(
        types(&lines),
        ["stopping", "stopped", "complete"],
        "{lines:?}"
    );
    assert_eq!(lines[1]["exit_code"], 143);
    let v = get(&d, sp, "ticker").await;
    assert_eq!(v["state"]["status"], "stopped", "{v}");
    assert!(v["state"].get("pid").is_none(), "{v}");
    assert!(!alive(&d, sp, first_pid).await);
    let (status, body) = d
        .call(
            Method::POST,
            &format!("{}/stop", svc_path(sp, "ticker")),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("not running"),
        "{body}"
    );

    // The stop survives a cold sleep and wake.
    sleep_sprite(&d, sp, "cold").await;
    assert_eq!(sprite_status(&d, sp).await, "cold");
    d.sh(sp, "true").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let v = get(&d, sp, "ticker").await;
    assert_eq!(v["state"]["status"], "stopped", "{v}");
    assert_eq!(
        d.exec(sp, &["pgrep", "-f", "echo tick"]).await.code,
        Some(1)
    );

    // Start: a new process.
    let (status, lines) = d
        .ndjson(
            Method::POST,
            &format!("{}/start?duration=0.5s", svc_path(sp, "ticker")),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{lines:?}");
    assert_eq!(lines[0]["type"], "started", "{lines:?}");
    assert_complete(&lines, "ticker");
    let v = until(&d, sp, "ticker", "running", running).await;
    let second = pid(&v);
    assert!(alive(&d, sp, second).await);

    // Signals: bad ones are 400, unknown services 404; TERM kills it, which counts as a crash.
    let sig = format!("/v1/sprites/{sp}/services/signal");
    let (status, body) = d
        .call(
            Method::POST,
            &sig,
            Some(json!({"name": "ticker", "signal": "NOPE"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = d
        .call(
            Method::POST,
            &sig,
            Some(json!({"name": "nope", "signal": "TERM"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = d
        .call(
            Method::POST,
            &sig,
            Some(json!({"name": "ticker", "signal": "SIGTERM"})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let v = until(&d, sp, "ticker", "restarted", |v| {
        running(v) && v["state"]["restart_count"] == 1
    })
    .await;
    assert_ne!(pid(&v), second);

    // Restart: stop events, then the start's.
    let (status, lines) = d
        .ndjson(
            Method::POST,
            &format!("{}/restart?duration=0.5s", svc_path(sp, "ticker")),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{lines:?}");
    let t = types(&lines);
    assert_eq!(t[..3], ["stopping", "stopped", "started"], "{lines:?}");
    assert_complete(&lines, "ticker");
    let v = until(&d, sp, "ticker", "running", running).await;
    assert_eq!(v["state"]["restart_count"], 0, "{v}");
    let third = pid(&v);

    // Delete: 204, the process is gone, the log stays.
    let (status, body) = d.call(Method::DELETE, &svc_path(sp, "ticker"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert!(!alive(&d, sp, third).await);
    let (status, body) = d.get_json(&svc_path(sp, "ticker")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"], "service not found: ticker");
    let (status, _) = d.call(Method::DELETE, &svc_path(sp, "ticker"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, all) = d.get_json(&format!("/v1/sprites/{sp}/services")).await;
    assert_eq!(all, json!([]));
    d.sh(sp, "test -s /.sprite/logs/services/ticker.log").await;

    // Unknown sprite; unknown service operations.
    let (status, _) = d.get_json("/v1/sprites/nope/services").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for op in ["start", "stop", "restart"] {
        let (status, _) = d
            .call(
                Method::POST,
                &format!("{}/{op}", svc_path(sp, "ghost")),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{op}");
    }
    let (status, _) = d.get_json(&format!("{}/logs", svc_path(sp, "ghost"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    d.delete(sp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_definitions_cycles_ports_and_dependents() {
    let d = TestDaemon::start_real_args(&["--idle-timeout", "0"]);
    let sp = "svc-rules";
    d.create(sp).await;
    let sleeper = |extra: Value| {
        let mut v = json!({"cmd": "sleep", "args": ["100000"]});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        v
    };
    // Bodies and names.
    let res = d
        .client()
        .put(d.url(&svc_path(sp, "a")))
        .header("authorization", d.bearer())
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body: Value = res.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("invalid JSON body"),
        "{body}"
    );
    for (name, body) in [
        ("a", json!({})),
        ("a", json!({"cmd": ""})),
        ("a", json!({"cmd": "x", "dir": "relative"})),
        ("a", json!({"cmd": "x", "http_port": 0})),
        ("Bad_Name", json!({"cmd": "x"})),
        ("a", json!({"cmd": "x", "needs": ["nope"]})),
        ("a", json!({"cmd": "x", "needs": ["a"]})),
    ] {
        let (status, err) = d
            .call(Method::PUT, &svc_path(sp, name), Some(body.clone()))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name} {body}: {err}");
        assert!(err["error"].is_string(), "{err}");
    }

    // `signal` is the route of `POST .../services/signal`, not a service.
    let (status, err) = d
        .call(
            Method::PUT,
            &svc_path(sp, "signal"),
            Some(json!({"cmd": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{err}");
    assert!(err["error"].is_string(), "{err}");

    put(&d, sp, "a", sleeper(json!({"http_port": 8080})), "0s").await;
    put(&d, sp, "b", sleeper(json!({"needs": ["a"]})), "0s").await;
    put(&d, sp, "c", sleeper(json!({"needs": ["b"]})), "0s").await;
    // One http_port per sprite, whatever the spelling.
    for body in [json!({"http_port": 9000}), json!({"httpPort": 9000})] {
        let (status, err) = d
            .call(Method::PUT, &svc_path(sp, "d"), Some(sleeper(body)))
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{err}");
        assert_eq!(
            err["error"],
            "another service already has an HTTP port configured"
        );
    }
    // The owner may change its own port; the alias is read.
    put(&d, sp, "a", sleeper(json!({"httpPort": 8081})), "0s").await;
    assert_eq!(get(&d, sp, "a").await["http_port"], 8081);
    // A cycle through redefinition.
    let (status, err) = d
        .call(
            Method::PUT,
            &svc_path(sp, "a"),
            Some(sleeper(json!({"needs": ["c"]}))),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["error"], "dependency cycle: a -> c -> b -> a");
    // A needed service cannot be deleted.
    let (status, err) = d.call(Method::DELETE, &svc_path(sp, "b"), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert!(
        err["error"].as_str().unwrap().contains("needed by c"),
        "{err}"
    );
    for n in ["c", "b", "a"] {
        let (status, _) = d.call(Method::DELETE, &svc_path(sp, n), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
    }
    d.delete(sp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crashing_service_restarts_with_growing_backoff() {
    let d = TestDaemon::start_real_args(&["--idle-timeout", "0"]);
    let sp = "svc-crash";
    d.create(sp).await;
    let def = json!({"cmd": "sh", "args": ["-c", "echo boom; exit 3"]});
    // The stream ends at the exit, well before its 10 s.
    let t0 = Instant::now();
    let lines = put(&d, sp, "crasher", def, "10s").await;
    assert!(t0.elapsed() < Duration::from_secs(5), "{lines:?}");
    assert_eq!(
        types(&lines),
        ["started", "stdout", "exit", "complete"],
        "{lines:?}"
    );
    assert_eq!(lines[1]["data"], "boom");
    assert_eq!(lines[2]["exit_code"], 3);

    let v = until(&d, sp, "crasher", "waiting to restart", |v| {
        v["state"]["status"] == "failed"
    })
    .await;
    assert_eq!(v["state"]["error"], "exited with code 3", "{v}");
    assert!(v["state"]["next_restart_at"].is_string(), "{v}");
    assert!(v["state"].get("pid").is_none(), "{v}");

    // Runs at t, t+1, t+3, t+7: the gaps double.
    let v = until(&d, sp, "crasher", "restarted 3 times", |v| {
        v["state"]["restart_count"].as_u64().unwrap_or(0) >= 3
    })
    .await;
    assert!(v["state"]["restart_count"].as_u64().unwrap() <= 4, "{v}");
    let (_, lines) = d
        .ndjson(
            Method::GET,
            &format!("{}/logs", svc_path(sp, "crasher")),
            None,
        )
        .await;
    let times: Vec<i64> = lines
        .iter()
        .filter(|l| l["type"] == "stdout")
        .map(|l| l["timestamp"].as_i64().unwrap())
        .collect();
    assert!(times.len() >= 4, "{lines:?}");
    let gaps: Vec<i64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!((900..1900).contains(&gaps[0]), "{gaps:?}");
    assert!((1900..3500).contains(&gaps[1]), "{gaps:?}");
    assert!((3900..6000).contains(&gaps[2]), "{gaps:?}");

    // A stop while it waits for its next try: nothing to kill, and it stays stopped.
    let (status, lines) = d
        .ndjson(
            Method::POST,
            &format!("{}/stop", svc_path(sp, "crasher")),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{lines:?}");
    assert!(types(&lines).contains(&"stopped"), "{lines:?}");
    let count = get(&d, sp, "crasher").await["state"]["restart_count"].clone();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let v = get(&d, sp, "crasher").await;
    assert_eq!(v["state"]["status"], "stopped", "{v}");
    assert_eq!(v["state"]["restart_count"], count, "{v}");
    d.delete(sp).await;
}

/// The `client` service fetches from `web` once when it starts: started before `web`
/// listens, it would print 000.
fn web_and_client() -> (Value, Value) {
    (
        json!({"cmd": "python3", "args": ["-m", "http.server", "8123", "--bind", "127.0.0.1"],
               "http_port": 8123, "dir": "/tmp"}),
        json!({"cmd": "sh", "needs": ["web"],
               "args": ["-c", "curl -s -o /dev/null -w '%{http_code}\\n' http://127.0.0.1:8123/; exec sleep 100000"]}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cold_wakes_and_restores_restart_services_in_order_warm_wakes_keep_them() {
    let d = TestDaemon::start_real_args(&["--idle-timeout", "0"]);
    let sp = "svc-wake";
    d.create(sp).await;
    let (web, client) = web_and_client();
    put(&d, sp, "web", web, "0s").await;
    let lines = put(&d, sp, "client", client, "3s").await;
    assert!(data_of(&lines, "stdout").contains(&"200"), "{lines:?}");
    let web0 = until(&d, sp, "web", "running", running).await;
    let client0 = until(&d, sp, "client", "running", running).await;

    // Warm: the same processes resume.
    sleep_sprite(&d, sp, "warm").await;
    assert_eq!(sprite_status(&d, sp).await, "warm");
    let v = get(&d, sp, "web").await;
    assert_eq!(sprite_status(&d, sp).await, "running");
    assert_eq!(v["state"], web0["state"]);
    assert!(alive(&d, sp, pid(&web0)).await);

    // Cold: both start again, the client after the web server listens.
    sleep_sprite(&d, sp, "cold").await;
    assert_eq!(sprite_status(&d, sp).await, "cold");
    let web1 = until(&d, sp, "web", "running again", running).await;
    assert_ne!(web1["state"]["started_at"], web0["state"]["started_at"]);
    let client1 = until(&d, sp, "client", "running again", running).await;
    assert_ne!(
        client1["state"]["started_at"],
        client0["state"]["started_at"]
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, lines) = d
            .ndjson(
                Method::GET,
                &format!("{}/logs", svc_path(sp, "client")),
                None,
            )
            .await;
        let out = data_of(&lines, "stdout");
        if !out.is_empty() {
            assert_eq!(
                out,
                ["200"],
                "the client started before the web server listened"
            );
            break;
        }
        assert!(Instant::now() < deadline, "the client printed nothing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        d.sh(
            sp,
            "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8123/"
        )
        .await,
        "200"
    );

    // A restore restarts the keeper, and with it the services.
    let (status, lines) = d
        .ndjson(
            Method::POST,
            &format!("/v1/sprites/{sp}/checkpoint"),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{lines:?}");
    let (status, lines) = d
        .ndjson(
            Method::POST,
            &format!("/v1/sprites/{sp}/checkpoints/v1/restore"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{lines:?}");
    let web2 = until(&d, sp, "web", "running after the restore", running).await;
    assert_ne!(web2["state"]["started_at"], web1["state"]["started_at"]);
    until(&d, sp, "client", "running after the restore", running).await;
    d.delete(sp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quiet_services_let_the_sprite_sleep() {
    let d = TestDaemon::start_real_args(&["--idle-timeout", "1s", "--cold-timeout", "0"]);
    let sp = "svc-idle";
    d.create(sp).await;
    put(
        &d,
        sp,
        "quiet",
        json!({"cmd": "sleep", "args": ["100000"]}),
        "0s",
    )
    .await;
    let v0 = until(&d, sp, "quiet", "running", running).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while sprite_status(&d, sp).await != "warm" {
        assert!(
            Instant::now() < deadline,
            "a quiet service kept the sprite awake"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Asking about it wakes the sprite; the service resumes.
    let v = get(&d, sp, "quiet").await;
    assert_eq!(v["state"], v0["state"]);
    d.delete(sp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_keeper_supervises_across_a_wispd_kill9() {
    let dir = tempfile::Builder::new()
        .prefix("wispd-svc-")
        .tempdir()
        .unwrap();
    let _cleanup = KeeperCleanup(dir.path().to_path_buf());
    let opts = real_options(&["--idle-timeout", "0"], Some(dir.path().to_path_buf()));
    let mut d1 = TestDaemon::start_with(opts.clone());
    let sp = "svc-kill9";
    d1.create(sp).await;
    put(
        &d1,
        sp,
        "steady",
        json!({"cmd": "sleep", "args": ["100000"]}),
        "0s",
    )
    .await;
    put(
        &d1,
        sp,
        "crasher",
        json!({"cmd": "sh", "args": ["-c", "exit 1"]}),
        "0s",
    )
    .await;
    let steady = until(&d1, sp, "steady", "running", running).await;
    d1.kill9();
    // Without wispd, the keeper keeps restarting the crasher.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let d2 = TestDaemon::start_with(opts);
    let v = get(&d2, sp, "steady").await;
    assert_eq!(v["state"], steady["state"]);
    let v = get(&d2, sp, "crasher").await;
    assert!(v["state"]["restart_count"].as_u64().unwrap() >= 2, "{v}");
    d2.delete(sp).await;
}

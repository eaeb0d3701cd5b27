//! Warm and cold sleep (`POST /v1/sprites/{name}/sleep`, a Wisp extension) and transparent
//! wake: against the real wispd, keepers, cgroups and namespaces.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::TestDaemon;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Appends a timestamp to /tmp/ticks every 50 ms, in its own session (so the exec that
/// started it can end), and records its pid in /tmp/pidfile.
const TICKER: &str = "setsid sh -c 'while :; do date +%s%N >> /tmp/ticks; sleep 0.05; done' \
                      </dev/null >/dev/null 2>&1 & echo $! > /tmp/pidfile";

async fn sleep(d: &TestDaemon, name: &str, mode: Option<&str>) -> (StatusCode, Value) {
    let q = mode.map(|m| format!("?mode={m}")).unwrap_or_default();
    d.call(Method::POST, &format!("/v1/sprites/{name}/sleep{q}"), None)
        .await
}

async fn sleep_ok(d: &TestDaemon, name: &str, mode: Option<&str>) {
    let (status, body) = sleep(d, name, mode).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}\n{}", d.log());
}

async fn sprite(d: &TestDaemon, name: &str) -> Value {
    let (status, body) = d.get_json(&format!("/v1/sprites/{name}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn status(d: &TestDaemon, name: &str) -> String {
    sprite(d, name).await["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn ticks_file(d: &TestDaemon, id: &str) -> PathBuf {
    d.data_dir
        .join("pool/sprites")
        .join(id)
        .join("live/upper/tmp/ticks")
}

fn tick_count(d: &TestDaemon, id: &str) -> usize {
    std::fs::read_to_string(ticks_file(d, id))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// Waits until the ticker has written more than `above` lines.
async fn ticks_grow(d: &TestDaemon, id: &str, above: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tick_count(d, id) <= above {
        assert!(
            Instant::now() < deadline,
            "the ticker did not tick (still {} lines)",
            tick_count(d, id)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn keeper_log(d: &TestDaemon, id: &str) -> String {
    std::fs::read_to_string(d.data_dir.join("logs").join(format!("{id}.keeper.log")))
        .unwrap_or_default()
}

/// Keeper starts of a sprite: its keeper logs this line once per start.
fn keeper_starts(d: &TestDaemon, id: &str) -> usize {
    keeper_log(d, id)
        .lines()
        .filter(|l| l.contains(&format!("sprite {id} running, init pid")))
        .count()
}

fn thaws(d: &TestDaemon, id: &str) -> usize {
    keeper_log(d, id)
        .lines()
        .filter(|l| l.contains(&format!("sprite {id} thawed")))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn warm_keeps_processes_cold_keeps_files() {
    let d = TestDaemon::start_real();
    let id = d.create("sleepy").await["id"].as_str().unwrap().to_string();
    d.sh("sleepy", &format!("echo kept > /tmp/note; {TICKER}"))
        .await;
    let pid = d.sh("sleepy", "cat /tmp/pidfile").await;
    ticks_grow(&d, &id, 2).await;

    // Warm: the processes stop mid-flight, the keeper stays.
    sleep_ok(&d, "sleepy", None).await;
    let s = sprite(&d, "sleepy").await;
    assert_eq!(s["status"], "warm", "{s}");
    assert!(s["last_warming_at"].is_string(), "{s}");
    let keeper = common::keeper_pid(&id).expect("a warm sprite keeps its keeper");
    let before = tick_count(&d, &id);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(tick_count(&d, &id), before, "a warm sprite ran");
    // Sleeping it again is fine and changes nothing.
    sleep_ok(&d, "sleepy", Some("warm")).await;
    assert_eq!(status(&d, "sleepy").await, "warm");

    // Any exec wakes it: the same process resumes.
    let running_at = s["last_running_at"].clone();
    assert_eq!(d.sh("sleepy", "cat /tmp/pidfile").await, pid);
    let s = sprite(&d, "sleepy").await;
    assert_eq!(s["status"], "running", "{s}");
    assert_ne!(s["last_running_at"], running_at, "{s}");
    assert_eq!(common::keeper_pid(&id), Some(keeper));
    d.sh("sleepy", &format!("kill -0 {}", pid.trim())).await;
    ticks_grow(&d, &id, before).await;

    // Cold: the keeper and every process go, the files stay.
    sleep_ok(&d, "sleepy", Some("cold")).await;
    assert_eq!(status(&d, "sleepy").await, "cold");
    assert_eq!(common::keeper_pid(&id), None);
    sleep_ok(&d, "sleepy", Some("cold")).await;
    sleep_ok(&d, "sleepy", Some("warm")).await;
    assert_eq!(status(&d, "sleepy").await, "cold");
    let starts = keeper_starts(&d, &id);
    assert_eq!(d.sh("sleepy", "cat /tmp/note").await, "kept\n");
    assert_eq!(keeper_starts(&d, &id), starts + 1);
    assert_eq!(status(&d, "sleepy").await, "running");
    let gone = d
        .exec("sleepy", &["sh", "-c", &format!("kill -0 {}", pid.trim())])
        .await;
    assert_ne!(
        gone.code,
        Some(0),
        "the hand-started ticker survived a cold sleep"
    );
    let after = tick_count(&d, &id);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(tick_count(&d, &id), after);

    // Warm straight to cold works too.
    sleep_ok(&d, "sleepy", None).await;
    sleep_ok(&d, "sleepy", Some("cold")).await;
    assert_eq!(status(&d, "sleepy").await, "cold");
    d.delete("sleepy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_wakes_coalesce() {
    let d = TestDaemon::start_real();
    let id = d.create("crowd").await["id"].as_str().unwrap().to_string();
    let run20 = || async {
        let execs = (0..20).map(|i| {
            let d = &d;
            async move { d.exec("crowd", &["echo", &i.to_string()]).await }
        });
        for (i, e) in futures_util::future::join_all(execs)
            .await
            .into_iter()
            .enumerate()
        {
            assert_eq!(e.code, Some(0), "exec {i}: {e:?}\n{}", d.log());
            assert_eq!(e.stdout_str(), format!("{i}\n"));
        }
    };

    // Cold: twenty execs at once start exactly one keeper.
    sleep_ok(&d, "crowd", Some("cold")).await;
    let starts = keeper_starts(&d, &id);
    run20().await;
    assert_eq!(
        keeper_starts(&d, &id),
        starts + 1,
        "{}",
        keeper_log(&d, &id)
    );
    assert_eq!(status(&d, "crowd").await, "running");

    // Warm: twenty execs at once thaw it exactly once.
    sleep_ok(&d, "crowd", None).await;
    assert_eq!(status(&d, "crowd").await, "warm");
    run20().await;
    assert_eq!(thaws(&d, &id), 1, "{}", keeper_log(&d, &id));
    assert_eq!(keeper_starts(&d, &id), starts + 1);
    assert_eq!(status(&d, "crowd").await, "running");
    d.delete("crowd").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refusals_and_wake_latency() {
    let d = TestDaemon::start_real();
    d.create("timed").await;
    let (status_code, body) = sleep(&d, "timed", Some("frozen")).await;
    assert_eq!(status_code, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("mode"),
        "{body}"
    );
    let (status_code, body) = sleep(&d, "nobody", None).await;
    assert_eq!(status_code, StatusCode::NOT_FOUND, "{body}");
    assert!(body["error"].is_string(), "{body}");
    assert_eq!(status(&d, "timed").await, "running");

    // Measured, not asserted: an exec on a warm sprite (thaw included) against one on a
    // running sprite.
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    for _ in 0..3 {
        d.exec("timed", &["true"]).await;
    }
    let mut running = Vec::new();
    let mut warm = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        assert_eq!(d.exec("timed", &["true"]).await.code, Some(0));
        running.push(t.elapsed());
        sleep_ok(&d, "timed", None).await;
        let t = Instant::now();
        assert_eq!(d.exec("timed", &["true"]).await.code, Some(0));
        warm.push(t.elapsed());
    }
    eprintln!(
        "exec `true`, median of 20: running sprite {:?}, warm sprite (wake included) {:?}",
        median(running),
        median(warm)
    );
    d.delete("timed").await;
}

/// The idle timer of these tests: warm after 1 s idle, cold 2 s later.
const IDLE_ARGS: &[&str] = &["--idle-timeout", "1s", "--cold-timeout", "2s"];

/// Polls the sprite's status until it is `want`; returns how long that took.
async fn wait_status(d: &TestDaemon, name: &str, want: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let s = status(d, name).await;
        if s == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "still {s:?}, not {want:?}, after {limit:?}\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_sprite_goes_warm_then_cold() {
    let d = TestDaemon::start_real_args(IDLE_ARGS);
    d.create("idler").await;
    assert_eq!(d.sh("idler", "echo hi").await, "hi\n");
    let warm_after = wait_status(&d, "idler", "warm", Duration::from_secs(5)).await;
    assert!(
        warm_after >= Duration::from_millis(500),
        "warm too early: {warm_after:?}"
    );
    let cold_after = wait_status(&d, "idler", "cold", Duration::from_secs(5)).await;
    assert!(
        cold_after >= Duration::from_millis(1500),
        "cold too early: {cold_after:?}"
    );
    eprintln!("idle: warm after {warm_after:?}, then cold after {cold_after:?}");
    // An exec wakes it as usual.
    assert_eq!(d.sh("idler", "echo back").await, "back\n");
    assert_eq!(status(&d, "idler").await, "running");
    d.delete("idler").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attached_exec_keeps_sprite_running() {
    let d = TestDaemon::start_real_args(IDLE_ARGS);
    d.create("busy").await;
    let (mut ws, _) =
        common::connect_session(&d, &common::exec_path("busy", &["sleep", "3"], &[])).await;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(2500) {
        assert_eq!(status(&d, "busy").await, "running", "{}", d.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let e = common::Exec::from(common::collect_for(&mut ws, Duration::from_secs(10)).await);
    assert_eq!(e.code, Some(0), "{e:?}");
    // Once it is done, the sprite goes to sleep.
    wait_status(&d, "busy", "warm", Duration::from_secs(5)).await;
    d.delete("busy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn detached_silent_session_does_not_keep_sprite_awake() {
    let d = TestDaemon::start_real_args(IDLE_ARGS);
    d.create("detached").await;
    let path = common::exec_path("detached", &["sleep", "300"], &[("tty", "true")]);
    let (ws, info) = common::connect_session(&d, &path).await;
    let session = info["session_id"].to_string();
    drop(ws);
    wait_status(&d, "detached", "warm", Duration::from_secs(5)).await;
    // The session survives the freeze: the list reads the keeper without waking the sprite.
    let (code, list) = d.get_json("/v1/sprites/detached/exec").await;
    assert_eq!(code, StatusCode::OK, "{list}");
    assert_eq!(list["count"], 1, "{list}");
    assert_eq!(list["sessions"][0]["id"].to_string(), session, "{list}");
    assert_eq!(status(&d, "detached").await, "warm");
    d.delete("detached").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streaming_exec_is_never_frozen_mid_run() {
    let d = TestDaemon::start_real_args(IDLE_ARGS);
    d.create("chatty").await;
    let script = "for i in $(seq 30); do echo $i; sleep 0.1; done";
    let e = d.exec("chatty", &["sh", "-c", script]).await;
    assert_eq!(e.code, Some(0), "{e:?}");
    let want: String = (1..=30).map(|i| format!("{i}\n")).collect();
    assert_eq!(e.stdout_str(), want);
    d.delete("chatty").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_detached_session_that_writes_keeps_the_sprite_awake() {
    let d = TestDaemon::start_real_args(IDLE_ARGS);
    d.create("writer").await;
    let path = common::exec_path(
        "writer",
        &["sh", "-c", "while true; do echo tick; sleep 0.2; done"],
        &[("tty", "true")],
    );
    let (ws, info) = common::connect_session(&d, &path).await;
    let session = info["session_id"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| info["session_id"].to_string());
    drop(ws);
    // Three idle timeouts later it still runs: its output is activity.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(status(&d, "writer").await, "running");
    // Once it is quiet, the sprite goes warm.
    let (code, body) = d
        .call(
            reqwest::Method::POST,
            &format!("/v1/sprites/writer/exec/{session}/kill"),
            None,
        )
        .await;
    assert!(code.is_success(), "{code} {body}");
    wait_status(&d, "writer", "warm", Duration::from_secs(6)).await;
    d.delete("writer").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_the_memory_budget_the_least_recently_used_sprite_goes_cold() {
    // No idle timer: only the budget acts. 100 MiB for two sprites holding 60 MiB each.
    let d = TestDaemon::start_real_args(&[
        "--idle-timeout",
        "0",
        "--cold-timeout",
        "0",
        "--memory-budget-mb",
        "100",
    ]);
    let hog = "setsid nohup python3 -c 'import time; x = bytearray(60 << 20); \
               x[::4096] = b\"x\" * len(x[::4096]); time.sleep(600)' >/dev/null 2>&1 & \
               sleep 1";
    d.create("older").await;
    d.sh("older", hog).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    d.create("newer").await;
    d.sh("newer", hog).await;
    wait_status(&d, "older", "cold", Duration::from_secs(10)).await;
    assert_eq!(status(&d, "newer").await, "running");
    // Its files are kept; using it again wakes it.
    assert_eq!(d.sh("older", "echo back").await, "back\n");
    d.delete("older").await;
    d.delete("newer").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sprite_can_have_its_own_idle_timeouts() {
    // The daemon never puts anything to sleep; one sprite asks for 1 s / 2 s.
    let d = TestDaemon::start_real_args(&["--idle-timeout", "0", "--cold-timeout", "0"]);
    let (code, body) = d
        .call(
            reqwest::Method::POST,
            "/v1/sprites",
            Some(json!({"name": "sleepy", "lifecycle": {"idle_timeout": "1s", "cold_timeout": "2s"}})),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    assert_eq!(
        body["lifecycle"],
        json!({"idle_timeout": "1s", "cold_timeout": "2s"})
    );
    d.create("awake").await;
    wait_status(&d, "sleepy", "warm", Duration::from_secs(5)).await;
    wait_status(&d, "sleepy", "cold", Duration::from_secs(6)).await;
    assert_eq!(status(&d, "awake").await, "running");
    // Back to the daemon's setting (never): it stays awake after a wake.
    let (code, body) = d
        .call(
            reqwest::Method::PUT,
            "/v1/sprites/sleepy",
            Some(json!({"lifecycle": {"idle_timeout": "default", "cold_timeout": "default"}})),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert!(body.get("lifecycle").is_none(), "{body}");
    d.sh("sleepy", "true").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(status(&d, "sleepy").await, "running");
    // Bad durations are refused with the field named.
    let (code, body) = d
        .call(
            reqwest::Method::PUT,
            "/v1/sprites/sleepy",
            Some(json!({"lifecycle": {"idle_timeout": "soon"}})),
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("lifecycle.idle_timeout"),
        "{body}"
    );
    d.delete("sleepy").await;
    d.delete("awake").await;
}

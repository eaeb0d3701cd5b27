//! Real sprites across daemon crashes and restarts: files persist, running commands and their
//! output survive a `kill -9` of wispd, and a stopped sprite wakes on demand.

mod common;

use std::time::{Duration, Instant};

use common::{
    collect, connect, connect_session, exec_path, raw_bytes, read_until, real_options,
    stream_bytes, Exec, Got, KeeperCleanup, TestDaemon,
};
use futures_util::SinkExt;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

fn start_on(dir: &std::path::Path) -> TestDaemon {
    TestDaemon::start_with(real_options(&[], Some(dir.to_path_buf())))
}

#[tokio::test]
async fn files_and_commands_survive_a_wispd_kill9() {
    let dir = tempfile::Builder::new()
        .prefix("wispd-life-")
        .tempdir()
        .unwrap();
    let _cleanup = KeeperCleanup(dir.path().to_path_buf());
    let mut d1 = start_on(dir.path());
    let s = d1.create("keep").await;
    let id = s["id"].as_str().unwrap().to_string();

    // Files persist between execs, as the user and as root.
    let sum = d1
        .sh(
            "keep",
            "echo persisted > ~/file && sudo sh -c 'echo root > /etc/wisp-test' && \
             head -c 200000 /dev/urandom > ~/blob && sha256sum < ~/blob",
        )
        .await;
    assert_eq!(
        d1.sh("keep", "cat ~/file /etc/wisp-test").await,
        "persisted\nroot\n"
    );

    // An interactive shell, still attached when wispd dies.
    let (mut shell, info) =
        connect_session(&d1, &exec_path("keep", &["bash"], &[("tty", "true")])).await;
    let shell_id = info["session_id"].as_str().unwrap().to_string();
    let mut out = Vec::new();
    shell
        .send(Message::Binary(b"echo before-$((1+1))\n".to_vec().into()))
        .await
        .unwrap();
    read_until(&mut shell, &mut out, b"before-2").await;
    // A detached command that writes while wispd is down (exec: the sleep keeps its pid).
    let (detached, info) = connect_session(
        &d1,
        &exec_path(
            "keep",
            &[
                "sh",
                "-c",
                "echo early; sleep 1; echo while-away; exec sleep 300",
            ],
            &[("max_run_after_disconnect", "0")],
        ),
    )
    .await;
    let started = Instant::now();
    let sleep_id = info["session_id"].as_str().unwrap().to_string();
    drop(detached);

    // A command whose client is attached but reads nothing while it writes 600 KB.
    let (unread, info) = connect_session(
        &d1,
        &exec_path(
            "keep",
            &["sh", "-c", "seq 1 100000; exec sleep 300"],
            &[("max_run_after_disconnect", "0")],
        ),
    )
    .await;
    let seq_id = info["session_id"].as_str().unwrap().to_string();

    let keeper = common::keeper_pid(&id).expect("keeper");
    let keeper_start = common::start_ticks(keeper);
    let init = common::init_pid(keeper).expect("init");

    d1.kill9();
    drop(shell);
    drop(unread);
    // Let the command write its second line with no wispd around.
    tokio::time::sleep(Duration::from_millis(1500).saturating_sub(started.elapsed())).await;

    let d2 = start_on(dir.path());
    // The same keeper and init, found again, not restarted.
    let (status, s) = d2.get_json("/v1/sprites/keep").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s["status"], "running");
    assert_eq!(common::start_ticks(keeper), keeper_start);
    assert_eq!(common::init_pid(keeper), Some(init));
    assert!(!d2.log().contains("waking sprite"), "{}", d2.log());

    // Both commands are still listed, and running with the same pids.
    let (_, list) = d2.get_json("/v1/sprites/keep/exec").await;
    assert_eq!(list["count"], 3, "{list}");
    let listed = |id: &str| -> Value {
        list["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("session {id} not listed: {list}"))
    };
    assert_eq!(listed(&shell_id)["tty"], true);
    assert_eq!(listed(&shell_id)["command"], "bash");
    assert_eq!(listed(&sleep_id)["tty"], false);
    let ps = d2
        .exec(
            "keep",
            &[
                "ps",
                "-o",
                "pid=,comm=",
                "-p",
                &format!("{shell_id},{sleep_id}"),
            ],
        )
        .await;
    let mut rows: Vec<Vec<String>> = ps
        .stdout_str()
        .lines()
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect();
    rows.sort();
    let mut want = vec![
        vec![shell_id.clone(), "bash".to_string()],
        vec![sleep_id.clone(), "sleep".to_string()],
    ];
    want.sort();
    assert_eq!(rows, want, "{}", ps.stdout_str());

    // Attaching works: the detached command's output, including what it wrote while wispd
    // was down, then its end.
    let mut ws = connect(&d2, &format!("/v1/sprites/keep/exec?id={sleep_id}")).await;
    let mut got = Vec::new();
    while stream_bytes(&got, 1) != b"early\nwhile-away\n" {
        let more = common::next_frames(&mut ws, 1).await;
        assert!(!more.is_empty(), "{got:?}");
        got.extend(more);
    }
    assert_eq!(common::session_info(&got)["is_owner"], false);
    ws.send(Message::Text(
        json!({"type": "signal", "signal": "TERM"})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    got.extend(collect(&mut ws).await);
    assert_eq!(stream_bytes(&got, 1), b"early\nwhile-away\n");
    Exec::from(got).assert_ended_with(143);

    // Not a byte lost of what was written while nobody read: it is all in the scrollback.
    let mut ws = connect(&d2, &format!("/v1/sprites/keep/exec/{seq_id}")).await;
    let want: String = (1..=100_000).map(|i| format!("{i}\n")).collect();
    let mut got = Vec::new();
    while stream_bytes(&got, 1).len() < want.len() {
        let more = common::next_frames(&mut ws, 1).await;
        assert!(!more.is_empty(), "{} bytes", stream_bytes(&got, 1).len());
        got.extend(more);
    }
    ws.send(Message::Text(
        json!({"type": "signal", "signal": "TERM"})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    got.extend(collect(&mut ws).await);
    assert!(
        stream_bytes(&got, 1) == want.as_bytes(),
        "seq output differs"
    );
    Exec::from(got).assert_ended_with(143);

    // The shell: its scrollback, then it takes input again.
    let (mut ws, info) = connect_session(&d2, &format!("/v1/sprites/keep/exec/{shell_id}")).await;
    assert_eq!(
        (info["is_owner"].clone(), info["tty"].clone()),
        (json!(false), json!(true))
    );
    let mut out = Vec::new();
    read_until(&mut ws, &mut out, b"before-2").await;
    ws.send(Message::Binary(
        b"echo after-$((2+3)); exit 3\n".to_vec().into(),
    ))
    .await
    .unwrap();
    read_until(&mut ws, &mut out, b"after-5").await;
    let got = collect(&mut ws).await;
    assert_eq!(
        got[got.len() - 2..],
        [
            Got::Text(json!({"type": "exit", "exit_code": 3, "code": 3})),
            Got::Close(Some(1000))
        ]
    );
    let (_, list) = d2.get_json("/v1/sprites/keep/exec").await;
    assert_eq!(list["count"], 0, "{list}");

    // And the files.
    assert_eq!(
        d2.sh("keep", "cat ~/file /etc/wisp-test").await,
        "persisted\nroot\n"
    );
    assert_eq!(d2.sh("keep", "sha256sum < ~/blob").await, sum);

    d2.delete("keep").await;
    assert!(common::keeper_pid(&id).is_none());
}

#[tokio::test]
async fn a_stopped_sprite_wakes_with_its_files() {
    let dir = tempfile::Builder::new()
        .prefix("wispd-wake-")
        .tempdir()
        .unwrap();
    let _cleanup = KeeperCleanup(dir.path().to_path_buf());
    let mut d = start_on(dir.path());
    let s = d.create("wake").await;
    let id = s["id"].as_str().unwrap().to_string();
    d.sh("wake", "echo kept > ~/f").await;
    let first_keeper = common::keeper_pid(&id).unwrap();
    let first_start = common::start_ticks(first_keeper);

    // Stop the keeper behind wispd's back: the sprite is cold, and nothing of it runs.
    common::shutdown_keepers(&d.data_dir);
    let (_, s) = d.get_json("/v1/sprites/wake").await;
    assert_eq!(s["status"], "cold");
    let deadline = Instant::now() + Duration::from_secs(5);
    while first_start.is_some() && common::start_ticks(first_keeper) == first_start {
        assert!(
            Instant::now() < deadline,
            "the stopped keeper is still there"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, list) = d.get_json("/v1/sprites/wake/exec").await;
    assert_eq!(list["count"], 0);

    // Any exec wakes it; concurrent ones share one start.
    let (a, b) = tokio::join!(
        d.exec("wake", &["cat", "/home/sprite/f"]),
        d.exec("wake", &["cat", "/home/sprite/f"]),
    );
    for e in [a, b] {
        assert_eq!(e.stdout, b"kept\n", "{e:?}");
        e.assert_ended_with(0);
    }
    let (_, s) = d.get_json("/v1/sprites/wake").await;
    assert_eq!(s["status"], "running");
    assert_eq!(d.log().matches("waking sprite").count(), 1, "{}", d.log());
    let keeper = common::keeper_pid(&id).expect("a new keeper");

    // kill -9 wispd: the sprite keeps running and the new wispd finds it.
    d.kill9();
    let d2 = start_on(dir.path());
    let (_, s) = d2.get_json("/v1/sprites/wake").await;
    assert_eq!(s["status"], "running");
    let e = d2.exec("wake", &["echo", "again"]).await;
    assert_eq!(e.stdout, b"again\n");
    assert_eq!(common::keeper_pid(&id), Some(keeper));
    // (The log file is shared with the first wispd: still only its one wake.)
    assert_eq!(d2.log().matches("waking sprite").count(), 1);

    // A TTY exec wakes it too, after another stop.
    common::shutdown_keepers(&d2.data_dir);
    let e = d2
        .exec_q("wake", &["cat", "/home/sprite/f"], &[("tty", "true")])
        .await;
    assert_eq!(raw_bytes(&e.got), b"kept\r\n");

    d2.delete("wake").await;
    assert!(common::keeper_pid(&id).is_none());
}

fn sigkill(pid: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

/// Waits up to 5 s for `cond`.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_crashed_keeper_or_init_takes_the_whole_sprite_down() {
    let d = TestDaemon::start_real();
    let s = d.create("crash").await;
    let id = s["id"].as_str().unwrap().to_string();
    d.sh(
        "crash",
        "echo kept > ~/f; setsid sleep 300 </dev/null >/dev/null 2>&1 &",
    )
    .await;
    let (mut ws, _) = connect_session(&d, &exec_path("crash", &["sleep", "100"], &[])).await;
    let cgroup_procs = || -> usize {
        wisp_runtime::cgroup::sprite_cgroup_dirs("wisp", &id)
            .unwrap()
            .iter()
            .map(|dir| {
                std::fs::read_to_string(dir.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                    .count()
            })
            .sum()
    };
    assert!(cgroup_procs() > 0);

    // kill -9 of the keeper: its init dies with it, and so does everything in the sprite.
    let keeper = common::keeper_pid(&id).unwrap();
    let init = common::init_pid(keeper).unwrap();
    let init_start = common::start_ticks(init);
    sigkill(keeper);
    let got = common::collect_for(&mut ws, Duration::from_secs(10)).await;
    assert!(matches!(got.last(), Some(Got::Close(Some(_)))), "{got:?}");
    eventually("the sprite's processes outlived their keeper", || {
        !common::runs(init, init_start) && cgroup_procs() == 0
    })
    .await;
    let (_, s) = d.get_json("/v1/sprites/crash").await;
    assert_eq!(s["status"], "cold");

    // The next exec starts it again, with its files and without the old processes.
    assert_eq!(
        d.exec("crash", &["cat", "/home/sprite/f"]).await.stdout,
        b"kept\n"
    );
    let ps = d.exec("crash", &["ps", "-e", "-o", "comm="]).await;
    let mut procs: Vec<_> = ps.stdout_str().lines().map(String::from).collect();
    procs.sort();
    assert_eq!(procs, ["ps", "wisp-init"], "{}", ps.stdout_str());

    // kill -9 of the init (from the host): the keeper notices and stops.
    let keeper = common::keeper_pid(&id).unwrap();
    let keeper_start = common::start_ticks(keeper);
    sigkill(common::init_pid(keeper).unwrap());
    eventually("the keeper outlived its init", || {
        !common::runs(keeper, keeper_start)
    })
    .await;
    let (_, s) = d.get_json("/v1/sprites/crash").await;
    assert_eq!(s["status"], "cold");
    assert_eq!(
        d.exec("crash", &["cat", "/home/sprite/f"]).await.stdout,
        b"kept\n"
    );

    d.delete("crash").await;
    for dir in wisp_runtime::cgroup::sprite_cgroup_dirs("wisp", &id).unwrap() {
        assert!(!dir.exists(), "{}", dir.display());
    }
}

/// A `kill -9` of wispd while it writes a keeper's config (on create or on a wake, a few ms
/// into the request) leaves the temporary file of that atomic write behind:
/// `run/.<id>.json.tmp-<uuid>`. Seen for real by killing wispd 2 ms and 5 ms after a
/// `POST /v1/sprites`; recreated here exactly, so that the test is deterministic. Destroy
/// must remove it too: nothing named after a destroyed sprite may stay in the data dir.
#[tokio::test]
async fn destroy_after_a_crash_mid_config_write_leaves_no_file() {
    let dir = tempfile::Builder::new()
        .prefix("wispd-tmp-")
        .tempdir()
        .unwrap();
    let _cleanup = KeeperCleanup(dir.path().to_path_buf());
    let mut d = start_on(dir.path());
    let s = d.create("half").await;
    let id = s["id"].as_str().unwrap().to_string();
    d.kill9();
    let debris = dir
        .path()
        .join("run")
        .join(format!(".{id}.json.tmp-0123456789abcdef0123456789abcdef"));
    std::fs::write(&debris, b"{").unwrap();

    let d = start_on(dir.path());
    d.delete("half").await;
    assert!(
        !debris.exists(),
        "{} survived the destroy of its sprite",
        debris.display()
    );
}

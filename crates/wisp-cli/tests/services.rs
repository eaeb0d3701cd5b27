//! Drives `wisp services …` against the real `wispd` (see `common`): create shows the first
//! output, list and get show the state, stop is sticky, start and restart bring it back,
//! logs show the buffered lines, signal and delete reach the process, and bad names, signals
//! and durations never reach the daemon.

mod common;

use common::{dead_url, Daemon};
use serde_json::Value;

/// `wisp services get --json NAME`.
async fn get(d: &Daemon, sprite: &str, name: &str) -> Value {
    let r = d
        .run(&["services", "get", "--json", "-s", sprite, name])
        .await;
    assert_eq!(r.code, 0, "{r:?}");
    serde_json::from_str(&r.stdout).expect("a JSON object")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_list_stop_start_logs_signal_delete() {
    let d = Daemon::start();
    let sp = "svc-cli";
    d.create(sp).await;

    // Create: the program's output on stdout and stderr, what happens to it on stderr.
    let r = d
        .run(&[
            "services",
            "create",
            "-s",
            sp,
            "echoer",
            "--cmd",
            "sh",
            "--env",
            "WHO=world",
            "--duration",
            "1s",
            "--",
            "-c",
            "echo hello $WHO; echo oops >&2; exec sleep 100000",
        ])
        .await;
    assert_eq!(r.code, 0, "{r:?}\n{}", d.log());
    assert_eq!(r.stdout, "hello world\n");
    assert!(
        r.stderr.starts_with("echoer: started (pid "),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("\noops\n"), "{}", r.stderr);

    let r = d.run(&["services", "list", "-s", sp]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", r.stdout);
    assert!(
        lines[0].starts_with("NAME") && lines[0].ends_with("COMMAND"),
        "{}",
        r.stdout
    );
    assert!(lines[1].starts_with("echoer  running  "), "{}", r.stdout);
    assert!(
        lines[1].ends_with("sh -c \"echo hello $WHO; echo oops >&2; exec sleep 100000\""),
        "{}",
        r.stdout
    );
    let v = get(&d, sp, "echoer").await;
    assert_eq!(v["env"]["WHO"], "world");
    let pid = v["state"]["pid"].as_i64().unwrap();
    let r = d.run(&["services", "get", "-s", sp, "echoer"]).await;
    assert!(r.stdout.contains("Status:       running\n"), "{}", r.stdout);
    assert!(
        r.stdout.contains(&format!("PID:          {pid}\n")),
        "{}",
        r.stdout
    );

    // Logs: every buffered line, or the last one.
    let r = d.run(&["services", "logs", "-s", sp, "echoer"]).await;
    assert_eq!((r.code, r.stdout.as_str()), (0, "hello world\n"), "{r:?}");
    assert_eq!(r.stderr, "oops\n");
    let r = d
        .run(&["services", "logs", "-n", "0", "-s", sp, "echoer"])
        .await;
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (0, "", ""),
        "{r:?}"
    );

    // Stop (sticky), a second stop fails, start, restart.
    let r = d.run(&["services", "stop", "-s", sp, "echoer"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.stderr,
        "echoer: stopping\nechoer: stopped (exit code 143)\n"
    );
    assert_eq!(get(&d, sp, "echoer").await["state"]["status"], "stopped");
    let r = d.run(&["services", "stop", "-s", sp, "echoer"]).await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("not running (409)"), "{}", r.stderr);
    let r = d
        .run(&[
            "services",
            "start",
            "--duration",
            "0.5s",
            "-s",
            sp,
            "echoer",
        ])
        .await;
    assert_eq!((r.code, r.stdout.as_str()), (0, "hello world\n"), "{r:?}");
    let r = d
        .run(&[
            "services",
            "restart",
            "--duration",
            "0.5s",
            "-s",
            sp,
            "echoer",
        ])
        .await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.starts_with("echoer: stopping\necho"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("echoer: started (pid "), "{}", r.stderr);

    // A crashing service: create says so with exit code 1; signals reach the process.
    let r = d
        .run(&["services", "create", "-s", sp, "crash", "--cmd", "false"])
        .await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("crash: exited with code 1"),
        "{}",
        r.stderr
    );
    let r = d
        .run(&["services", "signal", "-s", sp, "echoer", "KILL"])
        .await;
    assert_eq!(r.code, 0, "{r:?}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while get(&d, sp, "echoer").await["state"]["restart_count"] != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "KILL did not restart it"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // Delete.
    for name in ["echoer", "crash"] {
        let r = d.run(&["services", "rm", "-s", sp, name]).await;
        assert_eq!(r.code, 0, "{r:?}");
    }
    let r = d.run(&["services", "get", "-s", sp, "echoer"]).await;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("service not found: echoer (404)"),
        "{}",
        r.stderr
    );
    let r = d.run(&["services", "ls", "--json", "-s", sp]).await;
    assert_eq!(r.stdout.trim(), "[]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_never_reaches_the_daemon() {
    // Nothing listens at the dead URL: each refusal must come from the CLI itself.
    let url = dead_url();
    for args in [
        &["services", "get", "-s", "box", "Bad_Name"][..],
        &["services", "create", "-s", "box", "signal", "--cmd", "x"],
        &[
            "services", "create", "-s", "box", "web", "--cmd", "x", "--dir", "rel",
        ],
        &[
            "services",
            "create",
            "-s",
            "box",
            "web",
            "--cmd",
            "x",
            "--duration",
            "soon",
        ],
        &["services", "signal", "-s", "box", "web", "NOPE"],
        &["services", "stop", "-s", "box", "web", "--timeout", "x"],
    ] {
        let r = common::Wisp::new(&url).args(args).run().await;
        assert_eq!(r.code, 1, "{args:?}: {r:?}");
        assert!(!r.stderr.contains("cannot reach"), "{args:?}: {}", r.stderr);
    }
}

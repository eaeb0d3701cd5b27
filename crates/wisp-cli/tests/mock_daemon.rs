//! Drives the `wisp` binary against the mock daemon in `common`. The real daemon is exercised
//! by separate end-to-end tests.

mod common;

use common::{start, wisp, TOKEN};
use serde_json::Value;
use std::process::Stdio;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_streams_and_exit_code() {
    let (api, mock) = start().await;
    let r = wisp(
        &api,
        &["exec", "-s", "box", "--", "echo", "hello world"],
        None,
    )
    .await;
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (7, "hello world\n", "oops\n")
    );
    let q = mock.exec_queries.lock().unwrap()[0].clone();
    assert_eq!(
        q,
        "cmd=echo&cmd=hello%20world&path=echo&env=LANG%3DC.UTF-8&tty=false&stdin=true"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_pipes_stdin_then_eof() {
    let (api, _) = start().await;
    let data = vec![b'z'; 100_000];
    let r = wisp(&api, &["x", "-s", "box", "cat"], Some(&data)).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout.len(), 100_000);
    assert_eq!(r.stderr, "100000 bytes\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_tty_uses_text_exit() {
    let (api, mock) = start().await;
    let r = wisp(
        &api,
        &[
            "exec",
            "-s",
            "box",
            "-t",
            "--env",
            "LANG=de_DE.UTF-8",
            "--dir",
            "/tmp",
            "tty",
        ],
        Some(b""),
    )
    .await;
    assert_eq!((r.code, r.stdout.as_str()), (3, "raw\r\n"), "{}", r.stderr);
    let q = mock.exec_queries.lock().unwrap()[0].clone();
    assert_eq!(
        q,
        "cmd=tty&path=tty&env=LANG%3Dde_DE.UTF-8&dir=%2Ftmp&tty=true&stdin=true"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_errors() {
    let (api, _) = start().await;
    let r = wisp(&api, &["exec", "-s", "box", "drop"], None).await;
    assert_eq!(r.code, 1);
    assert_eq!(r.stdout, "partial");
    assert!(
        r.stderr
            .starts_with("error: connection to the sprite was lost"),
        "{}",
        r.stderr
    );
    let r = wisp(&api, &["exec", "-s", "nope", "echo"], None).await;
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (1, "error: sprite not found (404)\n")
    );
    let r = wisp(&api, &["exec", "echo"], None).await;
    assert_eq!(
        r.stderr,
        "error: no sprite selected: pass -s NAME or run `wisp use NAME`\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_file_selects_sprite() {
    let (api, _) = start().await;
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("a/b");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(dir.path().join(".wisp-sprite"), r#"{"sprite":"box"}"#).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_wisp"))
        .args(["exec", "--", "echo", "hi"])
        .env_clear()
        .env("HOME", dir.path())
        .env("WISP_API_URL", &api)
        .env("WISP_TOKEN", TOKEN)
        .current_dir(&sub)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(out.stdout, b"hi\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_follows_pages() {
    let (api, _) = start().await;
    let r = wisp(&api, &["ls"], None).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[0].starts_with("NAME") && lines[0].ends_with("CREATED"));
    assert!(lines[1].starts_with("alpha "));
    assert!(lines[2].starts_with("beta-long-name  cold"));
    assert!(lines[2].ends_with("2026-01-31 10:28:13Z"));
    let r = wisp(&api, &["list", "--json"], None).await;
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_info_destroy() {
    let (api, _) = start().await;
    let r = wisp(&api, &["create", "fresh", "--label", "a"], None).await;
    assert_eq!((r.code, r.stdout.as_str()), (0, "fresh\n"), "{}", r.stderr);
    let r = wisp(&api, &["create", "taken"], None).await;
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stderr,
        "error: A sprite named 'taken' already exists. Please choose a different name. (409)\n"
    );
    let r = wisp(&api, &["info", "box"], None).await;
    assert!(r.stdout.starts_with("name:        box\n"), "{}", r.stdout);
    let r = wisp(&api, &["info", "--json", "-s", "box"], None).await;
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["id"], "sprite-box");
    let r = wisp(&api, &["rm", "box"], None).await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("pass --force"), "{}", r.stderr);
    let r = wisp(&api, &["destroy", "--force", "box"], None).await;
    assert_eq!((r.code, r.stdout.as_str()), (0, ""), "{}", r.stderr);
    let r = wisp(&api, &["destroy", "--force", "gone"], None).await;
    assert_eq!(r.stderr, "error: sprite not found (404)\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_and_unreachable() {
    let (api, _) = start().await;
    let r = wisp(&api, &["--token", "wrong", "ls"], None).await;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .starts_with("error: authentication failed (401)\nhint: "),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("WISP_TOKEN"));
    // A port nobody listens on.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    for args in [&["ls"][..], &["exec", "-s", "box", "true"][..]] {
        let r = wisp(&dead, args, None).await;
        assert_eq!(r.code, 1);
        assert!(
            r.stderr
                .starts_with(&format!("error: cannot reach wispd at {dead}: ")),
            "{}",
            r.stderr
        );
        assert!(r.stderr.contains("Is it running? Start it with `wispd`"));
    }
}

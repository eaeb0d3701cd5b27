//! Drives the real `wisp` binary against the real `wispd` (see `common`): exec streams, exit
//! codes and stdin, sprite selection, listing, the lifecycle commands and error messages.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{dead_url, Daemon, Wisp};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_streams_arguments_and_exit_code() {
    let d = Daemon::start();
    d.create("exec-streams").await;
    // Arguments with spaces and URL metacharacters arrive as separate, intact argv entries.
    let script = r#"printf '[%s]' "$@"; echo; echo "LANG=$LANG"; [ -t 0 ] || echo "stdin is no tty"; echo oops >&2; exit 7"#;
    let r = d
        .run(&[
            "exec",
            "-s",
            "exec-streams",
            "--",
            "sh",
            "-c",
            script,
            "sh",
            "hello world",
            "a+b&c=d%20",
            "ünï",
        ])
        .await;
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (
            7,
            "[hello world][a+b&c=d%20][ünï]\nLANG=C.UTF-8\nstdin is no tty\n",
            "oops\n"
        )
    );
    // The alias, a command without `--`, exit 0 and no output.
    let r = d.run(&["x", "-s", "exec-streams", "true"]).await;
    assert_eq!((r.code, r.stdout.as_str(), r.stderr.as_str()), (0, "", ""));
    // --env and --dir reach the command.
    let r = d
        .run(&[
            "exec",
            "-s",
            "exec-streams",
            "--env",
            "GREETING=hi there",
            "--dir",
            "/tmp",
            "--",
            "sh",
            "-c",
            "echo \"$GREETING from $(pwd)\"",
        ])
        .await;
    assert_eq!((r.code, r.stdout.as_str()), (0, "hi there from /tmp\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_pipes_large_stdin_byte_exact_then_eof() {
    let d = Daemon::start();
    d.create("exec-stdin").await;
    // 300 KB of every byte value, in an order that no chunking can line up with.
    let data: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let r = d
        .wisp(&[
            "exec",
            "-s",
            "exec-stdin",
            "--",
            "sh",
            "-c",
            r#"tee /tmp/in; echo "$(wc -c </tmp/in) bytes, then EOF" >&2"#,
        ])
        .stdin(&data)
        .run()
        .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stderr, "300000 bytes, then EOF\n");
    assert!(r.raw_stdout == data, "stdout differs from stdin");
    // An empty stdin is an immediate EOF: `cat` ends instead of waiting.
    let r = d.wisp(&["x", "-s", "exec-stdin", "cat"]).run().await;
    assert_eq!((r.code, r.stdout.as_str(), r.stderr.as_str()), (0, "", ""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_tty_without_a_local_terminal() {
    let d = Daemon::start();
    d.create("exec-tty").await;
    // -t with stdin and stdout piped: a remote PTY (so \r\n), the text exit message's code.
    let r = d
        .wisp(&[
            "exec",
            "-s",
            "exec-tty",
            "-t",
            "--env",
            "LANG=de_DE.UTF-8",
            "--dir",
            "/tmp",
            "--",
            "sh",
            "-c",
            r#"echo "$LANG $(pwd)"; [ -t 0 ] && [ -t 1 ] && echo tty; exit 3"#,
        ])
        .stdin(b"")
        .run()
        .await;
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (3, "de_DE.UTF-8 /tmp\r\ntty\r\n", "")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_errors() {
    let mut d = Daemon::start();
    d.create("exec-errors").await;
    let r = d.run(&["exec", "-s", "no-such-sprite", "true"]).await;
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (1, "error: sprite not found (404)\n")
    );
    let r = d.run(&["exec", "true"]).await;
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (
            1,
            "error: no sprite selected: pass -s NAME or run `wisp use NAME`\n"
        )
    );

    // wispd dies in the middle of a command: what came so far, then the error.
    let mut w = d
        .wisp(&[
            "exec",
            "-s",
            "exec-errors",
            "--",
            "sh",
            "-c",
            "printf partial; sleep 60",
        ])
        .spawn();
    let mut out = Vec::new();
    w.read_until(&mut out, b"partial").await;
    d.kill9();
    let r = w.finish().await;
    assert_eq!((r.code, r.stdout.as_str()), (1, ""), "{}", r.stderr);
    assert_eq!(out, b"partial");
    assert!(
        r.stderr
            .starts_with("error: connection to the sprite was lost"),
        "{}",
        r.stderr
    );

    // The sprite outlived its daemon.
    d.restart();
    let r = d
        .run(&["exec", "-s", "exec-errors", "--", "echo", "still here"])
        .await;
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "still here\n"),
        "{}",
        r.stderr
    );
}

/// wispd crashes while it creates a sprite; once it is back, `wisp create` of the same name
/// works. wispd rolls the interrupted create back at start-up, and it must have finished
/// that before it serves: it once served at once and rolled back in the background, so that
/// the retry got 409 "already exists" (and a create arriving before the roll-back read the
/// journal answered 201, then was rolled back itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_interrupted_by_a_crash_can_be_retried() {
    // A keeper that never gets ready holds the create in the middle.
    let bin = tempfile::tempdir().unwrap();
    let hanging_keeper = bin.path().join("hanging-keeper");
    std::fs::write(&hanging_keeper, "#!/bin/sh\nwhile :; do sleep 0.1; done\n").unwrap();
    std::fs::set_permissions(&hanging_keeper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut d = Daemon::start_with_keeper(&hanging_keeper);
    let create = d.wisp(&["create", "half-made"]).spawn();
    let id = loop {
        let (status, body) = d
            .api(reqwest::Method::GET, "/v1/sprites/half-made", None)
            .await;
        if status == 200 {
            break body["id"].as_str().unwrap().to_string();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let old_url = d.url.clone();
    d.kill9();
    let r = create.finish().await;
    assert_eq!((r.code, r.stdout.as_str()), (1, ""), "{}", r.stderr);
    assert!(
        r.stderr
            .starts_with(&format!("error: request to wispd at {old_url} failed: ")),
        "{}",
        r.stderr
    );
    for pid in d.keeper_pids() {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }

    // The roll-back asks the sprite's keeper socket to shut down: this one takes the
    // connection and answers nothing for a second, which makes the roll-back last that long.
    let sock = d.data_dir().join("run").join(format!("{id}.sock"));
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        drop(listener);
        let _ = std::fs::remove_file(&sock);
    });
    d.restart();
    let info = d.run(&["info", "half-made"]).await;
    let retry = d.run(&["create", "half-made"]).await;
    release.join().unwrap();
    assert_eq!(
        (info.code, info.stderr.as_str()),
        (1, "error: sprite not found (404)\n")
    );
    assert_eq!(
        (retry.code, retry.stdout.as_str()),
        (0, "half-made\n"),
        "{}",
        retry.stderr
    );
    let r = d.run(&["exec", "-s", "half-made", "--", "hostname"]).await;
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "half-made\n"),
        "{}",
        r.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selection_file_and_wisp_use() {
    let d = Daemon::start();
    d.create_all(&["sel-outer".into(), "sel-inner".into(), "sel-flag".into()])
        .await;
    let project = tempfile::tempdir().unwrap();
    let inner = project.path().join("a");
    let deep = inner.join("b/c");
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(
        project.path().join(".wisp-sprite"),
        r#"{"sprite":"sel-outer"}"#,
    )
    .unwrap();
    // The hostname of a sprite is its name: it shows which sprite ran the command.
    let hostname = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["exec", "--", "hostname"]);
        d.wisp(&all).cwd(&deep)
    };

    let r = hostname(&[]).run().await;
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "sel-outer\n"),
        "{}",
        r.stderr
    );
    let r = hostname(&["-s", "sel-flag"]).run().await;
    assert_eq!(r.stdout, "sel-flag\n", "{}", r.stderr);
    let r = hostname(&[]).env("WISP_SPRITE", "sel-flag").run().await;
    assert_eq!(r.stdout, "sel-flag\n", "{}", r.stderr);

    // `wisp use NAME` writes the nearer file.
    let r = d.wisp(&["use", "sel-inner"]).cwd(&inner).run().await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stderr,
        format!("using sprite sel-inner in {}\n", inner.display())
    );
    assert_eq!(
        std::fs::read_to_string(inner.join(".wisp-sprite")).unwrap(),
        "{\"sprite\":\"sel-inner\"}\n"
    );
    let r = hostname(&[]).run().await;
    assert_eq!(r.stdout, "sel-inner\n", "{}", r.stderr);
    let r = d.wisp(&["use"]).cwd(&deep).run().await;
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr),
        (
            0,
            "sel-inner\n",
            format!("(from {})\n", inner.join(".wisp-sprite").display())
        )
    );
    let r = d.wisp(&["info"]).cwd(&deep).run().await;
    assert!(r.stdout.starts_with("name:        sel-inner\n"), "{r:?}");

    let r = d.wisp(&["use", "--unset"]).cwd(&inner).run().await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!inner.join(".wisp-sprite").exists());
    let r = hostname(&[]).run().await;
    assert_eq!(r.stdout, "sel-outer\n", "{}", r.stderr);

    let r = d.wisp(&["use", "Not/A-Name"]).cwd(&inner).run().await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.starts_with("error: invalid sprite name"), "{r:?}");
    assert!(!inner.join(".wisp-sprite").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_follows_pages() {
    let d = Daemon::start();
    // One more than wispd's page size (50): the CLI must follow the continuation token.
    let paged: Vec<String> = (0..51).map(|i| format!("page-{i:02}")).collect();
    d.create_all(&paged).await;
    d.create("other").await;
    let port = d.url.rsplit(':').next().unwrap().to_string();

    let r = d.run(&["list", "--json"]).await;
    let all: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 52);
    // `2026-01-31T10:28:13.366126Z` is shown as `2026-01-31 10:28:13Z`.
    let created = |name: &str| {
        let s = all
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap();
        let t = s["created_at"].as_str().unwrap();
        assert!(t.ends_with('Z'), "{t}");
        format!("{} {}Z", &t[..10], &t[11..19])
    };

    let r = d.run(&["ls"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 53, "{}", r.stdout);
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header, ["NAME", "STATUS", "URL", "CREATED"]);
    let mut names = Vec::new();
    for line in &lines[1..] {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols.len(), 5, "{line}");
        let name = cols[0];
        assert_eq!(cols[1], "running", "{line}");
        assert_eq!(cols[2], format!("http://{name}.localhost:{port}"), "{line}");
        assert_eq!(format!("{} {}", cols[3], cols[4]), created(name), "{line}");
        names.push(name.to_string());
    }
    let mut expected = paged.clone();
    expected.insert(0, "other".into());
    assert_eq!(names, expected);

    // The prefix is sent with every page.
    let r = d.run(&["list", "--json", "--prefix", "page-"]).await;
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, paged);

    let r = d.run(&["ls", "--prefix", "nothing-"]).await;
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (0, "", "no sprites\n")
    );
    let r = d.run(&["ls", "--json", "--prefix", "nothing-"]).await;
    assert_eq!((r.code, r.stdout.as_str()), (0, "[]\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_info_destroy() {
    let d = Daemon::start();
    let r = d
        .run(&["create", "fresh", "--label", "a", "--label", "b"])
        .await;
    assert_eq!((r.code, r.stdout.as_str()), (0, "fresh\n"), "{}", r.stderr);
    let r = d.run(&["create", "fresh"]).await;
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (
            1,
            "error: A sprite named 'fresh' already exists. Please choose a different name. (409)\n"
        )
    );
    let r = d.run(&["create", "Not_Valid"]).await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.starts_with("error: invalid sprite name"), "{r:?}");

    let r = d.run(&["info", "fresh"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let rows: Vec<(&str, &str)> = r
        .stdout
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k, v.trim())
        })
        .collect();
    let keys: Vec<&str> = rows.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        keys,
        [
            "name",
            "id",
            "status",
            "url",
            "url auth",
            "labels",
            "created",
            "updated",
            "last active"
        ]
    );
    assert!(r
        .stdout
        .starts_with("name:        fresh\nid:          sprite-"));
    assert!(
        r.stdout.contains("\nstatus:      running\n"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("\nurl auth:    sprite\n"), "{}", r.stdout);
    assert!(r.stdout.contains("\nlabels:      a, b\n"), "{}", r.stdout);

    let r = d.run(&["info", "--json", "-s", "fresh"]).await;
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["name"], "fresh");
    assert_eq!(v["labels"], serde_json::json!(["a", "b"]));
    assert!(v["id"].as_str().unwrap().starts_with("sprite-"));

    let r = d.run(&["rm", "fresh"]).await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("pass --force"), "{}", r.stderr);
    let (status, _) = d.api(reqwest::Method::GET, "/v1/sprites/fresh", None).await;
    assert_eq!(status, 200, "refused destroy destroyed it anyway");

    let r = d.run(&["destroy", "--force", "fresh"]).await;
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (0, "", "destroyed sprite fresh\n")
    );
    let (status, _) = d.api(reqwest::Method::GET, "/v1/sprites/fresh", None).await;
    assert_eq!(status, 404);
    let r = d.run(&["info", "fresh"]).await;
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (1, "error: sprite not found (404)\n")
    );
    let r = d.run(&["destroy", "--force", "fresh"]).await;
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (1, "error: sprite not found (404)\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleep_warm_and_cold_then_exec_wakes() {
    let d = Daemon::start();
    d.create("dozy").await;
    let status = |r: &common::Run| {
        r.stdout
            .lines()
            .find_map(|l| l.strip_prefix("status:").map(|v| v.trim().to_string()))
            .unwrap_or_default()
    };
    let r = d
        .run(&["exec", "-s", "dozy", "--", "sh", "-c", "echo hi > /tmp/f"])
        .await;
    assert_eq!(r.code, 0, "{}", r.stderr);

    let r = d.run(&["sleep", "dozy"]).await;
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (0, "", "sprite dozy is warm\n")
    );
    assert_eq!(status(&d.run(&["info", "dozy"]).await), "warm");
    let r = d.run(&["ls"]).await;
    assert!(r.stdout.contains("warm"), "{}", r.stdout);
    let r = d.run(&["exec", "-s", "dozy", "cat", "/tmp/f"]).await;
    assert_eq!((r.code, r.stdout.as_str()), (0, "hi\n"), "{}", r.stderr);
    assert_eq!(status(&d.run(&["info", "dozy"]).await), "running");

    let r = d.run(&["sleep", "--cold", "-s", "dozy"]).await;
    assert_eq!((r.code, r.stderr.as_str()), (0, "sprite dozy is cold\n"));
    assert_eq!(status(&d.run(&["info", "dozy"]).await), "cold");
    assert!(d.keeper_pids().is_empty());
    let r = d.run(&["exec", "-s", "dozy", "cat", "/tmp/f"]).await;
    assert_eq!((r.code, r.stdout.as_str()), (0, "hi\n"), "{}", r.stderr);
    assert_eq!(status(&d.run(&["info", "dozy"]).await), "running");

    let r = d.run(&["sleep", "nobody"]).await;
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (1, "error: sprite not found (404)\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_authentication_errors() {
    let d = Daemon::start();
    d.create("auth-box").await;
    let refused = |r: &common::Run, source: &str| {
        assert_eq!(r.code, 1);
        assert!(
            r.stderr.starts_with(&format!(
                "error: authentication failed (401)\nhint: {source}: set WISP_TOKEN"
            )),
            "{}",
            r.stderr
        );
    };
    let r = d.run(&["--token", "wrong", "ls"]).await;
    refused(&r, "the --token value was refused");
    // The exec WebSocket handshake reports it the same way.
    let r = d
        .run(&["--token", "wrong", "exec", "-s", "auth-box", "true"])
        .await;
    refused(&r, "the --token value was refused");
    let r = Wisp::new(&d.url)
        .env("WISP_TOKEN", "wrong")
        .args(&["ls"])
        .run()
        .await;
    refused(&r, "the WISP_TOKEN value was refused");
    let empty = tempfile::tempdir().unwrap();
    let r = Wisp::new(&d.url)
        .env("WISP_DATA_DIR", empty.path())
        .args(&["ls"])
        .run()
        .await;
    refused(&r, "no token was sent");

    // `wisp login` stores URL and token; later commands need neither flag nor variable.
    let home = tempfile::tempdir().unwrap();
    let r = Wisp::new(&d.url)
        .env("HOME", home.path())
        .args(&["login", "--api-url", &d.url, "--token", &d.token])
        .run()
        .await;
    let config = home.path().join(".config/wisp/config.json");
    assert_eq!(
        (r.code, r.stderr),
        (0, format!("saved to {}\n", config.display()))
    );
    let r = Wisp::new(&d.url)
        .env_remove("WISP_API_URL")
        .env("HOME", home.path())
        .args(&["exec", "-s", "auth-box", "--", "echo", "via config file"])
        .run()
        .await;
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "via config file\n"),
        "{}",
        r.stderr
    );

    // A local daemon's admin-token file, found through WISP_DATA_DIR.
    let r = Wisp::new(&d.url)
        .env("WISP_DATA_DIR", d.data_dir())
        .args(&["exec", "-s", "auth-box", "--", "echo", "via admin-token"])
        .run()
        .await;
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "via admin-token\n"),
        "{}",
        r.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_daemon() {
    let dead = dead_url();
    for args in [&["ls"][..], &["exec", "-s", "box", "true"][..]] {
        let r = Wisp::new(&dead)
            .env("WISP_TOKEN", "t")
            .args(args)
            .run()
            .await;
        assert_eq!(r.code, 1);
        assert!(
            r.stderr
                .starts_with(&format!("error: cannot reach wispd at {dead}: ")),
            "{}",
            r.stderr
        );
        assert!(
            r.stderr
                .ends_with("Is it running? Start it with `wispd` (see README)\n"),
            "{}",
            r.stderr
        );
    }
}

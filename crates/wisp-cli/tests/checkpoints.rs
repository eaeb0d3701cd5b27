//! Drives `wisp checkpoint …`, `wisp restore` and `wisp fork` against the real `wispd` (see
//! `common`): a checkpoint keeps a sprite's files, restore brings them back, the current
//! checkpoint cannot be deleted, a fork starts from a checkpoint, and bad ids never reach the
//! daemon.

mod common;

use common::{dead_url, Daemon, Run, Wisp};
use serde_json::Value;

const FILE: &str = "/home/sprite/data.txt";

/// Writes `text` to [`FILE`] in `sprite`.
async fn write(d: &Daemon, sprite: &str, text: &str) {
    let r = d
        .run(&[
            "exec",
            "-s",
            sprite,
            "--",
            "sh",
            "-c",
            &format!("echo {text} > {FILE}"),
        ])
        .await;
    assert_eq!(r.code, 0, "writing in {sprite}: {}", r.stderr);
}

/// `cat FILE` in `sprite`.
async fn read(d: &Daemon, sprite: &str) -> Run {
    d.run(&["exec", "-s", sprite, "--", "cat", FILE]).await
}

/// `wisp checkpoint create`; returns the new id, which is all it prints on stdout.
async fn checkpoint(d: &Daemon, sprite: &str, comment: Option<&str>) -> String {
    let mut args = vec!["checkpoint", "create", "-s", sprite];
    if let Some(c) = comment {
        args.extend(["--comment", c]);
    }
    let r = d.run(&args).await;
    assert_eq!(r.code, 0, "{r:?}\n{}", d.log());
    let id = r.stdout.trim_end_matches('\n').to_string();
    assert!(
        wisp_api::checkpoint::is_valid_checkpoint_id(&id) && id != "v0",
        "stdout is not a new checkpoint id: {r:?}"
    );
    // Without a terminal the progress lines stream to stderr, the last one being the
    // `complete` line.
    assert!(
        r.stderr.starts_with("Creating checkpoint...\n"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .ends_with(&format!("\nCheckpoint {id} created successfully\n")),
        "{}",
        r.stderr
    );
    id
}

/// The ids of `wisp checkpoint list --json`, in order.
async fn ids(d: &Daemon, sprite: &str) -> Vec<String> {
    let r = d.run(&["checkpoint", "list", "--json", "-s", sprite]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).expect("a JSON array");
    v.as_array()
        .expect("an array")
        .iter()
        .map(|c| c["id"].as_str().expect("an id").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_list_restore_delete() {
    let d = Daemon::start();
    d.create("ck-box").await;
    write(&d, "ck-box", "one").await;
    let first = checkpoint(&d, "ck-box", Some("first save")).await;
    write(&d, "ck-box", "two").await;
    let second = checkpoint(&d, "ck-box", None).await;
    assert_ne!(first, second);
    write(&d, "ck-box", "three").await;

    // Newest first, the live state on top; the sprite comes from .wisp-sprite here.
    let project = tempfile::tempdir().unwrap();
    std::fs::write(
        project.path().join(".wisp-sprite"),
        r#"{"sprite":"ck-box"}"#,
    )
    .unwrap();
    let r = d
        .wisp(&["checkpoint", "ls"])
        .cwd(project.path())
        .run()
        .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header, ["ID", "CREATED", "COMMENT"], "{}", r.stdout);
    let first_col: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        first_col,
        ["Current", second.as_str(), first.as_str(), "v0"],
        "{}",
        r.stdout
    );
    assert!(lines[1].contains("(live state"), "{}", r.stdout);
    assert!(lines[3].ends_with("  first save"), "{}", r.stdout);
    assert_eq!(
        ids(&d, "ck-box").await,
        ["Current", second.as_str(), first.as_str(), "v0"]
    );
    let r = d
        .run(&["checkpoints", "list", "--json", "-s", "ck-box"])
        .await;
    let list: Value = serde_json::from_str(&r.stdout).unwrap();
    let entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == first.as_str())
        .unwrap();
    assert_eq!(entry["comment"], "first save");

    let r = d.run(&["checkpoint", "info", "-s", "ck-box", &first]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .starts_with(&format!("id:        {first}\ncreated:   ")),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("\ncomment:   first save\n"),
        "{}",
        r.stdout
    );
    let r = d
        .run(&["checkpoint", "info", "--json", "-s", "ck-box", &first])
        .await;
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        (v["id"].as_str(), v["comment"].as_str()),
        (Some(first.as_str()), Some("first save"))
    );

    // Restore brings the first checkpoint's file back.
    let r = d.run(&["restore", "-s", "ck-box", &first]).await;
    assert_eq!((r.code, r.stdout.as_str()), (0, ""), "{r:?}\n{}", d.log());
    assert!(
        r.stderr
            .starts_with(&format!("Restoring from checkpoint {first}...\n")),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .ends_with(&format!("\nRestore from {first} complete\n")),
        "{}",
        r.stderr
    );
    let r = read(&d, "ck-box").await;
    assert_eq!((r.code, r.stdout.as_str()), (0, "one\n"), "{}", r.stderr);
    // `wisp checkpoint restore` is the same command.
    let r = d
        .wisp(&["checkpoint", "restore", &second])
        .cwd(project.path())
        .run()
        .await;
    assert_eq!(r.code, 0, "{r:?}");
    let r = read(&d, "ck-box").await;
    assert_eq!((r.code, r.stdout.as_str()), (0, "two\n"), "{}", r.stderr);
    let r = d.run(&["restore", "-s", "ck-box", &first]).await;
    assert_eq!(r.code, 0, "{r:?}");

    // The checkpoint the files now descend from cannot go; another one can.
    let r = d
        .run(&["checkpoint", "delete", "-s", "ck-box", &first])
        .await;
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr),
        (
            1,
            "",
            format!(
                "error: {first} is the current checkpoint of sprite ck-box (its files descend \
                 from it); restore another checkpoint first\n"
            )
        )
    );
    let r = d.run(&["checkpoint", "rm", "-s", "ck-box", &second]).await;
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr),
        (
            0,
            "",
            format!("deleted checkpoint {second} of sprite ck-box\n")
        )
    );
    assert_eq!(ids(&d, "ck-box").await, ["Current", first.as_str(), "v0"]);
    let r = read(&d, "ck-box").await;
    assert_eq!(r.stdout, "one\n", "{}", r.stderr);

    // An id that does not (or no longer) exist.
    let gone = format!(
        "error: no checkpoint {second} in sprite ck-box; see `wisp checkpoint list -s ck-box`\n"
    );
    for args in [
        &["checkpoint", "info", "-s", "ck-box", &second][..],
        &["checkpoint", "delete", "-s", "ck-box", &second][..],
        &["restore", "-s", "ck-box", &second][..],
    ] {
        let r = d.run(args).await;
        assert_eq!((r.code, r.stderr.as_str()), (1, gone.as_str()), "{args:?}");
    }
    // An unknown sprite is reported as such.
    for args in [
        &["checkpoint", "ls", "-s", "nobody"][..],
        &["checkpoint", "create", "-s", "nobody"][..],
        &["checkpoint", "info", "-s", "nobody", "v0"][..],
        &["restore", "-s", "nobody", "v0"][..],
    ] {
        let r = d.run(args).await;
        assert_eq!(
            (r.code, r.stderr.as_str()),
            (1, "error: sprite not found (404)\n"),
            "{args:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_from_latest_and_named_checkpoints() {
    let d = Daemon::start();
    d.create("fk-src").await;
    write(&d, "fk-src", "saved").await;
    let id = checkpoint(&d, "fk-src", Some("for forks")).await;
    // Written after the last checkpoint: no fork sees it.
    write(&d, "fk-src", "unsaved").await;

    let r = d.run(&["fork", "fk-src", "fk-latest"]).await;
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "fk-latest\n"),
        "{r:?}\n{}",
        d.log()
    );
    let r = read(&d, "fk-latest").await;
    assert_eq!((r.code, r.stdout.as_str()), (0, "saved\n"), "{}", r.stderr);
    let r = d.run(&["exec", "-s", "fk-latest", "--", "hostname"]).await;
    assert_eq!(r.stdout, "fk-latest\n", "{}", r.stderr);

    let r = d
        .run(&[
            "fork",
            &format!("fk-src@{id}"),
            "fk-named",
            "--label",
            "forked",
        ])
        .await;
    assert_eq!((r.code, r.stdout.as_str()), (0, "fk-named\n"), "{r:?}");
    let r = read(&d, "fk-named").await;
    assert_eq!((r.code, r.stdout.as_str()), (0, "saved\n"), "{}", r.stderr);
    let r = d.run(&["info", "--json", "fk-named"]).await;
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["labels"], serde_json::json!(["forked"]));

    // v0 is the state right after create: no file.
    let r = d.run(&["fork", "fk-src@v0", "fk-zero"]).await;
    assert_eq!((r.code, r.stdout.as_str()), (0, "fk-zero\n"), "{r:?}");
    let r = read(&d, "fk-zero").await;
    assert_eq!((r.code, r.stdout.as_str()), (1, ""), "{r:?}");

    // The forks are sprites of their own: writing in one changes neither the source nor
    // another fork.
    write(&d, "fk-latest", "changed").await;
    assert_eq!(read(&d, "fk-named").await.stdout, "saved\n");
    assert_eq!(read(&d, "fk-src").await.stdout, "unsaved\n");

    let r = d.run(&["fork", "fk-src@v9", "fk-none"]).await;
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (
            1,
            "error: no checkpoint v9 in sprite fk-src; see `wisp checkpoint list -s fk-src`\n"
        )
    );
    let r = d.run(&["fork", "nobody", "fk-none"]).await;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.starts_with("error: no sprite nobody to fork"),
        "{}",
        r.stderr
    );
    let r = d.run(&["fork", "fk-src", "fk-named"]).await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("already exists"), "{}", r.stderr);
    let (status, _) = d
        .api(reqwest::Method::GET, "/v1/sprites/fk-none", None)
        .await;
    assert_eq!(status, 404, "a refused fork left a sprite behind");
}

/// Bad ids are refused before any request: the daemon's URL is dead, so a request would fail
/// with "cannot reach wispd".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ids_are_refused_client_side() {
    let dead = dead_url();
    let run = |args: &[&str]| Wisp::new(&dead).env("WISP_TOKEN", "t").args(args).run();
    for args in [
        &["checkpoint", "info", "-s", "box", "v01"][..],
        &["checkpoint", "delete", "-s", "box", "../v1"][..],
        &["checkpoint", "rm", "-s", "box", "v1/restore"][..],
        &["restore", "-s", "box", "V1"][..],
        &["checkpoint", "restore", "-s", "box", "latest"][..],
        &["fork", "box@", "new"][..],
        &["fork", "box@v1@v2", "new"][..],
    ] {
        let r = run(args).await;
        assert_eq!(r.code, 1, "{args:?}");
        assert!(
            r.stderr.starts_with("error: invalid checkpoint id "),
            "{args:?}: {}",
            r.stderr
        );
    }
    let r = run(&["restore", "-s", "box", "Current"]).await;
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (
            1,
            "error: \"Current\" is the sprite's live state, not a stored checkpoint: pass an id \
             like v1 (see `wisp checkpoint list`)\n"
        )
    );
    for args in [
        &["fork", "Bad_Name@v1", "new"][..],
        &["fork", "box", "New"][..],
        &["checkpoint", "ls", "-s", "a/b"][..],
    ] {
        let r = run(args).await;
        assert_eq!(r.code, 1, "{args:?}");
        assert!(
            r.stderr.starts_with("error: invalid sprite name"),
            "{args:?}: {}",
            r.stderr
        );
    }
    let long = "x".repeat(wisp_api::checkpoint::MAX_COMMENT_BYTES + 1);
    let r = run(&["checkpoint", "create", "-s", "box", "--comment", &long]).await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("at most 1024"), "{}", r.stderr);
    // Nothing selected: the same message as every other command.
    let r = run(&["checkpoint", "create"]).await;
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (
            1,
            "error: no sprite selected: pass -s NAME or run `wisp use NAME`\n"
        )
    );
    // And a valid request to a dead daemon does try it.
    let r = run(&["checkpoint", "info", "-s", "box", "v1"]).await;
    assert!(
        r.stderr
            .starts_with(&format!("error: cannot reach wispd at {dead}: ")),
        "{}",
        r.stderr
    );
}

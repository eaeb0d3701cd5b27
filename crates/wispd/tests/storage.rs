//! Durable disks, checkpoints, restore and fork on the real storage pool (btrfs on a loop
//! file), with real sprites.

mod common;

use common::{real_options, KeeperCleanup, TestDaemon};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn post_ndjson(d: &TestDaemon, path: &str, body: Value) -> (StatusCode, Vec<Value>) {
    d.ndjson(Method::POST, path, Some(body)).await
}

/// Takes a checkpoint and returns its id (from the `complete` line's text).
async fn checkpoint(d: &TestDaemon, sprite: &str, comment: &str) -> String {
    let (status, lines) = post_ndjson(
        d,
        &format!("/v1/sprites/{sprite}/checkpoint"),
        json!({ "comment": comment }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{lines:?}\n{}", d.log());
    let last = lines.last().unwrap();
    assert_eq!(last["type"], "complete", "{lines:?}");
    let data = last["data"].as_str().unwrap();
    let id = data
        .strip_prefix("Checkpoint ")
        .and_then(|r| r.strip_suffix(" created successfully"))
        .unwrap_or_else(|| panic!("{data}"))
        .to_string();
    assert_eq!(last["id"], id.as_str());
    assert!(lines.iter().any(|l| l["data"] == "Creating checkpoint..."));
    id
}

async fn restore(d: &TestDaemon, sprite: &str, id: &str) {
    let (status, lines) = post_ndjson(
        d,
        &format!("/v1/sprites/{sprite}/checkpoints/{id}/restore"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{lines:?}\n{}", d.log());
    assert_eq!(
        lines[0]["data"],
        format!("Restoring from checkpoint {id}...")
    );
    let last = lines.last().unwrap();
    assert_eq!(last["type"], "complete");
    assert_eq!(last["data"], format!("Restore from {id} complete"));
}

async fn list(d: &TestDaemon, sprite: &str, query: &str) -> Vec<String> {
    let (status, body) = d
        .get_json(&format!("/v1/sprites/{sprite}/checkpoints{query}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body.as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert!(c["history"].is_array(), "{c}");
            c["id"].as_str().unwrap().to_string()
        })
        .collect()
}

/// A tree of ~300 files of random sizes under ~/data, plus its checksum manifest.
const MAKE_TREE: &str = "mkdir -p ~/data && cd ~/data && for d in $(seq 1 15); do mkdir -p d$d; \
    for f in $(seq 1 20); do head -c $(( (d * 997 + f * 131) % 20000 + 1 )) /dev/urandom > d$d/f$f; \
    done; done; ln -s d1/f1 link; chmod 0600 d2/f2";
const MANIFEST: &str = "cd ~/data && find . -printf '%p %y %m %s\\n' | sort && \
    find . -type f -print0 | sort -z | xargs -0 sha256sum";

#[tokio::test]
async fn checkpoint_change_restore_gives_the_exact_data_back() {
    let d = TestDaemon::start_real();
    d.create("ck").await;
    d.sh("ck", MAKE_TREE).await;
    let before = d.sh("ck", MANIFEST).await;
    assert!(before.lines().count() > 600, "{before}");

    // v0 exists from creation; the new one is v1, and Current sits on top.
    let v1 = checkpoint(&d, "ck", "the tree").await;
    assert_eq!(v1, "v1");
    assert_eq!(list(&d, "ck", "").await, ["Current", "v1", "v0"]);
    let (status, one) = d.get_json("/v1/sprites/ck/checkpoints/v1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["comment"], "the tree");
    assert_eq!(one["source_id"], "v0");
    assert_eq!(one["history"], json!(["v0"]));

    // Change, add and delete, including as root outside the home.
    d.sh(
        "ck",
        "cd ~/data && rm -rf d3 d4/f1 link && echo new > d5/f5 && echo extra > added && \
         chmod 0777 d2/f2 && sudo sh -c 'echo x > /etc/added-by-test'",
    )
    .await;
    assert_ne!(d.sh("ck", MANIFEST).await, before);

    // A session open during the restore ends with it.
    restore(&d, "ck", "v1").await;
    assert_eq!(d.sh("ck", MANIFEST).await, before);
    let e = d.exec("ck", &["test", "-e", "/etc/added-by-test"]).await;
    assert_eq!(e.code, Some(1), "{e:?}");

    // The restore saved the state before it as a hidden automatic checkpoint.
    assert_eq!(list(&d, "ck", "").await, ["Current", "v1", "v0"]);
    let all = list(&d, "ck", "?includeAuto=true").await;
    assert_eq!(all.len(), 4, "{all:?}");
    let auto = all.iter().find(|i| i.starts_with("auto-")).unwrap().clone();
    // ... and restoring it undoes the restore.
    restore(&d, "ck", &auto).await;
    assert_eq!(d.sh("ck", "cat ~/data/added").await, "extra\n");
    restore(&d, "ck", "v1").await;

    // Deleting: the current one is refused, others go; unknown and malformed are 404.
    for (id, want) in [
        ("v1", StatusCode::CONFLICT),
        ("Current", StatusCode::CONFLICT),
        ("v0", StatusCode::NO_CONTENT),
        ("v0", StatusCode::NOT_FOUND),
        ("v77", StatusCode::NOT_FOUND),
        ("..", StatusCode::NOT_FOUND),
        ("v1%2F..", StatusCode::NOT_FOUND),
    ] {
        let (status, body) = d
            .call(
                Method::DELETE,
                &format!("/v1/sprites/ck/checkpoints/{id}"),
                None,
            )
            .await;
        assert_eq!(status, want, "{id}: {body}");
        if status != StatusCode::NO_CONTENT {
            assert!(body["error"].is_string(), "{body}");
        }
    }
    let (status, _) = post_ndjson(&d, "/v1/sprites/ck/checkpoints/v0/restore", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Ids are never reused.
    assert_eq!(checkpoint(&d, "ck", "").await, "v2");
    d.delete("ck").await;
}

#[tokio::test]
async fn the_latest_five_checkpoints_are_readable_inside() {
    let d = TestDaemon::start_real();
    d.create("views").await;
    for i in 1..=6 {
        d.sh("views", &format!("echo {i} > ~/n")).await;
        if i == 4 {
            d.sh("views", "umask 077; echo private > ~/secret").await;
        }
        checkpoint(&d, "views", "").await;
    }
    let ls = d.sh("views", "ls /.sprite/checkpoints").await;
    assert_eq!(ls, "v2\nv3\nv4\nv5\nv6\n");
    // Each view is the whole filesystem as it was: the file, and the base image under it.
    assert_eq!(
        d.sh("views", "cat /.sprite/checkpoints/v4/home/sprite/n")
            .await,
        "4\n"
    );
    d.sh("views", "test -x /.sprite/checkpoints/v4/bin/sh")
        .await;
    // Owners are the sprite's own (the layers are id-mapped like its root): the sprite user
    // reads its private file, and root's files belong to root.
    assert_eq!(
        d.sh(
            "views",
            "cat /.sprite/checkpoints/v4/home/sprite/secret; \
             stat -c '%U %a' /.sprite/checkpoints/v4/home/sprite/secret \
             /.sprite/checkpoints/v4/etc/passwd"
        )
        .await,
        "private\nsprite 600\nroot 644\n"
    );
    // Read-only, for the sprite user and for root.
    let e = d
        .exec(
            "views",
            &[
                "sh",
                "-c",
                "sudo touch /.sprite/checkpoints/v4/x || sudo mkdir /.sprite/checkpoints/v9",
            ],
        )
        .await;
    assert_ne!(e.code, Some(0), "{e:?}");
    // A delete disappears from inside; a cold start brings the views back.
    let (status, _) = d
        .call(Method::DELETE, "/v1/sprites/views/checkpoints/v3", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        d.sh("views", "ls /.sprite/checkpoints").await,
        "v1\nv2\nv4\nv5\nv6\n"
    );
    let (status, _) = d
        .call(Method::POST, "/v1/sprites/views/sleep?mode=cold", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        d.sh("views", "ls /.sprite/checkpoints").await,
        "v1\nv2\nv4\nv5\nv6\n"
    );
    d.delete("views").await;
    // Nothing of the views stays mounted on the host.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dir = d.data_dir.canonicalize().unwrap();
    let left: Vec<&str> = mounts
        .lines()
        .filter(|l| {
            l.contains(&*dir.to_string_lossy())
                && !l.contains("/pool ")
                && !l.contains("/run/netns")
        })
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn forks_share_nothing_after_the_fork() {
    let d = TestDaemon::start_real();
    d.create("src").await;
    d.sh("src", "echo one > ~/f").await;
    let v1 = checkpoint(&d, "src", "").await;
    d.sh("src", "echo two > ~/f").await;
    checkpoint(&d, "src", "").await;

    // From a named checkpoint, and from the latest.
    let (status, body) = d
        .call(
            Method::POST,
            "/v1/sprites",
            Some(json!({"name": "fork1", "from": {"sprite": "src", "checkpoint": v1}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = d
        .call(
            Method::POST,
            "/v1/sprites",
            Some(json!({"name": "fork2", "from": {"sprite": "src"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(d.sh("fork1", "cat ~/f").await, "one\n");
    assert_eq!(d.sh("fork2", "cat ~/f").await, "two\n");
    // The fork's v0 is its starting point.
    let (_, v0) = d.get_json("/v1/sprites/fork1/checkpoints/v0").await;
    assert_eq!(v0["comment"], "forked from src@v1");

    // Independent both ways.
    d.sh("fork1", "echo mine > ~/f && echo new > ~/g").await;
    d.sh("src", "echo three > ~/f && rm -f ~/g").await;
    assert_eq!(d.sh("fork1", "cat ~/f ~/g").await, "mine\nnew\n");
    assert_eq!(d.sh("src", "cat ~/f; ls ~").await, "three\nf\n");
    assert_eq!(d.sh("fork2", "cat ~/f").await, "two\n");
    // Destroying the source leaves the forks whole.
    d.delete("src").await;
    assert_eq!(d.sh("fork2", "cat ~/f").await, "two\n");

    // Bad sources.
    for (from, want) in [
        (json!({"sprite": "nope"}), StatusCode::NOT_FOUND),
        (
            json!({"sprite": "fork1", "checkpoint": "v9"}),
            StatusCode::NOT_FOUND,
        ),
        (
            json!({"sprite": "fork1", "checkpoint": "../x"}),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (status, body) = d
            .call(
                Method::POST,
                "/v1/sprites",
                Some(json!({"name": "bad-fork", "from": from})),
            )
            .await;
        assert_eq!(status, want, "{body}");
    }
    // A failed fork leaves the name free.
    assert_eq!(
        d.get_json("/v1/sprites/bad-fork").await.0,
        StatusCode::NOT_FOUND
    );
    d.delete("fork1").await;
    d.delete("fork2").await;
}

#[tokio::test]
async fn the_disk_quota_stops_one_sprite_only() {
    let d = TestDaemon::start_real_args(&["--default-disk-mb", "64"]);
    d.create("small").await;
    d.create("other").await;
    let e = d
        .exec(
            "small",
            &[
                "sh",
                "-c",
                "dd if=/dev/zero of=$HOME/big bs=1M count=200 conv=fsync 2>&1; sync",
            ],
        )
        .await;
    let out = e.stdout_str();
    assert!(
        out.contains("Disk quota exceeded") || out.contains("No space left"),
        "{out}"
    );
    // The other sprite can still write; the full one can again after deleting.
    d.sh("other", "head -c 10000000 /dev/zero > ~/ten && sync")
        .await;
    d.sh("small", "rm ~/big && sync && echo ok > ~/after").await;
    // `df` inside shows a real size (the pool's), not the host disk's.
    let df = d.sh("small", "df -B1 --output=size / | tail -1").await;
    let size: u64 = df.trim().parse().unwrap();
    assert!(size > 0, "{df}");
    d.delete("small").await;
    d.delete("other").await;
}

#[tokio::test]
async fn sqlite_wal_survives_checkpoint_and_restore_with_a_writer_running() {
    let d = TestDaemon::start_real();
    d.create("db").await;
    let writer = r#"
import sqlite3, time, os
db = sqlite3.connect(os.path.expanduser('~/app.db'))
db.execute('PRAGMA journal_mode=WAL')
db.execute('CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v BLOB)')
i = 0
while True:
    with db:
        db.executemany('INSERT INTO t (v) VALUES (?)', [(os.urandom(512),)] * 20)
    i += 1
    if i == 5:
        open('/tmp/writer-started', 'w').close()
"#;
    d.sh("db", &format!("cat > ~/w.py <<'EOF'\n{writer}\nEOF"))
        .await;
    // The writer runs detached, in its own session, while checkpoints are taken.
    d.sh(
        "db",
        "setsid nohup python3 ~/w.py >/dev/null 2>&1 & \
         for i in $(seq 100); do [ -e /tmp/writer-started ] && break; sleep 0.1; done; \
         test -e /tmp/writer-started",
    )
    .await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(checkpoint(&d, "db", "").await);
    }
    let check = "python3 -c \"import sqlite3,os; db=sqlite3.connect(os.path.expanduser('~/app.db')); \
        print(db.execute('PRAGMA integrity_check').fetchone()[0], db.execute('SELECT count(*) > 0 FROM t').fetchone()[0])\"";
    for id in &ids {
        restore(&d, "db", id).await;
        // The restore stopped the writer; the database is whole.
        assert_eq!(d.sh("db", check).await, "ok 1\n", "after restoring {id}");
    }
    d.delete("db").await;
}

#[tokio::test]
async fn the_pool_is_mounted_again_after_a_restart() {
    let dir = tempfile::Builder::new()
        .prefix("wispd-pool-")
        .tempdir()
        .unwrap();
    let _cleanup = KeeperCleanup(dir.path().to_path_buf());
    let mut d1 = TestDaemon::start_with(real_options(&[], Some(dir.path().to_path_buf())));
    d1.create("durable").await;
    d1.sh(
        "durable",
        "echo kept > ~/f && sudo sh -c 'echo root > /var/kept'",
    )
    .await;
    checkpoint(&d1, "durable", "before reboot").await;
    // As after a reboot: wispd gone, every sprite process gone, everything unmounted.
    d1.terminate();
    common::shutdown_keepers(dir.path());
    common::unmount_all(dir.path());
    assert!(!dir.path().join("pool/sprites").exists());

    let d2 = TestDaemon::start_with(real_options(&[], Some(dir.path().to_path_buf())));
    assert_eq!(d2.sh("durable", "cat ~/f /var/kept").await, "kept\nroot\n");
    assert_eq!(list(&d2, "durable", "").await, ["Current", "v1", "v0"]);
    assert_eq!(
        d2.sh("durable", "cat /.sprite/checkpoints/v1/home/sprite/f")
            .await,
        "kept\n"
    );
    restore(&d2, "durable", "v0").await;
    let e = d2.exec("durable", &["test", "-e", "/home/sprite/f"]).await;
    assert_eq!(e.code, Some(1));
    d2.delete("durable").await;
}

#[tokio::test]
async fn a_full_pool_answers_507_and_corrupts_nothing() {
    // A 1 GiB pool with a quota larger than it: the pool fills before the quota.
    let d = TestDaemon::start_real_args(&["--pool-size-gb", "1", "--default-disk-mb", "4096"]);
    d.create("filler").await;
    d.sh("filler", "echo precious > ~/keep && sync").await;
    let v1 = checkpoint(&d, "filler", "").await;
    let e = d
        .exec(
            "filler",
            &["sh", "-c", "head -c 2000000000 /dev/urandom > ~/fill 2>&1; sync; df -B1M / | tail -1; sleep 1; df -B1M / | tail -1; echo done"],
        )
        .await;
    assert!(e.stdout_str().contains("done"), "{e:?}");
    // Taking a checkpoint or making a sprite now fails clearly with 507.
    let (status, lines) = post_ndjson(&d, "/v1/sprites/filler/checkpoint", json!({})).await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{lines:?}");
    assert!(
        lines[0]["error"].as_str().unwrap().contains("full"),
        "{lines:?}"
    );
    let (status, body) = d
        .call(Method::POST, "/v1/sprites", Some(json!({"name": "late"})))
        .await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{body}");
    let (status, body) = d
        .call(
            Method::POST,
            "/v1/sprites",
            Some(json!({"name": "late", "from": {"sprite": "filler"}})),
        )
        .await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{body}");
    // Nothing half-made is listed.
    assert_eq!(list(&d, "filler", "").await, ["Current", "v1", "v0"]);
    assert_eq!(
        d.get_json("/v1/sprites/late").await.0,
        StatusCode::NOT_FOUND
    );
    // Free the space: everything still works and the old checkpoint restores intact.
    d.sh("filler", "rm -f ~/fill && sync").await;
    restore(&d, "filler", &v1).await;
    assert_eq!(d.sh("filler", "cat ~/keep").await, "precious\n");
    d.delete("filler").await;
}

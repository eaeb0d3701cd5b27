//! Crash injection: wispd is killed (SIGKILL, via `WISP_CRASH_AT`) at every named point of
//! create, fork, checkpoint, restore, checkpoint delete and destroy; the next start must find
//! every sprite usable, every listed checkpoint restorable, and nothing half-made in the pool.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::{real_options, KeeperCleanup, TestDaemon};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn start(dir: &Path, crash_at: Option<&str>) -> TestDaemon {
    let mut opts = real_options(&[], Some(dir.to_path_buf()));
    if let Some(p) = crash_at {
        opts.envs.push(("WISP_CRASH_AT".into(), p.into()));
    }
    TestDaemon::start_with(opts)
}

/// Sends a request that may kill the daemon; the answer does not matter.
async fn fire(d: &TestDaemon, method: Method, path: &str, body: Value) {
    let _ = d
        .client()
        .request(method, d.url(path))
        .header("authorization", d.bearer())
        .json(&body)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .and_then(|r| r.error_for_status());
}

async fn ok_ndjson(d: &TestDaemon, path: &str) -> Vec<Value> {
    let (status, lines) = d.ndjson(Method::POST, path, Some(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{path}: {lines:?}\n{}", d.log());
    assert_eq!(lines.last().unwrap()["type"], "complete", "{lines:?}");
    lines
}

/// The state every case starts from: sprite `base` with checkpoints v0, v1 (f=one) and v2
/// (f=two, current), and f=three live.
async fn setup(dir: &Path) {
    let d = start(dir, None);
    d.create("base").await;
    for (i, word) in ["one", "two"].iter().enumerate() {
        d.sh("base", &format!("echo {word} > ~/f")).await;
        let lines = ok_ndjson(&d, "/v1/sprites/base/checkpoint").await;
        assert_eq!(lines.last().unwrap()["id"], format!("v{}", i + 1));
    }
    d.sh("base", "echo three > ~/f").await;
}

/// What must hold after any crash, checked on a fresh daemon.
async fn check_invariants(d: &TestDaemon, point: &str) {
    let (status, body) = d.get_json("/v1/sprites").await;
    assert_eq!(status, StatusCode::OK);
    let sprites = body["sprites"].as_array().unwrap().clone();
    let pool = d.data_dir.join("pool");
    let mut listed_ids = BTreeSet::new();
    for s in &sprites {
        let name = s["name"].as_str().unwrap();
        let id = s["id"].as_str().unwrap();
        listed_ids.insert(id.to_string());
        // Usable.
        let f = d.sh(name, "cat ~/f 2>/dev/null || echo none").await;
        assert!(
            ["one\n", "two\n", "three\n", "none\n"].contains(&f.as_str()),
            "{point}: {name} has {f:?}"
        );
        // Every listed checkpoint exists in the pool, and nothing else does.
        let (_, cks) = d
            .get_json(&format!("/v1/sprites/{name}/checkpoints?includeAuto=true"))
            .await;
        let listed: BTreeSet<String> = cks
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_string())
            .filter(|c| c != "Current")
            .collect();
        let on_disk: BTreeSet<String> =
            std::fs::read_dir(pool.join("sprites").join(id).join("checkpoints"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
        assert_eq!(listed, on_disk, "{point}: {name}");
        // Every listed checkpoint restores.
        for ck in &listed {
            ok_ndjson(d, &format!("/v1/sprites/{name}/checkpoints/{ck}/restore")).await;
            d.sh(name, "true").await;
        }
    }
    // The pool holds exactly the listed sprites, and no replaced layer is left over.
    let in_pool: BTreeSet<String> = std::fs::read_dir(pool.join("sprites"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(in_pool, listed_ids, "{point}");
    assert_eq!(std::fs::read_dir(pool.join("trash")).unwrap().count(), 0);
    // The name of a sprite whose create died is free again (or the sprite is whole).
    if !sprites.iter().any(|s| s["name"] == "new") {
        d.create("new").await;
        d.delete("new").await;
    }
    for s in sprites {
        d.delete(s["name"].as_str().unwrap()).await;
    }
}

async fn crash_case(point: &str) {
    let dir = tempfile::Builder::new()
        .prefix("wispd-crash-")
        .tempdir()
        .unwrap();
    let _cleanup = KeeperCleanup(dir.path().to_path_buf());
    setup(dir.path()).await;

    let mut d = start(dir.path(), Some(point));
    let (method, path, body) = match point.split(':').next().unwrap() {
        "create" => (Method::POST, "/v1/sprites", json!({"name": "new"})),
        "fork" => (
            Method::POST,
            "/v1/sprites",
            json!({"name": "new", "from": {"sprite": "base"}}),
        ),
        "checkpoint" => (Method::POST, "/v1/sprites/base/checkpoint", json!({})),
        "restore" => (
            Method::POST,
            "/v1/sprites/base/checkpoints/v1/restore",
            json!({}),
        ),
        "delete-checkpoint" => (Method::DELETE, "/v1/sprites/base/checkpoints/v1", json!({})),
        "destroy" => (Method::DELETE, "/v1/sprites/base", json!({})),
        other => panic!("no operation for {other}"),
    };
    fire(&d, method, path, body).await;
    // The daemon must have died at the point.
    let status = d.child.wait().unwrap();
    assert!(
        !status.success(),
        "{point}: wispd did not crash\n{}",
        d.log()
    );
    assert!(d.log().contains("WISP_CRASH_AT"), "{point}\n{}", d.log());

    let d2 = start(dir.path(), None);
    check_invariants(&d2, point).await;
}

macro_rules! crash_tests {
    ($($name:ident => $point:literal),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            crash_case($point).await;
        }
    )*};
}

crash_tests! {
    create_after_insert => "create:after-insert",
    create_after_storage => "create:after-storage",
    create_after_v0 => "create:after-v0",
    fork_after_snapshot => "fork:after-snapshot",
    checkpoint_after_begin => "checkpoint:after-begin",
    checkpoint_after_snapshot => "checkpoint:after-snapshot",
    restore_after_auto => "restore:after-auto",
    restore_after_journal => "restore:after-journal",
    restore_after_stop => "restore:after-stop",
    restore_after_swap => "restore:after-swap",
    delete_checkpoint_after_mark => "delete-checkpoint:after-mark",
    delete_checkpoint_after_delete => "delete-checkpoint:after-delete",
    destroy_after_mark => "destroy:after-mark",
    destroy_after_runtime => "destroy:after-runtime",
}

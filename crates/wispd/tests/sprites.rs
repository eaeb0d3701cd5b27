//! The sprites resource against real sprites: create, list, get, update, destroy, and what
//! destroy must leave behind on the host (nothing).

mod common;

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{connect_session, exec_path, read_until, TestDaemon};
use futures_util::SinkExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn create_list_get_update_delete() {
    let d = TestDaemon::start_real();
    let s = d.create("alpha").await;
    let id = s["id"].as_str().unwrap().to_string();
    let uuid = id.strip_prefix("sprite-").expect("id is sprite-<uuid>");
    assert_eq!(uuid.len(), 36, "{id}");
    assert_eq!(s["name"], "alpha");
    assert_eq!(s["status"], "running");
    assert_eq!(s["organization"], "default");
    assert_eq!(
        s["url"],
        format!("http://alpha.localhost:{}", d.addr.port())
    );
    assert_eq!(s["url_settings"], json!({"auth": "sprite"}));
    assert_eq!(s["labels"], json!(["t"]));
    for key in [
        "created_at",
        "updated_at",
        "last_started_at",
        "last_running_at",
    ] {
        let t = s[key].as_str().unwrap_or_else(|| panic!("{key}: {s}"));
        assert!(
            chrono::DateTime::parse_from_rfc3339(t).is_ok() && t.ends_with('Z'),
            "{key}: {t}"
        );
    }
    assert_eq!(s["last_running_at"], s["last_started_at"]);
    for key in [
        "version",
        "environment_version",
        "last_active_at",
        "last_warming_at",
    ] {
        assert!(s.get(key).is_some(), "{key} missing: {s}");
    }
    // It really runs: the keeper is up and the sprite answers.
    assert!(common::keeper_pid(&id).is_some());
    assert_eq!(d.exec("alpha", &["hostname"]).await.stdout, b"alpha\n");

    // Names are unique, also when two creates race.
    let (a, b) = tokio::join!(
        d.call(Method::POST, "/v1/sprites", Some(json!({"name": "twin"}))),
        d.call(Method::POST, "/v1/sprites", Some(json!({"name": "twin"}))),
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::CREATED, StatusCode::CONFLICT]);
    d.delete("twin").await;
    let (status, b) = d
        .call(Method::POST, "/v1/sprites", Some(json!({"name": "alpha"})))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        b["error"],
        "A sprite named 'alpha' already exists. Please choose a different name."
    );

    // Get.
    let (status, g) = d.get_json("/v1/sprites/alpha").await;
    assert_eq!(status, StatusCode::OK);
    for key in [
        "id",
        "name",
        "url",
        "url_settings",
        "labels",
        "created_at",
        "status",
    ] {
        assert_eq!(g[key], s[key], "{key}");
    }

    // List: pages, prefix, counts.
    d.create("beta").await;
    d.create("gamma").await;
    let (_, page) = d.get_json("/v1/sprites").await;
    let names: Vec<_> = page["sprites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].clone())
        .collect();
    assert_eq!(names, [json!("alpha"), json!("beta"), json!("gamma")]);
    assert_eq!(page["sprites"][0]["id"], id.as_str());
    let (_, page) = d.get_json("/v1/sprites?max_results=2").await;
    let names: Vec<_> = page["sprites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].clone())
        .collect();
    assert_eq!(names, [json!("alpha"), json!("beta")]);
    assert_eq!(page["has_more"], true);
    assert_eq!(page["org"]["running"], 3);
    let token = page["next_continuation_token"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, page) = d
        .get_json(&format!(
            "/v1/sprites?max_results=2&continuation_token={token}"
        ))
        .await;
    assert_eq!(page["sprites"][0]["name"], "gamma");
    assert_eq!(page["sprites"].as_array().unwrap().len(), 1);
    assert_eq!(page["has_more"], false);
    assert_eq!(page["next_continuation_token"], Value::Null);
    let (_, page) = d.get_json("/v1/sprites?prefix=b").await;
    assert_eq!(page["sprites"].as_array().unwrap().len(), 1);
    assert_eq!(page["sprites"][0]["name"], "beta");

    // Update: url_settings and labels; omitted fields stay.
    let (status, u) = d
        .call(
            Method::PUT,
            "/v1/sprites/alpha",
            Some(json!({"url_settings": {"auth": "public"}, "labels": ["x", "y"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(u["url_settings"]["auth"], "public");
    assert_eq!(u["labels"], json!(["x", "y"]));
    assert_eq!(u["id"], id.as_str());
    let (_, u) = d
        .call(
            Method::PUT,
            "/v1/sprites/alpha",
            Some(json!({"clear_labels": true})),
        )
        .await;
    assert_eq!(u["labels"], json!([]));
    assert_eq!(u["url_settings"]["auth"], "public");
    let (status, b) = d
        .call(
            Method::PUT,
            "/v1/sprites/alpha",
            Some(json!({"url_settings": {"auth": "nope"}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{b}");
    let (_, g) = d.get_json("/v1/sprites/alpha").await;
    assert_eq!(g["url_settings"]["auth"], "public");
    assert_eq!(g["labels"], json!([]));
    // Updates do not disturb the running sprite.
    assert_eq!(d.exec("alpha", &["echo", "ok"]).await.stdout, b"ok\n");

    // Delete.
    for name in ["alpha", "beta", "gamma"] {
        d.delete(name).await;
        let (status, _) = d.get_json(&format!("/v1/sprites/{name}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{name}");
    }
    let (status, _) = d.call(Method::DELETE, "/v1/sprites/alpha", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, page) = d.get_json("/v1/sprites").await;
    assert_eq!(page["sprites"], json!([]));
    assert!(!d.data_dir.join("sprites").join(&id).exists());
    assert!(!d.data_dir.join("run").join(format!("{id}.sock")).exists());
    assert!(common::keeper_pid(&id).is_none());
    // The name is free again.
    d.create("alpha").await;
    d.delete("alpha").await;
}

const NS_KINDS: &[&str] = &["pid", "mnt", "net", "uts", "ipc", "cgroup"];
/// Namespaces whose lifetime pins nothing but themselves.
const PINNABLE: &[&str] = &["pid", "net", "uts", "ipc"];

/// Host processes whose cgroup mentions `id`.
fn processes_in_cgroups_of(id: &str) -> Vec<(i32, String)> {
    common::host_pids()
        .into_iter()
        .filter(|p| fs::read_to_string(format!("/proc/{p}/cgroup")).is_ok_and(|c| c.contains(id)))
        .map(|p| (p, common::cmdline(p)))
        .collect()
}

/// Host processes that use one of these namespaces.
fn processes_in_namespaces(inodes: &HashSet<u64>) -> Vec<(i32, String)> {
    common::host_pids()
        .into_iter()
        .filter(|&p| {
            NS_KINDS
                .iter()
                .any(|k| common::ns_inode(p, k).is_some_and(|i| inodes.contains(&i)))
        })
        .map(|p| (p, common::cmdline(p)))
        .collect()
}

fn mount_lines_mentioning(needles: &[&str]) -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| needles.iter().any(|n| l.contains(n)))
        .map(String::from)
        .collect()
}

/// Every path under `dir` whose file name contains `needle`.
fn files_named(dir: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().contains(needle) {
                found.push(p.display().to_string());
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            }
        }
    }
    found
}

#[tokio::test]
async fn destroy_leaves_nothing_behind() {
    let d = TestDaemon::start_real();
    let s = d.create("doomed").await;
    let id = s["id"].as_str().unwrap().to_string();
    let data_dir = d.data_dir.display().to_string();

    // Give it things to clean up: files, an interactive shell (attached, and with a child),
    // a detached command, and a daemon that left its session.
    d.sh(
        "doomed",
        "echo x > ~/file; sudo sh -c 'echo y > /etc/doomed'",
    )
    .await;
    let (mut shell, _) =
        connect_session(&d, &exec_path("doomed", &["bash"], &[("tty", "true")])).await;
    shell
        .send(Message::Binary(
            b"sleep 302 & echo spawned-$((1+1))\n".to_vec().into(),
        ))
        .await
        .unwrap();
    read_until(&mut shell, &mut Vec::new(), b"spawned-2\r\n").await;
    let (detached, _) = connect_session(
        &d,
        &exec_path(
            "doomed",
            &["sleep", "300"],
            &[("max_run_after_disconnect", "0")],
        ),
    )
    .await;
    drop(detached);
    d.sh(
        "doomed",
        "setsid sleep 301 </dev/null >/dev/null 2>&1 & echo started",
    )
    .await;

    // What there is before: so that every check below can see what it looks for.
    let keeper = common::keeper_pid(&id).expect("keeper process");
    let init = common::init_pid(keeper).expect("init process");
    assert_eq!(common::cmdline(init), "wisp-init ");
    let mut inodes = HashSet::new();
    for k in NS_KINDS {
        let ns = common::ns_inode(init, k).unwrap();
        let host = common::ns_inode(std::process::id() as i32, k).unwrap();
        assert_ne!(ns, host, "the sprite shares the host's {k} namespace");
        inodes.insert(ns);
    }
    // Namespace inode numbers are recycled as soon as a namespace is freed, and other
    // sprites (other tests, other daemons) may be starting right now. Holding these
    // namespaces open keeps their numbers ours, without keeping anything in them alive. (Not
    // the mount and cgroup namespaces: those would pin the overlay and the cgroups, and
    // change what destroy has to do. They are checked by what they would show instead.)
    let pinned: Vec<(u64, fs::File)> = PINNABLE
        .iter()
        .map(|k| {
            let f = fs::File::open(format!("/proc/{init}/ns/{k}")).unwrap();
            (common::ns_inode(init, k).unwrap(), f)
        })
        .collect();
    let pinned_inodes: HashSet<u64> = pinned.iter().map(|(i, _)| *i).collect();
    let members = processes_in_namespaces(&inodes);
    assert!(members.len() >= 5, "{members:?}");
    let in_cgroups = processes_in_cgroups_of(&id);
    assert!(in_cgroups.len() >= 5, "{in_cgroups:?}");
    let cgroup_dirs = wisp_runtime::cgroup::sprite_cgroup_dirs("wisp", &id).unwrap();
    assert!(!cgroup_dirs.is_empty());
    for dir in &cgroup_dirs {
        assert!(dir.is_dir(), "{}", dir.display());
    }
    assert!(!files_named(&d.data_dir, &id).is_empty());
    // The sprite's mounts live in its own mount namespace, even while it runs; on the host
    // there are only its checkpoint views (a tmpfs and an overlay per view).
    for line in mount_lines_mentioning(&[&id]) {
        assert!(
            line.contains("wisp-checkpoints") || line.contains("wisp-checkpoint "),
            "{line}"
        );
    }

    let alive = |pid: i32, start: Option<u64>| start.is_some() && common::start_ticks(pid) == start;
    let (keeper_start, init_start) = (common::start_ticks(keeper), common::start_ticks(init));
    assert!(alive(keeper, keeper_start) && alive(init, init_start));
    tokio::time::sleep(Duration::from_millis(30)).await;
    let delete_tick = common::now_ticks();
    d.delete("doomed").await;
    // The attached client is told, not left hanging.
    let got = common::collect_for(&mut shell, Duration::from_secs(10)).await;
    assert!(
        matches!(got.last(), Some(common::Got::Close(Some(_)))),
        "{got:?}"
    );
    let (status, _) = d.get_json("/v1/sprites/doomed").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // (a) no mount of the sprite's; under the data dir only the daemon's own remain (the
    // storage pool and the pooled network namespaces)
    assert_eq!(mount_lines_mentioning(&[&id]), Vec::<String>::new());
    for line in mount_lines_mentioning(&[&data_dir]) {
        let daemon_wide = line.contains(&format!("{data_dir}/pool "))
            || line.contains(&format!("{data_dir}/run/netns"));
        assert!(daemon_wide, "{line}");
    }
    // (b) no cgroup
    for dir in &cgroup_dirs {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    // (c) no process: nothing in its cgroups, no keeper, no init (pids may be reused by then:
    // a process is its pid and start time). Exited processes may need a moment to be reaped.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = processes_in_cgroups_of(&id);
        let keeper_alive = alive(keeper, keeper_start);
        let init_alive = alive(init, init_start);
        if left.is_empty() && !keeper_alive && !init_alive {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: {left:?}, keeper alive: {keeper_alive}, init alive: {init_alive}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(common::keeper_pid(&id), None);
    // (d) no namespace: no process in the pinned ones; none that sees the sprite's mounts (its
    // mount namespace); and none in its mount or cgroup namespace that existed before the
    // delete (a later one may have been handed a recycled inode number).
    assert_eq!(
        processes_in_namespaces(&pinned_inodes),
        Vec::<(i32, String)>::new()
    );
    drop(pinned);
    let seeing_mounts: Vec<_> = common::host_pids()
        .into_iter()
        .filter(|p| {
            fs::read_to_string(format!("/proc/{p}/mountinfo")).is_ok_and(|m| m.contains(&id))
        })
        .collect();
    assert_eq!(seeing_mounts, Vec::<i32>::new());
    let survivors: Vec<_> = processes_in_namespaces(&inodes)
        .into_iter()
        .filter(|(p, _)| common::start_ticks(*p).is_some_and(|t| t < delete_tick))
        .collect();
    assert_eq!(survivors, Vec::<(i32, String)>::new());
    // (e) no file
    assert_eq!(files_named(&d.data_dir, &id), Vec::<String>::new());
    for p in ["sprites", "run", "logs"] {
        assert!(d.data_dir.join(p).is_dir(), "{p}");
    }

    // The daemon is fine and the name can be used again.
    d.create("doomed").await;
    // A new sprite of the same name starts from the image, not from the old files.
    let e = d.exec("doomed", &["cat", "/home/sprite/file"]).await;
    assert_eq!(e.code, Some(1), "{e:?}");
    assert!(e.stderr_str().contains("No such file"), "{e:?}");
    d.delete("doomed").await;
}

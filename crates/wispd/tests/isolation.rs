//! What a real sprite sees and may use: its own processes, hostname, network and files only,
//! inside cgroups that carry wispd's limits (checked from the host).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{connect_session, exec_path, read_until, Exec, TestDaemon};
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use wisp_runtime::cgroup::Layout;

#[tokio::test]
async fn a_sprite_sees_only_itself() {
    let d = TestDaemon::start_real();
    let s = d.create("iso-self").await;
    let id = s["id"].as_str().unwrap();

    // Processes: pid 1 is the sprite's init, and the only other process is `ps` itself.
    let ps = d.exec("iso-self", &["ps", "-e", "-o", "pid=,comm="]).await;
    let procs: Vec<Vec<String>> = ps
        .stdout_str()
        .lines()
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect();
    assert_eq!(procs.len(), 2, "{}", ps.stdout_str());
    assert_eq!(procs[0], ["1", "wisp-init"], "{}", ps.stdout_str());
    assert_eq!(procs[1][1], "ps", "{}", ps.stdout_str());
    let all = d.sh("iso-self", "ps -e -o args=").await;
    for host_thing in [
        "wispd",
        "wisp-keeper",
        "systemd",
        "cargo",
        "exec-",
        "isolation-",
    ] {
        assert!(!all.contains(host_thing), "{host_thing} visible: {all}");
    }
    // pid 1's command line has no host path (the keeper's binary or config).
    let e = d.exec("iso-self", &["cat", "/proc/1/cmdline"]).await;
    assert_eq!(e.stdout, b"wisp-init\0");
    assert_eq!(d.sh("iso-self", "cat /proc/1/comm").await, "wisp-init\n");
    // Even root in the sprite cannot reach a host process.
    let me = std::process::id().to_string();
    let e = d.exec("iso-self", &["sudo", "kill", "-0", &me]).await;
    assert_ne!(e.code, Some(0), "{e:?}");

    // Hostname is the sprite's name, and it resolves (sudo needs that).
    assert_eq!(
        d.exec("iso-self", &["hostname"]).await.stdout,
        b"iso-self\n"
    );
    assert_eq!(
        d.sh("iso-self", "getent hosts iso-self | awk '{print $1}'")
            .await,
        "127.0.1.1\n"
    );

    // Network: its own eth0 (a veth to the host, see tests/network.rs) and a loopback that
    // is up.
    let dev = d
        .sh("iso-self", "tail -n +3 /proc/net/dev | cut -d: -f1")
        .await;
    let mut names: Vec<&str> = dev.split_whitespace().collect();
    names.sort_unstable();
    assert_eq!(names, ["eth0", "lo"], "{dev}");
    let lo = d
        .sh(
            "iso-self",
            "cat /sys/class/net/lo/operstate /sys/class/net/lo/flags",
        )
        .await;
    assert!(lo.contains("0x9"), "lo is not up: {lo}");

    // Files: the host's data dir is not there; the root is the sprite's own.
    let host_db = d.data_dir.join("wisp.db");
    assert!(host_db.exists());
    let e = d
        .exec("iso-self", &["test", "-e", host_db.to_str().unwrap()])
        .await;
    assert_eq!(
        e.code,
        Some(1),
        "the host's data dir is visible in the sprite"
    );
    assert_eq!(
        d.sh("iso-self", "cat /etc/os-release | grep ^ID=").await,
        "ID=debian\n"
    );
    // /.sprite is there, read-only.
    let e = d.exec("iso-self", &["sudo", "touch", "/.sprite/x"]).await;
    assert_ne!(e.code, Some(0), "{e:?}");
    assert!(e.stderr_str().contains("Read-only"), "{e:?}");

    // Its own cgroup namespace: the sprite's cgroup is its root.
    let cg = d.sh("iso-self", "cat /proc/self/cgroup").await;
    for line in cg.lines() {
        assert!(line.ends_with(":/"), "{cg}");
    }
    assert!(!cg.contains(id), "{cg}");

    d.delete("iso-self").await;
}

/// Which file under which of the sprite's cgroup dirs holds a limit on this host.
struct Limits {
    memory: PathBuf,
    pids: PathBuf,
    cpu: Vec<(PathBuf, String)>,
}

fn limit_files(id: &str, cpus_millis: u64) -> Limits {
    let layout = Layout::detect().unwrap();
    if layout.v2_controllers {
        let dir = layout.v2.unwrap().join("wisp").join(id);
        Limits {
            memory: dir.join("memory.max"),
            pids: dir.join("pids.max"),
            cpu: vec![(dir.join("cpu.max"), format!("{} 100000", cpus_millis * 100))],
        }
    } else {
        let dir = |controller: &str| {
            let (_, mount) = layout
                .v1
                .iter()
                .find(|(c, _)| c == controller)
                .unwrap_or_else(|| panic!("no v1 {controller} hierarchy: {layout:?}"));
            mount.join("wisp").join(id)
        };
        Limits {
            memory: dir("memory").join("memory.limit_in_bytes"),
            pids: dir("pids").join("pids.max"),
            cpu: vec![
                (dir("cpu").join("cpu.cfs_period_us"), "100000".into()),
                (
                    dir("cpu").join("cpu.cfs_quota_us"),
                    (cpus_millis * 100).to_string(),
                ),
            ],
        }
    }
}

fn read_trim(p: &Path) -> String {
    fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

/// The host pid of the process that is `inner` in the pid namespace of `init_host_pid`.
fn host_pid_of(init_host_pid: i32, inner: i32) -> Option<i32> {
    let ns = common::ns_inode(init_host_pid, "pid")?;
    common::host_pids().into_iter().find(|&p| {
        common::ns_inode(p, "pid") == Some(ns)
            && fs::read_to_string(format!("/proc/{p}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("NSpid:"))
                        .map(|l| l.split_whitespace().last() == Some(&inner.to_string()))
                })
                .unwrap_or(false)
    })
}

#[tokio::test]
async fn cgroup_limits_are_applied() {
    let d = TestDaemon::start_real_args(&[
        "--default-memory-mb",
        "321",
        "--default-cpus",
        "0.5",
        "--default-pids",
        "77",
    ]);
    let s = d.create("iso-limits").await;
    let id = s["id"].as_str().unwrap();

    // The limits as wispd was told, read on the host.
    let f = limit_files(id, 500);
    assert_eq!(read_trim(&f.memory), (321u64 << 20).to_string());
    assert_eq!(read_trim(&f.pids), "77");
    for (file, want) in &f.cpu {
        assert_eq!(&read_trim(file), want, "{}", file.display());
    }

    // Every process of the sprite is in its cgroups, in every hierarchy.
    let keeper = common::keeper_pid(id).expect("keeper process");
    let init = common::init_pid(keeper).expect("init process");
    let (mut ws, info) =
        connect_session(&d, &exec_path("iso-limits", &["sleep", "300"], &[])).await;
    let inner: i32 = info["session_id"].as_str().unwrap().parse().unwrap();
    let host = host_pid_of(init, inner).expect("the sleep on the host");
    // (Between fork and exec it still looks like its parent, the init.)
    let deadline = Instant::now() + Duration::from_secs(5);
    while common::cmdline(host) != "sleep 300 " {
        assert!(Instant::now() < deadline, "{}", common::cmdline(host));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let want = format!("/wisp/{id}");
    for pid in [init, host] {
        let cg = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        for line in cg.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) =
                (parts.next(), parts.next().unwrap(), parts.next().unwrap());
            let limited = controllers.is_empty()
                || controllers
                    .split(',')
                    .any(|c| ["memory", "pids", "cpu", "freezer"].contains(&c));
            if limited {
                assert_eq!(path, want, "pid {pid}: {cg}");
            }
        }
    }
    ws.send(Message::Text(
        json!({"type": "signal", "signal": "KILL"})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    Exec::from(common::collect(&mut ws).await).assert_ended_with(137);

    // The memory limit holds: touching more than it allows gets the command OOM-killed.
    let e = d
        .exec(
            "iso-limits",
            &["python3", "-c", "b = b'x' * (400 << 20); print(len(b))"],
        )
        .await;
    assert_eq!(e.code, Some(137), "{e:?}");
    assert_eq!(e.stdout, b"");
    // Below the limit is fine, and the sprite lives on.
    let e = d
        .exec(
            "iso-limits",
            &["python3", "-c", "b = b'x' * (100 << 20); print(len(b))"],
        )
        .await;
    assert_eq!(e.stdout_str(), format!("{}\n", 100 << 20), "{e:?}");

    d.delete("iso-limits").await;
}

#[tokio::test]
async fn pids_limit_stops_a_fork_bomb() {
    let d = TestDaemon::start_real_args(&["--default-pids", "64"]);
    let s = d.create("iso-bomb").await;
    let id = s["id"].as_str().unwrap();
    let f = limit_files(id, 2000);
    assert_eq!(read_trim(&f.pids), "64");

    // A bomb that dies of its first failed fork and leaves its children behind.
    let e = d
        .exec(
            "iso-bomb",
            &[
                "sh",
                "-c",
                "trap 'kill 0' EXIT; for i in $(seq 200); do sleep 30 & echo $i; done; wait",
            ],
        )
        .await;
    assert_ne!(e.code, Some(0), "{e:?}");
    assert!(e.stderr_str().contains("fork"), "{e:?}");
    let started: usize = e
        .stdout_str()
        .lines()
        .last()
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    assert!((50..64).contains(&started), "{started} sleeps started");
    // The kernel refused forks in the sprite's pids cgroup.
    if let Some(events) = f.pids.parent().map(|p| p.join("pids.events")) {
        let text = read_trim(&events);
        let refused: u64 = text
            .strip_prefix("max ")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(refused > 0, "{text}");
    }

    // One that holds every pid: init, the shell, its sleep and 61 background sleeps.
    let (mut bomb, _) = connect_session(
        &d,
        &exec_path(
            "iso-bomb",
            &[
                "sh",
                "-c",
                "(for i in $(seq 200); do sleep 60 & done); echo full; sleep 60",
            ],
            &[],
        ),
    )
    .await;
    let mut out = Vec::new();
    read_until(&mut bomb, &mut out, b"full").await;
    // A new command cannot start: a JSON error, not a hang.
    let res = d
        .client()
        .post(d.url(&exec_path("iso-bomb", &["true"], &[])))
        .header("authorization", d.bearer())
        .send()
        .await
        .unwrap();
    assert!(!res.status().is_success(), "{}", res.status());
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("fork"), "{body}");
    // Killing the bomb's process group frees the pids.
    bomb.send(Message::Text(
        json!({"type": "signal", "signal": "TERM"})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    Exec::from(common::collect(&mut bomb).await).assert_ended_with(143);

    // The sprite answers again (its init reaps the orphans within moments).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ps = d
            .try_exec("iso-bomb", &["ps", "-e", "-o", "comm="], &[])
            .await;
        if matches!(&ps, Ok(e) if e.code == Some(0) && !e.stdout_str().contains("sleep")) {
            break;
        }
        assert!(Instant::now() < deadline, "sleeps still there: {ps:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        d.exec("iso-bomb", &["echo", "alive"]).await.stdout,
        b"alive\n"
    );
    d.delete("iso-bomb").await;
}

#[tokio::test]
async fn root_in_a_sprite_has_only_the_container_capabilities() {
    let d = TestDaemon::start_real();
    d.create("iso-caps").await;
    // The bounding set is the container default minus MKNOD: 0xa00425fb.
    let bnd = d.sh("iso-caps", "sudo grep CapBnd /proc/self/status").await;
    assert_eq!(bnd, "CapBnd:\t00000000a00425fb\n");
    // sudo still works, and root still owns the sprite's files.
    assert_eq!(d.sh("iso-caps", "sudo id -u").await, "0\n");
    assert_eq!(
        d.sh("iso-caps", "sudo touch /root/x && sudo stat -c %U /root/x")
            .await,
        "root\n"
    );
    // What would reach the host stays out of reach.
    for (what, cmd) in [
        ("mount", "sudo mount -t tmpfs none /mnt"),
        ("mknod", "sudo mknod /tmp/blk b 8 0"),
        ("hostname", "sudo hostname other-name"),
        ("clock", "sudo date -s '2001-01-01'"),
        ("sysrq", "echo b | sudo tee /proc/sysrq-trigger"),
        ("module", "sudo sh -c 'echo > /proc/sys/kernel/modprobe'"),
    ] {
        let e = d.exec("iso-caps", &["sh", "-c", cmd]).await;
        assert_ne!(e.code, Some(0), "{what} succeeded: {e:?}");
    }
    assert_eq!(
        d.exec("iso-caps", &["hostname"]).await.stdout,
        b"iso-caps\n"
    );
    d.delete("iso-caps").await;
}

#[tokio::test]
async fn kernel_files_are_read_only_or_masked_and_host_dirs_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let d = TestDaemon::start_real();
    d.create("iso-proc").await;
    // /proc/sys is read-only even for root: core_pattern would run a program as host root.
    let e = d
        .exec(
            "iso-proc",
            &[
                "sh",
                "-c",
                "echo '|/tmp/x' | sudo tee /proc/sys/kernel/core_pattern",
            ],
        )
        .await;
    assert_ne!(e.code, Some(0), "{e:?}");
    let pattern = fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    assert!(!pattern.contains("/tmp/x"), "{pattern}");
    assert!(d
        .sh("iso-proc", "grep ' /proc/sys ' /proc/self/mountinfo")
        .await
        .contains(" ro,"));
    // Masked: empty to read.
    let present: Vec<&str> = ["kcore", "keys", "timer_list", "sched_debug"]
        .into_iter()
        .filter(|f| Path::new("/proc").join(f).exists())
        .collect();
    assert!(
        !present.is_empty(),
        "none of the masked files exists on this host"
    );
    for f in present {
        let n = d
            .sh("iso-proc", &format!("sudo cat /proc/{f} | wc -c"))
            .await;
        assert_eq!(n, "0\n", "/proc/{f} is readable");
    }
    assert_eq!(
        d.sh("iso-proc", "sudo ls /sys/firmware | wc -l").await,
        "0\n"
    );
    // The usual open-file limits, whatever the daemon's are.
    assert_eq!(d.sh("iso-proc", "ulimit -n").await, "1024\n");
    let hard: u64 = d.sh("iso-proc", "ulimit -Hn").await.trim().parse().unwrap();
    assert!(hard <= 65536, "{hard}");
    // No host user can reach a sprite's files (root in a sprite can make setuid files there).
    for dir in ["sprites", "run", "logs"] {
        let mode = fs::metadata(d.data_dir.join(dir))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "{dir}");
    }
    d.delete("iso-proc").await;
}

/// `(host id of root inside, count)` from a process's `uid_map` or `gid_map`.
fn id_map(pid: i32, file: &str) -> (u64, u64) {
    let text = fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap();
    let f: Vec<u64> = text
        .split_whitespace()
        .map(|w| w.parse().unwrap())
        .collect();
    assert_eq!(f.len(), 3, "one range only: {text}");
    assert_eq!(f[0], 0, "{text}");
    (f[1], f[2])
}

/// The host uid of a process, from its status.
fn host_uid(pid: i32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

#[tokio::test]
async fn root_in_a_sprite_is_an_unprivileged_host_user() {
    let d = TestDaemon::start_real();
    let a = d.create("iso-userns-a").await;
    let b = d.create("iso-userns-b").await;
    let mut ranges = Vec::new();
    for s in [&a, &b] {
        let name = s["name"].as_str().unwrap();
        let keeper = common::keeper_pid(s["id"].as_str().unwrap()).expect("keeper");
        let init = common::init_pid(keeper).expect("init");
        // Root inside is a high, unprivileged host id with 65,536 ids; gids likewise.
        let (base, count) = id_map(init, "uid_map");
        assert_eq!(id_map(init, "gid_map"), (base, count));
        assert!(base >= 1 << 20, "root of {name} is host uid {base}");
        assert_eq!(count, 65536);
        assert_eq!(host_uid(init), base, "init runs as the sprite's root");
        // The sprite sees the same map, and its own ids as usual.
        let inside = d.sh(name, "cat /proc/self/uid_map").await;
        let f: Vec<&str> = inside.split_whitespace().collect();
        assert_eq!(f, ["0", &base.to_string(), "65536"], "{inside}");
        // A command as root inside runs as that host id, the sprite user as base + 1000.
        let (mut ws, info) =
            connect_session(&d, &exec_path(name, &["sudo", "sleep", "300"], &[])).await;
        let inner: i32 = info["session_id"].as_str().unwrap().parse().unwrap();
        let host = host_pid_of(init, inner).expect("sudo on the host");
        assert_eq!(host_uid(host), base, "sudo runs as the sprite's root");
        let _ = ws.close(None).await;
        // The shared, root-owned base image still belongs to root inside (id-mapped), and
        // root inside owns and writes what it should.
        assert_eq!(
            d.sh(
                name,
                "stat -c '%U:%G' /etc/passwd /usr/bin/sudo /home/sprite"
            )
            .await,
            "root:root\nroot:root\nsprite:sprite\n"
        );
        assert_eq!(
            d.sh(
                name,
                "sudo sh -c 'echo x > /etc/motd-test && stat -c %U /etc/motd-test'"
            )
            .await,
            "root\n"
        );
        // Host-owned things show as nobody; nothing inside maps to host root.
        assert_eq!(d.sh(name, "stat -c %U /.sprite").await, "nobody\n");
        ranges.push(base);
    }
    // Two running sprites never share host ids.
    assert!(ranges[0].abs_diff(ranges[1]) >= 65536, "{ranges:?}");
    // The servers of a sprite still bind low ports and ping (set per network namespace).
    assert_eq!(
        d.sh(
            "iso-userns-a",
            "python3 -c 'import socket; s=socket.socket(); s.bind((\"0.0.0.0\", 80)); print(\"bound\")'"
        )
        .await,
        "bound\n"
    );
    d.sh("iso-userns-a", "ping -c1 -W2 127.0.0.1 >/dev/null")
        .await;
    d.delete("iso-userns-a").await;
    d.delete("iso-userns-b").await;
}

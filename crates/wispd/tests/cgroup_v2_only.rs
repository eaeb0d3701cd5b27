//! The keeper on a cgroup v2-only host.
//!
//! This machine has the v1 + v2 hybrid layout. To see the keeper on a v2-only layout, each test
//! runs it in a private mount namespace where every cgroup mount is gone and the v2 hierarchy
//! is mounted alone at /sys/fs/cgroup, as on a v2-only host. The memory, cpu and pids
//! controllers stay bound to the host's v1 hierarchies, so the v2 hierarchy offers none of
//! them: a sprite without limits must run there (freeze/kill/placement are v2 features that
//! need no controller), and a sprite with limits must be refused with a clear error rather than
//! run unbounded.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use wisp_runtime::config::{KeeperConfig, Limits, UserNamespace};
use wisp_runtime::proto::{self, Kind, Reply, Request, SpawnSpec};

struct Keeper {
    child: Child,
    first_line: String,
    cfg: KeeperConfig,
    _dir: tempfile::TempDir,
}

/// The unified hierarchy as the host sees it (same hierarchy, other mount point).
fn host_v2() -> PathBuf {
    let layout = wisp_runtime::cgroup::Layout::detect().expect("mountinfo");
    layout.v2.expect("this host has a cgroup2 mount")
}

fn start_keeper(id: &str, limits: Limits) -> Keeper {
    assert!(nix::unistd::geteuid().is_root(), "run as root");
    let rootfs = common::image_dir().join("debian-bookworm/rootfs");
    assert!(rootfs.is_dir(), "no base image at {}", rootfs.display());
    let dir = tempfile::Builder::new()
        .prefix("wisp-v2-")
        .tempdir()
        .unwrap();
    for d in ["upper", "work", "root", "sprite-dir"] {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    let cfg = KeeperConfig {
        sprite_id: id.to_string(),
        hostname: "v2only".into(),
        socket: dir.path().join("k.sock"),
        root_mount: dir.path().join("root"),
        lower: vec![rootfs],
        upper: dir.path().join("upper"),
        work: dir.path().join("work"),
        sprite_dir: dir.path().join("sprite-dir"),
        limits,
        cgroup_parent: "wisp-v2test".into(),
        netns: None,
        resolv_conf: None,
        userns: Some(UserNamespace::host_default()),
        unhardened: false,
    };
    let cfg_path = dir.path().join("keeper.json");
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let script = format!(
        "umount -R /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup && exec {} --config {}",
        env!("CARGO_BIN_EXE_wisp-keeper"),
        cfg_path.display()
    );
    let mut child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("unshare");
    let mut first_line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first_line)
        .unwrap();
    Keeper {
        child,
        first_line,
        cfg,
        _dir: dir,
    }
}

fn call(socket: &Path, req: &Request) -> (Reply, UnixStream) {
    let mut s = UnixStream::connect(socket).expect("keeper socket");
    proto::write_frame(&mut s, Kind::Request, &serde_json::to_vec(req).unwrap()).unwrap();
    let f = proto::read_frame(&mut s).unwrap().expect("reply");
    assert_eq!(f.kind, Kind::Reply);
    (serde_json::from_slice(&f.payload).unwrap(), s)
}

fn run(socket: &Path, argv: &[&str]) -> (String, i32) {
    let spec = SpawnSpec {
        argv: argv.iter().map(|a| a.to_string()).collect(),
        path: argv[0].to_string(),
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        dir: "/".into(),
        user: "sprite".into(),
        tty: false,
        rows: 24,
        cols: 80,
        stdin: false,
        max_run_after_disconnect_ms: None,
    };
    let (reply, mut s) = call(socket, &Request::Spawn(spec));
    assert!(matches!(reply, Reply::Spawned { .. }), "{reply:?}");
    let mut out = Vec::new();
    loop {
        let f = proto::read_frame(&mut s).unwrap().expect("frame");
        match f.kind {
            Kind::Stdout | Kind::Stderr => out.extend_from_slice(&f.payload),
            Kind::Exit => {
                return (
                    String::from_utf8_lossy(&out).into_owned(),
                    proto::decode_exit(&f.payload).unwrap(),
                )
            }
            k => panic!("unexpected frame {k:?}"),
        }
    }
}

#[test]
fn a_sprite_without_limits_runs_on_a_v2_only_layout() {
    let id = format!("v2-{}", std::process::id());
    let mut k = start_keeper(&id, Limits::default());
    let ready = k.first_line.trim().to_string();
    assert!(ready.starts_with("READY "), "keeper said {ready:?}");
    let init_pid: i32 = ready["READY ".len()..].parse().unwrap();

    // Only the v2 hierarchy exists for this keeper, so that is where the sprite lives.
    let cg = host_v2().join("wisp-v2test").join(&id);
    let procs = std::fs::read_to_string(cg.join("cgroup.procs")).unwrap();
    assert!(
        procs.lines().any(|l| l.trim() == init_pid.to_string()),
        "init {init_pid} not in {}: {procs}",
        cg.display()
    );
    // A command runs inside, in the sprite's own cgroup namespace.
    let (out, code) = run(&k.cfg.socket, &["cat", "/proc/self/cgroup"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.lines().any(|l| l == "0::/"), "{out}");

    // Freeze and thaw through cgroup.freeze; the keeper (outside the cgroup) keeps answering.
    let frozen = |socket: &Path| match call(socket, &Request::Ping).0 {
        Reply::Pong { frozen, .. } => frozen,
        other => panic!("ping: {other:?}"),
    };
    assert!(!frozen(&k.cfg.socket));
    assert_eq!(call(&k.cfg.socket, &Request::Freeze).0, Reply::Ok);
    assert!(frozen(&k.cfg.socket));
    let events = std::fs::read_to_string(cg.join("cgroup.events")).unwrap();
    assert!(events.lines().any(|l| l == "frozen 1"), "{events}");
    assert_eq!(call(&k.cfg.socket, &Request::Thaw).0, Reply::Ok);
    assert!(!frozen(&k.cfg.socket));
    assert_eq!(
        run(&k.cfg.socket, &["echo", "awake"]),
        ("awake\n".into(), 0)
    );
    // A frozen sprite still shuts down.
    assert_eq!(call(&k.cfg.socket, &Request::Freeze).0, Reply::Ok);

    // Shutdown kills everything and removes the cgroup (cgroup.kill is a v2 feature).
    let (reply, _) = call(&k.cfg.socket, &Request::Shutdown);
    assert_eq!(reply, Reply::Ok);
    k.child.wait().unwrap();
    assert!(!cg.exists(), "{} left behind", cg.display());
    let _ = std::fs::remove_dir(host_v2().join("wisp-v2test"));
}

#[test]
fn a_limit_the_v2_hierarchy_cannot_enforce_is_refused() {
    let id = format!("v2l-{}", std::process::id());
    let mut k = start_keeper(
        &id,
        Limits {
            memory_bytes: Some(256 << 20),
            cpu_millis: None,
            pids_max: None,
        },
    );
    let status = k.child.wait().unwrap();
    assert!(!status.success());
    assert!(
        k.first_line.starts_with("ERROR ")
            && k.first_line
                .contains("memory cgroup controller is not available"),
        "keeper said {:?}",
        k.first_line
    );
    assert!(!host_v2().join("wisp-v2test").join(&id).exists());
}

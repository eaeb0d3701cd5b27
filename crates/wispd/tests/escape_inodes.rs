//! Inode and metadata exhaustion: root in one sprite creates files as fast as it can. btrfs has
//! no inode table to run out of; every inode, directory entry and (for files of at most
//! `max_inline` bytes) the file's data itself lives in metadata tree blocks. The question is
//! whether those blocks are charged to the sprite's quota, or whether a sprite can fill the
//! shared pool's metadata for everyone with files that have no data extents.
//!
//! Measured on Linux 6.18 with simple quotas: they are charged. Tree blocks belong to the
//! subvolume whose tree holds them, and squota charges every extent, data or metadata, to its
//! owning subvolume, so empty and inline-sized files both end in `EDQUOT` at the limit (see
//! SECURITY.md, after the table of layers).

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestDaemon;

/// Each sprite's disk limit. Small, so that the flood reaches it within seconds.
const DISK_MB: u64 = 24;
/// The flood's own bound: reaching it means no limit stopped the sprite, which fails the test.
const FLOOD_SECS: u64 = 150;

/// What the flood creates: all of it lives in metadata only.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// Empty files: an inode and a directory entry each.
    Empty,
    /// Files of this many bytes, under `max_inline` (2048 by default), so their data is an
    /// inline extent in the metadata tree rather than a data extent.
    Inline(usize),
    /// Symlinks with a target of this many bytes (also stored inline).
    Symlink(usize),
    /// Empty directories.
    Dir,
}

/// Creates entries of `kind` in `/var/flood` as root until an error or [`FLOOD_SECS`]. Prints
/// `<entries> <errno name or "timeout"> <seconds>`.
fn flood_script(kind: Kind) -> String {
    let (mode, size) = match kind {
        Kind::Empty => ("file", 0),
        Kind::Inline(n) => ("file", n),
        Kind::Symlink(n) => ("symlink", n),
        Kind::Dir => ("dir", 0),
    };
    format!(
        r#"python3 - <<'EOF'
import errno, os, time
d = "/var/flood"
os.makedirs(d, exist_ok=True)
mode = "{mode}"
data = b"x" * {size}
target = "t" * {size}
start = time.time()
n = 0
why = "timeout"
try:
    while time.time() - start < {FLOOD_SECS}:
        path = "%s/%d" % (d, n)
        if mode == "dir":
            os.mkdir(path)
        elif mode == "symlink":
            os.symlink(target, path)
        else:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            try:
                if data:
                    os.write(fd, data)
            finally:
                os.close(fd)
        n += 1
    # Whatever was created must also reach the disk within the limit.
    os.sync()
except OSError as e:
    why = errno.errorcode.get(e.errno, str(e.errno))
print(n, why, round(time.time() - start, 2))
EOF"#
    )
}

/// Bytes in use in the pool (data, metadata and system; logical, as `btrfs filesystem df`
/// counts them: DUP metadata takes twice this on the disk).
fn pool_used(pool: &Path) -> u64 {
    let out = std::process::Command::new("btrfs")
        .args(["filesystem", "df", "-b"])
        .arg(pool)
        .output()
        .expect("running btrfs filesystem df (btrfs-progs)");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    // Lines like `Metadata, DUP: total=107347968, used=16941056`; the global reserve is a
    // reservation inside metadata, not more use.
    text.lines()
        .filter(|l| !l.starts_with("GlobalReserve"))
        .filter_map(|l| l.split("used=").nth(1))
        .map(|v| v.trim().parse::<u64>().expect("used= bytes"))
        .sum()
}

fn sync_pool(pool: &Path) {
    let status = std::process::Command::new("sync")
        .arg("-f")
        .arg(pool)
        .status()
        .expect("sync");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn creating_files_stops_at_the_sprites_own_limit() {
    let disk_mb = DISK_MB.to_string();
    let d = Arc::new(TestDaemon::start_real_args(&[
        "--default-disk-mb",
        &disk_mb,
        "--pool-size-gb",
        "2",
    ]));
    let pool = d.data_dir.join("pool");
    d.create("flood").await;
    d.create("calm").await;

    // The neighbour answers all along; the slowest exec is recorded.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (d, stop) = (d.clone(), stop.clone());
        tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            while !stop.load(Ordering::SeqCst) {
                let t = Instant::now();
                let out = d.sh("calm", "echo ok").await;
                assert_eq!(out, "ok\n");
                worst = worst.max(t.elapsed());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            worst
        })
    };

    let limit = DISK_MB << 20;
    for (what, kind) in [
        ("empty files", Kind::Empty),
        ("64-byte (inline) files", Kind::Inline(64)),
        ("1000-byte (inline) files", Kind::Inline(1000)),
        ("symlinks with 1000-byte targets", Kind::Symlink(1000)),
        ("directories", Kind::Dir),
    ] {
        sync_pool(&pool);
        let before = pool_used(&pool);
        let t = Instant::now();
        let e = d
            .exec("flood", &["sudo", "sh", "-c", &flood_script(kind)])
            .await;
        let took = t.elapsed();
        assert_eq!(e.code, Some(0), "{what}: {e:?}");
        let out = e.stdout_str();
        let fields: Vec<&str> = out.split_whitespace().collect();
        let [files, why, secs] = fields[..] else {
            panic!("{what}: unexpected output {out:?} {}", e.stderr_str());
        };
        let files: u64 = files.parse().unwrap();
        sync_pool(&pool);
        let grew = pool_used(&pool).saturating_sub(before);
        eprintln!(
            "{what}: {files} entries in {secs} s (exec {took:?}), stopped by {why}; pool use grew \
             by {} KiB for a {DISK_MB} MiB limit",
            grew >> 10
        );
        // The sprite's own limit stopped it: its quota (EDQUOT), or ENOSPC when the kernel
        // reports the quota that way, with the pool far from full (checked next).
        assert!(
            why == "EDQUOT" || why == "ENOSPC",
            "{what}: the flood was not stopped by a limit: {out}"
        );
        assert!(files > 1000, "{what}: stopped after only {files} entries");
        // What it used is bounded by its limit (plus a little the kernel lets through while a
        // transaction is open), not by the pool's size.
        assert!(
            grew <= limit + (8 << 20),
            "{what}: the pool grew by {grew} bytes for a {limit}-byte limit"
        );

        // The pool is nowhere near full: nobody else was stopped.
        let st = nix::sys::statvfs::statvfs(&pool).expect("statvfs of the pool");
        let (free, size) = (
            st.blocks_available() * st.fragment_size(),
            st.blocks() * st.fragment_size(),
        );
        assert!(
            free > size / 2,
            "{what}: the pool has {free} of {size} bytes free"
        );

        // The neighbour can still write.
        let out = d
            .sh(
                "calm",
                "dd if=/dev/urandom of=/home/sprite/after bs=64k count=16 2>/dev/null && sync \
                 && wc -c < /home/sprite/after",
            )
            .await;
        assert_eq!(out.trim(), "1048576", "{what}");

        // Deleting the files gives the space back to the flooding sprite.
        let out = d
            .sh(
                "flood",
                "sudo sh -c 'rm -rf /var/flood && sync && echo back > /var/after && cat /var/after \
                 && rm /var/after'",
            )
            .await;
        assert_eq!(out, "back\n", "{what}");
    }

    stop.store(true, Ordering::SeqCst);
    let worst = watcher.await.unwrap();
    assert!(
        worst < Duration::from_secs(3),
        "the neighbour took {worst:?} to answer during the flood"
    );
    d.delete("flood").await;
    d.delete("calm").await;
}

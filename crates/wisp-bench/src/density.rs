//! Density: many sprites on one host. Creates N sprites one after another (timing each),
//! puts some warm and the rest cold, and reads what they cost: wispd's resident memory, the
//! keepers' and inits' memory per warm sprite, and the kernel's memory per warm and per cold
//! sprite (host-wide `/proc/meminfo` after `drop_caches`, so approximate on a shared host).
//! Also times listing every sprite at N, and wake and exec among them next to the same exec
//! on a running sprite. A floor for the network slot a running or warm sprite holds: the
//! same namespace and veth pair made with iproute2, measured the same way.
//!
//! States, each read after dropping the caches and letting deferred frees settle:
//! S0 before the first create; S1 all N running; S2 W warm + N-W cold; S3 all cold; S4 right
//! after deleting them and S5 40 s later. Per sprite: cold = (S3 - S0) / N, warm = cold +
//! (S2 - S3) / W, running = (S1 - S0) / N, left behind = (S4 - S0) / N and (S5 - S0) / N.
//! "Host memory" is MemAvailable with other processes' anonymous memory added back (their
//! builds come and go by hundreds of MiB); "kernel memory" is slab, percpu, kernel stacks and
//! page tables. Both are host-wide, so other users of the host blur them: a second reading
//! before the first create gives the noise.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::client::Api;
use crate::daemon::Daemon;
use crate::floor;
use crate::report::fmt_value;
use crate::stats::{quantile, Figure, Quantity};

/// Wake figures take at least this many samples each.
pub const MIN_WAKE_RUNS: usize = 20;

pub struct Options {
    /// Sprites created and kept.
    pub sprites: usize,
    /// How many of them go warm (the others cold).
    pub warm: usize,
    /// Samples of each wake figure and of the exec they are compared with.
    pub wake_runs: usize,
    /// Full listings timed, at one sprite and at N.
    pub list_runs: usize,
}

/// The sprite the wake figures use; made first (it builds the image if needed) and cold
/// during every memory reading, so that it cancels out.
const WAKE_SPRITE: &str = "bench-dwake";

fn sprite(i: usize) -> String {
    format!("bench-d{i:05}")
}

/// The second reading after deleting the sprites comes this long after the deletes.
const LATER: Duration = Duration::from_secs(40);

/// The `/proc/meminfo` fields summed as the kernel's memory, with their labels.
const KERNEL: [(&str, &str); 5] = [
    ("SUnreclaim", "slab unreclaimable"),
    ("SReclaimable", "slab reclaimable"),
    ("Percpu", "percpu"),
    ("KernelStack", "kernel stacks"),
    ("PageTables", "page tables"),
];

/// One reading of the host's memory (after `drop_caches`) and of wispd.
struct Snapshot {
    /// `/proc/meminfo`, KiB.
    mem: HashMap<String, i64>,
    /// `/proc/slabinfo`: bytes per cache (objects allocated × object size).
    slab: HashMap<String, i64>,
    /// wispd's VmRSS (KiB), threads and open descriptors.
    wispd_rss: i64,
    wispd_threads: i64,
    wispd_fds: i64,
    /// Network slots wispd holds: its `wv<N>` namespace files.
    slots: i64,
    /// Mounts in the host's mount namespace (wispd's view, `/proc/self/mountinfo`).
    mounts: i64,
    /// Memory cgroups on the host, live and dying (`/proc/cgroups`): a removed cgroup lingers
    /// while pages charged to it remain.
    memcgs: i64,
    /// Anonymous memory (PSS) of wispd, the keepers and everything below them, KiB.
    ours_anon: i64,
    /// wispd's open descriptors by kind (`socket`, `anon_inode:[eventpoll]`, a path's
    /// directory), most first.
    wispd_fd_kinds: Vec<(String, usize)>,
}

impl Snapshot {
    /// Waits for deferred frees (network namespaces are torn down by a workqueue, much is
    /// freed after an RCU grace period), drops the page cache, dentries and inodes, and reads;
    /// again until the kernel's memory moved less than 1 MiB between two readings (at most
    /// six times).
    fn take(daemon: &Daemon) -> Result<Snapshot> {
        let mut last: Option<Snapshot> = None;
        for _ in 0..6 {
            std::thread::sleep(Duration::from_millis(700));
            std::fs::write("/proc/sys/vm/drop_caches", "3")
                .context("echo 3 > /proc/sys/vm/drop_caches (needs root)")?;
            let s = Snapshot::read(daemon)?;
            if let Some(prev) = &last {
                if (s.kernel() - prev.kernel()).abs() < 1024 {
                    return Ok(s);
                }
            }
            last = Some(s);
        }
        Ok(last.expect("read at least once"))
    }

    fn read(daemon: &Daemon) -> Result<Snapshot> {
        let ours = our_processes(daemon);
        let mut ours_anon = 0;
        for p in &ours {
            if let Ok(s) = std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")) {
                ours_anon += kib_fields(&s).get("Pss_Anon").copied().unwrap_or(0);
            }
        }
        let mem = kib_fields(&std::fs::read_to_string("/proc/meminfo")?);
        let slab = slabinfo(&std::fs::read_to_string("/proc/slabinfo")?);
        let pid = daemon.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .context("reading wispd's status")?;
        let mut kinds: HashMap<String, usize> = HashMap::new();
        for e in std::fs::read_dir(format!("/proc/{pid}/fd"))?.flatten() {
            let target = std::fs::read_link(e.path()).unwrap_or_default();
            *kinds.entry(fd_kind(&target)).or_default() += 1;
        }
        let wispd_fds = kinds.values().sum::<usize>() as i64;
        let mut wispd_fd_kinds: Vec<(String, usize)> = kinds.into_iter().collect();
        wispd_fd_kinds.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        // `wv<N>` (the namespace file), not `wv<N>.owner`.
        let slots = std::fs::read_dir(daemon.netns_dir()).map_or(0, |e| {
            e.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_prefix("wv"))
                        .is_some_and(|i| i.parse::<u32>().is_ok())
                })
                .count() as i64
        });
        Ok(Snapshot {
            mem,
            slab,
            wispd_rss: field(&status, "VmRSS"),
            wispd_threads: field(&status, "Threads"),
            wispd_fds,
            slots,
            wispd_fd_kinds,
            ours_anon,
            memcgs: memcgs(),
            mounts: std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
                .map_or(0, |m| m.lines().count() as i64),
        })
    }

    /// `socket 812, anon_inode:[eventpoll] 3, ...`.
    fn fd_kinds(&self) -> String {
        self.wispd_fd_kinds
            .iter()
            .take(5)
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn m(&self, key: &str) -> i64 {
        self.mem.get(key).copied().unwrap_or(0)
    }

    fn kernel(&self) -> i64 {
        KERNEL.iter().map(|(k, _)| self.m(k)).sum()
    }

    /// MemAvailable as if no other process had anonymous memory: the builds and tests of
    /// other users of the host come and go by hundreds of MiB between two readings, which
    /// `AnonPages` (read in the same instant) shows and which is not ours.
    fn available(&self) -> i64 {
        self.m("MemAvailable") + self.m("AnonPages") - self.ours_anon
    }
}

/// wispd, its keepers and every process below them.
fn our_processes(daemon: &Daemon) -> Vec<u32> {
    let mut roots = daemon.keepers();
    roots.push(daemon.pid());
    let mut all = descendants(&roots);
    all.extend(roots);
    all.sort_unstable();
    all.dedup();
    all
}

/// What an open descriptor is: `socket`, `pipe`, `anon_inode:[eventfd]`, or the directory of
/// the file it opens.
fn fd_kind(target: &Path) -> String {
    let t = target.to_string_lossy();
    if let Some((kind, _)) = t.split_once(":[") {
        return kind.to_string();
    }
    if t.starts_with("anon_inode:") {
        return t.into_owned();
    }
    target
        .parent()
        .map_or_else(|| t.into_owned(), |p| format!("{}/", p.display()))
}

/// `Key:   123 kB` lines (meminfo, status) → key → number.
fn kib_fields(text: &str) -> HashMap<String, i64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let n = v.split_whitespace().next()?.parse().ok()?;
            Some((k.trim().to_string(), n))
        })
        .collect()
}

fn field(text: &str, key: &str) -> i64 {
    kib_fields(text).get(key).copied().unwrap_or(0)
}

/// `/proc/slabinfo` (version 2.1): cache → `num_objs × objsize` bytes.
fn slabinfo(text: &str) -> HashMap<String, i64> {
    text.lines()
        .filter(|l| !l.starts_with("slabinfo") && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let num: i64 = f.get(2)?.parse().ok()?;
            let size: i64 = f.get(3)?.parse().ok()?;
            Some((f[0].to_string(), num * size))
        })
        .collect()
}

/// What `b` holds more than `a`, per sprite, in KiB.
struct Delta<'a> {
    a: &'a Snapshot,
    b: &'a Snapshot,
    count: f64,
}

impl Delta<'_> {
    fn new<'a>(a: &'a Snapshot, b: &'a Snapshot, count: usize) -> Delta<'a> {
        Delta {
            a,
            b,
            count: count.max(1) as f64,
        }
    }

    /// Host memory no longer available ([`Snapshot::available`] went down).
    fn available(&self) -> f64 {
        (self.a.available() - self.b.available()) as f64 / self.count
    }

    /// The same from MemAvailable alone.
    fn raw_available(&self) -> f64 {
        (self.a.m("MemAvailable") - self.b.m("MemAvailable")) as f64 / self.count
    }

    fn kernel(&self) -> f64 {
        (self.b.kernel() - self.a.kernel()) as f64 / self.count
    }

    fn wispd_rss(&self) -> f64 {
        (self.b.wispd_rss - self.a.wispd_rss) as f64 / self.count
    }

    /// `slab unreclaimable 12.3, percpu 7.0, ...` KiB per sprite.
    fn kernel_parts(&self) -> String {
        KERNEL
            .iter()
            .map(|(k, label)| {
                let d = (self.b.m(k) - self.a.m(k)) as f64 / self.count;
                format!("{label} {}", fmt_value(d))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The slab caches that grew most, KiB per sprite.
    fn top_slabs(&self, top: usize) -> String {
        let mut d: Vec<(&str, i64)> = self
            .b
            .slab
            .iter()
            .map(|(k, v)| (k.as_str(), v - self.a.slab.get(k).copied().unwrap_or(0)))
            .filter(|(_, d)| *d > 0)
            .collect();
        d.sort_by_key(|(_, d)| std::cmp::Reverse(*d));
        d.iter()
            .take(top)
            .map(|(k, d)| format!("{k} {}", fmt_value(*d as f64 / 1024.0 / self.count)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Resident and proportional memory of processes, KiB.
#[derive(Default, Clone, Copy)]
struct ProcMem {
    procs: usize,
    rss: i64,
    pss: i64,
}

impl ProcMem {
    fn add(&mut self, pid: u32) {
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
            let f = kib_fields(&s);
            self.procs += 1;
            self.rss += f.get("Rss").copied().unwrap_or(0);
            self.pss += f.get("Pss").copied().unwrap_or(0);
        }
    }
}

/// Every process below `roots` (children, grandchildren, ...), from `/proc/*/stat`.
fn descendants(roots: &[u32]) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        let ppid = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut out = Vec::new();
    let mut todo: Vec<u32> = roots.to_vec();
    while let Some(p) = todo.pop() {
        for c in children.get(&p).into_iter().flatten() {
            out.push(*c);
            todo.push(*c);
        }
    }
    out
}

/// The keepers of this wispd and every process below them (inits and what they run).
fn keeper_memory(daemon: &Daemon) -> (ProcMem, ProcMem) {
    let keepers = daemon.keepers();
    let mut k = ProcMem::default();
    for p in &keepers {
        k.add(*p);
    }
    let mut below = ProcMem::default();
    for p in descendants(&keepers) {
        below.add(p);
    }
    (k, below)
}

/// Lists every sprite `runs` times; returns the full listings' and the pages' times.
async fn time_lists(
    api: &Api,
    runs: usize,
    expect: usize,
) -> Result<(Vec<Duration>, Vec<Duration>)> {
    let mut all = Vec::with_capacity(runs);
    let mut pages = Vec::new();
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        let (names, p) = api.list_all().await?;
        all.push(t.elapsed());
        ensure!(
            names.len() == expect,
            "listing gave {} sprites, expected {expect}",
            names.len()
        );
        pages.extend(p);
    }
    Ok((all, pages))
}

fn ms(d: &[Duration]) -> Vec<f64> {
    let mut v: Vec<f64> = d.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

/// `num_cgroups` of the memory controller in `/proc/cgroups` (0 if absent).
fn memcgs() -> i64 {
    std::fs::read_to_string("/proc/cgroups")
        .ok()
        .and_then(|s| {
            let l = s.lines().find(|l| l.starts_with("memory\t"))?;
            l.split_whitespace().nth(2)?.parse().ok()
        })
        .unwrap_or(0)
}

/// The soft limit on open files of `pid` (`/proc/<pid>/limits`).
fn nofile_limit(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .ok()
        .and_then(|s| {
            let l = s.lines().find(|l| l.starts_with("Max open files"))?;
            Some(l.split_whitespace().nth(3)?.to_string())
        })
        .unwrap_or_else(|| "?".into())
}

/// The 1-minute load average.
fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

fn mib(kib: i64) -> String {
    fmt_value(kib as f64 / 1024.0)
}

/// Removes the floor's namespaces (and with them their veth pairs), also after a failure.
struct FloorNetns(Vec<String>);

impl Drop for FloorNetns {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip")
                .args(["netns", "del", n])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The floor of a network slot: `k` network namespaces, each with a veth pair to the host
/// (both ends and `lo` up), made with iproute2. Returns the time per namespace and the
/// readings before and after.
fn netns_floor(daemon: &Daemon, k: usize) -> Result<(Vec<Duration>, Snapshot, Snapshot)> {
    ensure!(floor::on_path("ip"), "ip: not installed");
    let names: Vec<String> = (0..k)
        .map(|i| format!("wb{}n{i}", std::process::id()))
        .collect();
    let before = Snapshot::take(daemon)?;
    let mut made = FloorNetns(Vec::new());
    let mut times = Vec::with_capacity(k);
    for n in &names {
        let t = Instant::now();
        ip(&["netns", "add", n])?;
        made.0.push(n.clone());
        ip(&[
            "link", "add", n, "type", "veth", "peer", "name", "eth0", "netns", n,
        ])?;
        ip(&["link", "set", n, "up"])?;
        ip(&["-n", n, "link", "set", "lo", "up"])?;
        ip(&["-n", n, "link", "set", "eth0", "up"])?;
        times.push(t.elapsed());
    }
    let after = Snapshot::take(daemon)?;
    drop(made);
    Ok((times, before, after))
}

/// Runs the density figures on `daemon` (which must have no idle timer and no memory budget:
/// only the bench moves sprites between states). Deletes what it creates; on an error the
/// caller deletes every sprite.
pub async fn run(
    api: &Api,
    daemon: &Daemon,
    opts: &Options,
) -> Result<(Vec<Figure>, Vec<Quantity>)> {
    let n = opts.sprites.max(1);
    let w = opts.warm.min(n);
    let cold_n = n - w;
    let mut figures = Vec::new();
    let mut q = Vec::new();

    let load_before = loadavg();
    eprintln!("density: warming up (builds the base image if needed)...");
    api.create(WAKE_SPRITE).await.context("first create")?;
    let code = api.exec_ws(WAKE_SPRITE, &["true"]).await?;
    ensure!(code == 0, "true exited {code}");
    api.sleep(WAKE_SPRITE, true).await?;
    let (list1_all, _) = time_lists(api, opts.list_runs, 1).await?;

    eprintln!("density: reading memory before the first create (drop_caches), twice...");
    let s0_noise = Snapshot::take(daemon)?;
    let s0 = Snapshot::take(daemon)?;

    eprintln!("density: creating {n} sprites one after another...");
    let mut creates = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        api.create(&sprite(i))
            .await
            .with_context(|| format!("creating sprite {} of {n}", i + 1))?;
        creates.push(t.elapsed());
        if (i + 1) % 100 == 0 {
            eprintln!(
                "  {} created in {:.1} s",
                i + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    let create_total = started.elapsed();
    let tenth = (n / 10).max(1);
    let create_fig = Figure::from_samples(&format!("wisp: create (201), {n} in a row"), &creates);
    let first = Figure::from_samples(
        &format!("wisp: create, sprites 1-{tenth}"),
        &creates[..tenth],
    );
    let mut last = Figure::from_samples(
        &format!("wisp: create, sprites {}-{n}", n - tenth + 1),
        &creates[n - tenth..],
    );
    last.compare(&first);

    eprintln!("density: reading memory with all {n} running...");
    let s1 = Snapshot::take(daemon)?;

    eprintln!("density: {w} warm, {cold_n} cold...");
    let mut freeze = Vec::with_capacity(w);
    let mut stop_running = Vec::with_capacity(cold_n);
    for i in 0..n {
        let cold = i >= w;
        let t = Instant::now();
        api.sleep(&sprite(i), cold).await?;
        if cold {
            stop_running.push(t.elapsed());
        } else {
            freeze.push(t.elapsed());
        }
    }
    eprintln!("density: reading memory with {w} warm and {cold_n} cold...");
    let s2 = Snapshot::take(daemon)?;
    let (keepers, below) = keeper_memory(daemon);
    if keepers.procs != w {
        eprintln!("density: {} keepers for {w} warm sprites", keepers.procs);
    }

    eprintln!(
        "density: listing {} sprites, {} times...",
        n + 1,
        opts.list_runs
    );
    let (list_all, list_pages) = time_lists(api, opts.list_runs, n + 1).await?;

    let label = format!(" at {n} sprites");
    eprintln!(
        "density: exec on a running sprite{label}, {} runs...",
        opts.wake_runs
    );
    api.exec_ws(WAKE_SPRITE, &["true"]).await?;
    let mut exec = Vec::with_capacity(opts.wake_runs);
    for _ in 0..opts.wake_runs {
        let t = Instant::now();
        api.exec_ws(WAKE_SPRITE, &["true"]).await?;
        exec.push(t.elapsed());
    }
    let exec_fig = Figure::from_samples(&format!("wisp: exec `true`, WebSocket API{label}"), &exec);
    let [warm_fig, cold_fig] =
        crate::wake_figures(api, WAKE_SPRITE, opts.wake_runs, &label, &exec_fig).await?;
    api.sleep(WAKE_SPRITE, true).await?;

    eprintln!("density: the {w} warm ones cold too...");
    let mut stop_warm = Vec::with_capacity(w);
    for i in 0..w {
        let t = Instant::now();
        api.sleep(&sprite(i), true).await?;
        stop_warm.push(t.elapsed());
    }
    eprintln!("density: reading memory with all {n} cold...");
    let s3 = Snapshot::take(daemon)?;

    eprintln!("density: deleting the {n} sprites...");
    let mut deletes = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        api.delete(&sprite(i)).await?;
        deletes.push(t.elapsed());
    }
    let deleted = Instant::now();
    eprintln!("density: reading memory after deleting them...");
    let s4 = Snapshot::take(daemon)?;
    // btrfs frees a deleted subvolume's in-memory root in its cleaner thread, after a
    // transaction commit (every 30 s by default): read again once that has had its turn.
    let wait = LATER.saturating_sub(deleted.elapsed());
    eprintln!(
        "density: reading memory again {} s after deleting them...",
        LATER.as_secs()
    );
    tokio::time::sleep(wait).await;
    let s5 = Snapshot::take(daemon)?;
    api.delete(WAKE_SPRITE).await?;

    let floor_k = w.max(100);
    eprintln!("density: floor, {floor_k} network namespaces + veth with ip...");
    let netns_floor = netns_floor(daemon, floor_k);

    // Timings.
    let list1 = Figure::from_samples("wisp: list all sprites, 1 sprite (1 page)", &list1_all);
    let pages = list_pages.len() / list_all.len().max(1);
    let mut list_n = Figure::from_samples(
        &format!(
            "wisp: list all sprites, {} sprites ({pages} pages of 50)",
            n + 1
        ),
        &list_all,
    );
    list_n.compare(&list1);
    let mut page_n = Figure::from_samples(
        &format!("wisp: list, one page of 50 at {} sprites", n + 1),
        &list_pages,
    );
    page_n.compare(&list1);
    let sleeps = [
        ("wisp: sleep warm (freeze a running sprite)", &freeze),
        ("wisp: sleep cold (stop a running sprite)", &stop_running),
        ("wisp: sleep cold (stop a warm sprite)", &stop_warm),
        ("wisp: delete a cold sprite", &deletes),
    ]
    .map(|(name, s)| Figure::from_samples(&format!("{name}{label}"), s));
    figures.extend([create_fig, first, last, exec_fig, warm_fig, cold_fig]);
    figures.extend([list1, list_n, page_n]);
    figures.extend(sleeps);

    // Amounts.
    q.push(Quantity::new(
        "load average (1 min) at the start of the suite",
        load_before,
        "",
        format!(
            "{} at the end, {} CPUs (other users of the host)",
            fmt_value(loadavg()),
            std::thread::available_parallelism().map_or(0, |n| n.get())
        ),
    ));
    let c_ms = ms(&creates);
    q.push(Quantity::new(
        "sprites created",
        n as f64,
        "sprites",
        format!("then {w} warm and {cold_n} cold (and 1 more, cold, for the wake figures)"),
    ));
    q.push(Quantity::new(
        &format!("create {n} sprites one after another"),
        create_total.as_secs_f64(),
        "s",
        format!(
            "{} sprites/s; per create median {} ms, p90 {} ms, max {} ms; median of each \
             tenth in order: {} ms; host mounts {} before, {} with all running",
            fmt_value(n as f64 / create_total.as_secs_f64()),
            fmt_value(quantile(&c_ms, 0.5)),
            fmt_value(quantile(&c_ms, 0.9)),
            fmt_value(quantile(&c_ms, 1.0)),
            creates
                .chunks(tenth)
                .map(|c| fmt_value(quantile(&ms(c), 0.5)))
                .collect::<Vec<_>>()
                .join(", "),
            s0.mounts,
            s1.mounts,
        ),
    ));

    let mixed = Delta::new(&s0, &s2, n);
    q.push(Quantity::new(
        &format!("wispd RSS per sprite ({w} warm + {cold_n} cold)"),
        mixed.wispd_rss(),
        "KiB",
        format!(
            "VmRSS {} MiB before, {} MiB at {n}; all running {} KiB/sprite, all cold {}; \
             {} MiB after deleting them; threads {} -> {} (all running {}); open fds {} -> {} \
             (all running {}: {}; all cold {}: {}; after deleting them {}; its limit {})",
            mib(s0.wispd_rss),
            mib(s2.wispd_rss),
            fmt_value(Delta::new(&s0, &s1, n).wispd_rss()),
            fmt_value(Delta::new(&s0, &s3, n).wispd_rss()),
            mib(s4.wispd_rss),
            s0.wispd_threads,
            s2.wispd_threads,
            s1.wispd_threads,
            s0.wispd_fds,
            s2.wispd_fds,
            s1.wispd_fds,
            s1.fd_kinds(),
            s3.wispd_fds,
            s3.fd_kinds(),
            s4.wispd_fds,
            nofile_limit(daemon.pid()),
        ),
    ));
    let per_warm = |k: i64| k as f64 / w.max(1) as f64;
    q.push(Quantity::new(
        "keeper + init PSS per warm sprite",
        per_warm(keepers.pss + below.pss),
        "KiB",
        format!(
            "smaps_rollup of {} keepers and the {} processes below them: RSS {} KiB per warm \
             sprite; keeper PSS {} (RSS {}), init and below PSS {} (RSS {})",
            keepers.procs,
            below.procs,
            fmt_value(per_warm(keepers.rss + below.rss)),
            fmt_value(per_warm(keepers.pss)),
            fmt_value(per_warm(keepers.rss)),
            fmt_value(per_warm(below.pss)),
            fmt_value(per_warm(below.rss)),
        ),
    ));

    let cold = Delta::new(&s0, &s3, n);
    let warm_extra = Delta::new(&s3, &s2, w);
    let approx = |d: &Delta| {
        format!(
            "approximate: MemAvailable after drop_caches with other processes' AnonPages \
             added back (MemAvailable alone: {})",
            fmt_value(d.raw_available())
        )
    };
    let noise = Delta::new(&s0_noise, &s0, 1);
    q.push(Quantity::new(
        "noise: host memory moved with nothing changed",
        -noise.available() / 1024.0,
        "MiB",
        format!(
            "two readings before the first create: +-{} KiB per sprite at {n}, +-{} per warm \
             sprite at {w}; MemAvailable alone moved {} MiB, the kernel's memory {} MiB",
            fmt_value(noise.available().abs() / n as f64),
            fmt_value(noise.available().abs() / w.max(1) as f64),
            fmt_value(-noise.raw_available() / 1024.0),
            fmt_value(noise.kernel() / 1024.0),
        ),
    ));
    if w > 0 {
        q.push(Quantity::new(
            "host memory per warm sprite",
            cold.available() + warm_extra.available(),
            "KiB",
            format!(
                "its cold part {} + {} more than cold, {}; sum of the parts (kernel + \
                 wispd RSS + keeper and init PSS): {}",
                fmt_value(cold.available()),
                fmt_value(warm_extra.available()),
                approx(&warm_extra),
                fmt_value(
                    cold.kernel()
                        + warm_extra.kernel()
                        + mixed.wispd_rss()
                        + per_warm(keepers.pss + below.pss)
                ),
            ),
        ));
        q.push(Quantity::new(
            "kernel memory per warm sprite",
            cold.kernel() + warm_extra.kernel(),
            "KiB",
            format!(
                "its cold part {} + more than cold: {}; slab caches that grew most: {}",
                fmt_value(cold.kernel()),
                warm_extra.kernel_parts(),
                warm_extra.top_slabs(6)
            ),
        ));
    }
    q.push(Quantity::new(
        "host memory per cold sprite",
        cold.available(),
        "KiB",
        approx(&cold),
    ));
    q.push(Quantity::new(
        "kernel memory per cold sprite",
        cold.kernel(),
        "KiB",
        format!(
            "{}; slab caches that grew most: {}",
            cold.kernel_parts(),
            cold.top_slabs(6)
        ),
    ));
    let running = Delta::new(&s0, &s1, n);
    q.push(Quantity::new(
        "host memory per running sprite (all running)",
        running.available(),
        "KiB",
        format!(
            "{}; kernel {} KiB: {}",
            approx(&running),
            fmt_value(running.kernel()),
            running.kernel_parts()
        ),
    ));
    q.push(Quantity::new(
        "network slots held by wispd",
        s2.slots as f64,
        "slots",
        format!(
            "{w} warm + {cold_n} cold; before {}, all running {}, all cold {}",
            s0.slots, s1.slots, s3.slots
        ),
    ));
    match netns_floor {
        Ok((times, a, b)) => {
            let d = Delta::new(&a, &b, floor_k);
            let t = ms(&times);
            q.push(Quantity::new(
                "floor: netns + veth pair (ip), kernel memory per slot",
                d.kernel(),
                "KiB",
                format!(
                    "{}; host {} KiB ({}); {floor_k} made, median {} ms each (5 ip runs); \
                     slab caches that grew most: {}",
                    d.kernel_parts(),
                    fmt_value(d.available()),
                    approx(&d),
                    fmt_value(quantile(&t, 0.5)),
                    d.top_slabs(6)
                ),
            ));
        }
        Err(e) => q.push(Quantity::new(
            "floor: netns + veth pair (ip), kernel memory per slot",
            f64::NAN,
            "KiB",
            format!("skipped: {e:#}"),
        )),
    }
    let left = Delta::new(&s0, &s4, n);
    let later = Delta::new(&s0, &s5, n);
    q.push(Quantity::new(
        "left after deleting them, per sprite",
        left.available(),
        "KiB",
        format!(
            "{}; kernel {} KiB ({}; slab caches that grew most: {}); {} s later: host {} KiB, \
             kernel {} KiB ({}); memory cgroups (live and dying) {} before, {} all running, {} \
             all cold, {} after; wispd VmRSS {} MiB (was {}), slots {}",
            approx(&left),
            fmt_value(left.kernel()),
            left.kernel_parts(),
            left.top_slabs(6),
            LATER.as_secs(),
            fmt_value(later.available()),
            fmt_value(later.kernel()),
            later.top_slabs(4),
            s0.memcgs,
            s1.memcgs,
            s3.memcgs,
            s4.memcgs,
            mib(s4.wispd_rss),
            mib(s0.wispd_rss),
            s4.slots
        ),
    ));
    Ok((figures, q))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let m =
            kib_fields("MemTotal:       24731520 kB\nPercpu:             2008 kB\nThreads:\t7\n");
        assert_eq!(m["MemTotal"], 24731520);
        assert_eq!(m["Percpu"], 2008);
        assert_eq!(m["Threads"], 7);
        let s = slabinfo(
            "slabinfo - version: 2.1\n# name <active_objs> ...\n\
             btrfs_delayed_node    169    170    312   13    1 : tunables    0    0    0\n",
        );
        assert_eq!(s["btrfs_delayed_node"], 170 * 312);
    }
}

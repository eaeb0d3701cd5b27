//! Storage figures: checkpoint, restore and fork of sprites with a little, some and a lot of
//! data written (10 MiB, 500 MiB, 2 GiB by default), next to copying the same files on the
//! host onto the same btrfs (`cp -a --reflink=never`, a real copy, and `cp -a
//! --reflink=always`, a clone) and `podman commit` of a container holding the same data.
//!
//! The goal is a big/small ratio near 1 for Wisp's operations: a checkpoint is a btrfs
//! snapshot, a restore and a fork are snapshots of a snapshot, so none of them copies data.
//! Every run does every operation on both sprites in turn, so drift in the machine's speed
//! hits all figures alike.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};

use crate::client::Api;
use crate::daemon::Daemon;
use crate::floor;
use crate::peers::Peers;
use crate::stats::{Figure, Scaling};

pub struct Options {
    /// Timed runs (one more, untimed, warms up).
    pub runs: usize,
    /// MiB written into the small, the middle and the big sprite.
    pub small_mb: u64,
    pub mid_mb: u64,
    pub big_mb: u64,
    /// The image's root, for podman.
    pub rootfs: PathBuf,
    /// Timed `podman commit`s per size (each writes the data again as a layer).
    pub podman_runs: usize,
    /// Files the data is spread over.
    pub files: u64,
}

/// `10 MiB`, `200 MiB`, `2 GiB`.
pub fn size_label(mb: u64) -> String {
    if mb >= 1024 && mb.is_multiple_of(1024) {
        format!("{} GiB", mb / 1024)
    } else {
        format!("{mb} MiB")
    }
}

const DATA_DIR: &str = "/home/sprite/bench-data";

/// Untimed pause after each round's copies.
const SETTLE: Duration = Duration::from_secs(1);

/// Picks one operation's samples out of a [`Subject`].
type SamplesOf = fn(&Subject) -> &[Duration];

/// One sprite with its data written, and its samples.
struct Subject {
    label: String,
    name: String,
    upper: PathBuf,
    checkpoint: Vec<Duration>,
    restore_cached: Vec<Duration>,
    restore_cold: Vec<Duration>,
    fork: Vec<Duration>,
    cp: Vec<Duration>,
    reflink: Vec<Duration>,
}

impl Subject {
    async fn new(api: &Api, daemon: &Daemon, name: &str, mb: u64, files: u64) -> Result<Subject> {
        let label = size_label(mb);
        let id = api.create(name).await?;
        let per_file = (mb << 20).div_ceil(files);
        let script = data_script(mb, files);
        eprintln!("  {name}: writing {label} in {files} files of {per_file} bytes...");
        let t = Instant::now();
        let code = api.exec_ws(name, &["sh", "-c", &script]).await?;
        ensure!(code == 0, "writing the data in {name} exited {code}");
        eprintln!("  {name}: written in {:.1} s", t.elapsed().as_secs_f64());
        let upper = daemon.upper_dir(&id);
        ensure!(
            upper.join(DATA_DIR.trim_start_matches('/')).is_dir(),
            "{} does not hold the sprite's data",
            upper.display()
        );
        Ok(Subject {
            label,
            name: name.to_string(),
            upper,
            checkpoint: Vec::new(),
            restore_cached: Vec::new(),
            restore_cold: Vec::new(),
            fork: Vec::new(),
            cp: Vec::new(),
            reflink: Vec::new(),
        })
    }

    /// One round: checkpoint, restore to it twice (first with the sprite's data in the page
    /// cache, as after the sprite used it, then right away again, when nothing has read the
    /// fresh layer yet), fork from it, then the peers. `record` false is the warm-up, which
    /// also checks that a fork sees every file.
    async fn round(
        &mut self,
        api: &Api,
        scratch: &Path,
        files: u64,
        i: usize,
        record: bool,
    ) -> Result<()> {
        // Timed operations start on a running sprite (the idle timer may have frozen it).
        api.exec_ws(&self.name, &["true"]).await?;
        let t = Instant::now();
        let ck = api.checkpoint(&self.name).await?;
        let checkpoint = t.elapsed();

        let read = format!("cat {DATA_DIR}/* > /dev/null");
        let code = api.exec_ws(&self.name, &["sh", "-c", &read]).await?;
        ensure!(code == 0, "reading the data in {} exited {code}", self.name);
        let t = Instant::now();
        api.restore(&self.name, &ck).await?;
        let restore_cached = t.elapsed();
        let t = Instant::now();
        api.restore(&self.name, &ck).await?;
        let restore_cold = t.elapsed();

        let fork_name = format!("{}-fork{i}", self.name);
        let t = Instant::now();
        api.fork(&fork_name, &self.name, &ck).await?;
        let fork = t.elapsed();
        if !record {
            let check = format!("test $(ls {DATA_DIR} | wc -l) -eq {files}");
            let code = api.exec_ws(&fork_name, &["sh", "-c", &check]).await?;
            ensure!(
                code == 0,
                "the fork {fork_name} lacks files of {}",
                self.name
            );
        }
        api.delete(&fork_name).await?;

        let dst = scratch.join(format!("{}-{i}", self.name));
        let cp = floor::copy_tree(&self.upper, &dst, false)?;
        let reflink = floor::copy_tree(&self.upper, &dst, true)?;
        // Freeing a big copy goes on in the background (btrfs cleaner, async discard of the
        // loop file): let it settle so that it does not land on the next round's figures.
        std::thread::sleep(SETTLE);

        if record {
            self.checkpoint.push(checkpoint);
            self.restore_cached.push(restore_cached);
            self.restore_cold.push(restore_cold);
            self.fork.push(fork);
            self.cp.push(cp);
            self.reflink.push(reflink);
        }
        Ok(())
    }
}

/// The figures of one operation on each sprite: each compared with a real copy of the same
/// data (when given), the bigger ones also with the smallest; and how the operation scales
/// from the smallest to the biggest.
fn sizes(
    figures: &mut Vec<Figure>,
    scaling: &mut Vec<Scaling>,
    op: &str,
    subjects: &[Subject],
    samples: SamplesOf,
    vs: Option<&[Figure]>,
) -> Vec<Figure> {
    let mut figs: Vec<Figure> = subjects
        .iter()
        .map(|s| Figure::from_samples(&format!("{op}, {}", s.label), samples(s)))
        .collect();
    let first = figs[0].clone();
    for (i, f) in figs.iter_mut().enumerate() {
        match vs {
            Some(cp) => {
                f.compare(&cp[i]);
                if i > 0 {
                    f.compare_also(&first);
                }
            }
            None if i > 0 => f.compare(&first),
            None => {}
        }
    }
    let (a, z) = (&subjects[0], &subjects[subjects.len() - 1]);
    scaling.push(Scaling::new(
        op,
        (&a.label, &figs[0]),
        (&z.label, &figs[figs.len() - 1]),
    ));
    figures.extend(figs.iter().cloned());
    figs
}

/// `podman commit` of a container holding `mb` MiB in `files` files (written like a sprite's),
/// `runs` times; compared later with Wisp's checkpoint.
fn podman_commit(peers: &mut Peers, label: &str, mb: u64, files: u64, runs: usize) -> Figure {
    let name = format!("peer: podman commit, {label}");
    if let Some(why) = Peers::missing("podman", "podman") {
        return Figure::skipped(&name, why);
    }
    let what = format!("commit{mb}");
    let measured = peers.podman_start(&what).and_then(|c| {
        eprintln!("  podman container {c}: writing {label}...");
        peers.podman_sh(&c, &data_script(mb, files))?;
        (0..runs)
            .map(|i| peers.podman_commit(&c, i))
            .collect::<Result<Vec<_>>>()
    });
    let c = peers.container_name(&what);
    peers.podman_rm(&c);
    match measured {
        Ok(s) => Figure::from_samples(&name, &s),
        Err(e) => {
            eprintln!("{name}: skipped: {e:#}");
            Figure::skipped(&name, format!("{e:#}"))
        }
    }
}

/// A shell script writing `mb` MiB of random data in `files` files under [`DATA_DIR`].
fn data_script(mb: u64, files: u64) -> String {
    let per_file = (mb << 20).div_ceil(files);
    format!(
        "set -e; mkdir -p {DATA_DIR}; cd {DATA_DIR}; i=0; \
         while [ $i -lt {files} ]; do head -c {per_file} /dev/urandom > f$i; i=$((i+1)); done; \
         sync"
    )
}

/// Runs the storage figures on `daemon` (started with a pool big enough for the big sprite
/// twice over). Deletes what it creates; on an error the caller deletes every sprite.
pub async fn run(
    api: &Api,
    daemon: &Daemon,
    opts: &Options,
) -> Result<(Vec<Figure>, Vec<Scaling>)> {
    let scratch = daemon.pool_dir().join("bench-copies");
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let mut subjects = Vec::new();
    for (name, mb) in [
        ("bench-st-small", opts.small_mb),
        ("bench-st-mid", opts.mid_mb),
        ("bench-st-big", opts.big_mb),
    ] {
        subjects.push(Subject::new(api, daemon, name, mb, opts.files).await?);
    }
    let runs = opts.runs.max(1);
    let labels: Vec<&str> = subjects.iter().map(|s| s.label.as_str()).collect();
    eprintln!(
        "checkpoint, restore, fork, cp -a --reflink=never|always on {}: {runs} runs + 1 warm-up...",
        labels.join(", ")
    );
    for i in 0..=runs {
        for s in subjects.iter_mut() {
            s.round(api, &scratch, opts.files, i, i > 0).await?;
        }
    }

    let mut figures = Vec::new();
    let mut scaling = Vec::new();
    let mut peer_figs = Vec::new();
    let mut peer_scaling = Vec::new();
    let cp = sizes(
        &mut peer_figs,
        &mut peer_scaling,
        "peer: cp -a --reflink=never + sync",
        &subjects,
        |s| &s.cp,
        None,
    );
    sizes(
        &mut peer_figs,
        &mut peer_scaling,
        "peer: cp -a --reflink=always + sync",
        &subjects,
        |s| &s.reflink,
        Some(&cp),
    );
    // podman's container storage is not on the pool: its figures compare with the checkpoint
    // but not with the copies above.
    let mut peers = Peers::new(&opts.rootfs)?;
    let mut commits: Vec<Figure> = [opts.small_mb, opts.mid_mb, opts.big_mb]
        .iter()
        .zip(&subjects)
        .map(|(mb, s)| podman_commit(&mut peers, &s.label, *mb, opts.files, opts.podman_runs))
        .collect();
    let first = commits[0].clone();
    for c in commits.iter_mut().skip(1) {
        c.compare(&first);
    }
    if commits.iter().all(|c| c.skipped.is_none()) {
        let (a, z) = (&subjects[0], &subjects[subjects.len() - 1]);
        peer_scaling.push(Scaling::new(
            "peer: podman commit",
            (&a.label, &commits[0]),
            (&z.label, &commits[commits.len() - 1]),
        ));
    }
    let left = peers.cleanup();
    ensure!(left.is_empty(), "podman left: {}", left.join("; "));
    let ops: [(&str, SamplesOf); 4] = [
        ("wisp: checkpoint", |s| &s.checkpoint),
        ("wisp: restore, data in page cache", |s| &s.restore_cached),
        ("wisp: restore, data not cached", |s| &s.restore_cold),
        ("wisp: fork from checkpoint", |s| &s.fork),
    ];
    for (op, samples) in ops {
        let mut figs = sizes(
            &mut Vec::new(),
            &mut scaling,
            op,
            &subjects,
            samples,
            Some(&cp),
        );
        if op == "wisp: checkpoint" {
            for (f, c) in figs.iter_mut().zip(&commits) {
                f.compare_also(c);
            }
        }
        figures.extend(figs);
    }
    figures.extend(peer_figs);
    figures.extend(commits);
    scaling.extend(peer_scaling);

    for s in &subjects {
        api.delete(&s.name).await?;
    }
    std::fs::remove_dir_all(&scratch).with_context(|| format!("removing {}", scratch.display()))?;
    Ok((figures, scaling))
}

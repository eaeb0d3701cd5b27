//! The cost of the hardening: the bench's wispd (every sprite in its own user namespace, with
//! the seccomp filter, the reduced capability set and the /proc masks) next to a second wispd
//! started with `--no-hardening` (host ids, no filter, every capability, no masks), in the
//! same run. Samples alternate between the two daemons, so load that comes and goes on the
//! machine falls on both alike.

use std::time::{Duration, Instant};

use anyhow::Result;

use crate::client::Api;
use crate::daemon::Daemon;
use crate::stats::Figure;

pub struct Options {
    pub runs: usize,
}

/// A daemon under test, and the name prefix of its figures.
struct Side<'a> {
    label: &'static str,
    api: &'a Api,
}

/// Measures `hardened` (the bench's own wispd) against `baseline` (`--no-hardening`).
pub async fn run(hardened: &Api, baseline: &Api, opts: &Options) -> Result<Vec<Figure>> {
    let runs = opts.runs.max(1);
    let sides = [
        Side {
            label: "hardened",
            api: hardened,
        },
        Side {
            label: "no hardening",
            api: baseline,
        },
    ];
    for s in &sides {
        s.api.create("bench-hw").await?;
        s.api.exec_ws("bench-hw", &["true"]).await?;
    }

    eprintln!("hardening: create -> first exec, {runs} runs on each daemon...");
    let mut create: [Vec<Duration>; 2] = Default::default();
    for i in 0..runs {
        // Alternate which daemon goes first, so neither always runs right after the other.
        for k in [i % 2, 1 - i % 2] {
            let s = &sides[k];
            let name = format!("bench-h{i}");
            let t = Instant::now();
            s.api.create(&name).await?;
            s.api.exec_ws(&name, &["true"]).await?;
            create[k].push(t.elapsed());
            s.api.delete(&name).await?;
        }
    }

    let execs = runs * 4;
    eprintln!("hardening: exec round trip, {execs} runs on each daemon...");
    let mut exec: [Vec<Duration>; 2] = Default::default();
    for i in 0..execs {
        for k in [i % 2, 1 - i % 2] {
            let t = Instant::now();
            sides[k].api.exec_ws("bench-hw", &["true"]).await?;
            exec[k].push(t.elapsed());
        }
    }
    for s in &sides {
        s.api.delete("bench-hw").await?;
    }

    let mut figures = Vec::new();
    for (what, samples) in [
        ("create -> first exec `true`", &create),
        ("exec `true`, WebSocket API", &exec),
    ] {
        let base = Figure::from_samples(&format!("{}: {what}", sides[1].label), &samples[1]);
        let mut f = Figure::from_samples(&format!("{}: {what}", sides[0].label), &samples[0]);
        f.compare(&base);
        figures.push(f);
        figures.push(base);
    }
    Ok(figures)
}

/// Starts the `--no-hardening` wispd next to the bench's own, with the same flags.
pub fn start_baseline(
    wispd: &std::path::Path,
    image_dir: &std::path::Path,
    args: &[String],
) -> Result<Daemon> {
    let mut extra = args.to_vec();
    extra.push("--no-hardening".into());
    Daemon::start_named(wispd, image_dir, &extra, "unhardened")
}

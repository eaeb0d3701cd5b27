//! `wisp-bench`: measures Wisp next to the floor (plain namespaces tools) on this machine, in
//! one run, and prints median, p90, n and ratios. `bench/run` is the front door.

mod client;
mod daemon;
mod floor;
mod report;
mod stats;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;

use crate::client::Api;
use crate::stats::Figure;

#[derive(Parser)]
#[command(about = "Benchmark Wisp against the namespace floor")]
struct Args {
    /// The wispd binary to benchmark (wisp-keeper must sit next to it).
    #[arg(long, default_value = "target/release/wispd")]
    wispd: PathBuf,
    /// Image directory holding the Debian base image (built on first use).
    #[arg(
        long,
        env = "WISP_IMAGE_DIR",
        default_value = "/var/tmp/wisp-test-images"
    )]
    image_dir: PathBuf,
    /// Runs per figure.
    #[arg(long, default_value_t = 50)]
    runs: usize,
    /// Where to write results.json and report.md.
    #[arg(long, default_value = "bench/out")]
    out: PathBuf,
}

fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<Duration> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let runs = args.runs.max(1);
    let daemon = daemon::Daemon::start(&args.wispd, &args.image_dir, &[])?;
    let api = Api::new(&daemon.base_url, &daemon.token);
    let lower = args.image_dir.join("debian-bookworm/rootfs");

    // Warm-up: the first create may build the image.
    eprintln!("warming up (builds the base image if needed)...");
    api.create("bench-warm").await.context("first create")?;
    api.exec_ws("bench-warm", &["true"]).await?;

    let mut figures = Vec::new();

    eprintln!("create -> first exec done, {runs} runs...");
    let mut create = Vec::with_capacity(runs);
    for i in 0..runs {
        let name = format!("bench-c{i}");
        let t = Instant::now();
        api.create(&name).await?;
        let code = api.exec_ws(&name, &["true"]).await?;
        create.push(t.elapsed());
        anyhow::ensure!(code == 0, "true exited {code}");
        api.delete(&name).await?;
    }
    let mut create_fig = Figure::from_samples("wisp: create -> first exec `true` (API)", &create);

    eprintln!("floor: unshare + overlay + pivot_root + true, {runs} runs...");
    let floor_create = match (0..runs)
        .map(|i| floor::unshare_true(&lower, i))
        .collect::<Result<Vec<_>>>()
    {
        Ok(s) => Figure::from_samples("floor: unshare+overlay+pivot_root, true", &s),
        Err(e) => Figure::skipped("floor: unshare+overlay+pivot_root, true", e.to_string()),
    };
    create_fig.compare(&floor_create);
    figures.push(create_fig);
    figures.push(floor_create);

    let exec_runs = runs * 4;
    eprintln!("exec round trip on a running sprite, {exec_runs} runs...");
    let mut ws = Vec::with_capacity(exec_runs);
    let mut http = Vec::with_capacity(exec_runs);
    for _ in 0..exec_runs {
        let t = Instant::now();
        api.exec_ws("bench-warm", &["true"]).await?;
        ws.push(t.elapsed());
        let t = Instant::now();
        api.exec_http("bench-warm", &["true"]).await?;
        http.push(t.elapsed());
    }
    let mut ws_fig = Figure::from_samples("wisp: exec `true`, WebSocket API", &ws);
    let mut http_fig = Figure::from_samples("wisp: exec `true`, HTTP POST API", &http);
    let nsenter = match floor::Running::start(&lower).and_then(|r| {
        (0..exec_runs)
            .map(|_| timed(|| r.nsenter_true().map(drop)))
            .collect::<Result<Vec<_>>>()
    }) {
        Ok(s) => Figure::from_samples("floor: nsenter -a true", &s),
        Err(e) => Figure::skipped("floor: nsenter -a true", e.to_string()),
    };
    ws_fig.compare(&nsenter);
    http_fig.compare(&nsenter);

    eprintln!("warm and cold wake, {runs} runs each...");
    let mut warm = Vec::with_capacity(runs);
    let mut cold = Vec::with_capacity(runs);
    for _ in 0..runs {
        api.sleep("bench-warm", false).await?;
        let t = Instant::now();
        api.exec_ws("bench-warm", &["true"]).await?;
        warm.push(t.elapsed());
        api.sleep("bench-warm", true).await?;
        let t = Instant::now();
        api.exec_ws("bench-warm", &["true"]).await?;
        cold.push(t.elapsed());
    }
    let mut warm_fig = Figure::from_samples("wisp: warm wake (frozen -> `true` done)", &warm);
    let mut cold_fig = Figure::from_samples("wisp: cold wake (stopped -> `true` done)", &cold);
    warm_fig.compare(&ws_fig);
    cold_fig.compare(&ws_fig);
    figures.extend([ws_fig, http_fig, nsenter, warm_fig, cold_fig]);
    api.delete("bench-warm").await?;

    report::print_table(&figures);
    report::write(&args.out, &figures)?;
    Ok(())
}

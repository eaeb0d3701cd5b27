//! `wisp-bench`: measures Wisp next to the floor (plain namespaces tools) on this machine, in
//! one run, and prints median, p90, n and ratios. `bench/run` is the front door.

mod chart;
mod client;
mod daemon;
mod density;
mod floor;
mod hardening;
mod ingress;
mod peers;
mod report;
mod stats;
mod storage;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;

use crate::client::Api;
use crate::daemon::Daemon;
use crate::peers::Peers;
use crate::stats::{Figure, Quantity, Scaling};

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
    /// Where to write results.json, report.md, machine.md and chart.png.
    #[arg(long, default_value = "bench/out")]
    out: PathBuf,
    /// Which figures to measure.
    #[arg(long, value_enum, default_value_t = Suite::All)]
    suite: Suite,
    /// Runs per storage figure (each writes and syncs copies of the big sprite's data).
    #[arg(long, default_value_t = 10)]
    storage_runs: usize,
    /// MiB written into the small storage sprite.
    #[arg(long, default_value_t = 10)]
    storage_small_mb: u64,
    /// MiB written into the middle storage sprite.
    #[arg(long, default_value_t = 500)]
    storage_mid_mb: u64,
    /// MiB written into the big storage sprite (at most 4096: the pool is 16 GiB).
    #[arg(long, default_value_t = 2048)]
    storage_big_mb: u64,
    /// Files each storage sprite's data is spread over.
    #[arg(long, default_value_t = 1000)]
    storage_files: u64,
    /// Sprites the density suite creates and keeps.
    #[arg(long, default_value_t = 1000)]
    density_sprites: usize,
    /// How many of them it puts warm (the rest go cold).
    #[arg(long, default_value_t = 200)]
    density_warm: usize,
    /// Seconds of load per path and concurrency in the ingress suite.
    #[arg(long, default_value_t = 5)]
    ingress_secs: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Suite {
    All,
    /// Create, exec and wake.
    Core,
    /// Checkpoint, restore and fork against copies.
    Storage,
    /// Many sprites: create time, memory per warm and cold sprite, listing, wake among them.
    Density,
    /// The sprite URL against a direct connection: requests/s, latency, bulk MiB/s.
    Ingress,
    /// Create and exec with the hardening (user namespace, seccomp, capabilities, masks)
    /// against a second wispd without it.
    Hardening,
}

impl Suite {
    fn has(self, s: Suite) -> bool {
        self == Suite::All || self == s
    }
}

/// The bench's wispd: a pool for the big storage sprite, its copies and its checkpoints'
/// metadata (and the density suite's thousand sprites, a few MiB of metadata), a sprite quota
/// it fits in, and no idle timer or memory budget: only the bench moves sprites between
/// running, warm and cold.
const WISPD_ARGS: [&str; 10] = [
    "--pool-size-gb",
    "16",
    "--default-disk-mb",
    "8192",
    "--idle-timeout",
    "0",
    "--cold-timeout",
    "0",
    "--memory-budget-mb",
    "0",
];

/// podman's starts take 0.2-0.6 s each: at most this many per podman figure.
const PEER_START_RUNS: usize = 50;
/// A `podman commit` writes the container's data again as a layer (seconds per GiB): at most
/// this many per size.
const PODMAN_COMMIT_RUNS: usize = 5;
/// `podman exec` takes ~0.1 s: at most this many.
const PEER_EXEC_RUNS: usize = 100;

/// `n` samples of `f` as figure `name` after one untimed warm-up (`f(n)`: first runs pay for
/// caches and lazily made state), or a skipped figure: because of `skip` (a peer that is not
/// installed, say) or the first error.
fn samples(
    name: &str,
    skip: Option<String>,
    n: usize,
    mut f: impl FnMut(usize) -> Result<Duration>,
) -> Figure {
    if let Some(why) = skip {
        eprintln!("{name}: skipped: {why}");
        return Figure::skipped(name, why);
    }
    eprintln!("{name}, {n} runs...");
    match f(n).and_then(|_| (0..n).map(&mut f).collect::<Result<Vec<_>>>()) {
        Ok(s) => Figure::from_samples(name, &s),
        Err(e) => {
            eprintln!("{name}: skipped: {e:#}");
            Figure::skipped(name, format!("{e:#}"))
        }
    }
}

/// The hardening suite: a `--no-hardening` wispd next to the bench's own, stopped (and its
/// sprites deleted) whatever happens.
async fn hardening_suite(args: &Args, api: &Api) -> Result<Vec<Figure>> {
    let extra: Vec<String> = WISPD_ARGS.iter().map(|a| a.to_string()).collect();
    let baseline = hardening::start_baseline(&args.wispd, &args.image_dir, &extra)?;
    let base_api = Api::new(&baseline.base_url, &baseline.token);
    let opts = hardening::Options {
        runs: args.runs.max(1),
    };
    let measured = hardening::run(api, &base_api, &opts).await;
    let cleaned = base_api
        .delete_all()
        .await
        .context("deleting the unhardened wispd's sprites");
    let stopped = baseline
        .stop()
        .context("cleaning up after the unhardened wispd");
    let figures = measured?;
    cleaned?;
    stopped?;
    Ok(figures)
}

/// `wisp exec true` through the CLI, configured by its environment, to its exit.
fn cli_exec_true(cli: &Path, daemon: &Daemon, sprite: &str) -> Result<Duration> {
    let t = Instant::now();
    let out = std::process::Command::new(cli)
        .args(["exec", "true"])
        .env("WISP_API_URL", &daemon.base_url)
        .env("WISP_TOKEN", &daemon.token)
        .env("WISP_SPRITE", sprite)
        .stdin(std::process::Stdio::null())
        .output()?;
    let el = t.elapsed();
    anyhow::ensure!(
        out.status.success(),
        "wisp exec true: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(el)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.storage_big_mb <= 4096
            && args.storage_small_mb <= args.storage_mid_mb
            && args.storage_mid_mb <= args.storage_big_mb,
        "storage sizes must grow small <= mid <= big, and --storage-big-mb be at most 4096"
    );
    anyhow::ensure!(args.storage_files > 0, "--storage-files must be positive");
    anyhow::ensure!(
        args.density_sprites > 0 && args.density_warm <= args.density_sprites,
        "--density-sprites must be positive and at least --density-warm"
    );
    peers::state_dirs_at_start();
    let started = Instant::now();
    let meta_started = report::now();
    let machine = report::machine();
    let extra: Vec<String> = WISPD_ARGS.iter().map(|a| a.to_string()).collect();
    let daemon = Daemon::start(&args.wispd, &args.image_dir, &extra)?;
    let api = Api::new(&daemon.base_url, &daemon.token);
    let mut figures = Vec::new();
    let mut scaling = Vec::new();
    let mut quantities = Vec::new();
    let measured = measure(
        &args,
        &daemon,
        &api,
        &mut figures,
        &mut scaling,
        &mut quantities,
    )
    .await;
    // Sprites outlive wispd: delete them all before it stops (stopping the daemon then
    // unmounts the pool and removes the data dir), also after a failure.
    let cleaned = api
        .delete_all()
        .await
        .context("deleting the bench's sprites");
    let stopped = daemon.stop().context("cleaning up after wispd");
    measured?;
    cleaned?;
    stopped?;

    report::print_table(&figures);
    report::print_scaling(&scaling);
    report::print_quantities(&quantities);
    let meta = report::Meta {
        started: meta_started,
        command: std::env::var("WISP_BENCH_COMMAND")
            .unwrap_or_else(|_| std::env::args().collect::<Vec<_>>().join(" ")),
        machine,
        load_end: report::loadavg(),
        elapsed: started.elapsed(),
    };
    report::write(&args.out, &figures, &scaling, &quantities, &meta)?;
    eprintln!(
        "wrote {}/{{results.json,report.md,machine.md,chart.png}} in {:.1} min",
        args.out.display(),
        meta.elapsed.as_secs_f64() / 60.0
    );
    Ok(())
}

async fn measure(
    args: &Args,
    daemon: &Daemon,
    api: &Api,
    figures: &mut Vec<Figure>,
    scaling: &mut Vec<Scaling>,
    quantities: &mut Vec<Quantity>,
) -> Result<()> {
    if args.suite.has(Suite::Core) {
        core(args, daemon, api, figures).await?;
    }
    if args.suite.has(Suite::Hardening) {
        figures.extend(hardening_suite(args, api).await?);
    }
    if args.suite.has(Suite::Storage) {
        let opts = storage::Options {
            runs: args.storage_runs,
            small_mb: args.storage_small_mb,
            mid_mb: args.storage_mid_mb,
            rootfs: args.image_dir.join("debian-bookworm/rootfs"),
            podman_runs: args.storage_runs.clamp(1, PODMAN_COMMIT_RUNS),
            big_mb: args.storage_big_mb,
            files: args.storage_files,
        };
        let (f, s) = storage::run(api, daemon, &opts).await?;
        figures.extend(f);
        scaling.extend(s);
    }
    if args.suite.has(Suite::Ingress) {
        let opts = ingress::Options {
            secs: args.ingress_secs.max(1),
        };
        let (f, q) = ingress::run(api, daemon, &opts).await?;
        figures.extend(f);
        quantities.extend(q);
    }
    if args.suite.has(Suite::Density) {
        let opts = density::Options {
            sprites: args.density_sprites,
            warm: args.density_warm,
            wake_runs: args.runs.max(density::MIN_WAKE_RUNS),
            list_runs: args.runs.clamp(3, 10),
        };
        let (f, q) = density::run(api, daemon, &opts).await?;
        figures.extend(f);
        quantities.extend(q);
    }
    Ok(())
}

/// Create, exec and wake, next to the namespace floor.
async fn core(args: &Args, daemon: &Daemon, api: &Api, figures: &mut Vec<Figure>) -> Result<()> {
    let runs = args.runs.max(1);
    let lower = args.image_dir.join("debian-bookworm/rootfs");

    // Warm-up: the first create may build the image.
    eprintln!("warming up (builds the base image if needed)...");
    api.create("bench-warm").await.context("first create")?;
    api.exec_ws("bench-warm", &["true"]).await?;

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
    let floor_create = samples("floor: unshare+overlay+pivot_root, true", None, runs, |i| {
        floor::unshare_true(&lower, i)
    });
    create_fig.compare(&floor_create);

    // The peers, each next to the floor; Wisp next to each of them too.
    let mut peers = Peers::new(&lower)?;
    let peer_runs = runs.min(PEER_START_RUNS);
    let mut create_peers = vec![
        samples(
            "peer: bwrap --unshare-all, ro root, true",
            Peers::missing("bwrap", "bubblewrap"),
            runs,
            |_| peers.bwrap_true(),
        ),
        samples(
            "peer: crun run (OCI bundle), true",
            Peers::missing("crun", "crun"),
            runs,
            |i| peers.crun_true(i),
        ),
        samples(
            "peer: podman run --rm --network=none, true",
            Peers::missing("podman", "podman"),
            peer_runs,
            |_| peers.podman_run_true(false),
        ),
        samples(
            "peer: podman run --rm (default CNI network), true",
            Peers::missing("podman", "podman"),
            peer_runs,
            |_| peers.podman_run_true(true),
        ),
    ];
    for p in &mut create_peers {
        create_fig.compare_also(p);
        p.compare(&floor_create);
    }
    figures.push(create_fig);
    figures.push(floor_create);
    figures.extend(create_peers);

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
    let cli = args.wispd.with_file_name("wisp");
    let mut cli_fig = samples(
        "wisp: exec `true`, CLI (`wisp exec true`)",
        (!cli.is_file()).then(|| format!("no CLI at {} (cargo build -p wisp-cli)", cli.display())),
        exec_runs,
        |_| cli_exec_true(&cli, daemon, "bench-warm"),
    );
    let nsenter = match floor::Running::start(&lower) {
        Ok(r) => samples("floor: nsenter -a true", None, exec_runs, |_| {
            r.nsenter_true()
        }),
        Err(e) => Figure::skipped("floor: nsenter -a true", e.to_string()),
    };
    eprintln!("peers: podman exec and lxc-attach on a running container...");
    let podman_exec = {
        let name = "peer: podman exec, true";
        match Peers::missing("podman", "podman") {
            Some(why) => Figure::skipped(name, why),
            None => match peers.podman_start("exec") {
                Ok(c) => {
                    let f = samples(name, None, exec_runs.min(PEER_EXEC_RUNS), |_| {
                        peers.podman_exec_true(&c)
                    });
                    peers.podman_rm(&c);
                    f
                }
                Err(e) => Figure::skipped(name, e.to_string()),
            },
        }
    };
    let lxc_attach = {
        let name = "peer: lxc-attach, true";
        match Peers::missing("lxc-attach", "lxc") {
            Some(why) => Figure::skipped(name, why),
            None => match peers.lxc_start() {
                Ok(c) => samples(name, None, exec_runs, |_| peers.lxc_attach_true(&c)),
                Err(e) => Figure::skipped(name, e.to_string()),
            },
        }
    };
    let left = peers.cleanup();
    anyhow::ensure!(left.is_empty(), "peers left: {}", left.join("; "));
    let mut exec_peers = [podman_exec, lxc_attach];
    for f in [&mut ws_fig, &mut http_fig, &mut cli_fig] {
        f.compare(&nsenter);
        for p in &exec_peers {
            f.compare_also(p);
        }
    }
    for p in &mut exec_peers {
        p.compare(&nsenter);
    }

    let [warm_fig, cold_fig] = wake_figures(api, "bench-warm", runs, "", &ws_fig).await?;
    figures.extend([ws_fig, http_fig, cli_fig, nsenter]);
    figures.extend(exec_peers);
    figures.extend([warm_fig, cold_fig]);
    api.delete("bench-warm").await?;

    Ok(())
}

/// Warm and cold wake of the running sprite `name`, `runs` times each (in turns): put it warm
/// (`POST .../sleep?mode=warm`, untimed), time an exec of `true` to its exit frame, put it
/// cold, time another. Both are compared with `exec`, an exec of `true` on a running sprite
/// measured in the same run. `suffix` ends the figures' names. Leaves the sprite running.
pub(crate) async fn wake_figures(
    api: &Api,
    name: &str,
    runs: usize,
    suffix: &str,
    exec: &Figure,
) -> Result<[Figure; 2]> {
    eprintln!("warm and cold wake{suffix}, {runs} runs each...");
    let mut warm = Vec::with_capacity(runs);
    let mut cold = Vec::with_capacity(runs);
    for _ in 0..runs {
        api.sleep(name, false).await?;
        let t = Instant::now();
        let code = api.exec_ws(name, &["true"]).await?;
        warm.push(t.elapsed());
        anyhow::ensure!(code == 0, "true exited {code} after a warm wake");
        api.sleep(name, true).await?;
        let t = Instant::now();
        let code = api.exec_ws(name, &["true"]).await?;
        cold.push(t.elapsed());
        anyhow::ensure!(code == 0, "true exited {code} after a cold wake");
    }
    let mut warm_fig = Figure::from_samples(
        &format!("wisp: warm wake (frozen -> `true` done){suffix}"),
        &warm,
    );
    let mut cold_fig = Figure::from_samples(
        &format!("wisp: cold wake (stopped -> `true` done){suffix}"),
        &cold,
    );
    warm_fig.compare(exec);
    cold_fig.compare(exec);
    Ok([warm_fig, cold_fig])
}

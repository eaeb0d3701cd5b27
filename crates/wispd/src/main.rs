//! `wispd`: the Wisp daemon. Serves the Sprites API on one host, keeps state in SQLite and
//! drives sprites through a [`runtime::Runtime`].
//!
//! wispd owns no sprite's life: each running sprite is held by its own keeper process, so
//! wispd can be stopped, killed or upgraded while sprites run; on start it simply talks to the
//! keepers' sockets again.

// No unsafe code in wispd: raw syscalls belong in wisp-sys.
#![deny(unsafe_code)]

mod activity;
mod api;
mod auth;
mod bootstrap;
mod config;
mod crash;
mod exec_env;
mod fsutil;
mod image;
mod image_build;
mod ingress;
mod insprite;
mod manager;
mod network;
mod reaper;
mod runtime;
mod storage;
mod store;
mod tenancy;
mod timefmt;

use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use axum::serve::ListenerExt;
use clap::Parser;
use nix::fcntl::{Flock, FlockArg};
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

use crate::config::{Args, Command, FileConfig, ImageCommand, Settings};
use crate::runtime::{NamespaceRuntime, NamespaceRuntimeConfig, Runtime};

/// Name of the file holding the bound address (`127.0.0.1:7575`), for scripts and tests.
pub const ADDR_FILE: &str = "wispd.addr";
const LOCK_FILE: &str = "wispd.lock";
/// How long open connections may take to finish after SIGTERM.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let command = args.command.clone();
    let file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let exe = std::env::current_exe().context("locating the wispd binary")?;
    let exe_dir = exe.parent().unwrap_or(Path::new("/"));
    let settings = Settings::resolve(args, file, exe_dir)?;

    if let Some(Command::Image(ImageCommand::Build)) = command {
        return image_build::run(&settings.image_dir);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = rt.block_on(run(settings));
    // Do not wait for blocking work (an image build, say) to finish: it is crash-safe.
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    // Orphans of dying keepers (a sprite's init) are re-parented to us, not to the host's
    // init, which reaps late; see reaper.rs.
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!("cannot become a child subreaper: {e}");
    }
    let data_dir = settings.data_dir.clone();
    for dir in [
        data_dir.clone(),
        data_dir.join("run"),
        data_dir.join("logs"),
        data_dir.join("sprites"),
    ] {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Sprite files are owned by ids inside the sprite: root there can make a setuid-root
    // binary in its upper dir. No host user may reach those files, nor keeper sockets or logs.
    for dir in ["run", "logs", "sprites"] {
        let dir = data_dir.join(dir);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {}", dir.display()))?;
    }
    // One wispd per data dir: two would fight over keepers and the database.
    let lock_path = data_dir.join(LOCK_FILE);
    let lock_file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    let _lock = match Flock::lock(lock_file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((_, e)) => bail!("another wispd is using {} ({e})", data_dir.display()),
    };

    let store =
        Arc::new(store::Store::open(&data_dir.join("wisp.db")).context("opening the database")?);
    let org = bootstrap::ensure_admin(&store, &data_dir)?;
    tracing::info!(org = %org.slug, data_dir = %data_dir.display(), "state ready");

    let pool_cfg = storage::PoolConfig {
        data_dir: data_dir.clone(),
        size: settings.pool_size_gb.map(|g| g << 30),
        sprite_quota: Some(settings.default_disk_mb << 20),
    };
    let pool: Arc<dyn storage::StoragePool> = Arc::new(
        tokio::task::spawn_blocking(move || storage::open_pool(&pool_cfg))
            .await
            .context("opening the storage pool")?
            .context("opening the storage pool")?,
    );

    let known = Arc::new(reaper::KnownChildren::default());
    if !settings.hardening {
        tracing::warn!(
            "--no-hardening: sprites start without their user namespace, seccomp filter, \
             capability limits and /proc masks; root inside is root on the host"
        );
    }
    let mut ns_runtime = NamespaceRuntime::new(
        NamespaceRuntimeConfig {
            data_dir: data_dir.clone(),
            image_dir: settings.image_dir.clone(),
            rootfs: settings.rootfs.clone(),
            keeper_bin: settings.keeper_bin.clone(),
            limits: settings.limits(),
            cgroup_parent: "wisp".into(),
            userns: settings
                .hardening
                .then(wisp_runtime::config::UserNamespace::host_default),
        },
        known.clone(),
        pool.clone(),
    );
    // Sprite networking (slots, NAT, resolver, egress policies): before anything starts a
    // sprite, so that slots of running sprites are known and kept.
    if settings.network {
        let upstreams = if settings.dns_upstreams.is_empty() {
            network::default_upstreams()
        } else {
            settings.dns_upstreams.clone()
        };
        if upstreams.is_empty() {
            tracing::warn!("no DNS upstream (none in /etc/resolv.conf): sprites cannot resolve names; set --dns-upstream");
        }
        let net = network::Network::start(network::NetworkConfig {
            data_dir: data_dir.clone(),
            subnet: settings.sprite_subnet,
            pool_size: settings.net_pool_size,
            dns_upstreams: upstreams,
        })
        .await
        .context("setting up sprite networking (--no-network turns it off)")?;
        ns_runtime = ns_runtime.with_network(net);
        ns_runtime.reconcile_network().await;
    } else {
        tracing::info!("sprite networking off: sprites get only a loopback");
    }
    let runtime: Arc<dyn Runtime> = Arc::new(ns_runtime);
    let manager = manager::SpriteManager::new(store.clone(), runtime, pool);

    // Finish what a crash interrupted before serving: otherwise a new create (journal state
    // `creating`) could be taken for an interrupted one and rolled back under the client.
    manager.reconcile().await;
    tokio::spawn(activity::run_idle_timer(
        manager.clone(),
        activity::IdlePolicy {
            idle_timeout: settings.idle_timeout,
            cold_timeout: settings.cold_timeout,
            memory_budget: settings.memory_budget_mb.map(|mb| mb << 20),
        },
    ));

    let addr_path = data_dir.join(ADDR_FILE);
    fsutil::remove_file_if_exists(&addr_path)?;
    let listener = tokio::net::TcpListener::bind(&settings.listen)
        .await
        .with_context(|| format!("listening on {}", settings.listen))?;
    let addr = listener.local_addr()?;
    fsutil::write_atomic(&addr_path, format!("{addr}\n").as_bytes(), 0o644)
        .with_context(|| format!("writing {}", addr_path.display()))?;
    tracing::info!("listening on {addr}");

    tokio::spawn(reaper::run(known));
    if settings.rootfs.is_none() {
        // Build the base image now, so the first create does not wait for it.
        let image_dir = settings.image_dir.clone();
        tokio::spawn(async move {
            match image::ensure_base_image(&image_dir).await {
                Ok(p) => tracing::info!(rootfs = %p.display(), "base image ready"),
                Err(e) => tracing::warn!("base image not available yet: {e}"),
            }
        });
    }

    let url_base = settings
        .url_base
        .clone()
        .unwrap_or_else(|| format!("http://localhost:{}", addr.port()));
    let ingress = ingress::Ingress::new(
        store.clone(),
        manager.clone(),
        &url_base,
        ingress::session::SessionKey::load_or_create(&data_dir)
            .context("loading the sprite URL session key")?,
    );
    let state = api::AppState {
        tenancy: Arc::new(tenancy::Tenancy::new(settings.org_limits)),
        store,
        manager,
        url_base: url_base.into(),
    };
    // `/.sprite/api.sock` of every ready sprite (reconcile is done); create and destroy add
    // and remove theirs.
    insprite::start(state.clone(), data_dir.clone());
    let app = api::router(state);
    // Sprite URLs (`<name>.<url-base host>`) are served on the API listener too.
    let app = ingress::wrap(app, ingress.clone());
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    // Exec traffic is many small frames: Nagle plus delayed ACKs would add ~40 ms to each
    // round trip.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY: {e}");
        }
    });
    if let Some(addr) = &settings.ingress_listen {
        let tls = match (&settings.tls_cert, &settings.tls_key) {
            (Some(c), Some(k)) => Some(ingress::server::tls_acceptor(c, k)?),
            _ => None,
        };
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr} (sprite URLs)"))?;
        tracing::info!(tls = tls.is_some(), "sprite URLs on {}", l.local_addr()?);
        let app = ingress::router_only(ingress, tls.is_some());
        tokio::spawn(ingress::server::serve(l, app, tls, stop_rx.clone()));
    }
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = stop_rx.changed().await;
    });
    let mut server = tokio::spawn(async move { server.await });

    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    tokio::select! {
        res = &mut server => {
            res.context("server task")?.context("serving")?;
            bail!("the server stopped on its own");
        }
        _ = sigterm.recv() => tracing::info!("SIGTERM: shutting down (sprites keep running)"),
        _ = sigint.recv() => tracing::info!("SIGINT: shutting down (sprites keep running)"),
    }
    let _ = stop_tx.send(true);
    if tokio::time::timeout(DRAIN_TIMEOUT, &mut server)
        .await
        .is_err()
    {
        tracing::info!("connections still open after {DRAIN_TIMEOUT:?}; closing them");
        server.abort();
    }
    let _ = fsutil::remove_file_if_exists(&addr_path);
    Ok(())
}

//! [`NamespaceRuntime`]: sprites held by `wisp-keeper` processes (Linux namespaces + cgroups).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::runtime::idmap::IdMap;
use async_trait::async_trait;
use wisp_api::policy::NetworkPolicy;
use wisp_runtime::config::{KeeperConfig, Limits, UserNamespace};
use wisp_runtime::proto::{Reply, Request, ServiceInfo, ServiceSpec, SessionInfo, SpawnSpec};

use super::keeper_client::KeeperConn;
use super::keeper_process::start_keeper;
use super::paths::{SpritePaths, MAX_SOCKET_PATH};
use super::{ExecStream, Runtime, RuntimeError, ServiceEvents, SpriteRef, SpriteState, WatchFrom};
use crate::fsutil::{remove_dir_all_if_exists, remove_file_if_exists, write_replace};
use crate::network::{Network, SpriteNet};
use crate::reaper::KnownChildren;
use crate::storage::{views, StoragePool};

const PING_TIMEOUT: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const SPAWN_TIMEOUT: Duration = Duration::from_secs(30);
/// Shutdown kills every process of the sprite; give it time to do so politely.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);
const GONE_TIMEOUT: Duration = Duration::from_secs(10);
/// The keeper itself gives the kernel up to 2 s to finish a freeze or thaw.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);
/// Service requests are answered at once (stops and starts happen after the reply).
const SERVICE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct NamespaceRuntimeConfig {
    pub data_dir: PathBuf,
    pub image_dir: PathBuf,
    /// An existing root filesystem to use as the base image instead of building one.
    pub rootfs: Option<PathBuf>,
    pub keeper_bin: PathBuf,
    pub limits: Limits,
    /// cgroup parent of every sprite (`wisp`).
    pub cgroup_parent: String,
    /// Where sprite ids come from on the host; `None` (`--no-hardening`) runs sprites without
    /// a user namespace, seccomp filter or reduced capabilities.
    pub userns: Option<UserNamespace>,
}

#[derive(Debug)]
pub struct NamespaceRuntime {
    cfg: NamespaceRuntimeConfig,
    known: Arc<KnownChildren>,
    pool: Arc<dyn StoragePool>,
    /// Per-sprite networking; `None`: sprites get only a loopback.
    network: Option<Arc<Network>>,
}

/// Sprite ids come from our own database, but they become path components: refuse anything
/// that could step outside the data dir.
fn check_id(id: &str) -> Result<(), RuntimeError> {
    let ok = id.starts_with("sprite-")
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::Refused(format!("invalid sprite id {id:?}")))
    }
}

fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
    )
}

impl NamespaceRuntime {
    pub fn new(
        cfg: NamespaceRuntimeConfig,
        known: Arc<KnownChildren>,
        pool: Arc<dyn StoragePool>,
    ) -> Self {
        NamespaceRuntime {
            cfg,
            known,
            pool,
            network: None,
        }
    }

    fn paths(&self, id: &str) -> Result<SpritePaths, RuntimeError> {
        check_id(id)?;
        Ok(SpritePaths::new(&self.cfg.data_dir, id))
    }

    /// The base image's root filesystem, building it on first use.
    pub async fn base_rootfs(&self) -> Result<PathBuf, RuntimeError> {
        if let Some(r) = &self.cfg.rootfs {
            return if r.is_dir() {
                Ok(r.clone())
            } else {
                Err(RuntimeError::Image(format!(
                    "{} is not a directory",
                    r.display()
                )))
            };
        }
        crate::image::ensure_base_image(&self.cfg.image_dir)
            .await
            .map_err(|e| RuntimeError::Image(e.to_string()))
    }

    fn make_dirs(&self, p: &SpritePaths) -> Result<(), RuntimeError> {
        let run = p.socket.parent().unwrap_or(Path::new("."));
        let logs = p.log.parent().unwrap_or(Path::new("."));
        for dir in [&p.sprite_dir, &p.root] {
            std::fs::create_dir_all(dir)
                .map_err(|e| RuntimeError::io(format!("creating {}", dir.display()), e))?;
        }
        for dir in [run, logs] {
            std::fs::create_dir_all(dir)
                .map_err(|e| RuntimeError::io(format!("creating {}", dir.display()), e))?;
        }
        Ok(())
    }

    async fn connect(&self, id: &str) -> Result<KeeperConn, RuntimeError> {
        let p = self.paths(id)?;
        match tokio::time::timeout(CONNECT_TIMEOUT, KeeperConn::connect(&p.socket)).await {
            Err(_) => Err(RuntimeError::Unresponsive),
            Ok(Err(e)) if is_gone(&e) => Err(RuntimeError::NotRunning),
            Ok(Err(e)) => Err(RuntimeError::io(
                format!("connecting to {}", p.socket.display()),
                e,
            )),
            Ok(Ok(c)) => Ok(c),
        }
    }

    /// Connects, sends `req` and returns the reply with the connection (which carries the
    /// session's streams after Spawn/Attach).
    async fn request(
        &self,
        id: &str,
        req: &Request,
        timeout: Duration,
        what: &'static str,
    ) -> Result<(KeeperConn, Reply), RuntimeError> {
        let mut conn = self.connect(id).await?;
        let reply = tokio::time::timeout(timeout, conn.call(req))
            .await
            .map_err(|_| RuntimeError::Timeout(what))??;
        if let Reply::Error { code, message } = &reply {
            return Err(match code.as_str() {
                "not_found" => RuntimeError::SessionNotFound,
                "resource_exhausted" => RuntimeError::ResourceExhausted(message.clone()),
                _ => RuntimeError::Refused(message.clone()),
            });
        }
        Ok((conn, reply))
    }

    /// A request whose only good answer is `Ok`.
    async fn simple(
        &self,
        id: &str,
        req: &Request,
        timeout: Duration,
        what: &'static str,
    ) -> Result<(), RuntimeError> {
        match self.request(id, req, timeout, what).await?.1 {
            Reply::Ok => Ok(()),
            other => Err(unexpected(&other)),
        }
    }
}

impl NamespaceRuntime {
    /// A service request; the keeper's refusals become [`RuntimeError::ServiceNotFound`] and
    /// [`RuntimeError::ServiceNotRunning`] (of `name`).
    async fn service_call(
        &self,
        id: &str,
        name: &str,
        req: &Request,
        what: &'static str,
    ) -> Result<(KeeperConn, Reply), RuntimeError> {
        let mut conn = self.connect(id).await?;
        let reply = tokio::time::timeout(SERVICE_TIMEOUT, conn.call(req))
            .await
            .map_err(|_| RuntimeError::Timeout(what))??;
        match reply {
            Reply::Error { code, message } => Err(match code.as_str() {
                "service_not_found" => RuntimeError::ServiceNotFound(name.to_string()),
                "service_not_running" => RuntimeError::ServiceNotRunning(name.to_string()),
                "resource_exhausted" => RuntimeError::ResourceExhausted(message),
                _ => RuntimeError::Refused(message),
            }),
            other => Ok((conn, other)),
        }
    }

    /// A service request answered by `ServiceSeq`.
    async fn service_seq(
        &self,
        id: &str,
        name: &str,
        req: &Request,
        what: &'static str,
    ) -> Result<u64, RuntimeError> {
        match self.service_call(id, name, req, what).await?.1 {
            Reply::ServiceSeq { seq } => Ok(seq),
            other => Err(unexpected(&other)),
        }
    }
}

/// What a keeper's answer to a ping tells.
struct Pong {
    frozen: bool,
    init_pid: i32,
}

impl NamespaceRuntime {
    /// Pings the sprite's keeper: `None` when the sprite is cold (no socket, or a stale one,
    /// which is removed).
    async fn pong(&self, sprite_id: &str) -> Result<Option<Pong>, RuntimeError> {
        let p = self.paths(sprite_id)?;
        if !p.socket.exists() {
            return Ok(None);
        }
        let ping = async {
            let mut conn = KeeperConn::connect(&p.socket).await?;
            conn.call(&Request::Ping).await.map_err(io::Error::other)
        };
        match tokio::time::timeout(PING_TIMEOUT, ping).await {
            Err(_) => Err(RuntimeError::Unresponsive),
            Ok(Ok(Reply::Pong {
                frozen, init_pid, ..
            })) => Ok(Some(Pong { frozen, init_pid })),
            Ok(Ok(other)) => Err(unexpected(&other)),
            Ok(Err(e)) if is_gone(&e) => {
                // Left behind by a keeper that died: nobody listens on it.
                tracing::info!(sprite_id, "removing stale keeper socket");
                let _ = remove_file_if_exists(&p.socket);
                Ok(None)
            }
            Ok(Err(e)) => {
                tracing::warn!(sprite_id, "pinging keeper: {e}");
                Ok(None)
            }
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `<sprite-dir>/policy/network.json`, shown read-only inside at `/.sprite/policy/network.json`.
/// It is the only copy of a sprite's egress policy: what the sprite reads is what is in
/// force, no database migration is needed, and destroy removes it with the sprite.
fn policy_file(p: &SpritePaths) -> PathBuf {
    p.sprite_dir.join("policy").join("network.json")
}

/// The stored policy; unrestricted when there is none (or it cannot be read, which is logged).
fn read_policy(p: &SpritePaths) -> NetworkPolicy {
    let path = policy_file(p);
    match std::fs::read(&path) {
        Ok(b) => NetworkPolicy::from_json(&b).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), "unreadable network policy, ignored: {e}");
            NetworkPolicy::default()
        }),
        Err(_) => NetworkPolicy::default(),
    }
}

fn write_policy(p: &SpritePaths, policy: &NetworkPolicy) -> Result<(), RuntimeError> {
    let path = policy_file(p);
    let dir = path.parent().unwrap_or(Path::new("."));
    // Not create_dir_all: a sprite destroyed meanwhile must not get its directory back.
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            return Err(RuntimeError::io(format!("creating {}", dir.display()), e));
        }
        _ => {}
    }
    let mut json = serde_json::to_vec_pretty(policy)
        .map_err(|e| RuntimeError::io("encoding the policy", io::Error::other(e)))?;
    json.push(b'\n');
    write_replace(&path, &json, 0o644)
        .map_err(|e| RuntimeError::io(format!("writing {}", path.display()), e))
}

impl NamespaceRuntime {
    /// Gives sprites their own network (slots, NAT, DNS, egress policies).
    pub fn with_network(mut self, network: Arc<Network>) -> Self {
        self.network = Some(network);
        self
    }

    /// Once at start, before anything else starts sprites: slots of sprites that still run
    /// stay theirs (policies re-applied), the rest go back to the pool.
    pub async fn reconcile_network(&self) {
        let Some(net) = &self.network else {
            return;
        };
        let mut live = std::collections::HashMap::new();
        for id in net.owners() {
            let Ok(p) = self.paths(&id) else {
                continue;
            };
            match self.state(&id).await {
                Ok(SpriteState::Cold) => {}
                _ => {
                    live.insert(id, read_policy(&p));
                }
            }
        }
        net.reconcile(live).await;
    }

    /// Takes a slot for the sprite (policy in force first) and points the keeper at it.
    async fn attach_network(
        &self,
        id: &str,
        p: &SpritePaths,
        mut config: KeeperConfig,
    ) -> Result<KeeperConfig, RuntimeError> {
        let Some(net) = &self.network else {
            return Ok(config);
        };
        if !policy_file(p).exists() {
            write_policy(p, &NetworkPolicy::default())?;
        }
        let policy = read_policy(p);
        let sn = net
            .take(id, &policy)
            .await
            .map_err(|e| RuntimeError::io("setting up the sprite's network", e))?;
        config.netns = Some(sn.netns);
        config.resolv_conf = Some(format!("nameserver {}\n", sn.gateway));
        Ok(config)
    }
}

/// Removes temporary files an interrupted atomic write left next to the sprite's run files
/// (`.<id>.json.tmp-…`), so that destroy leaves nothing named after the sprite.
/// The sprite's user namespace for its checkpoint views, if it has one (from its init).
fn view_id_mapping(init_pid: i32, p: &SpritePaths) -> io::Result<Option<views::IdMapping>> {
    let proc_dir = PathBuf::from(format!("/proc/{init_pid}"));
    let text = std::fs::read_to_string(proc_dir.join("uid_map"))?;
    if IdMap::parse(&text).unwrap_or(IdMap::IDENTITY) == IdMap::IDENTITY {
        return Ok(None);
    }
    Ok(Some(views::IdMapping {
        userns: File::open(proc_dir.join("ns/user"))?,
        staging: p.base.join("view-layers"),
    }))
}

fn remove_temp_files(p: &SpritePaths) -> io::Result<()> {
    let (Some(dir), Some(name)) = (p.config.parent(), p.config.file_name()) else {
        return Ok(());
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            remove_file_if_exists(&entry.path())?;
        }
    }
    Ok(())
}

/// Runs blocking storage work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, RuntimeError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RuntimeError::io("blocking task", io::Error::other(e)))
}

fn unexpected(reply: &Reply) -> RuntimeError {
    RuntimeError::Refused(format!("unexpected keeper reply {reply:?}"))
}

#[async_trait]
impl Runtime for NamespaceRuntime {
    async fn create(&self, sprite: &SpriteRef) -> Result<(), RuntimeError> {
        let p = self.paths(&sprite.id)?;
        self.base_rootfs().await?;
        self.make_dirs(&p)?;
        let pool = self.pool.clone();
        let id = sprite.id.clone();
        Ok(blocking(move || pool.create(&id)).await??)
    }

    async fn start(&self, sprite: &SpriteRef) -> Result<(), RuntimeError> {
        if self.is_running(&sprite.id).await? {
            return Ok(());
        }
        let p = self.paths(&sprite.id)?;
        let rootfs = self.base_rootfs().await?;
        self.make_dirs(&p)?;
        if p.socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(RuntimeError::KeeperStart(format!(
                "socket path {} is longer than {MAX_SOCKET_PATH} bytes: use a shorter data dir",
                p.socket.display()
            )));
        }
        if !self.pool.exists(&sprite.id) {
            return Err(RuntimeError::Storage(
                crate::storage::StorageError::NotFound(format!("the disk of sprite {}", sprite.id)),
            ));
        }
        // Before the keeper: the sprite's mount namespace must copy the shared mount that
        // checkpoint views propagate through.
        views::prepare(&p.checkpoint_views)
            .map_err(|e| RuntimeError::io("preparing checkpoint views", e))?;
        let layer = self.pool.layer_dirs(&sprite.id);
        // The socket is not removed here: only a keeper holding the sprite's lock may replace
        // it, so a live keeper that did not answer a ping in time is never orphaned.
        let config = KeeperConfig {
            sprite_id: sprite.id.clone(),
            hostname: sprite.name.clone(),
            socket: p.socket.clone(),
            root_mount: p.root.clone(),
            lower: vec![rootfs],
            upper: layer.upper,
            work: layer.work,
            sprite_dir: p.sprite_dir.clone(),
            limits: self.cfg.limits.clone(),
            cgroup_parent: self.cfg.cgroup_parent.clone(),
            netns: None,
            resolv_conf: None,
            userns: self.cfg.userns.clone(),
            unhardened: self.cfg.userns.is_none(),
        };
        // Network last: a slot (with the sprite's policy in force) from the pool.
        let config = self.attach_network(&sprite.id, &p, config).await?;
        let started = async {
            let json = serde_json::to_vec_pretty(&config)
                .map_err(|e| RuntimeError::KeeperStart(format!("encoding config: {e}")))?;
            write_replace(&p.config, &json, 0o600)
                .map_err(|e| RuntimeError::io(format!("writing {}", p.config.display()), e))?;
            start_keeper(&self.cfg.keeper_bin, &p.config, &p.log, &self.known).await
        };
        if let Err(e) = started.await {
            if let Some(net) = &self.network {
                net.release(&sprite.id).await;
            }
            return Err(e);
        }
        Ok(())
    }

    async fn state(&self, sprite_id: &str) -> Result<SpriteState, RuntimeError> {
        Ok(match self.pong(sprite_id).await? {
            None => SpriteState::Cold,
            Some(Pong { frozen: true, .. }) => SpriteState::Warm,
            Some(_) => SpriteState::Running,
        })
    }

    async fn freeze(&self, sprite_id: &str) -> Result<(), RuntimeError> {
        self.simple(
            sprite_id,
            &Request::Freeze,
            FREEZE_TIMEOUT,
            "freeze the sprite",
        )
        .await
    }

    async fn thaw(&self, sprite_id: &str) -> Result<(), RuntimeError> {
        self.simple(sprite_id, &Request::Thaw, FREEZE_TIMEOUT, "thaw the sprite")
            .await
    }

    async fn stop(&self, sprite_id: &str) -> Result<(), RuntimeError> {
        let p = self.paths(sprite_id)?;
        let mut conn = match self.connect(sprite_id).await {
            Err(RuntimeError::NotRunning) => {
                let _ = remove_file_if_exists(&p.socket);
                if let Some(net) = &self.network {
                    net.release(sprite_id).await;
                }
                return Ok(());
            }
            other => other?,
        };
        let reply = tokio::time::timeout(SHUTDOWN_TIMEOUT, conn.call(&Request::Shutdown))
            .await
            .map_err(|_| RuntimeError::Timeout("shut down"))?;
        match reply {
            Ok(Reply::Ok) => {}
            Ok(other) => return Err(unexpected(&other)),
            // The keeper may exit before its reply makes it out; the socket tells below.
            Err(e) => tracing::debug!(sprite_id, "shutdown reply: {e}"),
        }
        let _ = tokio::time::timeout(GONE_TIMEOUT, conn.wait_closed()).await;
        let deadline = tokio::time::Instant::now() + GONE_TIMEOUT;
        while p.socket.exists() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        remove_file_if_exists(&p.socket)
            .map_err(|e| RuntimeError::io(format!("removing {}", p.socket.display()), e))?;
        views::clear(&p.checkpoint_views)
            .map_err(|e| RuntimeError::io("removing checkpoint views", e))?;
        if let Some(net) = &self.network {
            net.release(sprite_id).await;
        }
        tracing::info!(sprite_id, "sprite stopped");
        Ok(())
    }

    async fn destroy(&self, sprite_id: &str) -> Result<(), RuntimeError> {
        let p = self.paths(sprite_id)?;
        if let Err(e) = self.stop(sprite_id).await {
            // Removing the cgroups below kills whatever is left anyway.
            tracing::warn!(sprite_id, "stopping before destroy: {e}");
        }
        let parent = self.cfg.cgroup_parent.clone();
        let id = sprite_id.to_string();
        tokio::task::spawn_blocking(move || {
            wisp_runtime::cgroup::remove_sprite_cgroups(&parent, &id)
        })
        .await
        .map_err(|e| RuntimeError::io("removing cgroups", io::Error::other(e)))?
        .map_err(|e| RuntimeError::io("removing cgroups", e))?;
        // Its processes are gone with the cgroups: the slot is free (stop released it unless
        // stop failed).
        if let Some(net) = &self.network {
            net.release(sprite_id).await;
        }
        let pool = self.pool.clone();
        let pid = sprite_id.to_string();
        let views_dir = p.checkpoint_views.clone();
        blocking(move || {
            views::clear(&views_dir)
                .map_err(|e| RuntimeError::io("removing checkpoint views", e))?;
            pool.destroy(&pid).map_err(RuntimeError::from)
        })
        .await??;
        let removal = tokio::task::spawn_blocking(move || -> io::Result<()> {
            remove_dir_all_if_exists(&p.base)?;
            remove_file_if_exists(&p.socket)?;
            remove_file_if_exists(&p.socket.with_extension("lock"))?;
            remove_file_if_exists(&p.config)?;
            remove_file_if_exists(&p.log)?;
            remove_temp_files(&p)
        })
        .await
        .map_err(|e| RuntimeError::io("removing sprite files", io::Error::other(e)))?;
        removal.map_err(|e| RuntimeError::io("removing sprite files", e))?;
        tracing::info!(sprite_id, "sprite destroyed");
        Ok(())
    }

    async fn root_dir(&self, sprite_id: &str) -> Result<PathBuf, RuntimeError> {
        match self
            .request(sprite_id, &Request::Ping, PING_TIMEOUT, "answer a ping")
            .await?
            .1
        {
            Reply::Pong { init_pid, .. } if init_pid > 0 => {
                Ok(PathBuf::from(format!("/proc/{init_pid}/root")))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn netns_path(&self, sprite_id: &str) -> Result<PathBuf, RuntimeError> {
        match self
            .request(sprite_id, &Request::Ping, PING_TIMEOUT, "answer a ping")
            .await?
            .1
        {
            Reply::Pong { init_pid, .. } if init_pid > 0 => {
                Ok(PathBuf::from(format!("/proc/{init_pid}/ns/net")))
            }
            other => Err(unexpected(&other)),
        }
    }

    fn network(&self, sprite_id: &str) -> Option<SpriteNet> {
        self.network.as_ref()?.get(sprite_id)
    }

    async fn network_policy(&self, sprite_id: &str) -> Result<NetworkPolicy, RuntimeError> {
        let p = self.paths(sprite_id)?;
        Ok(read_policy(&p))
    }

    async fn set_network_policy(
        &self,
        sprite_id: &str,
        policy: &NetworkPolicy,
    ) -> Result<(), RuntimeError> {
        let p = self.paths(sprite_id)?;
        if !p.sprite_dir.is_dir() {
            return Err(RuntimeError::NotRunning);
        }
        write_policy(&p, policy)?;
        if let Some(net) = &self.network {
            net.set_policy(sprite_id, policy)
                .await
                .map_err(|e| RuntimeError::io("applying the network policy", e))?;
        }
        Ok(())
    }

    async fn show_checkpoints(
        &self,
        sprite_id: &str,
        checkpoint_ids: &[String],
    ) -> Result<(), RuntimeError> {
        let p = self.paths(sprite_id)?;
        // One ping: whether it runs, and its init (whose user namespace the views use).
        let Some(Pong { init_pid, .. }) = self.pong(sprite_id).await? else {
            return Ok(());
        };
        let base = self.base_rootfs().await?;
        let wanted: Vec<views::View> = checkpoint_ids
            .iter()
            .map(|id| views::View {
                id: id.clone(),
                upper: self.pool.checkpoint_upper(sprite_id, id),
            })
            .collect();
        blocking(move || {
            let idmap = view_id_mapping(init_pid, &p)
                .map_err(|e| RuntimeError::io("reading the sprite's id map", e))?;
            views::sync(&p.checkpoint_views, &wanted, &base, idmap.as_ref())
                .map_err(|e| RuntimeError::io("mounting checkpoint views", e))
        })
        .await?
    }

    async fn spawn(&self, sprite_id: &str, spec: SpawnSpec) -> Result<ExecStream, RuntimeError> {
        let (conn, reply) = self
            .request(sprite_id, &Request::Spawn(spec), SPAWN_TIMEOUT, "spawn")
            .await?;
        match reply {
            Reply::Spawned { session } => Ok(conn.into_exec(session)),
            other => Err(unexpected(&other)),
        }
    }

    async fn attach(&self, sprite_id: &str, session_id: &str) -> Result<ExecStream, RuntimeError> {
        let req = Request::Attach {
            session_id: session_id.to_string(),
        };
        let (conn, reply) = self
            .request(sprite_id, &req, SPAWN_TIMEOUT, "attach")
            .await?;
        match reply {
            Reply::Attached { session } => Ok(conn.into_exec(session)),
            other => Err(unexpected(&other)),
        }
    }

    async fn list_sessions(&self, sprite_id: &str) -> Result<Vec<SessionInfo>, RuntimeError> {
        let (_, reply) = self
            .request(
                sprite_id,
                &Request::ListSessions,
                SPAWN_TIMEOUT,
                "list sessions",
            )
            .await?;
        match reply {
            Reply::Sessions { sessions } => Ok(sessions),
            other => Err(unexpected(&other)),
        }
    }

    async fn signal_session(
        &self,
        sprite_id: &str,
        session_id: &str,
        signal: i32,
    ) -> Result<(), RuntimeError> {
        let req = Request::SignalSession {
            session_id: session_id.to_string(),
            signal,
        };
        let (_, reply) = self
            .request(sprite_id, &req, SPAWN_TIMEOUT, "signal a session")
            .await?;
        match reply {
            Reply::Ok => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    async fn set_services(
        &self,
        sprite_id: &str,
        services: Vec<ServiceSpec>,
    ) -> Result<u64, RuntimeError> {
        let req = Request::SetServices { services };
        self.service_seq(sprite_id, "", &req, "set the services")
            .await
    }

    async fn list_services(&self, sprite_id: &str) -> Result<Vec<ServiceInfo>, RuntimeError> {
        match self
            .service_call(sprite_id, "", &Request::ListServices, "list services")
            .await?
            .1
        {
            Reply::Services { services } => Ok(services),
            other => Err(unexpected(&other)),
        }
    }

    async fn start_service(&self, sprite_id: &str, name: &str) -> Result<u64, RuntimeError> {
        let req = Request::StartService {
            name: name.to_string(),
        };
        self.service_seq(sprite_id, name, &req, "start a service")
            .await
    }

    async fn stop_service(
        &self,
        sprite_id: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<u64, RuntimeError> {
        let req = Request::StopService {
            name: name.to_string(),
            timeout_ms: millis(timeout),
        };
        self.service_seq(sprite_id, name, &req, "stop a service")
            .await
    }

    async fn restart_service(
        &self,
        sprite_id: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<u64, RuntimeError> {
        let req = Request::RestartService {
            name: name.to_string(),
            timeout_ms: millis(timeout),
        };
        self.service_seq(sprite_id, name, &req, "restart a service")
            .await
    }

    async fn signal_service(
        &self,
        sprite_id: &str,
        name: &str,
        signal: i32,
    ) -> Result<(), RuntimeError> {
        let req = Request::SignalService {
            name: name.to_string(),
            signal,
        };
        match self
            .service_call(sprite_id, name, &req, "signal a service")
            .await?
            .1
        {
            Reply::Ok => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    async fn watch_service(
        &self,
        sprite_id: &str,
        name: &str,
        from: WatchFrom,
        follow: bool,
    ) -> Result<Box<dyn ServiceEvents>, RuntimeError> {
        let (after_seq, tail) = match from {
            WatchFrom::After(seq) => (Some(seq), None),
            WatchFrom::Tail(n) => (None, n),
        };
        let req = Request::WatchService {
            name: name.to_string(),
            after_seq,
            tail,
            follow,
        };
        match self
            .service_call(sprite_id, name, &req, "watch a service")
            .await?
        {
            (conn, Reply::Ok) => Ok(conn.into_service_events()),
            (_, other) => Err(unexpected(&other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_cannot_escape() {
        assert!(check_id("sprite-0b7c8f1e-1234-4cde-8f00-aabbccddeeff").is_ok());
        for bad in [
            "../etc",
            "sprite-../x",
            "sprite-a/b",
            "other",
            "sprite-a.b",
            "",
        ] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }

    fn runtime(dir: &Path) -> NamespaceRuntime {
        runtime_with(dir, Arc::new(crate::manager::tests::FakePool::default()))
    }

    fn runtime_with(dir: &Path, pool: Arc<crate::manager::tests::FakePool>) -> NamespaceRuntime {
        NamespaceRuntime::new(
            NamespaceRuntimeConfig {
                data_dir: dir.to_path_buf(),
                image_dir: dir.join("images"),
                rootfs: Some(dir.to_path_buf()),
                keeper_bin: PathBuf::from("/nonexistent/wisp-keeper"),
                limits: Limits::default(),
                cgroup_parent: "wisp".into(),
                userns: None,
            },
            Arc::new(KnownChildren::default()),
            pool,
        )
    }

    #[tokio::test]
    async fn stale_socket_means_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime(dir.path());
        let id = "sprite-test";
        assert!(!rt.is_running(id).await.unwrap());
        // A socket file nobody listens on, as a killed keeper leaves behind.
        let p = SpritePaths::new(dir.path(), id);
        std::fs::create_dir_all(p.socket.parent().unwrap()).unwrap();
        drop(std::os::unix::net::UnixListener::bind(&p.socket).unwrap());
        assert!(p.socket.exists());
        assert!(!rt.is_running(id).await.unwrap());
        assert!(!p.socket.exists());
        // Stop of a stopped sprite succeeds; spawn reports NotRunning.
        rt.stop(id).await.unwrap();
        let spec = SpawnSpec {
            argv: vec!["true".into()],
            path: "true".into(),
            env: vec![],
            dir: "/".into(),
            user: "sprite".into(),
            tty: false,
            rows: 24,
            cols: 80,
            stdin: false,
            max_run_after_disconnect_ms: None,
        };
        assert!(matches!(
            rt.spawn(id, spec).await,
            Err(RuntimeError::NotRunning)
        ));
    }

    #[tokio::test]
    async fn create_and_destroy_files() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Arc::new(crate::manager::tests::FakePool::default());
        let rt = runtime_with(dir.path(), pool.clone());
        let s = SpriteRef {
            id: "sprite-abc".into(),
            name: "abc".into(),
        };
        rt.create(&s).await.unwrap();
        let p = SpritePaths::new(dir.path(), &s.id);
        assert!(p.sprite_dir.is_dir() && p.root.is_dir());
        assert!(pool.exists(&s.id));
        // Without root, cgroup removal of a sprite that never had cgroups must still succeed
        // for destroy to be usable; skip the check where the stub says otherwise.
        if rt.destroy(&s.id).await.is_ok() {
            assert!(!p.base.exists());
            assert!(!pool.exists(&s.id));
        }
    }
}

//! The runtime driver: how wispd makes sprites exist and run commands in them.
//!
//! [`Runtime`] is the seam between the API/lifecycle code and a concrete isolation technology.
//! Today there is [`NamespaceRuntime`] (one `wisp-keeper` process per running sprite, Linux
//! namespaces); a microVM runtime can implement the same trait later.
//!
//! Exec streams are split in two halves, [`ExecEvents`] (output and exit) and [`ExecInput`]
//! (stdin, EOF, resize, signal), so that a caller can read and write from different tasks.
//! Dropping both halves detaches from the session: the runtime keeps the process until it
//! exits or its `max_run_after_disconnect` runs out.

pub mod idmap;
mod keeper_client;
mod keeper_process;
mod namespace;
mod paths;

use async_trait::async_trait;
use bytes::Bytes;

pub use crate::network::SpriteNet;
pub use namespace::{NamespaceRuntime, NamespaceRuntimeConfig};
pub use wisp_runtime::proto::{
    ServiceEvent, ServiceEventKind, ServiceInfo, ServiceSpec, SessionInfo, SpawnSpec,
};

/// What a runtime needs to know about a sprite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpriteRef {
    /// Stable id (`sprite-<uuid>`): names directories, sockets and cgroups.
    pub id: String,
    /// The sprite's name (its hostname inside).
    pub name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("base image unavailable: {0}")]
    Image(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("keeper did not start: {0}")]
    KeeperStart(String),
    #[error("sprite is not running")]
    NotRunning,
    #[error("sprite keeper is not responding")]
    Unresponsive,
    #[error("session not found")]
    SessionNotFound,
    #[error("keeper refused the request: {0}")]
    Refused(String),
    /// The sprite hit one of its own limits (pids, memory, open files).
    #[error("the sprite is out of resources ({0}); wait for its processes to finish or stop some")]
    ResourceExhausted(String),
    #[error("keeper protocol: {0}")]
    Protocol(#[from] wisp_runtime::proto::ProtoError),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error("timed out waiting for the keeper to {0}")]
    Timeout(&'static str),
    #[error("service not found: {0}")]
    ServiceNotFound(String),
    #[error("service {0} is not running")]
    ServiceNotRunning(String),
}

impl RuntimeError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        RuntimeError::Io {
            what: what.into(),
            source,
        }
    }
}

/// Output of a session, in order. Ends with `Exit` (or the stream ends if the runtime lost
/// the session, e.g. the sprite was stopped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    Stdout(Bytes),
    Stderr(Bytes),
    /// 0–255; 128+n for a death by signal n.
    Exit(i32),
}

/// What a client can send to a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecInputMsg {
    Stdin(Bytes),
    StdinEof,
    Resize { rows: u16, cols: u16 },
    Signal(i32),
}

#[async_trait]
pub trait ExecEvents: Send {
    /// The next event; `Ok(None)` after `Exit` or when the stream ended without one.
    /// Cancel-safe: dropping the future loses nothing, so it can sit in `tokio::select!`.
    async fn next_event(&mut self) -> Result<Option<ExecEvent>, RuntimeError>;
}

#[async_trait]
pub trait ExecInput: Send {
    async fn send(&mut self, msg: ExecInputMsg) -> Result<(), RuntimeError>;
}

/// A session just spawned or attached to.
pub struct ExecStream {
    pub session: SessionInfo,
    pub events: Box<dyn ExecEvents>,
    pub input: Box<dyn ExecInput>,
}

impl std::fmt::Debug for ExecStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecStream")
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

/// The events of one service, oldest first (see [`Runtime::watch_service`]).
#[async_trait]
pub trait ServiceEvents: Send {
    /// The next event; `Ok(None)` once the stream has ended (not following, or the service
    /// was removed). Cancel-safe.
    async fn next_event(&mut self) -> Result<Option<ServiceEvent>, RuntimeError>;
}

/// Where a watch of a service starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchFrom {
    /// Every buffered event after this sequence number (what an operation caused).
    After(u64),
    /// The last `n` buffered output lines (all when `None`).
    Tail(Option<u64>),
}

/// Whether a sprite's processes exist and run, as the runtime observes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpriteState {
    /// Its processes run.
    Running,
    /// Its processes exist but are frozen (memory kept); a thaw resumes them mid-flight.
    Warm,
    /// No process: only its files exist.
    Cold,
}

/// A sprite runtime. Every method is idempotent where that makes sense (create/stop/destroy
/// of something already in that state succeed), because reconciliation replays them.
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// Makes the sprite's persistent storage exist (no processes).
    async fn create(&self, sprite: &SpriteRef) -> Result<(), RuntimeError>;
    /// Boots the sprite; returns once it accepts commands. A no-op when it already runs.
    async fn start(&self, sprite: &SpriteRef) -> Result<(), RuntimeError>;
    /// Running, warm (frozen) or cold (no processes); [`RuntimeError::Unresponsive`] when
    /// something holds the sprite but does not answer (then starting another copy would be
    /// wrong).
    async fn state(&self, sprite_id: &str) -> Result<SpriteState, RuntimeError>;
    /// `Ok(false)` when cold (a warm sprite is held, so it counts as running here).
    async fn is_running(&self, sprite_id: &str) -> Result<bool, RuntimeError> {
        Ok(self.state(sprite_id).await? != SpriteState::Cold)
    }
    /// Freezes every process of a running sprite, keeping its memory. A no-op when warm;
    /// [`RuntimeError::NotRunning`] when cold.
    async fn freeze(&self, sprite_id: &str) -> Result<(), RuntimeError>;
    /// Resumes a frozen sprite. A no-op when it runs; [`RuntimeError::NotRunning`] when cold.
    async fn thaw(&self, sprite_id: &str) -> Result<(), RuntimeError>;
    /// Stops every process of the sprite; storage stays.
    async fn stop(&self, sprite_id: &str) -> Result<(), RuntimeError>;
    /// Stops the sprite and removes everything it had on the host.
    async fn destroy(&self, sprite_id: &str) -> Result<(), RuntimeError>;
    /// A host path that names the running sprite's root directory as its processes see it
    /// (`/proc/<init>/root`), for file operations from the host. Open it once and resolve
    /// everything beneath it with `RESOLVE_IN_ROOT`: the path is only valid while that init
    /// lives. [`RuntimeError::NotRunning`] when cold.
    /// Makes exactly these checkpoints visible, read-only, at `/.sprite/checkpoints/<id>/`
    /// inside a running sprite (a no-op when it is cold; its next start shows nothing until
    /// called again).
    async fn show_checkpoints(
        &self,
        sprite_id: &str,
        checkpoint_ids: &[String],
    ) -> Result<(), RuntimeError>;
    async fn root_dir(&self, sprite_id: &str) -> Result<std::path::PathBuf, RuntimeError>;
    /// The sprite's network (address, gateway, namespace) while it holds one: running or
    /// warm, with networking on. `None` when cold or without networking. (For the parts of
    /// wispd that connect to sprites: URL ingress, the TCP proxy.)
    #[allow(dead_code)]
    fn network(&self, _sprite_id: &str) -> Option<SpriteNet> {
        None
    }
    /// The sprite's egress policy (`{"rules":[]}`, unrestricted, until one is set).
    async fn network_policy(
        &self,
        _sprite_id: &str,
    ) -> Result<wisp_api::policy::NetworkPolicy, RuntimeError> {
        Ok(wisp_api::policy::NetworkPolicy::default())
    }
    /// Stores the sprite's egress policy and puts it in force at once if the sprite runs.
    async fn set_network_policy(
        &self,
        _sprite_id: &str,
        _policy: &wisp_api::policy::NetworkPolicy,
    ) -> Result<(), RuntimeError> {
        Err(RuntimeError::Refused(
            "network policies are not supported by this runtime".into(),
        ))
    }
    /// A host path naming the running sprite's network namespace (`/proc/<init>/ns/net`), to
    /// make sockets inside it (`wisp_sys::netns`); `<path>/../../net/tcp` lists its sockets.
    /// Valid only while that init lives. [`RuntimeError::NotRunning`] when cold.
    async fn netns_path(&self, sprite_id: &str) -> Result<std::path::PathBuf, RuntimeError>;
    async fn spawn(&self, sprite_id: &str, spec: SpawnSpec) -> Result<ExecStream, RuntimeError>;
    async fn attach(&self, sprite_id: &str, session_id: &str) -> Result<ExecStream, RuntimeError>;
    async fn list_sessions(&self, sprite_id: &str) -> Result<Vec<SessionInfo>, RuntimeError>;
    async fn signal_session(
        &self,
        sprite_id: &str,
        session_id: &str,
        signal: i32,
    ) -> Result<(), RuntimeError>;

    // Services (§3.8): the runtime supervises them (start in `needs` order, restart with
    // backoff, logs), so they outlive wispd. Operations answer the event sequence number
    // they started from: watch `WatchFrom::After(seq)` to follow what they caused.

    /// Replaces the sprite's whole set of services (definitions and sticky stops).
    async fn set_services(
        &self,
        sprite_id: &str,
        services: Vec<ServiceSpec>,
    ) -> Result<u64, RuntimeError>;
    /// The state of every service the runtime holds.
    async fn list_services(&self, sprite_id: &str) -> Result<Vec<ServiceInfo>, RuntimeError>;
    /// Starts a service now (clearing a sticky stop and any backoff).
    async fn start_service(&self, sprite_id: &str, name: &str) -> Result<u64, RuntimeError>;
    /// Begins a (sticky) stop: SIGTERM, SIGKILL after `timeout`; a `stopped` event follows.
    /// [`RuntimeError::ServiceNotRunning`] when it is stopped already.
    async fn stop_service(
        &self,
        sprite_id: &str,
        name: &str,
        timeout: std::time::Duration,
    ) -> Result<u64, RuntimeError>;
    /// Stops the service if it runs, then starts it.
    async fn restart_service(
        &self,
        sprite_id: &str,
        name: &str,
        timeout: std::time::Duration,
    ) -> Result<u64, RuntimeError>;
    async fn signal_service(
        &self,
        sprite_id: &str,
        name: &str,
        signal: i32,
    ) -> Result<(), RuntimeError>;
    /// Buffered events of a service, then (with `follow`) new ones until the stream is
    /// dropped.
    async fn watch_service(
        &self,
        sprite_id: &str,
        name: &str,
        from: WatchFrom,
        follow: bool,
    ) -> Result<Box<dyn ServiceEvents>, RuntimeError>;
}

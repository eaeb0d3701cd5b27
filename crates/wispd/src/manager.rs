//! The lifecycle manager: the one place that changes whether a sprite exists or runs.
//!
//! Every transition of one sprite (create, wake, sleep, destroy) holds that sprite's tokio mutex, so
//! concurrent wakes coalesce into one start and never race a destroy. Transitions run in
//! their own task: a client hanging up mid-request must not leave a half-done transition.
//!
//! Crash safety: the journal state is written before the side effects (`creating`,
//! `destroying`) and [`SpriteManager::reconcile`] finishes or undoes whatever a crash
//! interrupted.

mod checkpoints;
mod hooks;
mod services;
mod status_counts;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use wisp_api::sprite::SpriteStatus;

pub use checkpoints::Progress;
pub use services::{ServiceError, ServiceView};

use crate::activity::Activity;
use crate::crash;
use crate::runtime::{Runtime, RuntimeError, SpriteRef, SpriteState as RunState};
use crate::storage::{StorageError, StoragePool};
use crate::store::{SpriteRow, SpriteState, Store, StoreError};
use crate::timefmt;

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("A sprite named '{0}' already exists. Please choose a different name.")]
    NameTaken(String),
    #[error("sprite not found")]
    Gone,
    #[error("internal task failed: {0}")]
    Task(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("checkpoint {0} not found")]
    CheckpointNotFound(String),
    #[error(
        "checkpoint {0} is the sprite's current checkpoint; restore another one before deleting it"
    )]
    CheckpointInUse(String),
}

/// A validated create request.
#[derive(Debug, Clone)]
pub struct NewSprite {
    pub org_id: String,
    pub name: String,
    pub url_auth: String,
    pub private_access: Option<String>,
    pub labels: Vec<String>,
    /// Fork: start from this sprite's checkpoint instead of an empty disk.
    pub from: Option<ForkFrom>,
}

/// The source of a fork, as resolved by the API (the sprite exists in the caller's org).
#[derive(Debug, Clone)]
pub struct ForkFrom {
    pub sprite_id: String,
    pub sprite_name: String,
    /// `None`: the source's newest checkpoint.
    pub checkpoint: Option<String>,
}

pub struct SpriteManager {
    store: Arc<Store>,
    runtime: Arc<dyn Runtime>,
    pool: Arc<dyn StoragePool>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    activity: Arc<Activity>,
    counts: status_counts::CountCache,
}

impl std::fmt::Debug for SpriteManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpriteManager").finish_non_exhaustive()
    }
}

fn sprite_ref(row: &SpriteRow) -> SpriteRef {
    SpriteRef {
        id: row.id.clone(),
        name: row.name.clone(),
    }
}

impl SpriteManager {
    pub fn new(
        store: Arc<Store>,
        runtime: Arc<dyn Runtime>,
        pool: Arc<dyn StoragePool>,
    ) -> Arc<Self> {
        Arc::new(SpriteManager {
            store,
            runtime,
            pool,
            locks: Mutex::new(HashMap::new()),
            activity: Arc::default(),
            counts: Default::default(),
        })
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// In-flight operations and last activity of every sprite (the idle timer's input).
    pub fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }

    pub fn runtime(&self) -> &Arc<dyn Runtime> {
        &self.runtime
    }

    fn lock_for(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(id.to_string()).or_default().clone()
    }

    fn forget_lock(&self, id: &str) {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.remove(id);
    }

    /// Runs `f` to completion in its own task, whatever happens to the caller.
    async fn detached<T, F>(
        self: &Arc<Self>,
        f: impl FnOnce(Arc<Self>) -> F,
    ) -> Result<T, ManagerError>
    where
        F: std::future::Future<Output = Result<T, ManagerError>> + Send + 'static,
        T: Send + 'static,
    {
        tokio::spawn(f(self.clone()))
            .await
            .map_err(|e| ManagerError::Task(e.to_string()))?
    }

    /// Creates and boots a sprite; returns its row once it is ready.
    pub async fn create(self: &Arc<Self>, new: NewSprite) -> Result<SpriteRow, ManagerError> {
        self.detached(|this| async move { this.create_inner(new).await })
            .await
    }

    async fn create_inner(&self, new: NewSprite) -> Result<SpriteRow, ManagerError> {
        let now = timefmt::now();
        let row = SpriteRow {
            id: format!("sprite-{}", uuid::Uuid::new_v4()),
            org_id: new.org_id,
            name: new.name,
            state: SpriteState::Creating,
            url_auth: new.url_auth,
            private_access: new.private_access,
            labels: new.labels,
            created_at: now.clone(),
            updated_at: now,
            last_started_at: None,
            last_active_at: None,
            last_warming_at: None,
            last_running_at: None,
        };
        match self.store.insert_sprite(&row) {
            Err(StoreError::NameTaken) => return Err(ManagerError::NameTaken(row.name)),
            other => other?,
        }
        crash::point("create:after-insert");
        let lock = self.lock_for(&row.id);
        let _guard = lock.lock().await;
        let sprite = sprite_ref(&row);
        let mut v0_comment = String::new();
        let booted = async {
            if let Some(from) = &new.from {
                // The source's lock keeps its checkpoint from being deleted under the copy.
                let src_lock = self.lock_for(&from.sprite_id);
                let _src = src_lock.lock().await;
                let ck = self.fork_point(&from.sprite_id, from.checkpoint.as_deref())?;
                let pool = self.pool.clone();
                let (src, new_id, ckc) = (from.sprite_id.clone(), row.id.clone(), ck.clone());
                tokio::task::spawn_blocking(move || pool.fork(&src, &ckc, &new_id))
                    .await
                    .map_err(|e| ManagerError::Task(e.to_string()))??;
                v0_comment = format!("forked from {}@{ck}", from.sprite_name);
                crash::point("fork:after-snapshot");
            }
            self.runtime.create(&sprite).await?;
            crash::point("create:after-storage");
            let pool = self.pool.clone();
            let id = row.id.clone();
            tokio::task::spawn_blocking(move || pool.checkpoint(&id, "v0"))
                .await
                .map_err(|e| ManagerError::Task(e.to_string()))??;
            crash::point("create:after-v0");
            self.runtime.start(&sprite).await?;
            Ok::<(), ManagerError>(())
        }
        .await;
        if let Err(e) = booted {
            tracing::warn!(sprite_id = %row.id, name = %row.name, "create failed, rolling back: {e}");
            if let Err(e2) = self.runtime.destroy(&row.id).await {
                tracing::warn!(sprite_id = %row.id, "rollback: {e2}");
            }
            self.store.delete_sprite(&row.id)?;
            return Err(e);
        }
        self.store
            .finish_create(&row.id, &timefmt::now(), &v0_comment)?;
        self.after_start(&row.id).await;
        tracing::info!(sprite_id = %row.id, name = %row.name, "sprite created");
        self.store.sprite_by_id(&row.id)?.ok_or(ManagerError::Gone)
    }

    /// Wakes a sprite for an operation that needs it running: a cold sprite starts, a warm
    /// one thaws, a running one is left alone. Concurrent calls coalesce under the sprite's
    /// lock into exactly one start or thaw.
    pub async fn wake(self: &Arc<Self>, row: &SpriteRow) -> Result<(), ManagerError> {
        let id = row.id.clone();
        self.detached(|this| async move { this.wake_inner(&id).await })
            .await
    }

    /// The sprite's row, re-read under its lock: a destroy or a failed create may have won.
    fn ready_row(&self, id: &str) -> Result<SpriteRow, ManagerError> {
        match self.store.sprite_by_id(id)? {
            Some(r) if r.state == SpriteState::Ready => Ok(r),
            _ => Err(ManagerError::Gone),
        }
    }

    async fn wake_inner(&self, id: &str) -> Result<(), ManagerError> {
        let lock = self.lock_for(id);
        let _guard = lock.lock().await;
        let row = self.ready_row(id)?;
        match self.runtime.state(id).await? {
            RunState::Running => {}
            RunState::Warm => {
                tracing::info!(sprite_id = %id, name = %row.name, "thawing sprite");
                self.runtime.thaw(id).await?;
                self.store.touch_running(id, &timefmt::now())?;
            }
            RunState::Cold => {
                tracing::info!(sprite_id = %id, name = %row.name, "waking sprite");
                self.runtime.start(&sprite_ref(&row)).await?;
                self.store.touch_started(id, &timefmt::now())?;
                self.after_start(id).await;
            }
        }
        Ok(())
    }

    /// Puts a sprite to sleep. Warm (`cold == false`) freezes its processes with their
    /// memory; cold stops them (files stay). Sleeping a sprite that already sleeps at least
    /// that deeply does nothing; a warm sprite asked to go cold is stopped.
    pub async fn sleep(self: &Arc<Self>, row: &SpriteRow, cold: bool) -> Result<(), ManagerError> {
        let id = row.id.clone();
        self.detached(move |this| async move { this.sleep_inner(&id, cold).await })
            .await
    }

    async fn sleep_inner(&self, id: &str, cold: bool) -> Result<(), ManagerError> {
        let lock = self.lock_for(id);
        let _guard = lock.lock().await;
        let row = self.ready_row(id)?;
        match (self.runtime.state(id).await?, cold) {
            (RunState::Cold, _) | (RunState::Warm, false) => {}
            (RunState::Running, false) => {
                tracing::info!(sprite_id = %id, name = %row.name, "freezing sprite (warm)");
                self.runtime.freeze(id).await?;
                self.store.touch_warming(id, &timefmt::now())?;
            }
            (RunState::Running | RunState::Warm, true) => {
                tracing::info!(sprite_id = %id, name = %row.name, "stopping sprite (cold)");
                self.runtime.stop(id).await?;
            }
        }
        Ok(())
    }

    /// The idle timer's sleep: under the sprite's lock, freezes a *running* sprite
    /// (`cold == false`) or stops a *warm* one (`cold == true`), but only if `is_idle` still
    /// holds then. An operation counts itself in flight before it wakes the sprite, and its
    /// wake waits for this lock, so nothing that started after the timer looked is frozen
    /// under it. Returns whether the sprite was put to sleep.
    pub async fn sleep_if_idle(
        self: &Arc<Self>,
        row: &SpriteRow,
        cold: bool,
        is_idle: impl Fn() -> bool + Send + 'static,
    ) -> Result<bool, ManagerError> {
        let id = row.id.clone();
        self.detached(move |this| async move {
            let lock = this.lock_for(&id);
            let _guard = lock.lock().await;
            let row = this.ready_row(&id)?;
            let state = this.runtime.state(&id).await?;
            let from = if cold {
                RunState::Warm
            } else {
                RunState::Running
            };
            if state != from || !is_idle() {
                return Ok(false);
            }
            if cold {
                tracing::info!(sprite_id = %id, name = %row.name, "idle: stopping sprite (cold)");
                this.runtime.stop(&id).await?;
            } else {
                tracing::info!(sprite_id = %id, name = %row.name, "idle: freezing sprite (warm)");
                this.runtime.freeze(&id).await?;
                this.store.touch_warming(&id, &timefmt::now())?;
            }
            Ok(true)
        })
        .await
    }

    /// Memory pressure: stops a running or warm sprite (cold) if `is_idle` still holds under
    /// its lock. Returns whether it was stopped.
    pub async fn evict(
        self: &Arc<Self>,
        row: &SpriteRow,
        is_idle: impl Fn() -> bool + Send + 'static,
    ) -> Result<bool, ManagerError> {
        let id = row.id.clone();
        self.detached(move |this| async move {
            let lock = this.lock_for(&id);
            let _guard = lock.lock().await;
            this.ready_row(&id)?;
            if this.runtime.state(&id).await? == RunState::Cold || !is_idle() {
                return Ok(false);
            }
            this.runtime.stop(&id).await?;
            Ok(true)
        })
        .await
    }

    /// Destroys a sprite and forgets it.
    pub async fn destroy(self: &Arc<Self>, row: &SpriteRow) -> Result<(), ManagerError> {
        let id = row.id.clone();
        self.detached(|this| async move { this.destroy_inner(&id).await })
            .await
    }

    async fn destroy_inner(&self, id: &str) -> Result<(), ManagerError> {
        self.store
            .set_sprite_state(id, SpriteState::Destroying, &timefmt::now())?;
        crash::point("destroy:after-mark");
        let lock = self.lock_for(id);
        let _guard = lock.lock().await;
        self.runtime.destroy(id).await?;
        crash::point("destroy:after-runtime");
        self.store.delete_sprite(id)?;
        self.forget_lock(id);
        Ok(())
    }

    /// `running`, `warm` (frozen) or `cold` (no keeper), as the runtime observes it.
    pub async fn status(&self, sprite_id: &str) -> SpriteStatus {
        match self.runtime.state(sprite_id).await {
            Ok(RunState::Running) => SpriteStatus::Running,
            Ok(RunState::Warm) => SpriteStatus::Warm,
            Ok(RunState::Cold) => SpriteStatus::Cold,
            // Something holds the sprite but is slow to answer: it is not cold.
            Err(RuntimeError::Unresponsive) => SpriteStatus::Running,
            Err(e) => {
                tracing::warn!(sprite_id, "status: {e}");
                SpriteStatus::Cold
            }
        }
    }

    pub async fn statuses(&self, ids: &[String]) -> HashMap<String, SpriteStatus> {
        let all = futures_util::future::join_all(ids.iter().map(|id| self.status(id))).await;
        ids.iter().cloned().zip(all).collect()
    }

    /// Records that someone used the sprite.
    pub fn touch_active(&self, sprite_id: &str) {
        if let Err(e) = self.store.touch_active(sprite_id, &timefmt::now()) {
            tracing::warn!(sprite_id, "recording activity: {e}");
        }
    }

    /// Finishes what a crash interrupted: half-created sprites are rolled back (their client
    /// never got a 201), half-destroyed ones are destroyed.
    pub async fn reconcile(self: &Arc<Self>) {
        let creating = self.store.sprites_in_state(SpriteState::Creating);
        let destroying = self.store.sprites_in_state(SpriteState::Destroying);
        let (creating, destroying) = match (creating, destroying) {
            (Ok(c), Ok(d)) => (c, d),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!("reconcile: {e}");
                return;
            }
        };
        for row in creating.into_iter().chain(destroying) {
            tracing::info!(sprite_id = %row.id, name = %row.name, state = row.state.as_str(),
                "reconciling an interrupted transition");
            if let Err(e) = self.destroy(&row).await {
                tracing::error!(sprite_id = %row.id, "reconcile: {e}");
            }
        }
        if let Err(e) = self.reconcile_storage().await {
            tracing::error!("reconcile storage: {e}");
        }
        // Checkpoint views are host mounts: after a reboot they are gone, after a crash they
        // may be stale.
        match self.store.sprites_in_state(SpriteState::Ready) {
            Ok(rows) => {
                for row in rows {
                    self.after_start(&row.id).await;
                }
            }
            Err(e) => tracing::error!("reconcile views: {e}"),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::runtime::{ExecStream, SessionInfo, SpawnSpec};
    use crate::store::Organization;
    use async_trait::async_trait;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// A runtime that only counts, for lifecycle logic tests.
    #[derive(Default)]
    pub struct FakeRuntime {
        pub running: Mutex<std::collections::HashSet<String>>,
        pub frozen: Mutex<std::collections::HashSet<String>>,
        pub starts: AtomicUsize,
        pub thaws: AtomicUsize,
        pub destroys: AtomicUsize,
        pub fail_start: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl Runtime for FakeRuntime {
        async fn create(&self, _: &SpriteRef) -> Result<(), RuntimeError> {
            Ok(())
        }
        async fn start(&self, s: &SpriteRef) -> Result<(), RuntimeError> {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if self.fail_start.load(Ordering::SeqCst) {
                return Err(RuntimeError::KeeperStart("nope".into()));
            }
            self.starts.fetch_add(1, Ordering::SeqCst);
            self.running.lock().unwrap().insert(s.id.clone());
            Ok(())
        }
        async fn state(&self, id: &str) -> Result<RunState, RuntimeError> {
            Ok(if self.frozen.lock().unwrap().contains(id) {
                RunState::Warm
            } else if self.running.lock().unwrap().contains(id) {
                RunState::Running
            } else {
                RunState::Cold
            })
        }
        async fn freeze(&self, id: &str) -> Result<(), RuntimeError> {
            if !self.running.lock().unwrap().contains(id) {
                return Err(RuntimeError::NotRunning);
            }
            self.frozen.lock().unwrap().insert(id.to_string());
            Ok(())
        }
        async fn thaw(&self, id: &str) -> Result<(), RuntimeError> {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if self.frozen.lock().unwrap().remove(id) {
                self.thaws.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        }
        async fn stop(&self, id: &str) -> Result<(), RuntimeError> {
            self.running.lock().unwrap().remove(id);
            self.frozen.lock().unwrap().remove(id);
            Ok(())
        }
        async fn destroy(&self, id: &str) -> Result<(), RuntimeError> {
            self.destroys.fetch_add(1, Ordering::SeqCst);
            self.running.lock().unwrap().remove(id);
            Ok(())
        }
        async fn show_checkpoints(&self, _: &str, _: &[String]) -> Result<(), RuntimeError> {
            Ok(())
        }
        async fn root_dir(&self, _: &str) -> Result<std::path::PathBuf, RuntimeError> {
            Err(RuntimeError::NotRunning)
        }
        async fn netns_path(&self, _: &str) -> Result<std::path::PathBuf, RuntimeError> {
            Err(RuntimeError::NotRunning)
        }
        async fn spawn(&self, _: &str, _: SpawnSpec) -> Result<ExecStream, RuntimeError> {
            Err(RuntimeError::NotRunning)
        }
        async fn attach(&self, _: &str, _: &str) -> Result<ExecStream, RuntimeError> {
            Err(RuntimeError::SessionNotFound)
        }
        async fn list_sessions(&self, _: &str) -> Result<Vec<SessionInfo>, RuntimeError> {
            Ok(vec![])
        }
        async fn signal_session(&self, _: &str, _: &str, _: i32) -> Result<(), RuntimeError> {
            Err(RuntimeError::SessionNotFound)
        }
        async fn set_services(
            &self,
            id: &str,
            _: Vec<crate::runtime::ServiceSpec>,
        ) -> Result<u64, RuntimeError> {
            if self.running.lock().unwrap().contains(id) {
                Ok(0)
            } else {
                Err(RuntimeError::NotRunning)
            }
        }
        async fn list_services(
            &self,
            _: &str,
        ) -> Result<Vec<crate::runtime::ServiceInfo>, RuntimeError> {
            Ok(vec![])
        }
        async fn start_service(&self, _: &str, name: &str) -> Result<u64, RuntimeError> {
            Err(RuntimeError::ServiceNotFound(name.into()))
        }
        async fn stop_service(
            &self,
            _: &str,
            name: &str,
            _: Duration,
        ) -> Result<u64, RuntimeError> {
            Err(RuntimeError::ServiceNotFound(name.into()))
        }
        async fn restart_service(
            &self,
            _: &str,
            name: &str,
            _: Duration,
        ) -> Result<u64, RuntimeError> {
            Err(RuntimeError::ServiceNotFound(name.into()))
        }
        async fn signal_service(&self, _: &str, name: &str, _: i32) -> Result<(), RuntimeError> {
            Err(RuntimeError::ServiceNotFound(name.into()))
        }
        async fn watch_service(
            &self,
            _: &str,
            name: &str,
            _: crate::runtime::WatchFrom,
            _: bool,
        ) -> Result<Box<dyn crate::runtime::ServiceEvents>, RuntimeError> {
            Err(RuntimeError::ServiceNotFound(name.into()))
        }
    }

    /// A pool that only remembers which checkpoints exist.
    #[derive(Debug, Default)]
    pub struct FakePool {
        pub snaps: Mutex<std::collections::HashSet<(String, String)>>,
        pub live: Mutex<std::collections::HashSet<String>>,
    }

    impl StoragePool for FakePool {
        fn check_space(&self) -> Result<(), StorageError> {
            Ok(())
        }
        fn layer_dirs(&self, id: &str) -> crate::storage::LayerDirs {
            crate::storage::LayerDirs {
                upper: format!("/fake/{id}/upper").into(),
                work: format!("/fake/{id}/work").into(),
            }
        }
        fn create(&self, id: &str) -> Result<(), StorageError> {
            self.live.lock().unwrap().insert(id.into());
            Ok(())
        }
        fn exists(&self, id: &str) -> bool {
            self.live.lock().unwrap().contains(id)
        }
        fn sync(&self, _: &str) -> Result<(), StorageError> {
            Ok(())
        }
        fn checkpoint(&self, id: &str, ck: &str) -> Result<(), StorageError> {
            self.snaps.lock().unwrap().insert((id.into(), ck.into()));
            Ok(())
        }
        fn has_checkpoint(&self, id: &str, ck: &str) -> bool {
            self.snaps.lock().unwrap().contains(&(id.into(), ck.into()))
        }
        fn checkpoint_upper(&self, id: &str, ck: &str) -> std::path::PathBuf {
            format!("/fake/{id}/{ck}").into()
        }
        fn restore(&self, id: &str, ck: &str) -> Result<(), StorageError> {
            if self.has_checkpoint(id, ck) {
                Ok(())
            } else {
                Err(StorageError::NotFound(ck.into()))
            }
        }
        fn fork(&self, src: &str, ck: &str, new: &str) -> Result<(), StorageError> {
            self.restore(src, ck)?;
            self.create(new)
        }
        fn delete_checkpoint(&self, id: &str, ck: &str) -> Result<(), StorageError> {
            self.snaps.lock().unwrap().remove(&(id.into(), ck.into()));
            Ok(())
        }
        fn destroy(&self, id: &str) -> Result<(), StorageError> {
            self.live.lock().unwrap().remove(id);
            self.snaps.lock().unwrap().retain(|(s, _)| s != id);
            Ok(())
        }
        fn sprite_ids(&self) -> Result<Vec<String>, StorageError> {
            Ok(self.live.lock().unwrap().iter().cloned().collect())
        }
        fn collect_garbage(&self) -> Result<(), StorageError> {
            Ok(())
        }
    }

    fn setup() -> (Arc<SpriteManager>, Arc<FakeRuntime>) {
        let store = Arc::new(Store::open_in_memory().unwrap());
        store
            .insert_org(&Organization {
                id: "o1".into(),
                slug: "default".into(),
                name: "default".into(),
                created_at: "t".into(),
            })
            .unwrap();
        let rt = Arc::new(FakeRuntime::default());
        let pool = Arc::new(FakePool::default());
        (SpriteManager::new(store, rt.clone(), pool), rt)
    }

    fn new_sprite(name: &str) -> NewSprite {
        NewSprite {
            org_id: "o1".into(),
            name: name.into(),
            url_auth: "sprite".into(),
            private_access: None,
            labels: vec![],
            from: None,
        }
    }

    #[tokio::test]
    async fn create_wake_destroy() {
        let (m, rt) = setup();
        let row = m.create(new_sprite("a")).await.unwrap();
        assert_eq!(row.state, SpriteState::Ready);
        assert!(row.last_started_at.is_some());
        assert_eq!(m.status(&row.id).await, SpriteStatus::Running);
        assert!(matches!(
            m.create(new_sprite("a")).await,
            Err(ManagerError::NameTaken(_))
        ));
        // Cold, then eight concurrent wakes start it exactly once.
        rt.stop(&row.id).await.unwrap();
        assert_eq!(m.status(&row.id).await, SpriteStatus::Cold);
        let wakes = (0..8).map(|_| m.wake(&row));
        for r in futures_util::future::join_all(wakes).await {
            r.unwrap();
        }
        assert_eq!(rt.starts.load(Ordering::SeqCst), 2);
        m.destroy(&row).await.unwrap();
        assert!(m.store().sprite_by_id(&row.id).unwrap().is_none());
        assert!(matches!(m.wake(&row).await, Err(ManagerError::Gone)));
    }

    #[tokio::test]
    async fn sleep_warm_cold_and_wake() {
        let (m, rt) = setup();
        let row = m.create(new_sprite("s")).await.unwrap();
        m.sleep(&row, false).await.unwrap();
        assert_eq!(m.status(&row.id).await, SpriteStatus::Warm);
        let r = m.store().sprite_by_id(&row.id).unwrap().unwrap();
        assert!(r.last_warming_at.is_some());
        // Sleeping again is fine.
        m.sleep(&row, false).await.unwrap();
        // Eight concurrent wakes of a warm sprite thaw it once.
        let wakes = (0..8).map(|_| m.wake(&row));
        for r in futures_util::future::join_all(wakes).await {
            r.unwrap();
        }
        assert_eq!(rt.thaws.load(Ordering::SeqCst), 1);
        assert_eq!(m.status(&row.id).await, SpriteStatus::Running);
        assert_eq!(rt.starts.load(Ordering::SeqCst), 1);
        // Cold, twice; warm on a cold sprite leaves it cold; a wake starts it.
        m.sleep(&row, true).await.unwrap();
        m.sleep(&row, true).await.unwrap();
        m.sleep(&row, false).await.unwrap();
        assert_eq!(m.status(&row.id).await, SpriteStatus::Cold);
        m.wake(&row).await.unwrap();
        assert_eq!(rt.starts.load(Ordering::SeqCst), 2);
        // Warm straight to cold.
        m.sleep(&row, false).await.unwrap();
        m.sleep(&row, true).await.unwrap();
        assert_eq!(m.status(&row.id).await, SpriteStatus::Cold);
    }

    #[tokio::test]
    async fn sleep_if_idle_rechecks_under_the_lock() {
        let (m, _rt) = setup();
        let row = m.create(new_sprite("i")).await.unwrap();
        // Busy: nothing happens.
        assert!(!m.sleep_if_idle(&row, false, || false).await.unwrap());
        assert_eq!(m.status(&row.id).await, SpriteStatus::Running);
        // Cold only from warm.
        assert!(!m.sleep_if_idle(&row, true, || true).await.unwrap());
        assert_eq!(m.status(&row.id).await, SpriteStatus::Running);
        assert!(m.sleep_if_idle(&row, false, || true).await.unwrap());
        assert_eq!(m.status(&row.id).await, SpriteStatus::Warm);
        assert!(!m.sleep_if_idle(&row, false, || true).await.unwrap());
        // An operation in flight (counted before its wake) blocks the cold step.
        let guard = m.activity().begin(&row.id);
        let a = m.activity().clone();
        let id = row.id.clone();
        assert!(!m
            .sleep_if_idle(&row, true, move || a.in_flight(&id) == 0)
            .await
            .unwrap());
        drop(guard);
        assert!(m.sleep_if_idle(&row, true, || true).await.unwrap());
        assert_eq!(m.status(&row.id).await, SpriteStatus::Cold);
    }

    #[tokio::test]
    async fn failed_create_rolls_back() {
        let (m, rt) = setup();
        rt.fail_start.store(true, Ordering::SeqCst);
        assert!(m.create(new_sprite("b")).await.is_err());
        assert!(m.store().sprite_by_name("o1", "b").unwrap().is_none());
        assert_eq!(rt.destroys.load(Ordering::SeqCst), 1);
        // The name is free again.
        rt.fail_start.store(false, Ordering::SeqCst);
        m.create(new_sprite("b")).await.unwrap();
    }

    #[tokio::test]
    async fn reconcile_finishes_interrupted_transitions() {
        let (m, rt) = setup();
        let a = m.create(new_sprite("keep")).await.unwrap();
        let b = m.create(new_sprite("half-created")).await.unwrap();
        let c = m.create(new_sprite("half-destroyed")).await.unwrap();
        m.store()
            .set_sprite_state(&b.id, SpriteState::Creating, "t")
            .unwrap();
        m.store()
            .set_sprite_state(&c.id, SpriteState::Destroying, "t")
            .unwrap();
        m.reconcile().await;
        assert!(m.store().sprite_by_id(&a.id).unwrap().is_some());
        assert!(m.store().sprite_by_id(&b.id).unwrap().is_none());
        assert!(m.store().sprite_by_id(&c.id).unwrap().is_none());
        assert_eq!(rt.destroys.load(Ordering::SeqCst), 2);
    }
}

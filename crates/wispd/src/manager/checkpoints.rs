//! Checkpoints, restore and the storage half of reconciliation.
//!
//! Each operation holds the sprite's lock and journals before it acts:
//! - checkpoint: row `pending` → snapshot → row `ready` (a crash in between is rolled back:
//!   the client never saw "complete", and a half-taken checkpoint is never listed);
//! - delete: row `deleting` → delete the snapshot → delete the row (rolled forward);
//! - restore: automatic checkpoint → `restoring = target` → stop → swap the live layer →
//!   `restoring = NULL` → start (rolled forward from the swap, which is idempotent).

use std::sync::Arc;

use tokio::sync::mpsc;
use wisp_api::checkpoint::StreamEvent;

use super::{sprite_ref, ManagerError, SpriteManager};
use crate::crash;
use crate::runtime::SpriteState as RunState;
use crate::storage::views::VISIBLE;
use crate::store::{CheckpointRow, CheckpointState, SpriteRow};
use crate::timefmt;

/// Automatic checkpoints kept per sprite (older ones are deleted by the next restore).
const KEEP_AUTO: usize = 5;

/// Where progress lines of a long operation go (the NDJSON response). Sending never
/// fails: a client that hung up just stops getting lines, the operation goes on.
#[derive(Debug, Clone, Default)]
pub struct Progress(Option<mpsc::UnboundedSender<StreamEvent>>);

impl Progress {
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<StreamEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Progress(Some(tx)), rx)
    }

    pub fn info(&self, data: impl Into<String>) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(StreamEvent::Info {
                data: data.into(),
                time: timefmt::now(),
            });
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ManagerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ManagerError::Task(e.to_string()))
}

impl SpriteManager {
    /// Takes a consistent snapshot of the live layer as `checkpoint_id`: dirty data is
    /// flushed while the sprite keeps running, then its processes are frozen only for the
    /// snapshot itself (a few milliseconds).
    async fn snapshot(&self, sprite_id: &str, checkpoint_id: &str) -> Result<(), ManagerError> {
        let pool = self.pool.clone();
        let id = sprite_id.to_string();
        blocking(move || pool.sync(&id)).await??;
        let frozen = self.runtime.state(sprite_id).await? == RunState::Running;
        if frozen {
            self.runtime.freeze(sprite_id).await?;
        }
        let pool = self.pool.clone();
        let (id, ck) = (sprite_id.to_string(), checkpoint_id.to_string());
        let taken = blocking(move || pool.checkpoint(&id, &ck)).await;
        if frozen {
            if let Err(e) = self.runtime.thaw(sprite_id).await {
                tracing::error!(sprite_id, "thaw after checkpoint: {e}");
            }
        }
        taken??;
        Ok(())
    }

    /// Journals, takes and records a checkpoint; rolls back on failure.
    async fn take_checkpoint(
        &self,
        sprite_id: &str,
        is_auto: bool,
        comment: &str,
    ) -> Result<CheckpointRow, ManagerError> {
        let row = self
            .store
            .begin_checkpoint(sprite_id, is_auto, comment, &timefmt::now())?;
        crash::point("checkpoint:after-begin");
        if let Err(e) = self.snapshot(sprite_id, &row.id).await {
            self.drop_checkpoint(sprite_id, &row.id).await;
            return Err(e);
        }
        crash::point("checkpoint:after-snapshot");
        self.store.finish_checkpoint(sprite_id, &row.id)?;
        Ok(CheckpointRow {
            state: CheckpointState::Ready,
            ..row
        })
    }

    /// Deletes a checkpoint's snapshot and row, logging failures (rollback and cleanup).
    async fn drop_checkpoint(&self, sprite_id: &str, checkpoint_id: &str) {
        let pool = self.pool.clone();
        let (id, ck) = (sprite_id.to_string(), checkpoint_id.to_string());
        match blocking(move || pool.delete_checkpoint(&id, &ck)).await {
            Ok(Ok(())) => {
                if let Err(e) = self.store.delete_checkpoint_row(sprite_id, checkpoint_id) {
                    tracing::error!(sprite_id, checkpoint_id, "forgetting checkpoint: {e}");
                }
            }
            Ok(Err(e)) => tracing::error!(sprite_id, checkpoint_id, "deleting checkpoint: {e}"),
            Err(e) => tracing::error!(sprite_id, checkpoint_id, "deleting checkpoint: {e}"),
        }
    }

    /// Shows the latest user checkpoints at `/.sprite/checkpoints` (best effort: a failure
    /// here never fails the operation that changed them).
    pub(super) async fn refresh_views(&self, sprite_id: &str) {
        let ids: Vec<String> = match self.store.checkpoints(sprite_id, false) {
            Ok(rows) => rows.into_iter().take(VISIBLE).map(|r| r.id).collect(),
            Err(e) => {
                tracing::warn!(sprite_id, "listing checkpoints for views: {e}");
                return;
            }
        };
        if let Err(e) = self.runtime.show_checkpoints(sprite_id, &ids).await {
            tracing::warn!(sprite_id, "checkpoint views: {e}");
        }
    }

    /// `POST .../checkpoint`.
    pub async fn create_checkpoint(
        self: &Arc<Self>,
        row: &SpriteRow,
        comment: String,
        progress: Progress,
    ) -> Result<CheckpointRow, ManagerError> {
        let id = row.id.clone();
        self.detached(move |this| async move {
            let lock = this.lock_for(&id);
            let _guard = lock.lock().await;
            this.ready_row(&id)?;
            let pool = this.pool.clone();
            blocking(move || pool.check_space()).await??;
            progress.info("Creating checkpoint...");
            let ck = this.take_checkpoint(&id, false, &comment).await?;
            this.refresh_views(&id).await;
            tracing::info!(sprite_id = %id, checkpoint = %ck.id, "checkpoint created");
            progress.info("Checkpoint created successfully");
            progress.info(format!("  ID: {}", ck.id));
            progress.info(format!("  Path: checkpoints/{}", ck.id));
            progress.info(format!("  Created: {}", ck.created_at));
            if !ck.comment.is_empty() {
                progress.info(format!("  Comment: {}", ck.comment));
            }
            Ok(ck)
        })
        .await
    }

    /// `DELETE .../checkpoints/{id}`.
    pub async fn delete_checkpoint(
        self: &Arc<Self>,
        row: &SpriteRow,
        checkpoint_id: &str,
    ) -> Result<(), ManagerError> {
        let id = row.id.clone();
        let ck = checkpoint_id.to_string();
        self.detached(move |this| async move {
            let lock = this.lock_for(&id);
            let _guard = lock.lock().await;
            this.ready_row(&id)?;
            match this.store.checkpoint(&id, &ck)? {
                Some(r) if r.state == CheckpointState::Ready => {}
                _ => return Err(ManagerError::CheckpointNotFound(ck)),
            }
            if this.store.current_checkpoint(&id)?.as_deref() == Some(ck.as_str()) {
                return Err(ManagerError::CheckpointInUse(ck));
            }
            this.store
                .set_checkpoint_state(&id, &ck, CheckpointState::Deleting)?;
            crash::point("delete-checkpoint:after-mark");
            let pool = this.pool.clone();
            let (pid, pck) = (id.clone(), ck.clone());
            blocking(move || pool.delete_checkpoint(&pid, &pck)).await??;
            crash::point("delete-checkpoint:after-delete");
            this.store.delete_checkpoint_row(&id, &ck)?;
            this.refresh_views(&id).await;
            tracing::info!(sprite_id = %id, checkpoint = %ck, "checkpoint deleted");
            Ok(())
        })
        .await
    }

    /// `POST .../checkpoints/{id}/restore`: replaces the live layer by the checkpoint and
    /// restarts the sprite's processes. An automatic checkpoint taken first makes it undoable.
    pub async fn restore(
        self: &Arc<Self>,
        row: &SpriteRow,
        checkpoint_id: &str,
        progress: Progress,
    ) -> Result<(), ManagerError> {
        let id = row.id.clone();
        let target = checkpoint_id.to_string();
        self.detached(move |this| async move {
            let lock = this.lock_for(&id);
            let _guard = lock.lock().await;
            let row = this.ready_row(&id)?;
            match this.store.checkpoint(&id, &target)? {
                Some(r) if r.state == CheckpointState::Ready => {}
                _ => return Err(ManagerError::CheckpointNotFound(target)),
            }
            progress.info(format!("Restoring from checkpoint {target}..."));
            let auto = this
                .take_checkpoint(&id, true, &format!("before restore to {target}"))
                .await?;
            progress.info(format!("Saved the current state as {}", auto.id));
            crash::point("restore:after-auto");
            this.store.set_restoring(&id, Some(&target))?;
            crash::point("restore:after-journal");
            this.runtime.stop(&id).await?;
            progress.info("Stopped the sprite's processes");
            crash::point("restore:after-stop");
            this.swap_live_layer(&id, &target).await?;
            crash::point("restore:after-swap");
            this.runtime.start(&sprite_ref(&row)).await?;
            this.store.touch_started(&id, &timefmt::now())?;
            this.after_start(&id).await;
            progress.info("Container components started successfully");
            let pool = this.pool.clone();
            tokio::task::spawn_blocking(move || {
                if let Err(e) = pool.collect_garbage() {
                    tracing::warn!("freeing replaced layers: {e}");
                }
            });
            this.prune_auto(&id).await;
            tracing::info!(sprite_id = %id, checkpoint = %target, "restored");
            Ok(())
        })
        .await
    }

    /// The restore's point of no return, replayable: the live layer becomes a copy of
    /// `target`, then the journal says so.
    async fn swap_live_layer(&self, sprite_id: &str, target: &str) -> Result<(), ManagerError> {
        let pool = self.pool.clone();
        let (id, ck) = (sprite_id.to_string(), target.to_string());
        blocking(move || pool.restore(&id, &ck)).await??;
        self.store.set_restoring(sprite_id, None)?;
        Ok(())
    }

    /// Deletes automatic checkpoints beyond the newest [`KEEP_AUTO`].
    async fn prune_auto(&self, sprite_id: &str) {
        let rows = match self.store.checkpoints(sprite_id, true) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(sprite_id, "listing checkpoints: {e}");
                return;
            }
        };
        for old in rows.iter().filter(|r| r.is_auto).skip(KEEP_AUTO) {
            if let Err(e) =
                self.store
                    .set_checkpoint_state(sprite_id, &old.id, CheckpointState::Deleting)
            {
                tracing::warn!(sprite_id, "pruning {}: {e}", old.id);
                continue;
            }
            self.drop_checkpoint(sprite_id, &old.id).await;
        }
    }

    /// The checkpoint a fork of `src` starts from: `wanted`, or the newest user checkpoint.
    pub(super) fn fork_point(
        &self,
        src_id: &str,
        wanted: Option<&str>,
    ) -> Result<String, ManagerError> {
        match wanted {
            Some(ck) => match self.store.checkpoint(src_id, ck)? {
                Some(r) if r.state == CheckpointState::Ready => Ok(r.id),
                _ => Err(ManagerError::CheckpointNotFound(ck.to_string())),
            },
            None => self
                .store
                .checkpoints(src_id, false)?
                .into_iter()
                .next()
                .map(|r| r.id)
                .ok_or_else(|| ManagerError::CheckpointNotFound("(latest)".into())),
        }
    }

    /// Storage half of start-up reconciliation: half-taken checkpoints are rolled back,
    /// half-deleted ones deleted, interrupted restores finished, replaced layers freed and
    /// pool directories of sprites the database does not know removed.
    pub(super) async fn reconcile_storage(&self) -> Result<(), ManagerError> {
        for state in [CheckpointState::Pending, CheckpointState::Deleting] {
            for ck in self.store.checkpoints_in_state(state)? {
                tracing::info!(sprite_id = %ck.sprite_id, checkpoint = %ck.id,
                    state = state.as_str(), "reconciling an interrupted checkpoint");
                self.drop_checkpoint(&ck.sprite_id, &ck.id).await;
            }
        }
        for (id, target) in self.store.interrupted_restores()? {
            tracing::info!(sprite_id = %id, checkpoint = %target, "finishing an interrupted restore");
            let lock = self.lock_for(&id);
            let _guard = lock.lock().await;
            self.runtime.stop(&id).await?;
            self.swap_live_layer(&id, &target).await?;
        }
        let pool = self.pool.clone();
        blocking(move || pool.collect_garbage()).await??;
        let pool = self.pool.clone();
        for id in blocking(move || pool.sprite_ids()).await?? {
            if self.store.sprite_by_id(&id)?.is_none() {
                tracing::info!(sprite_id = %id, "removing the disk of an unknown sprite");
                let pool = self.pool.clone();
                blocking(move || pool.destroy(&id)).await??;
            }
        }
        Ok(())
    }
}

//! Checkpoint rows and the checkpoint-related columns of a sprite.
//!
//! A checkpoint row is written `pending` before its snapshot is taken and becomes `ready`
//! after; only `ready` rows are ever shown. Deletion marks it `deleting` first. So after a
//! crash every row says what to finish or undo (see `SpriteManager::reconcile`).

use rusqlite::{params, OptionalExtension, Row};

use super::{Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointState {
    Pending,
    Ready,
    Deleting,
}

impl CheckpointState {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckpointState::Pending => "pending",
            CheckpointState::Ready => "ready",
            CheckpointState::Deleting => "deleting",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "pending" => CheckpointState::Pending,
            "deleting" => CheckpointState::Deleting,
            _ => CheckpointState::Ready,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointRow {
    pub sprite_id: String,
    pub id: String,
    pub state: CheckpointState,
    pub is_auto: bool,
    pub comment: String,
    /// The checkpoint the live layer descended from when this one was taken.
    pub source_id: Option<String>,
    pub created_at: String,
}

impl CheckpointRow {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        let state: String = r.get("state")?;
        Ok(CheckpointRow {
            sprite_id: r.get("sprite_id")?,
            id: r.get("id")?,
            state: CheckpointState::parse(&state),
            is_auto: r.get("is_auto")?,
            comment: r.get("comment")?,
            source_id: r.get("source_id")?,
            created_at: r.get("created_at")?,
        })
    }
}

/// `auto-<utc time>-<random>`: sortable, unique, and a valid checkpoint id.
fn auto_id() -> String {
    let now = chrono::Utc::now().format("%Y%m%d-%H%M%S");
    let rand = uuid::Uuid::new_v4().simple().to_string();
    format!("auto-{now}-{}", &rand[..6])
}

impl Store {
    /// Journals a new checkpoint (`pending`) and returns it. User checkpoints get the next
    /// `v<n>`: ids are never reused, even after a delete.
    pub fn begin_checkpoint(
        &self,
        sprite_id: &str,
        is_auto: bool,
        comment: &str,
        now: &str,
    ) -> Result<CheckpointRow, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let (next, current): (i64, Option<String>) = tx.query_row(
            "SELECT next_checkpoint, current_checkpoint FROM sprites WHERE id = ?1",
            params![sprite_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let id = if is_auto {
            auto_id()
        } else {
            tx.execute(
                "UPDATE sprites SET next_checkpoint = ?2 WHERE id = ?1",
                params![sprite_id, next + 1],
            )?;
            format!("v{next}")
        };
        let row = CheckpointRow {
            sprite_id: sprite_id.to_string(),
            id,
            state: CheckpointState::Pending,
            is_auto,
            comment: comment.to_string(),
            source_id: current,
            created_at: now.to_string(),
        };
        tx.execute(
            "INSERT INTO checkpoints (sprite_id, id, state, is_auto, comment, source_id, created_at)
             VALUES (?1, ?2, 'pending', ?3, ?4, ?5, ?6)",
            params![
                row.sprite_id,
                row.id,
                row.is_auto,
                row.comment,
                row.source_id,
                row.created_at
            ],
        )?;
        tx.commit()?;
        Ok(row)
    }

    /// Ends a create in one durable transaction: the sprite becomes `ready`, started now,
    /// with its initial checkpoint `v0` (taken already) as the current one.
    pub fn finish_create(
        &self,
        sprite_id: &str,
        now: &str,
        comment: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT OR REPLACE INTO checkpoints
                 (sprite_id, id, state, is_auto, comment, source_id, created_at)
             VALUES (?1, 'v0', 'ready', 0, ?2, NULL, ?3)",
            params![sprite_id, comment, now],
        )?;
        tx.execute(
            "UPDATE sprites SET state = 'ready', updated_at = ?2, last_started_at = ?2,
                                last_running_at = ?2, next_checkpoint = 1,
                                current_checkpoint = 'v0'
             WHERE id = ?1",
            params![sprite_id, now],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Marks a checkpoint taken; a user checkpoint becomes the sprite's current one.
    pub fn finish_checkpoint(&self, sprite_id: &str, id: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE checkpoints SET state = 'ready' WHERE sprite_id = ?1 AND id = ?2",
            params![sprite_id, id],
        )?;
        tx.execute(
            "UPDATE sprites SET current_checkpoint = ?2
             WHERE id = ?1 AND EXISTS (SELECT 1 FROM checkpoints
                                       WHERE sprite_id = ?1 AND id = ?2 AND is_auto = 0)",
            params![sprite_id, id],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Ready checkpoints of a sprite, newest first.
    pub fn checkpoints(
        &self,
        sprite_id: &str,
        include_auto: bool,
    ) -> Result<Vec<CheckpointRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT * FROM checkpoints WHERE sprite_id = ?1 AND state = 'ready'
               AND (?2 OR is_auto = 0)
             ORDER BY rowid DESC",
        )?;
        let rows = stmt
            .query_map(params![sprite_id, include_auto], CheckpointRow::from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// A checkpoint in any state.
    pub fn checkpoint(
        &self,
        sprite_id: &str,
        id: &str,
    ) -> Result<Option<CheckpointRow>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT * FROM checkpoints WHERE sprite_id = ?1 AND id = ?2",
                params![sprite_id, id],
                CheckpointRow::from_row,
            )
            .optional()?)
    }

    /// Checkpoints of every sprite in a journal state (for reconciliation).
    pub fn checkpoints_in_state(
        &self,
        state: CheckpointState,
    ) -> Result<Vec<CheckpointRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT * FROM checkpoints WHERE state = ?1")?;
        let rows = stmt
            .query_map(params![state.as_str()], CheckpointRow::from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn set_checkpoint_state(
        &self,
        sprite_id: &str,
        id: &str,
        state: CheckpointState,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE checkpoints SET state = ?3 WHERE sprite_id = ?1 AND id = ?2",
            params![sprite_id, id, state.as_str()],
        )?;
        Ok(())
    }

    pub fn delete_checkpoint_row(&self, sprite_id: &str, id: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "DELETE FROM checkpoints WHERE sprite_id = ?1 AND id = ?2",
            params![sprite_id, id],
        )?;
        Ok(())
    }

    /// The checkpoint the sprite's live layer descends from.
    pub fn current_checkpoint(&self, sprite_id: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT current_checkpoint FROM sprites WHERE id = ?1",
                params![sprite_id],
                |r| r.get(0),
            )
            .optional()?
            .flatten())
    }

    /// Journals a restore: `Some(target)` before the live layer is replaced, `None` once it
    /// is (then `target` also becomes the current checkpoint).
    pub fn set_restoring(&self, sprite_id: &str, target: Option<&str>) -> Result<(), StoreError> {
        let conn = self.conn();
        match target {
            Some(t) => conn.execute(
                "UPDATE sprites SET restoring = ?2 WHERE id = ?1",
                params![sprite_id, t],
            )?,
            None => conn.execute(
                "UPDATE sprites SET current_checkpoint = COALESCE(restoring, current_checkpoint),
                                    restoring = NULL
                 WHERE id = ?1",
                params![sprite_id],
            )?,
        };
        Ok(())
    }

    /// Sprites whose restore was interrupted, with the target checkpoint.
    pub fn interrupted_restores(&self) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, restoring FROM sprites WHERE restoring IS NOT NULL AND state = 'ready'",
        )?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

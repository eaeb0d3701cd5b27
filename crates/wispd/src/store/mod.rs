//! The daemon's state: one SQLite database (`<data-dir>/wisp.db`).
//!
//! It holds the *desired* state (organizations, tokens, sprites and the journal state of each
//! sprite); what actually runs is asked of the runtime. Every query takes microseconds, so the
//! connection sits behind a plain `std::sync::Mutex` and is used from async code directly; no
//! lock is ever held across an `.await`.

mod checkpoints;
mod lifecycle;
mod migrations;
mod orgs;
mod services;
mod sprites;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::Connection;

pub use checkpoints::{CheckpointRow, CheckpointState};
pub use lifecycle::Timeouts;
pub use orgs::{Organization, TokenRecord};
pub use services::ServiceRow;
pub use sprites::{SpriteRow, SpriteState};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database schema version {found} is newer than this wispd knows ({known})")]
    TooNew { found: u32, known: u32 },
    #[error("a sprite with this name already exists")]
    NameTaken,
}

pub struct Store {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    /// A private in-memory database, for tests.
    #[cfg(test)]
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Self, StoreError> {
        conn.busy_timeout(Duration::from_secs(5))?;
        // WAL lets readers proceed during a write; FULL makes every commit durable, which the
        // crash-safety of create/destroy relies on.
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrations::migrate(&mut conn)?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    /// The connection. A panic while holding the lock cannot leave SQLite half-written (every
    /// change is a statement or a transaction), so a poisoned lock is simply taken over.
    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::migrations::MIGRATIONS;
    use super::*;

    #[test]
    fn migrates_fresh_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wisp.db");
        let store = Store::open(&path).unwrap();
        let v: u32 = store
            .conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v as usize, MIGRATIONS.len());
        drop(store);
        // A second open applies nothing and keeps the data.
        let store = Store::open(&path).unwrap();
        let mode: String = store
            .conn()
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode.to_lowercase(), "wal");
    }

    #[test]
    fn refuses_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wisp.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.pragma_update(None, "user_version", 999).unwrap();
        }
        assert!(matches!(
            Store::open(&path),
            Err(StoreError::TooNew { found: 999, .. })
        ));
    }
}

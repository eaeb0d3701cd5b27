//! Schema migrations, keyed by `PRAGMA user_version`.
//!
//! Step `i` of [`MIGRATIONS`] brings the schema from version `i` to `i + 1`. Steps are only ever
//! appended: a released step is never edited, because databases in the field already ran it.

use rusqlite::Connection;

use super::StoreError;

/// Every schema step, oldest first.
pub const MIGRATIONS: &[&str] = &[
    // 1: organizations, API tokens and sprites.
    r#"
    CREATE TABLE organizations (
        id          TEXT PRIMARY KEY,
        slug        TEXT NOT NULL UNIQUE,
        name        TEXT NOT NULL,
        created_at  TEXT NOT NULL
    );
    CREATE TABLE tokens (
        id           TEXT PRIMARY KEY,
        org_id       TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
        secret_hash  TEXT NOT NULL,
        description  TEXT NOT NULL DEFAULT '',
        created_at   TEXT NOT NULL,
        revoked_at   TEXT
    );
    CREATE INDEX tokens_org ON tokens(org_id);
    CREATE TABLE sprites (
        id               TEXT PRIMARY KEY,
        org_id           TEXT NOT NULL REFERENCES organizations(id),
        name             TEXT NOT NULL,
        state            TEXT NOT NULL CHECK (state IN ('creating', 'ready', 'destroying')),
        url_auth         TEXT NOT NULL DEFAULT 'sprite',
        private_access   TEXT,
        labels           TEXT NOT NULL DEFAULT '[]',
        created_at       TEXT NOT NULL,
        updated_at       TEXT NOT NULL,
        last_started_at  TEXT,
        last_active_at   TEXT,
        UNIQUE (org_id, name)
    );
    "#,
    // 2: lifecycle instants: when a sprite last went warm (frozen) and last resumed running.
    r#"
    ALTER TABLE sprites ADD COLUMN last_warming_at TEXT;
    ALTER TABLE sprites ADD COLUMN last_running_at TEXT;
    "#,
    // 3: checkpoints. `state` is the journal of each one (`pending` rows are never listed and
    // are rolled back at start); on the sprite, the counter of user checkpoint ids, the
    // checkpoint its live layer descends from, and the target of a restore in progress.
    r#"
    CREATE TABLE checkpoints (
        sprite_id   TEXT NOT NULL REFERENCES sprites(id) ON DELETE CASCADE,
        id          TEXT NOT NULL,
        state       TEXT NOT NULL CHECK (state IN ('pending', 'ready', 'deleting')),
        is_auto     INTEGER NOT NULL DEFAULT 0,
        comment     TEXT NOT NULL DEFAULT '',
        source_id   TEXT,
        created_at  TEXT NOT NULL,
        PRIMARY KEY (sprite_id, id)
    );
    ALTER TABLE sprites ADD COLUMN next_checkpoint INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE sprites ADD COLUMN current_checkpoint TEXT;
    ALTER TABLE sprites ADD COLUMN restoring TEXT;
    "#,
    // 4: services (§3.8). `args`, `needs` and `env` are JSON; `stopped` is the sticky stop.
    // At most one service per sprite has an `http_port`.
    r#"
    CREATE TABLE services (
        sprite_id   TEXT NOT NULL REFERENCES sprites(id) ON DELETE CASCADE,
        name        TEXT NOT NULL,
        cmd         TEXT NOT NULL,
        args        TEXT NOT NULL DEFAULT '[]',
        needs       TEXT NOT NULL DEFAULT '[]',
        http_port   INTEGER,
        env         TEXT NOT NULL DEFAULT '{}',
        dir         TEXT,
        stopped     INTEGER NOT NULL DEFAULT 0,
        created_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL,
        PRIMARY KEY (sprite_id, name)
    );
    CREATE UNIQUE INDEX services_one_http_port ON services(sprite_id) WHERE http_port IS NOT NULL;
    "#,
    // 5: per-sprite idle timeouts in milliseconds (NULL: the daemon's setting; 0: never).
    r#"
    ALTER TABLE sprites ADD COLUMN idle_timeout_ms INTEGER;
    ALTER TABLE sprites ADD COLUMN cold_timeout_ms INTEGER;
    "#,
    // 6: tenancy. `tokens.admin`: may manage every organization (until now only the
    // bootstrap minted tokens, so every existing token is the admin token). Per-org limits
    // (no row, or NULL: the daemon's default; -1: unlimited; n >= 0: at most n).
    r#"
    ALTER TABLE tokens ADD COLUMN admin INTEGER NOT NULL DEFAULT 0;
    UPDATE tokens SET admin = 1;
    CREATE TABLE org_limits (
        org_id                      TEXT PRIMARY KEY
                                    REFERENCES organizations(id) ON DELETE CASCADE,
        running_limit               INTEGER,
        create_rate_limit           INTEGER,
        create_rate_window_seconds  INTEGER
    );
    "#,
];

/// Brings the schema up to date, one transaction per step, so a crash leaves the database at
/// some whole version.
pub fn migrate(conn: &mut Connection) -> Result<u32, StoreError> {
    let current: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = MIGRATIONS.len() as u32;
    if current > known {
        return Err(StoreError::TooNew {
            found: current,
            known,
        });
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", (i + 1) as u32)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "applied schema migration");
    }
    Ok(known)
}

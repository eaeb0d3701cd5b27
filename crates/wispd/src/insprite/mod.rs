//! The in-sprite API (sprites-api.md §3.12): plain HTTP on `/.sprite/api.sock`, no auth.
//!
//! Being inside the sprite is the credential. `/.sprite` is a read-only bind of the host's
//! `<data-dir>/sprites/<id>/sprite-dir` (see `runtime::paths`), so a Unix socket that wispd
//! binds at `<sprite-dir>/api.sock` is reachable from inside, and only from inside: connecting
//! needs no write access to the mount, and `<data-dir>/sprites` is `0700` on the host. The
//! socket is `0666`, so that every user of the sprite (`sprite` is uid 1000) can connect.
//!
//! * One listener per ready sprite, bound to it: the sprite a request acts on comes from which
//!   socket accepted it, never from the request (`routes`).
//! * Routes: the public API's own handlers for what a sprite may do to itself
//!   (`api::self_routes`: checkpoints; a restore answers 202 and runs in the background,
//!   since it stops the caller's own processes), plus keep-awake tasks (`tasks`).
//! * Lifecycle: listeners are made at wispd start for every ready sprite (after reconcile)
//!   and on create, and dropped on destroy. A restart of wispd binds the same paths again.
//! * [`has_live_task`] tells the idle timer that a sprite must not go to sleep.

mod listener;
mod routes;
mod tasks;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::task::JoinHandle;

use crate::api::AppState;
use crate::store::SpriteState;

pub use tasks::Tasks;

/// Name of the socket in the sprite's `/.sprite`.
pub const SOCKET_NAME: &str = "api.sock";

/// The in-sprite API of every sprite: listeners and keep-awake tasks.
pub struct InSprite {
    st: AppState,
    data_dir: PathBuf,
    listeners: Mutex<HashMap<String, JoinHandle<()>>>,
    tasks: Arc<Tasks>,
}

impl std::fmt::Debug for InSprite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InSprite")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

/// The one instance, once [`start`] ran: the hooks below are no-ops before that (unit tests).
static INSTANCE: OnceLock<Arc<InSprite>> = OnceLock::new();

/// Host path of a sprite's `/.sprite` (the layout of `runtime::paths::SpritePaths`).
pub fn sprite_dir(data_dir: &Path, sprite_id: &str) -> PathBuf {
    data_dir.join("sprites").join(sprite_id).join("sprite-dir")
}

/// Sprite ids become path components: only the runtime's own form is accepted.
fn valid_id(id: &str) -> bool {
    id.starts_with("sprite-")
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Serves the in-sprite API of every ready sprite. Call after reconcile, before serving the
/// public API (whose create and destroy call the hooks below).
pub fn start(st: AppState, data_dir: PathBuf) -> Arc<InSprite> {
    let this = Arc::new(InSprite {
        tasks: Arc::new(Tasks::new(data_dir.clone())),
        st,
        data_dir,
        listeners: Mutex::new(HashMap::new()),
    });
    if INSTANCE.set(this.clone()).is_err() {
        tracing::warn!("the in-sprite API was started twice");
    }
    match this.st.store.sprites_in_state(SpriteState::Ready) {
        Ok(rows) => {
            for row in rows {
                this.tasks.load(&row.id);
                this.listen(&row.id);
            }
        }
        Err(e) => tracing::error!("in-sprite API: listing sprites: {e}"),
    }
    this
}

impl InSprite {
    /// Binds (again) the sprite's socket and serves it; replaces an earlier listener.
    fn listen(&self, sprite_id: &str) {
        if !valid_id(sprite_id) {
            tracing::error!(sprite_id, "in-sprite API: not a sprite id");
            return;
        }
        let dir = sprite_dir(&self.data_dir, sprite_id);
        let listener = match listener::bind(&dir, SOCKET_NAME) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(sprite_id, "in-sprite API: binding {}: {e}", dir.display());
                return;
            }
        };
        let app = routes::service(self.st.clone(), self.tasks.clone(), sprite_id.to_string());
        let id = sprite_id.to_string();
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(sprite_id = %id, "in-sprite API stopped: {e}");
            }
        });
        let old = self
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sprite_id.to_string(), task);
        if let Some(old) = old {
            old.abort();
        }
        tracing::debug!(sprite_id, "in-sprite API listening");
    }

    /// Stops serving the sprite's socket and forgets its tasks.
    fn unlisten(&self, sprite_id: &str) {
        let task = self
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(sprite_id);
        if let Some(task) = task {
            task.abort();
        }
        self.tasks.forget(sprite_id);
        if valid_id(sprite_id) {
            let path = sprite_dir(&self.data_dir, sprite_id).join(SOCKET_NAME);
            if let Err(e) = crate::fsutil::remove_file_if_exists(&path) {
                tracing::warn!(sprite_id, "removing {}: {e}", path.display());
            }
        }
    }
}

/// Hook: a sprite was created (or forked) and is ready.
pub fn sprite_created(sprite_id: &str) {
    if let Some(this) = INSTANCE.get() {
        this.listen(sprite_id);
    }
}

/// Hook: a sprite is about to be destroyed.
pub fn sprite_destroyed(sprite_id: &str) {
    if let Some(this) = INSTANCE.get() {
        this.unlisten(sprite_id);
    }
}

/// Whether a keep-awake task of the sprite is live: while one is, the idle timer must not put
/// the sprite to sleep (§3.12: "while any task is live the sprite does not pause").
pub fn has_live_task(sprite_id: &str) -> bool {
    INSTANCE
        .get()
        .is_some_and(|this| this.tasks.has_live(sprite_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_paths() {
        assert!(valid_id("sprite-0b1c2d3e-aaaa-bbbb-cccc-0123456789ab"));
        for bad in [
            "",
            "x",
            "sprite-../..",
            "sprite-a/b",
            "../sprite-a",
            "sprite-a.b",
        ] {
            assert!(!valid_id(bad), "{bad}");
        }
        assert_eq!(
            sprite_dir(Path::new("/var/lib/wisp"), "sprite-1"),
            Path::new("/var/lib/wisp/sprites/sprite-1/sprite-dir")
        );
        // Nothing is served before start: the hooks do nothing.
        assert!(!has_live_task("sprite-1"));
    }
}

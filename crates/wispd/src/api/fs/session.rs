//! One request's hold on a sprite's files: the sprite woken and counted busy, a verified
//! descriptor of its root, and the identity its operations run as.

use std::sync::Arc;

use super::errors::FsError;
use super::identity::{for_request, run_as, Identity};
use super::resolve::SpriteRoot;
use crate::activity::ActivityGuard;
use crate::api::error::ApiError;
use crate::api::sprites::find_sprite;
use crate::api::AppState;
use crate::auth::Caller;

struct Inner {
    root: SpriteRoot,
    id: Identity,
}

pub struct FsSession {
    inner: Arc<Inner>,
    /// Keeps the sprite awake (and out of the idle timer's hands) while the request lasts.
    _activity: ActivityGuard,
}

impl FsSession {
    /// Finds the caller's sprite, wakes it (a sleeping sprite wakes transparently) and opens
    /// its root. The root is `/proc/<init>/root`; it is opened through `/proc/<init>` and the
    /// keeper is asked again afterwards, so a pid that was reused in between is noticed
    /// (503) instead of naming another process's root.
    pub async fn open(
        st: &AppState,
        caller: &Caller,
        name: &str,
        as_root: bool,
    ) -> Result<FsSession, ApiError> {
        let row = find_sprite(st, caller, name)?;
        let activity = st.manager.activity().begin(&row.id);
        st.manager.wake(&row).await?;
        st.manager.touch_active(&row.id);
        let runtime = st.manager.runtime();
        let path = runtime.root_dir(&row.id).await?;
        let p = path.clone();
        let inner = tokio::task::spawn_blocking(move || -> Result<Inner, ApiError> {
            let root = SpriteRoot::open(&p).map_err(|e| {
                ApiError::unavailable(format!("the sprite's root is not reachable: {e}"))
            })?;
            let id = for_request(&root, as_root);
            Ok(Inner { root, id })
        })
        .await
        .map_err(|e| ApiError::internal(format!("opening the sprite's root: {e}")))??;
        if runtime.root_dir(&row.id).await? != path {
            return Err(ApiError::unavailable(
                "the sprite restarted during the request; try again",
            ));
        }
        Ok(FsSession {
            inner: Arc::new(inner),
            _activity: activity,
        })
    }

    /// Runs blocking file work on a pool thread as the request's identity.
    pub async fn run<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&SpriteRoot) -> Result<T, FsError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || run_as(&inner.id, || f(&inner.root)))
            .await
            .map_err(|e| ApiError::internal(format!("file operation failed: {e}")))?
            .map_err(ApiError::from)
    }
}

//! One sprite's in-sprite HTTP service.
//!
//! A request for `/v1/<rest>` is served by the public API's handlers as
//! `/v1/sprites/<own name>/<rest>`, with the sprite's organization as the caller: the sprite
//! comes from the socket (`sprite_id`, fixed when it was bound), and its name is read again
//! for every request. Nothing in a request can name another sprite: `/v1/sprites/other/...`
//! becomes `/v1/sprites/<own name>/sprites/other/...`, which no route matches.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, Uri};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower::Layer;

use super::tasks::{self, Tasks};
use crate::api::{self, ApiError, AppState};
use crate::auth::Caller;
use crate::store::SpriteState;

/// The sprite a request came in for (a request extension, set from the socket).
#[derive(Debug, Clone)]
pub struct Bound {
    pub sprite_id: String,
    pub sprite_name: String,
}

#[derive(Clone)]
struct Binding {
    st: AppState,
    sprite_id: Arc<str>,
}

/// The service for one sprite's socket.
pub fn service(st: AppState, tasks: Arc<Tasks>, sprite_id: String) -> Router {
    let router = api::self_routes()
        .merge(tasks::routes(tasks))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .with_state(st.clone());
    let binding = Binding {
        st,
        sprite_id: sprite_id.into(),
    };
    // Around the router (a layer on it would run after routing), so that the rewritten path
    // is what gets routed.
    Router::new().fallback_service(from_fn_with_state(binding, bind_request).layer(router))
}

/// The caller and path rewrite for the socket's sprite.
async fn bind_request(State(b): State<Binding>, mut req: Request, next: Next) -> Response {
    let row = match b.st.store.sprite_by_id(&b.sprite_id) {
        Ok(Some(r)) if r.state == SpriteState::Ready => r,
        Ok(_) => return ApiError::sprite_not_found().into_response(),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let caller = match b.st.store.org_by_id(&row.org_id) {
        Ok(Some(org)) => Caller {
            org_id: org.id,
            org_slug: org.slug,
        },
        Ok(None) => return ApiError::internal("the sprite's organization is gone").into_response(),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let Some(uri) = rewrite(req.uri(), &row.name) else {
        return ApiError::not_found(format!("no route for {}", req.uri().path())).into_response();
    };
    *req.uri_mut() = uri;
    req.extensions_mut().insert(caller);
    req.extensions_mut().insert(Bound {
        sprite_id: row.id,
        sprite_name: row.name,
    });
    next.run(req).await
}

/// `/v1/<rest>[?q]` → `/v1/sprites/<name>/<rest>[?q]`; `None` for anything else, and for
/// `.`/`..` or empty segments.
pub fn rewrite(uri: &Uri, name: &str) -> Option<Uri> {
    let rest = uri.path().strip_prefix("/v1/")?;
    if rest
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == ".." || s.eq_ignore_ascii_case("%2e%2e"))
    {
        return None;
    }
    let path = match uri.query() {
        Some(q) => format!("/v1/sprites/{name}/{rest}?{q}"),
        None => format!("/v1/sprites/{name}/{rest}"),
    };
    path.parse().ok()
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", unprefixed(uri.path())))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "method {method} is not allowed on {}",
            unprefixed(uri.path())
        ),
    )
}

/// A rewritten path as the client sent it.
fn unprefixed(path: &str) -> String {
    let mut parts = path.splitn(5, '/');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some(""), Some("v1"), Some("sprites"), Some(_), Some(rest)) => format!("/v1/{rest}"),
        _ => path.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(s: &str) -> Option<String> {
        rewrite(&s.parse().unwrap(), "box").map(|u| u.to_string())
    }

    #[test]
    fn rewrites() {
        assert_eq!(
            rw("/v1/checkpoints").as_deref(),
            Some("/v1/sprites/box/checkpoints")
        );
        assert_eq!(
            rw("/v1/checkpoints?includeAuto=true").as_deref(),
            Some("/v1/sprites/box/checkpoints?includeAuto=true")
        );
        assert_eq!(
            rw("/v1/tasks/my%20task").as_deref(),
            Some("/v1/sprites/box/tasks/my%20task")
        );
        // Another sprite's path only nests under our own.
        assert_eq!(
            rw("/v1/sprites/other/checkpoints").as_deref(),
            Some("/v1/sprites/box/sprites/other/checkpoints")
        );
        for bad in [
            "/",
            "/v1",
            "/v1/",
            "/v2/checkpoints",
            "/v1/../sprites/other",
            "/v1/checkpoints/..",
            "/v1/a//b",
            "/v1/./checkpoints",
            "/v1/x/%2E%2E/y",
        ] {
            assert_eq!(rw(bad), None, "{bad}");
        }
        assert_eq!(unprefixed("/v1/sprites/box/nope/x"), "/v1/nope/x");
        assert_eq!(unprefixed("/other"), "/other");
    }
}

//! The HTTP API (`/v1`): routing, auth, and the one JSON error shape for everything,
//! including requests that match no route or no method.

mod auth;
mod checkpoints;
mod control;
mod control_proxy;
mod error;
mod exec;
mod exec_bridge;
mod exec_http;
mod exec_ws;
pub(crate) mod extract;
mod fs;
mod list_params;
mod openapi;
mod orgs;
mod policy;
mod ports;
mod proxy;
mod services;
mod sessions;
mod sprites;
mod view;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{from_fn_with_state, map_response};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::json;
use tower_http::trace::TraceLayer;
use wisp_api::SPRITE_VERSION;

pub use error::ApiError;

use crate::auth::Caller;
use crate::manager::SpriteManager;
use crate::store::Store;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    pub manager: Arc<SpriteManager>,
    /// Base of sprite URLs (see `view::sprite_url`).
    pub url_base: Arc<str>,
    /// Per-org limits and create windows.
    pub tenancy: Arc<crate::tenancy::Tenancy>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("url_base", &self.url_base)
            .finish_non_exhaustive()
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/organization", get(organization))
        // Organizations and tokens (tenancy): admin and per-org management.
        .merge(orgs::routes())
        .route("/v1/sprites", get(sprites::list).post(sprites::create))
        .route(
            "/v1/sprites/{name}",
            get(sprites::get)
                .put(sprites::update)
                .delete(sprites::destroy),
        )
        .route("/v1/sprites/{name}/sleep", post(sprites::sleep))
        .route("/v1/sprites/{name}/checkpoint", post(checkpoints::create))
        .route("/v1/sprites/{name}/checkpoints", get(checkpoints::list))
        .route(
            "/v1/sprites/{name}/checkpoints/{id}",
            get(checkpoints::get).delete(checkpoints::delete),
        )
        .route(
            "/v1/sprites/{name}/checkpoints/{id}/restore",
            post(checkpoints::restore),
        )
        .route(
            "/v1/sprites/{name}/exec",
            get(exec_ws::exec_get)
                .post(exec_http::exec_post)
                .head(exec_ws::exec_head),
        )
        .route(
            "/v1/sprites/{name}/exec/{session_id}",
            get(exec_ws::session_get),
        )
        .route(
            "/v1/sprites/{name}/exec/{session_id}/kill",
            post(sessions::kill),
        )
        .route("/v1/sprites/{name}/control", get(control::control_get))
        // TCP proxy (§3.4) and ports watch (§3.5), into the sprite's network namespace.
        .route("/v1/sprites/{name}/proxy", get(proxy::proxy_get))
        .route("/v1/sprites/{name}/ports/watch", get(ports::ports_watch))
        // Network policy (§3.9).
        .route(
            "/v1/sprites/{name}/policy/network",
            get(policy::get_network).post(policy::set_network),
        )
        // Filesystem API (§3.7): read, write, list, delete, rename, copy, chmod, chown.
        .merge(fs::routes())
        // Services (§3.8): definitions, start/stop/restart, signals, logs.
        .merge(services::routes())
        .route_layer(from_fn_with_state(state.clone(), auth::require_auth))
        // After the auth layer, so public: clients and fuzzers read it before they have a token.
        .route("/v1/openapi.json", get(openapi::serve))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(extract::JSON_BODY_LIMIT))
        .layer(map_response(add_version_header))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// What a sprite may do to itself from inside, through `/.sprite/api.sock` (§3.12; served by
/// `crate::insprite`, which rewrites `/v1/<rest>` to `/v1/sprites/<its own name>/<rest>` and
/// supplies the caller): the public handlers, minus anything that reaches beyond the sprite's
/// own state (exec, fs, destroy, settings). No auth layer: the socket is the credential.
pub fn self_routes() -> Router<AppState> {
    Router::new()
        .route("/v1/sprites/{name}/checkpoint", post(checkpoints::create))
        .route("/v1/sprites/{name}/checkpoints", get(checkpoints::list))
        .route(
            "/v1/sprites/{name}/checkpoints/{id}",
            get(checkpoints::get).delete(checkpoints::delete),
        )
        // A restore stops the caller's own processes: 202 at once, the restore runs after.
        .route(
            "/v1/sprites/{name}/checkpoints/{id}/restore",
            post(checkpoints::restore_detached),
        )
        .merge(services::routes())
}

/// Every response, errors and upgrades included, names the server version: the Go SDK picks
/// its attach URL form from it.
async fn add_version_header(mut res: Response) -> Response {
    res.headers_mut()
        .insert("sprite-version", HeaderValue::from_static(SPRITE_VERSION));
    res
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} is not allowed on {}", uri.path()),
    )
}

/// `GET /v1/organization`: the old CLI's token check.
#[utoipa::path(
    operation_id = "meta_organization",
    get,
    path = "/v1/organization",
    tag = "meta",
    responses(
        (status = 200, description = "The caller's organization", body = crate::api::openapi::schemas::CallerOrganization),
    ),
)]
async fn organization(Extension(caller): Extension<Caller>) -> Json<serde_json::Value> {
    Json(json!({"organization": caller.org_slug, "resources": {}}))
}

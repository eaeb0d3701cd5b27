//! Path and query parameters as the OpenAPI document describes them.
//!
//! The handlers read their queries raw (`RawQuery` + `query_pairs`): the SDKs repeat keys
//! (`cmd=ls&cmd=-l`), spell flags several ways and send keys we ignore, which a typed `Query`
//! extractor would refuse. These structs are therefore never built; they exist so that the
//! document is derived from types rather than hand-written JSON.
#![allow(dead_code)]

use utoipa::IntoParams;

/// `{name}`: a sprite.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SpritePath {
    /// Sprite name: 1-63 of `[a-z0-9-]`, starting and ending with a letter or digit.
    #[param(
        example = "my-sprite",
        pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
    )]
    name: String,
}

/// `{name}/checkpoints/{id}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct CheckpointPath {
    /// Sprite name.
    #[param(
        example = "my-sprite",
        pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
    )]
    name: String,
    /// Checkpoint id: `v<n>` or `auto-<suffix>` (`Current`, the live state, in a get).
    #[param(
        example = "v1",
        pattern = "^(v(0|[1-9][0-9]{0,9})|auto-[A-Za-z0-9-]{1,40}|Current)$"
    )]
    id: String,
}

/// `{name}/exec/{session_id}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SessionPath {
    /// Sprite name.
    #[param(
        example = "my-sprite",
        pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
    )]
    name: String,
    /// Exec session id.
    session_id: String,
}

/// `{name}/services/{svc}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ServicePath {
    /// Sprite name.
    #[param(
        example = "my-sprite",
        pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
    )]
    name: String,
    /// Service name (the sprite-name rules).
    #[param(example = "web", pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    svc: String,
}

/// `{slug}`: an organization.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct OrgPath {
    /// Organization slug (a DNS label).
    #[param(example = "default", pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    slug: String,
}

/// `{slug}/tokens/{id}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TokenPath {
    /// Organization slug.
    #[param(example = "default", pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    slug: String,
    /// Token id (never the secret).
    id: String,
}

/// `GET /v1/sprites`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListSpritesQuery {
    /// Only sprites whose name starts with this.
    prefix: Option<String>,
    /// Page size; clamped to 1..=50.
    max_results: Option<i64>,
    /// `next_continuation_token` of the previous page.
    continuation_token: Option<String>,
}

/// `GET .../checkpoints`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CheckpointListQuery {
    /// Include automatic checkpoints (`include_auto` is accepted too).
    #[param(rename = "includeAuto")]
    include_auto: Option<bool>,
    /// Keep only this checkpoint and those descending from it.
    history: Option<String>,
}

/// The exec parameters (`GET .../exec` upgrade and `POST .../exec`).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExecQuery {
    /// The command and its arguments, one key each (`cmd=ls&cmd=-l`).
    cmd: Option<Vec<String>>,
    /// The program, when it differs from `cmd[0]`.
    path: Option<String>,
    /// `KEY=VALUE`, one key each.
    env: Option<Vec<String>>,
    /// Working directory.
    dir: Option<String>,
    /// Allocate a terminal (WebSocket only).
    tty: Option<bool>,
    /// Terminal rows.
    rows: Option<u16>,
    /// Terminal columns.
    cols: Option<u16>,
    /// Read stdin (the request body for `POST`).
    stdin: Option<bool>,
    /// How long the session outlives a dropped client (Go duration, e.g. `10s`).
    max_run_after_disconnect: Option<String>,
    /// Keep the session attachable after the client goes (WebSocket only).
    detachable: Option<bool>,
}

/// `POST .../exec/{session_id}/kill`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KillQuery {
    /// Signal name or number; default `SIGTERM`.
    signal: Option<String>,
    /// How long to wait before SIGKILL (Go duration, at most 1h); `0` does not wait.
    timeout: Option<String>,
}

/// `GET .../control`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ControlQuery {
    /// Start this operation on connect (`exec` or `proxy`); every other key is its argument.
    op: Option<String>,
}

/// `GET .../proxy`: the target may come in the query instead of the init message.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProxyQuery {
    /// Host inside the sprite's network namespace; default `localhost`.
    host: Option<String>,
    /// TCP port, 1-65535.
    port: Option<u16>,
}

/// `GET .../fs/read`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FsReadQuery {
    /// File path, relative to `workingDir`.
    #[param(min_length = 1)]
    path: String,
    /// Base of a relative `path`; default `/`.
    #[param(rename = "workingDir")]
    working_dir: Option<String>,
    /// First byte (inclusive) of a range.
    start: Option<u64>,
    /// End (exclusive) of a range.
    end: Option<u64>,
    /// Act as root instead of the sprite's `sprite` user.
    #[param(rename = "asRoot")]
    as_root: Option<bool>,
}

/// `PUT .../fs/write`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FsWriteQuery {
    /// File path, relative to `workingDir`.
    #[param(min_length = 1)]
    path: String,
    /// Base of a relative `path`; default `/`.
    #[param(rename = "workingDir")]
    working_dir: Option<String>,
    /// Octal permission bits; default `0644`.
    #[param(example = "0644")]
    mode: Option<String>,
    /// Create missing parent directories.
    #[param(rename = "mkdirParents")]
    mkdir_parents: Option<bool>,
    /// Act as root.
    #[param(rename = "asRoot")]
    as_root: Option<bool>,
}

/// `GET .../fs/list`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FsListQuery {
    /// Directory path, relative to `workingDir`.
    #[param(min_length = 1)]
    path: String,
    /// Base of a relative `path`; default `/`.
    #[param(rename = "workingDir")]
    working_dir: Option<String>,
    /// Walk subdirectories too.
    recursive: Option<bool>,
    /// Act as root.
    #[param(rename = "asRoot")]
    as_root: Option<bool>,
}

/// `DELETE .../fs/delete` (the same fields may come as a JSON body).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FsDeleteQuery {
    /// Path to delete, relative to `workingDir`.
    path: Option<String>,
    /// Base of a relative `path`; default `/`.
    #[param(rename = "workingDir")]
    working_dir: Option<String>,
    /// Delete a directory and everything in it.
    recursive: Option<bool>,
    /// Act as root.
    #[param(rename = "asRoot")]
    as_root: Option<bool>,
}

/// `PUT .../services/{svc}` and `POST .../start`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ServiceStartQuery {
    /// How long to stream the service's output (Go duration); capped by the server.
    duration: Option<String>,
}

/// `POST .../stop`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ServiceStopQuery {
    /// SIGTERM to SIGKILL delay (Go duration); default `10s`.
    timeout: Option<String>,
}

/// `POST .../restart`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ServiceRestartQuery {
    /// How long to stream the new process's output (Go duration).
    duration: Option<String>,
    /// SIGTERM to SIGKILL delay of the stop (Go duration).
    timeout: Option<String>,
}

/// `GET .../logs`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ServiceLogsQuery {
    /// How many buffered lines to send first; all by default.
    lines: Option<u64>,
    /// How long to follow new output (Go duration); default `0`.
    duration: Option<String>,
}

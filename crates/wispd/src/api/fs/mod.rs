//! The filesystem API (Sprites API §3.7): `/v1/sprites/{name}/fs/{read,write,list,delete,
//! rename,copy,chmod,chown}`.
//!
//! * `resolve` — paths: lexical cleaning against `workingDir` (default `/`, as the SDKs send),
//!   and every lookup through `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` from a
//!   descriptor of the sprite's root, so no request path resolves outside the sprite.
//! * `session` — one request's hold on the sprite: woken, counted busy, root opened.
//! * `identity` — operations run as the sprite's `sprite` user (per-thread fsuid/fsgid/groups,
//!   so the kernel checks permissions and new files belong to it) unless `asRoot`.
//! * `ops`, `copy`, `transfer` — the blocking work; `types` — wire shapes; `errors` — errno →
//!   status and JSON `code` (404 ENOENT, 403 EACCES/EPERM, 409 EEXIST/ENOTEMPTY, 400 ...).
//!
//! `read` and `write` stream: a read never holds the file in memory; an upload goes to a
//! temporary file in the target's directory and is renamed over the target once complete.

mod copy;
mod errors;
mod identity;
mod ops;
mod resolve;
mod session;
mod transfer;
mod types;

use std::io::SeekFrom;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{delete, get, post, put};
use axum::{Extension, Json, Router};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio_util::io::ReaderStream;

use super::error::ApiError;
use super::extract::{query_pairs, ApiJson, ApiPath};
use super::AppState;
use crate::auth::Caller;
use errors::FsError;
use resolve::clean;
use session::FsSession;
use types::{
    id_arg, parse_mode, Affected, ChmodBody, ChownBody, CopyBody, CopyResponse, DeleteBody,
    DeleteResponse, ListResponse, Query, RenameBody, RenameResponse, WriteResponse,
};

/// Mode of a written file when the request names none.
const DEFAULT_FILE_MODE: u32 = 0o644;
/// Read buffer of a streamed download.
const READ_CHUNK: usize = 64 * 1024;

/// The fs routes; merged into the authenticated API router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/sprites/{name}/fs/read", get(read))
        .route(
            "/v1/sprites/{name}/fs/write",
            // Uploads stream to disk: no body limit but the sprite's own disk.
            put(write).layer(DefaultBodyLimit::disable()),
        )
        .route("/v1/sprites/{name}/fs/list", get(list))
        .route("/v1/sprites/{name}/fs/delete", delete(remove))
        .route("/v1/sprites/{name}/fs/rename", post(rename))
        .route("/v1/sprites/{name}/fs/copy", post(copy))
        .route("/v1/sprites/{name}/fs/chmod", post(chmod))
        .route("/v1/sprites/{name}/fs/chown", post(chown))
}

fn query(raw: Option<String>) -> Query {
    Query(query_pairs(raw.as_deref()))
}

/// `GET .../fs/read?path&workingDir[&start&end][&asRoot]`: the file's bytes, streamed. A byte
/// range (`start` inclusive, `end` exclusive, or a `Range: bytes=a-b` header) answers 206.
#[utoipa::path(
    operation_id = "fs_read",
    get,
    path = "/v1/sprites/{name}/fs/read",
    tag = "fs",
    params(
        crate::api::openapi::params::SpritePath,
        crate::api::openapi::params::FsReadQuery,
        ("Range" = Option<String>, Header, description = "One byte range, `bytes=a-b`, `bytes=a-` or `bytes=-n`; ignored when the query has `start` or `end`"),
    ),
    responses(
        (status = 200, description = "The file's bytes", content_type = "application/octet-stream"),
        (status = 206, description = "A byte range (`start`/`end` or a `Range` header)", content_type = "application/octet-stream"),
        (status = 400, description = "Invalid parameters", body = wisp_api::error::ErrorBody),
        (status = 404, description = "No such sprite or file", body = wisp_api::error::ErrorBody),
        (status = 416, description = "The range is outside the file", body = wisp_api::error::ErrorBody),
    ),
)]
async fn read(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let q = query(raw);
    let path = clean(q.working_dir(), q.path()?)?;
    let as_root = q.as_root()?;
    let wanted = RangeRequest::parse(&q, &headers)?;
    let session = FsSession::open(&st, &caller, &name, as_root).await?;
    let p = path.clone();
    let (file, size) = session
        .run(move |root| transfer::open_for_read(root, &p))
        .await?;
    let range = wanted.resolve(size)?;
    let (from, len) = range.unwrap_or((0, size));
    let mut file = tokio::fs::File::from_std(file);
    if from > 0 {
        file.seek(SeekFrom::Start(from))
            .await
            .map_err(|e| ApiError::internal(format!("read {path}: {e}")))?;
    }
    // The session (and so the sprite's busy mark) lives as long as the stream.
    let stream = ReaderStream::with_capacity(file.take(len), READ_CHUNK).map(move |chunk| {
        let _ = &session;
        chunk
    });
    let mut res = Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, len)
        .header(header::ACCEPT_RANGES, "bytes");
    if range.is_some() {
        res = res.status(StatusCode::PARTIAL_CONTENT).header(
            header::CONTENT_RANGE,
            if len == 0 {
                format!("bytes */{size}")
            } else {
                format!("bytes {from}-{}/{size}", from + len - 1)
            },
        );
    }
    res.body(Body::from_stream(stream))
        .map_err(|e| ApiError::internal(format!("read {path}: {e}")))
}

/// A requested byte range, before the file's size is known.
#[derive(Debug, Clone, Copy, PartialEq)]
enum RangeRequest {
    None,
    /// `start`/`end` query parameters: `[start, end)`.
    Query {
        start: u64,
        end: Option<u64>,
    },
    /// `Range: bytes=first-last` (inclusive; `last` open), or `bytes=-suffix`.
    Header {
        first: u64,
        last: Option<u64>,
    },
    Suffix(u64),
}

impl RangeRequest {
    fn parse(q: &Query, headers: &HeaderMap) -> Result<RangeRequest, FsError> {
        let (start, end) = (q.number("start")?, q.number("end")?);
        if start.is_some() || end.is_some() {
            let start = start.unwrap_or(0);
            if end.is_some_and(|e| e < start) {
                return Err(FsError::bad("invalid range: end is before start"));
            }
            return Ok(RangeRequest::Query { start, end });
        }
        let Some(h) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
            return Ok(RangeRequest::None);
        };
        // One range in bytes only; anything else is ignored (the whole file, 200).
        let Some(spec) = h.trim().strip_prefix("bytes=") else {
            return Ok(RangeRequest::None);
        };
        if spec.contains(',') {
            return Ok(RangeRequest::None);
        }
        let Some((a, b)) = spec.trim().split_once('-') else {
            return Ok(RangeRequest::None);
        };
        let num = |s: &str| s.trim().parse::<u64>().ok();
        Ok(match (a.trim().is_empty(), num(a), num(b)) {
            (true, _, Some(n)) => RangeRequest::Suffix(n),
            (false, Some(first), last)
                if b.trim().is_empty() || last.is_some_and(|l| l >= first) =>
            {
                RangeRequest::Header { first, last }
            }
            _ => RangeRequest::None,
        })
    }

    /// `(offset, length)` within a file of `size` bytes; `None` for the whole file.
    fn resolve(self, size: u64) -> Result<Option<(u64, u64)>, ApiError> {
        let unsatisfiable = || {
            let mut e = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                format!("range not satisfiable: the file has {size} bytes"),
            );
            e.body.code = Some("EINVAL".into());
            e
        };
        Ok(match self {
            RangeRequest::None => None,
            RangeRequest::Query { start, end } => {
                if start > size {
                    return Err(unsatisfiable());
                }
                let end = end.unwrap_or(size).min(size);
                Some((start, end - start))
            }
            RangeRequest::Header { first, last } => {
                if first >= size {
                    return Err(unsatisfiable());
                }
                let last = last.unwrap_or(size - 1).min(size - 1);
                Some((first, last - first + 1))
            }
            RangeRequest::Suffix(n) => {
                if n == 0 {
                    return Err(unsatisfiable());
                }
                let n = n.min(size);
                Some((size - n, n))
            }
        })
    }
}

/// `PUT .../fs/write?path&workingDir&mode=0644&mkdirParents=true&asRoot`: the raw body,
/// streamed into the file. 201 for a new file, 200 for a replaced one.
#[utoipa::path(
    operation_id = "fs_write",
    put,
    path = "/v1/sprites/{name}/fs/write",
    tag = "fs",
    params(crate::api::openapi::params::SpritePath, crate::api::openapi::params::FsWriteQuery),
    request_body(content = Vec<u8>, description = "The file's new content", content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "Replaced an existing file", body = types::WriteResponse),
        (status = 201, description = "Created a new file", body = types::WriteResponse),
        (status = 400, description = "Invalid parameters", body = wisp_api::error::ErrorBody),
        (status = 404, description = "No such sprite or file", body = wisp_api::error::ErrorBody),
        (status = 409, description = "A directory is in the way", body = wisp_api::error::ErrorBody),
    ),
)]
async fn write(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
    RawQuery(raw): RawQuery,
    body: Body,
) -> Result<(StatusCode, Json<WriteResponse>), ApiError> {
    let q = query(raw);
    let path = clean(q.working_dir(), q.path()?)?;
    let as_root = q.as_root()?;
    let mode = match q.get("mode").filter(|m| !m.is_empty()) {
        Some(m) => parse_mode(m)?,
        None => DEFAULT_FILE_MODE,
    };
    let mkdir = q
        .flag_any(&["mkdirParents", "mkdir_parents", "mkdir"])?
        .unwrap_or(true);
    let session = FsSession::open(&st, &caller, &name, as_root).await?;
    let p = path.clone();
    let (upload, file) = session
        .run(move |root| transfer::begin_write(root, &p, mkdir))
        .await?;
    // From here on, any early return drops `upload`, which removes the temporary file.
    let mut out = tokio::fs::File::from_std(file);
    let mut body = body.into_data_stream();
    let write_err = |e: std::io::Error| -> ApiError {
        let errno = rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::IO);
        FsError::errno("write", upload.path(), errno).into()
    };
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request(format!("write {path}: the upload was cut off: {e}"))
        })?;
        out.write_all(&chunk).await.map_err(write_err)?;
    }
    out.flush().await.map_err(write_err)?;
    let file = out.into_std().await;
    let (res, created) = session
        .run(move |_| upload.commit(file, mode, as_root))
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(res)))
}

/// `GET .../fs/list?path&workingDir&recursive`.
#[utoipa::path(
    operation_id = "fs_list",
    get,
    path = "/v1/sprites/{name}/fs/list",
    tag = "fs",
    params(crate::api::openapi::params::SpritePath, crate::api::openapi::params::FsListQuery),
    responses(
        (status = 200, description = "The directory's entries", body = types::ListResponse),
        (status = 400, description = "Invalid parameters", body = wisp_api::error::ErrorBody),
        (status = 404, description = "No such sprite or file", body = wisp_api::error::ErrorBody),
    ),
)]
async fn list(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<ListResponse>, ApiError> {
    let q = query(raw);
    let path = clean(q.working_dir(), q.path()?)?;
    let recursive = q.flag("recursive")?.unwrap_or(false);
    let as_root = q.as_root()?;
    let session = FsSession::open(&st, &caller, &name, as_root).await?;
    let res = session
        .run(move |root| ops::list(root, &path, recursive))
        .await?;
    Ok(Json(res))
}

/// `DELETE .../fs/delete?path&workingDir&recursive&asRoot` (or the same as a JSON body; the
/// query wins).
#[utoipa::path(
    operation_id = "fs_remove",
    delete,
    path = "/v1/sprites/{name}/fs/delete",
    tag = "fs",
    params(crate::api::openapi::params::SpritePath, crate::api::openapi::params::FsDeleteQuery),
    request_body(content = Option<types::DeleteBody>, description = "The parameters, as an alternative to the query"),
    responses(
        (status = 200, description = "Deleted", body = types::DeleteResponse),
        (status = 400, description = "Invalid parameters", body = wisp_api::error::ErrorBody),
        (status = 404, description = "No such sprite or file", body = wisp_api::error::ErrorBody),
        (status = 409, description = "A non-empty directory without `recursive`", body = wisp_api::error::ErrorBody),
    ),
)]
async fn remove(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
    RawQuery(raw): RawQuery,
    ApiJson(b): ApiJson<DeleteBody>,
) -> Result<Json<DeleteResponse>, ApiError> {
    let q = query(raw);
    let raw_path = q
        .get("path")
        .filter(|p| !p.is_empty())
        .or(b.path.as_deref())
        .ok_or_else(|| ApiError::bad_request("path is required"))?;
    let path = clean(q.working_dir().or(b.working_dir.as_deref()), raw_path)?;
    let recursive = q.flag("recursive")?.unwrap_or(b.recursive);
    let as_root = q.flag_any(&["asRoot", "as_root"])?.unwrap_or(b.as_root);
    let session = FsSession::open(&st, &caller, &name, as_root).await?;
    let deleted = session
        .run(move |root| ops::delete(root, &path, recursive))
        .await?;
    Ok(Json(DeleteResponse {
        count: deleted.len(),
        deleted,
    }))
}

/// Both paths of a two-path request, required and cleaned.
fn two_paths(wd: Option<&str>, source: &str, dest: &str) -> Result<(String, String), ApiError> {
    if source.is_empty() || dest.is_empty() {
        return Err(ApiError::bad_request("source and dest are required"));
    }
    Ok((clean(wd, source)?, clean(wd, dest)?))
}

/// `POST .../fs/rename` `{source, dest, workingDir, asRoot}`.
#[utoipa::path(
    operation_id = "fs_rename",
    post,
    path = "/v1/sprites/{name}/fs/rename",
    tag = "fs",
    params(crate::api::openapi::params::SpritePath),
    request_body = types::RenameBody,
    responses(
        (status = 200, description = "Renamed", body = types::RenameResponse),
        (status = 400, description = "Invalid parameters", body = wisp_api::error::ErrorBody),
        (status = 404, description = "No such sprite or file", body = wisp_api::error::ErrorBody),
    ),
)]
async fn rename(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
    ApiJson(b): ApiJson<RenameBody>,
) -> Result<Json<RenameResponse>, ApiError> {
    let (source, dest) = two_paths(b.working_dir.as_deref(), &b.source, &b.dest)?;
    let session = FsSession::open(&st, &caller, &name, b.as_root).await?;
    let (s, d) = (source.clone(), dest.clone());
    session.run(move |root| ops::rename(root, &s, &d)).await?;
    Ok(Json(RenameResponse { source, dest }))
}

/// `POST .../fs/copy` `{source, dest, workingDir, recursive, preserveAttrs, asRoot}`.
#[utoipa::path(
    operation_id = "fs_copy",
    post,
    path = "/v1/sprites/{name}/fs/copy",
    tag = "fs",
    params(crate::api::openapi::params::SpritePath),
    request_body = types::CopyBody,
    responses(
        (status = 200, description = "Copied", body = types::CopyResponse),
        (status = 400, description = "Invalid parameters", body = wisp_api::error::ErrorBody),
        (status = 404, description = "No such sprite or file", body = wisp_api::error::ErrorBody),
    ),
)]
async fn copy(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
    ApiJson(b): ApiJson<CopyBody>,
) -> Result<Json<CopyResponse>, ApiError> {
    let (source, dest) = two_paths(b.working_dir.as_deref(), &b.source, &b.dest)?;
    let session = FsSession::open(&st, &caller, &name, b.as_root).await?;
    let (recursive, preserve, as_root) = (b.recursive, b.preserve_attrs, b.as_root);
    let res = session
        .run(move |root| copy::copy(root, &source, &dest, recursive, preserve, as_root))
        .await?;
    Ok(Json(res))
}

/// `POST .../fs/chmod` `{path, workingDir, mode: "0755", recursive, asRoot}`.
#[utoipa::path(
    operation_id = "fs_chmod",
    post,
    path = "/v1/sprites/{name}/fs/chmod",
    tag = "fs",
    params(crate::api::openapi::params::SpritePath),
    request_body = types::ChmodBody,
    responses(
        (status = 200, description = "Changed", body = types::Affected<types::ChmodItem>),
        (status = 400, description = "Invalid parameters", body = wisp_api::error::ErrorBody),
        (status = 404, description = "No such sprite or file", body = wisp_api::error::ErrorBody),
    ),
)]
async fn chmod(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
    ApiJson(b): ApiJson<ChmodBody>,
) -> Result<Json<Affected<types::ChmodItem>>, ApiError> {
    let path = clean(b.working_dir.as_deref(), &b.path)?;
    let mode = b
        .mode
        .as_ref()
        .ok_or_else(|| ApiError::bad_request("mode is required"))?
        .bits()?;
    let session = FsSession::open(&st, &caller, &name, b.as_root).await?;
    let recursive = b.recursive;
    let affected = session
        .run(move |root| ops::chmod(root, &path, mode, recursive))
        .await?;
    Ok(Json(Affected {
        count: affected.len(),
        affected,
    }))
}

/// `POST .../fs/chown` `{path, workingDir, uid, gid, recursive, asRoot}`.
#[utoipa::path(
    operation_id = "fs_chown",
    post,
    path = "/v1/sprites/{name}/fs/chown",
    tag = "fs",
    params(crate::api::openapi::params::SpritePath),
    request_body = types::ChownBody,
    responses(
        (status = 200, description = "Changed", body = types::Affected<types::ChownItem>),
        (status = 400, description = "Invalid parameters", body = wisp_api::error::ErrorBody),
        (status = 404, description = "No such sprite or file", body = wisp_api::error::ErrorBody),
    ),
)]
async fn chown(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
    ApiJson(b): ApiJson<ChownBody>,
) -> Result<Json<Affected<types::ChownItem>>, ApiError> {
    let path = clean(b.working_dir.as_deref(), &b.path)?;
    let uid = id_arg("uid", b.uid)?;
    let gid = id_arg("gid", b.gid)?;
    if uid.is_none() && gid.is_none() {
        return Err(ApiError::bad_request("uid or gid is required"));
    }
    let session = FsSession::open(&st, &caller, &name, b.as_root).await?;
    let recursive = b.recursive;
    let affected = session
        .run(move |root| ops::chown(root, &path, uid, gid, recursive))
        .await?;
    Ok(Json(Affected {
        count: affected.len(),
        affected,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, v.parse().unwrap());
        h
    }

    fn q(pairs: &[(&str, &str)]) -> Query {
        Query(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn ranges() {
        let none = HeaderMap::new();
        let r = |q: &Query, h: &HeaderMap, size| RangeRequest::parse(q, h).unwrap().resolve(size);
        assert_eq!(r(&q(&[]), &none, 10).unwrap(), None);
        assert_eq!(
            r(&q(&[("start", "2"), ("end", "5")]), &none, 10).unwrap(),
            Some((2, 3))
        );
        assert_eq!(r(&q(&[("start", "2")]), &none, 10).unwrap(), Some((2, 8)));
        assert_eq!(r(&q(&[("end", "50")]), &none, 10).unwrap(), Some((0, 10)));
        assert_eq!(r(&q(&[("start", "10")]), &none, 10).unwrap(), Some((10, 0)));
        assert_eq!(
            r(&q(&[("start", "11")]), &none, 10).unwrap_err().status,
            416
        );
        assert!(RangeRequest::parse(&q(&[("start", "5"), ("end", "2")]), &none).is_err());
        assert!(RangeRequest::parse(&q(&[("start", "x")]), &none).is_err());
        assert_eq!(r(&q(&[]), &hdr("bytes=0-3"), 10).unwrap(), Some((0, 4)));
        assert_eq!(r(&q(&[]), &hdr("bytes=4-"), 10).unwrap(), Some((4, 6)));
        assert_eq!(r(&q(&[]), &hdr("bytes=-3"), 10).unwrap(), Some((7, 3)));
        assert_eq!(r(&q(&[]), &hdr("bytes=5-100"), 10).unwrap(), Some((5, 5)));
        assert_eq!(r(&q(&[]), &hdr("bytes=10-"), 10).unwrap_err().status, 416);
        assert_eq!(r(&q(&[]), &hdr("bytes=0-1,4-5"), 10).unwrap(), None);
        assert_eq!(r(&q(&[]), &hdr("items=0-1"), 10).unwrap(), None);
        assert_eq!(r(&q(&[]), &hdr("bytes=5-2"), 10).unwrap(), None);
    }
}

//! Errors of filesystem operations, and how they reach clients: JSON `{"error", "code"}` with
//! the status the SDKs expect (404 → ENOENT in every SDK; Python also reads `code`).

use axum::http::StatusCode;
use rustix::io::Errno;

use crate::api::error::ApiError;

#[derive(Debug, Clone, PartialEq)]
pub enum FsError {
    /// A system call failed on a sprite path.
    Errno {
        op: &'static str,
        path: String,
        errno: Errno,
    },
    /// The request itself is wrong (400).
    Bad(String),
    /// Anything else, already shaped.
    Api(ApiError),
}

impl FsError {
    pub fn errno(op: &'static str, path: &str, errno: Errno) -> Self {
        FsError::Errno {
            op,
            path: path.to_string(),
            errno,
        }
    }

    pub fn bad(msg: impl Into<String>) -> Self {
        FsError::Bad(msg.into())
    }

    /// The errno of an `Errno` error.
    pub fn raw(&self) -> Option<Errno> {
        match self {
            FsError::Errno { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

impl From<ApiError> for FsError {
    fn from(e: ApiError) -> Self {
        FsError::Api(e)
    }
}

/// The errno name and Go-style message for the errors a file operation can meet.
fn describe(e: Errno) -> (&'static str, &'static str) {
    match e {
        Errno::NOENT => ("ENOENT", "no such file or directory"),
        Errno::ACCESS => ("EACCES", "permission denied"),
        Errno::PERM => ("EPERM", "operation not permitted"),
        Errno::ISDIR => ("EISDIR", "is a directory"),
        Errno::NOTDIR => ("ENOTDIR", "not a directory"),
        Errno::EXIST => ("EEXIST", "file exists"),
        Errno::NOTEMPTY => ("ENOTEMPTY", "directory not empty"),
        Errno::LOOP => ("ELOOP", "too many levels of symbolic links"),
        Errno::XDEV => ("EXDEV", "invalid cross-device link"),
        Errno::NOSPC => ("ENOSPC", "no space left on device"),
        Errno::DQUOT => ("EDQUOT", "disk quota exceeded"),
        Errno::ROFS => ("EROFS", "read-only file system"),
        Errno::NAMETOOLONG => ("ENAMETOOLONG", "file name too long"),
        Errno::INVAL => ("EINVAL", "invalid argument"),
        Errno::BUSY => ("EBUSY", "device or resource busy"),
        Errno::TXTBSY => ("ETXTBSY", "text file busy"),
        Errno::MLINK => ("EMLINK", "too many links"),
        Errno::FBIG => ("EFBIG", "file too large"),
        Errno::IO => ("EIO", "input/output error"),
        Errno::AGAIN => ("EAGAIN", "resource temporarily unavailable"),
        Errno::NOTSUP => ("EOPNOTSUPP", "operation not supported"),
        _ => ("EIO", ""),
    }
}

fn status_of(e: Errno) -> StatusCode {
    match e {
        Errno::NOENT => StatusCode::NOT_FOUND,
        Errno::ACCESS | Errno::PERM | Errno::ROFS => StatusCode::FORBIDDEN,
        Errno::EXIST | Errno::NOTEMPTY | Errno::BUSY | Errno::TXTBSY => StatusCode::CONFLICT,
        Errno::NOSPC | Errno::DQUOT | Errno::FBIG => StatusCode::INSUFFICIENT_STORAGE,
        Errno::ISDIR
        | Errno::NOTDIR
        | Errno::LOOP
        | Errno::XDEV
        | Errno::NAMETOOLONG
        | Errno::INVAL
        | Errno::MLINK
        | Errno::NOTSUP => StatusCode::BAD_REQUEST,
        Errno::AGAIN => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<FsError> for ApiError {
    fn from(e: FsError) -> Self {
        match e {
            FsError::Bad(msg) => ApiError::bad_request(msg),
            FsError::Api(api) => api,
            FsError::Errno { op, path, errno } => {
                let (code, text) = describe(errno);
                let text = if text.is_empty() {
                    std::io::Error::from_raw_os_error(errno.raw_os_error()).to_string()
                } else {
                    text.to_string()
                };
                let message = format!("{op} {path}: {text}");
                let status = status_of(errno);
                let mut api =
                    if status.is_server_error() && status != StatusCode::INSUFFICIENT_STORAGE {
                        if status == StatusCode::SERVICE_UNAVAILABLE {
                            ApiError::unavailable(message)
                        } else {
                            ApiError::internal(message)
                        }
                    } else {
                        ApiError::new(status, message)
                    };
                api.body.code = Some(code.to_string());
                api
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(e: Errno) -> ApiError {
        FsError::errno("open", "/x", e).into()
    }

    #[test]
    fn statuses_and_codes() {
        let e = api(Errno::NOENT);
        assert_eq!(e.status, 404);
        assert_eq!(e.body.code.as_deref(), Some("ENOENT"));
        assert_eq!(e.body.error, "open /x: no such file or directory");
        let e = api(Errno::ACCESS);
        assert_eq!(e.status, 403);
        assert!(e.body.error.contains("permission denied"));
        assert_eq!(api(Errno::NOTEMPTY).status, 409);
        assert!(api(Errno::NOTEMPTY).body.error.contains("not empty"));
        assert_eq!(api(Errno::ISDIR).body.code.as_deref(), Some("EISDIR"));
        assert_eq!(api(Errno::NOSPC).status, 507);
        assert_eq!(api(Errno::MFILE).status, 500);
        let e: ApiError = FsError::bad("path is required").into();
        assert_eq!((e.status.as_u16(), e.body.code), (400, None));
    }
}

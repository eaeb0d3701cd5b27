//! `ApiError`: every non-2xx response, as JSON [`ErrorBody`] with the right status.
//!
//! 4xx are the client's business and are not logged as errors; 5xx are logged with detail.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use wisp_api::error::ErrorBody;
use wisp_api::name::NameError;

use crate::manager::ManagerError;
use crate::runtime::RuntimeError;
use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
}

pub const SPRITE_NOT_FOUND: &str = "sprite not found";

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody::new(error),
        }
    }

    pub fn bad_request(error: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error)
    }

    pub fn not_found(error: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, error)
    }

    pub fn sprite_not_found() -> Self {
        Self::not_found(SPRITE_NOT_FOUND)
    }

    pub fn session_not_found(id: &str) -> Self {
        Self::not_found(format!("session not found: {id}"))
    }

    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "authentication failed")
    }

    /// 400 with the message also in `errors`, the shape production uses for validation.
    pub fn validation(error: impl Into<String>, errors: Vec<String>) -> Self {
        let mut e = Self::bad_request(error);
        e.body.errors = Some(errors);
        e
    }

    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!("internal error: {error}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
    }

    pub fn unavailable(error: impl std::fmt::Display) -> Self {
        tracing::warn!("service unavailable: {error}");
        Self::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::internal(e)
    }
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        match e {
            RuntimeError::SessionNotFound => ApiError::not_found("session not found"),
            RuntimeError::NotRunning
            | RuntimeError::Unresponsive
            | RuntimeError::Timeout(_)
            | RuntimeError::Image(_)
            | RuntimeError::ResourceExhausted(_) => ApiError::unavailable(e),
            RuntimeError::Storage(s) => s.into(),
            other => ApiError::internal(other),
        }
    }
}

impl From<ManagerError> for ApiError {
    fn from(e: ManagerError) -> Self {
        match e {
            ManagerError::NameTaken(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            ManagerError::Gone => ApiError::sprite_not_found(),
            ManagerError::Runtime(r) => r.into(),
            ManagerError::Storage(s) => s.into(),
            ManagerError::CheckpointNotFound(_) => ApiError::not_found(e.to_string()),
            ManagerError::CheckpointInUse(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            ManagerError::Store(_) | ManagerError::Task(_) => ApiError::internal(e),
        }
    }
}

impl From<crate::storage::StorageError> for ApiError {
    fn from(e: crate::storage::StorageError) -> Self {
        use crate::storage::StorageError;
        match e {
            StorageError::Full(_) => ApiError::new(StatusCode::INSUFFICIENT_STORAGE, e.to_string()),
            other => ApiError::internal(other),
        }
    }
}

/// Sprite name errors in the production shape: a detailed `error`, and `errors` holding
/// `invalid sprite name format` (or `name is required`).
pub fn name_error(e: NameError) -> ApiError {
    match e {
        NameError::Empty => ApiError::validation(e.to_string(), vec![e.to_string()]),
        other => ApiError::validation(other.to_string(), vec!["invalid sprite name format".into()]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(e: ApiError) -> (StatusCode, serde_json::Value) {
        let res = e.into_response();
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn shapes() {
        let (s, v) = body_of(ApiError::unauthorized()).await;
        assert_eq!(s, 401);
        assert_eq!(v, serde_json::json!({"error": "authentication failed"}));
        let (s, v) = body_of(name_error(NameError::BadChar)).await;
        assert_eq!(s, 400);
        assert_eq!(
            v["errors"],
            serde_json::json!(["invalid sprite name format"])
        );
        assert!(v["error"]
            .as_str()
            .unwrap()
            .starts_with("invalid sprite name format"));
        let (_, v) = body_of(name_error(NameError::Empty)).await;
        assert_eq!(v["error"], "name is required");
    }

    #[test]
    fn manager_and_runtime_mapping() {
        let e: ApiError = ManagerError::NameTaken("x".into()).into();
        assert_eq!(e.status, 409);
        assert_eq!(
            e.body.error,
            "A sprite named 'x' already exists. Please choose a different name."
        );
        let e: ApiError = ManagerError::Gone.into();
        assert_eq!(
            (e.status.as_u16(), e.body.error.as_str()),
            (404, SPRITE_NOT_FOUND)
        );
        let e: ApiError = RuntimeError::SessionNotFound.into();
        assert_eq!(e.status, 404);
        let e: ApiError = RuntimeError::Unresponsive.into();
        assert_eq!(e.status, 503);
        let e: ApiError = RuntimeError::KeeperStart("x".into()).into();
        assert_eq!(e.status, 500);
    }
}

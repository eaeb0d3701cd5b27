//! The authentication middleware of `/v1`: a valid token or 401.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::AppState;
use crate::auth::{token_from_headers, verify};

/// Puts the [`crate::auth::Caller`] into the request's extensions.
pub async fn require_auth(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(token) = token_from_headers(req.headers()) else {
        return ApiError::unauthorized().into_response();
    };
    match verify(&state.store, &token) {
        Ok(Some(caller)) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Ok(None) => ApiError::unauthorized().into_response(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}

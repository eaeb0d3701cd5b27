//! The authentication middleware of `/v1`: a valid token or 401; for an attenuated token, a
//! request its caveats allow or 403; for a request that may wake a cold sprite, room under
//! the org's running limit or 429.

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use wisp_api::attenuation::Op;
use wisp_api::name::validate_sprite_name;
use wisp_api::sprite::SpriteStatus;

use super::error::ApiError;
use super::AppState;
use crate::auth::{authenticate, token_from_headers, Caller, Grant};
use crate::tenancy::access::{classify, Access};
use crate::tenancy::LimitExceeded;

/// Puts the [`Caller`] and its [`Grant`] into the request's extensions.
pub async fn require_auth(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(token) = token_from_headers(req.headers()) else {
        return ApiError::unauthorized().into_response();
    };
    let auth = match authenticate(&state.store, &token) {
        Ok(Some(a)) => a,
        Ok(None) => return ApiError::unauthorized().into_response(),
        Err(e) => return ApiError::internal(e).into_response(),
    };
    let template = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let path = req.uri().path().to_string();
    let access = classify(req.method(), &template, &path);
    if let Err(e) = permit(&auth.grant, &access) {
        return e.into_response();
    }
    if let Access::Sprite {
        name, wakes: true, ..
    } = access
    {
        if let Err(res) = wake_room(&state, &auth.caller, name).await {
            return res;
        }
    }
    req.extensions_mut().insert(auth.caller);
    req.extensions_mut().insert(auth.grant);
    next.run(req).await
}

pub fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, message)
}

/// What the grant allows of `access`. Full tokens pass (management is then up to the
/// handlers: admin or own org); attenuated ones only within their caveats.
fn permit(grant: &Grant, access: &Access<'_>) -> Result<(), ApiError> {
    if !grant.is_attenuated() {
        return Ok(());
    }
    let denied = |e: wisp_api::attenuation::Denied| forbidden(e.to_string());
    match access {
        // Which org the token belongs to: fine for any valid (unexpired) token.
        Access::OrgInfo => Ok(()),
        Access::Manage => Err(forbidden(
            "an attenuated token cannot manage organizations or tokens",
        )),
        Access::ListSprites => grant.check(Op::Read, None).map_err(denied),
        Access::CreateSprite => grant.check(Op::Write, None).map_err(denied),
        Access::Sprite { name, op, .. } => {
            // A restricted token matches only names as they are (no percent-encoding games).
            if grant.restricts_sprites() && validate_sprite_name(name).is_err() {
                return Err(forbidden(format!(
                    "the token does not allow access to sprite {name:?}"
                )));
            }
            grant.check(*op, Some(name)).map_err(denied)
        }
    }
}

/// For a request that may start the org's cold sprite `name`: 429 when the org already has
/// as many sprites running or warm as its limit allows. (A check before the handler's wake:
/// two wakes of different cold sprites at the same instant may both pass.)
async fn wake_room(st: &AppState, caller: &Caller, name: &str) -> Result<(), Response> {
    let limits = st
        .tenancy
        .effective(&st.store, &caller.org_id)
        .map_err(IntoResponse::into_response)?;
    let Some(max) = limits.running else {
        return Ok(());
    };
    if validate_sprite_name(name).is_err() {
        return Ok(());
    }
    let row = match st.store.sprite_by_name(&caller.org_id, name) {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(()),
        Err(e) => return Err(ApiError::from(e).into_response()),
    };
    if st.manager.status(&row.id).await != SpriteStatus::Cold {
        return Ok(());
    }
    let current = st
        .tenancy
        .running_count(&st.store, &st.manager, &caller.org_id)
        .await
        .map_err(IntoResponse::into_response)?;
    if current >= max {
        return Err(LimitExceeded::concurrent(max, current).into_response());
    }
    Ok(())
}

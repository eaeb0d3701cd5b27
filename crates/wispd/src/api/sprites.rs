//! The sprites resource: create, list, get, update, destroy.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use wisp_api::attenuation::Op;
use wisp_api::name::validate_sprite_name;
use wisp_api::sprite::{
    validate_labels, CreateSpriteRequest, Lifecycle, ListSpritesResponse, OrgInfo, Sprite,
    SpriteStatus, TimeoutSetting, UpdateSpriteRequest, UrlSettingsPatch, URL_AUTH_SPRITE,
};

use super::error::{name_error, ApiError};
use super::extract::{query_pairs, ApiJson, ApiPath};
use super::list_params::{encode_token, parse_list_params};
use super::view::sprite_object;
use super::AppState;
use crate::auth::{Caller, Grant};
use crate::manager::{ForkFrom, ManagerError, NewSprite};
use crate::store::SpriteRow;
use crate::store::StoreError;
use crate::tenancy::LimitExceeded;
use crate::timefmt;

/// The caller's sprite called `name`, or 404. Names that cannot exist are simply not found.
pub fn find_sprite(st: &AppState, caller: &Caller, name: &str) -> Result<SpriteRow, ApiError> {
    if validate_sprite_name(name).is_err() {
        return Err(ApiError::sprite_not_found());
    }
    st.store
        .sprite_by_name(&caller.org_id, name)?
        .ok_or_else(ApiError::sprite_not_found)
}

fn validate_settings(
    url: Option<&UrlSettingsPatch>,
    labels: Option<&[String]>,
) -> Result<(), ApiError> {
    if let Some(url) = url {
        url.validate()
            .map_err(|m| ApiError::validation(m.clone(), vec![m]))?;
    }
    if let Some(labels) = labels {
        validate_labels(labels).map_err(|m| ApiError::validation(m.clone(), vec![m]))?;
    }
    Ok(())
}

async fn view(st: &AppState, caller: &Caller, row: &SpriteRow) -> Sprite {
    let status = st.manager.status(&row.id).await;
    let mut sprite = sprite_object(row, &caller.org_slug, status, &st.url_base);
    sprite.lifecycle = st
        .store
        .sprite_timeouts(&row.id)
        .ok()
        .and_then(lifecycle_view);
    sprite
}

/// `5000` → `5s`, `1500` → `1500ms`.
fn duration_text(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

fn lifecycle_view((idle, cold): crate::store::Timeouts) -> Option<Lifecycle> {
    (idle.is_some() || cold.is_some()).then(|| Lifecycle {
        idle_timeout: idle.map(duration_text),
        cold_timeout: cold.map(duration_text),
    })
}

fn parse_lifecycle(
    l: Option<&Lifecycle>,
) -> Result<Option<(TimeoutSetting, TimeoutSetting)>, ApiError> {
    l.map(|l| {
        l.settings()
            .map_err(|m| ApiError::validation(m.clone(), vec![m]))
    })
    .transpose()
}

/// A refused create: the usual error, or a 429 for an org limit.
#[derive(Debug)]
pub enum CreateError {
    Api(ApiError),
    Limit(LimitExceeded),
}

impl From<ApiError> for CreateError {
    fn from(e: ApiError) -> Self {
        CreateError::Api(e)
    }
}

impl From<ManagerError> for CreateError {
    fn from(e: ManagerError) -> Self {
        CreateError::Api(e.into())
    }
}

impl From<StoreError> for CreateError {
    fn from(e: StoreError) -> Self {
        CreateError::Api(e.into())
    }
}

impl From<LimitExceeded> for CreateError {
    fn from(e: LimitExceeded) -> Self {
        CreateError::Limit(e)
    }
}

impl IntoResponse for CreateError {
    fn into_response(self) -> Response {
        match self {
            CreateError::Api(e) => e.into_response(),
            CreateError::Limit(e) => e.into_response(),
        }
    }
}

/// An attenuated token's sprite caveats applied to a name in a body (403 otherwise).
fn check_grant(grant: Option<&Grant>, op: Op, name: &str) -> Result<(), ApiError> {
    match grant {
        Some(g) => g
            .check(op, Some(name))
            .map_err(|e| super::auth::forbidden(e.to_string())),
        None => Ok(()),
    }
}

#[utoipa::path(
    operation_id = "sprites_create",
    post,
    path = "/v1/sprites",
    tag = "sprites",
    request_body = wisp_api::sprite::CreateSpriteRequest,
    responses(
        (status = 201, description = "Created", body = wisp_api::sprite::Sprite),
        (status = 400, description = "Invalid parameters", body = wisp_api::error::ErrorBody),
        (status = 404, description = "The fork source does not exist", body = wisp_api::error::ErrorBody),
        (status = 409, description = "The name is taken", body = wisp_api::error::ErrorBody),
        (status = 429, description = "Over the organization's running or create-rate limit", body = wisp_api::error::ErrorBody),
        (status = 507, description = "The storage pool is full", body = wisp_api::error::ErrorBody),
    ),
)]
pub async fn create(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    grant: Option<Extension<Grant>>,
    ApiJson(req): ApiJson<CreateSpriteRequest>,
) -> Result<(StatusCode, Json<Sprite>), CreateError> {
    let grant = grant.map(|Extension(g)| g);
    let name = req.name.unwrap_or_default();
    validate_sprite_name(&name).map_err(name_error)?;
    check_grant(grant.as_ref(), Op::Write, &name)?;
    validate_settings(req.url_settings.as_ref(), req.labels.as_deref())?;
    let lifecycle = parse_lifecycle(req.lifecycle.as_ref())?;
    let from = match &req.from {
        None => None,
        Some(src) => {
            if let Some(ck) = &src.checkpoint {
                if !wisp_api::checkpoint::is_valid_checkpoint_id(ck) {
                    return Err(ApiError::bad_request(format!(
                        "from.checkpoint: {ck:?} is not a checkpoint id (v0, v1, ... or auto-...)"
                    ))
                    .into());
                }
            }
            // A fork reads the source's files.
            check_grant(grant.as_ref(), Op::Read, &src.sprite)?;
            let row = find_sprite(&st, &caller, &src.sprite).map_err(|_| {
                ApiError::not_found(format!("from.sprite: sprite {:?} not found", src.sprite))
            })?;
            Some(ForkFrom {
                sprite_id: row.id,
                sprite_name: row.name,
                checkpoint: src.checkpoint.clone(),
            })
        }
    };
    let url = req.url_settings.unwrap_or_default();
    let new = NewSprite {
        org_id: caller.org_id.clone(),
        name,
        url_auth: url.auth.unwrap_or_else(|| URL_AUTH_SPRITE.to_string()),
        private_access: url.private_access,
        labels: req.labels.unwrap_or_default(),
        from,
    };
    // Org limits: running sprites (creates of the org serialised while it applies, so two
    // cannot take the last slot), then the create rate.
    let limits = st.tenancy.effective(&st.store, &caller.org_id)?;
    let create_lock = limits
        .running
        .map(|_| st.tenancy.create_lock(&caller.org_id));
    let _creating = match &create_lock {
        Some(l) => Some(l.lock().await),
        None => None,
    };
    if let Some(max) = limits.running {
        let current = st
            .tenancy
            .running_count(&st.store, &st.manager, &caller.org_id)
            .await?;
        if current >= max {
            return Err(LimitExceeded::concurrent(max, current).into());
        }
    }
    let slot = match limits.create_rate {
        Some(n) => Some(st.tenancy.reserve_create(
            &caller.org_id,
            n,
            std::time::Duration::from_secs(limits.create_window_seconds),
            std::time::Instant::now(),
        )?),
        None => None,
    };
    let row = match st.manager.create(new).await {
        Ok(row) => row,
        Err(e) => {
            if let Some(slot) = slot {
                st.tenancy.release(slot);
            }
            return Err(e.into());
        }
    };
    drop(slot);
    if let Some((idle, cold)) = lifecycle {
        st.store.set_sprite_timeouts(&row.id, idle, cold)?;
    }
    crate::insprite::sprite_created(&row.id);
    st.manager.activity().touch(&row.id);
    Ok((StatusCode::CREATED, Json(view(&st, &caller, &row).await)))
}

#[utoipa::path(
    operation_id = "sprites_list",
    get,
    path = "/v1/sprites",
    tag = "sprites",
    params(crate::api::openapi::params::ListSpritesQuery),
    responses(
        (status = 200, description = "A page of sprites, by name", body = wisp_api::sprite::ListSpritesResponse),
        (status = 400, description = "Invalid parameters", body = wisp_api::error::ErrorBody),
    ),
)]
pub async fn list(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    grant: Option<Extension<Grant>>,
    RawQuery(raw): RawQuery,
) -> Result<Json<ListSpritesResponse>, ApiError> {
    let params = parse_list_params(&query_pairs(raw.as_deref()))?;
    let mut page = st.store.list_sprites(
        &caller.org_id,
        &params.prefix,
        params.after.as_deref(),
        params.max_results,
    )?;
    // Counts cover the whole org; every status comes from one concurrent sweep.
    let mut ids = st.store.org_sprite_ids(&caller.org_id)?;
    // An attenuated token sees only the sprites its caveats allow (in the counts too). A page
    // may then hold fewer than max_results; `has_more` and the continuation still hold.
    let next_continuation_token = page
        .has_more
        .then(|| page.rows.last().map(|r| encode_token(&r.name)))
        .flatten();
    if let Some(Extension(g)) = grant.as_ref().filter(|g| g.restricts_sprites()) {
        page.rows.retain(|r| g.allows_sprite(&r.name));
        let allowed: std::collections::HashSet<String> = st
            .store
            .sprites_in_state(crate::store::SpriteState::Ready)?
            .into_iter()
            .filter(|r| r.org_id == caller.org_id && g.allows_sprite(&r.name))
            .map(|r| r.id)
            .collect();
        ids.retain(|id| allowed.contains(id));
    }
    // Statuses of this page's sprites; the org's counts come from a sweep of every sprite,
    // reused for a second so that paging through many sprites stays linear.
    let page_ids: Vec<String> = page.rows.iter().map(|r| r.id.clone()).collect();
    let statuses = st.manager.statuses(&page_ids).await;
    let restricted = grant.as_ref().is_some_and(|g| g.restricts_sprites());
    let counts = st
        .manager
        .status_counts((!restricted).then_some(caller.org_id.as_str()), &ids)
        .await;
    let timeouts = st.store.all_sprite_timeouts()?;
    let org = OrgInfo {
        name: caller.org_slug.clone(),
        running: counts.running,
        warm: counts.warm,
        cold: counts.cold,
    };
    let sprites = page
        .rows
        .iter()
        .map(|row| {
            let status = statuses.get(&row.id).copied().unwrap_or(SpriteStatus::Cold);
            let mut sprite = sprite_object(row, &caller.org_slug, status, &st.url_base);
            sprite.lifecycle = timeouts.get(&row.id).copied().and_then(lifecycle_view);
            sprite
        })
        .collect();
    Ok(Json(ListSpritesResponse {
        sprites,
        has_more: page.has_more,
        next_continuation_token,
        org: Some(org),
    }))
}

#[utoipa::path(
    operation_id = "sprites_get",
    get,
    path = "/v1/sprites/{name}",
    tag = "sprites",
    params(crate::api::openapi::params::SpritePath),
    responses(
        (status = 200, description = "The sprite", body = wisp_api::sprite::Sprite),
        (status = 404, description = "No such sprite", body = wisp_api::error::ErrorBody),
    ),
)]
pub async fn get(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Sprite>, ApiError> {
    let row = find_sprite(&st, &caller, &name)?;
    Ok(Json(view(&st, &caller, &row).await))
}

#[utoipa::path(
    operation_id = "sprites_update",
    put,
    path = "/v1/sprites/{name}",
    tag = "sprites",
    params(crate::api::openapi::params::SpritePath),
    request_body = wisp_api::sprite::UpdateSpriteRequest,
    responses(
        (status = 200, description = "Updated", body = wisp_api::sprite::Sprite),
        (status = 400, description = "Invalid parameters", body = wisp_api::error::ErrorBody),
        (status = 404, description = "No such sprite", body = wisp_api::error::ErrorBody),
    ),
)]
pub async fn update(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateSpriteRequest>,
) -> Result<Json<Sprite>, ApiError> {
    validate_settings(req.url_settings.as_ref(), req.labels.as_deref())?;
    let lifecycle = parse_lifecycle(req.lifecycle.as_ref())?;
    let row = find_sprite(&st, &caller, &name)?;
    if let Some((idle, cold)) = lifecycle {
        st.store.set_sprite_timeouts(&row.id, idle, cold)?;
    }
    let url = req.url_settings.unwrap_or_default();
    let url_auth = url.auth.unwrap_or_else(|| row.url_auth.clone());
    let private_access = url.private_access.or_else(|| row.private_access.clone());
    // clear_labels empties them; labels given in the same request are then the new set.
    let mut labels = if req.clear_labels == Some(true) {
        Vec::new()
    } else {
        row.labels.clone()
    };
    if let Some(new) = req.labels {
        labels = new;
    }
    st.store.update_sprite_settings(
        &row.id,
        &url_auth,
        private_access.as_deref(),
        &labels,
        &timefmt::now(),
    )?;
    let row = st
        .store
        .sprite_by_id(&row.id)?
        .ok_or_else(ApiError::sprite_not_found)?;
    Ok(Json(view(&st, &caller, &row).await))
}

#[utoipa::path(
    operation_id = "sprites_destroy",
    delete,
    path = "/v1/sprites/{name}",
    tag = "sprites",
    params(crate::api::openapi::params::SpritePath),
    responses(
        (status = 204, description = "Deleted with all its state"),
        (status = 404, description = "No such sprite", body = wisp_api::error::ErrorBody),
    ),
)]
pub async fn destroy(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let row = find_sprite(&st, &caller, &name)?;
    // No in-sprite request may race the destroy.
    crate::insprite::sprite_destroyed(&row.id);
    st.manager.destroy(&row).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `mode` of a sleep request: `warm` (the default) or `cold`; true for cold.
pub fn parse_sleep_mode(pairs: &[(String, String)]) -> Result<bool, ApiError> {
    let mut cold = false;
    for (k, v) in pairs {
        if k == "mode" {
            cold = match v.as_str() {
                "" | "warm" => false,
                "cold" => true,
                other => {
                    return Err(ApiError::bad_request(format!(
                        "invalid sleep mode {other:?}: use warm or cold"
                    )))
                }
            };
        }
    }
    Ok(cold)
}

/// `POST /v1/sprites/{name}/sleep?mode=warm|cold` (a Wisp extension; Fly's API has no
/// explicit sleep): warm freezes the sprite's processes with their memory, cold stops them.
/// Either way the next request that needs the sprite wakes it. Sleeping a sleeping sprite is
/// fine.
#[utoipa::path(
    operation_id = "sprites_sleep",
    post,
    path = "/v1/sprites/{name}/sleep",
    tag = "sprites",
    params(crate::api::openapi::params::SpritePath),
    responses(
        (status = 204, description = "Asleep (cold)"),
        (status = 404, description = "No such sprite", body = wisp_api::error::ErrorBody),
    ),
)]
pub async fn sleep(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
    RawQuery(raw): RawQuery,
) -> Result<StatusCode, ApiError> {
    let cold = parse_sleep_mode(&query_pairs(raw.as_deref()))?;
    let row = find_sprite(&st, &caller, &name)?;
    st.manager.sleep(&row, cold).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::extract::test_pairs as pairs;

    #[test]
    fn sleep_modes() {
        assert!(!parse_sleep_mode(&pairs(&[])).unwrap());
        assert!(!parse_sleep_mode(&pairs(&[("mode", "warm")])).unwrap());
        assert!(parse_sleep_mode(&pairs(&[("mode", "cold")])).unwrap());
        let e = parse_sleep_mode(&pairs(&[("mode", "frozen")])).unwrap_err();
        assert_eq!(e.status, 400);
    }
}

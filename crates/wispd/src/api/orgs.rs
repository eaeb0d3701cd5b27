//! Organizations and their tokens (a Wisp extension beyond Fly's public API, whose token
//! minting endpoint it shares: `POST /v1/organizations/{slug}/tokens` → `{"token": …}`).
//!
//! Who may do what:
//! * admin tokens (the bootstrap token, and tokens minted with `"admin": true` by an admin):
//!   everything, for every organization;
//! * a full token of org X: list X, and list, mint and revoke X's tokens;
//! * attenuated tokens: nothing here (refused with 403 by the auth middleware already).
//!
//! Another org's slug is 403 for a non-admin whether or not it exists.
//!
//! | route | |
//! |---|---|
//! | `GET /v1/organizations` | admin: all orgs; others: their own |
//! | `POST /v1/organizations` `{slug, name?}` | admin: 201 org; 409 duplicate slug |
//! | `GET /v1/organizations/{slug}` | the org with its limits |
//! | `PUT /v1/organizations/{slug}` `{name?, running_limit?, create_rate_limit?, create_rate_window_seconds?}` | admin: limits (integer, `"unlimited"`, or `null`/`"default"` for the daemon's) |
//! | `GET /v1/organizations/{slug}/tokens` | live tokens, no secrets |
//! | `POST /v1/organizations/{slug}/tokens` `{description, admin?}` | 201 `{token, id, description, created_at, admin}` |
//! | `DELETE /v1/organizations/{slug}/tokens/{id}` | 204; the token stops working at once |

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Extension, Json, Router};
use serde_json::{json, Map, Value};

use super::auth::forbidden;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath};
use super::AppState;
use crate::auth::{mint_token, random_hex, Caller, Grant};
use crate::store::{Organization, TokenRecord};
use crate::tenancy::{Limit, OrgLimits};
use crate::timefmt;

/// Longest organization name and token description.
const MAX_TEXT: usize = 200;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/organizations", get(list).post(create))
        .route("/v1/organizations/{slug}", get(show).put(update))
        .route(
            "/v1/organizations/{slug}/tokens",
            get(list_tokens).post(create_token),
        )
        .route("/v1/organizations/{slug}/tokens/{id}", delete(revoke_token))
}

/// Slug rules: those of sprite names (a DNS label), and no dots (tokens use them).
pub fn validate_slug(slug: &str) -> Result<(), String> {
    let ok = !slug.is_empty()
        && slug.len() <= 63
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-')
        && !slug.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid organization slug {slug:?}: 1-63 lowercase letters, digits and '-', \
             starting and ending with a letter or digit"
        ))
    }
}

fn no_management(grant: &Grant) -> Result<(), ApiError> {
    if grant.may_manage() {
        Ok(())
    } else {
        Err(forbidden(
            "an attenuated token cannot manage organizations or tokens",
        ))
    }
}

fn require_admin(grant: &Grant) -> Result<(), ApiError> {
    no_management(grant)?;
    if grant.is_admin() {
        Ok(())
    } else {
        Err(forbidden("only an admin token may do this"))
    }
}

/// The org `slug` if the caller may manage it: admins any (404 if unknown), others only
/// their own (403 otherwise, existing or not).
fn managed_org(
    st: &AppState,
    caller: &Caller,
    grant: &Grant,
    slug: &str,
) -> Result<Organization, ApiError> {
    no_management(grant)?;
    if !grant.is_admin() && slug != caller.org_slug {
        return Err(forbidden(format!(
            "this token may not manage organization {slug:?}"
        )));
    }
    st.store
        .org_by_slug(slug)?
        .ok_or_else(|| ApiError::not_found(format!("organization not found: {slug}")))
}

fn limit_setting(l: Limit) -> Value {
    match l {
        Limit::Default => json!("default"),
        Limit::Unlimited => json!("unlimited"),
        Limit::Max(n) => json!(n),
    }
}

fn org_view(st: &AppState, org: &Organization) -> Result<Value, ApiError> {
    let own = st.store.org_limits(&org.id)?;
    let eff = own.effective(st.tenancy.defaults());
    Ok(json!({
        "id": org.id,
        "slug": org.slug,
        "name": org.name,
        "created_at": org.created_at,
        // In force (null: unlimited).
        "running_limit": eff.running,
        "create_rate_limit": eff.create_rate,
        "create_rate_window_seconds": eff.create_window_seconds,
        // The org's own settings.
        "settings": {
            "running_limit": limit_setting(own.running),
            "create_rate_limit": limit_setting(own.create_rate),
            "create_rate_window_seconds": own
                .create_window_seconds
                .map(Value::from)
                .unwrap_or_else(|| json!("default")),
        },
    }))
}

#[utoipa::path(
    operation_id = "orgs_list",
    get,
    path = "/v1/organizations",
    tag = "organizations",
    responses(
        (status = 200, description = "All organizations (admins) or the caller's own", body = crate::api::openapi::schemas::OrganizationList),
    ),
)]
pub async fn list(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(grant): Extension<Grant>,
) -> Result<Json<Value>, ApiError> {
    no_management(&grant)?;
    let orgs = if grant.is_admin() {
        st.store.list_orgs()?
    } else {
        st.store.org_by_id(&caller.org_id)?.into_iter().collect()
    };
    let views = orgs
        .iter()
        .map(|o| org_view(&st, o))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(json!({ "organizations": views })))
}

#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrgRequest {
    #[serde(default)]
    #[schema(
        required = true,
        nullable = false,
        pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
    )]
    slug: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[utoipa::path(
    operation_id = "orgs_create",
    post,
    path = "/v1/organizations",
    tag = "organizations",
    request_body = CreateOrgRequest,
    responses(
        (status = 201, description = "Created", body = crate::api::openapi::schemas::OrganizationView),
        (status = 400, description = "Invalid parameters", body = wisp_api::error::ErrorBody),
        (status = 409, description = "The slug is taken", body = wisp_api::error::ErrorBody),
    ),
)]
pub async fn create(
    State(st): State<AppState>,
    Extension(grant): Extension<Grant>,
    ApiJson(req): ApiJson<CreateOrgRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    require_admin(&grant)?;
    let slug = req.slug.unwrap_or_default();
    if slug.is_empty() {
        return Err(ApiError::validation(
            "slug is required",
            vec!["slug is required".into()],
        ));
    }
    validate_slug(&slug).map_err(|m| ApiError::validation(m.clone(), vec![m]))?;
    let name = req
        .name
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| slug.clone());
    if name.len() > MAX_TEXT {
        return Err(ApiError::bad_request(format!(
            "name is longer than {MAX_TEXT} bytes"
        )));
    }
    let org = Organization {
        id: format!("o{}", random_hex(4)),
        slug: slug.clone(),
        name,
        created_at: timefmt::now(),
    };
    if !st.store.insert_org_if_new(&org)? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("an organization with slug {slug:?} already exists"),
        ));
    }
    tracing::info!(org_id = %org.id, slug = %org.slug, "created an organization");
    Ok((StatusCode::CREATED, Json(org_view(&st, &org)?)))
}

#[utoipa::path(
    operation_id = "orgs_show",
    get,
    path = "/v1/organizations/{slug}",
    tag = "organizations",
    params(crate::api::openapi::params::OrgPath),
    responses(
        (status = 200, description = "The organization with its limits", body = crate::api::openapi::schemas::OrganizationView),
        (status = 404, description = "No such organization", body = wisp_api::error::ErrorBody),
    ),
)]
pub async fn show(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(grant): Extension<Grant>,
    ApiPath(slug): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let org = managed_org(&st, &caller, &grant, &slug)?;
    Ok(Json(org_view(&st, &org)?))
}

/// One limit field of an update: integer ≥ 0, `"unlimited"`, or `null`/`"default"`.
fn parse_limit(key: &str, v: &Value) -> Result<Limit, ApiError> {
    match v {
        Value::Null => Ok(Limit::Default),
        Value::String(s) if s == "default" => Ok(Limit::Default),
        Value::String(s) if s == "unlimited" => Ok(Limit::Unlimited),
        v => v.as_u64().map(Limit::Max).ok_or_else(|| {
            let m = format!(
                "{key}: expected a non-negative integer, \"unlimited\", or null/\"default\""
            );
            ApiError::validation(m.clone(), vec![m])
        }),
    }
}

#[utoipa::path(
    operation_id = "orgs_update",
    put,
    path = "/v1/organizations/{slug}",
    tag = "organizations",
    params(crate::api::openapi::params::OrgPath),
    request_body = crate::api::openapi::schemas::UpdateOrgRequest,
    responses(
        (status = 200, description = "Updated", body = crate::api::openapi::schemas::OrganizationView),
        (status = 400, description = "Invalid parameters", body = wisp_api::error::ErrorBody),
        (status = 404, description = "No such organization", body = wisp_api::error::ErrorBody),
    ),
)]
pub async fn update(
    State(st): State<AppState>,
    Extension(grant): Extension<Grant>,
    ApiPath(slug): ApiPath<String>,
    ApiJson(body): ApiJson<Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&grant)?;
    let org = st
        .store
        .org_by_slug(&slug)?
        .ok_or_else(|| ApiError::not_found(format!("organization not found: {slug}")))?;
    let mut limits: OrgLimits = st.store.org_limits(&org.id)?;
    let mut name = None;
    for (k, v) in &body {
        match k.as_str() {
            "running_limit" => limits.running = parse_limit(k, v)?,
            "create_rate_limit" => limits.create_rate = parse_limit(k, v)?,
            "create_rate_window_seconds" => {
                limits.create_window_seconds = match v {
                    Value::Null => None,
                    Value::String(s) if s == "default" => None,
                    v => match v.as_u64() {
                        Some(n) if n >= 1 => Some(n),
                        _ => {
                            let m = "create_rate_window_seconds: expected a positive integer \
                                     or null/\"default\""
                                .to_string();
                            return Err(ApiError::validation(m.clone(), vec![m]));
                        }
                    },
                }
            }
            "name" => match v.as_str() {
                Some(n) if !n.trim().is_empty() && n.len() <= MAX_TEXT => name = Some(n),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "name: expected a non-empty string of at most {MAX_TEXT} bytes"
                    )))
                }
            },
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown field {other:?}: expected name, running_limit, \
                     create_rate_limit, create_rate_window_seconds"
                )))
            }
        }
    }
    st.store.set_org_limits(&org.id, &limits)?;
    if let Some(n) = name {
        st.store.rename_org(&org.id, n)?;
    }
    let org = st
        .store
        .org_by_id(&org.id)?
        .ok_or_else(|| ApiError::not_found(format!("organization not found: {slug}")))?;
    Ok(Json(org_view(&st, &org)?))
}

fn token_view(t: &TokenRecord) -> Value {
    json!({
        "id": t.id,
        "description": t.description,
        "created_at": t.created_at,
        "admin": t.admin,
    })
}

#[utoipa::path(
    operation_id = "orgs_list_tokens",
    get,
    path = "/v1/organizations/{slug}/tokens",
    tag = "organizations",
    params(crate::api::openapi::params::OrgPath),
    responses(
        (status = 200, description = "Live tokens, without secrets", body = crate::api::openapi::schemas::TokenList),
        (status = 404, description = "No such organization", body = wisp_api::error::ErrorBody),
    ),
)]
pub async fn list_tokens(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(grant): Extension<Grant>,
    ApiPath(slug): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let org = managed_org(&st, &caller, &grant, &slug)?;
    let tokens: Vec<Value> = st
        .store
        .live_tokens(&org.id)?
        .iter()
        .map(token_view)
        .collect();
    Ok(Json(json!({ "tokens": tokens })))
}

#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
pub struct CreateTokenRequest {
    #[serde(default)]
    description: Option<String>,
    /// The new token may manage every organization (admins only).
    #[serde(default)]
    admin: bool,
    /// Fly's invite flow; ignored.
    #[serde(default)]
    #[allow(dead_code)]
    invite_code: Option<String>,
}

#[utoipa::path(
    operation_id = "orgs_create_token",
    post,
    path = "/v1/organizations/{slug}/tokens",
    tag = "organizations",
    params(crate::api::openapi::params::OrgPath),
    request_body(content = Option<CreateTokenRequest>, description = "Optional: no body is `{}`"),
    responses(
        (status = 201, description = "Minted; the secret is shown only here", body = crate::api::openapi::schemas::MintedToken),
        (status = 400, description = "Invalid parameters", body = wisp_api::error::ErrorBody),
        (status = 404, description = "No such organization", body = wisp_api::error::ErrorBody),
    ),
)]
pub async fn create_token(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(grant): Extension<Grant>,
    ApiPath(slug): ApiPath<String>,
    ApiJson(req): ApiJson<CreateTokenRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let org = managed_org(&st, &caller, &grant, &slug)?;
    if req.admin && !grant.is_admin() {
        return Err(forbidden("only an admin token may mint admin tokens"));
    }
    let description = req.description.unwrap_or_default();
    if description.len() > MAX_TEXT {
        return Err(ApiError::bad_request(format!(
            "description is longer than {MAX_TEXT} bytes"
        )));
    }
    let minted = mint_token(&org, &description, req.admin);
    st.store.insert_token(&minted.record)?;
    tracing::info!(
        org = %org.slug,
        token_id = %minted.record.id,
        by = %grant.token_id,
        admin = req.admin,
        "minted a token"
    );
    let mut v = token_view(&minted.record);
    v["token"] = json!(minted.token);
    v["organization"] = json!(org.slug);
    Ok((StatusCode::CREATED, Json(v)))
}

#[utoipa::path(
    operation_id = "orgs_revoke_token",
    delete,
    path = "/v1/organizations/{slug}/tokens/{id}",
    tag = "organizations",
    params(crate::api::openapi::params::TokenPath),
    responses(
        (status = 204, description = "Revoked; it stops working at once"),
        (status = 404, description = "No such organization or token", body = wisp_api::error::ErrorBody),
    ),
)]
pub async fn revoke_token(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(grant): Extension<Grant>,
    ApiPath((slug, id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let org = managed_org(&st, &caller, &grant, &slug)?;
    if !st.store.revoke_token(&org.id, &id, &timefmt::now())? {
        return Err(ApiError::not_found(format!("token not found: {id}")));
    }
    tracing::info!(org = %org.slug, token_id = %id, by = %grant.token_id, "revoked a token");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        for ok in ["a", "acme", "team-7", &"a".repeat(63)] {
            assert!(validate_slug(ok).is_ok(), "{ok}");
        }
        for bad in ["", "A", "a.b", "a/b", "-a", "a-", "a_b", &"a".repeat(64)] {
            assert!(validate_slug(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn limits() {
        assert_eq!(parse_limit("x", &json!(3)).unwrap(), Limit::Max(3));
        assert_eq!(parse_limit("x", &json!(0)).unwrap(), Limit::Max(0));
        assert_eq!(parse_limit("x", &Value::Null).unwrap(), Limit::Default);
        assert_eq!(parse_limit("x", &json!("default")).unwrap(), Limit::Default);
        assert_eq!(
            parse_limit("x", &json!("unlimited")).unwrap(),
            Limit::Unlimited
        );
        for bad in [json!(-1), json!(1.5), json!("lots"), json!([1])] {
            assert_eq!(parse_limit("x", &bad).unwrap_err().status, 400);
        }
    }
}

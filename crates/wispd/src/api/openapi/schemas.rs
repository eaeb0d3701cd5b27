//! Shapes of the bodies that handlers build as `serde_json::Value` (organizations, tokens,
//! the WebSocket messages), so that the OpenAPI document can describe them. Never built.
#![allow(dead_code)]

use serde::Serialize;
use utoipa::ToSchema;

/// `GET /v1/organization`: the caller's organization (the old CLI's token check).
#[derive(Serialize, ToSchema)]
pub struct CallerOrganization {
    /// The caller's organization slug.
    organization: String,
    /// Always empty.
    resources: serde_json::Map<String, serde_json::Value>,
}

/// A limit as an organization's own setting: a count, `"unlimited"`, or `"default"` (the
/// daemon's). `null` in an update means `"default"`.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum LimitSetting {
    Count(u64),
    Word(LimitWord),
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LimitWord {
    Unlimited,
    Default,
}

/// An organization's own limit settings.
#[derive(Serialize, ToSchema)]
pub struct OrgSettings {
    running_limit: LimitSetting,
    create_rate_limit: LimitSetting,
    create_rate_window_seconds: LimitSetting,
}

/// An organization with the limits in force (`null`: unlimited) and its own settings.
#[derive(Serialize, ToSchema)]
pub struct OrganizationView {
    id: String,
    slug: String,
    name: String,
    created_at: String,
    running_limit: Option<u64>,
    create_rate_limit: Option<u64>,
    create_rate_window_seconds: u64,
    settings: OrgSettings,
}

/// `GET /v1/organizations`.
#[derive(Serialize, ToSchema)]
pub struct OrganizationList {
    organizations: Vec<OrganizationView>,
}

/// `PUT /v1/organizations/{slug}` (admins): omitted fields stay as they are.
#[derive(Serialize, ToSchema)]
pub struct UpdateOrgRequest {
    #[schema(max_length = 200)]
    name: Option<String>,
    /// Sprites running at once.
    running_limit: Option<LimitSetting>,
    /// Sprite creations per window.
    create_rate_limit: Option<LimitSetting>,
    /// The create window, at least 1 second, or `"default"`.
    create_rate_window_seconds: Option<LimitSetting>,
}

/// A token as listed: never its secret.
#[derive(Serialize, ToSchema)]
pub struct TokenView {
    id: String,
    description: String,
    created_at: String,
    /// May manage every organization.
    admin: bool,
}

/// `GET /v1/organizations/{slug}/tokens`.
#[derive(Serialize, ToSchema)]
pub struct TokenList {
    tokens: Vec<TokenView>,
}

/// `POST /v1/organizations/{slug}/tokens`: the secret is shown this once.
#[derive(Serialize, ToSchema)]
pub struct MintedToken {
    id: String,
    description: String,
    created_at: String,
    admin: bool,
    /// The bearer token: `org-slug/org-id/token-id/secret`.
    token: String,
    organization: String,
}

/// The first message on a `ports/watch` socket, and each change after it (`type` is
/// `port_list`, then `port_opened` or `port_closed` with `port`, `address`, `protocol`).
#[derive(Serialize, ToSchema)]
pub struct PortsMessage {
    #[serde(rename = "type")]
    kind: String,
    ports: Option<Vec<ListenPortView>>,
    port: Option<u16>,
    address: Option<String>,
    protocol: Option<String>,
}

/// A listening TCP socket inside the sprite.
#[derive(Serialize, ToSchema)]
pub struct ListenPortView {
    port: u16,
    address: String,
    protocol: String,
}

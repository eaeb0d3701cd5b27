//! The sprite resource: object, create/update bodies and the list page.

use serde::{Deserialize, Serialize};

/// `url_settings` of a sprite.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UrlSettings {
    /// `sprite` (token required) or `public`.
    pub auth: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_access: Option<String>,
}

impl Default for UrlSettings {
    fn default() -> Self {
        Self {
            auth: URL_AUTH_SPRITE.to_string(),
            private_access: None,
        }
    }
}

pub const URL_AUTH_SPRITE: &str = "sprite";
pub const URL_AUTH_PUBLIC: &str = "public";

/// A partial `url_settings` as sent in create and update bodies.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UrlSettingsPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(pattern = "^(sprite|public)$"))]
    pub auth: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(pattern = "^(admins|org_users)$"))]
    pub private_access: Option<String>,
}

impl UrlSettingsPatch {
    /// Validation messages in the production wording.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(auth) = &self.auth {
            if auth != URL_AUTH_SPRITE && auth != URL_AUTH_PUBLIC {
                return Err("invalid auth type, must be one of: sprite, public".into());
            }
        }
        if let Some(pa) = &self.private_access {
            if pa != "admins" && pa != "org_users" {
                return Err("invalid private_access, must be one of: admins, org_users".into());
            }
        }
        Ok(())
    }
}

/// Lifecycle state as the API shows it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum SpriteStatus {
    Running,
    Warm,
    Cold,
}

impl SpriteStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SpriteStatus::Running => "running",
            SpriteStatus::Warm => "warm",
            SpriteStatus::Cold => "cold",
        }
    }
}

/// The full sprite object returned by create, get, update and list.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Sprite {
    pub id: String,
    pub name: String,
    pub organization: String,
    pub status: SpriteStatus,
    pub url: String,
    pub url_settings: UrlSettings,
    pub labels: Vec<String>,
    pub version: Option<String>,
    pub environment_version: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub last_started_at: Option<String>,
    pub last_active_at: Option<String>,
    pub last_running_at: Option<String>,
    pub last_warming_at: Option<String>,
    /// Wisp extension: this sprite's own idle timeouts, when it has any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Lifecycle>,
}

/// Wisp extension: per-sprite idle timeouts, as Go durations (`30s`, `5m`, `1h30m`; `0` never
/// sleeps). In a create or update, `"default"` goes back to the daemon's setting and an omitted
/// field is left as it is.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Lifecycle {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cold_timeout: Option<String>,
}

/// One field of [`Lifecycle`] in a request: keep, back to the default, or this many ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutSetting {
    Keep,
    Default,
    Millis(u64),
}

impl Lifecycle {
    /// Parses both fields; the error names the field.
    pub fn settings(&self) -> Result<(TimeoutSetting, TimeoutSetting), String> {
        let one = |name: &str, v: &Option<String>| -> Result<TimeoutSetting, String> {
            match v.as_deref() {
                None => Ok(TimeoutSetting::Keep),
                Some("default") => Ok(TimeoutSetting::Default),
                Some(s) => crate::duration::parse_duration(s)
                    .map(|d| TimeoutSetting::Millis(d.as_millis() as u64))
                    .map_err(|e| format!("lifecycle.{name}: {e}")),
            }
        };
        Ok((
            one("idle_timeout", &self.idle_timeout)?,
            one("cold_timeout", &self.cold_timeout)?,
        ))
    }
}

/// `POST /v1/sprites`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateSpriteRequest {
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(
            required = true,
            nullable = false,
            pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
        )
    )]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_settings: Option<UrlSettingsPatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_for_capacity: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<serde_json::Value>,
    /// Wisp extension: fork the new sprite from another sprite's checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<crate::checkpoint::ForkSource>,
    /// Wisp extension: this sprite's own idle timeouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Lifecycle>,
}

/// `PUT /v1/sprites/{name}`: omitted fields stay as they are.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UpdateSpriteRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_settings: Option<UrlSettingsPatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear_labels: Option<bool>,
    /// Wisp extension: this sprite's own idle timeouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Lifecycle>,
}

/// Organization counts attached to a list page.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrgInfo {
    pub name: String,
    pub running: u64,
    pub warm: u64,
    pub cold: u64,
}

/// `GET /v1/sprites`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ListSpritesResponse {
    pub sprites: Vec<Sprite>,
    pub has_more: bool,
    pub next_continuation_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<OrgInfo>,
}

/// Page size limits of `GET /v1/sprites`: larger requests are clamped, not refused.
pub const LIST_DEFAULT_MAX: usize = 50;
pub const LIST_MAX: usize = 50;

/// Checks labels: short, printable, no more than 64 of them.
pub fn validate_labels(labels: &[String]) -> Result<(), String> {
    if labels.len() > 64 {
        return Err("too many labels (at most 64)".into());
    }
    for l in labels {
        if l.is_empty() || l.len() > 128 || l.chars().any(|c| c.is_control()) {
            return Err(format!("invalid label {l:?}: 1-128 printable characters"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_auth_values() {
        let ok = UrlSettingsPatch {
            auth: Some("public".into()),
            private_access: None,
        };
        assert!(ok.validate().is_ok());
        let bad = UrlSettingsPatch {
            auth: Some("open".into()),
            private_access: None,
        };
        assert_eq!(
            bad.validate().unwrap_err(),
            "invalid auth type, must be one of: sprite, public"
        );
    }

    #[test]
    fn status_serializes_lowercase() {
        assert_eq!(
            serde_json::to_string(&SpriteStatus::Cold).unwrap(),
            "\"cold\""
        );
    }
}

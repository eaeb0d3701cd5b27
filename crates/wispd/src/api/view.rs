//! Rows → the API's sprite object.

use wisp_api::sprite::{Sprite, SpriteStatus, UrlSettings};

use crate::store::SpriteRow;

/// `http://localhost:7575` + `web` → `http://web.localhost:7575`.
pub fn sprite_url(base: &str, name: &str) -> String {
    let base = base.trim_end_matches('/');
    match base.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{name}.{rest}"),
        None => format!("{name}.{base}"),
    }
}

pub fn sprite_object(
    row: &SpriteRow,
    org_slug: &str,
    status: SpriteStatus,
    url_base: &str,
) -> Sprite {
    Sprite {
        id: row.id.clone(),
        name: row.name.clone(),
        organization: org_slug.to_string(),
        status,
        url: sprite_url(url_base, &row.name),
        url_settings: UrlSettings {
            auth: row.url_auth.clone(),
            private_access: row.private_access.clone(),
        },
        labels: row.labels.clone(),
        version: None,
        environment_version: None,
        created_at: row.created_at.clone(),
        updated_at: row.updated_at.clone(),
        last_started_at: row.last_started_at.clone(),
        last_active_at: row.last_active_at.clone(),
        // Rows from before these columns existed have only `last_started_at`.
        last_running_at: row
            .last_running_at
            .clone()
            .or_else(|| row.last_started_at.clone()),
        last_warming_at: row.last_warming_at.clone(),
        lifecycle: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            sprite_url("http://localhost:7575", "web"),
            "http://web.localhost:7575"
        );
        assert_eq!(
            sprite_url("https://example.com/", "a"),
            "https://a.example.com"
        );
        assert_eq!(sprite_url("example.com", "a"), "a.example.com");
    }
}

//! `wisp info [NAME] [--json]`

use anyhow::Result;
use serde_json::Value;

use super::{field, short_time, Ctx};
use crate::cli::InfoArgs;
use crate::client::sprite_path;

pub async fn run(ctx: &Ctx, args: InfoArgs) -> Result<i32> {
    let name = ctx.sprite(args.name.as_deref())?;
    let client = ctx.client()?;
    let sprite = client.get_json(&sprite_path(&name), &[]).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&sprite)?);
    } else {
        print!("{}", render(&sprite));
    }
    Ok(0)
}

/// `key: value` lines for people.
pub fn render(s: &Value) -> String {
    let labels: Vec<&str> = s
        .get("labels")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let url_settings = s.get("url_settings").cloned().unwrap_or(Value::Null);
    let time = |k: &str| short_time(field(s, k));
    let last_active = match field(s, "last_active_at") {
        "-" => time("last_running_at"),
        t => short_time(t),
    };
    let rows = [
        ("name", field(s, "name").to_string()),
        ("id", field(s, "id").to_string()),
        ("status", field(s, "status").to_string()),
        ("url", field(s, "url").to_string()),
        ("url auth", field(&url_settings, "auth").to_string()),
        (
            "labels",
            if labels.is_empty() {
                "-".to_string()
            } else {
                labels.join(", ")
            },
        ),
        ("created", time("created_at")),
        ("updated", time("updated_at")),
        ("last active", last_active),
    ];
    rows.iter()
        .map(|(k, v)| format!("{:<12} {v}\n", format!("{k}:")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_missing_fields_as_dashes() {
        let s = serde_json::json!({"name":"a","status":"warm","labels":["x","y"],
            "url_settings":{"auth":"public"},"created_at":"2026-01-31T10:28:13Z"});
        let out = render(&s);
        assert!(out.contains("name:        a\n"));
        assert!(out.contains("url auth:    public\n"));
        assert!(out.contains("labels:      x, y\n"));
        assert!(out.contains("created:     2026-01-31 10:28:13Z\n"));
        assert!(out.contains("id:          -\n"));
        assert_eq!(render(&Value::Null).lines().count(), 9);
    }
}

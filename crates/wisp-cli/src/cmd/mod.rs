//! One module per command. Each returns the process exit code.

pub mod checkpoint;
pub mod console;
pub mod cp;
pub mod create;
pub mod destroy;
pub mod exec;
pub mod fork;
pub mod info;
pub mod list;
pub mod login;
pub mod org;
pub mod policy;
pub mod proxy;
pub mod restore;
pub mod services;
pub mod sessions;
pub mod sleep;
pub mod token;
pub mod url;
pub mod use_sprite;

use anyhow::Result;

use crate::client::Client;
use crate::config;
use crate::selection;

/// Global flags shared by every command.
#[derive(Debug, Clone, Default)]
pub struct Ctx {
    pub api_url: Option<String>,
    pub token: Option<String>,
    pub sprite: Option<String>,
}

impl Ctx {
    pub fn client(&self) -> Result<Client> {
        Client::new(config::load(
            self.api_url.as_deref(),
            self.token.as_deref(),
        )?)
    }

    /// The sprite to act on: `explicit` (a positional NAME) wins over the usual resolution.
    pub fn sprite(&self, explicit: Option<&str>) -> Result<String> {
        if let Some(name) = explicit {
            selection::check_name(name)?;
            return Ok(name.to_string());
        }
        Ok(selection::current(self.sprite.as_deref())?.0)
    }
}

/// A string field of a JSON object, or "-".
pub fn field<'a>(v: &'a serde_json::Value, key: &str) -> &'a str {
    v.get(key)
        .and_then(serde_json::Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("-")
}

/// `2026-01-31T10:28:13.366126Z` → `2026-01-31 10:28:13Z`; anything else unchanged.
pub fn short_time(ts: &str) -> String {
    let b = ts.as_bytes();
    if b.len() >= 19 && b[10] == b'T' && ts.is_char_boundary(19) {
        let zone = if ts.ends_with('Z') { "Z" } else { "" };
        format!("{} {}{}", &ts[..10], &ts[11..19], zone)
    } else {
        ts.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(
            short_time("2026-01-31T10:28:13.366126Z"),
            "2026-01-31 10:28:13Z"
        );
        assert_eq!(
            short_time("2026-01-31T10:28:13+02:00"),
            "2026-01-31 10:28:13"
        );
        assert_eq!(short_time("-"), "-");
        assert_eq!(short_time("ééééééééééééééééééééé"), "ééééééééééééééééééééé");
    }
}

//! `wisp login --api-url URL --token TOKEN`: stores them in the config file (mode 0600).

use anyhow::{bail, Context, Result};

use super::Ctx;
use crate::config::{self, env_var, ConfigFile};

pub async fn run(ctx: &Ctx) -> Result<i32> {
    if ctx.api_url.is_none() && ctx.token.is_none() {
        bail!("nothing to save: pass --api-url URL and/or --token TOKEN");
    }
    let env = |k: &str| env_var(k);
    let Some(path) = config::config_path(&env) else {
        bail!("cannot find the config directory: set HOME or WISP_CLI_CONFIG");
    };
    let mut file = config::load_file(&path)?.unwrap_or_default();
    file = update(file, ctx.api_url.as_deref(), ctx.token.as_deref())?;
    config::save_file(&path, &file)?;
    eprintln!("saved to {}", path.display());
    Ok(0)
}

/// Applies the flags to the stored config. A new URL without a new token drops the old token
/// (it belonged to the old server).
pub fn update(
    mut file: ConfigFile,
    api_url: Option<&str>,
    token: Option<&str>,
) -> Result<ConfigFile> {
    if let Some(u) = api_url {
        let u = config::normalize_api_url(u).context("--api-url")?;
        if token.is_none() && file.api_url.as_deref() != Some(u.as_str()) {
            file.token = None;
        }
        file.api_url = Some(u);
    }
    if let Some(t) = token {
        let t = t.trim();
        if t.is_empty() {
            bail!("--token is empty");
        }
        file.token = Some(t.to_string());
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates() {
        let f = update(ConfigFile::default(), Some("http://h:1/"), Some("t")).unwrap();
        assert_eq!(f.api_url.as_deref(), Some("http://h:1"));
        assert_eq!(f.token.as_deref(), Some("t"));
        let g = update(f.clone(), None, Some("t2")).unwrap();
        assert_eq!(g.api_url.as_deref(), Some("http://h:1"));
        assert_eq!(g.token.as_deref(), Some("t2"));
        let same = update(f.clone(), Some("http://h:1"), None).unwrap();
        assert_eq!(same.token.as_deref(), Some("t"));
        let moved = update(f, Some("http://other"), None).unwrap();
        assert_eq!(moved.token, None);
        assert!(update(ConfigFile::default(), Some("nope"), None).is_err());
        assert!(update(ConfigFile::default(), None, Some(" ")).is_err());
    }
}

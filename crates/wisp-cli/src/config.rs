//! Where the CLI finds the daemon and its token.
//!
//! API URL: `--api-url` > `WISP_API_URL` > config file `api_url` > `http://127.0.0.1:7575`.
//! Token: `--token` > `WISP_TOKEN` > config file `token` (only when the file's `api_url` is unset
//! or is the URL in use, so a stored token never leaks to another server) > for a local daemon,
//! the admin-token file in `$WISP_DATA_DIR` or `/var/lib/wisp`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

pub const DEFAULT_API_URL: &str = "http://127.0.0.1:7575";
pub const DEFAULT_DATA_DIR: &str = "/var/lib/wisp";

/// `~/.config/wisp/config.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// Where the token in use came from (shown in hints).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    Flag,
    Env,
    ConfigFile,
    AdminTokenFile,
    None,
}

/// The outcome of resolution: what every command talks to.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Normalised: `http(s)://host[:port][/prefix]`, no trailing slash.
    pub api_url: String,
    pub token: Option<String>,
    pub token_source: TokenSource,
}

/// Reads an environment variable, treating an empty value as unset.
pub fn env_var(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

/// The config file path: `$WISP_CLI_CONFIG`, else `$XDG_CONFIG_HOME/wisp/config.json`, else
/// `$HOME/.config/wisp/config.json`.
pub fn config_path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(p) = env("WISP_CLI_CONFIG") {
        return Some(PathBuf::from(p));
    }
    if let Some(x) = env("XDG_CONFIG_HOME").filter(|x| x.starts_with('/')) {
        return Some(Path::new(&x).join("wisp").join("config.json"));
    }
    env("HOME").map(|h| {
        Path::new(&h)
            .join(".config")
            .join("wisp")
            .join("config.json")
    })
}

/// Loads the config file; a missing file is `None`, a broken one an error.
pub fn load_file(path: &Path) -> Result<Option<ConfigFile>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    if text.trim().is_empty() {
        return Ok(Some(ConfigFile::default()));
    }
    let file = serde_json::from_str(&text)
        .with_context(|| format!("invalid config file {}", path.display()))?;
    Ok(Some(file))
}

/// Writes the config file with mode 0600 (its directory 0700), replacing it atomically.
pub fn save_file(path: &Path, file: &ConfigFile) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let _ = std::fs::remove_file(&tmp);
    let mut body = serde_json::to_string_pretty(file)?;
    body.push('\n');
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(body.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow::Error::new(e).context(format!("cannot write {}", path.display()))
    })
}

/// Checks and normalises an API URL.
pub fn normalize_api_url(raw: &str) -> Result<String> {
    let trimmed = raw.trim();
    let url = reqwest::Url::parse(trimmed).map_err(|e| {
        anyhow::anyhow!("invalid API URL {trimmed:?}: {e} (expected e.g. {DEFAULT_API_URL})")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!("invalid API URL {trimmed:?}: it must start with http:// or https://");
    }
    if url.host_str().is_none_or(str::is_empty) {
        bail!("invalid API URL {trimmed:?}: no host");
    }
    if url.query().is_some() || url.fragment().is_some() {
        bail!("invalid API URL {trimmed:?}: no query or fragment allowed");
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// True when the URL names this machine (where the admin-token file may be readable).
pub fn is_local(api_url: &str) -> bool {
    reqwest::Url::parse(api_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .is_some_and(|h| matches!(h.as_str(), "127.0.0.1" | "localhost" | "::1" | "[::1]"))
}

/// The admin-token file of a local daemon.
pub fn admin_token_path(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    let dir = env("WISP_DATA_DIR").unwrap_or_else(|| DEFAULT_DATA_DIR.to_string());
    Path::new(&dir).join("admin-token")
}

/// Reads a token file; unreadable or empty files count as absent.
pub fn read_token_file(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn nonempty(s: Option<&str>) -> Option<String> {
    s.map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Applies the precedence rules. Pure apart from the callbacks, so it is unit-tested.
pub fn resolve(
    flag_url: Option<&str>,
    flag_token: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
    file: Option<&ConfigFile>,
    read_admin_token: &dyn Fn(&Path) -> Option<String>,
) -> Result<Settings> {
    let file_url = file.and_then(|f| nonempty(f.api_url.as_deref()));
    let raw_url = nonempty(flag_url)
        .or_else(|| nonempty(env("WISP_API_URL").as_deref()))
        .or_else(|| file_url.clone())
        .unwrap_or_else(|| DEFAULT_API_URL.to_string());
    let api_url = normalize_api_url(&raw_url)?;

    let file_token_applies = match &file_url {
        None => true,
        Some(u) => normalize_api_url(u).is_ok_and(|u| u == api_url),
    };
    let (token, token_source) = if let Some(t) = nonempty(flag_token) {
        (Some(t), TokenSource::Flag)
    } else if let Some(t) = nonempty(env("WISP_TOKEN").as_deref()) {
        (Some(t), TokenSource::Env)
    } else if let Some(t) = file
        .filter(|_| file_token_applies)
        .and_then(|f| nonempty(f.token.as_deref()))
    {
        (Some(t), TokenSource::ConfigFile)
    } else if let Some(t) = is_local(&api_url)
        .then(|| read_admin_token(&admin_token_path(env)))
        .flatten()
    {
        (Some(t), TokenSource::AdminTokenFile)
    } else {
        (None, TokenSource::None)
    };
    Ok(Settings {
        api_url,
        token,
        token_source,
    })
}

/// Resolves settings from the real environment and files.
pub fn load(flag_url: Option<&str>, flag_token: Option<&str>) -> Result<Settings> {
    let env = |k: &str| env_var(k);
    let file = match config_path(&env) {
        Some(p) => load_file(&p)?,
        None => None,
    };
    resolve(flag_url, flag_token, &env, file.as_ref(), &read_token_file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned().filter(|v| !v.is_empty())
    }

    fn no_admin(_: &Path) -> Option<String> {
        None
    }

    fn admin(p: &Path) -> Option<String> {
        Some(format!("admin:{}", p.display()))
    }

    #[test]
    fn defaults() {
        let s = resolve(None, None, &env_of(&[]), None, &no_admin).unwrap();
        assert_eq!(s.api_url, "http://127.0.0.1:7575");
        assert_eq!(s.token, None);
        assert_eq!(s.token_source, TokenSource::None);
    }

    #[test]
    fn url_precedence() {
        let file = ConfigFile {
            api_url: Some("http://file:1/".into()),
            token: None,
        };
        let env = env_of(&[("WISP_API_URL", "http://env:2")]);
        let r = |flag| {
            resolve(flag, None, &env, Some(&file), &no_admin)
                .unwrap()
                .api_url
        };
        assert_eq!(r(Some("https://flag:3/")), "https://flag:3");
        assert_eq!(r(None), "http://env:2");
        let r2 = resolve(None, None, &env_of(&[]), Some(&file), &no_admin).unwrap();
        assert_eq!(r2.api_url, "http://file:1");
        // Empty values count as unset.
        let r3 = resolve(
            Some(""),
            None,
            &env_of(&[("WISP_API_URL", "")]),
            None,
            &no_admin,
        );
        assert_eq!(r3.unwrap().api_url, DEFAULT_API_URL);
    }

    #[test]
    fn token_precedence() {
        let file = ConfigFile {
            api_url: None,
            token: Some("filetok".into()),
        };
        let env = env_of(&[("WISP_TOKEN", "envtok")]);
        let s = resolve(None, Some("flagtok"), &env, Some(&file), &admin).unwrap();
        assert_eq!(
            (s.token.as_deref(), s.token_source),
            (Some("flagtok"), TokenSource::Flag)
        );
        let s = resolve(None, None, &env, Some(&file), &admin).unwrap();
        assert_eq!(
            (s.token.as_deref(), s.token_source),
            (Some("envtok"), TokenSource::Env)
        );
        let s = resolve(None, None, &env_of(&[]), Some(&file), &admin).unwrap();
        assert_eq!(
            (s.token.as_deref(), s.token_source),
            (Some("filetok"), TokenSource::ConfigFile)
        );
        let s = resolve(None, None, &env_of(&[]), None, &admin).unwrap();
        assert_eq!(s.token.as_deref(), Some("admin:/var/lib/wisp/admin-token"));
        assert_eq!(s.token_source, TokenSource::AdminTokenFile);
        let env = env_of(&[("WISP_DATA_DIR", "/srv/w")]);
        let s = resolve(None, None, &env, None, &admin).unwrap();
        assert_eq!(s.token.as_deref(), Some("admin:/srv/w/admin-token"));
    }

    #[test]
    fn admin_token_only_for_local_daemons() {
        for local in [
            "http://localhost:7575",
            "http://127.0.0.1",
            "http://[::1]:9",
        ] {
            let s = resolve(Some(local), None, &env_of(&[]), None, &admin).unwrap();
            assert_eq!(s.token_source, TokenSource::AdminTokenFile, "{local}");
        }
        let s = resolve(
            Some("https://wisp.example"),
            None,
            &env_of(&[]),
            None,
            &admin,
        )
        .unwrap();
        assert_eq!(s.token, None);
    }

    #[test]
    fn file_token_stays_with_its_server() {
        let file = ConfigFile {
            api_url: Some("https://remote.example/".into()),
            token: Some("remote-secret".into()),
        };
        let s = resolve(None, None, &env_of(&[]), Some(&file), &no_admin).unwrap();
        assert_eq!(s.token.as_deref(), Some("remote-secret"));
        let env = env_of(&[("WISP_API_URL", "http://127.0.0.1:7575")]);
        let s = resolve(None, None, &env, Some(&file), &admin).unwrap();
        assert_eq!(s.token_source, TokenSource::AdminTokenFile);
    }

    #[test]
    fn bad_urls() {
        for bad in [
            "localhost:7575",
            "ftp://x",
            "not a url",
            "http://x/?a=b",
            "http://",
        ] {
            assert!(
                resolve(Some(bad), None, &env_of(&[]), None, &no_admin).is_err(),
                "{bad}"
            );
        }
        assert_eq!(
            normalize_api_url("http://h:1/prefix/").unwrap(),
            "http://h:1/prefix"
        );
    }

    #[test]
    fn config_path_order() {
        let p = config_path(&env_of(&[("HOME", "/home/u")])).unwrap();
        assert_eq!(p, Path::new("/home/u/.config/wisp/config.json"));
        let p = config_path(&env_of(&[("HOME", "/home/u"), ("XDG_CONFIG_HOME", "/x")])).unwrap();
        assert_eq!(p, Path::new("/x/wisp/config.json"));
        let p = config_path(&env_of(&[("WISP_CLI_CONFIG", "/c.json"), ("HOME", "/h")])).unwrap();
        assert_eq!(p, Path::new("/c.json"));
        assert!(config_path(&env_of(&[])).is_none());
    }

    #[test]
    fn save_and_load_round_trip_with_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("wisp-cli-cfg-{}", std::process::id()));
        let path = dir.join("sub").join("config.json");
        let cfg = ConfigFile {
            api_url: Some("http://h:1".into()),
            token: Some("t".into()),
        };
        save_file(&path, &cfg).unwrap();
        assert_eq!(load_file(&path).unwrap(), Some(cfg));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, "{not json").unwrap();
        assert!(load_file(&path).is_err());
        assert_eq!(load_file(&dir.join("missing")).unwrap(), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! Which sprite a command acts on: `-s NAME` > `WISP_SPRITE` > nearest `.wisp-sprite` walking up
//! from the working directory.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The file `wisp use NAME` writes.
pub const SELECTION_FILE: &str = ".wisp-sprite";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelectionFile {
    pub sprite: String,
}

/// Where the selected name came from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Flag,
    Env,
    File(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Flag => f.write_str("--sprite"),
            Source::Env => f.write_str("WISP_SPRITE"),
            Source::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Checks a sprite name with the API's rules, phrased for the CLI.
pub fn check_name(name: &str) -> Result<()> {
    wisp_api::name::validate_sprite_name(name).map_err(|e| {
        let why = e.to_string();
        let why = why
            .strip_prefix("invalid sprite name format: ")
            .unwrap_or(&why);
        anyhow!("invalid sprite name {name:?}: {why}")
    })
}

/// Parses a `.wisp-sprite` file's contents.
pub fn parse_selection_file(path: &Path, text: &str) -> Result<String> {
    let sel: SelectionFile = serde_json::from_str(text).with_context(|| {
        format!(
            "invalid {} (expected {{\"sprite\": \"NAME\"}})",
            path.display()
        )
    })?;
    check_name(&sel.sprite).with_context(|| format!("in {}", path.display()))?;
    Ok(sel.sprite)
}

/// Resolves the sprite name. `read` returns a file's contents, or `None` when it does not exist.
pub fn resolve(
    flag: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
    cwd: Option<&Path>,
    read: &dyn Fn(&Path) -> Option<std::io::Result<String>>,
) -> Result<(String, Source)> {
    let (name, source) = if let Some(n) = flag.filter(|n| !n.is_empty()) {
        (n.to_string(), Source::Flag)
    } else if let Some(n) = env("WISP_SPRITE").filter(|n| !n.is_empty()) {
        (n, Source::Env)
    } else if let Some((path, text)) = find_file(cwd, read)? {
        (parse_selection_file(&path, &text)?, Source::File(path))
    } else {
        bail!("no sprite selected: pass -s NAME or run `wisp use NAME`");
    };
    check_name(&name)?;
    Ok((name, source))
}

fn find_file(
    cwd: Option<&Path>,
    read: &dyn Fn(&Path) -> Option<std::io::Result<String>>,
) -> Result<Option<(PathBuf, String)>> {
    let Some(cwd) = cwd else { return Ok(None) };
    for dir in cwd.ancestors() {
        let path = dir.join(SELECTION_FILE);
        if let Some(text) = read(&path) {
            let text = text.with_context(|| format!("cannot read {}", path.display()))?;
            return Ok(Some((path, text)));
        }
    }
    Ok(None)
}

/// Reads a file for [`resolve`]: `None` when it is absent or not a regular file.
pub fn read_if_file(path: &Path) -> Option<std::io::Result<String>> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Some(std::fs::read_to_string(path)),
        _ => None,
    }
}

/// Resolves against the real environment and file system.
pub fn current(flag: Option<&str>) -> Result<(String, Source)> {
    let cwd = std::env::current_dir().ok();
    resolve(flag, &crate::config::env_var, cwd.as_deref(), &read_if_file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn files(pairs: &[(&str, &str)]) -> impl Fn(&Path) -> Option<std::io::Result<String>> {
        let map: HashMap<PathBuf, String> = pairs
            .iter()
            .map(|(p, t)| (PathBuf::from(p), t.to_string()))
            .collect();
        move |p| map.get(p).cloned().map(Ok)
    }

    fn env(v: Option<&str>) -> impl Fn(&str) -> Option<String> {
        let v = v.map(str::to_string);
        move |k| (k == "WISP_SPRITE").then(|| v.clone()).flatten()
    }

    #[test]
    fn order_flag_env_file() {
        let fs = files(&[("/a/.wisp-sprite", r#"{"sprite":"from-file"}"#)]);
        let cwd = Some(Path::new("/a/b/c"));
        let r = resolve(Some("flag"), &env(Some("envy")), cwd, &fs).unwrap();
        assert_eq!(r, ("flag".into(), Source::Flag));
        let r = resolve(None, &env(Some("envy")), cwd, &fs).unwrap();
        assert_eq!(r, ("envy".into(), Source::Env));
        let r = resolve(None, &env(None), cwd, &fs).unwrap();
        assert_eq!(
            r,
            (
                "from-file".into(),
                Source::File(PathBuf::from("/a/.wisp-sprite"))
            )
        );
        // Empty flag and env values count as unset.
        let r = resolve(Some(""), &env(Some("")), cwd, &fs).unwrap();
        assert_eq!(r.0, "from-file");
    }

    #[test]
    fn nearest_file_wins() {
        let fs = files(&[
            ("/.wisp-sprite", r#"{"sprite":"root"}"#),
            ("/a/b/.wisp-sprite", r#"{"sprite":"near"}"#),
        ]);
        let r = resolve(None, &env(None), Some(Path::new("/a/b/c")), &fs).unwrap();
        assert_eq!(r.0, "near");
        let r = resolve(None, &env(None), Some(Path::new("/a")), &fs).unwrap();
        assert_eq!(r.0, "root");
    }

    #[test]
    fn nothing_selected() {
        let err = resolve(None, &env(None), Some(Path::new("/x")), &files(&[])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no sprite selected: pass -s NAME or run `wisp use NAME`"
        );
        assert!(resolve(None, &env(None), None, &files(&[])).is_err());
    }

    #[test]
    fn bad_names_and_files() {
        let fs = files(&[("/.wisp-sprite", "garbage")]);
        let err = resolve(None, &env(None), Some(Path::new("/")), &fs).unwrap_err();
        assert!(format!("{err:#}").contains("invalid /.wisp-sprite"));
        let fs = files(&[("/.wisp-sprite", r#"{"sprite":"Bad/Name"}"#)]);
        assert!(resolve(None, &env(None), Some(Path::new("/")), &fs).is_err());
        assert!(resolve(Some("../etc"), &env(None), None, &files(&[])).is_err());
        assert!(resolve(None, &env(Some("a b")), None, &files(&[])).is_err());
    }
}

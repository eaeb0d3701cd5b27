//! Paths of the filesystem API (`/v1/sprites/{name}/fs/...`): the lexical half of resolving
//! them. A request's path is joined onto its `workingDir` and made absolute and clean the way
//! Go's `path.Join` does (`.` and `..` folded, `..` stopping at `/`). The daemon then lets the
//! kernel resolve the clean path inside the sprite's root; nothing here touches a filesystem.

/// Longest clean path accepted (Linux `PATH_MAX`, which counts the final NUL).
pub const PATH_MAX: usize = 4096;

/// Why a request's path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path is required")]
    Empty,
    #[error("paths may not contain NUL bytes")]
    Nul,
    /// The clean path, which is `PATH_MAX` bytes or longer.
    #[error("path is too long ({} bytes)", .0.len())]
    TooLong(String),
}

/// `path` resolved against `working_dir` (default `/`) into a clean absolute path: it starts
/// with `/`, has no empty, `.` or `..` component and no final `/` (unless it is `/`).
pub fn clean(working_dir: Option<&str>, path: &str) -> Result<String, PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    let wd = working_dir.filter(|w| !w.is_empty()).unwrap_or("/");
    if path.contains('\0') || wd.contains('\0') {
        return Err(PathError::Nul);
    }
    let mut parts: Vec<&str> = Vec::new();
    let joined: Box<dyn Iterator<Item = &str>> = if path.starts_with('/') {
        Box::new(path.split('/'))
    } else {
        Box::new(wd.split('/').chain(path.split('/')))
    };
    for p in joined {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            name => parts.push(name),
        }
    }
    let out = format!("/{}", parts.join("/"));
    if out.len() >= PATH_MAX {
        return Err(PathError::TooLong(out));
    }
    Ok(out)
}

/// `/a/b/c` → (`/a/b`, `c`); `None` for `/`, which has no name. For clean paths.
pub fn split(path: &str) -> Option<(&str, &str)> {
    let i = path.rfind('/')?;
    let name = &path[i + 1..];
    if name.is_empty() {
        return None;
    }
    Some((if i == 0 { "/" } else { &path[..i] }, name))
}

/// `parent` + `/` + `name`, for clean paths.
pub fn join(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning() {
        let c = |wd: Option<&str>, p: &str| clean(wd, p).unwrap();
        assert_eq!(c(None, "a/b"), "/a/b");
        assert_eq!(c(Some("/home/sprite"), "x.txt"), "/home/sprite/x.txt");
        assert_eq!(c(Some("/home/sprite/"), "./x/../y"), "/home/sprite/y");
        assert_eq!(c(Some("/home/sprite"), "/etc/hostname"), "/etc/hostname");
        assert_eq!(
            c(Some("/home/sprite"), "../../../../etc/shadow"),
            "/etc/shadow"
        );
        assert_eq!(c(Some("/../../x"), "y"), "/x/y");
        assert_eq!(c(Some("rel"), "y"), "/rel/y");
        assert_eq!(c(Some(""), "y"), "/y");
        assert_eq!(c(None, "/"), "/");
        assert_eq!(c(None, "//a//b/"), "/a/b");
        assert_eq!(c(None, ".."), "/");
        assert_eq!(clean(None, ""), Err(PathError::Empty));
        assert_eq!(clean(None, "a\0b"), Err(PathError::Nul));
        assert_eq!(clean(Some("/a\0"), "b"), Err(PathError::Nul));
        assert!(matches!(
            clean(None, &"a/".repeat(3000)),
            Err(PathError::TooLong(_))
        ));
    }

    #[test]
    fn splitting() {
        assert_eq!(split("/a/b/c"), Some(("/a/b", "c")));
        assert_eq!(split("/a"), Some(("/", "a")));
        assert_eq!(split("/"), None);
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
    }
}

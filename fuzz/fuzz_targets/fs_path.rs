//! Paths of the filesystem API: the lexical cleaning every request path goes through before
//! the kernel resolves it inside the sprite.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wisp_api::fs_path::{clean, join, split, PathError, PATH_MAX};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    // The first line is the working directory, the rest the path.
    let (wd, path) = s.split_once('\n').unwrap_or(("", s));
    check(Some(wd), path);
    check(None, s);
});

fn check(wd: Option<&str>, path: &str) {
    let out = match clean(wd, path) {
        Ok(out) => out,
        Err(PathError::Empty) => return assert!(path.is_empty()),
        Err(PathError::Nul) => {
            return assert!(path.contains('\0') || wd.is_some_and(|w| w.contains('\0')))
        }
        Err(PathError::TooLong(p)) => return assert!(p.len() >= PATH_MAX),
    };
    // Absolute and clean: nothing for the kernel to resolve lexically, no way above `/`.
    assert!(out.starts_with('/'), "{out:?}");
    assert!(out.len() < PATH_MAX);
    assert!(!out.contains('\0'));
    if out != "/" {
        assert!(!out.ends_with('/'), "{out:?}");
        for c in out[1..].split('/') {
            assert!(!c.is_empty() && c != "." && c != "..", "{out:?} has {c:?}");
        }
    }
    // Clean paths are fixed points, whatever the working directory.
    assert_eq!(clean(None, &out).as_deref(), Ok(out.as_str()));
    assert_eq!(clean(Some("/elsewhere"), &out).as_deref(), Ok(out.as_str()));
    // An absolute request ignores the working directory.
    if path.starts_with('/') {
        assert_eq!(clean(None, path).as_deref(), Ok(out.as_str()));
    }
    // The final name is a plain name (what `*at()` calls get) and splitting is reversible.
    match split(&out) {
        None => assert_eq!(out, "/"),
        Some((parent, name)) => {
            assert!(!name.is_empty() && !name.contains('/') && name != "." && name != "..");
            assert_eq!(clean(None, parent).as_deref(), Ok(parent));
            assert_eq!(join(parent, name), out);
        }
    }
}

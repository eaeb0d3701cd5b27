//! Binding a sprite's `api.sock`.

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener as StdListener;
use std::path::Path;

use tokio::net::UnixListener;

use crate::fsutil::remove_file_if_exists;

/// Longest path `bind` takes directly (`sun_path` is 108 bytes with its NUL).
const MAX_SUN_PATH: usize = 107;

/// Binds `<dir>/<name>` (replacing a socket left by an earlier wispd), mode `0666`, and makes
/// sure `dir` can be traversed from inside the sprite, where it is `/.sprite`.
pub fn bind(dir: &Path, name: &str) -> io::Result<UnixListener> {
    let meta = fs::metadata(dir)?;
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("{} is not a directory", dir.display()),
        ));
    }
    // Inside the sprite, only this directory's own mode matters (its host parents are 0700).
    let mode = meta.permissions().mode();
    if mode & 0o011 != 0o011 {
        fs::set_permissions(dir, fs::Permissions::from_mode((mode & 0o7777) | 0o011))?;
    }
    let path = dir.join(name);
    remove_file_if_exists(&path)?;
    let std_listener = if path.as_os_str().len() <= MAX_SUN_PATH {
        StdListener::bind(&path)?
    } else {
        // A long data dir: bind through the directory's descriptor instead of its path.
        let d = File::open(dir)?;
        let short = format!("/proc/self/fd/{}/{name}", d.as_raw_fd());
        StdListener::bind(short)?
    };
    fs::set_permissions(&path, fs::Permissions::from_mode(0o666))?;
    std_listener.set_nonblocking(true)?;
    UnixListener::from_std(std_listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn binds_replaces_and_survives_long_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sprite-dir");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        let l = bind(&dir, "api.sock").unwrap();
        let mode = fs::metadata(dir.join("api.sock"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o666);
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o711
        );
        // A second bind replaces the first (as after a wispd restart).
        drop(l);
        let _l = bind(&dir, "api.sock").unwrap();
        tokio::net::UnixStream::connect(dir.join("api.sock"))
            .await
            .unwrap();

        let long = tmp.path().join("x".repeat(120));
        fs::create_dir(&long).unwrap();
        assert!(long.join("api.sock").as_os_str().len() > MAX_SUN_PATH);
        let _l = bind(&long, "api.sock").unwrap();
        assert!(long.join("api.sock").exists());
        assert!(bind(&tmp.path().join("missing"), "api.sock").is_err());
    }
}

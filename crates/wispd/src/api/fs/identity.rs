//! Who a file operation runs as: the sprite's `sprite` user (from the sprite's own
//! /etc/passwd and /etc/group, read through the sprite root; 1000:1000 if absent), or root
//! with `asRoot`. The blocking work runs on a pool thread that switches its own fsuid, fsgid
//! and groups ([`wisp_sys::fsid`]) for the duration, so the kernel checks permissions as that
//! user and new files belong to it.

use std::io::Read;

use rustix::fs::{Mode, OFlags};
use wisp_sys::fsid::FsIdentity;

use super::errors::FsError;
use super::resolve::{reopen, SpriteRoot};
use crate::api::error::ApiError;

/// The user sprites run commands as.
const SPRITE_USER: &str = "sprite";
const DEFAULT_ID: u32 = 1000;
/// Larger account files are ignored (the defaults apply).
const MAX_ACCOUNT_FILE: u64 = 1 << 20;

/// Who the blocking work runs as, in host ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// The daemon's own credentials: root of a sprite without a user namespace.
    Daemon,
    /// The sprite's root when it has its own user namespace: its host id, with the daemon's
    /// capabilities (host root's own id could not own a file on the sprite's layers).
    Root(FsIdentity),
    /// An ordinary user of the sprite.
    User(FsIdentity),
}

/// The identity for a request: root when `as_root`, else the sprite user. Ids are the
/// sprite's, shifted to the host's through its id map.
pub fn for_request(root: &SpriteRoot, as_root: bool) -> Identity {
    let ids = root.ids();
    if as_root {
        return match ids.to_host(0) {
            Some(0) | None => Identity::Daemon,
            Some(host) => Identity::Root(FsIdentity {
                uid: host,
                gid: host,
                groups: vec![host],
            }),
        };
    }
    let passwd = read_account_file(root, "/etc/passwd").unwrap_or_default();
    let group = read_account_file(root, "/etc/group").unwrap_or_default();
    let user = lookup(SPRITE_USER, &passwd, &group).unwrap_or(FsIdentity {
        uid: DEFAULT_ID,
        gid: DEFAULT_ID,
        groups: vec![DEFAULT_ID],
    });
    let nobody = ids.to_host(65534).unwrap_or(65534);
    let host = |id: u32| ids.to_host(id).unwrap_or(nobody);
    Identity::User(FsIdentity {
        uid: host(user.uid),
        gid: host(user.gid),
        groups: user.groups.into_iter().map(host).collect(),
    })
}

/// `user`'s ids from passwd text, and its groups (primary first) from group text. Parsed by
/// hand: the libc lookups would load NSS modules named by the sprite's files.
fn lookup(user: &str, passwd: &str, group: &str) -> Option<FsIdentity> {
    let (uid, gid) = passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 7 && f[0] == user).then_some(())?;
        Some((f[2].parse::<u32>().ok()?, f[3].parse::<u32>().ok()?))
    })?;
    let mut groups = vec![gid];
    for l in group.lines() {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() >= 4 && f[3].split(',').any(|m| m == user) {
            if let Ok(g) = f[2].parse::<u32>() {
                if !groups.contains(&g) {
                    groups.push(g);
                }
            }
        }
    }
    Some(FsIdentity { uid, gid, groups })
}

/// A small regular file of the sprite, read as root. Anything odd (a FIFO, a device, a
/// huge file) reads as absent.
fn read_account_file(root: &SpriteRoot, path: &str) -> Option<String> {
    let fd = root
        .open_path("read", path, OFlags::PATH, Mode::empty())
        .ok()?;
    let st = rustix::fs::fstat(&fd).ok()?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile
        || st.st_size as u64 > MAX_ACCOUNT_FILE
    {
        return None;
    }
    let file = std::fs::File::from(reopen(&fd, OFlags::RDONLY | OFlags::NONBLOCK).ok()?);
    let mut text = String::new();
    file.take(MAX_ACCOUNT_FILE).read_to_string(&mut text).ok()?;
    Some(text)
}

/// Runs `f` on the current (blocking) thread as `id`, switching back afterwards.
pub fn run_as<T>(id: &Identity, f: impl FnOnce() -> Result<T, FsError>) -> Result<T, FsError> {
    let switched = match id {
        Identity::Daemon => return f(),
        Identity::Root(id) => (id, id.enter_keeping_caps()),
        Identity::User(id) => (id, id.enter()),
    };
    let _guard = switched.1.map_err(|e| {
        FsError::Api(ApiError::internal(format!(
            "cannot switch to uid {} for file access: {e}",
            switched.0.uid
        )))
    })?;
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sprite_user_and_groups() {
        let passwd =
            "root:x:0:0:root:/root:/bin/bash\nsprite:x:1000:1001::/home/sprite:/bin/bash\n";
        let group = "root:x:0:\nsudo:x:27:sprite,other\nsprite:x:1001:\nbad\n";
        let id = lookup("sprite", passwd, group).unwrap();
        assert_eq!((id.uid, id.gid, id.groups), (1000, 1001, vec![1001, 27]));
        assert_eq!(lookup("nobody", passwd, group), None);
        assert_eq!(lookup("sprite", "sprite:x:nan:1:::\n", ""), None);
    }
}

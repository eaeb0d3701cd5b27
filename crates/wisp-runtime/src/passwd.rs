//! Looking up users and groups in a sprite's own /etc/passwd and /etc/group.
//!
//! Hand-rolled on purpose: the libc lookups would load NSS modules from the sprite's root
//! into our process, which must never run code from inside a sprite.

use std::fs;

/// A resolved user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub groups: Vec<u32>,
}

/// Resolves `name` (or a numeric uid) from passwd/group text.
pub fn lookup(name: &str, passwd: &str, group: &str) -> Option<User> {
    let numeric: Option<u32> = name.parse().ok();
    let entry = passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 7 {
            return None;
        }
        let uid: u32 = f[2].parse().ok()?;
        (f[0] == name || numeric == Some(uid)).then(|| (f[0].to_string(), uid, f[3], f[5]))
    });
    let (user_name, uid, gid, home) = match entry {
        Some((n, uid, gid, home)) => (n, uid, gid.parse().ok()?, home.to_string()),
        None => {
            let uid = numeric?;
            (String::new(), uid, uid, "/".to_string())
        }
    };
    let mut groups = vec![gid];
    for l in group.lines() {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 4 || user_name.is_empty() {
            continue;
        }
        if f[3].split(',').any(|m| m == user_name) {
            if let Ok(g) = f[2].parse::<u32>() {
                if !groups.contains(&g) {
                    groups.push(g);
                }
            }
        }
    }
    Some(User {
        uid,
        gid,
        home,
        groups,
    })
}

/// Resolves `name` from the files of the root the caller is in.
pub fn lookup_in_root(name: &str) -> Option<User> {
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = fs::read_to_string("/etc/group").unwrap_or_default();
    lookup(name, &passwd, &group)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/bash\nsprite:x:1000:1000::/home/sprite:/bin/bash\n";
    const GROUP: &str = "root:x:0:\nsudo:x:27:sprite\nsprite:x:1000:\n";

    #[test]
    fn by_name_with_groups() {
        let u = lookup("sprite", PASSWD, GROUP).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        assert_eq!(u.home, "/home/sprite");
        assert_eq!(u.groups, vec![1000, 27]);
    }

    #[test]
    fn root_and_numeric() {
        assert_eq!(lookup("root", PASSWD, GROUP).unwrap().uid, 0);
        assert_eq!(lookup("1000", PASSWD, GROUP).unwrap().home, "/home/sprite");
        assert_eq!(lookup("4242", PASSWD, GROUP).unwrap().gid, 4242);
        assert!(lookup("nobody-here", PASSWD, GROUP).is_none());
    }
}

//! Login sessions of sprite URLs: an HttpOnly cookie that stands for an org token.
//!
//! `GET /.wisp/login?token=T` (or `POST /.wisp/login` with a form field `token`) on a sprite's
//! host checks the token like the API does and sets the cookie [`COOKIE`] =
//! `<sprite id>.<token id>.<expiry unix>.<mac>`, where `mac` is HMAC-SHA256 under a key only
//! wispd knows (`<data-dir>/ingress-session.key`, 32 random bytes, mode 0600, so logins survive
//! a wispd restart). The cookie holds no secret of the token: it names the token by id, and on
//! every request the token must still exist, be unrevoked and belong to the sprite's org, so
//! revoking the token ends its sessions. It is valid for one sprite only (and browsers send it
//! to that host only: no `Domain`), and for [`SESSION_TTL`].

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::store::{SpriteRow, Store};

/// Name of the session cookie.
pub const COOKIE: &str = "wisp_session";
/// How long a login lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(24 * 3600);
const KEY_FILE: &str = "ingress-session.key";
const KEY_LEN: usize = 32;

/// The MAC key of session cookies.
#[derive(Clone)]
pub struct SessionKey([u8; KEY_LEN]);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

impl SessionKey {
    /// Reads `<data_dir>/ingress-session.key`, making it on first use.
    pub fn load_or_create(data_dir: &Path) -> std::io::Result<Self> {
        let path = data_dir.join(KEY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) if bytes.len() == KEY_LEN => {
                let mut k = [0u8; KEY_LEN];
                k.copy_from_slice(&bytes);
                return Ok(SessionKey(k));
            }
            Ok(_) => tracing::warn!("{} is damaged; making a new key", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let key = Self::random();
        crate::fsutil::write_atomic(&path, &key.0, 0o600)?;
        Ok(key)
    }

    pub fn random() -> Self {
        use rand::RngCore;
        let mut k = [0u8; KEY_LEN];
        rand::thread_rng().fill_bytes(&mut k);
        SessionKey(k)
    }

    fn mac(&self, sprite_id: &str, token_id: &str, expiry: u64) -> String {
        let msg = format!("wisp-ingress-session-v1|{sprite_id}|{token_id}|{expiry}");
        hex::encode(hmac_sha256(&self.0, msg.as_bytes()))
    }

    /// A cookie value for a login with token `token_id` on `sprite_id`, valid until `expiry`
    /// (Unix seconds).
    pub fn issue(&self, sprite_id: &str, token_id: &str, expiry: u64) -> String {
        format!(
            "{sprite_id}.{token_id}.{expiry}.{}",
            self.mac(sprite_id, token_id, expiry)
        )
    }

    /// The token id of a cookie value that this key issued for `sprite_id` and that has not
    /// expired at `now`.
    pub fn check<'a>(&self, value: &'a str, sprite_id: &str, now: u64) -> Option<&'a str> {
        let mut parts = value.split('.');
        let (sid, tid, exp, mac) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || sid != sprite_id {
            return None;
        }
        let expiry: u64 = exp.parse().ok()?;
        let expected = self.mac(sid, tid, expiry);
        let equal: bool = expected.as_bytes().ct_eq(mac.as_bytes()).into();
        (equal && expiry > now).then_some(tid)
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Whether a session cookie value lets its bearer into `sprite`: the MAC and expiry hold and
/// the token it names is still live in the sprite's org.
pub fn session_allows(store: &Store, key: &SessionKey, value: &str, sprite: &SpriteRow) -> bool {
    let Some(token_id) = key.check(value, &sprite.id, unix_now()) else {
        return false;
    };
    match store.token_by_id(token_id) {
        Ok(Some(t)) => t.revoked_at.is_none() && t.org_id == sprite.org_id,
        Ok(None) => false,
        Err(e) => {
            tracing::warn!("checking a URL session: {e}");
            false
        }
    }
}

/// HMAC-SHA256 (RFC 2104) for keys of at most 64 bytes.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    assert!(key.len() <= 64, "longer keys must be hashed first");
    let mut k = [0u8; 64];
    k[..key.len()].copy_from_slice(key);
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&ipad)
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize()
        .into()
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k.trim() == name).then(|| v.trim().trim_matches('"'))
    })
}

/// A `Cookie` header without cookie `name` (`None` when nothing is left).
pub fn without_cookie(header: &str, name: &str) -> Option<String> {
    let rest: Vec<&str> = header
        .split(';')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .filter(|c| c.split_once('=').map(|(k, _)| k.trim()) != Some(name))
        .collect();
    (!rest.is_empty()).then(|| rest.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_rfc4231_case2() {
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn issue_and_check() {
        let key = SessionKey::random();
        let v = key.issue("sprite-1", "tabc", 1000);
        assert_eq!(key.check(&v, "sprite-1", 999), Some("tabc"));
        // Expired, other sprite, other key, tampered.
        assert_eq!(key.check(&v, "sprite-1", 1000), None);
        assert_eq!(key.check(&v, "sprite-2", 999), None);
        assert_eq!(SessionKey::random().check(&v, "sprite-1", 999), None);
        let longer = v.replace(".1000.", ".2000.");
        assert_eq!(key.check(&longer, "sprite-1", 999), None);
        let other_token = v.replace(".tabc.", ".tabd.");
        assert_eq!(key.check(&other_token, "sprite-1", 999), None);
        assert_eq!(key.check("a.b.c", "a", 0), None);
        assert_eq!(key.check(&format!("{v}.x"), "sprite-1", 999), None);
    }

    #[test]
    fn key_file_persists() {
        let dir = tempfile::tempdir().unwrap();
        let a = SessionKey::load_or_create(dir.path()).unwrap();
        let b = SessionKey::load_or_create(dir.path()).unwrap();
        assert_eq!(a.0, b.0);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn cookies() {
        let h = "a=1; wisp_session=xyz; b=2";
        assert_eq!(cookie_value(h, COOKIE), Some("xyz"));
        assert_eq!(cookie_value(h, "c"), None);
        assert_eq!(without_cookie(h, COOKIE).as_deref(), Some("a=1; b=2"));
        assert_eq!(without_cookie("wisp_session=x", COOKIE), None);
    }
}

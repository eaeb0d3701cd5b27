//! API tokens: minting, hashing, and checking a presented token.
//!
//! A token is `org-slug/org-id/token-id/secret` (the hosted product's four-part form, which the
//! `sprite` CLI insists on). Only `sha256(secret)` is stored; the comparison is constant-time.
//!
//! A holder may narrow a token offline into an *attenuated* one
//! (`wisp1.<org-slug>.<token-id>.<caveats>.<signature>`, see
//! [`wisp_api::attenuation`]): its HMAC chain starts from the same stored `sha256(secret)`, so
//! checking it needs nothing new in the database. [`authenticate`] accepts both forms and says
//! which in the [`Grant`]; [`verify`] accepts full tokens only.

use axum::http::{header, HeaderMap};
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use wisp_api::attenuation::{self, AttenuatedToken, Caveat, Caveats, Denied, Op};
use wisp_api::token::parse_token;

use crate::store::{Organization, Store, StoreError, TokenRecord};
use crate::timefmt;

/// Who is calling: the organization a valid token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub org_id: String,
    pub org_slug: String,
}

/// What a valid token may do: everything its org allows (a full token; `admin` ones may also
/// manage every organization), or only what its caveats allow (an attenuated token, which
/// never manages organizations or tokens).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub token_id: String,
    /// The underlying token is an admin token (meaningful for full tokens only).
    pub admin: bool,
    /// `None`: a full token.
    pub caveats: Option<Vec<Caveat>>,
}

impl Grant {
    pub fn full(token_id: &str, admin: bool) -> Self {
        Grant {
            token_id: token_id.to_string(),
            admin,
            caveats: None,
        }
    }

    pub fn is_attenuated(&self) -> bool {
        self.caveats.is_some()
    }

    /// May manage organizations and tokens at all (then subject to admin/org checks).
    pub fn may_manage(&self) -> bool {
        !self.is_attenuated()
    }

    /// A full token of an admin: manages every organization.
    pub fn is_admin(&self) -> bool {
        self.admin && !self.is_attenuated()
    }

    fn restrictions(&self) -> Caveats<'_> {
        Caveats(self.caveats.as_deref().unwrap_or(&[]))
    }

    /// Whether the caveats allow touching the sprite `name` at all.
    pub fn allows_sprite(&self, name: &str) -> bool {
        self.restrictions().allows_sprite(name)
    }

    /// Whether the caveats restrict sprite names (then a name must be a valid one to match).
    pub fn restricts_sprites(&self) -> bool {
        self.restrictions().restricts_sprites()
    }

    /// Checks an operation of class `op` on `sprite` (or on no particular sprite).
    pub fn check(&self, op: Op, sprite: Option<&str>) -> Result<(), Denied> {
        self.restrictions().check(unix_now(), op, sprite)
    }
}

/// A valid token's caller and grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    pub caller: Caller,
    pub grant: Grant,
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `n` random bytes as lowercase hex.
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A freshly minted token: the record to store and the full token to hand out (once).
#[derive(Debug, Clone)]
pub struct MintedToken {
    pub record: TokenRecord,
    pub token: String,
}

pub fn mint_token(org: &Organization, description: &str, admin: bool) -> MintedToken {
    let id = format!("t{}", random_hex(8));
    let secret = random_hex(32);
    let token = format!("{}/{}/{}/{}", org.slug, org.id, id, secret);
    MintedToken {
        record: TokenRecord {
            id,
            org_id: org.id.clone(),
            secret_hash: hash_secret(&secret),
            description: description.to_string(),
            created_at: timefmt::now(),
            revoked_at: None,
            admin,
        },
        token,
    }
}

/// The token presented in `Authorization`: `Bearer <token>`, or `Basic` with user `bearer` and
/// the token as password (handy for browsers and curl).
pub fn token_from_headers(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return (!rest.is_empty()).then(|| rest.to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (user, password) = decoded.split_once(':')?;
        if user.eq_ignore_ascii_case("bearer") && !password.is_empty() {
            return Some(password.to_string());
        }
    }
    None
}

/// Checks a presented *full* token; `Ok(None)` when it is not valid (attenuated tokens are
/// not accepted here: see [`authenticate`]).
pub fn verify(store: &Store, token: &str) -> Result<Option<Caller>, StoreError> {
    Ok(verify_full(store, token)?.map(|a| a.caller))
}

/// Checks a presented token of either form; `Ok(None)` when it is not valid: unknown,
/// revoked, tampered with, or attenuated with an `expires` that has passed.
pub fn authenticate(store: &Store, token: &str) -> Result<Option<Authenticated>, StoreError> {
    if attenuation::is_attenuated(token) {
        verify_attenuated(store, token)
    } else {
        verify_full(store, token)
    }
}

/// A token that may reach the sprite `sprite_name` through its URL (op class exec): a full
/// token of any org (the caller compares orgs), or an attenuated one whose caveats allow exec
/// on that sprite.
pub fn verify_sprite_access(
    store: &Store,
    token: &str,
    sprite_name: &str,
) -> Result<Option<Caller>, StoreError> {
    Ok(authenticate(store, token)?
        .filter(|a| a.grant.check(Op::Exec, Some(sprite_name)).is_ok())
        .map(|a| a.caller))
}

fn verify_attenuated(store: &Store, token: &str) -> Result<Option<Authenticated>, StoreError> {
    let Ok(t) = AttenuatedToken::parse(token) else {
        return Ok(None);
    };
    let record = store.token_by_id(&t.token_id)?;
    // Run the chain even when the token id is unknown, so timing does not tell which exist.
    let mut digest = [0u8; 32];
    let known = record
        .as_ref()
        .is_some_and(|r| hex::decode_to_slice(&r.secret_hash, &mut digest).is_ok());
    let valid = t.verify(&digest);
    let Some(record) = record.filter(|r| known && valid && r.revoked_at.is_none()) else {
        return Ok(None);
    };
    let Some(org) = store.org_by_id(&record.org_id)? else {
        return Ok(None);
    };
    if org.slug != t.org_slug || t.restrictions().expired(unix_now()) {
        return Ok(None);
    }
    Ok(Some(Authenticated {
        caller: Caller {
            org_id: org.id,
            org_slug: org.slug,
        },
        grant: Grant {
            token_id: record.id,
            admin: record.admin,
            caveats: Some(t.caveats),
        },
    }))
}

fn verify_full(store: &Store, token: &str) -> Result<Option<Authenticated>, StoreError> {
    let Some(parts) = parse_token(token) else {
        return Ok(None);
    };
    let presented = hash_secret(parts.secret);
    let record = store.token_by_id(parts.token_id)?;
    // Compare even when the token id is unknown, so timing does not tell which ids exist.
    let stored = record
        .as_ref()
        .map(|r| r.secret_hash.clone())
        .unwrap_or_else(|| "0".repeat(64));
    let equal: bool = presented.as_bytes().ct_eq(stored.as_bytes()).into();
    let Some(record) = record.filter(|r| equal && r.revoked_at.is_none()) else {
        return Ok(None);
    };
    if record.org_id != parts.org_id {
        return Ok(None);
    }
    let Some(org) = store.org_by_id(&record.org_id)? else {
        return Ok(None);
    };
    Ok(Some(Authenticated {
        caller: Caller {
            org_id: org.id,
            org_slug: org.slug,
        },
        grant: Grant::full(&record.id, record.admin),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn org() -> Organization {
        Organization {
            id: "o0123abcd".into(),
            slug: "default".into(),
            name: "default".into(),
            created_at: timefmt::now(),
        }
    }

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn minted_token_verifies_and_tampering_fails() {
        let store = Store::open_in_memory().unwrap();
        let org = org();
        store.insert_org(&org).unwrap();
        let minted = mint_token(&org, "admin", true);
        store.insert_token(&minted.record).unwrap();
        assert!(!minted.token.contains(&minted.record.secret_hash));
        let caller = verify(&store, &minted.token).unwrap().unwrap();
        assert_eq!(caller.org_slug, "default");

        let mut bad = minted.token.clone();
        bad.pop();
        bad.push('x');
        assert_eq!(verify(&store, &bad).unwrap(), None);
        let wrong_org = minted.token.replacen("o0123abcd", "o9999", 1);
        assert_eq!(verify(&store, &wrong_org).unwrap(), None);
        assert_eq!(verify(&store, "not-a-token").unwrap(), None);
        assert_eq!(verify(&store, "a/b/c/d").unwrap(), None);
    }

    #[test]
    fn attenuated_tokens() {
        let store = Store::open_in_memory().unwrap();
        let org = org();
        store.insert_org(&org).unwrap();
        let minted = mint_token(&org, "ci", false);
        store.insert_token(&minted.record).unwrap();
        let narrow = |cs: &[Caveat]| attenuation::attenuate(&minted.token, cs).unwrap().encode();

        let t = narrow(&[Caveat::Sprite("box".into())]);
        let a = authenticate(&store, &t).unwrap().unwrap();
        assert_eq!(a.caller.org_slug, "default");
        assert!(a.grant.is_attenuated() && !a.grant.may_manage() && !a.grant.is_admin());
        assert!(a.grant.check(Op::Exec, Some("box")).is_ok());
        assert!(a.grant.check(Op::Exec, Some("other")).is_err());
        // Not a full token: `verify` (and so the URL login) refuses it.
        assert_eq!(verify(&store, &t).unwrap(), None);
        assert!(verify_sprite_access(&store, &t, "box").unwrap().is_some());
        assert!(verify_sprite_access(&store, &t, "other").unwrap().is_none());
        let ro = narrow(&[Caveat::Ops(vec![Op::Read])]);
        assert!(verify_sprite_access(&store, &ro, "box").unwrap().is_none());
        // The full token's grant.
        let full = authenticate(&store, &minted.token).unwrap().unwrap();
        assert_eq!(full.grant, Grant::full(&minted.record.id, false));
        assert!(verify_sprite_access(&store, &minted.token, "any")
            .unwrap()
            .is_some());

        // Expired: not valid at all.
        let old = narrow(&[Caveat::Expires(1)]);
        assert_eq!(authenticate(&store, &old).unwrap(), None);
        let later = narrow(&[Caveat::Expires(unix_now() + 3600)]);
        assert!(authenticate(&store, &later).unwrap().is_some());

        // Wrong org slug, tampering, unknown token id.
        let wrong_slug = t.replacen("wisp1.default.", "wisp1.other.", 1);
        assert_eq!(authenticate(&store, &wrong_slug).unwrap(), None);
        let mut bad = t.clone();
        let last = bad.pop().unwrap();
        bad.push(if last == '0' { '1' } else { '0' });
        assert_eq!(authenticate(&store, &bad).unwrap(), None);
        let unknown = t.replacen(&minted.record.id, "tffffffffffffffff", 1);
        assert_eq!(authenticate(&store, &unknown).unwrap(), None);

        // Revocation ends the attenuated forms too.
        store
            .revoke_token(&org.id, &minted.record.id, &timefmt::now())
            .unwrap();
        assert_eq!(authenticate(&store, &t).unwrap(), None);
        assert_eq!(authenticate(&store, &minted.token).unwrap(), None);
    }

    #[test]
    fn header_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(token_from_headers(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer a/b/c/d"),
        );
        assert_eq!(token_from_headers(&h).as_deref(), Some("a/b/c/d"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  x "),
        );
        assert_eq!(token_from_headers(&h).as_deref(), Some("x"));
        let basic = base64::engine::general_purpose::STANDARD.encode("bearer:a/b/c/d");
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {basic}")).unwrap(),
        );
        assert_eq!(token_from_headers(&h).as_deref(), Some("a/b/c/d"));
        let other = base64::engine::general_purpose::STANDARD.encode("alice:pw");
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {other}")).unwrap(),
        );
        assert_eq!(token_from_headers(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!!"));
        assert_eq!(token_from_headers(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer"));
        assert_eq!(token_from_headers(&h), None);
    }
}

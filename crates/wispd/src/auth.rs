//! API tokens: minting, hashing, and checking a presented token.
//!
//! A token is `org-slug/org-id/token-id/secret` (the hosted product's four-part form, which the
//! `sprite` CLI insists on). Only `sha256(secret)` is stored; the comparison is constant-time.

use axum::http::{header, HeaderMap};
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use wisp_api::token::parse_token;

use crate::store::{Organization, Store, StoreError, TokenRecord};
use crate::timefmt;

/// Who is calling: the organization a valid token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub org_id: String,
    pub org_slug: String,
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

pub fn mint_token(org: &Organization, description: &str) -> MintedToken {
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

/// Checks a presented token; `Ok(None)` when it is not valid.
pub fn verify(store: &Store, token: &str) -> Result<Option<Caller>, StoreError> {
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
    Ok(Some(Caller {
        org_id: org.id,
        org_slug: org.slug,
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
        let minted = mint_token(&org, "admin");
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

//! First start: the default organization and its admin token (`<data-dir>/admin-token`).

use std::io;
use std::path::Path;

use crate::auth::{self, random_hex};
use crate::fsutil::write_atomic;
use crate::store::{Organization, Store, StoreError};
use crate::timefmt;

pub const DEFAULT_ORG_SLUG: &str = "default";
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing {path}: {source}")]
    WriteToken {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Makes sure the default organization exists and that `<data-dir>/admin-token` holds a valid
/// admin token (one that may manage every organization). A missing token file on a later
/// start, or one whose token no longer works (revoked through the API), gets a *new* token
/// (the old secret is not recoverable: only its hash is stored); the event is logged.
pub fn ensure_admin(store: &Store, data_dir: &Path) -> Result<Organization, BootstrapError> {
    let token_path = data_dir.join(ADMIN_TOKEN_FILE);
    let (org, fresh) = match store.org_by_slug(DEFAULT_ORG_SLUG)? {
        Some(org) => (org, false),
        None => {
            let org = Organization {
                id: format!("o{}", random_hex(4)),
                slug: DEFAULT_ORG_SLUG.to_string(),
                name: DEFAULT_ORG_SLUG.to_string(),
                created_at: timefmt::now(),
            };
            store.insert_org(&org)?;
            tracing::info!(org_id = %org.id, "created the default organization");
            (org, true)
        }
    };
    if !fresh {
        let current = std::fs::read_to_string(&token_path).ok();
        if let Some(t) = current {
            match auth::authenticate(store, t.trim())? {
                Some(a) if a.grant.is_admin() => return Ok(org),
                _ => tracing::warn!(
                    path = %token_path.display(),
                    "the admin token file's token is no longer valid"
                ),
            }
        }
    }
    let minted = auth::mint_token(&org, "admin", true);
    store.insert_token(&minted.record)?;
    write_atomic(&token_path, format!("{}\n", minted.token).as_bytes(), 0o600).map_err(
        |source| BootstrapError::WriteToken {
            path: token_path.display().to_string(),
            source,
        },
    )?;
    if fresh {
        tracing::info!(path = %token_path.display(), "wrote the admin token");
    } else {
        tracing::warn!(
            path = %token_path.display(),
            token_id = %minted.record.id,
            "the admin token file was missing or stale: issued a new admin token"
        );
    }
    Ok(org)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_start_then_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("wisp.db")).unwrap();
        let org = ensure_admin(&store, dir.path()).unwrap();
        let path = dir.path().join(ADMIN_TOKEN_FILE);
        let t1 = std::fs::read_to_string(&path).unwrap();
        assert!(auth::verify(&store, t1.trim()).unwrap().is_some());

        // A restart with the file present changes nothing.
        let again = ensure_admin(&store, dir.path()).unwrap();
        assert_eq!(again, org);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), t1);

        // Without the file, a new valid token appears; the org stays.
        std::fs::remove_file(&path).unwrap();
        let again = ensure_admin(&store, dir.path()).unwrap();
        assert_eq!(again.id, org.id);
        let t2 = std::fs::read_to_string(&path).unwrap();
        assert_ne!(t1, t2);
        assert!(auth::verify(&store, t2.trim()).unwrap().is_some());

        // A revoked admin token in the file is replaced too.
        let a = auth::authenticate(&store, t2.trim()).unwrap().unwrap();
        assert!(a.grant.is_admin());
        store
            .revoke_token(&org.id, &a.grant.token_id, &timefmt::now())
            .unwrap();
        ensure_admin(&store, dir.path()).unwrap();
        let t3 = std::fs::read_to_string(&path).unwrap();
        assert_ne!(t2, t3);
        let a = auth::authenticate(&store, t3.trim()).unwrap().unwrap();
        assert!(a.grant.is_admin());
    }
}

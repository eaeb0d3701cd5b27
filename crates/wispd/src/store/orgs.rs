//! Organizations and their API tokens.

use rusqlite::{params, OptionalExtension, Row};

use super::{Store, StoreError};
use crate::tenancy::{Limit, OrgLimits};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Organization {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub created_at: String,
}

impl Organization {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Organization {
            id: r.get("id")?,
            slug: r.get("slug")?,
            name: r.get("name")?,
            created_at: r.get("created_at")?,
        })
    }
}

/// A stored token. Only the SHA-256 of its secret is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: String,
    pub org_id: String,
    pub secret_hash: String,
    pub description: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
    /// May manage every organization and its tokens (the bootstrap token).
    pub admin: bool,
}

impl TokenRecord {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(TokenRecord {
            id: r.get("id")?,
            org_id: r.get("org_id")?,
            secret_hash: r.get("secret_hash")?,
            description: r.get("description")?,
            created_at: r.get("created_at")?,
            revoked_at: r.get("revoked_at")?,
            admin: r.get("admin")?,
        })
    }
}

/// `NULL` = the daemon's default, `-1` = unlimited, `n >= 0` = at most `n`.
fn limit_from_column(v: Option<i64>) -> Limit {
    match v {
        None => Limit::Default,
        Some(n) if n < 0 => Limit::Unlimited,
        Some(n) => Limit::Max(n as u64),
    }
}

fn limit_to_column(l: Limit) -> Option<i64> {
    match l {
        Limit::Default => None,
        Limit::Unlimited => Some(-1),
        Limit::Max(n) => Some(n.min(i64::MAX as u64) as i64),
    }
}

impl Store {
    pub fn insert_org(&self, org: &Organization) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO organizations (id, slug, name, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![org.id, org.slug, org.name, org.created_at],
        )?;
        Ok(())
    }

    /// Inserts a new organization; `false` when its slug is taken.
    pub fn insert_org_if_new(&self, org: &Organization) -> Result<bool, StoreError> {
        match self.insert_org(org) {
            Ok(()) => Ok(true),
            Err(StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _)))
                if f.code == rusqlite::ErrorCode::ConstraintViolation
                    && f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    pub fn org_by_slug(&self, slug: &str) -> Result<Option<Organization>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT * FROM organizations WHERE slug = ?1",
                [slug],
                Organization::from_row,
            )
            .optional()?)
    }

    pub fn org_by_id(&self, id: &str) -> Result<Option<Organization>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT * FROM organizations WHERE id = ?1",
                [id],
                Organization::from_row,
            )
            .optional()?)
    }

    pub fn insert_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO tokens (id, org_id, secret_hash, description, created_at, revoked_at,
                                 admin)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                token.id,
                token.org_id,
                token.secret_hash,
                token.description,
                token.created_at,
                token.revoked_at,
                token.admin
            ],
        )?;
        Ok(())
    }

    pub fn token_by_id(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT * FROM tokens WHERE id = ?1",
                [id],
                TokenRecord::from_row,
            )
            .optional()?)
    }

    /// Every organization, by slug.
    pub fn list_orgs(&self) -> Result<Vec<Organization>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT * FROM organizations ORDER BY slug")?;
        let rows = stmt
            .query_map([], Organization::from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn rename_org(&self, org_id: &str, name: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE organizations SET name = ?2 WHERE id = ?1",
            params![org_id, name],
        )?;
        Ok(())
    }

    /// The organization's own limit settings (defaults not applied).
    pub fn org_limits(&self, org_id: &str) -> Result<OrgLimits, StoreError> {
        let row: Option<(Option<i64>, Option<i64>, Option<i64>)> = self
            .conn()
            .query_row(
                "SELECT running_limit, create_rate_limit, create_rate_window_seconds
                 FROM org_limits WHERE org_id = ?1",
                [org_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let (running, rate, window) = row.unwrap_or((None, None, None));
        Ok(OrgLimits {
            running: limit_from_column(running),
            create_rate: limit_from_column(rate),
            create_window_seconds: window.filter(|w| *w > 0).map(|w| w as u64),
        })
    }

    pub fn set_org_limits(&self, org_id: &str, limits: &OrgLimits) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO org_limits
                 (org_id, running_limit, create_rate_limit, create_rate_window_seconds)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (org_id) DO UPDATE SET running_limit = ?2, create_rate_limit = ?3,
                 create_rate_window_seconds = ?4",
            params![
                org_id,
                limit_to_column(limits.running),
                limit_to_column(limits.create_rate),
                limits
                    .create_window_seconds
                    .map(|w| w.min(i64::MAX as u64) as i64)
            ],
        )?;
        Ok(())
    }

    /// The organization's tokens that are not revoked, oldest first.
    pub fn live_tokens(&self, org_id: &str) -> Result<Vec<TokenRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT * FROM tokens WHERE org_id = ?1 AND revoked_at IS NULL
             ORDER BY created_at, id",
        )?;
        let rows = stmt
            .query_map([org_id], TokenRecord::from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Revokes a token of `org_id`; `false` when the org has no such token. Revoking a
    /// revoked token keeps its first revocation time.
    pub fn revoke_token(&self, org_id: &str, id: &str, now: &str) -> Result<bool, StoreError> {
        let conn = self.conn();
        let n = conn.execute(
            "UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?3)
             WHERE id = ?1 AND org_id = ?2",
            params![id, org_id, now],
        )?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn org_and_token_round_trip() {
        let s = Store::open_in_memory().unwrap();
        let org = Organization {
            id: "o1234abcd".into(),
            slug: "default".into(),
            name: "default".into(),
            created_at: "2026-01-01T00:00:00.000000Z".into(),
        };
        s.insert_org(&org).unwrap();
        assert_eq!(s.org_by_slug("default").unwrap(), Some(org.clone()));
        assert_eq!(s.org_by_id("o1234abcd").unwrap(), Some(org.clone()));
        assert_eq!(s.org_by_slug("nope").unwrap(), None);
        let tok = TokenRecord {
            id: "t1".into(),
            org_id: org.id.clone(),
            secret_hash: "ab".into(),
            description: "admin".into(),
            created_at: org.created_at.clone(),
            revoked_at: None,
            admin: true,
        };
        s.insert_token(&tok).unwrap();
        assert_eq!(s.token_by_id("t1").unwrap(), Some(tok.clone()));
        assert_eq!(s.live_tokens(&org.id).unwrap(), vec![tok.clone()]);
        assert_eq!(s.list_orgs().unwrap(), vec![org.clone()]);
        // Revocation: only within the token's org, idempotent, and it hides the token.
        assert!(!s.revoke_token("other-org", "t1", "2026-01-02").unwrap());
        assert!(s.revoke_token(&org.id, "t1", "2026-01-02").unwrap());
        assert!(s.revoke_token(&org.id, "t1", "2026-01-03").unwrap());
        assert_eq!(
            s.token_by_id("t1").unwrap().unwrap().revoked_at.as_deref(),
            Some("2026-01-02")
        );
        assert!(s.live_tokens(&org.id).unwrap().is_empty());
        assert!(!s.revoke_token(&org.id, "nope", "2026-01-02").unwrap());

        // Limits: unset by default, then each form round-trips.
        assert_eq!(s.org_limits(&org.id).unwrap(), OrgLimits::default());
        let limits = OrgLimits {
            running: Limit::Max(3),
            create_rate: Limit::Unlimited,
            create_window_seconds: Some(60),
        };
        s.set_org_limits(&org.id, &limits).unwrap();
        assert_eq!(s.org_limits(&org.id).unwrap(), limits);
        s.rename_org(&org.id, "Acme").unwrap();
        let dup = Organization {
            id: "o9999".into(),
            ..org.clone()
        };
        assert!(!s.insert_org_if_new(&dup).unwrap());
        assert_eq!(s.org_by_id(&org.id).unwrap().unwrap().name, "Acme");
        // Foreign keys are enforced.
        let orphan = TokenRecord {
            id: "t2".into(),
            org_id: "missing".into(),
            secret_hash: "ab".into(),
            description: String::new(),
            created_at: String::new(),
            revoked_at: None,
            admin: false,
        };
        assert!(s.insert_token(&orphan).is_err());
    }
}

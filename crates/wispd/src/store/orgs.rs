//! Organizations and their API tokens.

use rusqlite::{params, OptionalExtension, Row};

use super::{Store, StoreError};

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
}

impl Store {
    pub fn insert_org(&self, org: &Organization) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO organizations (id, slug, name, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![org.id, org.slug, org.name, org.created_at],
        )?;
        Ok(())
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
            "INSERT INTO tokens (id, org_id, secret_hash, description, created_at, revoked_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                token.id,
                token.org_id,
                token.secret_hash,
                token.description,
                token.created_at,
                token.revoked_at
            ],
        )?;
        Ok(())
    }

    pub fn token_by_id(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT * FROM tokens WHERE id = ?1", [id], |r| {
                Ok(TokenRecord {
                    id: r.get("id")?,
                    org_id: r.get("org_id")?,
                    secret_hash: r.get("secret_hash")?,
                    description: r.get("description")?,
                    created_at: r.get("created_at")?,
                    revoked_at: r.get("revoked_at")?,
                })
            })
            .optional()?)
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
        };
        s.insert_token(&tok).unwrap();
        assert_eq!(s.token_by_id("t1").unwrap(), Some(tok));
        // Foreign keys are enforced.
        let orphan = TokenRecord {
            id: "t2".into(),
            org_id: "missing".into(),
            secret_hash: "ab".into(),
            description: String::new(),
            created_at: String::new(),
            revoked_at: None,
        };
        assert!(s.insert_token(&orphan).is_err());
    }
}

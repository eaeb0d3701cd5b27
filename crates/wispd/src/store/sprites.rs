//! Sprite rows: what the API knows about each sprite, plus its journal state.

use rusqlite::{params, ErrorCode, OptionalExtension, Row};

use super::{Store, StoreError};

/// The desired/journal state of a sprite. `Creating` and `Destroying` are written *before* the
/// side effects, so a crash in between is finished (or undone) by reconciliation at startup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpriteState {
    Creating,
    Ready,
    Destroying,
}

impl SpriteState {
    pub fn as_str(self) -> &'static str {
        match self {
            SpriteState::Creating => "creating",
            SpriteState::Ready => "ready",
            SpriteState::Destroying => "destroying",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "creating" => SpriteState::Creating,
            "ready" => SpriteState::Ready,
            "destroying" => SpriteState::Destroying,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpriteRow {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub state: SpriteState,
    pub url_auth: String,
    pub private_access: Option<String>,
    pub labels: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
    pub last_started_at: Option<String>,
    pub last_active_at: Option<String>,
    /// When it last went warm (frozen).
    pub last_warming_at: Option<String>,
    /// When it last started or resumed running.
    pub last_running_at: Option<String>,
}

impl SpriteRow {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        let state: String = r.get("state")?;
        let labels: String = r.get("labels")?;
        Ok(SpriteRow {
            id: r.get("id")?,
            org_id: r.get("org_id")?,
            name: r.get("name")?,
            // The CHECK constraint keeps other values out; `Ready` is only a safe reading.
            state: SpriteState::parse(&state).unwrap_or(SpriteState::Ready),
            url_auth: r.get("url_auth")?,
            private_access: r.get("private_access")?,
            labels: serde_json::from_str(&labels).unwrap_or_default(),
            created_at: r.get("created_at")?,
            updated_at: r.get("updated_at")?,
            last_started_at: r.get("last_started_at")?,
            last_active_at: r.get("last_active_at")?,
            last_warming_at: r.get("last_warming_at")?,
            last_running_at: r.get("last_running_at")?,
        })
    }
}

/// One page of `GET /v1/sprites`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    pub rows: Vec<SpriteRow>,
    pub has_more: bool,
}

fn labels_json(labels: &[String]) -> String {
    serde_json::to_string(labels).unwrap_or_else(|_| "[]".into())
}

/// UNIQUE(org_id, name) failed; other constraint failures (CHECK, foreign keys) are bugs.
fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.code == ErrorCode::ConstraintViolation
            && f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE)
}

impl Store {
    /// Inserts a new sprite; [`StoreError::NameTaken`] when the org already has that name.
    pub fn insert_sprite(&self, row: &SpriteRow) -> Result<(), StoreError> {
        let res = self.conn().execute(
            "INSERT INTO sprites (id, org_id, name, state, url_auth, private_access, labels,
                                  created_at, updated_at, last_started_at, last_active_at,
                                  last_warming_at, last_running_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                row.id,
                row.org_id,
                row.name,
                row.state.as_str(),
                row.url_auth,
                row.private_access,
                labels_json(&row.labels),
                row.created_at,
                row.updated_at,
                row.last_started_at,
                row.last_active_at,
                row.last_warming_at,
                row.last_running_at
            ],
        );
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::NameTaken),
            Err(e) => Err(e.into()),
        }
    }

    /// A sprite visible through the API: one being destroyed is already gone.
    pub fn sprite_by_name(
        &self,
        org_id: &str,
        name: &str,
    ) -> Result<Option<SpriteRow>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT * FROM sprites WHERE org_id = ?1 AND name = ?2 AND state != 'destroying'",
                params![org_id, name],
                SpriteRow::from_row,
            )
            .optional()?)
    }

    pub fn sprite_by_id(&self, id: &str) -> Result<Option<SpriteRow>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT * FROM sprites WHERE id = ?1",
                [id],
                SpriteRow::from_row,
            )
            .optional()?)
    }

    /// Sprites of an org sorted by name: those starting with `prefix` and sorting after
    /// `after`, at most `limit` of them.
    pub fn list_sprites(
        &self,
        org_id: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT * FROM sprites
             WHERE org_id = ?1 AND state != 'destroying'
               AND substr(name, 1, length(?2)) = ?2
               AND (?3 IS NULL OR name > ?3)
             ORDER BY name LIMIT ?4",
        )?;
        // One extra row tells whether another page follows.
        let fetch = limit.saturating_add(1) as i64;
        let mut rows = stmt
            .query_map(params![org_id, prefix, after, fetch], SpriteRow::from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        let has_more = rows.len() > limit;
        rows.truncate(limit);
        Ok(ListPage { rows, has_more })
    }

    /// Ids of every visible sprite of an org (for the counts of a list page).
    pub fn org_sprite_ids(&self, org_id: &str) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id FROM sprites WHERE org_id = ?1 AND state != 'destroying' ORDER BY name",
        )?;
        let ids = stmt
            .query_map([org_id], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(ids)
    }

    /// Every sprite in `state`, all orgs (reconciliation).
    pub fn sprites_in_state(&self, state: SpriteState) -> Result<Vec<SpriteRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT * FROM sprites WHERE state = ?1")?;
        let rows = stmt
            .query_map([state.as_str()], SpriteRow::from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn update_sprite_settings(
        &self,
        id: &str,
        url_auth: &str,
        private_access: Option<&str>,
        labels: &[String],
        updated_at: &str,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE sprites SET url_auth = ?2, private_access = ?3, labels = ?4, updated_at = ?5
             WHERE id = ?1",
            params![
                id,
                url_auth,
                private_access,
                labels_json(labels),
                updated_at
            ],
        )?;
        Ok(())
    }

    pub fn set_sprite_state(
        &self,
        id: &str,
        state: SpriteState,
        updated_at: &str,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE sprites SET state = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, state.as_str(), updated_at],
        )?;
        Ok(())
    }

    /// A cold start: the sprite started, and so it runs.
    pub fn touch_started(&self, id: &str, at: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE sprites SET last_started_at = ?2, last_running_at = ?2 WHERE id = ?1",
            params![id, at],
        )?;
        Ok(())
    }

    /// A warm sprite resumed.
    pub fn touch_running(&self, id: &str, at: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE sprites SET last_running_at = ?2 WHERE id = ?1",
            params![id, at],
        )?;
        Ok(())
    }

    /// The sprite went warm (frozen).
    pub fn touch_warming(&self, id: &str, at: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE sprites SET last_warming_at = ?2 WHERE id = ?1",
            params![id, at],
        )?;
        Ok(())
    }

    pub fn touch_active(&self, id: &str, at: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE sprites SET last_active_at = ?2 WHERE id = ?1",
            params![id, at],
        )?;
        Ok(())
    }

    pub fn delete_sprite(&self, id: &str) -> Result<(), StoreError> {
        self.conn()
            .execute("DELETE FROM sprites WHERE id = ?1", [id])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Organization;

    fn store_with_org() -> Store {
        let s = Store::open_in_memory().unwrap();
        s.insert_org(&Organization {
            id: "o1".into(),
            slug: "default".into(),
            name: "default".into(),
            created_at: "t".into(),
        })
        .unwrap();
        s
    }

    fn row(name: &str) -> SpriteRow {
        SpriteRow {
            id: format!("sprite-{name}"),
            org_id: "o1".into(),
            name: name.into(),
            state: SpriteState::Ready,
            url_auth: "sprite".into(),
            private_access: None,
            labels: vec!["a".into()],
            created_at: "t".into(),
            updated_at: "t".into(),
            last_started_at: None,
            last_active_at: None,
            last_warming_at: None,
            last_running_at: None,
        }
    }

    #[test]
    fn insert_get_conflict() {
        let s = store_with_org();
        s.insert_sprite(&row("alpha")).unwrap();
        let got = s.sprite_by_name("o1", "alpha").unwrap().unwrap();
        assert_eq!(got, row("alpha"));
        let mut dup = row("alpha");
        dup.id = "sprite-other".into();
        assert!(matches!(s.insert_sprite(&dup), Err(StoreError::NameTaken)));
    }

    #[test]
    fn destroying_rows_are_hidden() {
        let s = store_with_org();
        s.insert_sprite(&row("gone")).unwrap();
        s.set_sprite_state("sprite-gone", SpriteState::Destroying, "t2")
            .unwrap();
        assert!(s.sprite_by_name("o1", "gone").unwrap().is_none());
        assert!(s.list_sprites("o1", "", None, 50).unwrap().rows.is_empty());
        assert_eq!(
            s.sprites_in_state(SpriteState::Destroying).unwrap().len(),
            1
        );
        s.delete_sprite("sprite-gone").unwrap();
        assert!(s.sprite_by_id("sprite-gone").unwrap().is_none());
    }

    #[test]
    fn list_pages_by_name_and_prefix() {
        let s = store_with_org();
        for n in ["b1", "a2", "a1", "c", "a3"] {
            s.insert_sprite(&row(n)).unwrap();
        }
        let p = s.list_sprites("o1", "a", None, 2).unwrap();
        let names: Vec<_> = p.rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a1", "a2"]);
        assert!(p.has_more);
        let p = s.list_sprites("o1", "a", Some("a2"), 2).unwrap();
        let names: Vec<_> = p.rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a3"]);
        assert!(!p.has_more);
        // A prefix with LIKE metacharacters is matched literally.
        assert!(s.list_sprites("o1", "%", None, 50).unwrap().rows.is_empty());
        assert_eq!(s.list_sprites("o1", "", None, 50).unwrap().rows.len(), 5);
        assert_eq!(s.org_sprite_ids("o1").unwrap().len(), 5);
    }

    #[test]
    fn settings_and_timestamps() {
        let s = store_with_org();
        s.insert_sprite(&row("x")).unwrap();
        s.update_sprite_settings("sprite-x", "public", Some("admins"), &[], "t3")
            .unwrap();
        s.touch_started("sprite-x", "t4").unwrap();
        s.touch_active("sprite-x", "t5").unwrap();
        let r = s.sprite_by_id("sprite-x").unwrap().unwrap();
        assert_eq!(r.url_auth, "public");
        assert_eq!(r.private_access.as_deref(), Some("admins"));
        assert!(r.labels.is_empty());
        assert_eq!(r.updated_at, "t3");
        assert_eq!(r.last_started_at.as_deref(), Some("t4"));
        assert_eq!(r.last_active_at.as_deref(), Some("t5"));
        assert_eq!(r.last_running_at.as_deref(), Some("t4"));
        s.touch_warming("sprite-x", "t6").unwrap();
        s.touch_running("sprite-x", "t7").unwrap();
        let r = s.sprite_by_id("sprite-x").unwrap().unwrap();
        assert_eq!(r.last_warming_at.as_deref(), Some("t6"));
        assert_eq!(r.last_running_at.as_deref(), Some("t7"));
        assert_eq!(r.last_started_at.as_deref(), Some("t4"));
    }
}

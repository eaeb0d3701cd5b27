//! Service definitions of each sprite (§3.8). The keeper supervises the processes; this is
//! what it is told after every start of the sprite, so definitions and sticky stops survive
//! cold sleeps, restores and wispd restarts.

use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension, Row};

use super::{Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRow {
    pub sprite_id: String,
    pub name: String,
    pub cmd: String,
    pub args: Vec<String>,
    pub needs: Vec<String>,
    pub http_port: Option<u32>,
    pub env: BTreeMap<String, String>,
    pub dir: Option<String>,
    /// Stopped on request: not started until started again.
    pub stopped: bool,
    pub created_at: String,
    pub updated_at: String,
}

fn json_column<T: serde::de::DeserializeOwned + Default>(
    r: &Row<'_>,
    col: &str,
) -> rusqlite::Result<T> {
    let text: String = r.get(col)?;
    // Written by us as JSON; a damaged value reads as empty rather than hiding the service.
    Ok(serde_json::from_str(&text).unwrap_or_default())
}

impl ServiceRow {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(ServiceRow {
            sprite_id: r.get("sprite_id")?,
            name: r.get("name")?,
            cmd: r.get("cmd")?,
            args: json_column(r, "args")?,
            needs: json_column(r, "needs")?,
            http_port: r.get("http_port")?,
            env: json_column(r, "env")?,
            dir: r.get("dir")?,
            stopped: r.get("stopped")?,
            created_at: r.get("created_at")?,
            updated_at: r.get("updated_at")?,
        })
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

impl Store {
    /// Every service of a sprite, by name.
    pub fn services(&self, sprite_id: &str) -> Result<Vec<ServiceRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT * FROM services WHERE sprite_id = ?1 ORDER BY name")?;
        let rows = stmt
            .query_map(params![sprite_id], ServiceRow::from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn service(&self, sprite_id: &str, name: &str) -> Result<Option<ServiceRow>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT * FROM services WHERE sprite_id = ?1 AND name = ?2",
                params![sprite_id, name],
                ServiceRow::from_row,
            )
            .optional()?)
    }

    /// Creates the service or replaces its definition (its `created_at` is kept).
    pub fn upsert_service(&self, row: &ServiceRow) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO services (sprite_id, name, cmd, args, needs, http_port, env, dir,
                                   stopped, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT (sprite_id, name) DO UPDATE SET
                 cmd = excluded.cmd, args = excluded.args, needs = excluded.needs,
                 http_port = excluded.http_port, env = excluded.env, dir = excluded.dir,
                 stopped = excluded.stopped, updated_at = excluded.updated_at",
            params![
                row.sprite_id,
                row.name,
                row.cmd,
                to_json(&row.args),
                to_json(&row.needs),
                row.http_port,
                to_json(&row.env),
                row.dir,
                row.stopped,
                row.created_at,
                row.updated_at
            ],
        )?;
        Ok(())
    }

    /// Sets the sticky stop; `false` when there is no such service.
    pub fn set_service_stopped(
        &self,
        sprite_id: &str,
        name: &str,
        stopped: bool,
        now: &str,
    ) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "UPDATE services SET stopped = ?3, updated_at = ?4 WHERE sprite_id = ?1 AND name = ?2",
            params![sprite_id, name, stopped, now],
        )?;
        Ok(n > 0)
    }

    /// `false` when there was no such service.
    pub fn delete_service(&self, sprite_id: &str, name: &str) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "DELETE FROM services WHERE sprite_id = ?1 AND name = ?2",
            params![sprite_id, name],
        )?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Organization, SpriteRow, SpriteState};

    fn store_with_sprite() -> Store {
        let s = Store::open_in_memory().unwrap();
        s.insert_org(&Organization {
            id: "o1".into(),
            slug: "o".into(),
            name: "o".into(),
            created_at: "t".into(),
        })
        .unwrap();
        s.insert_sprite(&SpriteRow {
            id: "sprite-1".into(),
            org_id: "o1".into(),
            name: "a".into(),
            state: SpriteState::Ready,
            url_auth: "sprite".into(),
            private_access: None,
            labels: vec![],
            created_at: "t".into(),
            updated_at: "t".into(),
            last_started_at: None,
            last_active_at: None,
            last_warming_at: None,
            last_running_at: None,
        })
        .unwrap();
        s
    }

    fn row(name: &str, port: Option<u32>) -> ServiceRow {
        ServiceRow {
            sprite_id: "sprite-1".into(),
            name: name.into(),
            cmd: "sleep".into(),
            args: vec!["100".into()],
            needs: vec![],
            http_port: port,
            env: [("A".to_string(), "b".to_string())].into(),
            dir: None,
            stopped: false,
            created_at: "t1".into(),
            updated_at: "t1".into(),
        }
    }

    #[test]
    fn crud_and_cascade() {
        let s = store_with_sprite();
        s.upsert_service(&row("web", Some(8080))).unwrap();
        s.upsert_service(&row("db", None)).unwrap();
        let all = s.services("sprite-1").unwrap();
        assert_eq!(
            all.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["db", "web"]
        );
        assert_eq!(all[1], row("web", Some(8080)));
        // Update keeps created_at.
        let mut w = row("web", Some(8081));
        w.created_at = "t2".into();
        w.updated_at = "t2".into();
        w.needs = vec!["db".into()];
        s.upsert_service(&w).unwrap();
        let got = s.service("sprite-1", "web").unwrap().unwrap();
        assert_eq!((got.created_at.as_str(), got.http_port), ("t1", Some(8081)));
        assert_eq!(got.needs, ["db"]);
        // One http_port per sprite, enforced by the schema too.
        assert!(s.upsert_service(&row("other", Some(9000))).is_err());
        assert!(s.set_service_stopped("sprite-1", "db", true, "t3").unwrap());
        assert!(s.service("sprite-1", "db").unwrap().unwrap().stopped);
        assert!(!s
            .set_service_stopped("sprite-1", "nope", true, "t3")
            .unwrap());
        assert!(s.delete_service("sprite-1", "db").unwrap());
        assert!(!s.delete_service("sprite-1", "db").unwrap());
        // Deleting the sprite deletes its services.
        s.delete_sprite("sprite-1").unwrap();
        assert!(s.services("sprite-1").unwrap().is_empty());
    }
}

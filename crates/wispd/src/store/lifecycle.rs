//! Per-sprite idle timeouts (a Wisp extension): `NULL` means the daemon's setting.

use std::collections::HashMap;

use rusqlite::params;
use wisp_api::sprite::TimeoutSetting;

use super::{Store, StoreError};

/// A sprite's own (idle → warm, warm → cold) timeouts in milliseconds.
pub type Timeouts = (Option<u64>, Option<u64>);

fn column(v: Option<i64>) -> Option<u64> {
    v.map(|ms| ms.max(0) as u64)
}

impl Store {
    pub fn sprite_timeouts(&self, sprite_id: &str) -> Result<Timeouts, StoreError> {
        Ok(self.conn().query_row(
            "SELECT idle_timeout_ms, cold_timeout_ms FROM sprites WHERE id = ?1",
            params![sprite_id],
            |r| Ok((column(r.get(0)?), column(r.get(1)?))),
        )?)
    }

    /// Every sprite that has a timeout of its own.
    pub fn all_sprite_timeouts(&self) -> Result<HashMap<String, Timeouts>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, idle_timeout_ms, cold_timeout_ms FROM sprites
             WHERE idle_timeout_ms IS NOT NULL OR cold_timeout_ms IS NOT NULL",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    (column(r.get(1)?), column(r.get(2)?)),
                ))
            })?
            .collect::<Result<HashMap<_, _>, _>>()?;
        Ok(rows)
    }

    pub fn set_sprite_timeouts(
        &self,
        sprite_id: &str,
        idle: TimeoutSetting,
        cold: TimeoutSetting,
    ) -> Result<(), StoreError> {
        let conn = self.conn();
        for (col, setting) in [("idle_timeout_ms", idle), ("cold_timeout_ms", cold)] {
            let value: Option<i64> = match setting {
                TimeoutSetting::Keep => continue,
                TimeoutSetting::Default => None,
                TimeoutSetting::Millis(ms) => Some(ms.min(i64::MAX as u64) as i64),
            };
            // `col` is one of two constants above, never input.
            conn.execute(
                &format!("UPDATE sprites SET {col} = ?2 WHERE id = ?1"),
                params![sprite_id, value],
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_keep_and_reset() {
        let s = Store::open_in_memory().unwrap();
        s.conn()
            .execute_batch(
                "INSERT INTO organizations VALUES ('o', 'o', 'o', 't');
                 INSERT INTO sprites (id, org_id, name, state, created_at, updated_at)
                 VALUES ('s', 'o', 'n', 'ready', 't', 't');",
            )
            .unwrap();
        assert_eq!(s.sprite_timeouts("s").unwrap(), (None, None));
        s.set_sprite_timeouts("s", TimeoutSetting::Millis(5000), TimeoutSetting::Keep)
            .unwrap();
        s.set_sprite_timeouts("s", TimeoutSetting::Keep, TimeoutSetting::Millis(0))
            .unwrap();
        assert_eq!(s.sprite_timeouts("s").unwrap(), (Some(5000), Some(0)));
        assert_eq!(s.all_sprite_timeouts().unwrap().len(), 1);
        s.set_sprite_timeouts("s", TimeoutSetting::Default, TimeoutSetting::Default)
            .unwrap();
        assert_eq!(s.sprite_timeouts("s").unwrap(), (None, None));
        assert!(s.all_sprite_timeouts().unwrap().is_empty());
    }
}

//! How many of an org's sprites are running, warm and cold, for the `org` block of every
//! `GET /v1/sprites` page. Counting asks every sprite's keeper, so a client paging through
//! 1,000 sprites would ask each of them once per page (quadratic); a count is reused for
//! [`TTL`] instead. Sprite states change on the scale of seconds (idle timers are minutes),
//! so a count at most a second old says the same.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use wisp_api::sprite::SpriteStatus;

use super::SpriteManager;

/// How long a count is reused.
pub const TTL: Duration = Duration::from_secs(1);

/// Running, warm and cold sprites.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusCounts {
    pub running: u64,
    pub warm: u64,
    pub cold: u64,
}

impl StatusCounts {
    fn of<'a>(statuses: impl Iterator<Item = &'a SpriteStatus>) -> Self {
        let mut c = StatusCounts::default();
        for s in statuses {
            match s {
                SpriteStatus::Running => c.running += 1,
                SpriteStatus::Warm => c.warm += 1,
                SpriteStatus::Cold => c.cold += 1,
            }
        }
        c
    }
}

/// Recent counts by key (an org id), with the sprite ids they were counted over: a create
/// or destroy changes the ids and so misses the cache.
#[derive(Debug, Default)]
pub struct CountCache {
    entries: Mutex<HashMap<String, Entry>>,
}

#[derive(Debug)]
struct Entry {
    at: Instant,
    ids: Vec<String>,
    counts: StatusCounts,
}

impl SpriteManager {
    /// The counts of `ids` (all of one org), reused under `key` for [`TTL`]. `key: None`
    /// always counts afresh (a restricted token's view of its org).
    pub async fn status_counts(&self, key: Option<&str>, ids: &[String]) -> StatusCounts {
        if let Some(key) = key {
            let cached = self.counts.entries.lock().ok().and_then(|m| {
                m.get(key)
                    .filter(|e| e.at.elapsed() < TTL && e.ids.as_slice() == ids)
                    .map(|e| e.counts)
            });
            if let Some(c) = cached {
                return c;
            }
        }
        let statuses = self.statuses(ids).await;
        let counts = StatusCounts::of(statuses.values());
        if let (Some(key), Ok(mut m)) = (key, self.counts.entries.lock()) {
            // Entries of orgs nobody lists any more would pile up: drop the stale ones.
            m.retain(|_, e| e.at.elapsed() < TTL);
            let entry = Entry {
                at: Instant::now(),
                ids: ids.to_vec(),
                counts,
            };
            m.insert(key.to_string(), entry);
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_each_status() {
        let s = [
            SpriteStatus::Running,
            SpriteStatus::Cold,
            SpriteStatus::Warm,
            SpriteStatus::Cold,
        ];
        assert_eq!(
            StatusCounts::of(s.iter()),
            StatusCounts {
                running: 1,
                warm: 1,
                cold: 2
            }
        );
    }
}

//! Activity per sprite and the idle timer that puts idle sprites to sleep.
//!
//! Kept in wispd's memory only: after a restart every sprite starts with a fresh idle period.
//! A sprite is *active* while an operation that needs it running is in flight (an exec or
//! attach connection, an HTTP exec response, a kill) or while its last activity (the start or
//! end of such an operation, or output forwarded to a client) is younger than the idle
//! timeout. Detached sessions do not count, silent or not (Sprites API §6.1: "detached
//! sessions don't keep it awake").
//!
//! No race with wakes: an operation counts itself in flight *before* it calls
//! `SpriteManager::wake`, and the idle timer re-checks the count under the sprite's manager
//! lock (`SpriteManager::sleep_if_idle`), so an operation that began after the timer looked is
//! either seen (no sleep) or waits for the lock and wakes the sprite again.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::manager::SpriteManager;
use crate::runtime::SpriteState as RunState;
use crate::store::SpriteState;

/// Output frames update the last activity at most this often.
const TOUCH_THROTTLE_MS: u64 = 100;
/// How often the idle timer looks at every sprite.
const TICK: Duration = Duration::from_millis(250);

#[derive(Debug, Default)]
struct Entry {
    in_flight: AtomicUsize,
    /// Milliseconds since [`Activity::epoch`].
    last_ms: AtomicU64,
    /// When the idle timer first saw the sprite warm (cleared when it sees it running).
    warm_since: Mutex<Option<Instant>>,
}

impl Entry {
    fn touch(&self, now_ms: u64) {
        self.last_ms.fetch_max(now_ms, Ordering::Relaxed);
    }
}

/// In-flight counts and last-activity instants of every sprite.
#[derive(Debug)]
pub struct Activity {
    epoch: Instant,
    entries: Mutex<HashMap<String, Arc<Entry>>>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            epoch: Instant::now(),
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl Activity {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn entry(&self, id: &str) -> Arc<Entry> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = entries.get(id) {
            return e.clone();
        }
        let e = Arc::new(Entry::default());
        e.touch(self.now_ms());
        entries.insert(id.to_string(), e.clone());
        e
    }

    /// Counts an operation on the sprite in flight until the guard drops. Call it *before*
    /// waking the sprite.
    pub fn begin(&self, id: &str) -> ActivityGuard {
        let entry = self.entry(id);
        entry.in_flight.fetch_add(1, Ordering::SeqCst);
        entry.touch(self.now_ms());
        ActivityGuard {
            entry,
            epoch: self.epoch,
        }
    }

    /// Records activity without an operation in flight (a create, say).
    pub fn touch(&self, id: &str) {
        self.entry(id).touch(self.now_ms());
    }

    pub fn in_flight(&self, id: &str) -> usize {
        self.entry(id).in_flight.load(Ordering::SeqCst)
    }

    /// How long the sprite has had nothing in flight and no activity; zero while something
    /// is in flight.
    pub fn idle_for(&self, id: &str) -> Duration {
        let e = self.entry(id);
        if e.in_flight.load(Ordering::SeqCst) > 0 {
            return Duration::ZERO;
        }
        let last = e.last_ms.load(Ordering::Relaxed);
        Duration::from_millis(self.now_ms().saturating_sub(last))
    }

    /// How long the sprite has been warm as the idle timer saw it; `warm == false` forgets.
    fn warm_for(&self, id: &str, warm: bool) -> Duration {
        let e = self.entry(id);
        let mut since = e.warm_since.lock().unwrap_or_else(|e| e.into_inner());
        if !warm {
            *since = None;
            return Duration::ZERO;
        }
        since.get_or_insert_with(Instant::now).elapsed()
    }

    /// Drops the entries of sprites that no longer exist.
    fn retain(&self, ids: &HashSet<&str>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|id, _| ids.contains(id.as_str()));
    }
}

/// One operation in flight; dropping it ends the operation (and counts as activity).
#[derive(Debug)]
pub struct ActivityGuard {
    entry: Arc<Entry>,
    epoch: Instant,
}

impl ActivityGuard {
    /// Records activity (output forwarded to a client), at most once per 100 ms.
    pub fn touch(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        if now.saturating_sub(self.entry.last_ms.load(Ordering::Relaxed)) >= TOUCH_THROTTLE_MS {
            self.entry.touch(now);
        }
    }
}

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        self.entry.touch(self.epoch.elapsed().as_millis() as u64);
        self.entry.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Idle timer settings; a zero duration disables that step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdlePolicy {
    /// Running and idle this long → warm.
    pub idle_timeout: Duration,
    /// Warm this long (and still idle) → cold.
    pub cold_timeout: Duration,
}

impl IdlePolicy {
    pub fn enabled(&self) -> bool {
        !self.idle_timeout.is_zero() || !self.cold_timeout.is_zero()
    }
}

/// The idle timer: runs for ever, every [`TICK`].
pub async fn run_idle_timer(manager: Arc<SpriteManager>, policy: IdlePolicy) {
    if !policy.enabled() {
        return;
    }
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let rows = match manager.store().sprites_in_state(SpriteState::Ready) {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!("idle timer: {e}");
                continue;
            }
        };
        let activity = manager.activity().clone();
        activity.retain(&rows.iter().map(|r| r.id.as_str()).collect());
        let checks = rows.iter().map(|row| {
            let manager = manager.clone();
            let activity = activity.clone();
            async move {
                let state = match manager.runtime().state(&row.id).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!(sprite_id = %row.id, "idle timer: {e}");
                        return;
                    }
                };
                let result = match state {
                    RunState::Cold => return,
                    RunState::Running => {
                        activity.warm_for(&row.id, false);
                        let limit = policy.idle_timeout;
                        if limit.is_zero() || activity.idle_for(&row.id) < limit {
                            return;
                        }
                        let (a, id) = (activity.clone(), row.id.clone());
                        manager
                            .sleep_if_idle(row, false, move || a.idle_for(&id) >= limit)
                            .await
                    }
                    RunState::Warm => {
                        let limit = policy.cold_timeout;
                        if limit.is_zero() || activity.warm_for(&row.id, true) < limit {
                            return;
                        }
                        let (a, id) = (activity.clone(), row.id.clone());
                        manager
                            .sleep_if_idle(row, true, move || a.in_flight(&id) == 0)
                            .await
                    }
                };
                if let Err(e) = result {
                    tracing::warn!(sprite_id = %row.id, "idle timer: {e}");
                }
            }
        });
        futures_util::future::join_all(checks).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_and_idle() {
        let a = Activity::default();
        assert_eq!(a.in_flight("s"), 0);
        let g1 = a.begin("s");
        let g2 = a.begin("s");
        assert_eq!(a.in_flight("s"), 2);
        assert_eq!(a.idle_for("s"), Duration::ZERO);
        g1.touch();
        drop(g1);
        assert_eq!(a.in_flight("s"), 1);
        drop(g2);
        assert_eq!(a.in_flight("s"), 0);
        std::thread::sleep(Duration::from_millis(30));
        assert!(a.idle_for("s") >= Duration::from_millis(30));
        a.touch("s");
        assert!(a.idle_for("s") < Duration::from_millis(30));
        assert_eq!(a.warm_for("s", false), Duration::ZERO);
        a.warm_for("s", true);
        std::thread::sleep(Duration::from_millis(10));
        assert!(a.warm_for("s", true) >= Duration::from_millis(10));
        assert_eq!(a.warm_for("s", false), Duration::ZERO);
        a.retain(&HashSet::new());
        assert!(a.entries.lock().unwrap().is_empty());
    }
}

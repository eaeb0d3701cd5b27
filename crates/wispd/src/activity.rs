//! Activity per sprite and the idle timer that puts idle sprites to sleep.
//!
//! Kept in wispd's memory only: after a restart every sprite starts with a fresh idle period.
//! A sprite is *active* while an operation that needs it running is in flight (an exec or
//! attach connection, an HTTP exec response, a kill), while a keep-awake task of the in-sprite
//! API is live, or while its last activity (the start or end of such an operation,
//! output forwarded to a client, or output of any of its sessions, attached or not) is younger
//! than the idle timeout. A detached session that stays silent does not keep it awake
//! (Sprites API §6.1).
//!
//! Memory pressure: with a budget set, when the memory of all running and warm sprites together
//! exceeds it, the least recently active sprites with nothing in flight go cold until the rest
//! fits (warm ones first).
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
/// The memory budget is checked every this many ticks.
const MEMORY_EVERY: u64 = 8;

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

    /// Records output that a session produced `age` ago.
    fn touch_ago(&self, id: &str, age: Duration) {
        let at = self.now_ms().saturating_sub(age.as_millis() as u64);
        self.entry(id).touch(at);
    }

    /// How long the sprite has had nothing in flight, no live task and no activity; zero
    /// while something is in flight or a task is live.
    pub fn idle_for(&self, id: &str) -> Duration {
        let e = self.entry(id);
        if e.in_flight.load(Ordering::SeqCst) > 0 || crate::insprite::has_live_task(id) {
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
    /// Memory all running and warm sprites may use together; beyond it, LRU eviction.
    pub memory_budget: Option<u64>,
}

/// Newest output of any session of the sprite, as an age; `None` if none ever wrote.
async fn last_session_output(manager: &SpriteManager, id: &str) -> Option<Duration> {
    let sessions = manager.runtime().list_sessions(id).await.ok()?;
    let newest = sessions.iter().filter_map(|s| s.last_output_ms).max()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_millis() as i64;
    Some(Duration::from_millis(
        now.saturating_sub(newest).max(0) as u64
    ))
}

/// Which sprites to stop so that `total` fits `budget`: least recently active first, warm
/// before running. `usage` is (id, bytes, warm, idle for).
fn eviction_order(
    mut usage: Vec<(String, u64, bool, Duration)>,
    total: u64,
    budget: u64,
) -> Vec<String> {
    usage.sort_by(|a, b| b.2.cmp(&a.2).then(b.3.cmp(&a.3)));
    let mut over = total.saturating_sub(budget);
    let mut out = Vec::new();
    for (id, bytes, _, _) in usage {
        if over == 0 {
            break;
        }
        over = over.saturating_sub(bytes);
        out.push(id);
    }
    out
}

/// One memory check: evicts idle sprites (cold) while the total is over the budget.
async fn enforce_memory_budget(
    manager: &Arc<SpriteManager>,
    rows: &[crate::store::SpriteRow],
    states: &HashMap<String, RunState>,
    budget: u64,
) {
    let Ok(layout) = tokio::task::spawn_blocking(wisp_runtime::cgroup::Layout::detect).await else {
        return;
    };
    let Ok(layout) = layout else { return };
    let activity = manager.activity();
    let mut total = 0u64;
    let mut candidates = Vec::new();
    for row in rows {
        let Some(state) = states.get(&row.id) else {
            continue;
        };
        if *state == RunState::Cold {
            continue;
        }
        let bytes =
            wisp_runtime::cgroup::sprite_memory_bytes(&layout, "wisp", &row.id).unwrap_or(0);
        total += bytes;
        if activity.in_flight(&row.id) == 0 {
            let warm = *state == RunState::Warm;
            candidates.push((row.id.clone(), bytes, warm, activity.idle_for(&row.id)));
        }
    }
    if total <= budget {
        return;
    }
    for id in eviction_order(candidates, total, budget) {
        let Some(row) = rows.iter().find(|r| r.id == id) else {
            continue;
        };
        let a = activity.clone();
        let idle_id = id.clone();
        tracing::info!(sprite_id = %id, total, budget, "memory budget exceeded: evicting (cold)");
        if let Err(e) = manager.evict(row, move || a.in_flight(&idle_id) == 0).await {
            tracing::warn!(sprite_id = %id, "eviction: {e}");
        }
    }
}

/// The idle timer: runs for ever, every [`TICK`]. Sprites with timeouts of their own use them
/// instead of the daemon's (so it runs even when the daemon's are off).
pub async fn run_idle_timer(manager: Arc<SpriteManager>, policy: IdlePolicy) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        n += 1;
        let rows = match manager.store().sprites_in_state(SpriteState::Ready) {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!("idle timer: {e}");
                continue;
            }
        };
        let activity = manager.activity().clone();
        activity.retain(&rows.iter().map(|r| r.id.as_str()).collect());
        let own = manager.store().all_sprite_timeouts().unwrap_or_default();
        let checks = rows.iter().map(|row| {
            let manager = manager.clone();
            let activity = activity.clone();
            let (idle_ms, cold_ms) = own.get(&row.id).copied().unwrap_or_default();
            let policy = IdlePolicy {
                idle_timeout: idle_ms
                    .map(Duration::from_millis)
                    .unwrap_or(policy.idle_timeout),
                cold_timeout: cold_ms
                    .map(Duration::from_millis)
                    .unwrap_or(policy.cold_timeout),
                ..policy
            };
            async move {
                let state = match manager.runtime().state(&row.id).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!(sprite_id = %row.id, "idle timer: {e}");
                        return None;
                    }
                };
                let result = match state {
                    RunState::Cold => return Some((row.id.clone(), state)),
                    RunState::Running => {
                        activity.warm_for(&row.id, false);
                        let limit = policy.idle_timeout;
                        if limit.is_zero() || activity.idle_for(&row.id) < limit {
                            return Some((row.id.clone(), state));
                        }
                        // A session that still writes (attached or not) is activity.
                        if let Some(age) = last_session_output(&manager, &row.id).await {
                            if age < limit {
                                activity.touch_ago(&row.id, age);
                                return Some((row.id.clone(), state));
                            }
                        }
                        let (a, id) = (activity.clone(), row.id.clone());
                        manager
                            .sleep_if_idle(row, false, move || a.idle_for(&id) >= limit)
                            .await
                    }
                    RunState::Warm => {
                        let limit = policy.cold_timeout;
                        if limit.is_zero() || activity.warm_for(&row.id, true) < limit {
                            return Some((row.id.clone(), state));
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
                None
            }
        });
        let states: HashMap<String, RunState> = futures_util::future::join_all(checks)
            .await
            .into_iter()
            .flatten()
            .collect();
        if let Some(budget) = policy.memory_budget {
            if n.is_multiple_of(MEMORY_EVERY) {
                enforce_memory_budget(&manager, &rows, &states, budget).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviction_is_lru_warm_first_and_stops_when_it_fits() {
        let s = |id: &str, mb: u64, warm: bool, idle_s: u64| {
            (id.to_string(), mb << 20, warm, Duration::from_secs(idle_s))
        };
        let usage = vec![
            s("run-old", 100, false, 500),
            s("warm-new", 100, true, 10),
            s("warm-old", 100, true, 100),
            s("run-new", 100, false, 1),
        ];
        // 150 MiB over: the two warm ones, oldest first.
        assert_eq!(
            eviction_order(usage.clone(), 550 << 20, 400 << 20),
            ["warm-old", "warm-new"]
        );
        // Further over: then the least recently active running one.
        assert_eq!(
            eviction_order(usage.clone(), 700 << 20, 400 << 20),
            ["warm-old", "warm-new", "run-old"]
        );
        assert!(eviction_order(usage, 300 << 20, 400 << 20).is_empty());
    }

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

//! Reaping orphans. wispd is a child subreaper, so when a keeper dies its orphaned children
//! (a sprite's init, say) are re-parented to wispd and must be waited for here, or they stay
//! zombies forever.
//!
//! tokio reaps the children it started itself (keepers, the image builder's tools), and a
//! blanket `waitpid(-1)` would steal their exit statuses. So only zombies that are not known
//! keepers *and* are still zombies a couple of seconds after they were first seen are reaped:
//! by then tokio would long have collected anything it owns.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};

/// Pids of children that tokio waits for (keepers).
#[derive(Debug, Default)]
pub struct KnownChildren {
    pids: Mutex<HashSet<u32>>,
}

impl KnownChildren {
    pub fn insert(&self, pid: u32) {
        self.lock().insert(pid);
    }

    pub fn remove(&self, pid: u32) {
        self.lock().remove(&pid);
    }

    pub fn contains(&self, pid: u32) -> bool {
        self.lock().contains(&pid)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<u32>> {
        self.pids.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How long a zombie must stay unclaimed before it counts as an orphan.
const GRACE: Duration = Duration::from_secs(2);
const RESCAN: Duration = Duration::from_secs(30);

/// Runs forever: on SIGCHLD (and every 30 s), reaps orphaned zombies.
pub async fn run(known: std::sync::Arc<KnownChildren>) {
    let mut sigchld = match signal(SignalKind::child()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot watch SIGCHLD, orphans will not be reaped: {e}");
            return;
        }
    };
    // Zombies not (yet) claimed by anyone, with when they were first seen.
    let mut seen: HashMap<u32, Instant> = HashMap::new();
    loop {
        let wait = if seen.is_empty() { RESCAN } else { GRACE };
        tokio::select! {
            _ = sigchld.recv() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        let Ok(zombies) = tokio::task::spawn_blocking(zombie_children).await else {
            continue;
        };
        let now = Instant::now();
        let mut next = HashMap::new();
        for pid in zombies.into_iter().filter(|p| !known.contains(*p)) {
            let first = seen.get(&pid).copied().unwrap_or(now);
            if now.duration_since(first) < GRACE {
                next.insert(pid, first);
                continue;
            }
            let Ok(raw) = i32::try_from(pid) else {
                continue;
            };
            match waitpid(Pid::from_raw(raw), Some(WaitPidFlag::WNOHANG)) {
                Ok(status) => tracing::debug!(pid, ?status, "reaped an orphan"),
                Err(e) => tracing::debug!(pid, "reaping an orphan: {e}"),
            }
        }
        seen = next;
    }
}

/// Pids of this process's children that are zombies, from `/proc/<pid>/stat`.
fn zombie_children() -> Vec<u32> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| parse_stat(&s))
                .is_some_and(|(state, ppid)| state == 'Z' && ppid == me)
        })
        .collect()
}

/// `(state, ppid)` from a `/proc/<pid>/stat` line. The command name may contain spaces and
/// parentheses, so fields are counted from the *last* `)`.
fn parse_stat(stat: &str) -> Option<(char, u32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing() {
        assert_eq!(parse_stat("123 (a) b) c) Z 77 123 0 0"), Some(('Z', 77)));
        assert_eq!(parse_stat("1 (init) S 0 1 1"), Some(('S', 0)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn known_children() {
        let k = KnownChildren::default();
        k.insert(5);
        assert!(k.contains(5));
        k.remove(5);
        assert!(!k.contains(5));
    }
}

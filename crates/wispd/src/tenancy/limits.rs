//! Per-organization limits: how many sprites may be running (running or warm: not cold) at
//! once, and how many may be created per window. Daemon-wide defaults come from flags
//! (unlimited unless set); an organization may override each (`PUT /v1/organizations/{slug}`).
//!
//! Exceeding one is a 429 in the shape of the hosted API, which the SDKs parse
//! (`APIError.is_concurrent_limit_exceeded()` / `is_creation_rate_limited()` in Python):
//! `{"error": "concurrent_sprite_limit_exceeded" | "sprite_creation_rate_limited", "message",
//! "limit", "window_seconds", "current_count", "retry_after_seconds"}` plus `Retry-After` (and
//! `X-RateLimit-*` for the rate).
//!
//! The create windows live in memory only (a sliding log of recent creates per org): a
//! restart of wispd starts every window afresh.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

pub const CONCURRENT_LIMIT_EXCEEDED: &str = "concurrent_sprite_limit_exceeded";
pub const CREATION_RATE_LIMITED: &str = "sprite_creation_rate_limited";
/// Default window of the create rate.
pub const DEFAULT_CREATE_WINDOW: Duration = Duration::from_secs(60);
/// What a 429 for the running limit suggests waiting: idle sprites go warm and cold on their
/// own timers, not at a known instant.
pub const CONCURRENT_RETRY_AFTER_SECS: u64 = 30;

/// One limit as an organization stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Limit {
    /// The daemon's default.
    #[default]
    Default,
    Unlimited,
    Max(u64),
}

impl Limit {
    fn resolve(self, default: Option<u64>) -> Option<u64> {
        match self {
            Limit::Default => default,
            Limit::Unlimited => None,
            Limit::Max(n) => Some(n),
        }
    }
}

/// An organization's own settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OrgLimits {
    pub running: Limit,
    pub create_rate: Limit,
    /// `None`: the daemon's window.
    pub create_window_seconds: Option<u64>,
}

/// The daemon-wide defaults (`--org-running-limit`, `--org-create-rate-limit`,
/// `--org-create-rate-window`); `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultLimits {
    pub running: Option<u64>,
    pub create_rate: Option<u64>,
    pub create_window: Duration,
}

impl Default for DefaultLimits {
    fn default() -> Self {
        DefaultLimits {
            running: None,
            create_rate: None,
            create_window: DEFAULT_CREATE_WINDOW,
        }
    }
}

/// The limits in force for one organization; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Effective {
    pub running: Option<u64>,
    pub create_rate: Option<u64>,
    pub create_window_seconds: u64,
}

impl OrgLimits {
    pub fn effective(&self, d: &DefaultLimits) -> Effective {
        Effective {
            running: self.running.resolve(d.running),
            create_rate: self.create_rate.resolve(d.create_rate),
            create_window_seconds: self
                .create_window_seconds
                .unwrap_or(d.create_window.as_secs())
                .max(1),
        }
    }
}

/// A refusal for a limit: a 429 the SDKs recognise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitExceeded {
    pub code: &'static str,
    pub message: String,
    pub limit: u64,
    pub window_seconds: u64,
    pub current_count: u64,
    pub retry_after_seconds: u64,
    /// Unix seconds when the window frees a slot (rate only): `X-RateLimit-Reset`.
    pub reset_at: Option<u64>,
}

impl LimitExceeded {
    /// `current` sprites of the org are running or warm, `limit` allowed.
    pub fn concurrent(limit: u64, current: u64) -> Self {
        LimitExceeded {
            code: CONCURRENT_LIMIT_EXCEEDED,
            message: format!(
                "this organization may have at most {limit} sprites running or warm at once \
                 ({current} are); put one to sleep (cold) or destroy one, then retry"
            ),
            limit,
            window_seconds: 0,
            current_count: current,
            retry_after_seconds: CONCURRENT_RETRY_AFTER_SECS,
            reset_at: None,
        }
    }
}

impl IntoResponse for LimitExceeded {
    fn into_response(self) -> Response {
        let body = json!({
            "error": self.code,
            "message": self.message,
            "limit": self.limit,
            "window_seconds": self.window_seconds,
            "current_count": self.current_count,
            "retry_after_seconds": self.retry_after_seconds,
        });
        let mut res = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
        let h = res.headers_mut();
        h.insert("retry-after", HeaderValue::from(self.retry_after_seconds));
        if let Some(reset) = self.reset_at {
            h.insert("x-ratelimit-limit", HeaderValue::from(self.limit));
            h.insert("x-ratelimit-remaining", HeaderValue::from(0u64));
            h.insert("x-ratelimit-reset", HeaderValue::from(reset));
        }
        res
    }
}

/// A slot taken in an org's create window; give it back with [`Tenancy::release`] when the
/// create fails.
#[derive(Debug)]
#[must_use]
pub struct Reservation {
    org_id: String,
    id: u64,
}

/// The daemon's tenancy state: defaults, create windows, per-org create locks.
#[derive(Debug, Default)]
pub struct Tenancy {
    defaults: DefaultLimits,
    windows: Mutex<HashMap<String, VecDeque<(u64, Instant)>>>,
    next_id: Mutex<u64>,
    create_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Tenancy {
    pub fn new(defaults: DefaultLimits) -> Self {
        Tenancy {
            defaults,
            ..Tenancy::default()
        }
    }

    pub fn defaults(&self) -> &DefaultLimits {
        &self.defaults
    }

    /// Serialises the creates of one org while its running limit is checked and the sprite
    /// starts, so that two concurrent creates cannot both take the last slot.
    pub fn create_lock(&self, org_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.create_locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(org_id.to_string()).or_default().clone()
    }

    /// Takes a slot in the org's create window (at most `limit` per `window`), or says when
    /// one frees up.
    pub fn reserve_create(
        &self,
        org_id: &str,
        limit: u64,
        window: Duration,
        now: Instant,
    ) -> Result<Reservation, LimitExceeded> {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let log = windows.entry(org_id.to_string()).or_default();
        while log
            .front()
            .is_some_and(|(_, t)| now.saturating_duration_since(*t) >= window)
        {
            log.pop_front();
        }
        let current = log.len() as u64;
        if current >= limit {
            // The oldest entry leaves the window first (limit 0: nothing ever fits).
            let wait = log
                .front()
                .map(|(_, t)| window.saturating_sub(now.saturating_duration_since(*t)))
                .unwrap_or(window);
            let retry = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let retry = retry.max(1);
            let secs = window.as_secs().max(1);
            return Err(LimitExceeded {
                code: CREATION_RATE_LIMITED,
                message: format!(
                    "this organization may create at most {limit} sprites per {secs} s; retry \
                     in {retry} s"
                ),
                limit,
                window_seconds: secs,
                current_count: current,
                retry_after_seconds: retry,
                reset_at: Some(unix_now() + retry),
            });
        }
        let id = {
            let mut n = self.next_id.lock().unwrap_or_else(|e| e.into_inner());
            *n += 1;
            *n
        };
        log.push_back((id, now));
        Ok(Reservation {
            org_id: org_id.to_string(),
            id,
        })
    }

    /// Gives a slot back (its create failed).
    pub fn release(&self, r: Reservation) {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(log) = windows.get_mut(&r.org_id) {
            log.retain(|(id, _)| *id != r.id);
        }
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_limits() {
        let d = DefaultLimits {
            running: Some(5),
            create_rate: None,
            create_window: Duration::from_secs(60),
        };
        let e = OrgLimits::default().effective(&d);
        assert_eq!(
            e,
            Effective {
                running: Some(5),
                create_rate: None,
                create_window_seconds: 60
            }
        );
        let o = OrgLimits {
            running: Limit::Unlimited,
            create_rate: Limit::Max(2),
            create_window_seconds: Some(10),
        };
        let e = o.effective(&d);
        assert_eq!(
            (e.running, e.create_rate, e.create_window_seconds),
            (None, Some(2), 10)
        );
        assert_eq!(DefaultLimits::default().running, None);
    }

    #[test]
    fn create_window_slides_and_releases() {
        let t = Tenancy::new(DefaultLimits::default());
        let w = Duration::from_secs(10);
        let t0 = Instant::now();
        let r1 = t.reserve_create("o", 2, w, t0).unwrap();
        let _r2 = t
            .reserve_create("o", 2, w, t0 + Duration::from_secs(3))
            .unwrap();
        let e = t
            .reserve_create("o", 2, w, t0 + Duration::from_millis(4500))
            .unwrap_err();
        assert_eq!(e.code, CREATION_RATE_LIMITED);
        assert_eq!((e.limit, e.window_seconds, e.current_count), (2, 10, 2));
        // The first leaves at t0+10: 5.5 s later, rounded up.
        assert_eq!(e.retry_after_seconds, 6);
        // Other orgs have their own window.
        assert!(t.reserve_create("p", 2, w, t0).is_ok());
        // A failed create gives its slot back.
        t.release(r1);
        let r3 = t
            .reserve_create("o", 2, w, t0 + Duration::from_secs(5))
            .unwrap();
        assert!(t
            .reserve_create("o", 2, w, t0 + Duration::from_secs(6))
            .is_err());
        // Entries older than the window leave it.
        assert!(t
            .reserve_create("o", 2, w, t0 + Duration::from_secs(13))
            .is_ok());
        drop(r3);
        // Limit 0: nothing, ever.
        let e = t.reserve_create("z", 0, w, t0).unwrap_err();
        assert_eq!(e.retry_after_seconds, 10);
    }

    #[tokio::test]
    async fn response_shape() {
        let res = LimitExceeded::concurrent(3, 3).into_response();
        assert_eq!(res.status(), 429);
        assert_eq!(res.headers()["retry-after"], "30");
        let body = axum::body::to_bytes(res.into_body(), 1 << 16)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"], CONCURRENT_LIMIT_EXCEEDED);
        for k in [
            "message",
            "limit",
            "window_seconds",
            "current_count",
            "retry_after_seconds",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
        let t = Tenancy::default();
        let res = t
            .reserve_create("o", 0, Duration::from_secs(60), Instant::now())
            .unwrap_err()
            .into_response();
        assert_eq!(res.headers()["retry-after"], "60");
        assert_eq!(res.headers()["x-ratelimit-remaining"], "0");
    }
}

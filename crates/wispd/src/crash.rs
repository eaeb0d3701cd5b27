//! Crash injection for the crash-safety tests: `WISP_CRASH_AT=<point>` makes wispd kill itself
//! with SIGKILL when it reaches that named point of an operation, exactly as `kill -9` would.
//! Points are listed by `grep -rn 'crash::point' crates/wispd/src`; unset, this costs one
//! load of a cached value.

use std::sync::OnceLock;

static TARGET: OnceLock<Option<String>> = OnceLock::new();

pub fn point(name: &'static str) {
    let target = TARGET.get_or_init(|| std::env::var("WISP_CRASH_AT").ok());
    if target.as_deref() == Some(name) {
        tracing::warn!(point = name, "WISP_CRASH_AT: killing wispd");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

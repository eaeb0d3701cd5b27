//! Local terminal handling: raw mode that is always undone, and the terminal size.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

static RAW_ACTIVE: AtomicBool = AtomicBool::new(false);

/// Puts the local terminal in raw mode until dropped.
pub struct RawMode(());

impl RawMode {
    /// Enables raw mode when stdin is a terminal; `None` otherwise.
    pub fn enable() -> anyhow::Result<Option<RawMode>> {
        if !std::io::stdin().is_terminal() {
            return Ok(None);
        }
        crossterm::terminal::enable_raw_mode()
            .map_err(|e| anyhow::anyhow!("cannot put the terminal in raw mode: {e}"))?;
        RAW_ACTIVE.store(true, Ordering::SeqCst);
        Ok(Some(RawMode(())))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore();
    }
}

/// Leaves raw mode if it is on. Safe to call any number of times.
pub fn restore() {
    if RAW_ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

/// Makes panics restore the terminal before the message is printed.
pub fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore();
        previous(info);
    }));
}

/// The local terminal size as `(cols, rows)`, when there is a terminal.
pub fn size() -> Option<(u16, u16)> {
    if !(std::io::stdin().is_terminal() || std::io::stdout().is_terminal()) {
        return None;
    }
    crossterm::terminal::size()
        .ok()
        .filter(|&(c, r)| c > 0 && r > 0)
}

//! Refused browser origins (docs/protocol.md §17.4): each is counted for `/metrics` and logged
//! at debug level, at most one line per `ORIGIN_LOG_INTERVAL_SECS`, so a page that retries in
//! a loop cannot flood the log; each line says how many refusals went unlogged before it.

use std::sync::atomic::{AtomicU64, Ordering};

use super::Hub;
use crate::ops::settings::MAX_ORIGIN_BYTES;

/// Shortest time between two log lines about refused origins, in seconds.
pub(crate) const ORIGIN_LOG_INTERVAL_SECS: u64 = 10;

/// The check that refused an origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// An HTTP request from a page whose origin is not in `cors_allowed_origins`.
    Cors,
    /// A WebSocket upgrade whose origin is not in `allowed_origins` (403).
    WebSocket,
}

/// When the next line may be written, and how many refusals were not logged since the last.
pub(crate) struct RateLimit {
    /// Milliseconds since start before which no line is written.
    next_ms: AtomicU64,
    /// Refusals not logged since the last line.
    suppressed: AtomicU64,
}

impl RateLimit {
    /// Nothing logged yet: the first refusal is logged at once.
    pub(crate) const fn new() -> Self {
        RateLimit {
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// At `now_ms`: `Some(refusals not logged since the last line)` when a line may be
    /// written now, else `None` (and this one is counted as not logged).
    pub(crate) fn admit(&self, now_ms: u64) -> Option<u64> {
        let next = self.next_ms.load(Ordering::Relaxed);
        let until = now_ms.saturating_add(ORIGIN_LOG_INTERVAL_SECS * 1000);
        if now_ms >= next
            && self
                .next_ms
                .compare_exchange(next, until, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// The process's limit on lines about refused origins.
static LOG_LIMIT: RateLimit = RateLimit::new();

/// Counts a refused `origin` and logs it, when the rate limit allows.
pub(crate) fn refused(hub: &Hub, check: Check, origin: &[u8]) {
    let (counter, rule) = match check {
        Check::Cors => (
            &hub.metrics.origins_refused_cors,
            "not in cors_allowed_origins",
        ),
        Check::WebSocket => (
            &hub.metrics.origins_refused_websocket,
            "WebSocket upgrade refused (403): not in allowed_origins",
        ),
    };
    counter.inc();
    if !log::log_enabled!(log::Level::Debug) {
        return;
    }
    let now_ms = u64::try_from(hub.started.elapsed().as_millis()).unwrap_or(u64::MAX);
    if let Some(unlogged) = LOG_LIMIT.admit(now_ms) {
        // Escaped and cut short: the value is the peer's, and one line must stay one line.
        let shown = origin
            .get(..MAX_ORIGIN_BYTES)
            .unwrap_or(origin)
            .escape_ascii();
        log::debug!(
            "Origin {shown} refused: {rule}; {unlogged} more refused origins not logged in the \
             last {ORIGIN_LOG_INTERVAL_SECS} s"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_of_the_others() {
        let limit = RateLimit::new();
        assert_eq!(limit.admit(5), Some(0));
        for ms in [6, 100, 9_999] {
            assert_eq!(limit.admit(ms), None);
        }
        assert_eq!(limit.admit(10_004), None);
        assert_eq!(limit.admit(10_005), Some(4));
        assert_eq!(limit.admit(10_006), None);
        // A long quiet time: the next refusal is logged at once.
        assert_eq!(limit.admit(1_000_000), Some(1));
    }

    #[test]
    fn a_clock_at_its_end_does_not_wrap() {
        let limit = RateLimit::new();
        assert_eq!(limit.admit(u64::MAX), Some(0));
        assert_eq!(limit.admit(u64::MAX), Some(0));
    }
}

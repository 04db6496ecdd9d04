//! One monotonic clock for the whole process, so a timestamp written by an upstream task can be
//! subtracted from the time a device task reads it.

use std::sync::OnceLock;
use std::time::Instant;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the process's clock epoch (first call). Never 0 after the first call,
/// because 0 marks warm-up frames.
pub fn now_ns() -> u64 {
    let epoch = *EPOCH.get_or_init(Instant::now);
    let ns = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
    ns.max(1)
}

/// Starts the clock (call once at start so early readings are not 0).
pub fn init() {
    let _ = EPOCH.get_or_init(Instant::now);
}

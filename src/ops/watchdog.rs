//! The self-check behind `/health` and systemd's watchdog (docs/protocol.md §10, §12).
//!
//! It runs on its own OS thread, outside the runtime it checks: a stalled event loop can't
//! vouch for itself. Each round it asks the loop to run a probe task and waits for it within
//! a deadline, checks that the accept loop is alive and the device table usable, then sets
//! the health flag and, only when healthy, pings systemd with `WATCHDOG=1`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use super::systemd::Notifier;

/// Rounds per second when systemd asks for no watchdog: `/health` still reflects the check.
pub(crate) const CHECK_INTERVAL_DEFAULT: Duration = Duration::from_secs(1);
/// Longest time the event loop may take to run a probe task before it counts as stalled.
pub(crate) const LOOP_DEADLINE: Duration = Duration::from_millis(500);
/// Passing rounds needed after a failure before `/health` says healthy again, so a loop that
/// just came out of a stall is not reported healthy by the very request it had queued.
pub(crate) const RECOVERY_ROUNDS: u32 = 2;

/// What one round found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Findings {
    /// The event loop ran the probe in time.
    pub loop_answered: bool,
    /// The accept loop is running.
    pub accepting: bool,
    /// The device table's lock could be had.
    pub table_usable: bool,
}

impl Findings {
    /// True when every check passed.
    pub(crate) fn passed(self) -> bool {
        self.loop_answered && self.accepting && self.table_usable
    }
}

/// Health with hysteresis: one failure makes it unhealthy, `RECOVERY_ROUNDS` passes heal it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verdict {
    streak: u32,
}

impl Default for Verdict {
    fn default() -> Self {
        Verdict {
            streak: RECOVERY_ROUNDS,
        }
    }
}

impl Verdict {
    /// Takes one round's result; returns whether the daemon counts as healthy now.
    pub(crate) fn record(&mut self, passed: bool) -> bool {
        self.streak = if passed {
            self.streak.saturating_add(1)
        } else {
            0
        };
        self.healthy()
    }

    /// Whether the daemon counts as healthy.
    pub(crate) fn healthy(self) -> bool {
        self.streak >= RECOVERY_ROUNDS
    }
}

/// What the self-check asks of the daemon each round, besides whether its event loop answers.
pub(crate) trait Daemon: Send + Sync + 'static {
    /// The accept loop is running.
    fn accepting(&self) -> bool;
    /// The device table's lock can be had (no task holds it forever).
    fn table_usable(&self) -> bool;
    /// Records the verdict that `/health` reports; returns the previous one.
    fn set_healthy(&self, healthy: bool) -> bool;
    /// The service manager's status line ("N devices connected, ...").
    fn status(&self) -> String;
}

/// Starts the checking thread; it stops once `stop` is set.
pub(crate) fn spawn(
    daemon: Arc<dyn Daemon>,
    runtime: tokio::runtime::Handle,
    notifier: Arc<Notifier>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let interval = notifier
        .watchdog_interval()
        .unwrap_or(CHECK_INTERVAL_DEFAULT);
    std::thread::Builder::new()
        .name("wssed-watchdog".into())
        .spawn(move || {
            let mut verdict = Verdict::default();
            let mut last_status = String::new();
            while !stop.load(Ordering::Acquire) {
                let findings = Findings {
                    loop_answered: probe(&runtime, LOOP_DEADLINE.min(interval)),
                    accepting: daemon.accepting(),
                    table_usable: daemon.table_usable(),
                };
                if stop.load(Ordering::Acquire) {
                    break;
                }
                let healthy = verdict.record(findings.passed());
                if daemon.set_healthy(healthy) != healthy {
                    if healthy {
                        log::info!("self-check passes again");
                    } else {
                        log::warn!("self-check failed: {findings:?}");
                    }
                }
                if healthy {
                    notifier.notify("WATCHDOG=1");
                }
                let status = daemon.status();
                if status != last_status {
                    notifier.notify(&format!("STATUS={status}"));
                    last_status = status;
                }
                std::thread::sleep(interval);
            }
        })
}

/// Runs a task on the event loop and waits up to `deadline` for it to run.
fn probe(runtime: &tokio::runtime::Handle, deadline: Duration) -> bool {
    let (tx, rx) = mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = tx.send(());
    });
    rx.recv_timeout(deadline).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_failure_turns_unhealthy_and_recovery_takes_rounds() {
        let mut v = Verdict::default();
        assert!(v.healthy());
        assert!(!v.record(false));
        for _ in 1..RECOVERY_ROUNDS {
            assert!(!v.record(true));
        }
        assert!(v.record(true));
    }

    #[test]
    fn probe_fails_on_a_stalled_loop_and_passes_on_a_live_one() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let handle = rt.handle().clone();
        let (stall_tx, stall_rx) = mpsc::channel::<()>();
        let driver = std::thread::spawn(move || {
            rt.block_on(async move {
                // A blocking wait on the loop's only thread: exactly a stall.
                let _ = stall_rx.recv_timeout(Duration::from_secs(10));
                // Then serve probes for a while.
                tokio::time::sleep(Duration::from_secs(2)).await;
            });
        });
        assert!(!probe(&handle, Duration::from_millis(200)));
        stall_tx.send(()).unwrap();
        assert!(probe(&handle, Duration::from_secs(5)));
        driver.join().unwrap();
    }
}

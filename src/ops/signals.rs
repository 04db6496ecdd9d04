//! SIGTERM and SIGINT: the first starts the drain, the second ends the process at once.

use tokio::signal::unix::{signal, Signal, SignalKind};

/// The handlers for SIGTERM and SIGINT, installed.
pub(crate) struct Signals {
    term: Signal,
    int: Signal,
}

/// Environment variable that makes `install` fail, so the e2e suite can see how a failed
/// start looks (test builds only).
#[cfg(feature = "fault-injection")]
pub(crate) const FAULT_NO_SIGNALS_ENV: &str = "WSSED_FAULT_NO_SIGNALS";

impl Signals {
    /// Installs the handlers; must run inside the runtime. An error means the service
    /// manager could never stop us cleanly, so the caller refuses to start.
    pub(crate) fn install() -> std::io::Result<Signals> {
        #[cfg(feature = "fault-injection")]
        if std::env::var_os(FAULT_NO_SIGNALS_ENV).is_some() {
            return Err(std::io::Error::other(
                "signal handlers refused (fault injection)",
            ));
        }
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for the first signal; returns its name.
    pub(crate) async fn first(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }

    /// Waits for a second signal and exits at once with status 1: the operator insists.
    pub(crate) async fn exit_on_second(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        log::warn!("second signal: exiting at once");
        std::process::exit(1);
    }
}

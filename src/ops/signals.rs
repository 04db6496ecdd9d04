//! SIGTERM and SIGINT: the first starts the drain, the second ends the process at once.

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;

/// The handlers for SIGTERM and SIGINT, installed.
pub(crate) struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    /// Installs the handlers; must run inside the runtime. An error means the service
    /// manager could never stop us cleanly, so the caller refuses to start.
    pub(crate) fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for the first signal and flips `shutdown`; a second one exits at once with 1.
    pub(crate) async fn watch(mut self, shutdown: watch::Sender<bool>) {
        tokio::select! {
            _ = self.term.recv() => log::info!("SIGTERM: draining"),
            _ = self.int.recv() => log::info!("SIGINT: draining"),
        }
        let _ = shutdown.send(true);
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        log::warn!("second signal: exiting at once");
        std::process::exit(1);
    }
}

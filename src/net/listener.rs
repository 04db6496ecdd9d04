//! The listener, the accept loop and the shutdown sequence (docs/protocol.md §12).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::hub::{self, Hub};
use crate::ops::memory;
use crate::ops::settings::{secs, Config};
use crate::ops::signals::Signals;
use crate::ops::systemd::Notifier;
use crate::ops::watchdog::{self, Daemon as _};

/// Pending connections the kernel queues for us.
pub const LISTEN_BACKLOG: i32 = 1024;
/// First pause after an accept error such as EMFILE; doubles up to the maximum.
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
/// Longest pause after repeated accept errors.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long the self-check waits for the device table's lock before it counts as stuck.
pub const TABLE_LOCK_DEADLINE: Duration = Duration::from_millis(100);

/// Binds the listening socket: reuseaddr (restarts don't wait for TIME_WAIT), a real backlog.
pub fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // `[::]` should also take IPv4 where the system allows it.
        let _ = socket.set_only_v6(false);
    }
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Held by every connection task; shutdown waits until all are dropped.
#[derive(Clone)]
struct TaskToken(#[allow(dead_code)] mpsc::Sender<()>);

/// Runs the daemon on `listener` until a signal stops it; returns the exit status.
pub async fn run(
    config: Config,
    listener: std::net::TcpListener,
    on_ready: impl FnOnce(SocketAddr),
) -> io::Result<i32> {
    // Accepted sockets inherit their kernel buffers from the listener: set once, here, for
    // every connection (a stalled device would otherwise pin up to tcp_wmem's maximum, 4 MiB,
    // of kernel memory that the service's cgroup pays for).
    let sock = socket2::SockRef::from(&listener);
    let buffer = config.socket_buffer_bytes;
    if let Err(e) = sock
        .set_send_buffer_size(buffer)
        .and_then(|()| sock.set_recv_buffer_size(buffer))
    {
        log::warn!("cannot set socket buffers to {buffer} bytes: {e}");
    }
    let listener = TcpListener::from_std(listener)?;
    let addr = listener.local_addr()?;
    let mut signals = Signals::install()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot install signal handlers: {e}")))?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shutdown_timeout = secs(config.shutdown_timeout_secs);
    let budget = memory::in_force(&config);
    log::info!("memory budget: {budget}");
    let hub = Arc::new(Hub::new(config, budget.bytes, shutdown_rx.clone()));
    let (token_tx, mut all_done) = mpsc::channel::<()>(1);
    let token = TaskToken(token_tx);
    let notifier = Arc::new(Notifier::from_env());
    let daemon = Arc::new(Checked {
        hub: Arc::clone(&hub),
        accepting: AtomicBool::new(true),
    });
    let stop_watchdog = Arc::new(AtomicBool::new(false));

    let drain_hub = Arc::clone(&hub);
    tokio::spawn(async move {
        let name = signals.first().await;
        // Counted before the flag flips: from then on sessions leave the table.
        log::info!(
            "{name}: draining {} devices, {} open streams",
            drain_hub.devices.len(),
            drain_hub.streams.len()
        );
        let _ = shutdown_tx.send(true);
        signals.exit_on_second().await;
    });
    log::info!("listening on {addr}");
    if !addr.ip().is_loopback() && hub.config.api_token.is_none() {
        log::warn!(
            "listening on a non-loopback address without api_token: anyone on the network can push to devices"
        );
    }
    on_ready(addr);
    notifier.notify(&format!(
        "READY=1\nSTATUS=listening on {addr}, {}",
        daemon.status()
    ));
    if let Err(e) = watchdog::spawn(
        Arc::clone(&daemon) as Arc<dyn watchdog::Daemon>,
        tokio::runtime::Handle::current(),
        Arc::clone(&notifier),
        Arc::clone(&stop_watchdog),
    ) {
        // Without the checker systemd's watchdog would kill us; better to say why now.
        log::error!("cannot start the self-check thread: {e}");
        return Err(e);
    }

    accept_loop(&listener, &hub, &token, shutdown_rx).await;
    daemon.accepting.store(false, Ordering::Release);
    notifier.notify("STOPPING=1\nSTATUS=shutting down");
    drop(listener);
    drop(token);
    match tokio::time::timeout(shutdown_timeout, all_done.recv()).await {
        Ok(_) => log::info!("drained"),
        Err(_) => log::warn!("shutdown timeout: exiting with connections still open"),
    }
    stop_watchdog.store(true, Ordering::Release);
    Ok(0)
}

/// What the self-check asks of this daemon.
struct Checked {
    hub: Arc<Hub>,
    accepting: AtomicBool,
}

impl watchdog::Daemon for Checked {
    fn accepting(&self) -> bool {
        // A drain stops the accept loop on purpose: that is no failure to report.
        self.accepting.load(Ordering::Acquire) || self.hub.shutting_down()
    }

    fn table_usable(&self) -> bool {
        self.hub.devices.lockable_within(TABLE_LOCK_DEADLINE)
    }

    fn set_healthy(&self, healthy: bool) -> bool {
        self.hub.healthy.swap(healthy, Ordering::AcqRel)
    }

    fn status(&self) -> String {
        format!(
            "{} devices connected, {} send streams open",
            self.hub.devices.len(),
            self.hub.streams.len()
        )
    }
}

async fn accept_loop(
    listener: &TcpListener,
    hub: &Arc<Hub>,
    token: &TaskToken,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = hub::stopping(&mut shutdown) => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                hub.metrics.connections_accepted.inc();
                spawn_connection(stream, peer, Arc::clone(hub), token.clone());
            }
            Err(e) if is_per_connection_error(&e) => {
                log::debug!("accept: {e}");
            }
            Err(e) => {
                // EMFILE, ENFILE, ENOBUFS: wait for descriptors to free instead of spinning or dying.
                log::warn!("accept failed ({e}); pausing {backoff:?}");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = hub::stopping(&mut shutdown) => return,
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
}

fn is_per_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

fn spawn_connection(stream: TcpStream, peer: SocketAddr, hub: Arc<Hub>, token: TaskToken) {
    let open = hub.open_connections.fetch_add(1, Ordering::AcqRel) + 1;
    let guard = OpenGuard(Arc::clone(&hub));
    if open > hub.config.max_open_connections() {
        hub.metrics.connections_refused.inc();
        tokio::spawn(async move {
            super::conn::refuse(&hub, stream).await;
            drop(guard);
            drop(token);
        });
        return;
    }
    let _ = stream.set_nodelay(true);
    tokio::spawn(async move {
        if let Some(up) = super::conn::serve(stream, peer, Arc::clone(&hub)).await {
            // A task of its own: an idle device then costs only the session's state.
            tokio::spawn(async move {
                super::session::run(up.stream, up.leftover, up.upgrade, hub).await;
                drop(guard);
                drop(token);
            });
        }
    });
}

/// Counts a connection out when its task ends, however it ends.
struct OpenGuard(Arc<Hub>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::AcqRel);
    }
}

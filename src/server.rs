//! The listener, the accept loop and the shutdown sequence (SPEC §9).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::config::{secs, Config};
use crate::state::{State, DEVICES, METRICS};
use crate::systemd::Notifier;

/// Pending connections the kernel queues for us.
pub const LISTEN_BACKLOG: i32 = 1024;
/// First pause after an accept error such as EMFILE; doubles up to the maximum.
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
/// Longest pause after repeated accept errors.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

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
pub struct TaskToken(#[allow(dead_code)] mpsc::Sender<()>);

/// Runs the daemon on `listener` until a signal stops it; returns the exit status.
pub async fn run(
    config: Config,
    listener: std::net::TcpListener,
    on_ready: impl FnOnce(SocketAddr),
) -> io::Result<i32> {
    let listener = TcpListener::from_std(listener)?;
    let addr = listener.local_addr()?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shutdown_timeout = secs(config.shutdown_timeout_secs);
    let state = Arc::new(State::new(config, shutdown_rx.clone()));
    let (token_tx, mut all_done) = mpsc::channel::<()>(1);
    let token = TaskToken(token_tx);
    let notifier = Arc::new(Notifier::from_env());
    let accepting = Arc::new(AtomicBool::new(true));
    let stop_watchdog = Arc::new(AtomicBool::new(false));

    tokio::spawn(signals(shutdown_tx));
    log::info!("listening on {addr}");
    if !addr.ip().is_loopback() && state.config.api_token.is_none() {
        log::warn!(
            "listening on a non-loopback address without api_token: anyone on the network can push to devices"
        );
    }
    on_ready(addr);
    notifier.notify(&format!(
        "READY=1\nSTATUS=listening on {addr}, {} devices connected",
        DEVICES.len()
    ));
    if let Err(e) = crate::watchdog::spawn(
        Arc::clone(&state),
        tokio::runtime::Handle::current(),
        Arc::clone(&accepting),
        Arc::clone(&notifier),
        Arc::clone(&stop_watchdog),
    ) {
        // Without the checker systemd's watchdog would kill us; better to say why now.
        log::error!("cannot start the self-check thread: {e}");
        return Err(e);
    }

    accept_loop(&listener, &state, &token, shutdown_rx).await;
    accepting.store(false, Ordering::Release);
    notifier.notify("STOPPING=1\nSTATUS=shutting down");
    drop(listener);
    drop(token);
    log::info!(
        "shutting down: {} devices, {} open streams",
        crate::state::DEVICES.len(),
        crate::state::PENDING.len()
    );
    match tokio::time::timeout(shutdown_timeout, all_done.recv()).await {
        Ok(_) => log::info!("drained"),
        Err(_) => log::warn!("shutdown timeout: exiting with connections still open"),
    }
    stop_watchdog.store(true, Ordering::Release);
    Ok(0)
}

async fn accept_loop(
    listener: &TcpListener,
    state: &Arc<State>,
    token: &TaskToken,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = crate::state::stopping(&mut shutdown) => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                METRICS.connections_accepted.inc();
                spawn_connection(stream, peer, Arc::clone(state), token.clone());
            }
            Err(e) if is_per_connection_error(&e) => {
                log::debug!("accept: {e}");
            }
            Err(e) => {
                // EMFILE, ENFILE, ENOBUFS: wait for descriptors to free instead of spinning or dying.
                log::warn!("accept failed ({e}); pausing {backoff:?}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = crate::state::stopping(&mut shutdown) => return,
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

fn spawn_connection(stream: TcpStream, peer: SocketAddr, state: Arc<State>, token: TaskToken) {
    let open = state.open_connections.fetch_add(1, Ordering::AcqRel) + 1;
    let guard = OpenGuard(Arc::clone(&state));
    if open > state.max_open_connections() {
        METRICS.connections_refused.inc();
        tokio::spawn(async move {
            crate::conn::refuse(stream).await;
            drop(guard);
            drop(token);
        });
        return;
    }
    let _ = stream.set_nodelay(true);
    tokio::spawn(async move {
        crate::conn::serve(stream, peer, state).await;
        drop(guard);
        drop(token);
    });
}

/// Counts a connection out when its task ends, however it ends.
struct OpenGuard(Arc<State>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn signals(shutdown: watch::Sender<bool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            log::error!("cannot install signal handlers: {e}");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => log::info!("SIGTERM: draining"),
        _ = int.recv() => log::info!("SIGINT: draining"),
    }
    let _ = shutdown.send(true);
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    log::warn!("second signal: exiting at once");
    std::process::exit(1);
}

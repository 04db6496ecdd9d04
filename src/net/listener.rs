//! The listener, the accept loop and the shutdown sequence (docs/protocol.md §12).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use super::socket::Socket as Stream;
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
/// How often kept messages older than `mailbox_ttl_secs` are dropped (delivery checks their
/// age as well; this gives back the memory of devices that stay away).
pub const MAILBOX_SWEEP_INTERVAL: Duration = Duration::from_secs(5);

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

/// The listening sockets the daemon serves on.
pub struct Listeners {
    /// Plain HTTP and WebSocket (`listen`), unless it is off.
    pub plain: Option<std::net::TcpListener>,
    /// HTTPS and WSS (`tls_listen`), with the certificate and key it serves.
    #[cfg(feature = "tls")]
    pub tls: Option<(std::net::TcpListener, crate::ops::tls::Loaded)>,
}

impl From<std::net::TcpListener> for Listeners {
    fn from(plain: std::net::TcpListener) -> Listeners {
        Listeners {
            plain: Some(plain),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

/// Sets the kernel buffers every connection accepted on `listener` inherits, and hands it
/// to the runtime.
fn adopt(listener: std::net::TcpListener, buffer: usize) -> io::Result<TcpListener> {
    // Accepted sockets inherit their kernel buffers from the listener: set once, here, for
    // every connection (a stalled device would otherwise pin up to tcp_wmem's maximum, 4 MiB,
    // of kernel memory that the service's cgroup pays for).
    let sock = socket2::SockRef::from(&listener);
    if let Err(e) = sock
        .set_send_buffer_size(buffer)
        .and_then(|()| sock.set_recv_buffer_size(buffer))
    {
        log::warn!("cannot set socket buffers to {buffer} bytes: {e}");
    }
    TcpListener::from_std(listener)
}

/// The TLS side, when there is a TLS listener.
#[cfg(feature = "tls")]
type TlsSide = Option<Arc<super::tls::Tls>>;
/// Without the `tls` feature there is never a TLS side.
#[cfg(not(feature = "tls"))]
type TlsSide = Option<Arc<std::convert::Infallible>>;

/// Held by every connection task; shutdown waits until all are dropped.
#[derive(Clone)]
struct TaskToken(#[allow(dead_code)] mpsc::Sender<()>);

/// Runs the daemon on `listeners` until a signal stops it; returns the exit status.
/// `on_ready` gets the plain listener's address (the TLS one's when plain is off).
pub async fn run(
    config: Config,
    listeners: impl Into<Listeners>,
    on_ready: impl FnOnce(SocketAddr),
) -> io::Result<i32> {
    let listeners = listeners.into();
    let buffer = config.socket_buffer_bytes;
    let plain = listeners.plain.map(|l| adopt(l, buffer)).transpose()?;
    let mut signals = Signals::install()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot install signal handlers: {e}")))?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shutdown_timeout = secs(config.shutdown_timeout_secs);
    let budget = memory::in_force(&config);
    log::info!("memory budget: {budget}");
    #[cfg_attr(not(feature = "cluster"), allow(unused_mut))]
    let mut hub = Hub::new(config, budget.bytes, shutdown_rx.clone());
    #[cfg(feature = "cluster")]
    {
        let cluster = super::cluster::start(&hub.config, shutdown_rx.clone()).await?;
        hub.cluster = cluster.map(|c| c as Arc<dyn crate::hub::cluster::Remote>);
    }
    let hub = Arc::new(hub);
    #[cfg(feature = "tls")]
    let (tls_listener, tls): (Option<TcpListener>, TlsSide) = match listeners.tls {
        Some((listener, loaded)) => {
            let listener = adopt(listener, buffer)?;
            log::info!("TLS certificate: {}", loaded.info);
            super::tls::warn_if_expired(&loaded.info, "start");
            hub.metrics.tls.serving(loaded.info.clone());
            let tls = Arc::new(super::tls::Tls::new(&hub.config, loaded)?);
            // Installed before READY: a SIGHUP from then on reloads, never ends the process.
            let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot install the SIGHUP handler: {e}"))
                })?;
            tokio::spawn(Arc::clone(&tls).reload_on_hangup(hangups, Arc::clone(&hub)));
            (Some(listener), Some(tls))
        }
        None => (None, None),
    };
    #[cfg(not(feature = "tls"))]
    let (tls_listener, tls): (Option<TcpListener>, TlsSide) = (None, None);
    // Read once nothing else can fail the start: the file is removed once it is read.
    if let Some(dir) = &hub.config.state_dir {
        super::state::load(&hub, dir);
    }
    if hub.mailbox.is_on() {
        tokio::spawn(sweep_mailbox(Arc::clone(&hub), shutdown_rx.clone()));
    }
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
    let mut status = Vec::new();
    let mut ready_addr = None;
    if let Some(addr) = tls_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?
    {
        log::info!("listening for TLS on {addr}");
        warn_without_token(&hub, addr);
        status.push(format!("TLS on {addr}"));
        ready_addr = Some(addr);
    }
    match plain.as_ref().map(TcpListener::local_addr).transpose()? {
        Some(addr) => {
            log::info!("listening on {addr}");
            warn_without_token(&hub, addr);
            status.insert(0, format!("listening on {addr}"));
            ready_addr = Some(addr);
        }
        None => log::info!("plain listener off (listen = \"off\")"),
    }
    if let Some(addr) = ready_addr {
        on_ready(addr);
    }
    notifier.notify(&format!(
        "READY=1\nSTATUS={}, {}",
        status.join(", "),
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
        // What was read at start is written back: nothing was delivered yet.
        if let Some(dir) = &hub.config.state_dir {
            super::state::save(&hub, dir);
        }
        return Err(e);
    }

    tokio::join!(
        accept_loop(plain.as_ref(), &hub, &token, shutdown_rx.clone(), None),
        accept_loop(tls_listener.as_ref(), &hub, &token, shutdown_rx, tls),
    );
    daemon.accepting.store(false, Ordering::Release);
    notifier.notify("STOPPING=1\nSTATUS=shutting down");
    drop(plain);
    drop(tls_listener);
    drop(token);
    match tokio::time::timeout(shutdown_timeout, all_done.recv()).await {
        Ok(_) => log::info!("drained"),
        Err(_) => log::warn!("shutdown timeout: exiting with connections still open"),
    }
    // After the drain: the sessions closed with 1001 have handed their unsent frames over.
    if let Some(dir) = &hub.config.state_dir {
        super::state::save(&hub, dir);
    }
    stop_watchdog.store(true, Ordering::Release);
    Ok(0)
}

/// Drops kept messages past their age every `MAILBOX_SWEEP_INTERVAL`, until shutdown.
async fn sweep_mailbox(hub: Arc<Hub>, mut shutdown: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(MAILBOX_SWEEP_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => hub.mailbox.sweep(crate::hub::mailbox::now_ms()),
            () = hub::stopping(&mut shutdown) => return,
        }
    }
}

/// Warns when `addr` reaches beyond this machine and upstreams need no token.
fn warn_without_token(hub: &Hub, addr: SocketAddr) {
    if !addr.ip().is_loopback() && hub.config.api_token.is_none() {
        log::warn!(
            "listening on {addr}, a non-loopback address, without api_token: anyone on the network can push to devices"
        );
    }
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

/// Accepts on `listener` (nothing when it is None) until shutdown; `tls` makes every
/// connection a TLS one.
async fn accept_loop(
    listener: Option<&TcpListener>,
    hub: &Arc<Hub>,
    token: &TaskToken,
    mut shutdown: watch::Receiver<bool>,
    tls: TlsSide,
) {
    let Some(listener) = listener else {
        return;
    };
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
                spawn_connection(stream, peer, Arc::clone(hub), token.clone(), tls.clone());
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

// Without the `tls` feature `tls` is always None, and never consumed.
#[cfg_attr(not(feature = "tls"), allow(clippy::needless_pass_by_value))]
fn spawn_connection(
    stream: TcpStream,
    peer: SocketAddr,
    hub: Arc<Hub>,
    token: TaskToken,
    tls: TlsSide,
) {
    let open = hub.open_connections.fetch_add(1, Ordering::AcqRel) + 1;
    let guard = OpenGuard(Arc::clone(&hub));
    if open > hub.config.max_open_connections() {
        hub.metrics.connections_refused.inc();
        tokio::spawn(async move {
            match tls {
                // A TLS client could not read a plain 503: it is told with an alert.
                #[cfg(feature = "tls")]
                Some(_) => super::tls::refuse(stream).await,
                _ => super::conn::refuse(&hub, stream).await,
            }
            drop(guard);
            drop(token);
        });
        return;
    }
    let _ = stream.set_nodelay(true);
    tokio::spawn(async move {
        let socket = match tls {
            #[cfg(feature = "tls")]
            Some(tls) => match tls.accept(stream, &hub).await {
                super::tls::Handshake::Done(tls) => Stream::Tls(tls),
                super::tls::Handshake::PlainHttp(tcp) => {
                    return super::conn::answer_plain_http(&hub, tcp).await;
                }
                super::tls::Handshake::Failed => return,
            },
            _ => Stream::Plain(stream),
        };
        if let Some(up) = super::conn::serve(socket, peer, Arc::clone(&hub)).await {
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

//! What every connection task shares: settings, the tables, counters, the shutdown signal.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::config::{secs, Config, OnDuplicate};
use crate::limits::{DEVICE_TABLE_CAPACITY, PENDING_TABLE_CAPACITY};
use crate::metrics::Metrics;
use crate::registry::{DeviceTable, PendingTable};

/// The device table. A `static` so its slots sit in `.bss` and cost RSS only when used.
pub static DEVICES: DeviceTable<DEVICE_TABLE_CAPACITY> = DeviceTable::new();
/// The table of open `/sse/send` streams.
pub static PENDING: PendingTable<PENDING_TABLE_CAPACITY> = PendingTable::new();
/// The process's counters.
pub static METRICS: Metrics = Metrics::new();

/// Read buffer tungstenite allocates per device, and the most it reads per system call.
/// Small, because devices send little and a gateway holds thousands of them (its default is
/// 128 KiB); a larger frame grows the buffer to the frame's size, in reads of this size.
pub const WS_READ_BUFFER_BYTES: usize = 512;
/// Bytes tungstenite gathers before writing to the socket; we flush after each batch anyway.
pub const WS_WRITE_BUFFER_BYTES: usize = 0;
/// HTTP connections allowed beyond `max_connections + max_pending_sends` (health probes,
/// pushes, upgrades in flight) before new ones are answered 503 at once.
pub const EXTRA_HTTP_CONNECTIONS: usize = 256;
/// How long a close handshake may take before the socket is dropped.
pub const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// Shared by all tasks of one daemon.
pub struct State {
    /// Effective settings.
    pub config: Config,
    /// When the daemon started.
    pub started: Instant,
    /// Flips to `true` once, when shutdown begins.
    pub shutdown: watch::Receiver<bool>,
    /// TCP connections open now (HTTP and WebSocket).
    pub open_connections: AtomicUsize,
    /// Outcome of the latest self-check (watchdog and `/health`).
    pub healthy: AtomicBool,
}

impl State {
    /// Shared state for `config`, with the tables' runtime limits applied.
    pub fn new(config: Config, shutdown: watch::Receiver<bool>) -> State {
        DEVICES.set_max(config.max_connections);
        PENDING.set_max(config.max_pending_sends);
        State {
            config,
            started: Instant::now(),
            shutdown,
            open_connections: AtomicUsize::new(0),
            healthy: AtomicBool::new(true),
        }
    }

    /// True once shutdown has begun.
    pub fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Whole seconds since start.
    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// True when `name` is a configured public account.
    pub fn is_public(&self, name: &str) -> bool {
        self.config.public_accounts.iter().any(|a| a == name)
    }

    /// True when a new user id should replace a connected one.
    pub fn replace_duplicates(&self) -> bool {
        self.config.on_duplicate == OnDuplicate::Replace
    }

    /// Most TCP connections served at once.
    pub fn max_open_connections(&self) -> usize {
        self.config.max_connections + self.config.max_pending_sends + EXTRA_HTTP_CONNECTIONS
    }

    /// Whether the self-check passed last time.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// tungstenite's settings, every size explicit (its defaults suit servers with memory to spare).
    pub fn ws_config(&self) -> WebSocketConfig {
        let max = self.config.max_message_bytes;
        WebSocketConfig::default()
            .read_buffer_size(WS_READ_BUFFER_BYTES)
            .write_buffer_size(WS_WRITE_BUFFER_BYTES)
            // A queue's worth of frames may sit in the write buffer while a flush is pending.
            .max_write_buffer_size(
                self.config
                    .max_body_bytes
                    .saturating_mul(2)
                    .saturating_add(64 * 1024),
            )
            .max_message_size(Some(max))
            .max_frame_size(Some(max))
            .accept_unmasked_frames(false)
    }

    /// `pong_timeout_secs` as a duration; also bounds every write to a device.
    pub fn pong_timeout(&self) -> Duration {
        secs(self.config.pong_timeout_secs)
    }
}

/// Resolves once shutdown has begun (or the signal task is gone, which also means stop).
pub async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    // The returned `Ref` is dropped here: it is not `Send` and must not live across an await.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

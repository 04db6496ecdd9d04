//! Settings: defaults, TOML file, `--kebab-case` flags, validation (SPEC §1, §10).

use std::net::SocketAddr;
use std::time::Duration;

/// What to do when a user id connects while a session for it is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDuplicate {
    /// Keep the old session; close the new one with 1008.
    Reject,
    /// Close the old session with 1008; keep the new one.
    Replace,
}

/// The effective settings of one daemon run.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Address for HTTP and WebSocket.
    pub listen: SocketAddr,
    /// User ids that `@mentions` route to.
    pub public_accounts: Vec<String>,
    /// Devices connected at once.
    pub max_connections: usize,
    /// Frames waiting for one device's socket.
    pub queue_depth: usize,
    /// Largest HTTP request body.
    pub max_body_bytes: usize,
    /// Largest WebSocket message (and frame) from a device.
    pub max_message_bytes: usize,
    /// Items in one `/sse/push/batch`.
    pub max_batch: usize,
    /// `/sse/send` streams open at once.
    pub max_pending_sends: usize,
    /// A send stream closes after this long without a correlated message.
    pub send_timeout_secs: u64,
    /// Interval of SSE keepalive comments.
    pub keepalive_secs: u64,
    /// Interval of WebSocket pings.
    pub ping_interval_secs: u64,
    /// Time a device has to show life after a ping.
    pub pong_timeout_secs: u64,
    /// Time from the first byte of a request head to its end.
    pub header_timeout_secs: u64,
    /// Time an HTTP connection may sit idle between requests.
    pub idle_timeout_secs: u64,
    /// Drain time on SIGTERM.
    pub shutdown_timeout_secs: u64,
    /// Duplicate user id policy.
    pub on_duplicate: OnDuplicate,
    /// Bearer token required on `/sse/*` when set.
    pub api_token: Option<String>,
    /// Key of the HMAC device token required on `/ws` when set.
    pub ws_secret: Option<String>,
    /// Origins allowed to upgrade; empty allows any.
    pub allowed_origins: Vec<String>,
    /// Most verbose log level written.
    pub log_level: log::LevelFilter,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            public_accounts: Vec::new(),
            max_connections: 4096,
            queue_depth: 64,
            max_body_bytes: 65536,
            max_message_bytes: 65536,
            max_batch: 1000,
            max_pending_sends: 1024,
            send_timeout_secs: 30,
            keepalive_secs: 15,
            ping_interval_secs: 20,
            pong_timeout_secs: 10,
            header_timeout_secs: 10,
            idle_timeout_secs: 60,
            shutdown_timeout_secs: 5,
            on_duplicate: OnDuplicate::Reject,
            api_token: None,
            ws_secret: None,
            allowed_origins: Vec::new(),
            log_level: log::LevelFilter::Info,
        }
    }
}

/// Seconds as a `Duration`, for the `*_secs` settings.
pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

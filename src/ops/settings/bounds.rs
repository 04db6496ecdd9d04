//! The ceilings every setting is checked against, and the duplicate policy's values: what the
//! value kinds (kinds.rs) and the table (table.rs) both read.

/// What to do when a user id connects while a session for it is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDuplicate {
    /// Keep the old session; close the new one with 1008.
    Reject,
    /// Close the old session with 1008; keep the new one.
    Replace,
}

/// Default `worker_threads`: one event loop (see BENCHMARKS.md for the measurements behind it).
pub const DEFAULT_WORKER_THREADS: usize = 1;
/// Ceiling of `worker_threads`.
pub const MAX_WORKER_THREADS: usize = 64;
/// Longest accepted timeout or interval, in seconds (a day): more is surely a unit mistake.
pub const MAX_TIMEOUT_SECS: u64 = 86_400;
/// Ceiling of `max_body_bytes`.
pub const MAX_BODY_BYTES_CEILING: usize = 64 * 1024 * 1024;
/// Ceiling of `max_message_bytes`.
pub const MAX_MESSAGE_BYTES_CEILING: usize = 64 * 1024 * 1024;
/// Ceiling of `queue_depth`, in frames per device.
pub const MAX_QUEUE_DEPTH: usize = 65_536;
/// Ceiling of `queue_bytes` and `stream_buffer_bytes`.
pub const MAX_BUFFER_BYTES_CEILING: usize = 1 << 30;
/// Ceiling of `socket_buffer_bytes` (the kernel caps it lower, at net.core.wmem_max/rmem_max).
pub const MAX_SOCKET_BUFFER_BYTES: usize = 16 * 1024 * 1024;
/// Ceiling of `memory_budget_bytes` (1 TiB: more is surely a unit mistake).
pub const MAX_MEMORY_BUDGET_BYTES: usize = if usize::BITS > 32 {
    1 << 40
} else {
    usize::MAX
};
/// Ceiling of `mailbox_messages`, in messages per device.
pub const MAX_MAILBOX_MESSAGES: usize = 65_536;
/// Longest `state_dir`, in bytes (Linux's `PATH_MAX` less its NUL).
pub const MAX_PATH_BYTES: usize = 4095;
/// Most entries in `allowed_origins`, and in `cors_allowed_origins`.
pub const MAX_ALLOWED_ORIGINS: usize = 64;
/// Longest entry of `allowed_origins` or `cors_allowed_origins`, in bytes.
pub const MAX_ORIGIN_BYTES: usize = 256;
/// Most entries in `cluster_urls`.
pub const MAX_CLUSTER_URLS: usize = 16;
/// Longest entry of `cluster_urls`, in bytes.
pub const MAX_CLUSTER_URL_BYTES: usize = 256;
/// Longest `api_token` or `ws_secret`, in bytes.
pub const MAX_SECRET_BYTES: usize = 1024;
/// Largest settings file read, in bytes.
pub const MAX_CONFIG_FILE_BYTES: u64 = 1024 * 1024;
/// Prefix of every setting's environment variable.
pub const ENV_PREFIX: &str = "WSSED_";

//! I/O: imports `app`, `hub`, `wire` and `ops`; nothing in the crate imports it (only `main.rs`).
//!
//! Sockets live here and only here: the listener and its accept loop, the connection driver
//! around the framer, the SSE stream driver, and the device's WebSocket session.

#[cfg(feature = "cluster")]
pub(crate) mod cluster;
pub(crate) mod conn;
pub(crate) mod io;
pub mod listener;
pub(crate) mod session;
pub(crate) mod socket;
pub(crate) mod state;
pub(crate) mod stream;
#[cfg(feature = "tls")]
pub(crate) mod tls;
pub(crate) mod watched;
pub(crate) mod write_through;

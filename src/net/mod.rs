//! The I/O layer: may import every other layer (`app`, `hub`, `wire`, `ops`); nothing imports it but `main.rs`.
//!
//! Sockets live here and only here: the listener and its accept loop, the connection driver
//! around the framer, the SSE stream driver, and the device's WebSocket session.

pub mod conn;
pub mod io;
pub mod listener;
pub mod session;
pub mod stream;

//! wssed: bridges upstream HTTP callers and WebSocket devices on one port.
//!
//! The crate is layered, and imports only go down (README "Design"):
//! `net` (I/O) -> `app` (what each endpoint means) -> `hub` (shared state) -> `wire`
//! (sans-IO protocol code); `net`, `app` and `hub` may read `ops` (settings, limits,
//! the process edge), which itself imports only `wire`.
#![deny(unsafe_code)]

pub(crate) mod app;
pub(crate) mod hub;
pub mod net;
pub mod ops;
pub mod wire;

#[cfg(test)]
mod reference;

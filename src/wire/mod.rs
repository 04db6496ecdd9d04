//! Sans-IO protocol code, the bottom layer: imports nothing of the crate outside `wire`.
//!
//! No tokio, no sockets, no shared state: everything here is a pure function of its input or
//! a state machine the caller drives, so it is unit-tested at every split point and fuzzed.

pub(crate) mod ascii;
pub(crate) mod auth;
pub mod close;
pub mod cluster;
pub(crate) mod cors;
pub mod envelope;
pub mod frames;
pub mod http;
pub mod json;
pub mod limits;
pub(crate) mod listed;
pub mod mailbox_file;
pub mod mention;
pub mod sse;
pub(crate) mod upgrade;

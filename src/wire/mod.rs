//! Sans-IO protocol code, the bottom layer: imports nothing of the crate outside `wire`.
//!
//! No tokio, no sockets, no shared state: everything here is a pure function of its input or
//! a state machine the caller drives, so it is unit-tested at every split point and fuzzed.

pub(crate) mod ascii;
pub(crate) mod auth;
pub(crate) mod close;
// Built and unit-tested in every build; without the `cluster` feature only its node-name
// check is used (the settings check `node_name` in every build), so the rest is unused there.
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub(crate) mod cluster;
pub(crate) mod cors;
pub mod envelope;
pub(crate) mod frames;
pub mod http;
pub mod json;
pub mod limits;
pub(crate) mod listed;
pub mod mailbox_file;
pub mod mention;
pub mod sse;
pub(crate) mod upgrade;

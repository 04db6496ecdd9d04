//! What each endpoint means: imports `hub` and `wire`, reads `ops` for settings; never `net`.
//!
//! Routing and the refusals decided from a head, the one type of refusal answers, and the
//! meaning of push, batch, send, health and metrics. No sockets: the `net` layer reads and
//! writes the bytes these functions take and produce.

pub(crate) mod cors;
pub(crate) mod error;
pub(crate) mod push;
#[cfg(feature = "cluster")]
pub(crate) mod remote;
pub(crate) mod route;
pub(crate) mod send;
pub(crate) mod status;

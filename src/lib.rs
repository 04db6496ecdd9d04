//! wssed: bridges upstream HTTP callers and WebSocket devices on one port.
#![deny(unsafe_code)]

pub mod config;
pub mod ids;
pub mod json;
pub mod limits;
pub mod mention;
pub mod message;
pub mod sse;

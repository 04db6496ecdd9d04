//! wssed: bridges upstream HTTP callers and WebSocket devices on one port.
#![deny(unsafe_code)]

pub mod config;
pub mod limits;
pub mod systemd;

//! wssed: bridges upstream HTTP callers and WebSocket devices on one port.
//!
//! Protocol code is sans-IO (`http`, `json`, `message`, `mention`, `sse`); I/O lives at the
//! edges (`server`, `conn`, `send`, `ws`).
#![deny(unsafe_code)]

pub mod ack;
pub mod auth;
pub mod config;
pub mod conn;
pub mod deliver;
pub mod error;
pub mod http;
pub mod ids;
pub mod json;
pub mod limits;
pub mod link;
pub mod logger;
pub mod mention;
pub mod message;
pub mod metrics;
pub mod registry;
pub mod route;
pub mod send;
pub mod server;
pub mod sse;
pub mod state;
pub mod systemd;
pub mod watchdog;
pub mod ws;

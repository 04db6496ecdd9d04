//! The process edge: imports only `wire`; `net`, `app` and `hub` read it for settings and limits.
//!
//! Settings (the one table), build capacities, the systemd protocols (notify, watchdog,
//! socket activation), the logger and signals: what the process needs from and says to the
//! machine it runs on.

pub mod build_info;
pub(crate) mod calendar;
pub mod cgroup;
pub(crate) mod limits;
pub mod logger;
pub mod memory;
pub mod settings;
pub(crate) mod signals;
pub mod systemd;
#[cfg(feature = "tls")]
pub mod tls;
pub(crate) mod watchdog;

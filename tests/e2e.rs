//! End-to-end tests: the real `wssed` binary on 127.0.0.1 with real HTTP, SSE and WebSocket
//! clients. One test crate (one link) whose modules live in `tests/e2e/`.
//!
//! `WSSED_BIN` runs another executable (a cross build under qemu); `WSSED_TIMEOUT_SCALE`
//! stretches every bound for slow targets; `WSSED_E2E_ARGS` adds flags to every daemon started
//! (`WSSED_E2E_ARGS="--worker-threads 2" cargo test --test e2e` runs the suite on the pool).

// Test and tool code: a failed unwrap or expect is a failed run, and test futures need not be
// small (the daemon's own are checked by clippy::large_futures).
// Helpers take `json!` values by value so that call sites stay one line.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::large_futures,
    clippy::needless_pass_by_value
)]

#[path = "e2e/common.rs"]
mod common;

#[path = "e2e/auth.rs"]
mod auth;
#[path = "e2e/auth_hardening.rs"]
mod auth_hardening;
#[path = "e2e/batch.rs"]
mod batch;
#[path = "e2e/contract.rs"]
mod contract;
#[path = "e2e/cors.rs"]
mod cors;
#[path = "e2e/example.rs"]
mod example;
#[path = "e2e/health.rs"]
mod health;
#[path = "e2e/hostile.rs"]
mod hostile;
#[path = "e2e/http.rs"]
mod http;
#[path = "e2e/lifecycle.rs"]
mod lifecycle;
#[path = "e2e/mailbox.rs"]
mod mailbox;
#[path = "e2e/memory.rs"]
mod memory;
#[path = "e2e/mentions.rs"]
mod mentions;
#[path = "e2e/metrics.rs"]
mod metrics;
#[path = "e2e/push.rs"]
mod push;
#[path = "e2e/send.rs"]
mod send;
#[path = "e2e/soak.rs"]
mod soak;
#[path = "e2e/status_page.rs"]
mod status_page;
#[path = "e2e/systemd.rs"]
mod systemd;
#[path = "e2e/ws.rs"]
mod ws;

//! The cluster (README "Scaling past one gateway", docs/protocol.md §21): wssed nodes built
//! with the `cluster` feature, joined by a real `nats-server` on 127.0.0.1, with real
//! WebSocket devices and HTTP upstreams. `cargo test` builds the feature through the
//! self dev-dependency; `.ci/run` installs nats-server and sets `WSSED_REQUIRE_NATS=1`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::large_futures,
    clippy::needless_pass_by_value
)]

#[allow(dead_code)]
#[path = "e2e/common.rs"]
mod common;

#[path = "cluster/harness.rs"]
mod harness;

#[path = "cluster/across.rs"]
mod across;

#[path = "cluster/soak.rs"]
mod soak;

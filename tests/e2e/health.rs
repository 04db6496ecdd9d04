//! `/health` and `/metrics` (docs/protocol.md §10, §11).

use serde_json::Value;

use crate::common::*;

#[tokio::test]
async fn health_has_the_seed_fields_and_an_integer_uptime() {
    let d = Daemon::start(&[]);
    let r = d.get("/health").await;
    let v = r.assert_json(200);
    assert_eq!(v["status"], "healthy");
    assert_eq!(v["connections"], 0);
    assert_eq!(v["uptime"], "running");
    assert!(
        v["uptime_seconds"].is_u64(),
        "uptime_seconds not an integer: {v}"
    );
}

#[tokio::test]
async fn health_uptime_seconds_advances() {
    let d = Daemon::start(&[]);
    let first = d.health().await["uptime_seconds"]
        .as_u64()
        .expect("integer");
    wait_until(t(4.0), "uptime_seconds advances", || async {
        d.health().await["uptime_seconds"].as_u64().unwrap_or(0) > first
    })
    .await;
}

#[tokio::test]
async fn health_and_metrics_count_devices() {
    let d = Daemon::start(&[]);
    let a = d.device("h1").await;
    let _b = d.device("h2").await;
    assert_eq!(d.connections().await, 2);
    let m = d.get("/metrics").await.assert_json(200);
    assert_eq!(m["active_connections"], 2);
    assert_eq!(m["service"], "websocket-sse-server");
    a.close().await;
    assert_eq!(d.connections().await, 1);
    let m: Value = d.get("/metrics").await.json();
    assert_eq!(m["active_connections"], 1);
}

#[tokio::test]
async fn health_counts_out_a_device_that_vanished() {
    let d = Daemon::start(&[]);
    let raw = RawWs::upgrade(&d, "user_id=gone").await;
    wait_until(step(), "device counted", || async {
        d.connections().await == 1
    })
    .await;
    drop(raw);
    wait_until(
        step(),
        "a dropped TCP connection is counted out",
        || async { d.connections().await == 0 },
    )
    .await;
}

#[tokio::test]
async fn health_query_string_is_ignored() {
    let d = Daemon::start(&[]);
    let v = d.get("/health?verbose=1").await.assert_json(200);
    assert_eq!(v["status"], "healthy");
}

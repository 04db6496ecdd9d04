//! `/metrics` in Prometheus text format: the counters move with the traffic that feeds them.

use std::collections::HashMap;

use serde_json::json;

use crate::common::*;

/// Scrapes `/metrics?format=prometheus` into `series -> value`.
async fn scrape(d: &Daemon) -> HashMap<String, f64> {
    let r = d.get("/metrics?format=prometheus").await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn moved(before: &HashMap<String, f64>, after: &HashMap<String, f64>, series: &str) -> f64 {
    let get = |m: &HashMap<String, f64>| m.get(series).copied();
    let a = get(after).unwrap_or_else(|| panic!("{series} missing from {after:?}"));
    a - get(before).unwrap_or(0.0)
}

#[tokio::test]
async fn prometheus_counters_move_with_traffic() {
    let d = Daemon::start(&["--public-accounts", "bot"]);
    let before = scrape(&d).await;
    assert_eq!(before.get("wssed_devices_connected"), Some(&0.0));

    let mut dev = d.device("m1").await;
    let _bot = d.device("bot").await;
    // A delivered push, one to nobody, and one rerouted by a mention (delivered to the bot).
    let r = d.push(&json!({"user_id": "m1", "data": {"n": 1}})).await;
    assert_eq!(r.json()["status"], "success");
    let _ = dev.recv_json().await;
    let r = d.push(&json!({"user_id": "nobody", "data": {}})).await;
    assert_eq!(r.json()["status"], "partial");
    let r = d
        .push(&json!({"user_id": "m1", "data": {"message": "hi @bot"}}))
        .await;
    assert_eq!(r.json()["routed_to"], "bot");
    // One send answered with a final message.
    let mut stream = d
        .send(&json!({"user_id": "m1", "data": {"correlation_id": "prom-1"}}))
        .await;
    let _ = dev.recv_json().await;
    dev.send_text(r#"{"correlation_id":"prom-1","is_final":true}"#)
        .await;
    let _ = stream.next_event(t(5.0)).await;
    // A 404.
    assert_eq!(d.get("/nope").await.status, 404);

    let after = scrape(&d).await;
    assert_eq!(after.get("wssed_devices_connected"), Some(&2.0));
    assert_eq!(
        moved(
            &before,
            &after,
            r#"wssed_pushes_total{outcome="delivered"}"#
        ),
        2.0
    );
    assert_eq!(
        moved(
            &before,
            &after,
            r#"wssed_pushes_total{outcome="not_connected"}"#
        ),
        1.0
    );
    assert_eq!(moved(&before, &after, "wssed_pushes_rerouted_total"), 1.0);
    assert_eq!(moved(&before, &after, "wssed_device_sessions_total"), 2.0);
    assert_eq!(
        moved(&before, &after, "wssed_send_streams_opened_total"),
        1.0
    );
    assert_eq!(
        moved(
            &before,
            &after,
            r#"wssed_send_streams_ended_total{reason="final"}"#
        ),
        1.0
    );
    // Two pushes and the send's request went out; the final answer came in.
    assert_eq!(
        moved(&before, &after, r#"wssed_frames_total{direction="out"}"#),
        3.0
    );
    assert!(moved(&before, &after, r#"wssed_frames_total{direction="in"}"#) >= 1.0);
    assert!(
        moved(
            &before,
            &after,
            r#"wssed_frame_bytes_total{direction="out"}"#
        ) > 0.0
    );
    assert!(
        moved(
            &before,
            &after,
            r#"wssed_http_responses_total{class="2xx"}"#
        ) >= 5.0
    );
    assert_eq!(
        moved(
            &before,
            &after,
            r#"wssed_http_responses_total{class="4xx"}"#
        ),
        1.0
    );
    assert!(after["wssed_connections_accepted_total"] >= 7.0);
    assert!(after["wssed_resident_memory_bytes"] > 0.0);
}

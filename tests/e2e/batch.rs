//! `/sse/push/batch` (docs/protocol.md §6).

use serde_json::{json, Value};

use crate::common::*;

#[tokio::test]
async fn batch_results_in_input_order_with_reasons() {
    let d = Daemon::start(&[]);
    let mut b1 = d.device("b1").await;
    let mut b2 = d.device("b2").await;
    let r = d
        .batch(&json!([
            {"user_id":"b1","data":{"n":0}},
            {"user_id":"nobody","data":{"n":1}},
            {"user_id":"b2","data":{"n":2},"event_type":"message"},
            {"user_id":"b1","data":{"n":3}},
        ]))
        .await;
    let v = r.assert_json(200);
    assert_eq!(
        v,
        json!({"results":[
            {"index":0,"user_id":"b1","success":true},
            {"index":1,"user_id":"nobody","success":false,"error":"not_connected"},
            {"index":2,"user_id":"b2","success":true},
            {"index":3,"user_id":"b1","success":true},
        ]})
    );
    let first = b1.recv_json().await;
    assert_eq!(first["n"], 0);
    assert_eq!(first["user_id"], "b1");
    assert!(
        is_uuid(first["correlation_id"].as_str().unwrap_or("")),
        "{first}"
    );
    assert_eq!(
        b1.recv_json().await["n"],
        3,
        "items for one device keep index order"
    );
    assert_eq!(b2.recv_json().await["n"], 2);
}

#[tokio::test]
async fn batch_many_items_to_one_device_arrive_in_index_order() {
    let d = Daemon::start(&[]);
    let mut dev = d.device("b1").await;
    let items: Vec<Value> = (0..50)
        .map(|i| json!({"user_id":"b1","data":{"n":i}}))
        .collect();
    let v = d.batch(&Value::Array(items)).await.assert_json(200);
    let results = v["results"].as_array().expect("results");
    assert_eq!(results.len(), 50);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["index"], i);
        assert_eq!(r["success"], true, "{r}");
    }
    for i in 0..50 {
        assert_eq!(dev.recv_json().await["n"], i);
    }
}

#[tokio::test]
async fn batch_reroutes_mentions_per_item() {
    let d = Daemon::start(&["--public-accounts", "ci_bot"]);
    let mut bot = d.device("ci_bot").await;
    let mut u = d.device("u1").await;
    let v = d
        .batch(&json!([
            {"user_id":"u1","data":{"message":"run @ci_bot"}},
            {"user_id":"u1","data":{"message":"plain"}},
        ]))
        .await
        .assert_json(200);
    assert_eq!(
        v,
        json!({"results":[
            {"index":0,"user_id":"u1","success":true,"routed_to":"ci_bot"},
            {"index":1,"user_id":"u1","success":true},
        ]})
    );
    let got = bot.recv_json().await;
    assert_eq!(got["message"], "run @ci_bot");
    assert_eq!(got["original_sender"]["user_id"], "u1");
    assert_eq!(u.recv_json().await["message"], "plain");
}

#[tokio::test]
async fn batch_one_bad_item_is_422_naming_its_index_and_nothing_is_delivered() {
    let d = Daemon::start(&[]);
    let mut dev = d.device("b1").await;
    let r = d
        .batch(&json!([
            {"user_id":"b1","data":{"n":0}},
            {"user_id":"b1","data":{"n":1}},
            {"user_id":"b1"},
            {"user_id":"b1","data":{"n":3},"event_type":7},
        ]))
        .await;
    let errs = errors_422(&r);
    assert!(
        errs.contains(&(json!(["body", 2, "data"]), "missing".into())),
        "{errs:?}"
    );
    assert!(
        errs.contains(&(json!(["body", 3, "event_type"]), "string_type".into())),
        "{errs:?}"
    );
    // Nothing went out: the next frame the device sees is a later marker.
    d.push(&json!({"user_id":"b1","data":{"marker":true}}))
        .await
        .assert_json(200);
    assert_eq!(
        dev.recv_json().await["marker"],
        true,
        "a batch item leaked out"
    );
}

#[tokio::test]
async fn batch_item_that_is_not_an_object() {
    let d = Daemon::start(&[]);
    let r = d.batch(&json!([{"user_id":"b1","data":{}}, 5])).await;
    assert_422_has(&r, json!(["body", 1]), "dict_type");
}

#[tokio::test]
async fn batch_size_limits() {
    let d = Daemon::start(&["--max-batch", "3"]);
    let item = json!({"user_id":"x","data":{}});
    let r = d.batch(&json!([item, item, item, item])).await;
    assert_422_has(&r, json!(["body"]), "too_long");
    let v = d.batch(&json!([item, item, item])).await.assert_json(200);
    assert_eq!(v["results"].as_array().map(Vec::len), Some(3));
    assert_422_has(&d.batch(&json!([])).await, json!(["body"]), "too_short");
}

#[tokio::test]
async fn batch_that_is_not_an_array() {
    let d = Daemon::start(&[]);
    for body in [r#"{"user_id":"x","data":{}}"#, "5", "\"x\""] {
        assert_422_has(
            &d.post("/sse/push/batch", body).await,
            json!(["body"]),
            "list_type",
        );
    }
    assert_422_has(
        &d.post("/sse/push/batch", "").await,
        json!(["body"]),
        "missing",
    );
    let r = d.post("/sse/push/batch", "[{]").await;
    assert_eq!(errors_422(&r)[0].1, "json_invalid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_full_queue_fails_that_item_alone() {
    let d = Daemon::start(&STALL_FLAGS);
    let mut fast = d.device("fast").await;
    let _s = stall_device(&d, StallUntil::QueueFull).await;
    let v = d
        .batch(&json!([
            {"user_id":"slow","data":{"n":0}},
            {"user_id":"fast","data":{"n":1}},
        ]))
        .await
        .assert_json(200);
    assert_eq!(
        v,
        json!({"results":[
            {"index":0,"user_id":"slow","success":false,"error":"queue_full"},
            {"index":1,"user_id":"fast","success":true},
        ]})
    );
    assert_eq!(fast.recv_json().await["n"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_serves_distinct_devices_concurrently() {
    // The slow device's writes block; the fast device's item must not wait behind them.
    let d = Daemon::start(&["--ping-interval-secs", "60", "--pong-timeout-secs", "8"]);
    let mut fast = d.device("fast").await;
    let _s = stall_device(&d, StallUntil::WritesBlock).await;
    let mut c = d.http().await;
    c.send(&post(
        "/sse/push/batch",
        &json!([
            {"user_id":"slow","data":{"n":0}},
            {"user_id":"fast","data":{"n":1}},
        ])
        .to_string(),
    ))
    .await;
    match fast.recv(t(2.0)).await {
        Some(Incoming::Text(text)) => assert!(text.contains("\"n\":1"), "{text}"),
        other => panic!("the fast device waited behind the slow one: {other:?}"),
    }
    // The batch is answered once the slow device is dropped.
    let r = c.read_response_within(t(15.0)).await;
    let v = r.assert_json(200);
    assert_eq!(
        v["results"][1],
        json!({"index":1,"user_id":"fast","success":true})
    );
    assert_eq!(v["results"][0]["index"], 0);
}

#[tokio::test]
async fn batch_default_limit_is_1000_items() {
    let d = Daemon::start(&[]);
    let items = |n: usize| Value::Array((0..n).map(|_| json!({"user_id":"x","data":{}})).collect());
    let v = d.batch(&items(1000)).await.assert_json(200);
    assert_eq!(v["results"].as_array().map(Vec::len), Some(1000));
    assert_eq!(v["results"][999]["index"], 999);
    assert_422_has(&d.batch(&items(1001)).await, json!(["body"]), "too_long");
}

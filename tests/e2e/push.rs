//! `/sse/push`: delivery, splicing of `data` (docs/protocol.md §4, §5), validation answers
//! (§3) and the HTTP answers around it (§2).

use serde_json::{json, Value};

use crate::common::*;

fn success() -> Value {
    json!({"status": "success", "message": "Message delivered"})
}

fn partial() -> Value {
    json!({"status": "partial", "message": "User not connected"})
}

#[tokio::test]
async fn push_delivers_spliced_data() {
    let d = Daemon::start(&[]);
    let mut dev = d.device("p1").await;
    let r = d
        .post(
            "/sse/push",
            r#"{"user_id":"p1","data":{"message":"hi", "type":"notification",  "n":[1, 2]},"event_type":"message","timestamp":1704067200}"#,
        )
        .await;
    assert_eq!(r.assert_json(200), success());
    let text = dev.recv_text().await;
    // The data object travels as the bytes that arrived, fields added after them.
    assert!(
        text.contains(r#""message":"hi", "type":"notification",  "n":[1, 2]"#),
        "original bytes not kept: {text}"
    );
    let v: Value = serde_json::from_str(&text).expect("frame is JSON");
    assert_eq!(v["message"], "hi");
    assert_eq!(v["type"], "notification");
    assert_eq!(v["user_id"], "p1");
    let cid = v["correlation_id"].as_str().expect("correlation_id added");
    assert!(is_uuid(cid), "generated correlation id {cid} is not a UUID");
    assert_eq!(
        v["original_sender"],
        json!({"user_id": "p1", "timestamp": 1704067200})
    );
    assert_eq!(v.as_object().map(serde_json::Map::len), Some(6), "{v}");
}

#[tokio::test]
async fn push_generates_a_fresh_correlation_id_each_time() {
    let d = Daemon::start(&[]);
    let mut dev = d.device("p1").await;
    for _ in 0..2 {
        d.push(&json!({"user_id": "p1", "data": {}}))
            .await
            .assert_json(200);
    }
    let a = dev.recv_json().await["correlation_id"].clone();
    let b = dev.recv_json().await["correlation_id"].clone();
    assert_ne!(a, b, "correlation ids must be unique");
}

#[tokio::test]
async fn push_original_sender_timestamp_rules() {
    let d = Daemon::start(&[]);
    let mut dev = d.device("p1").await;
    let cases = [
        // data.timestamp wins over the message's.
        (
            json!({"user_id":"p1","data":{"timestamp":5},"timestamp":7}),
            json!(5),
        ),
        // else the message's timestamp.
        (
            json!({"user_id":"p1","data":{},"timestamp":7.5}),
            json!(7.5),
        ),
        // else null.
        (json!({"user_id":"p1","data":{}}), Value::Null),
        // data.timestamp: null counts as present.
        (
            json!({"user_id":"p1","data":{"timestamp":null},"timestamp":7}),
            Value::Null,
        ),
        // a null message timestamp means absent.
        (
            json!({"user_id":"p1","data":{},"timestamp":null}),
            Value::Null,
        ),
    ];
    for (msg, want) in cases {
        assert_eq!(d.push(&msg).await.assert_json(200), success(), "{msg}");
        let got = dev.recv_json().await;
        assert_eq!(
            got["original_sender"],
            json!({"user_id": "p1", "timestamp": want}),
            "for {msg}: {got}"
        );
    }
}

#[tokio::test]
async fn push_keeps_fields_already_in_data() {
    let d = Daemon::start(&[]);
    let mut dev = d.device("p1").await;
    let msg = json!({"user_id":"p1","data":{
        "user_id":"someone_else","correlation_id":"c-1","original_sender":{"x":1}}});
    d.push(&msg).await.assert_json(200);
    let got = dev.recv_json().await;
    assert_eq!(
        got,
        json!({"user_id":"someone_else","correlation_id":"c-1","original_sender":{"x":1}})
    );
}

#[tokio::test]
async fn push_duplicate_keys_inside_data_travel_as_they_are() {
    let d = Daemon::start(&[]);
    let mut dev = d.device("p1").await;
    let r = d
        .post("/sse/push", r#"{"user_id":"p1","data":{"k":1,"k":2}}"#)
        .await;
    assert_eq!(r.assert_json(200), success());
    let text = dev.recv_text().await;
    assert!(text.contains(r#""k":1,"k":2"#), "{text}");
}

#[tokio::test]
async fn push_partial_when_not_connected() {
    let d = Daemon::start(&[]);
    let r = d.push(&json!({"user_id": "nobody", "data": {}})).await;
    assert_eq!(r.assert_json(200), partial());
}

#[tokio::test]
async fn push_partial_after_the_device_left() {
    let d = Daemon::start(&[]);
    let dev = d.device("p1").await;
    dev.close().await;
    let r = d.push(&json!({"user_id": "p1", "data": {}})).await;
    assert_eq!(r.assert_json(200), partial());
}

#[tokio::test]
async fn push_frames_to_one_device_keep_request_order() {
    let d = Daemon::start(&[]);
    let mut dev = d.device("p1").await;
    let mut c = d.http().await;
    for i in 0..20 {
        c.send(&post(
            "/sse/push",
            &json!({"user_id":"p1","data":{"seq":i}}).to_string(),
        ))
        .await;
        assert_eq!(c.read_response().await.assert_json(200), success());
    }
    for i in 0..20 {
        assert_eq!(dev.recv_json().await["seq"], i);
    }
}

#[tokio::test]
async fn push_accepts_null_optionals_and_64_byte_user_id() {
    let d = Daemon::start(&[]);
    let id64 = "u".repeat(64);
    let r = d
        .push(
            &json!({"user_id": id64, "data": {}, "event_type": null, "event_id": null,
            "timestamp": null, "extra": [1, {"x": 2}]}),
        )
        .await;
    assert_eq!(r.assert_json(200), partial());
}

#[tokio::test]
async fn push_422_lists_every_missing_field() {
    let d = Daemon::start(&[]);
    let r = d.post("/sse/push", "{}").await;
    let errs = errors_422(&r);
    assert!(
        errs.contains(&(json!(["body", "user_id"]), "missing".into())),
        "{errs:?}"
    );
    assert!(
        errs.contains(&(json!(["body", "data"]), "missing".into())),
        "{errs:?}"
    );
    let v = r.json();
    assert_eq!(v["detail"][0]["msg"], "Field required", "{v}");
}

#[tokio::test]
async fn push_422_wrong_types() {
    let d = Daemon::start(&[]);
    let r = d
        .push(
            &json!({"user_id": 5, "data": "x", "event_type": 1, "event_id": true,
            "timestamp": "soon"}),
        )
        .await;
    let errs = errors_422(&r);
    for (field, ty) in [
        ("user_id", "string_type"),
        ("data", "dict_type"),
        ("event_type", "string_type"),
        ("event_id", "string_type"),
        ("timestamp", "float_type"),
    ] {
        assert!(
            errs.contains(&(json!(["body", field]), ty.to_string())),
            "{field}: {ty} missing in {errs:?}"
        );
    }
}

#[tokio::test]
async fn push_422_lengths() {
    let d = Daemon::start(&[]);
    let cases = [
        (
            json!({"user_id": "u".repeat(65), "data": {}}),
            json!(["body", "user_id"]),
        ),
        (
            json!({"user_id": "u", "data": {}, "event_type": "e".repeat(65)}),
            json!(["body", "event_type"]),
        ),
        (
            json!({"user_id": "u", "data": {}, "event_id": "e".repeat(129)}),
            json!(["body", "event_id"]),
        ),
    ];
    for (msg, loc) in cases {
        assert_422_has(&d.push(&msg).await, loc, "string_too_long");
    }
    // Empty user id: too short (the type name is pydantic's business; the place is ours).
    let errs = errors_422(&d.push(&json!({"user_id": "", "data": {}})).await);
    assert!(
        errs.iter().any(|(l, _)| *l == json!(["body", "user_id"])),
        "{errs:?}"
    );
    // Limits are in bytes: 33 two-byte characters are 66 bytes.
    let r = d
        .push(&json!({"user_id": "é".repeat(33), "data": {}}))
        .await;
    assert_422_has(&r, json!(["body", "user_id"]), "string_too_long");
    // Lengths at the limit pass.
    let r = d
        .push(
            &json!({"user_id": "u", "data": {}, "event_type": "e".repeat(64),
            "event_id": "i".repeat(128)}),
        )
        .await;
    assert_eq!(r.assert_json(200), partial());
}

#[tokio::test]
async fn push_422_control_characters() {
    let d = Daemon::start(&[]);
    let cases = [
        (r#"{"user_id":"a\u0001b","data":{}}"#, "user_id"),
        (r#"{"user_id":"a\u007fb","data":{}}"#, "user_id"),
        (r#"{"user_id":"a\nb","data":{}}"#, "user_id"),
        (
            r#"{"user_id":"a","data":{},"event_type":"x\ny"}"#,
            "event_type",
        ),
        (
            r#"{"user_id":"a","data":{},"event_type":"x\ry"}"#,
            "event_type",
        ),
        (
            r#"{"user_id":"a","data":{},"event_id":"x\u0000y"}"#,
            "event_id",
        ),
        (r#"{"user_id":"a","data":{},"event_id":"x\ny"}"#, "event_id"),
    ];
    for (body, field) in cases {
        let errs = errors_422(&d.post("/sse/push", body).await);
        assert!(
            errs.iter().any(|(l, _)| *l == json!(["body", field])),
            "{body}: {errs:?}"
        );
    }
}

#[tokio::test]
async fn push_422_correlation_id_rules() {
    let d = Daemon::start(&[]);
    let loc = json!(["body", "data", "correlation_id"]);
    for cid in [Value::Null, json!(5)] {
        let r = d
            .push(&json!({"user_id": "u", "data": {"correlation_id": cid}}))
            .await;
        assert_422_has(&r, loc.clone(), "string_type");
    }
    for cid in [String::new(), "c".repeat(129)] {
        let errs = errors_422(
            &d.push(&json!({"user_id": "u", "data": {"correlation_id": cid}}))
                .await,
        );
        assert!(errs.iter().any(|(l, _)| *l == loc), "{errs:?}");
    }
    let r = d
        .push(&json!({"user_id": "u", "data": {"correlation_id": "c".repeat(128)}}))
        .await;
    assert_eq!(r.assert_json(200), partial());
}

#[tokio::test]
async fn push_422_json_invalid_with_byte_offset() {
    let d = Daemon::start(&[]);
    // The offending byte is the `]` at byte 23.
    let r = d.post("/sse/push", r#"{"user_id":"a","data":{]}"#).await;
    assert_eq!(
        r.assert_json(422),
        json!({"detail":[{"type":"json_invalid","loc":["body",23],"msg":"JSON decode error"}]})
    );
    // Offsets count bytes, not characters: `é` is two bytes, so `]` sits at 18.
    let r = d.post("/sse/push", r#"{"user_id":"éé",]"#).await;
    assert_422_has(&r, json!(["body", 18]), "json_invalid");
    // Cut short: the offset is where more input was needed.
    let r = d.post("/sse/push", r#"{"user_id":"a""#).await;
    assert_422_has(&r, json!(["body", 14]), "json_invalid");
    // Trailing garbage after a valid value.
    let r = d.post("/sse/push", r#"{"user_id":"a","data":{}} x"#).await;
    let errs = errors_422(&r);
    assert_eq!(errs[0].1, "json_invalid", "{errs:?}");
}

#[tokio::test]
async fn push_422_duplicate_envelope_keys() {
    let d = Daemon::start(&[]);
    let r = d
        .post("/sse/push", r#"{"user_id":"a","user_id":"b","data":{}}"#)
        .await;
    let errs = errors_422(&r);
    assert!(errs.iter().any(|(_, t)| t == "value_error"), "{errs:?}");
}

#[tokio::test]
async fn push_422_empty_body_and_non_objects() {
    let d = Daemon::start(&[]);
    assert_422_has(&d.post("/sse/push", "").await, json!(["body"]), "missing");
    for body in ["[1]", "\"x\"", "5", "true"] {
        assert_422_has(
            &d.post("/sse/push", body).await,
            json!(["body"]),
            "dict_type",
        );
    }
}

#[tokio::test]
async fn push_422_bom_and_non_utf8_are_invalid_json() {
    let d = Daemon::start(&[]);
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend_from_slice(br#"{"user_id":"a","data":{}}"#);
    let bodies: [&[u8]; 2] = [&bom, b"{\"user_id\":\"\xff\",\"data\":{}}"];
    for body in bodies {
        let r = d
            .request(&post_bytes("/sse/push", "application/json", body))
            .await;
        let errs = errors_422(&r);
        assert_eq!(errs[0].1, "json_invalid", "{errs:?}");
    }
}

#[tokio::test]
async fn push_415_for_other_content_types() {
    let d = Daemon::start(&[]);
    let body = br#"{"user_id":"a","data":{}}"#;
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ] {
        let r = d.request(&post_bytes("/sse/push", ct, body)).await;
        r.assert_detail(415);
    }
    // A JSON type with parameters passes, and so does no Content-Type at all.
    let r = d
        .request(&post_bytes(
            "/sse/push",
            "application/json; charset=utf-8",
            body,
        ))
        .await;
    r.assert_json(200);
    let raw = format!(
        "POST /sse/push HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{}",
        body.len(),
        String::from_utf8_lossy(body)
    );
    d.request(raw.as_bytes()).await.assert_json(200);
}

#[tokio::test]
async fn push_415_keeps_the_connection() {
    let d = Daemon::start(&[]);
    let mut c = d.http().await;
    c.send(&post_bytes("/sse/push", "text/plain", b"{}")).await;
    c.read_response().await.assert_detail(415);
    c.assert_usable().await;
}

#[tokio::test]
async fn push_411_without_length_closes() {
    let d = Daemon::start(&[]);
    let mut c = d.http().await;
    c.send(b"POST /sse/push HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\r\n")
        .await;
    c.read_response().await.assert_detail(411);
    c.expect_closed(step()).await;
}

#[tokio::test]
async fn push_413_over_max_body_bytes_closes() {
    let d = Daemon::start(&["--max-body-bytes", "100"]);
    let body = json!({"user_id":"a","data":{"pad":"x".repeat(200)}}).to_string();
    let mut c = d.http().await;
    c.send(&post("/sse/push", &body)).await;
    c.read_response().await.assert_detail(413);
    c.expect_closed(step()).await;
    // At the limit is fine.
    let base = json!({"user_id":"a","data":{"pad":""}}).to_string().len();
    let body = json!({"user_id":"a","data":{"pad":"x".repeat(100 - base)}}).to_string();
    assert_eq!(body.len(), 100);
    d.post("/sse/push", &body).await.assert_json(200);
}

#[tokio::test]
async fn push_413_for_a_chunked_body_over_the_limit() {
    let d = Daemon::start(&["--max-body-bytes", "100"]);
    let mut c = d.http().await;
    let chunk = "x".repeat(80);
    c.send(
        format!(
            "POST /sse/push HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\n\r\n50\r\n{chunk}\r\n50\r\n{chunk}\r\n0\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    c.read_response().await.assert_detail(413);
    assert!(
        c.closes_within(step()).await,
        "413 must close the connection"
    );
}

#[tokio::test]
async fn push_check_order_413_before_415_before_422() {
    let d = Daemon::start(&["--max-body-bytes", "100"]);
    let big = "x".repeat(200);
    d.request(&post_bytes("/sse/push", "text/plain", big.as_bytes()))
        .await
        .assert_detail(413);
    d.request(&post_bytes("/sse/push", "text/plain", b"not json"))
        .await
        .assert_detail(415);
    // 404 and 405 come before 411.
    let r = d.request(b"POST /nope HTTP/1.1\r\nHost: t\r\n\r\n").await;
    r.assert_detail(404);
    let r = d.request(b"POST /health HTTP/1.1\r\nHost: t\r\n\r\n").await;
    r.assert_detail(405);
}

#[tokio::test]
async fn push_405_with_allow() {
    let d = Daemon::start(&[]);
    let mut c = d.http().await;
    for path in ["/sse/push", "/sse/push/batch", "/sse/send"] {
        for method in ["GET", "PUT", "DELETE"] {
            c.send(format!("{method} {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
                .await;
            let r = c.read_response().await;
            r.assert_detail(405);
            assert_eq!(r.header("allow"), Some("POST, OPTIONS"), "{method} {path}");
        }
    }
    for path in ["/health", "/metrics"] {
        c.send(&post(path, "{}")).await;
        let r = c.read_response().await;
        r.assert_detail(405);
        assert_eq!(r.header("allow"), Some("GET, HEAD, OPTIONS"), "{path}");
    }
    // 405 answers a well-framed request: the connection stays.
    c.assert_usable().await;
}

#[tokio::test]
async fn push_404_for_unknown_paths() {
    let d = Daemon::start(&[]);
    let mut c = d.http().await;
    for req in [
        post("/sse/pushx", "{}"),
        get("/"),
        get("/sse"),
        post("/sse/push/", "{}"),
    ] {
        c.send(&req).await;
        c.read_response().await.assert_detail(404);
    }
    c.assert_usable().await;
}

#[tokio::test]
async fn push_query_string_does_not_change_the_route() {
    let d = Daemon::start(&[]);
    d.post("/sse/push?x=1", r#"{"user_id":"a","data":{}}"#)
        .await
        .assert_json(200);
}

/// Stalls a device on a daemon started with `flags` until a push is refused, and checks that
/// the refusal is the contract's 503 and that at most three pushes (the queue's `what` and one
/// frame being written) were waiting.
async fn assert_queue_fills(flags: &[&str], what: &str) {
    let d = Daemon::start(flags);
    let s = stall_device(&d, StallUntil::QueueFull).await;
    assert_eq!(s.full().header("retry-after"), Some("1"));
    assert_eq!(
        s.full().assert_json(503),
        json!({"status":"error","message":"User queue full"})
    );
    assert!(
        s.waiting.len() <= 3,
        "more pushes waiting than {what} holds: {}",
        s.waiting.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_503_when_the_device_queue_is_full() {
    assert_queue_fills(&STALL_FLAGS, "a queue of two frames").await;
}

/// `queue_bytes` bounds a stalled device's queue by bytes even when `queue_depth` would let
/// thousands of frames wait: the push that does not fit is the contract's 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_503_when_the_device_queue_is_full_by_bytes() {
    // Two of stall_device's 60 KB frames fit in 128 KiB; the depth alone would hold 10000.
    let flags = [
        "--queue-depth",
        "10000",
        "--queue-bytes",
        "131072",
        "--ping-interval-secs",
        "60",
        "--pong-timeout-secs",
        "3",
    ];
    assert_queue_fills(&flags, "128 KiB of queue").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_stalled_device_is_dropped_and_waiting_pushes_answered() {
    // docs/protocol.md §4.4: a device that stops reading for pong_timeout_secs is disconnected;
    // nothing hangs.
    let d = Daemon::start(&STALL_FLAGS);
    let mut s = stall_device(&d, StallUntil::QueueFull).await;
    for c in &mut s.waiting {
        let r = c.read_response_within(t(10.0)).await;
        let v = r.assert_json(200);
        assert!(
            v["status"] == "partial" || v["status"] == "success",
            "waiting push answered {v}"
        );
    }
    wait_until(t(10.0), "the stalled device is dropped", || async {
        d.connections().await == 0
    })
    .await;
}

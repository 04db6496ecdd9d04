//! `/sse/send`: streamed answers from the target device (docs/protocol.md §7).

use serde_json::{json, Value};

use crate::common::*;

fn req(user: &str, cid: &str) -> Value {
    json!({"user_id": user, "data": {"message": "q", "correlation_id": cid}})
}

#[tokio::test]
async fn send_relays_answers_until_is_final() {
    let d = Daemon::start(&[]);
    let mut dev = d.device("s1").await;
    let mut s = d
        .send(
            &json!({"user_id":"s1","data":{"message":"q","type":"request","correlation_id":"c1"},
            "event_type":"message","timestamp":1704067200}),
        )
        .await;
    s.assert_stream_head();
    assert!(s.is_chunked(), "HTTP/1.1 streams are chunked");
    let got = dev.recv_json().await;
    assert_eq!(got["correlation_id"], "c1");
    assert_eq!(got["user_id"], "s1");
    assert_eq!(
        got["original_sender"],
        json!({"user_id":"s1","timestamp":1704067200})
    );
    let answers = [
        r#"{"type":"response","data":{"message":"a","correlation_id":"c1"},"correlation_id":"c1"}"#,
        r#"{"type": "chunk",   "correlation_id": "c1", "text": "é"}"#,
        r#"{"type":"response","correlation_id":"c1","is_final":true}"#,
    ];
    for a in answers {
        dev.send_text(a).await;
        let ev = s.next_event(step()).await;
        assert_eq!(ev.event.as_deref(), Some("message"));
        assert_eq!(ev.data, a, "the device's text as it arrived");
    }
    s.expect_end(step()).await;
}

#[tokio::test]
async fn send_matches_correlation_id_inside_data_and_ends_on_final_response() {
    let d = Daemon::start(&[]);
    let mut dev = d.device("s1").await;
    let mut s = d.send(&req("s1", "c2")).await;
    s.assert_stream_head();
    dev.recv_json().await;
    let a = r#"{"type":"final_response","data":{"correlation_id":"c2","message":"done"}}"#;
    dev.send_text(a).await;
    let ev = s.next_event(step()).await;
    assert_eq!(ev.data, a);
    assert_eq!(ev.event, None, "no event_type: no event line");
    s.expect_end(step()).await;
}

#[tokio::test]
async fn send_with_generated_correlation_id() {
    let d = Daemon::start(&[]);
    let mut dev = d.device("s1").await;
    let mut s = d
        .send(&json!({"user_id":"s1","data":{"message":"q"},"event_type":""}))
        .await;
    s.assert_stream_head();
    let got = dev.recv_json().await;
    let cid = got["correlation_id"]
        .as_str()
        .expect("correlation id added")
        .to_string();
    assert!(is_uuid(&cid), "{cid}");
    let a = json!({"correlation_id": cid, "is_final": true}).to_string();
    dev.send_text(&a).await;
    let ev = s.next_event(step()).await;
    assert_eq!(ev.event, None, "an empty event_type counts as absent");
    assert_eq!(ev.data, a);
    s.expect_end(step()).await;
}

#[tokio::test]
async fn send_multi_line_json_becomes_several_data_lines() {
    let d = Daemon::start(&[]);
    let mut dev = d.device("s1").await;
    let mut s = d.send(&req("s1", "ml")).await;
    dev.recv_json().await;
    let a = "{\n  \"correlation_id\": \"ml\",\n  \"is_final\": true\n}";
    dev.send_text(a).await;
    let ev = s.next_event(step()).await;
    assert_eq!(ev.lines, 4, "one data: line per line of the message");
    assert_eq!(ev.data, a);
    s.expect_end(step()).await;
}

#[tokio::test]
async fn send_only_json_true_in_is_final_ends_the_stream() {
    let d = Daemon::start(&[]);
    let mut dev = d.device("s1").await;
    let mut s = d.send(&req("s1", "f1")).await;
    dev.recv_json().await;
    for a in [
        r#"{"correlation_id":"f1","is_final":"true"}"#,
        r#"{"correlation_id":"f1","is_final":1}"#,
        r#"{"correlation_id":"f1","is_final":false}"#,
        r#"{"correlation_id":"f1","data":{"is_final":true}}"#,
        r#"{"correlation_id":"f1","type":"chunk"}"#,
        r#"{"correlation_id":"f1","is_final":true}"#,
    ] {
        dev.send_text(a).await;
        assert_eq!(s.next_event(step()).await.data, a);
    }
    s.expect_end(step()).await;
}

#[tokio::test]
async fn send_ignores_uncorrelated_and_other_devices_messages() {
    let d = Daemon::start(&[]);
    let mut target = d.device("s1").await;
    let mut other = d.device("s2").await;
    let mut s = d.send(&req("s1", "own")).await;
    target.recv_json().await;
    // Another device cannot answer, even with the right id.
    other
        .send_text(r#"{"correlation_id":"own","is_final":true,"from":"s2"}"#)
        .await;
    // The target's messages for other ids are not this stream's.
    target
        .send_text(r#"{"correlation_id":"not-own","is_final":true}"#)
        .await;
    target.send_text(r#"{"message":"no id at all"}"#).await;
    // The top-level id wins over the one in data.
    target
        .send_text(
            r#"{"correlation_id":"not-own","data":{"correlation_id":"own"},"is_final":true}"#,
        )
        .await;
    let a = r#"{"correlation_id":"own","is_final":true,"from":"s1"}"#;
    target.send_text(a).await;
    let ev = s.next_event(step()).await;
    assert_eq!(
        ev.data, a,
        "only the target device's correlated message is relayed"
    );
    s.expect_end(step()).await;
}

#[tokio::test]
async fn send_times_out_without_an_answer() {
    let d = Daemon::start(&["--send-timeout-secs", "1"]);
    let mut dev = d.device("s1").await;
    let started = tokio::time::Instant::now();
    let mut s = d
        .send(&json!({"user_id":"s1","data":{"correlation_id":"t1"},"event_type":"message"}))
        .await;
    s.assert_stream_head();
    dev.recv_json().await;
    let ev = s.next_event(t(5.0)).await;
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(900),
        "timed out too early: {:?}",
        started.elapsed()
    );
    assert_eq!(
        ev.event.as_deref(),
        Some("message"),
        "error events carry the event type too"
    );
    assert_eq!(
        ev.json(),
        json!({"error":"Timeout waiting for response","correlation_id":"t1"})
    );
    s.expect_end(step()).await;
}

#[tokio::test]
async fn send_timeout_restarts_with_each_correlated_message() {
    let d = Daemon::start(&["--send-timeout-secs", "2"]);
    let mut dev = d.device("s1").await;
    let mut s = d.send(&req("s1", "t2")).await;
    dev.recv_json().await;
    let started = tokio::time::Instant::now();
    // 5 answers 0.8 s apart keep the stream past twice its timeout.
    for i in 0..5 {
        tokio::time::sleep(std::time::Duration::from_millis(800)).await;
        let a = json!({"correlation_id":"t2","type":"chunk","i":i}).to_string();
        dev.send_text(&a).await;
        assert_eq!(s.next_event(step()).await.data, a, "stream closed early");
    }
    assert!(started.elapsed() >= std::time::Duration::from_secs(4));
    s.expect_error_end("Timeout waiting for response", "t2", t(5.0))
        .await;
}

#[tokio::test]
async fn send_device_disconnect_ends_the_stream() {
    let d = Daemon::start(&[]);
    let mut dev = d.device("s1").await;
    let mut s = d.send(&req("s1", "gone")).await;
    dev.recv_json().await;
    dev.send_text(r#"{"correlation_id":"gone","type":"chunk"}"#)
        .await;
    s.next_event(step()).await;
    dev.close().await;
    s.expect_error_end("User disconnected", "gone", step())
        .await;
}

#[tokio::test]
async fn send_device_vanishing_without_close_ends_the_stream() {
    let d = Daemon::start(&[]);
    let mut raw = RawWs::upgrade(&d, "user_id=s1").await;
    wait_until(step(), "device registered", || async {
        d.connections().await == 1
    })
    .await;
    let mut s = d.send(&req("s1", "gone2")).await;
    let f = raw.read_frame(step()).await.expect("the request frame");
    assert_eq!(f.opcode, 1);
    drop(raw);
    s.expect_error_end("User disconnected", "gone2", step())
        .await;
}

#[tokio::test]
async fn send_to_a_device_not_connected() {
    let d = Daemon::start(&[]);
    let mut s = d.send(&req("nobody", "nc")).await;
    s.assert_stream_head();
    s.expect_error_end("User not connected", "nc", step()).await;
    // With a generated id the event names that id.
    let mut s = d
        .send(&json!({"user_id":"nobody","data":{},"event_type":"message"}))
        .await;
    s.assert_stream_head();
    let ev = s.next_event(step()).await;
    assert_eq!(ev.event.as_deref(), Some("message"));
    let v = ev.json();
    assert_eq!(v["error"], "User not connected");
    assert!(is_uuid(v["correlation_id"].as_str().unwrap_or("")), "{v}");
    s.expect_end(step()).await;
}

#[tokio::test]
async fn send_409_for_a_correlation_id_in_use() {
    let d = Daemon::start(&[]);
    let mut s1 = d.device("s1").await;
    let _s2 = d.device("s2").await;
    let mut first = d.send(&req("s1", "dup")).await;
    first.assert_stream_head();
    s1.recv_json().await;
    // Same device, and another device: one namespace.
    for user in ["s1", "s2", "nobody"] {
        let r = d.post("/sse/send", &req(user, "dup").to_string()).await;
        r.assert_detail(409);
    }
    // The first stream was not stolen.
    let a = r#"{"correlation_id":"dup","is_final":true}"#;
    s1.send_text(a).await;
    assert_eq!(first.next_event(step()).await.data, a);
    first.expect_end(step()).await;
    // Finished: the id is free again.
    let again = d.send(&req("s1", "dup")).await;
    again.assert_stream_head();
}

#[tokio::test]
async fn send_503_over_max_pending_sends() {
    let d = Daemon::start(&["--max-pending-sends", "1"]);
    let _dev = d.device("s1").await;
    let first = d.send(&req("s1", "p1")).await;
    first.assert_stream_head();
    let r = d.post("/sse/send", &req("s1", "p2").to_string()).await;
    r.assert_json(503);
    assert_eq!(r.header("retry-after"), Some("1"));
}

#[tokio::test]
async fn send_checks_run_422_409_503_then_not_connected() {
    let d = Daemon::start(&["--max-pending-sends", "1"]);
    let _dev = d.device("s1").await;
    let first = d.send(&req("s1", "busy")).await;
    first.assert_stream_head();
    // Invalid and in use: 422.
    let r = d
        .post(
            "/sse/send",
            &json!({"user_id":"","data":{"correlation_id":"busy"}}).to_string(),
        )
        .await;
    errors_422(&r);
    // In use and over capacity: 409.
    d.post("/sse/send", &req("s1", "busy").to_string())
        .await
        .assert_detail(409);
    // Over capacity and not connected: 503.
    d.post("/sse/send", &req("nobody", "other").to_string())
        .await
        .assert_json(503);
}

#[tokio::test]
async fn send_keepalive_comments() {
    let d = Daemon::start(&["--keepalive-secs", "1"]);
    let _dev = d.device("s1").await;
    let mut s = d.send(&req("s1", "ka")).await;
    s.assert_stream_head();
    let mut comments = 0;
    for _ in 0..2 {
        match s.next(t(3.0)).await {
            SseItem::Comment(c) => {
                assert_eq!(c, "keepalive");
                comments += 1;
            }
            other => panic!("expected a keepalive comment, got {other:?}"),
        }
    }
    assert_eq!(comments, 2);
}

#[tokio::test]
async fn send_upstream_leaving_frees_the_correlation_id() {
    let d = Daemon::start(&["--keepalive-secs", "1"]);
    let mut dev = d.device("s1").await;
    let first = d.send(&req("s1", "left")).await;
    first.assert_stream_head();
    dev.recv_json().await;
    drop(first);
    // Freed at the next keepalive write at the latest.
    let deadline = tokio::time::Instant::now() + t(5.0);
    let mut s = loop {
        let s = d.send(&req("s1", "left")).await;
        if s.head.status == 200 {
            break s;
        }
        assert_eq!(s.head.status, 409, "while the old entry is there");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the correlation id was not freed after the upstream left"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    s.assert_stream_head();
    let a = r#"{"correlation_id":"left","is_final":true}"#;
    // The device gets the second request; its answer goes to the new stream.
    assert_eq!(dev.recv_json().await["correlation_id"], "left");
    dev.send_text(a).await;
    assert_eq!(s.next_event(step()).await.data, a);
    s.expect_end(step()).await;
}

#[tokio::test]
async fn send_upstream_leaving_frees_a_pending_slot() {
    let d = Daemon::start(&["--keepalive-secs", "1", "--max-pending-sends", "1"]);
    let _dev = d.device("s1").await;
    let first = d.send(&req("s1", "a")).await;
    first.assert_stream_head();
    drop(first);
    let deadline = tokio::time::Instant::now() + t(5.0);
    loop {
        let s = d.send(&req("s1", "b")).await;
        if s.head.status == 200 {
            break;
        }
        assert_eq!(s.head.status, 503);
        assert!(tokio::time::Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn send_connection_stays_usable_after_the_stream() {
    let d = Daemon::start(&[]);
    let mut dev = d.device("s1").await;
    let mut s = d.send(&req("s1", "ka1")).await;
    dev.recv_json().await;
    dev.send_text(r#"{"correlation_id":"ka1","is_final":true}"#)
        .await;
    s.next_event(step()).await;
    s.expect_end(step()).await;
    let mut c = s.http;
    c.assert_usable().await;
    // And another stream on the same connection.
    c.send(&post("/sse/send", &req("s1", "ka2").to_string()))
        .await;
    let mut s = SseStream::open(c).await;
    s.assert_stream_head();
    dev.recv_json().await;
    dev.send_text(r#"{"correlation_id":"ka2","is_final":true}"#)
        .await;
    s.next_event(step()).await;
    s.expect_end(step()).await;
}

#[tokio::test]
async fn send_http10_stream_is_close_delimited() {
    let d = Daemon::start(&[]);
    let mut dev = d.device("s1").await;
    let body = req("s1", "h10").to_string();
    let mut c = d.http().await;
    c.send(
        format!(
            "POST /sse/send HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await;
    let mut s = SseStream::open(c).await;
    s.assert_stream_head();
    assert_eq!(s.head.version, 1, "responses say HTTP/1.1");
    assert!(!s.is_chunked(), "no chunked responses to HTTP/1.0");
    assert!(s.head.header("content-length").is_none());
    dev.recv_json().await;
    let a = r#"{"correlation_id":"h10","is_final":true}"#;
    dev.send_text(a).await;
    assert_eq!(s.next_event(step()).await.data, a);
    // The stream ends by closing the connection.
    s.expect_end(step()).await;
}

#[tokio::test]
async fn send_pipelined_request_waits_for_the_stream() {
    let d = Daemon::start(&[]);
    let mut dev = d.device("s1").await;
    let mut c = d.http().await;
    let mut bytes = post("/sse/send", &req("s1", "pl").to_string());
    bytes.extend_from_slice(&get("/health"));
    c.send(&bytes).await;
    let mut s = SseStream::open(c).await;
    s.assert_stream_head();
    dev.recv_json().await;
    dev.send_text(r#"{"correlation_id":"pl","is_final":true}"#)
        .await;
    s.next_event(step()).await;
    s.expect_end(step()).await;
    let r = s.http.read_response().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "healthy");
}

#[tokio::test]
async fn send_upstream_leaving_frees_the_id_without_waiting_for_a_keepalive() {
    // docs/protocol.md §7.7: freed at once; the daemon watches the streaming connection for
    // end-of-file.
    let d = Daemon::start(&["--keepalive-secs", "60"]);
    let mut dev = d.device("s1").await;
    let first = d.send(&req("s1", "eof")).await;
    first.assert_stream_head();
    dev.recv_json().await;
    drop(first);
    wait_until(t(3.0), "the id is free again", || async {
        let mut s = d.send(&req("nobody", "eof")).await;
        if s.head.status != 200 {
            return false;
        }
        s.expect_error_end("User not connected", "eof", step())
            .await;
        true
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_503_when_the_device_queue_is_full() {
    let d = Daemon::start(&STALL_FLAGS);
    let _s = stall_device(&d, StallUntil::QueueFull).await;
    let r = d.post("/sse/send", &req("slow", "qf").to_string()).await;
    r.assert_json(503);
    assert_eq!(r.header("retry-after"), Some("1"));
    // The refused send left its id free.
    let mut s = d.send(&req("nobody", "qf")).await;
    s.assert_stream_head();
    s.expect_error_end("User not connected", "qf", step()).await;
}

#[tokio::test]
async fn send_stream_outlives_the_idle_timeout() {
    let d = Daemon::start(&["--idle-timeout-secs", "1", "--keepalive-secs", "1"]);
    let mut dev = d.device("s1").await;
    let mut s = d.send(&req("s1", "long")).await;
    s.assert_stream_head();
    dev.recv_json().await;
    // Three keepalives: the stream is well past the idle timeout.
    for _ in 0..3 {
        assert_eq!(s.next(t(3.0)).await, SseItem::Comment("keepalive".into()));
    }
    let a = r#"{"correlation_id":"long","is_final":true}"#;
    dev.send_text(a).await;
    assert_eq!(s.next_event(step()).await.data, a);
    s.expect_end(step()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_concurrent_streams_to_one_device_get_their_own_answers() {
    let d = Daemon::start(&[]);
    let mut dev = d.device("s1").await;
    let mut streams = Vec::new();
    for i in 0..5 {
        let s = d.send(&req("s1", &format!("cc{i}"))).await;
        s.assert_stream_head();
        assert_eq!(dev.recv_json().await["correlation_id"], format!("cc{i}"));
        streams.push(s);
    }
    // Answers interleaved, newest first.
    for round in 0..2 {
        for i in (0..5).rev() {
            let a = json!({"correlation_id": format!("cc{i}"), "round": round,
                "is_final": round == 1})
            .to_string();
            dev.send_text(&a).await;
        }
    }
    for (i, s) in streams.iter_mut().enumerate() {
        for round in 0..2 {
            let v = s.next_event(step()).await.json();
            assert_eq!(v["correlation_id"], format!("cc{i}"));
            assert_eq!(v["round"], round);
        }
        s.expect_end(step()).await;
    }
}

#[tokio::test]
async fn send_push_and_batch_frames_keep_request_order() {
    let d = Daemon::start(&[]);
    let mut dev = d.device("s1").await;
    d.push(&json!({"user_id":"s1","data":{"n":0}}))
        .await
        .assert_json(200);
    let s = d
        .send(&json!({"user_id":"s1","data":{"n":1,"correlation_id":"o1"}}))
        .await;
    s.assert_stream_head();
    d.batch(&json!([{"user_id":"s1","data":{"n":2}},{"user_id":"s1","data":{"n":3}}]))
        .await
        .assert_json(200);
    d.push(&json!({"user_id":"s1","data":{"n":4}}))
        .await
        .assert_json(200);
    for n in 0..5 {
        assert_eq!(dev.recv_json().await["n"], n);
    }
}

#[tokio::test]
async fn send_stream_with_connection_close_closes_after_the_end() {
    let d = Daemon::start(&[]);
    let mut dev = d.device("s1").await;
    let body = req("s1", "cc").to_string();
    let mut c = d.http().await;
    c.send(
        format!(
            "POST /sse/send HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await;
    let mut s = SseStream::open(c).await;
    s.assert_stream_head();
    dev.recv_json().await;
    dev.send_text(r#"{"correlation_id":"cc","is_final":true}"#)
        .await;
    s.next_event(step()).await;
    s.expect_end(step()).await;
    s.http.expect_closed(step()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_upstream_that_stops_reading_does_not_stall_the_device() {
    // The upstream never reads its stream; the device keeps answering it. The device's session
    // (its heartbeat, its pushes) must not be held up by the stalled stream.
    let d = Daemon::start(&[
        "--ping-interval-secs",
        "1",
        "--pong-timeout-secs",
        "2",
        "--queue-depth",
        "4",
    ]);
    let mut dev = d.device("s1").await;
    let mut up = Http::connect_small_rcvbuf(d.addr, 4096).await;
    up.send(&post("/sse/send", &req("s1", "stall").to_string()))
        .await;
    assert_eq!(dev.recv_json().await["correlation_id"], "stall");
    let pad = "z".repeat(30_000);
    let started = tokio::time::Instant::now();
    for i in 0..100 {
        let a = json!({"correlation_id":"stall","type":"chunk","i":i,"pad":pad}).to_string();
        dev.send_text(&a).await;
        if started.elapsed() > t(6.0) {
            break;
        }
    }
    // Past the pong timeout: the device is still served.
    let r = d.push(&json!({"user_id":"s1","data":{"marker":1}})).await;
    assert_eq!(r.assert_json(200)["status"], "success");
    let deadline = tokio::time::Instant::now() + step();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match dev.recv(left).await {
            Some(Incoming::Text(t)) if t.contains("marker") => break,
            Some(Incoming::Text(_)) => {}
            other => panic!("device session ended behind a stalled upstream: {other:?}"),
        }
    }
    assert_eq!(d.connections().await, 1);
    drop(up);
}

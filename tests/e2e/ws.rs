//! `/ws`: the upgrade checks, duplicates, the table limit, frames from devices and the
//! heartbeat (docs/protocol.md §8).

use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

fn handshake(target: &str, extra: &str) -> Vec<u8> {
    format!(
        "GET {target} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    )
    .into_bytes()
}

fn v13() -> &'static str {
    "Sec-WebSocket-Version: 13\r\n"
}

#[tokio::test]
async fn ws_400_for_missing_or_invalid_user_id() {
    let d = Daemon::start(&[]);
    let long = "u".repeat(65);
    let targets = [
        "/ws".to_string(),
        "/ws?".to_string(),
        "/ws?user_id=".to_string(),
        "/ws?other=1".to_string(),
        format!("/ws?user_id={long}"),
        "/ws?user_id=a%01b".to_string(),
        "/ws?user_id=a&user_id=b".to_string(),
        "/ws?user_id=a&user_id=a".to_string(),
    ];
    for target in targets {
        let r = d.request(&handshake(&target, v13())).await;
        r.assert_detail(400);
        assert!(r.header("upgrade").is_none(), "{target}");
    }
    assert_eq!(d.connections().await, 0);
}

/// The texts of docs/protocol.md §8.3 row 4, first failure from the left: a repeat is named
/// before a broken pair that follows it, a broken pair before a repeat that follows it.
#[tokio::test]
async fn ws_400_details_name_the_first_query_fault() {
    let d = Daemon::start(&[]);
    let cases = [
        ("/ws?user_id=a&user_id=b", "user_id given more than once"),
        (
            "/ws?user_id=a&x=1&user_id=a",
            "user_id given more than once",
        ),
        (
            "/ws?user_id=a&user_id=b&t=%zz",
            "user_id given more than once",
        ),
        ("/ws?t=%zz&user_id=a&user_id=b", "Malformed query string"),
        ("/ws?user_id=a&t=%C3", "Malformed query string"),
        ("/ws?user_id=&user_id=b", "Invalid user_id"),
        ("/ws?other=1", "Missing user_id query parameter"),
    ];
    for (target, detail) in cases {
        let r = d.request(&handshake(target, v13())).await;
        let v = r.assert_detail(400);
        assert_eq!(v["detail"], detail, "{target}");
    }
}

#[tokio::test]
async fn ws_400_without_sec_websocket_key() {
    let d = Daemon::start(&[]);
    let r = d
        .request(
            b"GET /ws?user_id=a HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Version: 13\r\n\r\n",
        )
        .await;
    r.assert_detail(400);
}

#[tokio::test]
async fn ws_426_without_upgrade_headers() {
    let d = Daemon::start(&[]);
    let r = d.get("/ws?user_id=a").await;
    r.assert_detail(426);
    assert_eq!(
        r.header("upgrade").map(str::to_ascii_lowercase).as_deref(),
        Some("websocket")
    );
    // The upgrade check comes before the user_id check.
    d.get("/ws").await.assert_detail(426);
}

#[tokio::test]
async fn ws_426_for_a_wrong_version() {
    let d = Daemon::start(&[]);
    let r = d
        .request(&handshake("/ws?user_id=a", "Sec-WebSocket-Version: 8\r\n"))
        .await;
    r.assert_detail(426);
    assert_eq!(r.header("sec-websocket-version").map(str::trim), Some("13"));
}

#[tokio::test]
async fn ws_percent_decoded_user_id() {
    let d = Daemon::start(&[]);
    for (query, id) in [
        ("user_id=dev%201", "dev 1"),
        ("user_id=a+b", "a b"),
        ("x=1&user_id=%C3%A9", "é"),
    ] {
        let mut dev = Device::connect(&d, query).await;
        wait_until(step(), "device registered", || async {
            d.connections().await == 1
        })
        .await;
        let r = d.push(&json!({"user_id": id, "data": {"n": 1}})).await;
        assert_eq!(r.assert_json(200)["status"], "success", "{query}");
        assert_eq!(dev.recv_json().await["user_id"], id);
        dev.close().await;
        assert_eq!(d.connections().await, 0);
    }
}

#[tokio::test]
async fn ws_duplicate_is_rejected_with_1008() {
    let d = Daemon::start(&[]);
    let mut old = d.device("dup").await;
    let mut new = Device::connect(&d, "user_id=dup").await;
    assert_eq!(
        new.expect_close(step()).await,
        (1008, "User already connected".to_string())
    );
    assert_eq!(d.connections().await, 1);
    // The first session is untouched.
    let r = d.push(&json!({"user_id":"dup","data":{"n":1}})).await;
    assert_eq!(r.assert_json(200)["status"], "success");
    assert_eq!(old.recv_json().await["n"], 1);
}

#[tokio::test]
async fn ws_duplicate_replaces_with_the_replace_policy() {
    let d = Daemon::start(&["--on-duplicate", "replace"]);
    let mut old = d.device("dup").await;
    let mut stream = d
        .send(&json!({"user_id":"dup","data":{"correlation_id":"r1"}}))
        .await;
    stream.assert_stream_head();
    old.recv_json().await;
    let mut new = Device::connect(&d, "user_id=dup").await;
    assert_eq!(
        old.expect_close(step()).await,
        (1008, "Replaced by new connection".to_string())
    );
    // The old session's open streams end.
    stream
        .expect_error_end("User disconnected", "r1", step())
        .await;
    wait_until(step(), "the new session takes the id", || async {
        d.push(&json!({"user_id":"dup","data":{"n":2}}))
            .await
            .json()["status"]
            == "success"
    })
    .await;
    assert_eq!(new.recv_json().await["n"], 2);
    assert_eq!(d.connections().await, 1);
}

#[tokio::test]
async fn ws_table_full_closes_with_1013() {
    let d = Daemon::start(&["--max-connections", "2"]);
    let a = d.device("a").await;
    let _b = d.device("b").await;
    let mut c = Device::connect(&d, "user_id=c").await;
    let (code, _) = c.expect_close(step()).await;
    assert_eq!(code, 1013);
    assert_eq!(d.connections().await, 2);
    // A slot freed is a slot usable.
    a.close().await;
    let mut c = d.device("c").await;
    d.push(&json!({"user_id":"c","data":{}}))
        .await
        .assert_json(200);
    c.recv_json().await;
}

#[tokio::test]
async fn ws_invalid_json_gets_an_error_frame_and_the_session_goes_on() {
    let d = Daemon::start(&[]);
    let mut dev = d.device("j").await;
    dev.send_text("not json {").await;
    assert_eq!(
        dev.recv_json().await,
        json!({"type":"error","message":"invalid JSON"})
    );
    let r = d.push(&json!({"user_id":"j","data":{"n":1}})).await;
    assert_eq!(r.assert_json(200)["status"], "success");
    assert_eq!(dev.recv_json().await["n"], 1);
}

#[tokio::test]
async fn ws_json_that_is_not_an_object_gets_an_error_frame() {
    let d = Daemon::start(&[]);
    let mut dev = d.device("j").await;
    for text in ["[1,2]", "5", "\"x\"", "null"] {
        dev.send_text(text).await;
        assert_eq!(
            dev.recv_json().await,
            json!({"type":"error","message":"expected a JSON object"}),
            "{text}"
        );
    }
    // Objects without a waiting stream get no answer: the next frame is a later push.
    dev.send_text(r#"{"type":"response","correlation_id":"nobody-waits"}"#)
        .await;
    d.push(&json!({"user_id":"j","data":{"n":1}}))
        .await
        .assert_json(200);
    assert_eq!(dev.recv_json().await["n"], 1);
}

#[tokio::test]
async fn ws_binary_frame_closes_1003() {
    let d = Daemon::start(&[]);
    let mut dev = d.device("bin").await;
    assert!(dev.send_message(Message::binary(vec![1u8, 2, 3])).await);
    let (code, _) = dev.expect_close(step()).await;
    assert_eq!(code, 1003);
    wait_until(step(), "the session left the table", || async {
        d.connections().await == 0
    })
    .await;
}

#[tokio::test]
async fn ws_oversize_message_closes_1009() {
    let d = Daemon::start(&["--max-message-bytes", "1024"]);
    let mut dev = d.device("big").await;
    // At the limit is fine.
    dev.send_text(&format!("{{\"pad\":\"{}\"}}", "x".repeat(1024 - 10)))
        .await;
    dev.send_text(&"x".repeat(2000)).await;
    let (code, _) = dev.expect_close(step()).await;
    assert_eq!(code, 1009);
}

#[tokio::test]
async fn ws_oversize_fragmented_message_closes_1009() {
    // Every frame is small; the message they make is not.
    let d = Daemon::start(&["--max-message-bytes", "1024"]);
    let mut raw = RawWs::upgrade(&d, "user_id=frag").await;
    let part = vec![b'x'; 600];
    assert!(raw.send_frame(false, 1, &part).await);
    let _ = raw.send_frame(false, 0, &part).await;
    let _ = raw.send_frame(true, 0, &part).await;
    assert_eq!(raw.expect_close(step()).await, Some(1009));
}

#[tokio::test]
async fn ws_fragmented_message_within_limit_is_one_message() {
    let d = Daemon::start(&[]);
    let mut raw = RawWs::upgrade(&d, "user_id=frag").await;
    assert!(raw.send_frame(false, 1, b"[1,").await);
    assert!(raw.send_frame(true, 0, b"2]").await);
    let f = raw.read_frame(step()).await.expect("an error frame");
    assert_eq!(f.opcode, 1);
    let v: serde_json::Value = serde_json::from_slice(&f.payload).expect("JSON");
    assert_eq!(
        v,
        json!({"type":"error","message":"expected a JSON object"})
    );
}

#[tokio::test]
async fn ws_server_frames_are_unmasked_text() {
    let d = Daemon::start(&[]);
    let mut raw = RawWs::upgrade(&d, "user_id=r").await;
    wait_until(step(), "device registered", || async {
        d.connections().await == 1
    })
    .await;
    d.push(&json!({"user_id":"r","data":{"n":1}}))
        .await
        .assert_json(200);
    let f = raw.read_frame(step()).await.expect("a frame");
    assert!(f.fin);
    assert_eq!(f.opcode, 1);
    let v: serde_json::Value = serde_json::from_slice(&f.payload).expect("JSON");
    assert_eq!(v["n"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_heartbeat_drops_a_device_that_never_answers_pings() {
    let d = Daemon::start(&["--ping-interval-secs", "1", "--pong-timeout-secs", "1"]);
    let mut raw = RawWs::upgrade(&d, "user_id=mute").await;
    let started = tokio::time::Instant::now();
    let mut pings = 0;
    // Read (never answer) until the daemon ends the session.
    loop {
        match raw.read_frame(t(5.0)).await {
            None => break,
            Some(f) if f.opcode == 9 => pings += 1,
            Some(f) if f.opcode == 8 => break,
            Some(f) => panic!("unexpected frame {f:?}"),
        }
        assert!(
            started.elapsed() < t(6.0),
            "session not ended by the heartbeat"
        );
    }
    assert!(pings >= 1, "no ping before the drop");
    assert!(
        started.elapsed() < t(5.0),
        "dropped after {:?}",
        started.elapsed()
    );
    wait_until(step(), "the dropped device left the table", || async {
        d.connections().await == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_heartbeat_keeps_a_device_that_answers() {
    let d = Daemon::start(&["--ping-interval-secs", "1", "--pong-timeout-secs", "1"]);
    let mut dev = d.device("alive").await;
    // tungstenite answers pings while its reader runs; stay past several ping rounds.
    let until = tokio::time::Instant::now() + std::time::Duration::from_millis(3500);
    let mut n = 0;
    while tokio::time::Instant::now() < until {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let r = d.push(&json!({"user_id":"alive","data":{"n":n}})).await;
        assert_eq!(r.assert_json(200)["status"], "success", "after {n} rounds");
        assert_eq!(dev.recv_json().await["n"], n);
        n += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_raw_device_that_pongs_stays() {
    let d = Daemon::start(&["--ping-interval-secs", "1", "--pong-timeout-secs", "1"]);
    let mut raw = RawWs::upgrade(&d, "user_id=ponger").await;
    let mut pongs = 0;
    while pongs < 4 {
        let f = raw
            .read_frame(t(3.0))
            .await
            .expect("session dropped though it answers");
        assert_eq!(f.opcode, 9, "{f:?}");
        assert!(raw.send_frame(true, 10, &f.payload).await);
        pongs += 1;
    }
    assert_eq!(d.connections().await, 1);
}

#[tokio::test]
async fn ws_health_counts_a_closed_device_out_at_once() {
    let d = Daemon::start(&[]);
    let a = d.device("a").await;
    let _b = d.device("b").await;
    assert_eq!(d.connections().await, 2);
    a.close().await;
    // No waiting: the close handshake is done, so the next request counts it out.
    assert_eq!(d.connections().await, 1);
    assert_eq!(d.get("/metrics").await.json()["active_connections"], 1);
}

#[tokio::test]
async fn ws_closed_device_frees_its_user_id() {
    let d = Daemon::start(&[]);
    let a = d.device("same").await;
    a.close().await;
    let mut again = Device::connect(&d, "user_id=same").await;
    wait_until(step(), "the new session is counted", || async {
        d.connections().await == 1
    })
    .await;
    // Not rejected as a duplicate.
    d.push(&json!({"user_id":"same","data":{"n":1}})).await;
    match again.recv(step()).await {
        Some(Incoming::Text(t)) => assert!(t.contains("\"n\":1"), "{t}"),
        other => panic!("reconnected device got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_any_frame_from_the_device_counts_as_life() {
    // The device never answers a ping, but keeps sending frames.
    let d = Daemon::start(&["--ping-interval-secs", "1", "--pong-timeout-secs", "1"]);
    let mut raw = RawWs::upgrade(&d, "user_id=chatty").await;
    let until = tokio::time::Instant::now() + std::time::Duration::from_millis(4000);
    while tokio::time::Instant::now() < until {
        assert!(raw.send_frame(true, 1, b"{}").await, "session ended");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    assert_eq!(
        d.connections().await,
        1,
        "a device that sends frames was dropped"
    );
}

#[tokio::test]
async fn ws_session_outlives_the_idle_timeout() {
    let d = Daemon::start(&["--idle-timeout-secs", "1"]);
    let mut dev = d.device("idle").await;
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let r = d.push(&json!({"user_id":"idle","data":{"n":1}})).await;
    assert_eq!(r.assert_json(200)["status"], "success");
    assert_eq!(dev.recv_json().await["n"], 1);
}

#[tokio::test]
async fn ws_frame_sent_with_the_handshake_is_not_lost() {
    // A client may send its first frame in the same write as the upgrade request.
    let d = Daemon::start(&[]);
    let mut c = d.http().await;
    let mut bytes = upgrade_request("user_id=eager");
    let mask = [1u8, 2, 3, 4];
    bytes.extend([0x81, 0x80 | 3]);
    bytes.extend(mask);
    bytes.extend(b"[1]".iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    c.send(&bytes).await;
    let head = c.read_head().await;
    assert_eq!(head.status, 101);
    let mut raw = RawWs { http: c };
    let f = raw
        .read_frame(step())
        .await
        .expect("an answer to the early frame");
    let v: serde_json::Value = serde_json::from_slice(&f.payload).expect("JSON");
    assert_eq!(
        v,
        json!({"type":"error","message":"expected a JSON object"})
    );
}

#[tokio::test]
async fn ws_ping_from_the_device_gets_a_pong() {
    let d = Daemon::start(&[]);
    let mut raw = RawWs::upgrade(&d, "user_id=pinger").await;
    assert!(raw.send_frame(true, 9, b"hello").await);
    let f = raw.read_frame(step()).await.expect("a pong");
    assert_eq!((f.opcode, f.payload.as_slice()), (10, &b"hello"[..]));
}

#[tokio::test]
async fn ws_upgrade_header_forms_browsers_send() {
    let d = Daemon::start(&[]);
    let id64 = "d".repeat(64);
    let mut kept: Vec<Http> = Vec::new();
    for (i, (upgrade, connection)) in [
        ("websocket", "keep-alive, Upgrade"),
        ("WebSocket", "upgrade"),
    ]
    .into_iter()
    .enumerate()
    {
        let user = format!("{}{i}", &id64[..63]);
        let mut c = d.http().await;
        c.send(
            format!(
                "GET /ws?user_id={user} HTTP/1.1\r\nHost: t\r\nUpgrade: {upgrade}\r\n\
                 Connection: {connection}\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                 Sec-WebSocket-Version: 13\r\nOrigin: http://t\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
        let head = c.read_head().await;
        assert_eq!(
            head.status, 101,
            "Upgrade: {upgrade}, Connection: {connection}"
        );
        kept.push(c);
    }
    wait_until(step(), "both 64-byte ids connected", || async {
        d.connections().await == 2
    })
    .await;
}

#[tokio::test]
async fn ws_large_frame_reaches_the_device_intact() {
    let d = Daemon::start(&[]);
    let mut dev = d.device("big").await;
    let pad = "y".repeat(60_000);
    let r = d.push(&json!({"user_id":"big","data":{"pad": pad}})).await;
    assert_eq!(r.assert_json(200)["status"], "success");
    assert_eq!(dev.recv_json().await["pad"].as_str(), Some(pad.as_str()));
}

#[tokio::test]
async fn ws_deeply_nested_device_message_does_no_harm() {
    let d = Daemon::start(&[]);
    let mut dev = d.device("deep").await;
    dev.send_text(&"[".repeat(50_000)).await;
    dev.send_text(&format!(
        "{{\"a\":{}1{}}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    ))
    .await;
    // Whatever the answers, the session and the daemon go on.
    d.push(&json!({"user_id":"deep","data":{"marker":true}}))
        .await
        .assert_json(200);
    for _ in 0..3 {
        match dev.recv(step()).await {
            Some(Incoming::Text(t)) if t.contains("marker") => return,
            Some(Incoming::Text(_)) => {}
            other => panic!("session ended: {other:?}"),
        }
    }
    panic!("the marker never arrived");
}

// The decisions on close codes (docs/protocol.md §8.8, §14).

#[tokio::test]
async fn decision_invalid_utf8_text_closes_1007() {
    let d = Daemon::start(&[]);
    let mut raw = RawWs::upgrade(&d, "user_id=u8").await;
    assert!(raw.send_frame(true, 1, b"{\"a\":\"\xff\"}").await);
    assert_eq!(raw.expect_close(step()).await, Some(1007));
}

#[tokio::test]
async fn decision_unmasked_frame_closes_1002() {
    let d = Daemon::start(&[]);
    let mut raw = RawWs::upgrade(&d, "user_id=nomask").await;
    raw.http.send(&[0x81, 2, b'{', b'}']).await;
    assert_eq!(raw.expect_close(step()).await, Some(1002));
}

#[tokio::test]
async fn decision_table_full_close_reason() {
    let d = Daemon::start(&["--max-connections", "1"]);
    let _a = d.device("a").await;
    let mut b = Device::connect(&d, "user_id=b").await;
    assert_eq!(
        b.expect_close(step()).await,
        (1013, "Server at capacity, try again later".to_string())
    );
}

//! The memory budget (docs/memory.md): everything traffic makes the daemon hold is paid for
//! from one budget before it is allocated. Filled by hostile clients, the budget refuses new
//! work with clear answers (503 with `Retry-After`, close 1013), keeps live sessions, and
//! serves again once the load drains, without a restart.

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::common::*;

/// The budget's figures from `/metrics`: (limit, used, refusals by reason).
async fn budget_of(d: &Daemon) -> (u64, u64, Value) {
    let m = d.get("/metrics").await.json();
    (
        m["memory_budget_bytes"]
            .as_u64()
            .expect("memory_budget_bytes"),
        m["memory_used_bytes"].as_u64().expect("memory_used_bytes"),
        m["memory_refused"].clone(),
    )
}

/// Pushes `body` to a device that stopped reading, each on a connection of its own (a push
/// waits for its frame to be written), until `count` of them wait; returns those.
async fn pushes_waiting(d: &Daemon, body: &str, count: usize) -> Vec<Http> {
    let mut waiting = Vec::new();
    let deadline = Instant::now() + t(30.0);
    for n in 0..500 {
        assert!(
            Instant::now() < deadline,
            "{count} pushes not waiting after {n}"
        );
        let mut c = Http::connect(d.addr).await;
        c.send(&post("/sse/push", body)).await;
        match tokio::time::timeout(t(0.2), c.read_head()).await {
            Err(_) => {
                waiting.push(c);
                if waiting.len() == count {
                    return waiting;
                }
            }
            // Until the kernel's buffers toward the device are full, frames get out.
            Ok(head) => assert_eq!(head.status, 200, "push {n}"),
        }
    }
    panic!("{count} pushes never waited");
}

/// A request that declares a body of `len` bytes and sends none of it: the daemon pays for
/// the whole body from its head. The answer, when one comes within a moment (a refusal).
async fn declared_body(d: &Daemon, len: usize) -> (Http, Option<Response>) {
    let mut c = Http::connect(d.addr).await;
    let head = format!(
        "POST /sse/push HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
         Content-Length: {len}\r\n\r\n"
    );
    c.send(head.as_bytes()).await;
    let answer = tokio::time::timeout(t(0.3), c.read_response()).await.ok();
    (c, answer)
}

/// Fill the budget with frames for a device that stopped reading and with bodies in
/// progress: pushes, sends, batches and new devices are refused with the budget's answers,
/// the metrics say so, a live device keeps its session; when the load goes, the budget drains
/// and everything works again, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_budget_refuses_new_work_clearly_and_service_resumes_when_it_drains() {
    const BUDGET: u64 = 2 * 1024 * 1024;
    let d = Daemon::start(&[
        "--memory-budget-bytes",
        &BUDGET.to_string(),
        "--queue-depth",
        "10000",
        "--queue-bytes",
        "1073741824",
        "--max-body-bytes",
        "4194304",
        // Nothing may time out while the budget is held full.
        "--ping-interval-secs",
        "300",
        "--pong-timeout-secs",
        "300",
        "--body-timeout-secs",
        "300",
    ]);
    let mut reader = d.device("reader").await;
    let slow = unread_device(&d, "slow").await;

    // Frames waiting for the stalled device, then a body in progress that takes all but a
    // few bytes of what is left (a body is paid for exactly, from its declared length).
    let big = json!({"user_id":"slow","data":{"pad":"x".repeat(60_000)}}).to_string();
    let mut waiting = pushes_waiting(&d, &big, 8).await;
    let (_, used, _) = budget_of(&d).await;
    let free = usize::try_from(BUDGET - used).unwrap();
    assert!(
        free > 4096,
        "the stalled pushes took the whole budget: {used}"
    );
    let (filler, answer) = declared_body(&d, free - 32).await;
    assert!(
        answer.is_none(),
        "the filler of {} bytes was refused: {}; {:?}",
        free - 32,
        answer.map(|a| a.text()).unwrap_or_default(),
        budget_of(&d).await
    );
    // Refused from its head, answered once the body, skipped, has passed.
    let (mut c, early) = declared_body(&d, 64).await;
    assert!(early.is_none(), "answered before its body: {early:?}");
    c.send(&[b' '; 64]).await;
    let refused_body = c.read_response().await;
    assert_eq!(refused_body.header("retry-after"), Some("1"));
    assert_eq!(
        refused_body.json(),
        json!({"status":"error","message":"Memory budget exhausted"})
    );
    let (limit, used, refused) = budget_of(&d).await;
    assert_eq!(limit, BUDGET);
    assert!(used <= BUDGET, "used {used} over the budget {BUDGET}");
    assert!(
        BUDGET - used < 64,
        "the budget is not full: {used} of {BUDGET}"
    );
    assert_eq!(refused["body"], 1, "{refused}");

    // Every kind of new work gets its refusal.
    let r = d.push(&json!({"user_id":"reader","data":{"x":1}})).await;
    assert_eq!(r.assert_json(503)["message"], "Memory budget exhausted");
    let mut c = d.http().await;
    let send = json!({"user_id":"reader","data":{"correlation_id":"c-over"}});
    c.send(&post("/sse/send", &send.to_string())).await;
    let r = c.read_response().await;
    assert_eq!(r.assert_json(503)["message"], "Memory budget exhausted");
    assert_eq!(r.header("retry-after"), Some("1"));
    let r = d
        .batch(&json!([{"user_id":"reader","data":{"a":1}}, {"user_id":"nobody","data":{}}]))
        .await;
    assert_eq!(r.assert_json(503)["message"], "Memory budget exhausted");
    let mut late = RawWs::upgrade(&d, "user_id=late").await;
    assert_eq!(late.expect_close(step()).await, Some(1013));
    let (_, used, refused) = budget_of(&d).await;
    assert!(used <= BUDGET);
    assert!(refused["session"].as_u64() >= Some(1), "{refused}");
    let prometheus = d.get("/metrics?format=prometheus").await.text();
    assert!(
        prometheus.contains(&format!("wssed_memory_budget_bytes {BUDGET}\n")),
        "{prometheus}"
    );
    assert!(prometheus.contains("wssed_memory_refused_total{reason=\"body\"} "));
    // The live device kept its session.
    assert_eq!(d.connections().await, 2);

    // The load goes: the stalled device's frames are dropped and their pushes answered, the
    // bodies' connections close; the budget drains and service resumes without a restart.
    slow.http.reset();
    for (i, c) in waiting.iter_mut().enumerate() {
        let r = c.read_response_within(t(10.0)).await;
        assert_eq!(r.assert_json(200)["status"], "partial", "waiting push {i}");
    }
    drop(waiting);
    drop(filler);
    wait_until(t(10.0), "the budget drained", || async {
        budget_of(&d).await.1 < BUDGET / 10
    })
    .await;
    let r = d.push(&json!({"user_id":"reader","data":{"back":1}})).await;
    assert_eq!(r.assert_json(200)["status"], "success");
    assert_eq!(reader.recv_json().await["back"], 1);
    let mut late = d.device("late").await;
    let r = d.push(&json!({"user_id":"late","data":{"hi":1}})).await;
    assert_eq!(r.assert_json(200)["status"], "success");
    assert_eq!(late.recv_json().await["hi"], 1);
}

/// A device that starts a message larger than what is left of the budget is closed with
/// 1013 before the daemon buffers it; one that fits is paid for while it arrives and the
/// budget gets it back.
#[tokio::test]
async fn a_device_message_larger_than_the_budget_left_closes_1013() {
    const BUDGET: u64 = 1024 * 1024;
    let d = Daemon::start(&[
        "--memory-budget-bytes",
        &BUDGET.to_string(),
        "--max-message-bytes",
        "4194304",
    ]);
    let mut ok = RawWs::upgrade(&d, "user_id=fits").await;
    let answer = json!({"type":"chunk","pad":"y".repeat(200_000)}).to_string();
    assert!(ok.send_frame(true, 1, answer.as_bytes()).await);
    // Paid while it arrived, given back once handed on (nothing waits for it).
    wait_until(step(), "the message's charge given back", || async {
        d.get("/metrics").await.json()["frames_in"] == 1
    })
    .await;
    let (_, used, _) = budget_of(&d).await;
    assert!(used < 64 * 1024, "still charged: {used}");

    let mut big = RawWs::upgrade(&d, "user_id=big").await;
    let mut head = vec![0x81u8, 0x80 | 127];
    head.extend_from_slice(&(2u64 * 1024 * 1024).to_be_bytes());
    head.extend_from_slice(&[0, 0, 0, 0]);
    assert!(big.http.try_send(&head).await);
    assert_eq!(big.expect_close(step()).await, Some(1013));
    let (_, _, refused) = budget_of(&d).await;
    assert_eq!(refused["inbound"], 1, "{refused}");
    // Over max_message_bytes is still 1009, whatever the budget.
    let mut huge = RawWs::upgrade(&d, "user_id=huge").await;
    let mut head = vec![0x81u8, 0x80 | 127];
    head.extend_from_slice(&(8u64 * 1024 * 1024).to_be_bytes());
    head.extend_from_slice(&[0, 0, 0, 0]);
    assert!(huge.http.try_send(&head).await);
    assert_eq!(huge.expect_close(step()).await, Some(1009));
}

/// A body whose declared length does not fit the budget is refused from its head with the
/// budget's 503; the body is skipped, not kept, and the connection serves the next request.
#[tokio::test]
async fn a_body_larger_than_the_budget_left_is_503_and_the_connection_stays() {
    let d = Daemon::start(&[
        "--memory-budget-bytes",
        "262144",
        "--max-body-bytes",
        "1048576",
    ]);
    let mut c = d.http().await;
    let body = json!({"user_id":"nobody","data":{"pad":"z".repeat(600_000)}}).to_string();
    c.send(&post("/sse/push", &body)).await;
    let r = c.read_response().await;
    assert_eq!(r.assert_json(503)["message"], "Memory budget exhausted");
    assert_eq!(r.header("retry-after"), Some("1"));
    c.send(&post("/sse/push", r#"{"user_id":"nobody","data":{}}"#))
        .await;
    let r = c.read_response().await;
    assert_eq!(r.assert_json(200)["status"], "partial");
    let (_, used, refused) = budget_of(&d).await;
    assert_eq!(refused["body"], 1, "{refused}");
    assert!(used < 64 * 1024, "the skipped body was kept: {used}");
}

/// The kernel's TCP sockets from `local` to `remote` (ports), with their state, from
/// /proc/net/tcp (hex: 01 ESTABLISHED, 04 FIN_WAIT1, ...).
fn tcp_states(local_port: u16, remote_port: u16) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let port = |field: &str| {
        field
            .rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
    };
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (l, r, st) = (f.get(1)?, f.get(2)?, f.get(3)?);
            (port(l) == Some(local_port) && port(r) == Some(remote_port)).then(|| (*st).to_string())
        })
        .collect()
}

/// A session ended because its device stopped reading is reset, not closed: its unsendable
/// data does not linger in the kernel in FIN_WAIT1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_peers_socket_is_gone_from_the_kernel_when_its_session_ends() {
    let d = Daemon::start(&STALL_FLAGS);
    let stalled = stall_device(&d, StallUntil::WritesBlock).await;
    let device_port = stalled._raw.http.local_addr().port();
    assert!(
        !tcp_states(d.addr.port(), device_port).is_empty(),
        "the session's socket is not in /proc/net/tcp"
    );
    wait_until(t(10.0), "the heartbeat timeout", || async {
        d.get("/metrics").await.json()["heartbeat_timeouts"] == 1
    })
    .await;
    wait_until(t(1.0), "the dead peer's socket gone", || async {
        tcp_states(d.addr.port(), device_port).is_empty()
    })
    .await;
    assert_eq!(d.get("/metrics").await.json()["dead_peers_reset"], 1);
}

/// Bytes a device sends right behind its upgrade request become tungstenite's read buffer for
/// the session's life: past the 512 bytes a session is charged for, they are paid for too,
/// and a session whose early input does not fit the budget is closed 1013 like any other.
#[tokio::test]
async fn early_input_behind_an_upgrade_is_paid_for_the_sessions_life() {
    // A session (8 KiB) and 2 KiB to spare.
    const BUDGET: u64 = 10 * 1024;
    let d = Daemon::start(&["--memory-budget-bytes", &BUDGET.to_string()]);
    // The same budget holds a device that sent nothing early.
    let plain = RawWs::upgrade(&d, "user_id=plain").await;
    wait_until(step(), "the plain device registered", || async {
        d.connections().await == 1
    })
    .await;
    drop(plain);
    wait_until(step(), "the plain device's charge given back", || async {
        budget_of(&d).await.1 == 0
    })
    .await;

    // The upgrade and 33 masked pings of 100 bytes (3498 bytes) in one write: one read of the
    // connection's 4 KiB buffer takes them all, about 3 KiB past the session's read buffer.
    let mut early = upgrade_request("user_id=early");
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    for _ in 0..33 {
        early.extend_from_slice(&[0x89, 0x80 | 100]);
        early.extend_from_slice(&mask);
        early.extend(
            std::iter::repeat_n(b'p', 100)
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4]),
        );
    }
    let mut http = d.http().await;
    http.send(&early).await;
    assert_eq!(http.read_head().await.status, 101);
    let mut ws = RawWs { http };
    assert_eq!(ws.expect_close(step()).await, Some(1013));
    let (_, used, refused) = budget_of(&d).await;
    assert_eq!(refused["session"], 1, "{refused}");
    assert!(used <= BUDGET, "used {used} over the budget {BUDGET}");
}

/// An answer of newlines (valid JSON whitespace) becomes an event seven times its size, one
/// `data:` line per newline, put together in one buffer and copied into another: both are
/// paid for before they are made, and a stream whose event does not fit ends with the budget's
/// error event, as when the answer itself does not fit; the device keeps its session.
#[tokio::test]
async fn an_answer_whose_event_does_not_fit_the_budget_ends_the_stream() {
    // The session, the answer while it arrives (twice its 32 KiB) and once held all fit;
    // its event (about 224 KiB, twice) does not.
    const BUDGET: u64 = 256 * 1024;
    let d = Daemon::start(&["--memory-budget-bytes", &BUDGET.to_string()]);
    let mut dev = d.device("nl").await;
    let mut s = d
        .send(&json!({"user_id":"nl","data":{"correlation_id":"n1"},"event_type":"message"}))
        .await;
    s.assert_stream_head();
    dev.recv_json().await;
    let answer = format!(
        "{{\"correlation_id\":\"n1\",{}\"is_final\":true}}",
        "\n".repeat(32 * 1024)
    );
    dev.send_text(&answer).await;
    let ev = s.next_event(step()).await;
    assert_eq!(
        ev.json(),
        json!({"error":"Memory budget exhausted","correlation_id":"n1"}),
        "an event of {} lines was written",
        ev.lines
    );
    s.expect_end(step()).await;
    let (_, used, refused) = budget_of(&d).await;
    assert_eq!(refused["answer"], 1, "{refused}");
    assert!(used < 32 * 1024, "the answer's charge was kept: {used}");
    assert_eq!(d.get("/metrics").await.json()["sends_over_budget"], 1);
    // The session goes on, and a small answer on a new stream gets through.
    let mut s = d
        .send(&json!({"user_id":"nl","data":{"correlation_id":"n2"}}))
        .await;
    dev.recv_json().await;
    dev.send_text(r#"{"correlation_id":"n2","is_final":true}"#)
        .await;
    assert_eq!(s.next_event(step()).await.json()["correlation_id"], "n2");
    s.expect_end(step()).await;
}

//! The defects found when the landed binary was tried against its contract, each as the
//! behaviour that must hold (docs/protocol.md): batches, shutdown, ids, error answers,
//! device sessions and frame lengths.

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::common::*;

/// A batch with more items for one reading device than its queue holds does not fail
/// against itself: every item reaches the device, in index order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_larger_than_the_queue_reaches_a_reading_device_whole() {
    const ITEMS: usize = 1000;
    let d = Daemon::start(&["--queue-depth", "64", "--max-batch", "1000"]);
    let mut dev = d.device("fast").await;
    let items: Vec<Value> = (0..ITEMS)
        .map(|i| json!({"user_id":"fast","data":{"n":i}}))
        .collect();
    let addr = d.addr;
    let batch = tokio::spawn(async move {
        let mut c = Http::connect(addr).await;
        c.send(&post("/sse/push/batch", &Value::Array(items).to_string()))
            .await;
        c.read_response_within(t(30.0)).await
    });
    for i in 0..ITEMS {
        let frame = dev.recv_json().await;
        assert_eq!(frame["n"], i, "frames out of order");
    }
    let r = batch.await.unwrap();
    let v = r.assert_json(200);
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), ITEMS);
    for (i, item) in results.iter().enumerate() {
        assert_eq!(item["index"], i);
        assert_eq!(item["success"], true, "item {i}: {item}");
    }
}

/// A frame already written to the device's socket is answered `success` even when a later
/// frame of the same write batch fails: each frame's answer follows what happened to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_frame_of_a_batch_is_answered_by_its_own_fate() {
    let d = Daemon::start(&["--max-body-bytes", "16777216", "--pong-timeout-secs", "30"]);
    let mut raw = unread_device(&d, "churn").await;
    // Both items enter the queue before the session wakes, so one write batch takes them:
    // the first fits the socket at once, the second (larger than the kernel's buffers on
    // both sides) cannot until the device reads.
    let items = json!([
        {"user_id":"churn","data":{"first":true}},
        {"user_id":"churn","data":{"pad":"y".repeat(12_000_000)}},
    ]);
    let mut c = d.http().await;
    c.send(&post("/sse/push/batch", &items.to_string())).await;
    let first = raw.read_frame(step()).await.expect("the first frame");
    assert_eq!(first.opcode, 1);
    let text: Value = serde_json::from_slice(&first.payload).unwrap();
    assert_eq!(text["first"], true);
    // The device vanishes mid-way through the second frame.
    raw.http.reset();
    let v = c.read_response_within(t(10.0)).await.assert_json(200);
    assert_eq!(v["results"][0]["success"], true, "{v}");
    assert_eq!(v["results"][1]["success"], false, "{v}");
    assert_eq!(v["results"][1]["error"], "not_connected", "{v}");
}

/// While a `/sse/send` caller stops reading, the device it asked keeps working: pushes go
/// out at once, and the stream ends "Upstream too slow" when its buffer overflows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upstream_never_freezes_the_device_it_asked() {
    let d = Daemon::start(&[
        "--queue-depth",
        "2",
        "--pong-timeout-secs",
        "60",
        "--max-message-bytes",
        "262144",
    ]);
    let mut dev = d.device("busy").await;
    let mut caller = Http::connect_small_rcvbuf(d.addr, 4096).await;
    let req = json!({"user_id":"busy","data":{"correlation_id":"slow1"}});
    caller.send(&post("/sse/send", &req.to_string())).await;
    let asked = dev.recv_json().await;
    assert_eq!(asked["correlation_id"], "slow1");
    // Answers far beyond what the kernel's buffers on both sides and the stream's own
    // buffer (two events) hold: the stream overflows while its caller does not read.
    let answer =
        json!({"correlation_id":"slow1","type":"chunk","pad":"z".repeat(250_000)}).to_string();
    for _ in 0..40 {
        dev.send_text(&answer).await;
    }
    wait_until(step(), "the stream found too slow", || async {
        d.log_text().contains("stream slow1: upstream too slow")
    })
    .await;
    // The session is not waiting on the caller: a push is delivered within one step.
    let started = Instant::now();
    let pushed = d.push(&json!({"user_id":"busy","data":{"ping":1}})).await;
    assert_eq!(pushed.assert_json(200)["status"], "success");
    assert!(
        started.elapsed() < step(),
        "push took {:?}",
        started.elapsed()
    );
    assert_eq!(dev.recv_json().await["ping"], 1);
    // The caller, reading at last, gets what fit and then the stream's "too slow" ending.
    let mut s = SseStream::open(caller).await;
    s.assert_stream_head();
    let deadline = Instant::now() + t(30.0);
    for _ in 0..100 {
        let ev = s
            .next_event(deadline.saturating_duration_since(Instant::now()))
            .await;
        let v = ev.json();
        if v.get("error").is_some() {
            assert_eq!(
                v,
                json!({"error":"Upstream too slow","correlation_id":"slow1"})
            );
            s.expect_end(step()).await;
            return;
        }
        assert_eq!(v["type"], "chunk");
    }
    panic!("no closing event after 100 events");
}

/// SIGTERM with pushes, a batch and a send in flight to a device that does not read: every
/// request already read gets its answer before its connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_every_request_already_read() {
    let mut d = Daemon::start(&[
        "--shutdown-timeout-secs",
        "1",
        "--max-body-bytes",
        "1048576",
        "--queue-bytes",
        "4194304",
        "--pong-timeout-secs",
        "30",
    ]);
    // A device that stopped reading, with a push already waiting for its socket.
    let stalled = stall_device(&d, StallUntil::WritesBlock).await;
    let big = json!({"user_id":"slow","data":{"pad":"p".repeat(500_000)}}).to_string();
    let mut pushes = Vec::new();
    for _ in 0..3 {
        let mut c = d.http().await;
        c.send(&post("/sse/push", &big)).await;
        pushes.push(c);
    }
    let mut batch = d.http().await;
    let items = json!([{"user_id":"slow","data":{"a":1}}, {"user_id":"slow","data":{"b":2}}]);
    batch
        .send(&post("/sse/push/batch", &items.to_string()))
        .await;
    let mut send = d.http().await;
    let req = json!({"user_id":"slow","data":{"correlation_id":"late"}});
    send.send(&post("/sse/send", &req.to_string())).await;
    // The stalled push, the five requests above and the /metrics request asking are all
    // read and unanswered.
    let want = stalled.waiting.len() as u64 + 5 + 1;
    wait_until(step(), "requests in progress", || async {
        let m = d.get("/metrics").await.json();
        m["requests_in_progress"].as_u64() == Some(want)
    })
    .await;
    d.signal("TERM");
    let mut stalled = stalled;
    for (i, c) in stalled
        .waiting
        .iter_mut()
        .chain(pushes.iter_mut())
        .enumerate()
    {
        let r = c.read_head_within(t(5.0)).await;
        assert!(
            r.status == 200 || r.status == 503,
            "push {i} answered {}",
            r.status
        );
    }
    let r = batch.read_head_within(t(5.0)).await;
    assert_eq!(r.status, 200, "batch");
    let r = send.read_head_within(t(5.0)).await;
    assert_eq!(r.status, 200, "send");
    let status = d.wait_exit(t(10.0)).await.expect("no exit");
    assert_eq!(status.code(), Some(0));
}

/// The drain reports the real counts of what it drains, and a drain is no failed
/// self-check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_logs_what_it_drains_and_no_failed_self_check() {
    let mut d = Daemon::start(&["--shutdown-timeout-secs", "2"]);
    let _a = d.device("a").await;
    let _b = d.device("b").await;
    let mut c = d.device("c").await;
    let s = d
        .send(&json!({"user_id":"c","data":{"correlation_id":"open1"}}))
        .await;
    s.assert_stream_head();
    c.recv_json().await;
    d.signal("TERM");
    let status = d.wait_exit(t(10.0)).await.expect("no exit");
    assert_eq!(status.code(), Some(0));
    let log = d.log_text();
    assert!(
        log.contains("SIGTERM: draining 3 devices, 1 open streams"),
        "{log}"
    );
    assert!(!log.contains("self-check failed"), "{log}");
}

/// A daemon that cannot install its signal handlers does not start: non-zero exit, one
/// error line.
#[test]
fn a_failed_signal_install_exits_non_zero_with_one_clear_line() {
    let (status, _, stderr) = run_to_exit_with_env(
        &["--listen", "127.0.0.1:0"],
        &[("WSSED_FAULT_NO_SIGNALS", "1")],
    );
    assert_ne!(status.code(), Some(0), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("cannot install signal handlers"),
        "{stderr}"
    );
}

/// User ids may hold C1 control characters (U+0080–U+009F): only U+0000–U+001F and U+007F
/// are control characters for ids, on the query string as in JSON.
#[tokio::test]
async fn a_user_id_with_a_c1_control_character_is_a_user_id() {
    let d = Daemon::start(&[]);
    let mut dev = d.device("a\u{85}b").await;
    let r = d.push(&json!({"user_id":"a\u{85}b","data":{"n":1}})).await;
    assert_eq!(r.assert_json(200)["status"], "success");
    assert_eq!(dev.recv_json().await["n"], 1);
    for bad in ["a%7Fb", "a%1Fb"] {
        let mut c = d.http().await;
        c.send(&upgrade_request(&format!("user_id={bad}"))).await;
        let r = c.read_response().await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }
}

/// Sends `head` and then up to `more` filler bytes, and reads the answer only after that,
/// as a client that uploads first and reads later does: it is still sending when the daemon
/// refuses it.
async fn answer_while_sending(d: &Daemon, head: Vec<u8>, more: usize) -> (u16, String) {
    let stream = tokio::net::TcpStream::connect(d.addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        if wr.write_all(&head).await.is_err() {
            return Err("the head".to_string());
        }
        let chunk = vec![b'a'; 16 * 1024];
        let mut sent = 0;
        while sent < more {
            match tokio::time::timeout(t(2.0), wr.write_all(&chunk)).await {
                Ok(Ok(())) => sent += chunk.len(),
                Ok(Err(e)) => return Err(format!("{e} after {sent} bytes")),
                Err(_) => return Err(format!("stuck after {sent} bytes")),
            }
        }
        // Done sending: the daemon sees the end of input and closes at once.
        wr.shutdown().await.map_err(|e| format!("shutdown: {e}"))
    });
    let sent = tokio::time::timeout(step(), writer).await;
    assert!(
        matches!(sent, Ok(Ok(Ok(())))),
        "the upload was cut: {sent:?}"
    );
    let mut got = Vec::new();
    let deadline = Instant::now() + step();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        use tokio::io::AsyncReadExt;
        match tokio::time::timeout_at(deadline, rd.read(&mut buf)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => panic!(
                "read failed ({e}) after {:?}",
                String::from_utf8_lossy(&got)
            ),
            Err(_) => panic!("no end of the answer: {:?}", String::from_utf8_lossy(&got)),
        }
    }
    whole_answer(&got)
}

/// The status and body of the one complete response `bytes` must hold.
fn whole_answer(bytes: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(bytes).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no whole head: {text:?}"));
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status: {text:?}"));
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Content-Length: {text:?}"));
    assert_eq!(body.len(), length, "the body is cut: {text:?}");
    (status, body.to_string())
}

/// A 413 or 431 sent while the client is still sending reaches the client: the daemon
/// closes its side, drains what still comes, and only then closes (RFC 9112 §9.6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_answer_reaches_a_client_that_is_still_sending() {
    let d = Daemon::start(&[]);
    for round in 0..5 {
        let head = b"POST /sse/push HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
            Content-Length: 100000000\r\n\r\n"
            .to_vec();
        let (status, body) = answer_while_sending(&d, head, 4 << 20).await;
        assert_eq!(status, 413, "round {round}: {body}");
        let mut head = b"GET /health HTTP/1.1\r\nHost: t\r\n".to_vec();
        for i in 0..2000 {
            head.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "v".repeat(20)).as_bytes());
        }
        let (status, body) = answer_while_sending(&d, head, 4 << 20).await;
        assert_eq!(status, 431, "round {round}: {body}");
    }
}

/// A 64-bit frame length with its most significant bit set breaks RFC 6455 §5.2 ("MUST be
/// 0"): the session closes with 1002, not with 1009 as for a frame that is only too big.
#[tokio::test]
async fn a_frame_length_with_the_top_bit_set_is_a_protocol_error() {
    let d = Daemon::start(&[]);
    let mut raw = RawWs::upgrade(&d, "user_id=msb").await;
    let header = [0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4];
    assert!(raw.http.try_send(&header).await);
    assert_eq!(raw.expect_close(step()).await, Some(1002));
    // A frame that is merely longer than max_message_bytes is still 1009.
    let mut raw = RawWs::upgrade(&d, "user_id=big").await;
    let header = [0x81, 0xff, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4];
    assert!(raw.http.try_send(&header).await);
    assert_eq!(raw.expect_close(step()).await, Some(1009));
    // The same violation sent together with the upgrade request.
    let mut c = d.http().await;
    let mut bytes = upgrade_request("user_id=early");
    bytes.extend_from_slice(&[0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4]);
    c.send(&bytes).await;
    let head = c.read_head().await;
    assert_eq!(head.status, 101);
    let mut raw = RawWs { http: c };
    assert_eq!(raw.expect_close(step()).await, Some(1002));
}

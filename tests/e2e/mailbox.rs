//! The offline mailbox (docs/protocol.md §20): pushes for a device that is away are kept,
//! bounded, and written to it first, in order, when it returns; they survive a clean restart
//! through `state_dir`. With the mailbox off (the default) nothing changes: the rest of the
//! suite runs with it off.

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::common::*;

/// A push whose frame is known byte for byte: its correlation id and timestamp are given
/// (the key order is the text's: `json!` would sort the keys).
fn numbered(user: &str, n: usize) -> String {
    let u = serde_json::to_string(user).unwrap();
    format!(
        "{{\"user_id\":{u},\"data\":{{\"n\":{n},\"correlation_id\":\"c-{n}\"}},\"timestamp\":5}}"
    )
}

/// `POST /sse/push` of `numbered(user, n)`.
async fn push_n(d: &Daemon, user: &str, n: usize) -> Response {
    d.post("/sse/push", &numbered(user, n)).await
}

/// A batch of raw item bodies.
async fn batch_of(d: &Daemon, items: &[String]) -> Response {
    d.post("/sse/push/batch", &format!("[{}]", items.join(",")))
        .await
}

/// The frame a device receives for `numbered(user, n)` (docs/protocol.md §4.2).
fn numbered_frame(user: &str, n: usize) -> String {
    let u = serde_json::to_string(user).unwrap();
    format!(
        "{{\"n\":{n},\"correlation_id\":\"c-{n}\",\"user_id\":{u},\"original_sender\":{{\"user_id\":{u},\"timestamp\":5}}}}"
    )
}

fn kept() -> Value {
    json!({"status":"partial","message":"User not connected","queued":true})
}

fn gap(n: u64) -> String {
    format!("{{\"type\":\"mailbox_gap\",\"dropped\":{n}}}")
}

async fn metrics(d: &Daemon) -> Value {
    d.get("/metrics").await.json()
}

/// Nothing more arrives for a moment: the device got no frame twice.
async fn nothing_more(dev: &mut Device) {
    match dev.recv(t(0.5)).await {
        None => {}
        Some(other) => panic!("an extra frame: {other:?}"),
    }
}

/// A fresh, empty directory under the temp directory, removed when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = TempPath::new(name).0.clone();
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn str(&self) -> &str {
        self.0.to_str().unwrap()
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Stops the daemon with SIGTERM, waits (bounded) for its clean exit and for its log to
/// show `last` (the log is read by threads that may lag behind the exit).
async fn stop(mut d: Daemon, last: &str) {
    d.signal("TERM");
    let status = d.wait_exit(t(10.0)).await.expect("no exit after SIGTERM");
    assert!(status.success(), "exit {status:?}: {}", d.log_text());
    wait_until(step(), &format!("the log says {last:?}"), || async {
        d.log_text().contains(last)
    })
    .await;
}

#[tokio::test]
async fn away_pushes_arrive_in_order_on_return_then_live_ones_and_none_twice() {
    let d = Daemon::start(&["--mailbox-messages", "16"]);
    for n in 0..5 {
        let r = push_n(&d, "dev", n).await;
        assert_eq!(r.assert_json(200), kept(), "push {n}");
    }
    let m = metrics(&d).await;
    assert_eq!(
        (
            m["mailbox_held_messages"].as_u64(),
            m["mailbox_kept"].as_u64()
        ),
        (Some(5), Some(5))
    );
    assert_eq!(m["pushes_not_connected"], 5);

    let mut dev = d.device("dev").await;
    for n in 0..5 {
        // Byte for byte what a live push writes.
        assert_eq!(dev.recv_text().await, numbered_frame("dev", n), "kept {n}");
    }
    let r = push_n(&d, "dev", 5).await;
    assert_eq!(r.assert_json(200)["status"], "success");
    assert_eq!(dev.recv_text().await, numbered_frame("dev", 5));
    nothing_more(&mut dev).await;

    let m = metrics(&d).await;
    assert_eq!(m["mailbox_held_messages"], 0);
    assert_eq!(m["mailbox_held_bytes"], 0);
    assert_eq!(m["mailbox_delivered"], 5);
    assert_eq!(m["pushes_delivered"], 1);
    // A device that comes back again finds nothing.
    dev.close().await;
    let mut again = d.device("dev").await;
    nothing_more(&mut again).await;
    let prometheus = d.get("/metrics?format=prometheus").await.text();
    assert!(
        prometheus.contains("\nwssed_mailbox_delivered_total 5\n"),
        "{prometheus}"
    );
    assert!(prometheus.contains("\nwssed_mailbox_held_messages 0\n"));
}

#[tokio::test]
async fn with_the_mailbox_off_nothing_is_kept_and_answers_are_the_originals() {
    let d = Daemon::start(&[]);
    let r = push_n(&d, "dev", 1).await;
    assert_eq!(
        r.text(),
        r#"{"status":"partial","message":"User not connected"}"#
    );
    let r = batch_of(&d, &[numbered("dev", 2)]).await;
    assert_eq!(
        r.text(),
        r#"{"results":[{"index":0,"user_id":"dev","success":false,"error":"not_connected"}]}"#
    );
    let mut dev = d.device("dev").await;
    nothing_more(&mut dev).await;
    let m = metrics(&d).await;
    assert_eq!(m["mailbox_kept"], 0);
    assert_eq!(m["mailbox_not_kept"]["too_large"], 0);
}

#[tokio::test]
async fn the_count_cap_drops_the_oldest_and_the_device_learns_how_many() {
    let d = Daemon::start(&["--mailbox-messages", "3"]);
    for n in 0..7 {
        assert_eq!(push_n(&d, "dev", n).await.assert_json(200), kept());
    }
    let m = metrics(&d).await;
    assert_eq!(m["mailbox_dropped"]["count"], 4);
    let mut dev = d.device("dev").await;
    assert_eq!(dev.recv_text().await, gap(4));
    for n in 4..7 {
        assert_eq!(dev.recv_text().await, numbered_frame("dev", n));
    }
    nothing_more(&mut dev).await;
}

#[tokio::test]
async fn the_byte_cap_drops_the_oldest_and_a_frame_over_it_is_refused() {
    let one = numbered_frame("dev", 0).len();
    // Room for two frames of this size, not three.
    let cap = 2 * one + one / 2;
    let d = Daemon::start(&[
        "--mailbox-messages",
        "100",
        "--mailbox-bytes",
        &cap.to_string(),
    ]);
    for n in 0..5 {
        assert_eq!(push_n(&d, "dev", n).await.assert_json(200), kept());
    }
    let big = json!({"user_id":"dev","data":{"pad":"x".repeat(cap)}});
    let r = d.push(&big).await;
    assert_eq!(
        r.assert_json(200),
        json!({"status":"partial","message":"User not connected","queued":false,"reason":"too_large"})
    );
    let m = metrics(&d).await;
    assert_eq!(m["mailbox_dropped"]["bytes"], 3);
    assert_eq!(m["mailbox_not_kept"]["too_large"], 1);
    assert_eq!(m["mailbox_held_bytes"].as_u64(), Some(2 * one as u64));
    let mut dev = d.device("dev").await;
    assert_eq!(dev.recv_text().await, gap(3));
    assert_eq!(dev.recv_text().await, numbered_frame("dev", 3));
    assert_eq!(dev.recv_text().await, numbered_frame("dev", 4));
    nothing_more(&mut dev).await;
}

#[tokio::test]
async fn messages_older_than_the_ttl_are_dropped_never_delivered() {
    let d = Daemon::start(&["--mailbox-messages", "10", "--mailbox-ttl-secs", "1"]);
    for n in 0..3 {
        assert_eq!(push_n(&d, "dev", n).await.assert_json(200), kept());
    }
    // The sweep drops them (and gives their memory back) while the device stays away.
    wait_until(t(15.0), "the kept messages expired", || async {
        metrics(&d).await["mailbox_dropped"]["ttl"] == 3
    })
    .await;
    assert_eq!(metrics(&d).await["mailbox_held_messages"], 0);
    assert_eq!(push_n(&d, "dev", 3).await.assert_json(200), kept());
    let mut dev = d.device("dev").await;
    assert_eq!(dev.recv_text().await, gap(3));
    assert_eq!(dev.recv_text().await, numbered_frame("dev", 3));
    nothing_more(&mut dev).await;
}

/// A returning device that reads slowly: a push made while its kept frames are still being
/// written waits for them, and is written after them.
#[tokio::test]
async fn a_push_during_the_drain_waits_for_the_kept_frames() {
    let d = Daemon::start(&[
        "--mailbox-messages",
        "128",
        "--mailbox-bytes",
        "8388608",
        "--ping-interval-secs",
        "60",
        "--pong-timeout-secs",
        "30",
    ]);
    // More than the kernel buffers toward a device that does not read (tcp_wmem's 4 MiB).
    const KEPT: usize = 100;
    let pad = "p".repeat(60_000);
    for n in 0..KEPT {
        let body = json!({"user_id":"slow","data":{"n":n,"pad":pad}});
        assert_eq!(d.push(&body).await.assert_json(200), kept());
    }
    // A device that does not read yet: its socket fills and the drain stalls.
    let mut raw = unread_device(&d, "slow").await;
    let delivered = metrics(&d).await["mailbox_delivered"].as_u64().unwrap();
    assert!(
        delivered < KEPT as u64,
        "the drain did not stall: {delivered}"
    );
    let mut live = d.http().await;
    live.send(&post(
        "/sse/push",
        &json!({"user_id":"slow","data":{"n":"live"}}).to_string(),
    ))
    .await;
    // Read everything: the kept frames in order, then the live one.
    let mut seen = Vec::new();
    let deadline = Instant::now() + t(30.0);
    while seen.len() < KEPT + 1 {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = raw.read_frame(left).await.expect("the daemon closed");
        if frame.opcode == 1 {
            let v: Value = serde_json::from_slice(&frame.payload).unwrap();
            seen.push(v["n"].clone());
        }
    }
    let mut want: Vec<Value> = (0..KEPT).map(|n| json!(n)).collect();
    want.push(json!("live"));
    assert_eq!(seen, want);
    let r = live.read_response_within(t(10.0)).await;
    assert_eq!(r.assert_json(200)["status"], "success");
    assert_eq!(metrics(&d).await["mailbox_delivered"], KEPT);
}

#[tokio::test]
async fn batch_items_say_whether_they_were_kept() {
    let d = Daemon::start(&["--mailbox-messages", "4", "--mailbox-bytes", "200"]);
    let mut here = d.device("here").await;
    let big = json!({"user_id":"away","data":{"pad":"x".repeat(300)}}).to_string();
    let r = batch_of(
        &d,
        &[
            numbered("away", 0),
            big,
            numbered("here", 1),
            numbered("away", 2),
        ],
    )
    .await;
    assert_eq!(
        r.assert_json(200),
        json!({"results":[
            {"index":0,"user_id":"away","success":false,"error":"not_connected","queued":true},
            {"index":1,"user_id":"away","success":false,"error":"not_connected","queued":false,"reason":"too_large"},
            {"index":2,"user_id":"here","success":true},
            {"index":3,"user_id":"away","success":false,"error":"not_connected","queued":true}
        ]})
    );
    assert_eq!(here.recv_text().await, numbered_frame("here", 1));
    let mut away = d.device("away").await;
    assert_eq!(away.recv_text().await, numbered_frame("away", 0));
    assert_eq!(away.recv_text().await, numbered_frame("away", 2));
    nothing_more(&mut away).await;
}

#[tokio::test]
async fn a_mention_of_an_away_account_is_kept_in_its_mailbox_and_sends_never_are() {
    let d = Daemon::start(&["--mailbox-messages", "4", "--public-accounts", "ci_bot"]);
    let r = d
        .post(
            "/sse/push",
            r#"{"user_id":"dev9","data":{"message":"run @ci_bot","correlation_id":"m1"}}"#,
        )
        .await;
    assert_eq!(
        r.assert_json(200),
        json!({"status":"partial","message":"User not connected","routed_to":"ci_bot","queued":true})
    );
    let mut send = d
        .send(&json!({"user_id":"ci_bot","data":{"correlation_id":"s1"}}))
        .await;
    send.expect_error_end("User not connected", "s1", step())
        .await;
    let mut bot = d.device("ci_bot").await;
    assert_eq!(
        bot.recv_text().await,
        r#"{"message":"run @ci_bot","correlation_id":"m1","user_id":"dev9","original_sender":{"user_id":"dev9","timestamp":null}}"#
    );
    nothing_more(&mut bot).await;
    assert_eq!(metrics(&d).await["mailbox_kept"], 1);
}

#[tokio::test]
async fn a_second_connection_that_is_refused_takes_nothing() {
    let d = Daemon::start(&["--mailbox-messages", "4"]);
    assert_eq!(push_n(&d, "dev", 0).await.assert_json(200), kept());
    let mut first = d.device("dev").await;
    assert_eq!(first.recv_text().await, numbered_frame("dev", 0));
    let mut second = Device::connect(&d, "user_id=dev").await;
    assert_eq!(second.expect_close(step()).await.0, 1008);
    // Connected: a push is delivered, never kept, and only to the first session.
    let r = push_n(&d, "dev", 1).await;
    assert_eq!(r.assert_json(200)["status"], "success");
    assert_eq!(first.recv_text().await, numbered_frame("dev", 1));
    assert_eq!(metrics(&d).await["mailbox_kept"], 1);
}

/// Frames queued for a session that ends before writing them are kept for the device's
/// return; their pushes are answered `partial` with `"queued":true`.
#[tokio::test]
async fn frames_a_dying_session_did_not_write_are_kept_for_its_return() {
    let d = Daemon::start(&[
        "--mailbox-messages",
        "64",
        "--mailbox-bytes",
        "8388608",
        "--queue-depth",
        "64",
        "--ping-interval-secs",
        "60",
        "--pong-timeout-secs",
        "3",
    ]);
    let stalled = stall_device(&d, StallUntil::WritesBlock).await;
    // One more, queued behind the write that blocks.
    let mut queued = d.http().await;
    queued
        .send(&post(
            "/sse/push",
            &json!({"user_id":"slow","data":{"n":"queued"}}).to_string(),
        ))
        .await;
    // The stalled write times out, the session ends, its queue goes to the mailbox.
    let r = queued.read_response_within(t(15.0)).await;
    assert_eq!(r.assert_json(200), kept());
    for mut c in stalled.waiting {
        let r = c.read_response_within(t(15.0)).await;
        let v = r.assert_json(200);
        assert_eq!(v["status"], "partial");
        // The frame being written may have reached the device: never kept, never twice.
        assert!(v["queued"] == true || v["reason"] == "in_flight", "{v}");
    }
    let mut back = d.device("slow").await;
    let mut last = Value::Null;
    for _ in 0..100 {
        match back.recv(t(2.0)).await {
            Some(Incoming::Text(text)) => last = serde_json::from_str(&text).unwrap(),
            None => break,
            Some(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(last["n"], "queued", "the last kept frame is the last push");
}

#[tokio::test]
async fn kept_messages_survive_a_clean_restart_and_are_read_once() {
    let dir = TempDir::new("state");
    let odd = "\u{85}é \"x\"";
    let args = ["--mailbox-messages", "10", "--state-dir", dir.str()];
    let d = Daemon::start(&args);
    for n in 0..3 {
        assert_eq!(push_n(&d, "dev", n).await.assert_json(200), kept());
    }
    for n in 0..2 {
        assert_eq!(push_n(&d, odd, n).await.assert_json(200), kept());
    }
    stop(d, "mailbox: wrote 5 messages for 2 devices").await;
    assert_eq!(dir.names(), ["mailbox.bin"]);

    let d = Daemon::start(&args);
    assert!(
        d.log_text()
            .contains("mailbox: restored 5 of 5 messages for 2 devices"),
        "{}",
        d.log_text()
    );
    // Read once: a crash from now on cannot deliver them twice.
    assert!(dir.names().is_empty(), "{:?}", dir.names());
    assert_eq!(metrics(&d).await["mailbox_held_messages"], 5);
    let mut dev = d.device("dev").await;
    for n in 0..3 {
        assert_eq!(dev.recv_text().await, numbered_frame("dev", n));
    }
    let mut other = d.device(odd).await;
    for n in 0..2 {
        assert_eq!(other.recv_text().await, numbered_frame(odd, n));
    }
    nothing_more(&mut dev).await;
    nothing_more(&mut other).await;
    drop((dev, other));
    // Nothing kept: nothing written.
    stop(d, "mailbox: nothing kept").await;
    assert!(dir.names().is_empty());
}

#[tokio::test]
async fn the_ttl_counts_the_time_the_daemon_was_stopped() {
    let dir = TempDir::new("state-ttl");
    let args = [
        "--mailbox-messages",
        "10",
        "--mailbox-ttl-secs",
        "2",
        "--state-dir",
        dir.str(),
    ];
    let d = Daemon::start(&args);
    assert_eq!(push_n(&d, "dev", 0).await.assert_json(200), kept());
    stop(d, "drained").await;
    let stopped = std::time::Instant::now();
    // Wait out the age while stopped: the wall clock, not the process, ages a message.
    let deadline = Instant::now() + t(10.0);
    while stopped.elapsed() < std::time::Duration::from_millis(2_500) {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let d = Daemon::start(&args);
    let mut dev = d.device("dev").await;
    assert_eq!(dev.recv_text().await, gap(1));
    nothing_more(&mut dev).await;
}

#[tokio::test]
async fn a_damaged_or_foreign_file_is_set_aside_and_the_daemon_starts_empty() {
    let dir = TempDir::new("state-bad");
    let args = ["--mailbox-messages", "10", "--state-dir", dir.str()];
    // A good file, then one byte of a kept frame changed.
    let d = Daemon::start(&args);
    assert_eq!(push_n(&d, "dev", 0).await.assert_json(200), kept());
    stop(d, "drained").await;
    let path = dir.0.join("mailbox.bin");
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 10;
    bytes[at] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();

    let d = Daemon::start(&args);
    let log = d.log_text();
    assert!(
        log.contains("is damaged (checksum mismatch); set aside as"),
        "{log}"
    );
    let names = dir.names();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].starts_with("mailbox.bin.corrupt-"), "{names:?}");
    assert_eq!(metrics(&d).await["mailbox_held_messages"], 0);
    let mut dev = d.device("dev").await;
    nothing_more(&mut dev).await;
    drop(dev);
    stop(d, "drained").await;

    // Not ours at all.
    for name in dir.names() {
        std::fs::remove_file(dir.0.join(name)).unwrap();
    }
    std::fs::write(&path, b"#!/bin/sh\necho hello\n").unwrap();
    let d = Daemon::start(&args);
    let log = d.log_text();
    assert!(log.contains("not a wssed mailbox file"), "{log}");
    assert!(dir.names()[0].starts_with("mailbox.bin.corrupt-"));
    // Still serving, and what it keeps now is written on the next stop.
    assert_eq!(push_n(&d, "dev", 1).await.assert_json(200), kept());
    stop(d, "mailbox: wrote 1 messages for 1 devices").await;
}

/// Resident memory of the daemon: (VmRSS, VmHWM) in KiB, from /proc.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in {status}"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A thousand devices away, each with a full mailbox, and more pushes than the budget can
/// hold: the kept messages stay inside the budget, the peak resident memory inside
/// docs/memory.md's bound (the part outside the budget plus the budget), and a live push still
/// gets through (the mailbox gives way).
#[tokio::test]
async fn a_thousand_full_mailboxes_stay_inside_the_budget() {
    if std::env::var_os("WSSED_BIN").is_some() {
        return; // an emulator's memory is not the daemon's
    }
    const DEVICES: usize = 1000;
    const PER_DEVICE: usize = 8;
    const BUDGET: u64 = 8 * 1024 * 1024;
    let d = Daemon::start(&[
        "--memory-budget-bytes",
        &BUDGET.to_string(),
        "--max-connections",
        "1024",
        "--max-pending-sends",
        "16",
        "--mailbox-messages",
        &PER_DEVICE.to_string(),
        "--mailbox-bytes",
        "65536",
        "--max-batch",
        "1000",
        "--max-body-bytes",
        "2097152",
    ]);
    let (rss_before, _) = memory_kib(d.pid());
    let pad = "m".repeat(900);
    // Rounds of one batch per 1000 devices; more rounds than the mailboxes hold.
    for round in 0..PER_DEVICE + 2 {
        let items: Vec<Value> = (0..DEVICES)
            .map(|i| json!({"user_id": format!("dev-{i}"), "data": {"r": round, "pad": pad}}))
            .collect();
        let r = d.batch(&Value::Array(items)).await;
        let v = r.assert_json(200);
        let results = v["results"].as_array().unwrap();
        assert_eq!(results.len(), DEVICES);
        assert!(results.iter().all(|x| x["error"] == "not_connected"));
    }
    let m = metrics(&d).await;
    let used = m["memory_used_bytes"].as_u64().unwrap();
    assert!(used <= BUDGET, "used {used} over {BUDGET}");
    let held = m["mailbox_held_messages"].as_u64().unwrap();
    // Most of the budget holds kept messages; the rest of them did not fit.
    assert!(held > (DEVICES * PER_DEVICE / 2) as u64, "{m}");
    assert!(
        m["mailbox_not_kept"]["over_budget"].as_u64().unwrap() > 0,
        "{m}"
    );
    let (rss_full, _) = memory_kib(d.pid());
    let bytes = m["mailbox_held_bytes"].as_u64().unwrap();
    // For docs/memory.md: what a kept message costs in resident memory.
    eprintln!(
        "mailbox memory: {held} messages of {} bytes held, budget used {used}, RSS {rss_before} -> {rss_full} KiB: {} bytes of RSS per kept message",
        bytes / held,
        rss_full.saturating_sub(rss_before) * 1024 / held
    );
    // A live push gets through: kept messages give way.
    let mut live = d.device("live").await;
    let big = json!({"user_id":"live","data":{"pad":"l".repeat(1_500_000)}});
    let r = d.push(&big).await;
    assert_eq!(r.assert_json(200)["status"], "success");
    assert_eq!(
        live.recv_json().await["pad"].as_str().map(str::len),
        Some(1_500_000)
    );
    let m = metrics(&d).await;
    assert!(m["mailbox_dropped"]["budget"].as_u64().unwrap() > 0, "{m}");
    assert!(m["memory_used_bytes"].as_u64().unwrap() <= BUDGET);

    // docs/memory.md's formula: FIXED (8 MiB) + C × CONNECTION (16 KiB) + 1.5 × the budget
    // (the heap's slack over what it holds), plus each mailbox's table slot (0.25 KiB).
    let (_, hwm) = memory_kib(d.pid());
    let connections = 1024 + 16 + 256;
    let bound = 8 * 1024 + connections * 16 + BUDGET * 3 / 2 / 1024 + (DEVICES as u64 * 256) / 1024;
    eprintln!("mailbox memory: VmHWM {hwm} KiB, bound {bound} KiB");
    assert!(hwm <= bound, "VmHWM {hwm} KiB over the bound {bound} KiB");
}

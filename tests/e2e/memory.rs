//! Memory budget (issue 4): with small settings, fill every limit at once — every device slot
//! taken by a device that stopped reading with a full queue of max-size frames, half of them
//! holding an unfinished max-size message, every `/sse/send` slot open with an upstream that
//! stopped reading while its device answers, every remaining TCP slot holding the largest 422
//! answer a max-size body can draw, unread — and check the daemon's peak RSS (`VmHWM`) stays
//! within the worst-case formula of docs/memory.md, whose constants `scripts/measure-memory.sh`
//! measured.

use std::time::Duration;

use serde_json::json;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::common::*;

/// docs/memory.md: idle RSS after start, KiB, of the release and of the debug build.
const FIXED_RELEASE_KIB: f64 = 3_584.0;
const FIXED_DEBUG_KIB: f64 = 6_144.0;
/// An idle device, KiB (measured 10.7 at 1000 devices, 11.2 over the first 100; debug 13.2).
const DEVICE_KIB: f64 = 14.0;
/// An unfinished inbound message, per KiB of `max_message_bytes`.
const INBOUND_PER_MESSAGE_KIB: f64 = 1.3;
/// A queued frame, per KiB of `max_body_bytes`.
const QUEUED_PER_BODY_KIB: f64 = 1.1;
/// Frames being written to a stalled socket: fixed KiB, and per KiB of `max_body_bytes`.
const IN_FLIGHT_KIB: f64 = 20.0;
const IN_FLIGHT_PER_BODY_KIB: f64 = 1.5;
/// An open `/sse/send` stream, KiB.
const SEND_KIB: f64 = 12.0;
/// Events a stream with a stalled upstream holds beyond `queue_depth`, in max-size messages.
const SEND_EXTRA_MESSAGES: f64 = 6.0;
/// The worst TCP connection (an unread 422 answer): fixed KiB, and per KiB of `max_body_bytes`.
const CONN_KIB: f64 = 10.0;
const CONN_PER_BODY_KIB: f64 = 10.0;
/// TCP connections allowed beyond `max_connections + max_pending_sends` (state.rs).
const EXTRA_HTTP_CONNECTIONS: f64 = 256.0;

/// The worst-case RSS of docs/memory.md, KiB.
fn budget_kib(
    fixed: f64,
    devices: f64,
    sends: f64,
    queue: f64,
    body_kib: f64,
    msg_kib: f64,
) -> f64 {
    let device = DEVICE_KIB
        + INBOUND_PER_MESSAGE_KIB * msg_kib
        + QUEUED_PER_BODY_KIB * queue * body_kib
        + IN_FLIGHT_KIB
        + IN_FLIGHT_PER_BODY_KIB * body_kib;
    let send = SEND_KIB + (queue + SEND_EXTRA_MESSAGES) * msg_kib;
    let conn = CONN_KIB + CONN_PER_BODY_KIB * body_kib;
    fixed + devices * device + sends * send + (devices + sends + EXTRA_HTTP_CONNECTIONS) * conn
}

/// `VmRSS` and `VmHWM` of `pid`, KiB.
fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

const MAX_CONNECTIONS: usize = 20;
const MAX_PENDING_SENDS: usize = 10;
const QUEUE_DEPTH: usize = 4;
const BODY_BYTES: usize = 16 * 1024;

/// A masked text frame header announcing `len` payload bytes (mask all zero: payload as is).
fn text_frame_head(len: usize) -> Vec<u8> {
    let mut f = vec![0x81u8, 0x80 | 127];
    f.extend_from_slice(&(len as u64).to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0]);
    f
}

/// Pushes `body` on kept-alive connections until the answer is 503; returns the connections
/// whose push is still waiting for its frame to be written.
fn fill_queue(addr: std::net::SocketAddr, body: String) -> JoinHandle<Vec<Http>> {
    tokio::spawn(async move {
        let mut waiting = Vec::new();
        let mut c = Http::connect(addr).await;
        let deadline = Instant::now() + t(20.0);
        for n in 0..5000 {
            assert!(Instant::now() < deadline, "queue not full after {n} pushes");
            c.send(&post("/sse/push", &body)).await;
            match tokio::time::timeout(t(0.3), c.read_head()).await {
                Err(_) => {
                    // Its frame sits behind the stalled socket; keep it waiting, go on anew.
                    waiting.push(std::mem::replace(&mut c, Http::connect(addr).await));
                }
                Ok(head) => {
                    let len: usize = head
                        .header("content-length")
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    c.read_exact_n(len, Instant::now() + step()).await;
                    if head.status == 503 {
                        return waiting;
                    }
                    assert_eq!(head.status, 200, "push {n} while filling");
                }
            }
        }
        panic!("the queue never filled");
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_within_the_budget_with_every_limit_filled() {
    if std::env::var_os("WSSED_BIN").is_some() {
        eprintln!("memory budget: skipped for WSSED_BIN (an emulator's RSS is not the daemon's)");
        return;
    }
    let body_bytes = BODY_BYTES.to_string();
    let d = Daemon::start(&[
        "--max-connections",
        &MAX_CONNECTIONS.to_string(),
        "--max-pending-sends",
        &MAX_PENDING_SENDS.to_string(),
        "--queue-depth",
        &QUEUE_DEPTH.to_string(),
        "--max-body-bytes",
        &body_bytes,
        "--max-message-bytes",
        &body_bytes,
        // Nothing may time out while the limits are held.
        "--ping-interval-secs",
        "120",
        "--pong-timeout-secs",
        "120",
        "--idle-timeout-secs",
        "120",
        "--header-timeout-secs",
        "120",
        "--send-timeout-secs",
        "120",
        "--keepalive-secs",
        "120",
    ]);
    let Some(start) = rss_kib(d.pid()) else {
        eprintln!("memory budget: skipped, no /proc/PID/status here");
        return;
    };
    let began = Instant::now();

    // Every device slot: devices that completed the upgrade and never read.
    let mut devices = Vec::with_capacity(MAX_CONNECTIONS);
    for i in 0..MAX_CONNECTIONS {
        let http = Http::connect_small_rcvbuf(d.addr, 4096).await;
        devices.push(RawWs::upgrade_on(http, &format!("user_id=m{i}")).await);
    }
    wait_until(step(), "every device slot is taken", || async {
        d.connections().await == MAX_CONNECTIONS as u64
    })
    .await;

    // Every send slot: an upstream that reads the head and no more, to devices 0..; each device
    // answers with max-size messages.
    let mut upstreams = Vec::with_capacity(MAX_PENDING_SENDS);
    let pad = "p".repeat(BODY_BYTES - 200);
    for i in 0..MAX_PENDING_SENDS {
        let mut c = Http::connect_small_rcvbuf(d.addr, 4096).await;
        let body = json!({"user_id": format!("m{i}"), "data": {"correlation_id": format!("mem-{i}"), "p": pad}});
        c.send(&post("/sse/send", &body.to_string())).await;
        let head = c.read_head().await;
        assert_eq!(head.status, 200, "send {i}: {:?}", head.headers);
        upstreams.push(c);
    }
    let answer_pad = "a".repeat(BODY_BYTES - 100);
    for (i, dev) in devices.iter_mut().enumerate().take(MAX_PENDING_SENDS) {
        let answer =
            json!({"correlation_id": format!("mem-{i}"), "type": "chunk", "p": answer_pad})
                .to_string();
        assert!(answer.len() <= BODY_BYTES);
        for _ in 0..QUEUE_DEPTH + 6 {
            assert!(
                dev.send_frame(true, 1, answer.as_bytes()).await,
                "device m{i} answer"
            );
        }
    }
    // The other devices each hold an unfinished max-size message.
    for dev in devices.iter_mut().skip(MAX_PENDING_SENDS) {
        let mut f = text_frame_head(BODY_BYTES);
        f.extend(std::iter::repeat_n(b'x', BODY_BYTES - 1));
        assert!(dev.http.try_send(&f).await);
    }

    // Every queue full of max-size frames.
    let push_pad = "q".repeat(BODY_BYTES - 100);
    let fillers: Vec<_> = (0..MAX_CONNECTIONS)
        .map(|i| {
            let body = json!({"user_id": format!("m{i}"), "data": {"p": push_pad}}).to_string();
            assert!(body.len() <= BODY_BYTES);
            fill_queue(d.addr, body)
        })
        .collect();
    let mut waiting = Vec::new();
    for f in fillers {
        waiting.extend(
            tokio::time::timeout(t(25.0), f)
                .await
                .expect("queues never filled")
                .expect("filler failed"),
        );
    }

    // Every remaining TCP slot: the largest 422 answer a max-size batch can draw, never read.
    let item = r#"{"user_id":1,"data":1,"event_type":1,"event_id":1,"timestamp":"","user_id":1}"#;
    let n = (BODY_BYTES - 2) / (item.len() + 1);
    let batch = format!("[{}]", vec![item; n].join(","));
    let mut rejects = Vec::new();
    let cap = MAX_CONNECTIONS + MAX_PENDING_SENDS + EXTRA_HTTP_CONNECTIONS as usize;
    let mut at_cap = false;
    for _ in 0..cap {
        let mut c = Http::connect_small_rcvbuf(d.addr, 4096).await;
        let _ = c.try_send(&post("/sse/push/batch", &batch)).await;
        let head = c.read_head().await;
        match head.status {
            422 => rejects.push(c),
            503 => {
                at_cap = true;
                break;
            }
            s => panic!("batch answered {s}"),
        }
    }
    assert!(at_cap, "the TCP cap was never reached");
    assert!(!rejects.is_empty(), "no room left for the 422 answers");

    let (rss, hwm) = rss_kib(d.pid()).expect("daemon status");
    let fixed = if cfg!(debug_assertions) {
        FIXED_DEBUG_KIB
    } else {
        FIXED_RELEASE_KIB
    };
    let kib = (BODY_BYTES / 1024) as f64;
    let budget = budget_kib(
        fixed,
        MAX_CONNECTIONS as f64,
        MAX_PENDING_SENDS as f64,
        QUEUE_DEPTH as f64,
        kib,
        kib,
    );
    eprintln!(
        "memory budget: start {} KiB, now {rss} KiB, peak {hwm} KiB, budget {budget:.0} KiB; \
         {} pushes waiting, {} unread 422 answers; filled in {:?}",
        start.0,
        waiting.len(),
        rejects.len(),
        began.elapsed()
    );
    assert!(
        (hwm as f64) <= budget,
        "peak RSS {hwm} KiB over the budget {budget:.0} KiB"
    );
    // The limits held: a load this size is no small part of the budget.
    assert!(
        (hwm - start.1) as f64 >= 0.25 * (budget - fixed),
        "the fill barely moved the RSS ({} -> {hwm} KiB): the test filled nothing",
        start.1
    );

    // And the daemon is still fine once the load goes.
    drop(rejects);
    drop(waiting);
    wait_until(t(10.0), "the daemon answers /health again", || async {
        tokio::time::timeout(Duration::from_secs(2), d.get("/health"))
            .await
            .is_ok_and(|r| r.status == 200)
    })
    .await;
    assert_eq!(d.connections().await, MAX_CONNECTIONS as u64);
    drop(upstreams);
    drop(devices);
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

//! Hostile and flaky peers (issue 4): slowloris heads, idle sockets, connection storms, slow
//! consumers, half-open devices, peers leaving mid-stream, malformed WebSocket frames and
//! request smuggling. Each test is bounded in time and in count; "hundreds" means 200 here so
//! the suite fits CI on two cores.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::common::*;

fn success() -> Value {
    json!({"status": "success", "message": "Message delivered"})
}

fn partial() -> Value {
    json!({"status": "partial", "message": "User not connected"})
}

/// Parses one complete response out of `bytes`; its body is whatever follows the head.
fn parse_response(bytes: &[u8]) -> Option<Response> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => Some(Response {
            version: resp.version.unwrap_or(9),
            status: resp.code.unwrap_or(0),
            headers: resp
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect(),
            body: bytes.get(n..).unwrap_or_default().to_vec(),
        }),
        _ => None,
    }
}

/// Awaits every task, failing the test with the first task's failure.
async fn join_all<T>(tasks: Vec<JoinHandle<T>>, within: Duration) -> Vec<T> {
    let deadline = Instant::now() + within;
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(v)) => out.push(v),
            Ok(Err(e)) => panic!("a client task failed: {e}"),
            Err(_) => panic!("client tasks still running after {within:?}"),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Slowloris and idle connections (docs/protocol.md §2.2)
// ---------------------------------------------------------------------------------------------

/// What one dribbling connection saw.
struct Dribbled {
    /// From the first byte sent to the first byte of the answer.
    answered_after: Duration,
    /// From the first byte sent to EOF.
    closed_after: Duration,
    /// Everything the daemon sent.
    bytes: Vec<u8>,
}

/// Sends a head that never ends, one byte every `every`, and reads until the daemon closes.
async fn dribble(addr: std::net::SocketAddr, every: Duration, give_up: Duration) -> Dribbled {
    let stream = tokio::time::timeout(step(), TcpStream::connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let started = Instant::now();
    wr.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        .await
        .expect("first bytes");
    let deadline = started + give_up;
    let mut tick = tokio::time::interval_at(started + every, every);
    let mut bytes = Vec::new();
    let mut answered_after = None;
    let mut writing = true;
    let mut buf = [0u8; 1024];
    loop {
        tokio::select! {
            r = tokio::time::timeout_at(deadline, rd.read(&mut buf)) => match r {
                Err(_) => panic!(
                    "dribbler not closed after {give_up:?}; got {:?}",
                    String::from_utf8_lossy(&bytes)
                ),
                Ok(Ok(0)) | Ok(Err(_)) => {
                    return Dribbled {
                        answered_after: answered_after.unwrap_or_else(|| started.elapsed()),
                        closed_after: started.elapsed(),
                        bytes,
                    }
                }
                Ok(Ok(n)) => {
                    answered_after.get_or_insert_with(|| started.elapsed());
                    bytes.extend_from_slice(&buf[..n]);
                    // Stop writing once answered: bytes the daemon won't read turn its close into a reset.
                    writing = false;
                }
            },
            _ = tick.tick(), if writing => {
                if wr.write_all(b"a").await.is_err() {
                    writing = false;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_dribblers_get_408_and_never_block_a_normal_client() {
    const DRIBBLERS: usize = 200;
    const HEADER_TIMEOUT_SECS: f64 = 2.0;
    let d = Daemon::start(&["--header-timeout-secs", "2", "--idle-timeout-secs", "30"]);
    let addr = d.addr;
    let dribblers: Vec<_> = (0..DRIBBLERS)
        .map(|_| {
            tokio::spawn(dribble(
                addr,
                Duration::from_millis(100),
                t(HEADER_TIMEOUT_SECS + 8.0),
            ))
        })
        .collect();

    // A normal client keeps asking meanwhile, on a kept-alive connection and on fresh ones.
    let mut kept = d.http().await;
    let mut worst = Duration::ZERO;
    let mut asked = 0;
    let until = Instant::now() + Duration::from_secs_f64(HEADER_TIMEOUT_SECS + 0.5);
    while Instant::now() < until || dribblers.iter().any(|t| !t.is_finished()) {
        assert!(asked < 2000, "dribblers never finished");
        let began = Instant::now();
        kept.send(&get("/health")).await;
        let r = tokio::time::timeout(t(1.0), kept.read_response())
            .await
            .expect("/health on a kept-alive connection blocked by dribblers");
        assert_eq!(r.status, 200);
        let r = tokio::time::timeout(t(1.0), d.get("/health"))
            .await
            .expect("/health on a fresh connection blocked by dribblers");
        assert_eq!(r.status, 200);
        worst = worst.max(began.elapsed());
        asked += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(asked >= 10, "too few probes while dribbling: {asked}");

    for (i, got) in join_all(dribblers, t(10.0)).await.into_iter().enumerate() {
        let r = parse_response(&got.bytes).unwrap_or_else(|| {
            panic!(
                "dribbler {i} got no complete response: {:?}",
                String::from_utf8_lossy(&got.bytes)
            )
        });
        // The whole body came before the close: assert_json checks its Content-Length.
        r.assert_detail(408);
        assert!(
            r.header("connection")
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("close")),
            "408 without Connection: close: {:?}",
            r.headers
        );
        // Not before the head deadline (a little slack for timer granularity), not long after.
        assert!(
            got.answered_after >= Duration::from_secs_f64(HEADER_TIMEOUT_SECS - 0.1),
            "dribbler {i} answered early, after {:?}",
            got.answered_after
        );
        assert!(
            got.answered_after <= t(HEADER_TIMEOUT_SECS + 3.0),
            "dribbler {i} answered late, after {:?}",
            got.answered_after
        );
        assert!(
            got.closed_after <= got.answered_after + step(),
            "dribbler {i} not closed after its 408"
        );
    }
    eprintln!("slowloris: {asked} probes, slowest {worst:?}");
    assert_eq!(d.get("/health").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_get_408_and_never_block_a_normal_client() {
    // The body phase has its own timeout (ApiError::BodyTimeout): a body that stops arriving
    // for body_timeout_secs is 408 and the connection closes.
    const STALLED: usize = 100;
    let d = Daemon::start(&["--body-timeout-secs", "1", "--idle-timeout-secs", "30"]);
    let addr = d.addr;
    let tasks: Vec<_> = (0..STALLED)
        .map(|i| {
            tokio::spawn(async move {
                let mut c = Http::connect(addr).await;
                let body = format!(r#"{{"user_id":"nobody","data":{{"i":{i}}}}}"#);
                let mut req = post("/sse/push", &body);
                // Everything but the last 5 bytes of the body.
                req.truncate(req.len() - 5);
                c.send(&req).await;
                let sent = Instant::now();
                let r = c.read_response().await;
                let after = sent.elapsed();
                r.assert_detail(408);
                assert!(c.closes_within(step()).await, "stalled body {i}: left open");
                after
            })
        })
        .collect();
    // Meanwhile a normal client is served at once.
    for _ in 0..10 {
        let r = tokio::time::timeout(t(1.0), d.push(&json!({"user_id": "nobody", "data": {}})))
            .await
            .expect("a push blocked by stalled bodies");
        assert_eq!(r.assert_json(200), partial());
    }
    for (i, after) in join_all(tasks, t(10.0)).await.into_iter().enumerate() {
        assert!(
            after >= Duration::from_millis(900) && after <= t(4.0),
            "stalled body {i} answered after {after:?}"
        );
    }
}

#[tokio::test]
async fn a_dribbled_body_gets_408_once_its_whole_deadline_passes() {
    // Progress on every read is not enough: the whole body must arrive within
    // body_timeout_secs of its head, or a byte every so often would hold the socket forever.
    let d = Daemon::start(&["--body-timeout-secs", "1", "--idle-timeout-secs", "30"]);
    let mut c = Http::connect(d.addr).await;
    let body = r#"{"user_id":"nobody","data":{"padding":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}"#;
    let req = post("/sse/push", body);
    let head_end = req
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head")
        + 4;
    c.send(&req[..head_end]).await;
    let sent = Instant::now();
    // One body byte every 200 ms: every read makes progress, the body never completes in time.
    let mut answered = None;
    for byte in req[head_end..].iter().take(40) {
        if !c.try_send(std::slice::from_ref(byte)).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        if sent.elapsed() > t(3.0) {
            break;
        }
        if c.fill(Instant::now() + Duration::from_millis(1))
            .await
            .is_ok()
        {
            answered = Some(sent.elapsed());
            break;
        }
    }
    let after = answered.unwrap_or_else(|| sent.elapsed());
    let r = c.read_response_within(t(5.0)).await;
    r.assert_detail(408);
    assert!(
        after <= t(2.5),
        "a dribbled body was still being read after {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_close_silently_after_idle_timeout() {
    const EACH: usize = 50;
    let d = Daemon::start(&["--idle-timeout-secs", "1", "--header-timeout-secs", "5"]);
    let addr = d.addr;
    let mut tasks = Vec::new();
    for i in 0..2 * EACH {
        tasks.push(tokio::spawn(async move {
            let mut c = Http::connect(addr).await;
            if i % 2 == 0 {
                // Kept alive after one answer.
                c.send(&get("/health")).await;
                assert_eq!(c.read_response().await.status, 200);
            }
            let idle_from = Instant::now();
            c.expect_closed(t(4.0)).await;
            idle_from.elapsed()
        }));
    }
    for (i, idled) in join_all(tasks, t(10.0)).await.into_iter().enumerate() {
        assert!(
            idled >= Duration::from_millis(900),
            "connection {i} closed after only {idled:?} idle"
        );
    }

    // The idle timer restarts with each request: a client that keeps talking stays connected
    // well past one idle period.
    let mut c = d.http().await;
    let began = Instant::now();
    while began.elapsed() < Duration::from_millis(2500) {
        c.assert_usable().await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    c.assert_usable().await;
}

// ---------------------------------------------------------------------------------------------
// Connection storms and the TCP cap (docs/protocol.md §2.7, listener.rs `max_open_connections`)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_past_max_connections_gets_1013_and_accepted_devices_still_get_pushes() {
    const MAX: usize = 20;
    const STORM: usize = 100;
    let d = Daemon::start(&["--max-connections", "20"]);
    let mut connecting = Vec::new();
    for i in 0..STORM {
        let d_addr = d.addr;
        connecting.push(tokio::spawn(async move {
            let url = format!("ws://{d_addr}/ws?user_id=storm{i}");
            let (ws, resp) = tokio::time::timeout(
                step(),
                tokio_tungstenite::connect_async_with_config(url.as_str(), None, true),
            )
            .await
            .expect("upgrade timed out")
            .expect("upgrade failed");
            assert_eq!(resp.status().as_u16(), 101);
            ws
        }));
    }
    let sockets = join_all(connecting, t(20.0)).await;
    wait_until(
        step(),
        "the table holds max_connections devices",
        || async { d.connections().await == MAX as u64 },
    )
    .await;

    // Push to every id: exactly MAX are delivered, the rest are not connected.
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    for i in 0..STORM {
        let r = d
            .push(&json!({"user_id": format!("storm{i}"), "data": {"n": i}}))
            .await;
        let v = r.assert_json(200);
        if v == success() {
            accepted.push(i);
        } else {
            assert_eq!(v, partial(), "storm{i}");
            refused.push(i);
        }
    }
    assert_eq!(accepted.len(), MAX, "accepted: {accepted:?}");

    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut sockets: Vec<_> = sockets.into_iter().map(Some).collect();
    for &i in &refused {
        let mut ws = sockets[i].take().expect("socket");
        let first = tokio::time::timeout(step(), ws.next())
            .await
            .unwrap_or_else(|_| panic!("storm{i}: nothing from the daemon"));
        match first {
            Some(Ok(Message::Close(Some(f)))) => {
                assert_eq!(u16::from(f.code), 1013, "storm{i}: {f:?}");
            }
            other => panic!("storm{i} over the limit got {other:?}"),
        }
    }
    for &i in &accepted {
        let ws = sockets[i].as_mut().expect("socket");
        let first = tokio::time::timeout(step(), ws.next())
            .await
            .unwrap_or_else(|_| panic!("storm{i}: its push never arrived"));
        match first {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).expect("JSON frame");
                assert_eq!(v["n"], i);
            }
            other => panic!("accepted storm{i} got {other:?}"),
        }
    }

    // A freed slot is taken by the next device.
    let leaving = accepted[0];
    if let Some(mut ws) = sockets[leaving].take() {
        use futures_util::SinkExt;
        let _ = ws.send(Message::Close(None)).await;
        let _ = tokio::time::timeout(step(), async { while let Some(Ok(_)) = ws.next().await {} })
            .await;
    }
    wait_until(step(), "the leaving device is counted out", || async {
        d.connections().await == MAX as u64 - 1
    })
    .await;
    let mut late = d.device(&format!("storm{}", refused[0])).await;
    d.push(&json!({"user_id": format!("storm{}", refused[0]), "data": {"late": true}}))
        .await
        .assert_json(200);
    assert_eq!(late.recv_json().await["late"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_over_the_cap_get_503_at_once() {
    // Cap = max_connections + max_pending_sends + 256 (state.rs EXTRA_HTTP_CONNECTIONS).
    const CAP: usize = 1 + 1 + 256;
    let d = Daemon::start(&[
        "--max-connections",
        "1",
        "--max-pending-sends",
        "1",
        "--idle-timeout-secs",
        "30",
    ]);
    let mut held = Vec::with_capacity(CAP);
    for _ in 0..CAP {
        held.push(d.http().await);
    }
    // The listener accepts in order, so everything past the held ones is over the cap.
    for extra in 0..5 {
        let mut c = d.http().await;
        let began = Instant::now();
        // No request needed: the answer is written as soon as the connection is accepted.
        let r = tokio::time::timeout(t(1.0), c.read_response())
            .await
            .unwrap_or_else(|_| panic!("extra connection {extra} not answered at once"));
        assert_eq!(r.status, 503, "extra connection {extra}: {}", r.text());
        r.assert_detail(503);
        assert_eq!(r.header("retry-after").map(str::trim), Some("1"));
        assert!(
            c.closes_within(step()).await,
            "refused connection left open"
        );
        assert!(began.elapsed() < t(1.0));
    }
    // The held ones are still served.
    held[0].assert_usable().await;
    held[CAP - 1].assert_usable().await;
    // Closing some frees room for new ones.
    held.truncate(CAP - 10);
    wait_until(step(), "a new connection is served again", || async {
        d.get("/health").await.status == 200
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Slow consumer (docs/protocol.md §4.4) and half-open devices (§8.7)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_gets_503_then_is_dropped_and_its_slot_reused() {
    const PONG_TIMEOUT_SECS: f64 = 2.0;
    let d = Daemon::start(&[
        "--max-connections",
        "2",
        "--queue-depth",
        "2",
        "--ping-interval-secs",
        "60",
        "--pong-timeout-secs",
        "2",
    ]);
    let mut other = d.device("other").await;
    // Completes the upgrade, then never reads; a small receive buffer stalls the daemon fast.
    let slow = unread_device(&d, "slow").await;

    let body = json!({"user_id": "slow", "data": {"pad": "x".repeat(60_000)}}).to_string();
    let mut waiting: Vec<Http> = Vec::new();
    let fill_deadline = Instant::now() + t(15.0);
    let mut full = None;
    for n in 0..2000 {
        assert!(Instant::now() < fill_deadline, "no 503 after {n} pushes");
        let mut c = d.http().await;
        c.send(&post("/sse/push", &body)).await;
        match tokio::time::timeout(t(0.3), c.read_head()).await {
            // Its frame is queued behind the stalled socket: it is answered later.
            Err(_) => waiting.push(c),
            Ok(mut head) => {
                let len: usize = head
                    .header("content-length")
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                head.body = c.read_exact_n(len, Instant::now() + step()).await;
                if head.status == 503 {
                    full = Some(head);
                    break;
                }
                assert_eq!(head.assert_json(200), success(), "push {n} while filling");
            }
        }
        // The other device is not held up by the stalled one.
        if n % 20 == 0 {
            d.push(&json!({"user_id": "other", "data": {"n": n}}))
                .await
                .assert_json(200);
            assert_eq!(other.recv_json().await["n"], n);
        }
    }
    let stalled_at = Instant::now();
    let full = full.expect("queue never reported full");
    assert_eq!(
        full.assert_json(503),
        json!({"status": "error", "message": "User queue full"})
    );
    assert_eq!(full.header("retry-after").map(str::trim), Some("1"));
    assert!(
        waiting.len() <= 2 * 2,
        "more pushes waiting ({}) than the queue and one write batch hold",
        waiting.len()
    );

    // Nothing hangs: every waiting push is answered once the stalled device is dropped.
    for c in &mut waiting {
        let r = tokio::time::timeout(t(PONG_TIMEOUT_SECS + 5.0), c.read_response())
            .await
            .expect("a waiting push was never answered");
        let v = r.assert_json(200);
        assert!(
            v == success() || v == partial(),
            "waiting push answered {v}"
        );
    }
    wait_until(
        t(PONG_TIMEOUT_SECS + 3.0),
        "the stalled device is dropped",
        || async { d.connections().await == 1 },
    )
    .await;
    assert!(
        stalled_at.elapsed() <= t(PONG_TIMEOUT_SECS + 3.0),
        "dropped only after {:?}",
        stalled_at.elapsed()
    );
    drop(slow);

    // The slot and the user id are free again: with max_connections 2 and `other` still here,
    // the same id gets in (a leaked slot would be 1013, a stale entry 1008).
    let mut again = d.device("slow").await;
    d.push(&json!({"user_id": "slow", "data": {"back": true}}))
        .await
        .assert_json(200);
    assert_eq!(again.recv_json().await["back"], true);
    d.push(&json!({"user_id": "other", "data": {"still": true}}))
        .await
        .assert_json(200);
    assert_eq!(other.recv_json().await["still"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_devices_are_removed_in_time_and_can_reconnect() {
    const MUTE: usize = 50;
    const PING_SECS: f64 = 1.0;
    const PONG_SECS: f64 = 1.0;
    let d = Daemon::start(&["--ping-interval-secs", "1", "--pong-timeout-secs", "1"]);
    let mut good = d.device("good").await;
    // Upgraded, TCP kept open, nothing read or answered: pings go unanswered.
    let mut mutes = Vec::with_capacity(MUTE);
    for i in 0..MUTE {
        mutes.push(RawWs::upgrade(&d, &format!("user_id=mute{i}")).await);
    }
    wait_until(step(), "all devices registered", || async {
        d.connections().await == MUTE as u64 + 1
    })
    .await;
    // Every mute device registered before this instant, so each is gone by this bound.
    let registered = Instant::now();
    wait_until(
        t(PING_SECS + PONG_SECS + 2.0),
        "the half-open devices are removed",
        || async { d.connections().await == 1 },
    )
    .await;
    eprintln!(
        "half-open: removed {:?} after the last registration",
        registered.elapsed()
    );

    // The daemon dropped them; each socket sees pings at most, then EOF.
    for (i, m) in mutes.iter_mut().enumerate() {
        loop {
            match m.read_frame(step()).await {
                None => break,
                Some(f) if f.opcode == 9 || f.opcode == 8 => {}
                Some(f) => panic!("mute{i} got {f:?}"),
            }
        }
    }
    // The device that answers pings stayed.
    d.push(&json!({"user_id": "good", "data": {"ok": 1}}))
        .await
        .assert_json(200);
    assert_eq!(good.recv_json().await["ok"], 1);
    // The same ids connect again.
    let mut back = Vec::new();
    for i in 0..MUTE {
        back.push(Device::connect(&d, &format!("user_id=mute{i}")).await);
    }
    wait_until(step(), "the ids are back", || async {
        d.connections().await == MUTE as u64 + 1
    })
    .await;
    for (i, dev) in back.iter_mut().enumerate().step_by(10) {
        assert_eq!(
            d.push(&json!({"user_id": format!("mute{i}"), "data": {"i": i}}))
                .await
                .assert_json(200),
            success()
        );
        assert_eq!(dev.recv_json().await["i"], i);
    }
}

// ---------------------------------------------------------------------------------------------
// Peers leaving mid-stream (docs/protocol.md §7.7)
// ---------------------------------------------------------------------------------------------

/// Opens `/sse/send` for `cid` on a fresh connection and returns the stream (head read).
async fn open_send(d: &Daemon, user: &str, cid: &str) -> SseStream {
    d.send(&json!({"user_id": user, "data": {"correlation_id": cid}}))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_leaving_mid_stream_free_their_correlation_ids() {
    const STREAMS: usize = 20;
    // A long keepalive: the ids must be freed by watching for EOF, not by a failed write.
    let d = Daemon::start(&[
        "--max-pending-sends",
        "20",
        "--keepalive-secs",
        "30",
        "--queue-depth",
        "64",
    ]);
    let mut dev = d.device("dev").await;
    let mut streams = Vec::new();
    for i in 0..STREAMS {
        let s = open_send(&d, "dev", &format!("leave-{i}")).await;
        s.assert_stream_head();
        streams.push(s);
    }
    for _ in 0..STREAMS {
        let v = dev.recv_json().await;
        assert!(v["correlation_id"]
            .as_str()
            .is_some_and(|c| c.starts_with("leave-")));
    }
    // While they wait: the id is taken (409) and the table is full (503).
    let r = open_send(&d, "dev", "leave-0").await;
    assert_eq!(r.head.status, 409, "{:?}", r.head);
    let r = open_send(&d, "dev", "one-too-many").await;
    assert_eq!(r.head.status, 503, "{:?}", r.head);

    // The upstreams hang up without reading anything more.
    let left = Instant::now();
    drop(streams);
    let mut reopened = Vec::new();
    for i in 0..STREAMS {
        let cid = format!("leave-{i}");
        let deadline = Instant::now() + t(3.0);
        let s = loop {
            let s = open_send(&d, "dev", &cid).await;
            match s.head.status {
                200 => break s,
                409 | 503 => {
                    assert!(
                        Instant::now() < deadline,
                        "{cid} still taken {:?} after its upstream left",
                        left.elapsed()
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => panic!("{cid}: unexpected {other}"),
            }
        };
        s.assert_stream_head();
        reopened.push((cid, s));
    }
    assert!(
        left.elapsed() < t(3.0) + t(1.0),
        "ids freed only after {:?}; keepalive is 30 s",
        left.elapsed()
    );
    // The new streams work end to end.
    for _ in 0..STREAMS {
        let v = dev.recv_json().await;
        let cid = v["correlation_id"].as_str().expect("cid").to_string();
        dev.send_text(&json!({"correlation_id": cid, "is_final": true, "ok": 1}).to_string())
            .await;
    }
    for (cid, s) in &mut reopened {
        let ev = s.next_event(step()).await;
        assert_eq!(ev.json()["correlation_id"], cid.as_str());
        s.expect_end(step()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_leaving_mid_stream_ends_each_of_its_streams_with_user_disconnected() {
    const STREAMS: usize = 10;
    let d = Daemon::start(&["--queue-depth", "64"]);
    for abrupt in [true, false] {
        let user = if abrupt { "vanishes" } else { "closes" };
        let mut raw = if abrupt {
            Some(RawWs::upgrade(&d, &format!("user_id={user}")).await)
        } else {
            None
        };
        let mut dev = if abrupt {
            None
        } else {
            Some(d.device(user).await)
        };
        wait_until(step(), "device registered", || async {
            d.connections().await == 1
        })
        .await;
        let mut streams = Vec::new();
        for i in 0..STREAMS {
            let s = open_send(&d, user, &format!("{user}-{i}")).await;
            s.assert_stream_head();
            streams.push(s);
        }
        // The device saw every request, and answers the first one once (not final).
        let first = json!({"correlation_id": format!("{user}-0"), "type": "response", "n": 1});
        if let Some(raw) = raw.as_mut() {
            for _ in 0..STREAMS {
                let f = raw.read_frame(step()).await.expect("a request frame");
                assert_eq!(f.opcode, 1);
            }
            assert!(raw.send_frame(true, 1, first.to_string().as_bytes()).await);
        }
        if let Some(dev) = dev.as_mut() {
            for _ in 0..STREAMS {
                dev.recv_json().await;
            }
            dev.send_text(&first.to_string()).await;
        }
        let ev = streams[0].next_event(step()).await;
        assert_eq!(ev.json()["n"], 1);

        // Gone: a TCP close without a WebSocket close, or a clean close handshake.
        drop(raw);
        if let Some(dev) = dev {
            dev.close().await;
        }
        for (i, s) in streams.iter_mut().enumerate() {
            s.expect_error_end("User disconnected", &format!("{user}-{i}"), step())
                .await;
        }
        assert_eq!(d.connections().await, 0);
    }
}

// ---------------------------------------------------------------------------------------------
// Malformed WebSocket traffic (RFC 6455 §5, §7.4.1; docs/protocol.md §8.5, §8.8)
// ---------------------------------------------------------------------------------------------

/// A masked frame with explicit first byte (FIN, RSV, opcode).
fn masked(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x11u8, 0x22, 0x33, 0x44];
    let mut f = vec![b0];
    let n = payload.len();
    if n < 126 {
        f.push(0x80 | n as u8);
    } else if n <= 0xffff {
        f.push(0x80 | 126);
        f.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&(n as u64).to_be_bytes());
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// An unmasked frame (forbidden from a client).
fn unmasked(b0: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut f = vec![b0, payload.len() as u8];
    f.extend_from_slice(payload);
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_websocket_traffic_gets_the_right_close_and_spares_other_devices() {
    const FIN: u8 = 0x80;
    let big = vec![b'a'; 1025];
    let close_body = |code: u16, reason: &[u8]| {
        let mut v = code.to_be_bytes().to_vec();
        v.extend_from_slice(reason);
        v
    };
    // (name, bytes, accepted close codes)
    let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        (
            "invalid UTF-8 text",
            masked(FIN | 1, &[b'{', 0xC3, 0x28, b'}']),
            &[1007],
        ),
        (
            "invalid UTF-8 split over fragments",
            [masked(1, &[b'"', 0xE2, 0x82]), masked(FIN, &[0x28, b'"'])].concat(),
            &[1007],
        ),
        ("binary frame", masked(FIN | 2, b"{}"), &[1003]),
        ("oversize message", masked(FIN | 1, &big), &[1009]),
        (
            "oversize fragmented message",
            [masked(1, &big[..600]), masked(FIN, &big[600..])].concat(),
            &[1009],
        ),
        ("unmasked text frame", unmasked(FIN | 1, b"{}"), &[1002]),
        ("unmasked ping", unmasked(FIN | 9, b""), &[1002]),
        ("fragmented ping", masked(9, b"p"), &[1002]),
        (
            "fragmented close",
            masked(8, &close_body(1000, b"")),
            &[1002],
        ),
        (
            "ping over 125 bytes",
            masked(FIN | 9, &[b'p'; 126]),
            &[1002],
        ),
        (
            "RSV1 without an extension",
            masked(FIN | 0x40 | 1, b"{}"),
            &[1002],
        ),
        ("RSV3 set", masked(FIN | 0x10 | 1, b"{}"), &[1002]),
        ("reserved data opcode 3", masked(FIN | 3, b"x"), &[1002]),
        (
            "reserved control opcode 0xB",
            masked(FIN | 0xB, b""),
            &[1002],
        ),
        (
            "continuation with nothing to continue",
            masked(FIN, b"{}"),
            &[1002],
        ),
        (
            "new text frame inside a fragmented message",
            [masked(1, b"{"), masked(FIN | 1, b"{}")].concat(),
            &[1002],
        ),
        (
            "close with a 1-byte body",
            masked(FIN | 8, &[0x03]),
            &[1002],
        ),
        (
            "close with code 1005",
            masked(FIN | 8, &close_body(1005, b"")),
            &[1002],
        ),
        (
            "close with code 999",
            masked(FIN | 8, &close_body(999, b"")),
            &[1002],
        ),
        (
            "close with an invalid UTF-8 reason",
            masked(FIN | 8, &close_body(1000, &[0xC3, 0x28])),
            &[1002, 1007],
        ),
    ];
    let d = Daemon::start(&["--max-message-bytes", "1024"]);
    let mut bystander = d.device("bystander").await;
    for (n, (name, bytes, codes)) in cases.iter().enumerate() {
        let mut raw = RawWs::upgrade(&d, &format!("user_id=bad{n}")).await;
        wait_until(step(), "the bad device registered", || async {
            d.connections().await == 2
        })
        .await;
        raw.http.send(bytes).await;
        let code = raw.expect_close(step()).await;
        // Complete the close handshake so the daemon drops the socket without waiting.
        let _ = raw
            .send_frame(true, 8, &code.unwrap_or(1000).to_be_bytes())
            .await;
        assert!(
            code.is_some_and(|c| codes.contains(&c)),
            "{name}: close code {code:?}, want one of {codes:?}"
        );
        assert!(
            raw.http.closes_within(step()).await,
            "{name}: TCP left open after the close"
        );
        wait_until(step(), "the bad device left the table", || async {
            d.connections().await == 1
        })
        .await;
        // The other device is unaffected.
        assert_eq!(
            d.push(&json!({"user_id": "bystander", "data": {"after": name}}))
                .await
                .assert_json(200),
            success(),
            "after {name}"
        );
        assert_eq!(bystander.recv_json().await["after"], *name);
    }
}

// ---------------------------------------------------------------------------------------------
// Request smuggling (RFC 9112 §6.1, §6.3, §7.1, §5.1, §5.2; docs/protocol.md §1.3)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_every_ambiguous_framing_is_400_and_closed() {
    let d = Daemon::start(&[]);
    // Every smuggled request would push to this device; it must never get one.
    let mut victim = d.device("victim").await;
    let inner = r#"{"user_id":"victim","data":{"smuggled":true}}"#;
    let smuggled = format!(
        "POST /sse/push HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{inner}",
        inner.len()
    );
    let body = r#"{"user_id":"nobody","data":{}}"#;
    let n = body.len();
    let h = "POST /sse/push HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n";
    let h10 = "POST /sse/push HTTP/1.0\r\nHost: t\r\nContent-Type: application/json\r\n";
    let chunked = format!("{n:x}\r\n{body}\r\n0\r\n\r\n");
    let cases: Vec<(&str, String)> = vec![
        // §6.3 item 3: Content-Length with Transfer-Encoding, in either order.
        ("CL then TE", format!("{h}Content-Length: {n}\r\nTransfer-Encoding: chunked\r\n\r\n{chunked}{smuggled}")),
        ("TE then CL", format!("{h}Transfer-Encoding: chunked\r\nContent-Length: {n}\r\n\r\n{chunked}{smuggled}")),
        ("CL 0 with TE", format!("{h}Content-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n{chunked}{smuggled}")),
        // §6.3 item 5: differing Content-Lengths, as two fields or one list.
        ("two different CLs", format!("{h}Content-Length: {n}\r\nContent-Length: {}\r\n\r\n{body}{smuggled}", n + 1)),
        ("CL list with different values", format!("{h}Content-Length: {n}, {}\r\n\r\n{body}{smuggled}", n + 1)),
        ("CL list with an empty member", format!("{h}Content-Length: {n},\r\n\r\n{body}{smuggled}")),
        // §6.3 item 4: chunked not last, other codings, chunked twice.
        ("TE chunked, gzip", format!("{h}Transfer-Encoding: chunked, gzip\r\n\r\n{chunked}{smuggled}")),
        ("TE gzip, chunked", format!("{h}Transfer-Encoding: gzip, chunked\r\n\r\n{chunked}{smuggled}")),
        ("TE gzip", format!("{h}Transfer-Encoding: gzip\r\n\r\n{body}{smuggled}")),
        ("TE identity", format!("{h}Transfer-Encoding: identity\r\n\r\n{body}{smuggled}")),
        ("TE identity with CL", format!("{h}Transfer-Encoding: identity\r\nContent-Length: {n}\r\n\r\n{body}{smuggled}")),
        ("TE chunked, chunked", format!("{h}Transfer-Encoding: chunked, chunked\r\n\r\n{chunked}{smuggled}")),
        ("TE chunked in two fields", format!("{h}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n{chunked}{smuggled}")),
        ("TE chunked then gzip in two fields", format!("{h}Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n{chunked}{smuggled}")),
        ("TE empty", format!("{h}Transfer-Encoding: \r\n\r\n{body}{smuggled}")),
        ("TE xchunked", format!("{h}Transfer-Encoding: xchunked\r\n\r\n{chunked}{smuggled}")),
        ("TE chunked with a parameter", format!("{h}Transfer-Encoding: chunked;q=1\r\n\r\n{chunked}{smuggled}")),
        // §6.1: Transfer-Encoding in HTTP/1.0 is faulty framing, even with a Content-Length.
        ("TE in HTTP/1.0", format!("{h10}Transfer-Encoding: chunked\r\n\r\n{chunked}{smuggled}")),
        ("TE and CL in HTTP/1.0", format!("{h10}Transfer-Encoding: chunked\r\nContent-Length: {n}\r\n\r\n{chunked}{smuggled}")),
        // §7.1: chunk sizes.
        ("chunk size not hex", format!("{h}Transfer-Encoding: chunked\r\n\r\nzz\r\n{body}\r\n0\r\n\r\n{smuggled}")),
        ("chunk size negative", format!("{h}Transfer-Encoding: chunked\r\n\r\n-{n:x}\r\n{body}\r\n0\r\n\r\n{smuggled}")),
        ("chunk size with a plus", format!("{h}Transfer-Encoding: chunked\r\n\r\n+{n:x}\r\n{body}\r\n0\r\n\r\n{smuggled}")),
        ("chunk size with 0x", format!("{h}Transfer-Encoding: chunked\r\n\r\n0x{n:x}\r\n{body}\r\n0\r\n\r\n{smuggled}")),
        ("chunk size with a leading space", format!("{h}Transfer-Encoding: chunked\r\n\r\n {n:x}\r\n{body}\r\n0\r\n\r\n{smuggled}")),
        ("chunk size with a space inside", format!("{h}Transfer-Encoding: chunked\r\n\r\n1 0\r\n{body}\r\n0\r\n\r\n{smuggled}")),
        ("chunk size empty", format!("{h}Transfer-Encoding: chunked\r\n\r\n\r\n{body}\r\n0\r\n\r\n{smuggled}")),
        ("chunk size overflowing 64 bits", format!("{h}Transfer-Encoding: chunked\r\n\r\n1{:0>16}\r\n{body}\r\n0\r\n\r\n{smuggled}", format!("{n:x}"))),
        ("chunk data longer than its size", format!("{h}Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}XX\r\n0\r\n\r\n{smuggled}", n)),
        ("chunk data shorter than its size", format!("{h}Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n{smuggled}", n + 2)),
        // §5.2: obs-fold.
        ("obs-fold in Content-Length", format!("{h}Content-Length:\r\n {n}\r\n\r\n{body}{smuggled}")),
        ("obs-fold in Transfer-Encoding", format!("{h}Transfer-Encoding: gzip,\r\n chunked\r\n\r\n{chunked}{smuggled}")),
        // §5.1: whitespace between the field name and the colon.
        ("space before the colon of CL", format!("{h}Content-Length : {n}\r\n\r\n{body}{smuggled}")),
        ("space before the colon of TE", format!("{h}Transfer-Encoding : chunked\r\nContent-Length: {n}\r\n\r\n{body}{smuggled}")),
        // Content-Length values that are not 1*DIGIT.
        ("CL with a plus sign", format!("{h}Content-Length: +{n}\r\n\r\n{body}{smuggled}")),
        ("CL with a minus sign", format!("{h}Content-Length: -{n}\r\n\r\n{body}{smuggled}")),
        ("CL with a space inside", format!("{h}Content-Length: {} {}\r\n\r\n{body}{smuggled}", n / 10, n % 10)),
        ("CL in hex", format!("{h}Content-Length: 0x{n:x}\r\n\r\n{body}{smuggled}")),
        ("CL empty", format!("{h}Content-Length: \r\n\r\n{body}{smuggled}")),
        ("CL overflowing 64 bits", format!("{h}Content-Length: 184467440737095516160{n}\r\n\r\n{body}{smuggled}")),
        ("CL with a fraction", format!("{h}Content-Length: {n}.0\r\n\r\n{body}{smuggled}")),
    ];
    let mut wrong = Vec::new();
    for (name, req) in &cases {
        let mut c = d.http().await;
        // The daemon may answer before reading everything; a refused write is fine.
        let _ = c.try_send(req.as_bytes()).await;
        let r = c.read_response().await;
        // A chunk size too large for any integer is over max_body_bytes too: 413 also closes.
        let ok = r.status == 400 || (*name == "chunk size overflowing 64 bits" && r.status == 413);
        if !ok {
            wrong.push(format!("{name}: {} {}", r.status, r.text()));
            continue;
        }
        r.assert_detail(r.status);
        if !c.closes_within(step()).await {
            wrong.push(format!(
                "{name}: connection left open after the {}",
                r.status
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "ambiguous framings not refused:\n{}",
        wrong.join("\n")
    );
    // Nothing reached the victim: the first frame it gets is this marker.
    d.push(&json!({"user_id": "victim", "data": {"marker": true}}))
        .await
        .assert_json(200);
    let first = victim.recv_json().await;
    assert_eq!(
        first["marker"], true,
        "a smuggled request was served: {first}"
    );
}

#[tokio::test]
async fn smuggling_controls_unambiguous_framings_are_served() {
    // The same shapes written unambiguously must work, or the checks above prove nothing.
    let d = Daemon::start(&[]);
    let body = r#"{"user_id":"nobody","data":{}}"#;
    let n = body.len();
    let h = "POST /sse/push HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n";
    let cases = [
        format!("{h}Content-Length: {n}\r\n\r\n{body}"),
        format!("{h}Content-Length: {n}, {n}\r\n\r\n{body}"),
        format!("{h}Content-Length: {n}\r\nContent-Length: {n}\r\n\r\n{body}"),
        format!("{h}Transfer-Encoding: chunked\r\n\r\n{n:x}\r\n{body}\r\n0\r\n\r\n"),
        format!("{h}Transfer-Encoding: Chunked\r\n\r\n{n:X}\r\n{body}\r\n0\r\n\r\n"),
        format!("{h}Transfer-Encoding: chunked\r\n\r\n00{n:x};ext=1\r\n{body}\r\n0\r\n\r\n"),
    ];
    let mut c = d.http().await;
    for req in &cases {
        c.send(req.as_bytes()).await;
        let r = c.read_response().await;
        assert_eq!(r.assert_json(200), partial(), "for {req:?}");
    }
    c.assert_usable().await;
}

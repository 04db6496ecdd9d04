//! The daemon under a (simulated) service manager: the watchdog stops while the event loop is
//! stalled and `/health` turns unhealthy, and socket activation hands it its listener
//! (docs/protocol.md §10, §12).

use std::os::fd::AsRawFd;
use std::time::Duration;

use tokio::net::UnixDatagram;
use tokio::time::Instant;

use crate::common::*;

/// A unix datagram socket playing systemd's notify socket.
struct NotifySocket {
    sock: UnixDatagram,
    _path: TempPath,
    path: String,
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        let path = TempPath::new("notify.sock");
        let sock = UnixDatagram::bind(&path.0).expect("bind the notify socket");
        let text = path.str().to_owned();
        NotifySocket {
            sock,
            _path: path,
            path: text,
        }
    }

    /// Every datagram (split into lines) that arrives before `until`, with its arrival time.
    async fn lines_until(&self, until: Instant) -> Vec<(Instant, String)> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        for _ in 0..10_000 {
            match tokio::time::timeout_at(until, self.sock.recv(&mut buf)).await {
                Ok(Ok(n)) => {
                    let now = Instant::now();
                    for line in String::from_utf8_lossy(&buf[..n]).lines() {
                        out.push((now, line.to_owned()));
                    }
                }
                Ok(Err(e)) => panic!("notify socket: {e}"),
                Err(_) => break,
            }
        }
        out
    }

    /// Waits (bounded) for a datagram line equal to `want`.
    async fn expect(&self, want: &str, within: Duration) -> Instant {
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 4096];
        let mut seen = Vec::new();
        for _ in 0..10_000 {
            let n = tokio::time::timeout_at(deadline, self.sock.recv(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no {want} on NOTIFY_SOCKET; got {seen:?}"))
                .expect("recv");
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if text.lines().any(|l| l == want) {
                return Instant::now();
            }
            seen.push(text);
        }
        panic!("too many notifications without {want}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_event_loop_stops_the_watchdog_and_turns_health_unhealthy() {
    let notify = NotifySocket::bind();
    // Half of WATCHDOG_USEC: a self-check every 0.5 s.
    let d = Daemon::start_with_env(
        &["--worker-threads", "1"],
        &[
            ("NOTIFY_SOCKET", &notify.path),
            ("WATCHDOG_USEC", "1000000"),
        ],
    );
    notify.expect("READY=1", t(5.0)).await;
    notify.expect("WATCHDOG=1", t(5.0)).await;
    notify.expect("WATCHDOG=1", t(5.0)).await;
    assert_eq!(d.health().await["status"], "healthy");

    // The fault hook blocks the event loop's only thread for 3 s.
    let addr = d.addr;
    let stall = tokio::spawn(async move {
        let mut http = Http::connect(addr).await;
        http.send(&post("/__fault/stall", "{}")).await;
        http.read_response_within(t(30.0)).await
    });
    // Once the loop is blocked, pings stop: find the last one, then a silent second.
    let started = Instant::now();
    let lines = notify
        .lines_until(started + Duration::from_millis(2500))
        .await;
    let late_pings: Vec<_> = lines
        .iter()
        .filter(|(at, l)| l == "WATCHDOG=1" && *at > started + Duration::from_millis(1200))
        .collect();
    assert!(
        late_pings.is_empty(),
        "WATCHDOG=1 kept coming during the stall: {lines:?}"
    );
    // A probe sent during the stall is answered when the loop resumes: unhealthy, 503.
    let mut probe = Http::connect(addr).await;
    probe.send(&get("/health")).await;
    let during = probe.read_response_within(t(30.0)).await;
    assert_eq!(during.status, 503, "{}", during.text());
    assert_eq!(during.json()["status"], "unhealthy");
    assert_eq!(during.header("retry-after"), Some("1"));
    let stalled = stall.await.expect("stall task");
    assert_eq!(stalled.status, 200);

    // After the stall the checks pass again: pings resume and /health heals.
    notify.expect("WATCHDOG=1", t(10.0)).await;
    wait_until(t(10.0), "health back to healthy", || async {
        d.health().await["status"] == "healthy"
    })
    .await;
}

#[tokio::test]
async fn socket_activation_serves_on_the_passed_listener() {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let addr: std::net::SocketAddr = "127.0.0.1:0".parse().expect("address");
    socket.bind(&addr.into()).expect("bind");
    socket.listen(64).expect("listen");
    // The daemon inherits it, as from systemd.
    socket.set_cloexec(false).expect("inheritable");
    let passed = socket
        .local_addr()
        .expect("local addr")
        .as_socket()
        .expect("inet address");
    let notify = NotifySocket::bind();
    let d = Daemon::start_activated(socket.as_raw_fd(), &[], &[("NOTIFY_SOCKET", &notify.path)]);
    assert_eq!(d.addr, passed, "serves on the passed socket, not --listen");
    notify.expect("READY=1", t(5.0)).await;
    assert_eq!(d.health().await["status"], "healthy");
    let mut device = d.device("activated").await;
    let r = d
        .push(&serde_json::json!({"user_id": "activated", "data": {"n": 1}}))
        .await;
    assert_eq!(r.json()["status"], "success");
    let frame = device.recv_json().await;
    assert_eq!(frame["n"], 1);
    assert!(
        d.log_text().contains("passed by the service manager"),
        "{}",
        d.log_text()
    );
}

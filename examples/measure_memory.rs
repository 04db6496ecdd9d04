//! Measures the constants of wssed's worst-case memory formula (docs/memory.md) by driving a
//! real daemon on 127.0.0.1 and reading its `VmRSS` from `/proc/PID/status` after each step.
//!
//! ```text
//! cargo build --release
//! cargo run --example measure_memory -- --bin target/release/wssed
//! ```
//!
//! Steps, each measured as the RSS growth it causes (nothing is released between steps):
//! idle daemon; `--devices` idle devices; `--sends` open `/sse/send` streams; `--http` idle
//! keep-alive HTTP connections; `--bodies` connections holding a max-size body not yet complete
//! (as many again with chunked bodies); `--rejects` connections whose max-size batch draws the
//! largest 422 answer, which they never read; `--stalled` devices that stopped reading, each
//! with a full queue of max-size frames and its waiting pushes. Prints one `name value` line per constant (KiB), then the settings used.

// Test and tool code: a failed unwrap or expect is a failed run, and test futures need not be
// small (the daemon's own are checked by clippy::large_futures).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::large_futures)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const USAGE: &str = "usage: measure_memory --bin PATH [--devices N (1000)] [--sends N (500)] \
                     [--http N (500)] [--bodies N (100)] [--rejects N (50)] [--stalled N (20)] \
                     [--queue-depth N (4)] [--max-body-bytes N (65536)]";

/// Every bound on one network step.
const STEP: Duration = Duration::from_secs(10);

struct Args {
    bin: String,
    devices: usize,
    sends: usize,
    http: usize,
    bodies: usize,
    rejects: usize,
    stalled: usize,
    queue_depth: usize,
    max_body_bytes: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        bin: String::new(),
        devices: 1000,
        sends: 500,
        http: 500,
        bodies: 100,
        rejects: 50,
        stalled: 20,
        queue_depth: 4,
        max_body_bytes: 65536,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = || {
            value
                .parse::<usize>()
                .map_err(|_| format!("{flag} wants a number"))
        };
        match flag.as_str() {
            "--bin" => a.bin = value.clone(),
            "--devices" => a.devices = num()?,
            "--sends" => a.sends = num()?,
            "--http" => a.http = num()?,
            "--bodies" => a.bodies = num()?,
            "--rejects" => a.rejects = num()?,
            "--stalled" => a.stalled = num()?,
            "--queue-depth" => a.queue_depth = num()?,
            "--max-body-bytes" => a.max_body_bytes = num()?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if a.bin.is_empty() {
        return Err("--bin is required".into());
    }
    Ok(a)
}

/// The daemon under measurement; killed by its PID when dropped.
struct Daemon {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(a: &Args) -> Result<Daemon, String> {
    let max_connections = (a.devices + a.stalled + 16).next_power_of_two().to_string();
    let max_pending = (a.sends + 16).to_string();
    let depth = a.queue_depth.to_string();
    let body = a.max_body_bytes.to_string();
    let long = "3600";
    let mut child = Command::new(&a.bin)
        .args(["--listen", "127.0.0.1:0"])
        .args(["--max-connections", &max_connections])
        .args(["--max-pending-sends", &max_pending])
        .args(["--queue-depth", &depth])
        .args(["--max-body-bytes", &body, "--max-message-bytes", &body])
        // Nothing times out while we measure.
        .args(["--ping-interval-secs", long, "--pong-timeout-secs", long])
        .args(["--idle-timeout-secs", long, "--header-timeout-secs", long])
        .args(["--send-timeout-secs", long, "--keepalive-secs", long])
        .args(["--log-level", "warn"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", a.bin))?;
    // At log level warn there is no "listening on" line: find the port from /proc instead.
    let stderr = child.stderr.take().ok_or("no stderr")?;
    std::thread::spawn(move || {
        // Keep draining so the daemon never blocks on a full pipe.
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("wssed: {line}");
        }
    });
    let pid = child.id();
    let deadline = Instant::now() + STEP;
    loop {
        if let Some(addr) = listening_addr(pid) {
            return Ok(Daemon { child, addr });
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err("the daemon never listened".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The 127.0.0.1 port a process listens on, from /proc/net/tcp and its socket inodes.
fn listening_addr(pid: u32) -> Option<SocketAddr> {
    let mut inodes = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        if let Ok(target) = std::fs::read_link(entry.path()) {
            let t = target.to_string_lossy().into_owned();
            if let Some(inode) = t.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
                inodes.push(inode.to_string());
            }
        }
    }
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        // local_address, state 0A = LISTEN, inode
        if f.len() > 9 && f[3] == "0A" && inodes.iter().any(|i| i == f[9]) {
            let (ip, port) = f[1].split_once(':')?;
            if ip == "0100007F" {
                let port = u16::from_str_radix(port, 16).ok()?;
                return Some(SocketAddr::from(([127, 0, 0, 1], port)));
            }
        }
    }
    None
}

/// `VmRSS` and `VmHWM` of `pid`, in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// RSS and peak RSS (`VmHWM`), KiB, once RSS stopped moving (the daemon finished the work
/// we caused).
async fn settled_rss(pid: u32) -> Mem {
    let mut last = rss_kib(pid).0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = rss_kib(pid).0;
        if now == last {
            break;
        }
        last = now;
    }
    let (rss, hwm) = rss_kib(pid);
    Mem { rss, hwm }
}

/// One reading of a process's memory, KiB.
#[derive(Clone, Copy)]
struct Mem {
    rss: u64,
    hwm: u64,
}

impl std::ops::Sub for Mem {
    type Output = u64;

    /// Growth from `base` to `self`: of the RSS, or of the peak when a transient buffer (a 422
    /// answer being built) raised the peak more than what stayed.
    fn sub(self, base: Mem) -> u64 {
        self.rss
            .saturating_sub(base.rss)
            .max(self.hwm.saturating_sub(base.hwm))
    }
}

async fn request(addr: SocketAddr, bytes: &[u8]) -> Result<(TcpStream, Vec<u8>), String> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    s.write_all(bytes).await.map_err(|e| e.to_string())?;
    let head = read_head(&mut s).await?;
    Ok((s, head))
}

async fn read_head(s: &mut TcpStream) -> Result<Vec<u8>, String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + STEP;
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => return Err("no response head".into()),
        }
    }
    Ok(got)
}

fn post(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: m\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn health_connections(addr: SocketAddr) -> u64 {
    let Ok((mut s, mut got)) = request(
        addr,
        b"GET /health HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n",
    )
    .await
    else {
        return 0;
    };
    let _ = tokio::time::timeout(STEP, s.read_to_end(&mut got)).await;
    let text = String::from_utf8_lossy(&got);
    text.split("\"connections\":")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

async fn wait_connections(addr: SocketAddr, want: u64) -> Result<(), String> {
    let deadline = Instant::now() + STEP * 3;
    while health_connections(addr).await < want {
        if Instant::now() > deadline {
            return Err(format!("never reached {want} devices"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

async fn device(addr: SocketAddr, user: &str) -> Result<Ws, String> {
    let url = format!("ws://{addr}/ws?user_id={user}");
    let (ws, _) = tokio::time::timeout(STEP, tokio_tungstenite::connect_async(url.as_str()))
        .await
        .map_err(|_| format!("{user}: upgrade timed out"))?
        .map_err(|e| format!("{user}: {e}"))?;
    Ok(ws)
}

/// A device that completes the upgrade with a tiny receive buffer and never reads.
async fn stalled_device(addr: SocketAddr, user: &str) -> Result<TcpStream, String> {
    let sock = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    sock.set_recv_buffer_size(4096).map_err(|e| e.to_string())?;
    let mut s = sock.connect(addr).await.map_err(|e| e.to_string())?;
    let up = format!(
        "GET /ws?user_id={user} HTTP/1.1\r\nHost: m\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(up.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    read_head(&mut s).await?;
    Ok(s)
}

/// Pushes `body` until the answer is 503; returns the pushes still waiting for their answer.
async fn fill_queue(addr: SocketAddr, body: String) -> Result<Vec<TcpStream>, String> {
    let mut waiting = Vec::new();
    for _ in 0..10_000 {
        let mut c = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        c.write_all(&post("/sse/push", &body))
            .await
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(Duration::from_millis(300), read_head(&mut c)).await {
            Err(_) => waiting.push(c),
            Ok(Ok(h)) if h.starts_with(b"HTTP/1.1 503") => return Ok(waiting),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
        }
    }
    Err("the queue never filled".into())
}

fn per(delta_kib: u64, n: usize) -> f64 {
    delta_kib as f64 / n.max(1) as f64
}

/// A fresh daemon, warmed up by a few requests, and its settled RSS.
async fn fresh(a: &Args) -> Result<(Daemon, u32, SocketAddr, Mem), String> {
    let d = start(a)?;
    let pid = d.child.id();
    let addr = d.addr;
    for _ in 0..3 {
        health_connections(addr).await;
    }
    let base = settled_rss(pid).await;
    Ok((d, pid, addr, base))
}

async fn run(a: Args) -> Result<(), String> {
    // Each scenario runs on its own daemon: memory freed by one step and reused by the next
    // would otherwise hide part of the next step's cost.
    let (_d, _, _, fixed) = fresh(&a).await?;
    println!("fixed_kib {}   # peak {}", fixed.rss, fixed.hwm);
    drop(_d);

    {
        // Idle devices: a tenth first, to show the growth is linear.
        let (_d, pid, addr, base) = fresh(&a).await?;
        let tenth = (a.devices / 10).max(1);
        let mut devices = Vec::with_capacity(a.devices);
        for i in 0..tenth {
            devices.push(device(addr, &format!("d{i}")).await?);
        }
        wait_connections(addr, tenth as u64).await?;
        let at_tenth = settled_rss(pid).await;
        for i in tenth..a.devices {
            devices.push(device(addr, &format!("d{i}")).await?);
        }
        wait_connections(addr, a.devices as u64).await?;
        let at_all = settled_rss(pid).await;
        println!(
            "device_kib {:.2}   # {} idle devices; {:.2} KiB each over the first {tenth}",
            per(at_all - base, a.devices),
            a.devices,
            per(at_tenth - base, tenth)
        );
    }

    {
        // Open sends, to one device that reads (and drops) every request frame.
        let (_d, pid, addr, _) = fresh(&a).await?;
        let mut sink = device(addr, "sink").await?;
        let drain = tokio::spawn(async move { while let Some(Ok(_)) = sink.next().await {} });
        wait_connections(addr, 1).await?;
        let base = settled_rss(pid).await;
        let mut sends = Vec::with_capacity(a.sends);
        for i in 0..a.sends {
            let body = format!(r#"{{"user_id":"sink","data":{{"correlation_id":"m-{i}"}}}}"#);
            // The sink's queue is only queue_depth deep: on 503 let it catch up and retry.
            for attempt in 0.. {
                let (s, head) = request(addr, &post("/sse/send", &body)).await?;
                if head.starts_with(b"HTTP/1.1 200") {
                    sends.push(s);
                    break;
                }
                if !head.starts_with(b"HTTP/1.1 503") || attempt == 100 {
                    return Err(format!("send {i}: {}", String::from_utf8_lossy(&head)));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let after = settled_rss(pid).await;
        println!(
            "send_kib {:.2}   # {} open /sse/send streams",
            per(after - base, a.sends),
            a.sends
        );
        drain.abort();
    }

    {
        // Idle keep-alive HTTP connections after one request each.
        let (_d, pid, addr, base) = fresh(&a).await?;
        let mut https = Vec::with_capacity(a.http);
        for _ in 0..a.http {
            let (mut s, _) = request(addr, b"GET /health HTTP/1.1\r\nHost: m\r\n\r\n").await?;
            let mut rest = [0u8; 256];
            let _ = tokio::time::timeout(Duration::from_millis(50), s.read(&mut rest)).await;
            https.push(s);
        }
        let after = settled_rss(pid).await;
        println!(
            "http_kib {:.2}   # {} idle keep-alive HTTP connections",
            per(after - base, a.http),
            a.http
        );
    }

    {
        // Connections holding a max-size body, all but its last byte sent.
        let (_d, pid, addr, base) = fresh(&a).await?;
        let mut bodies = Vec::with_capacity(a.bodies);
        let pad = "x".repeat(a.max_body_bytes);
        for _ in 0..a.bodies {
            let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            let head = format!(
                "POST /sse/push HTTP/1.1\r\nHost: m\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                a.max_body_bytes
            );
            s.write_all(head.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            s.write_all(&pad.as_bytes()[..a.max_body_bytes - 1])
                .await
                .map_err(|e| e.to_string())?;
            bodies.push(s);
        }
        let after = settled_rss(pid).await;
        println!(
            "body_kib {:.2}   # {} connections holding {} body bytes each (max_body_bytes - 1)",
            per(after - base, a.bodies),
            a.bodies,
            a.max_body_bytes - 1
        );
    }

    {
        // The same with chunked bodies, 1000-byte chunks.
        let (_d, pid, addr, base) = fresh(&a).await?;
        let mut chunked = Vec::with_capacity(a.bodies);
        for _ in 0..a.bodies {
            let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            let mut req = b"POST /sse/push HTTP/1.1\r\nHost: m\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            let mut left = a.max_body_bytes - 1;
            while left > 0 {
                let n = left.min(1000);
                req.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                req.extend(std::iter::repeat_n(b'x', n));
                req.extend_from_slice(b"\r\n");
                left -= n;
            }
            s.write_all(&req).await.map_err(|e| e.to_string())?;
            chunked.push(s);
        }
        let after = settled_rss(pid).await;
        println!(
            "chunked_body_kib {:.2}   # {} connections holding {} chunked body bytes each",
            per(after - base, a.bodies),
            a.bodies,
            a.max_body_bytes - 1
        );
    }

    {
        // Batches drawing the largest 422 answer a max-size body can, never read.
        let (_d, pid, addr, base) = fresh(&a).await?;
        let item =
            r#"{"user_id":1,"data":1,"event_type":1,"event_id":1,"timestamp":"","user_id":1}"#;
        let n = (a.max_body_bytes - 2) / (item.len() + 1);
        let batch = format!("[{}]", vec![item; n].join(","));
        let mut rejects = Vec::with_capacity(a.rejects);
        for _ in 0..a.rejects {
            let sock = TcpSocket::new_v4().map_err(|e| e.to_string())?;
            sock.set_recv_buffer_size(4096).map_err(|e| e.to_string())?;
            let mut s = sock.connect(addr).await.map_err(|e| e.to_string())?;
            s.write_all(&post("/sse/push/batch", &batch))
                .await
                .map_err(|e| e.to_string())?;
            rejects.push(s);
        }
        let after = settled_rss(pid).await;
        println!(
            "reject_kib {:.2}   # {} unread 422 answers to {}-byte batches of {n} bad items",
            per(after - base, a.rejects),
            a.rejects,
            batch.len()
        );
    }

    {
        // Devices each holding an incomplete max-size message: all but its last byte sent.
        let (_d, pid, addr, _) = fresh(&a).await?;
        let mut held = Vec::with_capacity(a.stalled);
        for i in 0..a.stalled {
            held.push(stalled_device(addr, &format!("in{i}")).await?);
        }
        wait_connections(addr, a.stalled as u64).await?;
        let base = settled_rss(pid).await;
        let m = a.max_body_bytes;
        for s in &mut held {
            let mut frame = vec![0x81u8, 0x80 | 127];
            frame.extend_from_slice(&(m as u64).to_be_bytes());
            frame.extend_from_slice(&[0, 0, 0, 0]);
            frame.extend(std::iter::repeat_n(b'z', m - 1));
            s.write_all(&frame).await.map_err(|e| e.to_string())?;
        }
        let after = settled_rss(pid).await;
        println!(
            "inbound_kib {:.2}   # {} devices each holding {} bytes of an unfinished message",
            per(after - base, a.stalled),
            a.stalled,
            m - 1
        );
    }

    {
        // /sse/send streams whose upstream stopped reading while its device keeps answering
        // with max-size messages: events pile up between the device and the stalled socket.
        let (_d, pid, addr, _) = fresh(&a).await?;
        let mut devices = Vec::with_capacity(a.stalled);
        for i in 0..a.stalled {
            devices.push(device(addr, &format!("ans{i}")).await?);
        }
        wait_connections(addr, a.stalled as u64).await?;
        let mut upstreams = Vec::with_capacity(a.stalled);
        for i in 0..a.stalled {
            let sock = TcpSocket::new_v4().map_err(|e| e.to_string())?;
            sock.set_recv_buffer_size(4096).map_err(|e| e.to_string())?;
            let mut s = sock.connect(addr).await.map_err(|e| e.to_string())?;
            let body = format!(r#"{{"user_id":"ans{i}","data":{{"correlation_id":"slow-{i}"}}}}"#);
            s.write_all(&post("/sse/send", &body))
                .await
                .map_err(|e| e.to_string())?;
            read_head(&mut s).await?;
            upstreams.push(s);
        }
        let base = settled_rss(pid).await;
        let pad = "z".repeat(a.max_body_bytes - 200);
        let answers = a.queue_depth + 8;
        let mut writers = Vec::new();
        for (i, ws) in devices.into_iter().enumerate() {
            let text = format!(r#"{{"correlation_id":"slow-{i}","type":"chunk","p":"{pad}"}}"#);
            writers.push(tokio::spawn(async move {
                use futures_util::SinkExt;
                let mut ws = ws;
                for _ in 0..answers {
                    let msg = tokio_tungstenite::tungstenite::Message::text(text.clone());
                    if ws.send(msg).await.is_err() {
                        break;
                    }
                }
                ws
            }));
        }
        let after = settled_rss(pid).await;
        println!(
            "slow_send_kib {:.2}   # {} streams with unread upstreams, {answers} answers of {} bytes each sent by its device",
            per(after - base, a.stalled),
            a.stalled,
            a.max_body_bytes - 150
        );
        for w in writers {
            w.abort();
        }
    }

    {
        // Frames alone: stalled devices whose queues are filled by /sse/send requests whose
        // upstreams leave at once, so no HTTP connection stays behind.
        let (_d, pid, addr, base) = fresh(&a).await?;
        let payload = "y".repeat(a.max_body_bytes - 200);
        let mut stalled = Vec::new();
        for i in 0..a.stalled {
            stalled.push(stalled_device(addr, &format!("q{i}")).await?);
        }
        wait_connections(addr, a.stalled as u64).await?;
        let base_devices = settled_rss(pid).await;
        let mut accepted = 0;
        for i in 0..a.stalled {
            for k in 0..10_000 {
                let body = format!(
                    r#"{{"user_id":"q{i}","data":{{"correlation_id":"q{i}-{k}","p":"{payload}"}}}}"#
                );
                let (_s, head) = request(addr, &post("/sse/send", &body)).await?;
                if head.starts_with(b"HTTP/1.1 503") {
                    break;
                }
                if !head.starts_with(b"HTTP/1.1 200") {
                    return Err(format!("send: {}", String::from_utf8_lossy(&head)));
                }
                accepted += 1;
            }
        }
        let after = settled_rss(pid).await;
        let held = a.stalled * (a.queue_depth + 1);
        println!(
            "frame_kib {:.2}   # {} frames of {} bytes held by {} stalled devices ({} accepted; queue_depth + 1 in flight each)",
            per(after - base_devices, held),
            held,
            a.max_body_bytes,
            a.stalled,
            accepted
        );
        let _ = base;
    }

    {
        // Stalled devices with full queues of max-size frames, filled in parallel.
        let (d, pid, addr, base) = fresh(&a).await?;
        let payload = "y".repeat(a.max_body_bytes - 100);
        let mut stalled = Vec::new();
        for i in 0..a.stalled {
            stalled.push(stalled_device(addr, &format!("stall{i}")).await?);
        }
        wait_connections(addr, a.stalled as u64).await?;
        let mut fillers = Vec::new();
        for i in 0..a.stalled {
            let body = format!(r#"{{"user_id":"stall{i}","data":{{"p":"{payload}"}}}}"#);
            fillers.push(tokio::spawn(fill_queue(addr, body)));
        }
        let mut waiting = Vec::new();
        for f in fillers {
            waiting.extend(f.await.map_err(|e| e.to_string())??);
        }
        let after = settled_rss(pid).await;
        println!(
            "stalled_device_kib {:.2}   # {} stalled devices (idle device included), {} pushes waiting, queue_depth {}, frames of {} bytes",
            per(after - base, a.stalled),
            a.stalled,
            waiting.len(),
            a.queue_depth,
            a.max_body_bytes
        );
        let (_, hwm) = rss_kib(d.child.id());
        println!("stalled_peak_rss_kib {hwm}");
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            return std::process::ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("measure_memory: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

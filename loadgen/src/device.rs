//! Device side: WebSocket clients that connect from several loopback source addresses, count
//! frames, time them from the send timestamp inside, and (for `/sse/send`) answer them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::clock::now_ns;
use crate::error::LgError;
use crate::target::{find_str, find_u64, Target};

/// A connected device.
pub type Ws = WebSocketStream<TcpStream>;

/// Largest frame a device accepts (the server's frames are small JSON).
const MAX_FRAME_BYTES: usize = 1 << 20;
/// Read buffer per device: small, so 10k devices do not cost the load tool 1.3 GB.
const READ_BUF_BYTES: usize = 4096;
/// Time a device waits for its close handshake when the scenario ends.
const CLOSE_WAIT: Duration = Duration::from_millis(500);

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUF_BYTES)
        .write_buffer_size(0)
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES))
}

/// Loopback source address number `i` of `n` (127.0.0.1 ..= 127.0.0.n): spreads many
/// connections over several source IPs so one IP's ephemeral port range is never the limit.
pub fn source_ip(i: usize, n: u8) -> IpAddr {
    let k = (i % usize::from(n.max(1))) as u8 + 1;
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, k))
}

/// Connects one device from `src` to `path` on `addr`.
pub async fn connect(addr: SocketAddr, src: IpAddr, path: &str) -> Result<Ws, LgError> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(src, 0))?;
    let stream = sock.connect(addr).await?;
    stream.set_nodelay(true)?;
    let url = format!("ws://{addr}{path}");
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(url, stream, Some(ws_config())).await?;
    Ok(ws)
}

/// The result of connecting many devices.
pub struct Connected {
    /// Devices in index order.
    pub devices: Vec<Ws>,
    /// Handshake time of each device, ns.
    pub handshake_ns: Vec<u64>,
    /// Wall time of the whole phase.
    pub elapsed: Duration,
}

/// Connects devices `prefix0 .. prefix{n-1}` with at most `concurrency` handshakes in flight.
/// Fails on the first device that cannot connect, or at `deadline`.
pub async fn connect_many(
    addr: SocketAddr,
    target: Target,
    prefix: &str,
    n: usize,
    concurrency: usize,
    source_ips: u8,
    deadline: Instant,
) -> Result<Connected, LgError> {
    let t0 = Instant::now();
    let attempts = futures_util::stream::iter(0..n)
        .map(|i| {
            let path = target.ws_path(&format!("{prefix}{i}"));
            async move {
                let t = Instant::now();
                let r = connect(addr, source_ip(i, source_ips), &path).await;
                (i, r, t.elapsed())
            }
        })
        .buffer_unordered(concurrency.max(1));
    let mut attempts = std::pin::pin!(attempts);
    let mut slots: Vec<Option<Ws>> = (0..n).map(|_| None).collect();
    let mut handshake_ns = Vec::with_capacity(n);
    let until = tokio::time::Instant::from_std(deadline);
    loop {
        let next = tokio::time::timeout_at(until, attempts.next()).await;
        match next {
            Err(_) => return Err(LgError::Timeout("connecting devices")),
            Ok(None) => break,
            Ok(Some((i, r, took))) => {
                let ws = r?;
                if let Some(slot) = slots.get_mut(i) {
                    *slot = Some(ws);
                }
                handshake_ns.push(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
            }
        }
    }
    let elapsed = t0.elapsed();
    Ok(Connected {
        devices: slots.into_iter().flatten().collect(),
        handshake_ns,
        elapsed,
    })
}

/// What a device does with each frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Counts frames and records their latency.
    Count,
    /// Answers each frame's `correlation_id` with an `is_final` message.
    Answer,
}

/// Counters shared by the device tasks and the scenario.
pub struct Shared {
    /// Measured frames per device.
    pub received: Vec<AtomicU64>,
    /// Measured frames over all devices.
    pub total: AtomicU64,
    /// Warm-up frames (timestamp 0) over all devices.
    pub warm: AtomicU64,
    /// Frames that were not the JSON expected, or answers that could not be sent.
    pub bad: AtomicU64,
}

/// What one device task hands back.
pub struct DeviceOut {
    /// Push-to-device latencies, ns.
    pub lat_ns: Vec<u64>,
    /// The server closed the device (or the socket failed) before the scenario ended.
    pub closed_early: bool,
}

/// Running device tasks.
pub struct DeviceSet {
    /// Counters.
    pub shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<DeviceOut>>,
}

impl DeviceSet {
    /// Starts one reading task per device; each keeps at most `lat_cap` latency samples.
    pub fn spawn(devices: Vec<Ws>, mode: Mode, lat_cap: usize) -> Self {
        let n = devices.len();
        let shared = Arc::new(Shared {
            received: (0..n).map(|_| AtomicU64::new(0)).collect(),
            total: AtomicU64::new(0),
            warm: AtomicU64::new(0),
            bad: AtomicU64::new(0),
        });
        let (stop, rx) = watch::channel(false);
        let tasks = devices
            .into_iter()
            .enumerate()
            .map(|(i, ws)| {
                tokio::spawn(run_device(i, ws, mode, shared.clone(), rx.clone(), lat_cap))
            })
            .collect();
        Self {
            shared,
            stop,
            tasks,
        }
    }

    /// Waits (polling, bounded by `until`) for the measured total to reach `want`.
    pub async fn wait_total(&self, want: u64, until: Instant) -> bool {
        wait_for(until, || self.shared.total.load(Ordering::Relaxed) >= want).await
    }

    /// Waits (bounded by `until`) for the warm-up total to reach `want`.
    pub async fn wait_warm(&self, want: u64, until: Instant) -> bool {
        wait_for(until, || self.shared.warm.load(Ordering::Relaxed) >= want).await
    }

    /// Stops every device (close handshake, bounded) and collects their results.
    pub async fn stop(self) -> Vec<DeviceOut> {
        let _ = self.stop.send(true);
        let mut outs = Vec::with_capacity(self.tasks.len());
        for t in self.tasks {
            if let Ok(o) = t.await {
                outs.push(o);
            }
        }
        outs
    }
}

/// Polls `cond` every millisecond until it holds or `until` passes.
pub async fn wait_for(until: Instant, mut cond: impl FnMut() -> bool) -> bool {
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn run_device(
    idx: usize,
    mut ws: Ws,
    mode: Mode,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    lat_cap: usize,
) -> DeviceOut {
    let mut out = DeviceOut {
        lat_ns: Vec::with_capacity(lat_cap.min(1 << 20)),
        closed_early: false,
    };
    let mut answer = String::with_capacity(256);
    loop {
        let msg = tokio::select! {
            biased;
            m = ws.next() => m,
            _ = stop.changed() => break,
        };
        let bytes = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Binary(b))) => match std::str::from_utf8(&b) {
                Ok(s) => s.into(),
                Err(_) => {
                    shared.bad.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            },
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                out.closed_early = true;
                break;
            }
            Some(Ok(_)) => continue,
        };
        let now = now_ns();
        let frame = bytes.as_bytes();
        let Some(ts) = find_u64(frame, b"\"ts\":") else {
            shared.bad.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        if ts == 0 {
            shared.warm.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        match mode {
            Mode::Count => {
                if out.lat_ns.len() < lat_cap {
                    out.lat_ns.push(now.saturating_sub(ts));
                }
            }
            Mode::Answer => {
                let Some(cid) = find_str(frame, b"\"correlation_id\":")
                    .and_then(|c| std::str::from_utf8(c).ok())
                else {
                    shared.bad.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                answer.clear();
                answer.push_str("{\"correlation_id\":\"");
                answer.push_str(cid);
                answer.push_str("\",\"is_final\":true}");
                if ws.send(Message::text(answer.as_str())).await.is_err() {
                    shared.bad.fetch_add(1, Ordering::Relaxed);
                    out.closed_early = true;
                    break;
                }
            }
        }
        if let Some(c) = shared.received.get(idx) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        shared.total.fetch_add(1, Ordering::Relaxed);
    }
    if !out.closed_early {
        let _ = tokio::time::timeout(CLOSE_WAIT, ws.close(None)).await;
    }
    out
}

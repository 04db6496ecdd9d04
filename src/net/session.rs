//! The device session (docs/protocol.md §8): tokio-tungstenite on the TCP stream our parser
//! upgraded, registered in the device table for as long as it lives.

use std::collections::VecDeque;
use std::future::Future;
use std::io::IoSlice;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio::time::{interval_at, sleep_until, timeout, timeout_at, Instant};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use super::socket::Socket;
use super::watched::{FramingViolation, InboundOverBudget, Watched};
use crate::hub::budget::Use;
use crate::hub::devices::RegisterError;
use crate::hub::link::{DeviceLink, Outbound, Source};
use crate::hub::streams::Overflow;
use crate::hub::{self, Hub};
use crate::ops::memory::SESSION_BYTES;
use crate::ops::settings::{secs, Config};
use crate::wire::close::Close;
use crate::wire::envelope::{classify_device_message, DeviceMessage, UserId};
use crate::wire::frames::TextFrameHead;
use crate::wire::upgrade::Upgrade;

/// Frames taken from the queue and written before one flush.
pub(crate) const WRITE_BATCH_FRAMES: usize = 32;
/// Read buffer tungstenite allocates per device, and the most it reads per system call.
/// Small, because devices send little and a gateway holds thousands of them (its default is
/// 128 KiB); a larger frame grows the buffer to the frame's size, in reads of this size.
pub(crate) const WS_READ_BUFFER_BYTES: usize = 512;
/// Bytes tungstenite gathers before writing to the socket; we flush after each batch anyway.
pub(crate) const WS_WRITE_BUFFER_BYTES: usize = 0;
/// How long a close handshake may take before the socket is dropped.
pub(crate) const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// tungstenite's settings, every size explicit (its defaults suit servers with memory to spare).
fn ws_config(config: &Config) -> WebSocketConfig {
    let max = config.max_message_bytes;
    WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER_BYTES)
        .write_buffer_size(WS_WRITE_BUFFER_BYTES)
        // A queue's worth of frames may sit in the write buffer while a flush is pending.
        .max_write_buffer_size(
            config
                .max_body_bytes
                .saturating_mul(2)
                .saturating_add(64 * 1024),
        )
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
        .accept_unmasked_frames(false)
}

/// The device's stream as the session holds it.
type Ws = WebSocketStream<Watched>;

/// How a session ends when the device breaks the protocol (RFC 6455 §7.4.1).
const PROTOCOL_ERROR: Ending = Ending::Close(Close::ProtocolError);

/// How a session ends when the daemon shuts down.
const SHUTDOWN_CLOSE: Ending = Ending::Close(Close::ShuttingDown);

/// Why a session ended, and the close frame it sends (if any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The device closed; the close reply is owed.
    PeerClosed,
    /// The connection failed or the device vanished: no close frame.
    Dropped,
    /// No pong (or a stalled write) within `pong_timeout_secs`.
    HeartbeatTimeout,
    /// Close with this close frame.
    Close(Close),
}

/// Bytes of a session's early input (read past its upgrade request) beyond the read buffer
/// `SESSION_BYTES` already counts: tungstenite adopts that buffer as its own and never shrinks it.
fn leftover_bytes(leftover: &Vec<u8>) -> usize {
    leftover.capacity().saturating_sub(WS_READ_BUFFER_BYTES)
}

/// Runs a device session on an upgraded stream; `leftover` holds bytes read past the head.
pub(crate) async fn run(stream: Socket, leftover: Vec<u8>, upgrade: Upgrade, hub: Arc<Hub>) {
    let config = ws_config(&hub.config);
    let (stream, early) = Watched::new(stream, &leftover, hub.budget, hub.config.max_message_bytes);
    // `leftover` becomes tungstenite's read buffer and keeps its capacity for the session's
    // life: what it holds past the buffer SESSION_BYTES counts is paid for as long.
    let session_bytes = SESSION_BYTES + leftover_bytes(&leftover);
    let mut ws =
        WebSocketStream::from_partially_read(stream, leftover, Role::Server, Some(config)).await;
    let user = upgrade.user_id;
    let Ok(_session_charge) = hub.budget.charge(session_bytes, Use::Session) else {
        log::warn!("device {user}: refused, memory budget exhausted");
        close(&mut ws, Close::OverBudget).await;
        return;
    };
    let reg = match hub.register(&user) {
        Ok(reg) => reg,
        Err(RegisterError::Duplicate) => {
            hub.metrics.devices_refused_duplicate.inc();
            log::info!("device {user}: refused, already connected");
            close(&mut ws, Close::AlreadyConnected).await;
            return;
        }
        Err(RegisterError::Full) => {
            hub.metrics.devices_refused_full.inc();
            log::warn!("device {user}: refused, table full");
            close(&mut ws, Close::AtCapacity).await;
            return;
        }
    };
    hub.metrics.devices_connected.inc();
    log::info!("device {user}: connected (session {})", reg.session);
    let session = reg.session;
    let mut guard = Registered {
        hub: Arc::clone(&hub),
        user: user.clone(),
        session,
        link: Arc::clone(&reg.link),
        active: true,
    };
    // Present in the cluster, its user id claimed from the other nodes, before it is served.
    #[cfg(feature = "cluster")]
    let _presence = super::cluster::presence::arrive(&hub, &user, &reg).await;

    let ping_every = secs(hub.config.ping_interval_secs);
    // Also bounds every write to the device: one that stopped reading is as dead as one
    // that stopped answering pings.
    let pong_timeout = secs(hub.config.pong_timeout_secs);
    let mut ping = interval_at(Instant::now() + ping_every, ping_every);
    let mut pong_deadline: Option<Instant> = None;
    let mut shutdown = hub.shutdown.clone();
    // Grown on first use: an idle device should cost no batch buffer.
    let mut batch: VecDeque<Outbound> = VecDeque::new();

    let ending = loop {
        if early.is_err() {
            break PROTOCOL_ERROR;
        }
        let far = Instant::now() + Duration::from_secs(86_400);
        tokio::select! {
            incoming = ws.next() => {
                // Any frame from the device is a sign of life.
                pong_deadline = None;
                match incoming {
                    Some(Ok(Message::Text(text))) => {
                        hub.metrics.frames_in.inc();
                        hub.metrics.bytes_in.add(text.len() as u64);
                        if let Some(reply) = on_text(&hub, &user, session, text) {
                            let deadline = Instant::now() + pong_timeout;
                            if let Err(e) = bounded(ws.send(Message::text(reply)), deadline, &mut shutdown).await {
                                break e.ending();
                            }
                        }
                    }
                    Some(Ok(Message::Binary(_))) => break Ending::Close(Close::Binary),
                    Some(Ok(Message::Close(_))) => break Ending::PeerClosed,
                    Some(Ok(_)) => {
                        // Ping (tungstenite queues the pong), Pong, raw frames.
                        let deadline = Instant::now() + pong_timeout;
                        if let Err(e) = bounded(ws.flush(), deadline, &mut shutdown).await {
                            break e.ending();
                        }
                    }
                    Some(Err(e)) => break ending_for(&e),
                    None => break Ending::Dropped,
                }
            }
            _ = reg.link.woken() => {
                if reg.link.is_kicked() {
                    break Ending::Close(reg.link.kick_reason());
                }
                // Drain what is queued, a batch at a time; a push arriving meanwhile leaves
                // a wake-up permit, so nothing waits for the next event.
                let mut failed = None;
                while reg.link.has_frames() {
                    reg.link.take(&mut batch, WRITE_BATCH_FRAMES);
                    let deadline = Instant::now() + pong_timeout;
                    if let Err(e) = write_frames(&hub, &mut ws, &reg.link, &mut batch, deadline, &mut shutdown).await {
                        failed = Some(e);
                        break;
                    }
                }
                if let Some(e) = failed {
                    break e.ending();
                }
            }
            _ = ping.tick() => {
                if pong_deadline.is_none() {
                    pong_deadline = Some(Instant::now() + pong_timeout);
                }
                let deadline = Instant::now() + pong_timeout;
                if let Err(e) = bounded(ws.send(Message::Ping(Default::default())), deadline, &mut shutdown).await {
                    break e.ending();
                }
            }
            _ = sleep_until(pong_deadline.unwrap_or(far)), if pong_deadline.is_some() => {
                break Ending::HeartbeatTimeout;
            }
            () = hub::stopping(&mut shutdown) => break SHUTDOWN_CLOSE,
        }
    };

    // Frames taken but not written when a write failed: with the mailbox on they go back to
    // the queue, which hands them to the mailbox as the session leaves; otherwise they are lost
    // now, as before.
    if !batch.is_empty() {
        if hub.mailbox.is_on() {
            reg.link.put_back(std::mem::take(&mut batch));
        } else {
            batch.clear();
        }
    }
    // Leave the table before the close handshake completes, so `/health` already counts the
    // device out when the device sees its close answered (docs/protocol.md §8.9).
    guard.release();
    drop(reg);
    log::info!("device {user}: {}", describe(ending));
    match ending {
        Ending::PeerClosed => {
            let _ = timeout(CLOSE_HANDSHAKE_TIMEOUT, async {
                while let Some(Ok(_)) = ws.next().await {}
            })
            .await;
        }
        Ending::Close(why) => close(&mut ws, why).await,
        Ending::HeartbeatTimeout => {
            hub.metrics.heartbeat_timeouts.inc();
            // A dead peer's window is closed: unsent data could never drain, and a plain
            // close would leave the socket in FIN_WAIT1 holding kernel memory until the
            // orphan limits reclaim it. A reset frees it now.
            if ws.get_ref().reset_on_close().is_ok() {
                hub.metrics.dead_peers_reset.inc();
            }
        }
        Ending::Dropped => {}
    }
}

fn describe(ending: Ending) -> &'static str {
    match ending {
        Ending::PeerClosed => "closed by the device",
        Ending::Dropped => "connection lost",
        Ending::HeartbeatTimeout => "heartbeat timeout",
        Ending::Close(why) => why.reason(),
    }
}

/// The close a read error calls for (RFC 6455 §7.4.1).
fn ending_for(e: &WsError) -> Ending {
    match e {
        WsError::Io(io)
            if io
                .get_ref()
                .is_some_and(<dyn std::error::Error + Send + Sync>::is::<FramingViolation>) =>
        {
            PROTOCOL_ERROR
        }
        WsError::Io(io)
            if io
                .get_ref()
                .is_some_and(<dyn std::error::Error + Send + Sync>::is::<InboundOverBudget>) =>
        {
            Ending::Close(Close::OverBudget)
        }
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => Ending::Close(Close::TooBig),
        WsError::Utf8(_) => Ending::Close(Close::InvalidUtf8),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => Ending::Dropped,
        WsError::Protocol(_) => PROTOCOL_ERROR,
        _ => Ending::Dropped,
    }
}

/// Handles a device's text frame; returns the error frame to send back, if any.
fn on_text(hub: &Hub, user: &UserId, session: u64, text: Utf8Bytes) -> Option<&'static str> {
    match classify_device_message(text.as_bytes()) {
        DeviceMessage::Invalid => Some(r#"{"type":"error","message":"invalid JSON"}"#),
        DeviceMessage::NotObject => Some(r#"{"type":"error","message":"expected a JSON object"}"#),
        DeviceMessage::Object {
            correlation_id: Some(cid),
            is_final,
        } => {
            let tx = hub.streams.route(&cid, user, session)?;
            // A device session never waits on an upstream: an answer that cannot be held
            // ends that stream (its driver sees the entry gone while the device lives, and
            // ends with the overflow's reason), and the session goes on.
            if let Err(why) = tx.send(text, is_final, hub.budget) {
                match why {
                    Overflow::TooSlow => log::warn!("stream {cid}: upstream too slow, ending it"),
                    Overflow::OverBudget => {
                        log::warn!("stream {cid}: memory budget exhausted, ending it");
                    }
                }
                hub.streams.overflowed(&cid, &tx, why);
            }
            None
        }
        DeviceMessage::Object { .. } => None,
    }
}

/// Why a write to the device did not finish.
enum WriteFailed {
    /// Not within the deadline: the device stopped reading.
    Stalled,
    /// The connection failed.
    Broken,
    /// Shutdown began: the session closes with 1001 instead of waiting for the write.
    ShuttingDown,
}

impl WriteFailed {
    fn ending(self) -> Ending {
        match self {
            WriteFailed::Stalled => Ending::HeartbeatTimeout,
            WriteFailed::Broken => Ending::Dropped,
            WriteFailed::ShuttingDown => SHUTDOWN_CLOSE,
        }
    }
}

/// A write to the device, bounded by `deadline` and by shutdown: a device that stops
/// reading holds neither a push's answer nor the drain. tungstenite keeps what it has not
/// written in its own buffer, so giving up on a write leaves the stream consistent for the
/// close frame.
async fn bounded(
    write: impl Future<Output = Result<(), WsError>>,
    deadline: Instant,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), WriteFailed> {
    tokio::select! {
        r = timeout_at(deadline, write) => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(WriteFailed::Broken),
            Err(_) => Err(WriteFailed::Stalled),
        },
        () = hub::stopping(shutdown) => Err(WriteFailed::ShuttingDown),
    }
}

/// Writes the frames one by one and acknowledges each as delivered once it is on the
/// socket, so every frame's answer follows what happened to that frame. When a write fails,
/// the frame being written is dropped with its ack (not delivered: it may have reached the
/// device in part or whole), and the frames behind it stay in `batch`, never written.
async fn write_frames(
    hub: &Hub,
    ws: &mut Ws,
    link: &DeviceLink,
    batch: &mut VecDeque<Outbound>,
    deadline: Instant,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), WriteFailed> {
    while let Some(item) = batch.pop_front() {
        let Outbound {
            frame,
            ack,
            charge,
            source,
        } = item;
        let len = frame.len();
        bounded(write_text_frame(ws, frame.as_bytes()), deadline, shutdown).await?;
        drop(charge);
        match source {
            Source::Push | Source::Send => link.written(len),
            // The mailbox's frames do not count against the queue's bytes.
            Source::Kept { .. } => hub.mailbox.delivered(),
            Source::Gap { .. } => {}
        }
        hub.metrics.frames_out.inc();
        hub.metrics.bytes_out.add(len as u64);
        if let Some(ack) = ack {
            ack.delivered();
        }
    }
    Ok(())
}

/// Writes one text frame straight to the socket: its header and the frame's own bytes in one
/// vectored write. Through tungstenite the payload would be copied into its write buffer,
/// which keeps the capacity of the largest frame ever sent for the session's life. Whatever
/// tungstenite has buffered (a pong) goes out first, so frames never interleave; a partial
/// write that fails leaves the stream broken, but then the session ends anyway. The flush
/// puts what TLS buffered on the socket, so "written" means the same on both ports.
async fn write_text_frame(ws: &mut Ws, payload: &[u8]) -> Result<(), WsError> {
    ws.flush().await?;
    let head = TextFrameHead::new(payload.len());
    let (mut head, mut payload) = (head.as_bytes(), payload);
    let stream = ws.get_mut();
    while !head.is_empty() || !payload.is_empty() {
        let parts = [IoSlice::new(head), IoSlice::new(payload)];
        let n = stream.write_vectored(&parts).await?;
        if n == 0 {
            return Err(WsError::Io(std::io::ErrorKind::WriteZero.into()));
        }
        let from_head = n.min(head.len());
        head = head.get(from_head..).unwrap_or_default();
        payload = payload.get(n - from_head..).unwrap_or_default();
    }
    stream.flush().await?;
    Ok(())
}

/// Sends a close frame and waits (bounded) for the device's answer.
async fn close(ws: &mut Ws, why: Close) {
    let frame = CloseFrame {
        code: CloseCode::from(why.code()),
        reason: why.reason().into(),
    };
    let _ = timeout(CLOSE_HANDSHAKE_TIMEOUT, async {
        if ws.close(Some(frame)).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}

/// Keeps the table entry tied to the session: removed on `release` or however the task ends
/// (with the mailbox on, the frames not written yet are kept for the device's return).
struct Registered {
    hub: Arc<Hub>,
    user: UserId,
    session: u64,
    link: Arc<DeviceLink>,
    active: bool,
}

impl Registered {
    fn release(&mut self) {
        if self.active {
            self.active = false;
            self.hub.leave(&self.user, self.session, &self.link);
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.release();
    }
}

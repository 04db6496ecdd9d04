//! `/ws`: upgrade validation (our parser decides, SPEC §6/§10) and the device session loop
//! (tokio-tungstenite on the same TCP stream).

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::{interval_at, sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use crate::ack::Ack;
use crate::config::{secs, Config};
use crate::error::ApiError;
use crate::http::parse::{query_pairs, RequestHead};
use crate::message::{classify_device_message, DeviceMessage};
use crate::registry::{Outbound, RegisterError, StreamEvent, UserId};
use crate::state::{State, CLOSE_HANDSHAKE_TIMEOUT, DEVICES, METRICS, PENDING};

/// A validated upgrade request.
#[derive(Debug)]
pub struct Upgrade {
    /// The device's user id, percent-decoded.
    pub user_id: UserId,
    /// `Sec-WebSocket-Accept` for the answer.
    pub accept: String,
}

/// Frames taken from the queue and written before one flush.
pub const WRITE_BATCH_FRAMES: usize = 32;

/// Checks an upgrade request in SPEC order: upgrade headers (426), key (400), `user_id` (400),
/// `Origin` (403), token (401).
pub fn check_upgrade(head: &RequestHead<'_>, config: &Config) -> Result<Upgrade, ApiError> {
    if !head.upgrade_websocket {
        return Err(ApiError::UpgradeRequired);
    }
    if head.ws_version.map(|v| v.trim_ascii()) != Some(b"13".as_slice()) {
        return Err(ApiError::WebSocketVersion);
    }
    let key = match head.ws_key.map(|k| k.trim_ascii()) {
        Some(k) if !k.is_empty() => k,
        _ => return Err(ApiError::BadRequest("Missing Sec-WebSocket-Key")),
    };
    let user_id = user_id_from_query(head.query)?;
    if !config.allowed_origins.is_empty() {
        if let Some(origin) = head.origin {
            let allowed = config
                .allowed_origins
                .iter()
                .any(|o| o.as_bytes().eq_ignore_ascii_case(origin.trim_ascii()));
            if !allowed {
                return Err(ApiError::OriginRefused);
            }
        }
    }
    if let Some(secret) = &config.ws_secret {
        let token = token_from_request(head.query, head.authorization)?;
        if !crate::auth::device_token_matches(secret.as_bytes(), &user_id, token.as_bytes()) {
            return Err(ApiError::Unauthorized);
        }
    }
    Ok(Upgrade {
        user_id,
        accept: derive_accept_key(key),
    })
}

/// The single `user_id` query parameter, decoded and validated (1–64 bytes, no control chars).
fn user_id_from_query(query: Option<&str>) -> Result<UserId, ApiError> {
    let mut found: Option<UserId> = None;
    for pair in query_pairs(query.unwrap_or("")) {
        let (key, value) = pair.map_err(|_| ApiError::BadRequest("Malformed query string"))?;
        if key != "user_id" {
            continue;
        }
        if found.is_some() {
            return Err(ApiError::BadRequest("user_id given more than once"));
        }
        if value.is_empty() || value.chars().any(|c| c.is_control()) {
            return Err(ApiError::BadRequest("Invalid user_id"));
        }
        let id = UserId::try_from(value.as_ref())
            .map_err(|_| ApiError::BadRequest("user_id is longer than 64 bytes"))?;
        found = Some(id);
    }
    found.ok_or(ApiError::BadRequest("Missing user_id query parameter"))
}

/// The device token: the `token` query parameter, else `Authorization: Bearer`.
fn token_from_request(
    query: Option<&str>,
    authorization: Option<&[u8]>,
) -> Result<String, ApiError> {
    for pair in query_pairs(query.unwrap_or("")) {
        let (key, value) = pair.map_err(|_| ApiError::BadRequest("Malformed query string"))?;
        if key == "token" {
            return Ok(value.into_owned());
        }
    }
    authorization
        .and_then(crate::auth::bearer_token)
        .and_then(|t| std::str::from_utf8(t).ok())
        .map(str::to_owned)
        .ok_or(ApiError::Unauthorized)
}

/// Appends the 101 answer.
pub fn write_switching_protocols(out: &mut Vec<u8>, upgrade: &Upgrade) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    out.extend_from_slice(upgrade.accept.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
}

/// Why a session ended, and the close frame it sends (if any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The device closed; the close reply is owed.
    PeerClosed,
    /// The connection failed or the device vanished: no close frame.
    Dropped,
    /// No pong (or a stalled write) within `pong_timeout_secs`.
    HeartbeatTimeout,
    /// Close with this code and reason.
    Close(u16, &'static str),
}

/// Runs a device session on an upgraded stream; `leftover` holds bytes read past the head.
pub async fn run_session(
    stream: TcpStream,
    leftover: Vec<u8>,
    upgrade: Upgrade,
    state: Arc<State>,
) {
    let config = state.ws_config();
    let mut ws =
        WebSocketStream::from_partially_read(stream, leftover, Role::Server, Some(config)).await;
    let user = upgrade.user_id;
    let registration =
        DEVICES.register(&user, state.replace_duplicates(), state.config.queue_depth);
    let reg = match registration {
        Ok(reg) => reg,
        Err(RegisterError::Duplicate) => {
            METRICS.devices_refused_duplicate.inc();
            log::info!("device {user}: refused, already connected");
            close(&mut ws, 1008, "User already connected").await;
            return;
        }
        Err(RegisterError::Full) => {
            METRICS.devices_refused_full.inc();
            log::warn!("device {user}: refused, table full");
            close(&mut ws, 1013, "Server at capacity, try again later").await;
            return;
        }
    };
    METRICS.devices_connected.inc();
    log::info!("device {user}: connected (session {})", reg.session);
    let session = reg.session;
    let mut guard = Registered {
        user: user.clone(),
        session,
        active: true,
    };

    let ping_every = secs(state.config.ping_interval_secs);
    let pong_timeout = state.pong_timeout();
    let mut ping = interval_at(Instant::now() + ping_every, ping_every);
    let mut pong_deadline: Option<Instant> = None;
    let mut shutdown = state.shutdown.clone();
    // Grown on first use: an idle device should cost no batch buffers.
    let mut batch: Vec<Outbound> = Vec::new();
    let mut acks: Vec<Ack> = Vec::new();

    let ending = loop {
        let far = Instant::now() + Duration::from_secs(86_400);
        tokio::select! {
            incoming = ws.next() => {
                // Any frame from the device is a sign of life.
                pong_deadline = None;
                match incoming {
                    Some(Ok(Message::Text(text))) => {
                        METRICS.frames_in.inc();
                        METRICS.bytes_in.add(text.len() as u64);
                        if let Some(reply) = on_text(&user, session, text, pong_timeout).await {
                            if send_one(&mut ws, Message::text(reply), pong_timeout).await.is_err() {
                                break Ending::Dropped;
                            }
                        }
                    }
                    Some(Ok(Message::Binary(_))) => break Ending::Close(1003, "Binary frames are not accepted"),
                    Some(Ok(Message::Close(_))) => break Ending::PeerClosed,
                    Some(Ok(_)) => {
                        // Ping (tungstenite queues the pong), Pong, raw frames.
                        if timeout(pong_timeout, ws.flush()).await.map_or(true, |r| r.is_err()) {
                            break Ending::Dropped;
                        }
                    }
                    Some(Err(e)) => break ending_for(&e),
                    None => break Ending::Dropped,
                }
            }
            _ = reg.link.woken() => {
                if reg.link.is_kicked() {
                    break Ending::Close(1008, "Replaced by new connection");
                }
                // Drain what is queued, a batch per flush; a push arriving meanwhile leaves
                // a wake-up permit, so nothing waits for the next event.
                let mut failed = None;
                while reg.link.has_frames() {
                    reg.link.take(&mut batch, WRITE_BATCH_FRAMES);
                    if let Err(e) = write_batch(&mut ws, &mut batch, &mut acks, pong_timeout).await {
                        failed = Some(e);
                        break;
                    }
                }
                match failed {
                    None => {}
                    Some(WriteFailed::Stalled) => break Ending::HeartbeatTimeout,
                    Some(WriteFailed::Broken) => break Ending::Dropped,
                }
            }
            _ = ping.tick() => {
                if pong_deadline.is_none() {
                    pong_deadline = Some(Instant::now() + pong_timeout);
                }
                match send_one(&mut ws, Message::Ping(Default::default()), pong_timeout).await {
                    Ok(()) => {}
                    Err(WriteFailed::Stalled) => break Ending::HeartbeatTimeout,
                    Err(WriteFailed::Broken) => break Ending::Dropped,
                }
            }
            _ = sleep_until(pong_deadline.unwrap_or(far)), if pong_deadline.is_some() => {
                break Ending::HeartbeatTimeout;
            }
            _ = crate::state::stopping(&mut shutdown) => break Ending::Close(1001, "Server shutting down"),
        }
    };

    // Leave the table before the close handshake completes, so `/health` already counts the
    // device out when the device sees its close answered (SPEC §6).
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
        Ending::Close(code, reason) => close(&mut ws, code, reason).await,
        Ending::HeartbeatTimeout => METRICS.heartbeat_timeouts.inc(),
        Ending::Dropped => {}
    }
}

fn describe(ending: Ending) -> &'static str {
    match ending {
        Ending::PeerClosed => "closed by the device",
        Ending::Dropped => "connection lost",
        Ending::HeartbeatTimeout => "heartbeat timeout",
        Ending::Close(_, reason) => reason,
    }
}

/// The close a read error calls for (RFC 6455 §7.4.1).
fn ending_for(e: &WsError) -> Ending {
    match e {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => {
            Ending::Close(1009, "Message too big")
        }
        WsError::Utf8(_) => Ending::Close(1007, "Invalid UTF-8"),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => Ending::Dropped,
        WsError::Protocol(_) => Ending::Close(1002, "Protocol error"),
        _ => Ending::Dropped,
    }
}

/// Handles a device's text frame; returns the error frame to send back, if any.
async fn on_text(
    user: &UserId,
    session: u64,
    text: Utf8Bytes,
    wait: Duration,
) -> Option<&'static str> {
    match classify_device_message(text.as_bytes()) {
        DeviceMessage::Invalid => Some(r#"{"type":"error","message":"invalid JSON"}"#),
        DeviceMessage::NotObject => Some(r#"{"type":"error","message":"expected a JSON object"}"#),
        DeviceMessage::Object {
            correlation_id: Some(cid),
            is_final,
        } => {
            let tx = PENDING.route(&cid, user, session)?;
            let event = StreamEvent::Message { text, is_final };
            // Back-pressure from a slow upstream holds this device only so long; then that
            // stream is cut rather than the device's heartbeat.
            match tx.send_timeout(event, wait).await {
                Ok(()) => {}
                // The stream ended meanwhile; its own guard frees the id.
                Err(tokio::sync::mpsc::error::SendTimeoutError::Closed(_)) => {}
                Err(tokio::sync::mpsc::error::SendTimeoutError::Timeout(_)) => {
                    log::warn!("stream {cid}: upstream too slow, closing it");
                    PENDING.close_stream(&cid, &tx);
                }
            }
            None
        }
        DeviceMessage::Object { .. } => None,
    }
}

enum WriteFailed {
    /// The write did not finish in time: the device stopped reading.
    Stalled,
    /// The connection failed.
    Broken,
}

async fn send_one(
    ws: &mut WebSocketStream<TcpStream>,
    msg: Message,
    limit: Duration,
) -> Result<(), WriteFailed> {
    match timeout(limit, ws.send(msg)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(WriteFailed::Broken),
        Err(_) => Err(WriteFailed::Stalled),
    }
}

/// Writes the frames, flushes once, then acknowledges them as delivered. Frames move into
/// the messages (a `Bytes` clone would cost an allocation per frame); their acks wait in `acks`.
async fn write_batch(
    ws: &mut WebSocketStream<TcpStream>,
    batch: &mut Vec<Outbound>,
    acks: &mut Vec<Ack>,
    limit: Duration,
) -> Result<(), WriteFailed> {
    let mut frames = 0u64;
    let mut bytes = 0u64;
    let result = timeout(limit, async {
        for item in batch.drain(..) {
            frames += 1;
            bytes += item.frame.len() as u64;
            if let Some(ack) = item.ack {
                acks.push(ack);
            }
            ws.feed(Message::Text(item.frame)).await?;
        }
        ws.flush().await
    })
    .await;
    // Whatever was not written stays unacknowledged, which reports it as not delivered.
    batch.clear();
    match result {
        Ok(Ok(())) => {
            METRICS.frames_out.add(frames);
            METRICS.bytes_out.add(bytes);
            for ack in acks.drain(..) {
                ack.delivered();
            }
            Ok(())
        }
        Ok(Err(_)) => {
            acks.clear();
            Err(WriteFailed::Broken)
        }
        Err(_) => {
            acks.clear();
            Err(WriteFailed::Stalled)
        }
    }
}

/// Sends a close frame and waits (bounded) for the device's answer.
async fn close(ws: &mut WebSocketStream<TcpStream>, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    let _ = timeout(CLOSE_HANDSHAKE_TIMEOUT, async {
        if ws.close(Some(frame)).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}

/// Keeps the table entry tied to the session: removed on `release` or however the task ends.
struct Registered {
    user: UserId,
    session: u64,
    active: bool,
}

impl Registered {
    fn release(&mut self) {
        if self.active {
            self.active = false;
            DEVICES.unregister(&self.user, self.session);
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.release();
    }
}

//! `/sse/send`: forward a request to a device and stream its correlated answers back as
//! Server-Sent Events until a final one, a timeout, the device leaving, the upstream leaving
//! or shutdown (SPEC §5).

use tokio::io::AsyncReadExt;
use tokio::time::{interval_at, sleep_until, timeout, Instant};

use crate::config::secs;
use crate::conn::Conn;
use crate::deliver::{self, Undelivered};
use crate::error::ApiError;
use crate::http::parse::Version;
use crate::http::response::{self, Persist};
use crate::link::PushError;
use crate::message;
use crate::registry::{CorrelationId, OpenError, Outbound, StreamEvent};
use crate::sse;
use crate::state::{DEVICES, METRICS, PENDING};

/// Why a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Final,
    Timeout,
    DeviceGone,
    UpstreamGone,
    Shutdown,
}

impl End {
    /// The error text of the stream's last event, when the stream ends with one.
    fn error_text(self) -> Option<&'static str> {
        match self {
            End::Timeout => Some("Timeout waiting for response"),
            End::DeviceGone => Some("User disconnected"),
            End::Shutdown => Some("Server shutting down"),
            End::Final | End::UpstreamGone => None,
        }
    }
}

/// Frees the correlation id however the stream ends, including when the task is dropped.
struct PendingGuard(CorrelationId);

impl Drop for PendingGuard {
    fn drop(&mut self) {
        PENDING.close(&self.0);
    }
}

/// Serves one `/sse/send` request whose body is in `conn.body`.
/// `Ok(true)`: the connection may serve another request; `Ok(false)`/`Err`: close it.
pub(crate) async fn serve(conn: &mut Conn, keep_alive: bool, version: Version) -> Result<bool, ()> {
    // A refusal keeps the connection as the request asked; a stream may not (HTTP/1.0).
    let refusal = Persist::new(version, keep_alive);
    // Checks in SPEC order: 422, 409, 503, then "not connected".
    let prepared = match message::parse_envelope(&conn.body) {
        Ok(env) => {
            let target = deliver::target(&env, &conn.state, &mut conn.msg);
            let cid = deliver::correlation_id(&env);
            let frame = deliver::frame(&env, &cid, &mut conn.msg);
            let event_type = env.event_type.clone();
            Ok((target, cid, frame, event_type))
        }
        Err(errors) => Err(ApiError::from(errors)),
    };
    let (target, cid, frame, event_type) = match prepared {
        Ok(p) => p,
        Err(err) => return refuse(conn, err, refusal).await,
    };
    let event_type = event_type.as_deref();
    match PENDING.check(&cid) {
        Ok(()) => {}
        Err(OpenError::InUse) => return refuse(conn, ApiError::CorrelationInUse, refusal).await,
        Err(OpenError::Full) => return refuse(conn, ApiError::TooManySends, refusal).await,
    }
    // HTTP/1.0 has no chunked encoding: its stream is delimited by closing the connection.
    let chunked = version == Version::Http11;
    let keep_alive = keep_alive && chunked;

    let Some(device) = DEVICES.get(&target.user) else {
        METRICS.sends_device_gone.inc();
        start_stream(conn, chunked, keep_alive, version);
        end_event(conn, chunked, event_type, "User not connected", &cid);
        return finish(conn, chunked, keep_alive).await;
    };
    let mut events = match PENDING.open(
        &cid,
        &target.user,
        device.session,
        conn.state.config.queue_depth,
    ) {
        Ok(rx) => rx,
        Err(OpenError::InUse) => return refuse(conn, ApiError::CorrelationInUse, refusal).await,
        Err(OpenError::Full) => return refuse(conn, ApiError::TooManySends, refusal).await,
    };
    let _guard = PendingGuard(cid.clone());
    match device.link.push(Outbound { frame, ack: None }) {
        Ok(()) => {}
        Err(PushError::Full) => {
            METRICS.pushes_queue_full.inc();
            // Free the id before answering, so a retry right after the 503 isn't a 409.
            drop(_guard);
            return refuse(conn, ApiError::QueueFull, refusal).await;
        }
        Err(PushError::Ended) => {
            METRICS.sends_device_gone.inc();
            start_stream(conn, chunked, keep_alive, version);
            end_event(
                conn,
                chunked,
                event_type,
                Undelivered::NotConnected.text(),
                &cid,
            );
            return finish(conn, chunked, keep_alive).await;
        }
    }
    METRICS.sends_opened.inc();
    start_stream(conn, chunked, keep_alive, version);
    conn.flush_out().await?;

    let config = &conn.state.config;
    let send_timeout = secs(config.send_timeout_secs);
    let keepalive_every = secs(config.keepalive_secs);
    let write_limit = secs(config.idle_timeout_secs);
    let mut deadline = Instant::now() + send_timeout;
    let mut keepalive = interval_at(Instant::now() + keepalive_every, keepalive_every);
    let link = device.link;
    let mut shutdown = conn.shutdown.clone();
    let end = loop {
        // Answers first: a final message that arrived just before the device left is relayed.
        let can_read = conn.buf.len() < MAX_PIPELINED_BYTES;
        conn.buf.reserve(if can_read { 512 } else { 0 });
        let step = tokio::select! {
            biased;
            ev = events.recv() => Step::Event(ev),
            _ = link.gone() => Step::Gone,
            _ = crate::state::stopping(&mut shutdown) => Step::End(End::Shutdown),
            _ = sleep_until(deadline) => Step::End(End::Timeout),
            _ = keepalive.tick() => Step::Keepalive,
            r = conn.stream.read_buf(&mut conn.buf), if can_read => Step::Read(matches!(r, Ok(n) if n > 0)),
        };
        match step {
            Step::Event(Some(StreamEvent::Message { text, is_final })) => {
                deadline = Instant::now() + send_timeout;
                let mut event = std::mem::take(&mut conn.scratch);
                event.clear();
                sse::write_event(&mut event, event_type, text.as_bytes());
                frame_out(conn, chunked, &event);
                conn.scratch = event;
                if is_final {
                    break End::Final;
                }
            }
            // Sessions close because of shutdown too; the upstream should hear the real reason.
            Step::Event(None) | Step::Gone if conn.state.shutting_down() => break End::Shutdown,
            // The device session ended, or the stream's table entry went away.
            Step::Event(None) | Step::Gone => break End::DeviceGone,
            Step::End(end) => break end,
            Step::Keepalive => {
                let mut event = std::mem::take(&mut conn.scratch);
                event.clear();
                sse::write_keepalive(&mut event);
                frame_out(conn, chunked, &event);
                conn.scratch = event;
            }
            Step::Read(true) => continue,
            Step::Read(false) => break End::UpstreamGone,
        }
        if !conn.out.is_empty() && write_all(conn, write_limit).await.is_err() {
            break End::UpstreamGone;
        }
    };
    drop(_guard);
    count(end);
    if end == End::UpstreamGone {
        return Ok(false);
    }
    if let Some(text) = end.error_text() {
        end_event(conn, chunked, event_type, text, &cid);
    }
    finish(conn, chunked, keep_alive && end != End::Shutdown).await
}

/// Bytes of pipelined requests buffered while a stream is open; past it we stop reading
/// (and so stop noticing EOF until the next keepalive write fails).
const MAX_PIPELINED_BYTES: usize = 16 * 1024;

enum Step {
    Event(Option<StreamEvent>),
    Gone,
    End(End),
    Keepalive,
    Read(bool),
}

impl Undelivered {
    fn text(self) -> &'static str {
        match self {
            Undelivered::NotConnected => "User not connected",
            Undelivered::QueueFull => "User queue full",
        }
    }
}

fn count(end: End) {
    match end {
        End::Final => METRICS.sends_final.inc(),
        End::Timeout => METRICS.sends_timeout.inc(),
        End::DeviceGone => METRICS.sends_device_gone.inc(),
        End::UpstreamGone => METRICS.sends_upstream_gone.inc(),
        End::Shutdown => METRICS.sends_shutdown.inc(),
    }
}

fn start_stream(conn: &mut Conn, chunked: bool, keep_alive: bool, version: Version) {
    let persist = Persist::new(version, keep_alive);
    let headers: &[(&str, &str)] = if chunked {
        &[
            ("Cache-Control", "no-cache"),
            ("X-Accel-Buffering", "no"),
            ("Transfer-Encoding", "chunked"),
        ]
    } else {
        &[("Cache-Control", "no-cache"), ("X-Accel-Buffering", "no")]
    };
    response::write_head(
        &mut conn.out,
        200,
        Some("text/event-stream"),
        None,
        persist,
        headers,
    );
    METRICS.response(200);
}

fn frame_out(conn: &mut Conn, chunked: bool, event: &[u8]) {
    if chunked {
        response::write_chunk(&mut conn.out, event);
    } else {
        conn.out.extend_from_slice(event);
    }
}

fn end_event(conn: &mut Conn, chunked: bool, event_type: Option<&str>, error: &str, cid: &str) {
    let mut data = std::mem::take(&mut conn.body);
    data.clear();
    sse::write_error_data(&mut data, error, cid);
    let mut event = std::mem::take(&mut conn.scratch);
    event.clear();
    sse::write_event(&mut event, event_type, &data);
    frame_out(conn, chunked, &event);
    conn.scratch = event;
    conn.body = data;
}

async fn finish(conn: &mut Conn, chunked: bool, keep_alive: bool) -> Result<bool, ()> {
    if chunked {
        response::write_last_chunk(&mut conn.out);
    }
    conn.flush_out().await?;
    Ok(keep_alive)
}

async fn write_all(conn: &mut Conn, limit: std::time::Duration) -> Result<(), ()> {
    use tokio::io::AsyncWriteExt;
    let r = timeout(limit, conn.stream.write_all(&conn.out)).await;
    conn.out.clear();
    match r {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

async fn refuse(conn: &mut Conn, err: ApiError, persist: Persist) -> Result<bool, ()> {
    METRICS.response(err.status());
    let keep = persist.keeps_alive() && !err.closes_connection();
    conn.out.clear();
    err.write(&mut conn.out, persist, false);
    conn.flush_out().await?;
    Ok(keep)
}

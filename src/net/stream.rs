//! The SSE stream driver of `/sse/send`: relays a device's correlated answers to the upstream
//! socket until the stream ends (docs/protocol.md §7). What the stream means is `app::send`'s.

use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio::time::{interval_at, sleep_until, Instant};

use super::io::{Io, Next, Scratch, MAX_PIPELINED_BYTES};
use crate::app::send::{End, Framing, Open, Start};
use crate::hub::budget::{heap_bytes, Use};
use crate::hub::streams::{Overflow, StreamEvent};
use crate::hub::{self, Hub};
use crate::ops::settings::secs;
use crate::wire::http::parse::Version;
use crate::wire::http::response::Persist;

/// Bytes reserved in the read buffer for each read while a stream is open.
const STREAM_READ_BYTES: usize = 512;

/// A `/sse/send` request, read.
pub(crate) struct Request {
    /// Its HTTP version.
    pub(crate) version: Version,
    /// The connection may stay open after it.
    pub(crate) keep_alive: bool,
}

/// Serves one `/sse/send` request that `send::start` began.
pub(crate) async fn serve(
    io: &mut Io,
    hub: &Hub,
    shutdown: &watch::Receiver<bool>,
    request: Request,
    start: Start,
    scratch: &mut Scratch,
) -> Next {
    let Request {
        version,
        keep_alive,
    } = request;
    let framing = Framing::new(version, keep_alive);
    match start {
        // A refusal keeps the connection as the request asked; a stream may not (HTTP/1.0).
        Start::Refused(err) => {
            let persist = Persist::new(version, keep_alive);
            match io.refuse(hub, &err, persist, false).await {
                Ok(keep) => Next::done(keep),
                Err(_) => Next::Close,
            }
        }
        Start::Undelivered {
            cid,
            event_type,
            why,
        } => {
            hub.metrics.sends_device_gone.inc();
            begin(io, hub, framing, version);
            let buffers = (&mut scratch.push.frame, &mut scratch.text);
            framing.write_error(
                &mut io.out,
                buffers,
                event_type.as_deref(),
                why.text(),
                &cid,
            );
            finish(io, framing, framing.keep_alive).await
        }
        Start::Open(open) => {
            hub.metrics.sends_opened.inc();
            begin(io, hub, framing, version);
            if io.flush().await.is_err() {
                End::UpstreamGone.count(hub);
                return Next::Close;
            }
            relay(io, hub, shutdown.clone(), framing, open, scratch).await
        }
        #[cfg(feature = "cluster")]
        Start::Elsewhere(elsewhere) => {
            let start = crate::app::send::settle(elsewhere, hub).await;
            let request = Request {
                version,
                keep_alive,
            };
            // Once: a settled request is never `Elsewhere` again.
            Box::pin(serve(io, hub, shutdown, request, start, scratch)).await
        }
    }
}

fn begin(io: &mut Io, hub: &Hub, framing: Framing, version: Version) {
    framing.write_head(&mut io.out, version);
    hub.metrics.response(200);
}

/// Waits on the device's answers, the session ending, the timeout, keepalives, shutdown and
/// the upstream's end of file, and writes each event as it comes.
async fn relay(
    io: &mut Io,
    hub: &Hub,
    mut shutdown: watch::Receiver<bool>,
    framing: Framing,
    mut open: Open,
    scratch: &mut Scratch,
) -> Next {
    let config = &hub.config;
    let send_timeout = secs(config.send_timeout_secs);
    let keepalive_every = secs(config.keepalive_secs);
    let mut deadline = Instant::now() + send_timeout;
    let mut keepalive = interval_at(Instant::now() + keepalive_every, keepalive_every);
    let event_type = open.event_type.as_deref();
    let mut held = None;
    // The request's frame was spliced in scratch space: not kept for the stream's life.
    scratch.shrink();
    let end = loop {
        // Answers first: a final message that arrived just before the device left is relayed.
        // Pipelined requests wait in the buffer, up to a bound and within the budget.
        let can_read =
            io.buf.len() < MAX_PIPELINED_BYTES && io.reserve_read(STREAM_READ_BYTES).is_ok();
        let step = tokio::select! {
            biased;
            ev = open.answers.rx.events.recv() => Wake::Event(ev),
            () = open.link.gone() => Wake::Gone,
            () = hub::stopping(&mut shutdown) => Wake::End(End::Shutdown),
            () = sleep_until(deadline) => Wake::End(End::Timeout),
            _ = keepalive.tick() => Wake::Keepalive,
            r = io.stream.read_buf(&mut io.buf), if can_read => Wake::Read(matches!(r, Ok(n) if n > 0)),
        };
        match step {
            Wake::Event(Some(StreamEvent::Message {
                text,
                is_final,
                mut charge,
            })) => {
                deadline = Instant::now() + send_timeout;
                open.answers.rx.buffered.taken(text.len());
                // The event is put together in scratch space and copied into `out`, each line
                // of the answer with `data: ` and a newline: both copies are paid for, beside
                // the answer, before they are made, and held until `out` is written.
                let event = framing.event_bytes(event_type, text.as_bytes());
                let total =
                    heap_bytes(text.len()).saturating_add(heap_bytes(event).saturating_mul(2));
                if charge.grow_to(total, Use::Answer).is_err() {
                    break End::OverBudget;
                }
                framing.write_event(&mut io.out, &mut scratch.text, event_type, text.as_bytes());
                held = Some(charge);
                if is_final {
                    break End::Final;
                }
            }
            // Sessions close because of shutdown too; the upstream should hear the real reason.
            Wake::Event(None) | Wake::Gone if hub.shutting_down() => break End::Shutdown,
            Wake::Gone => break End::DeviceGone,
            // Only the device session removes a live stream's entry: when an answer could
            // not be held for it.
            Wake::Event(None) => match open.answers.rx.buffered.overflow() {
                Some(Overflow::OverBudget) => break End::OverBudget,
                Some(Overflow::TooSlow) | None => break End::TooSlow,
            },
            #[cfg(feature = "cluster")]
            Wake::Event(Some(StreamEvent::Unreachable)) => break End::ClusterUnavailable,
            Wake::End(end) => break end,
            Wake::Keepalive => framing.write_keepalive(&mut io.out, &mut scratch.text),
            Wake::Read(true) => continue,
            Wake::Read(false) => break End::UpstreamGone,
        }
        if !io.out.is_empty() && io.flush().await.is_err() {
            break End::UpstreamGone;
        }
        // A large event's scratch space goes with its charge.
        scratch.shrink();
        drop(held.take());
    };
    // The id is free before the last event goes out, so a retry that follows it is no 409.
    let (cid, event_type) = open.close();
    end.count(hub);
    if end == End::UpstreamGone {
        return Next::Close;
    }
    if let Some(text) = end.error_text() {
        let buffers = (&mut scratch.push.frame, &mut scratch.text);
        framing.write_error(&mut io.out, buffers, event_type.as_deref(), text, &cid);
    }
    finish(io, framing, framing.keep_alive && end != End::Shutdown).await
}

/// What woke the relay.
enum Wake {
    Event(Option<StreamEvent>),
    Gone,
    End(End),
    Keepalive,
    Read(bool),
}

async fn finish(io: &mut Io, framing: Framing, keep_alive: bool) -> Next {
    framing.write_end(&mut io.out);
    match io.flush().await {
        Ok(()) => Next::done(keep_alive),
        Err(_) => Next::Close,
    }
}

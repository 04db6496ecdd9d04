//! `/sse/send`: forward a request to a device and stream its correlated answers back as Server-Sent
//! Events until a final one, a timeout, the device leaving, the upstream leaving or shutdown
//! (docs/protocol.md §7). This is what the endpoint means: the checks, the stream's table entry and
//! the bytes of its events. `net::stream` drives it over the socket.

use std::sync::Arc;

use super::error::ApiError;
use super::push::{self, Scratch, Undelivered};
use crate::hub::budget::Use;
use crate::hub::link::{DeviceLink, Outbound, PushError, Source};
pub(crate) use crate::hub::streams::Answers;
use crate::hub::Hub;
use crate::wire::envelope::{self, CorrelationId};
use crate::wire::http::parse::Version;
use crate::wire::http::response::{self, Persist};
use crate::wire::limits::MAX_EVENT_TYPE_BYTES;
use crate::wire::listed::listed;
use crate::wire::sse;

/// The `event_type` every event of a stream carries.
pub(crate) type EventType = Option<heapless::String<MAX_EVENT_TYPE_BYTES>>;

/// How a `/sse/send` request begins.
pub(crate) enum Start {
    /// Refused before any stream: answered as an ordinary error.
    Refused(ApiError),
    /// Nobody to ask: a stream whose only event says why.
    Undelivered {
        /// The request's correlation id.
        cid: CorrelationId,
        /// The request's `event_type`.
        event_type: EventType,
        /// Why the request reached no device.
        why: Undelivered,
    },
    /// The request is queued for the device; its answers come on `answers`.
    Open(Open),
    /// The device is on another node of the cluster: the request is on its way there.
    #[cfg(feature = "cluster")]
    Elsewhere(super::remote::Elsewhere),
}

/// A stream whose request is on its way to the device.
pub(crate) struct Open {
    /// The request's correlation id.
    pub cid: CorrelationId,
    /// The request's `event_type`.
    pub event_type: EventType,
    /// The device's correlated answers; dropping them frees the correlation id.
    pub answers: Answers,
    /// The device session: its end ends the stream.
    pub link: Arc<DeviceLink>,
}

impl Open {
    /// Ends the stream: frees the correlation id and stops taking answers; returns what the
    /// closing event still needs.
    pub(crate) fn close(self) -> (CorrelationId, EventType) {
        let Open {
            cid, event_type, ..
        } = self;
        (cid, event_type)
    }
}

/// Validates `body`, checks the stream table and queues the request for its device, in the
/// order of docs/protocol.md §7.2: 422, 409, 503, then "not connected", then the memory
/// budget (503) for its frame.
pub(crate) fn start(body: &[u8], hub: &Hub, scratch: &mut Scratch) -> Start {
    let env = match envelope::parse_envelope(body) {
        Ok(env) => env,
        Err(errors) => return Start::Refused(ApiError::from(errors)),
    };
    let target = push::target(&env, hub, scratch);
    let cid = push::correlation_id(&env);
    let event_type = env.event_type.clone();
    if let Err(e) = hub.streams.check(&cid) {
        return Start::Refused(ApiError::from(e));
    }
    let device = hub.devices.get(&target.user);
    #[cfg(feature = "cluster")]
    if device.is_none() {
        if let Some(start) =
            super::remote::send_elsewhere(&env, &cid, &target.user, &event_type, hub)
        {
            return start.map_or_else(Start::Refused, Start::Elsewhere);
        }
    }
    let Some(device) = device else {
        return Start::Undelivered {
            cid,
            event_type,
            why: Undelivered::NotConnected,
        };
    };
    let Ok(frame) = push::frame(&env, &cid, hub, scratch, Use::Frame) else {
        return Start::Refused(ApiError::OverBudget);
    };
    drop(env);
    let answers = match hub
        .streams
        .open(&cid, &target.user, device.session, hub.stream_limits())
    {
        Ok(rx) => Answers::new(rx, cid.clone(), hub.streams),
        Err(e) => return Start::Refused(ApiError::from(e)),
    };
    let item = Outbound {
        frame: frame.text,
        ack: None,
        charge: frame.charge,
        source: Source::Send,
    };
    match device.link.push(item) {
        Ok(()) => Start::Open(Open {
            cid,
            event_type,
            answers,
            link: device.link,
        }),
        Err(PushError::Full) => {
            hub.metrics.pushes_queue_full.inc();
            // Free the id before answering, so a retry right after the 503 isn't a 409.
            drop(answers);
            Start::Refused(ApiError::QueueFull)
        }
        Err(PushError::Ended) => Start::Undelivered {
            cid,
            event_type,
            why: Undelivered::NotConnected,
        },
    }
}

/// Waits for the node of a device on another node of the cluster: how the stream begins.
#[cfg(feature = "cluster")]
pub(crate) async fn settle(elsewhere: super::remote::Elsewhere, hub: &Hub) -> Start {
    use super::remote::Settled;
    match elsewhere.settle(hub).await {
        Settled::Opened {
            cid,
            event_type,
            answers,
            device,
        } => Start::Open(Open {
            cid,
            event_type,
            answers,
            link: device,
        }),
        Settled::Refused(err) => Start::Refused(err),
        Settled::NotConnected { cid, event_type } => Start::Undelivered {
            cid,
            event_type,
            why: Undelivered::NotConnected,
        },
    }
}

listed! {
    /// Why a stream ended.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum End {
        /// The device sent its final answer.
        Final,
        /// `send_timeout_secs` passed without an answer.
        Timeout,
        /// The device session ended, or was never there.
        DeviceGone,
        /// The upstream closed its side or stopped reading.
        UpstreamGone,
        /// The daemon is shutting down.
        Shutdown,
        /// The upstream did not take the device's answers as fast as they came: the stream's
        /// buffer was full when the next one arrived.
        TooSlow,
        /// A device's answer did not fit the memory budget.
        OverBudget,
        /// The device is on another node of the cluster, and the link to it was lost.
        #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
        ClusterUnavailable,
    }
}

impl End {
    /// The error text of the stream's last event, when the stream ends with one.
    pub(crate) fn error_text(self) -> Option<&'static str> {
        match self {
            End::Timeout => Some("Timeout waiting for response"),
            End::DeviceGone => Some("User disconnected"),
            End::Shutdown => Some("Server shutting down"),
            End::TooSlow => Some("Upstream too slow"),
            End::OverBudget => Some("Memory budget exhausted"),
            End::ClusterUnavailable => Some("Cluster unavailable"),
            End::Final | End::UpstreamGone => None,
        }
    }

    /// Counts the ending in the metrics.
    pub(crate) fn count(self, hub: &Hub) {
        let m = hub.metrics;
        match self {
            End::Final => m.sends_final.inc(),
            End::Timeout => m.sends_timeout.inc(),
            End::DeviceGone => m.sends_device_gone.inc(),
            End::UpstreamGone => m.sends_upstream_gone.inc(),
            End::Shutdown => m.sends_shutdown.inc(),
            End::TooSlow => m.sends_too_slow.inc(),
            End::OverBudget => m.sends_over_budget.inc(),
            // Counted by the cluster's counters (`unavailable`), where the link is watched.
            End::ClusterUnavailable => {}
        }
    }
}

/// How the events of one stream go on the wire.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Framing {
    /// HTTP/1.1: chunked. HTTP/1.0 has no chunked encoding: its stream ends with the connection.
    pub chunked: bool,
    /// The connection stays open after the stream.
    pub keep_alive: bool,
}

impl Framing {
    /// The framing for a request of `version` whose client wants `keep_alive`.
    pub(crate) fn new(version: Version, keep_alive: bool) -> Framing {
        let chunked = version == Version::Http11;
        Framing {
            chunked,
            keep_alive: keep_alive && chunked,
        }
    }

    /// Appends the stream's response head.
    pub(crate) fn write_head(self, out: &mut Vec<u8>, version: Version) {
        let persist = Persist::new(version, self.keep_alive);
        let headers: &[(&str, &str)] = if self.chunked {
            &[
                ("Cache-Control", "no-cache"),
                ("X-Accel-Buffering", "no"),
                ("Transfer-Encoding", "chunked"),
            ]
        } else {
            &[("Cache-Control", "no-cache"), ("X-Accel-Buffering", "no")]
        };
        response::write_head(out, 200, Some("text/event-stream"), None, persist, headers);
    }

    /// Appends one event carrying `data`; `event` is scratch space. Both grow by exactly
    /// what the event needs, so [`Framing::event_bytes`] is what they can be charged for.
    pub(crate) fn write_event(
        self,
        out: &mut Vec<u8>,
        event: &mut Vec<u8>,
        event_type: Option<&str>,
        data: &[u8],
    ) {
        event.clear();
        event.reserve_exact(sse::event_len(event_type, data));
        sse::write_event(event, event_type, data);
        self.write_bytes(out, event);
    }

    /// Most bytes one event carrying `data` takes in `out` (and, without the chunk's framing,
    /// in the scratch space it is put together in): each line of `data` costs `data: ` and a
    /// newline, so an answer of newlines takes seven times its length.
    pub(crate) fn event_bytes(self, event_type: Option<&str>, data: &[u8]) -> usize {
        let event = sse::event_len(event_type, data);
        if self.chunked {
            event.saturating_add(response::MAX_CHUNK_FRAMING_BYTES)
        } else {
            event
        }
    }

    /// Appends the keepalive comment.
    pub(crate) fn write_keepalive(self, out: &mut Vec<u8>, event: &mut Vec<u8>) {
        event.clear();
        sse::write_keepalive(event);
        self.write_bytes(out, event);
    }

    /// Appends the closing error event `{"error": TEXT, "correlation_id": ID}`; `data` and
    /// `event` are scratch space.
    pub(crate) fn write_error(
        self,
        out: &mut Vec<u8>,
        scratch: (&mut Vec<u8>, &mut Vec<u8>),
        event_type: Option<&str>,
        error: &str,
        cid: &str,
    ) {
        let (data, event) = scratch;
        data.clear();
        sse::write_error_data(data, error, cid);
        self.write_event(out, event, event_type, data);
    }

    /// Appends the end of the stream's body (the last chunk, when chunked).
    pub(crate) fn write_end(self, out: &mut Vec<u8>) {
        if self.chunked {
            response::write_last_chunk(out);
        }
    }

    fn write_bytes(self, out: &mut Vec<u8>, bytes: &[u8]) {
        out.reserve_exact(bytes.len() + response::MAX_CHUNK_FRAMING_BYTES);
        if self.chunked {
            response::write_chunk(out, bytes);
        } else {
            out.extend_from_slice(bytes);
        }
    }
}

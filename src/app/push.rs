//! `/sse/push` and `/sse/push/batch`: validate, route by mention, queue to the device, wait
//! until the frame is on the device's socket (SPEC §4).

use std::io::Write;
use std::sync::Arc;

use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::error::ApiError;
use crate::hub::ack::{Ack, AckSlot, Outcome};
use crate::hub::ids;
use crate::hub::link::{Outbound, PushError};
use crate::hub::Hub;
use crate::wire::envelope::{self, CorrelationId, Envelope, UserId};
use crate::wire::http::response::{self, Persist};
use crate::wire::{json, mention};

/// Why a frame did not reach its device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Undelivered {
    /// Not connected, or gone before the write.
    NotConnected,
    /// The device's queue is full.
    QueueFull,
}

impl Undelivered {
    /// The batch result's `error` value.
    pub(crate) fn code(self) -> &'static str {
        match self {
            Undelivered::NotConnected => "not_connected",
            Undelivered::QueueFull => "queue_full",
        }
    }

    /// The human text: a push's `message`, a stream's closing event.
    pub(crate) fn text(self) -> &'static str {
        match self {
            Undelivered::NotConnected => "User not connected",
            Undelivered::QueueFull => "User queue full",
        }
    }
}

/// Per-connection buffers the push path reuses, so a push allocates only its frame.
#[derive(Default)]
pub(crate) struct Scratch {
    /// Unescaped mention text, for messages whose text has JSON escapes.
    pub text: String,
    /// Where a frame is spliced before it is copied into its own exact-size allocation.
    pub frame: Vec<u8>,
}

/// Where a message goes: its mention target if it names a public account, else its user id.
pub(crate) struct Target {
    /// The device the frame is queued for.
    pub user: UserId,
    /// Set when an `@mention` rerouted the message.
    pub routed: bool,
}

/// Resolves the target of `env` (SPEC §7).
pub(crate) fn target(env: &Envelope<'_>, hub: &Hub, scratch: &mut Scratch) -> Target {
    match mention::route_target(env, &mut scratch.text, |name| hub.is_public(name)) {
        Some(account) => {
            hub.metrics.pushes_rerouted.inc();
            Target {
                user: account,
                routed: true,
            }
        }
        None => Target {
            user: env.user_id.clone(),
            routed: false,
        },
    }
}

/// The spliced frame for `env` (SPEC §3), with `correlation_id` as the id to add if absent.
pub(crate) fn frame(env: &Envelope<'_>, correlation_id: &str, scratch: &mut Scratch) -> Utf8Bytes {
    scratch.frame.clear();
    envelope::write_device_frame(env, correlation_id, &mut scratch.frame);
    // An exact-size copy: `Bytes` adopts a full Vec as is, while spare capacity would cost it
    // a second allocation for a shared header (measured by benches/push_alloc.rs).
    let mut exact = Vec::with_capacity(scratch.frame.len());
    exact.extend_from_slice(&scratch.frame);
    // The splice only inserts JSON text around validated UTF-8, so this never fails; if it
    // ever did, sending nothing beats sending bytes the device can't parse.
    String::from_utf8(exact)
        .map(Utf8Bytes::from)
        .unwrap_or_default()
}

/// Queues `frame` for `user` without waiting.
pub(crate) fn enqueue(
    hub: &Hub,
    user: &str,
    frame: Utf8Bytes,
    ack: Option<Ack>,
) -> Result<(), Undelivered> {
    let Some(device) = hub.devices.get(user) else {
        return Err(Undelivered::NotConnected);
    };
    match device.link.push(Outbound { frame, ack }) {
        Ok(()) => Ok(()),
        Err(PushError::Full) => Err(Undelivered::QueueFull),
        Err(PushError::Ended) => Err(Undelivered::NotConnected),
    }
}

fn count(hub: &Hub, outcome: Result<(), Undelivered>) {
    let m = hub.metrics;
    match outcome {
        Ok(()) => m.pushes_delivered.inc(),
        Err(Undelivered::NotConnected) => m.pushes_not_connected.inc(),
        Err(Undelivered::QueueFull) => m.pushes_queue_full.inc(),
    }
}

/// Serves `/sse/push`; writes the response into `out` and returns its status.
pub(crate) async fn push(
    body: &[u8],
    hub: &Hub,
    slot: &Arc<AckSlot>,
    scratch: &mut Scratch,
    out: &mut Vec<u8>,
    persist: Persist,
) -> u16 {
    let (target, frame) = match envelope::parse_envelope(body) {
        Ok(env) => {
            let target = target(&env, hub, scratch);
            let cid = correlation_id(&env);
            (target, frame(&env, &cid, scratch))
        }
        Err(errors) => return refuse(&ApiError::from(errors), out, persist),
    };
    let outcome = match slot.ack(0) {
        Some(ack) => match enqueue(hub, &target.user, frame, Some(ack)) {
            Ok(()) => {
                slot.wait().await;
                match slot.outcome(0) {
                    Outcome::Delivered => Ok(()),
                    Outcome::Lost => Err(Undelivered::NotConnected),
                }
            }
            Err(e) => Err(e),
        },
        None => Err(Undelivered::NotConnected),
    };
    count(hub, outcome);
    let (status, message) = match outcome {
        Ok(()) => ("success", "Message delivered"),
        Err(Undelivered::NotConnected) => ("partial", Undelivered::NotConnected.text()),
        Err(Undelivered::QueueFull) => return refuse(&ApiError::QueueFull, out, persist),
    };
    let json = &mut scratch.frame;
    json.clear();
    json.extend_from_slice(b"{\"status\":");
    json::write_string(json, status);
    json.extend_from_slice(b",\"message\":");
    json::write_string(json, message);
    if target.routed {
        json.extend_from_slice(b",\"routed_to\":");
        json::write_string(json, &target.user);
    }
    json.push(b'}');
    response::write_json(out, 200, json, persist, &[], false);
    200
}

/// The correlation id of a message: `data.correlation_id`, else a fresh UUID.
pub(crate) fn correlation_id(env: &Envelope<'_>) -> CorrelationId {
    match &env.correlation_id {
        Some(id) => id.clone(),
        None => {
            let fresh = ids::new_correlation_id();
            // 36 bytes always fit the 128-byte id.
            CorrelationId::try_from(fresh.as_str()).unwrap_or_default()
        }
    }
}

/// One batch item's fate.
struct ItemResult {
    user_id: UserId,
    routed_to: Option<UserId>,
    outcome: Result<(), Undelivered>,
    queued: bool,
}

/// Serves `/sse/push/batch`; writes the response into `out` and returns its status.
pub(crate) async fn batch(
    body: &[u8],
    hub: &Hub,
    scratch: &mut Scratch,
    out: &mut Vec<u8>,
    persist: Persist,
) -> u16 {
    let envelopes = match envelope::parse_batch(body, hub.config.max_batch) {
        Ok(list) => list,
        Err(errors) => return refuse(&ApiError::from(errors), out, persist),
    };
    // Everything is queued before anything is awaited: items for one device enter its queue
    // in index order, and distinct devices drain their queues concurrently.
    let slot = AckSlot::new(envelopes.len());
    let mut results = Vec::with_capacity(envelopes.len());
    for (index, env) in envelopes.iter().enumerate() {
        let target = target(env, hub, scratch);
        let cid = correlation_id(env);
        let frame = frame(env, &cid, scratch);
        let outcome = match slot.ack(index) {
            Some(ack) => enqueue(hub, &target.user, frame, Some(ack)),
            None => Err(Undelivered::NotConnected),
        };
        results.push(ItemResult {
            user_id: env.user_id.clone(),
            routed_to: target.routed.then_some(target.user),
            queued: outcome.is_ok(),
            outcome,
        });
    }
    drop(envelopes);
    slot.wait().await;

    let mut json = Vec::with_capacity(64 + results.len() * 64);
    json.extend_from_slice(b"{\"results\":[");
    for (index, item) in results.iter_mut().enumerate() {
        if item.queued && slot.outcome(index) == Outcome::Lost {
            item.outcome = Err(Undelivered::NotConnected);
        }
        count(hub, item.outcome);
        if index > 0 {
            json.push(b',');
        }
        let _ = write!(json, "{{\"index\":{index},\"user_id\":");
        json::write_string(&mut json, &item.user_id);
        let _ = write!(json, ",\"success\":{}", item.outcome.is_ok());
        if let Err(e) = item.outcome {
            json.extend_from_slice(b",\"error\":");
            json::write_string(&mut json, e.code());
        }
        if let Some(routed) = &item.routed_to {
            json.extend_from_slice(b",\"routed_to\":");
            json::write_string(&mut json, routed);
        }
        json.push(b'}');
    }
    json.extend_from_slice(b"]}");
    response::write_json(out, 200, &json, persist, &[], false);
    200
}

fn refuse(err: &ApiError, out: &mut Vec<u8>, persist: Persist) -> u16 {
    err.write(out, persist, false);
    err.status()
}

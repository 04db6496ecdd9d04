//! `/sse/push` and `/sse/push/batch`: validate, route by mention, queue to the device, wait
//! until the frame is on the device's socket (docs/protocol.md §5, §6).

use std::collections::VecDeque;
use std::io::Write;
use std::sync::Arc;

use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::error::ApiError;
pub(crate) use super::error::Undelivered;
use crate::hub::ack::{Ack, AckSlot, NotKept, Outcome};
use crate::hub::budget::{heap_bytes, Charge, Use};
use crate::hub::devices::DeviceHandle;
use crate::hub::ids;
use crate::hub::link::{DeviceLink, Outbound, PushError, Source};
use crate::hub::mailbox::Routed;
use crate::hub::Hub;
use crate::ops::settings::secs;
use crate::wire::envelope::{self, CorrelationId, Envelope, UserId};
use crate::wire::http::response::{self, Persist};
use crate::wire::limits::MAX_USER_ID_BYTES;
use crate::wire::{json, mention};

/// Per-connection buffers the push path reuses, so a push allocates only its frame.
#[derive(Default)]
pub(crate) struct Scratch {
    /// Unescaped mention text, for messages whose text has JSON escapes.
    pub text: String,
    /// Where a frame is spliced before it is copied into its own exact-size allocation.
    pub frame: Vec<u8>,
    /// What a batch paid for its answer before delivering anything; the connection holds
    /// it until the answer is written.
    pub reply: Option<Charge>,
}

/// Room for the head of a JSON answer (status line and headers), in bytes.
const ANSWER_HEAD_BYTES: usize = 256;
/// Bytes of a batch result besides its strings: `{"index":N,"user_id":"","success":false,
/// "error":"not_connected","routed_to":""},` with a 20-digit index.
const RESULT_FIXED_BYTES: usize = 112;
/// Bytes a result grows by with the mailbox on: `,"queued":false,"reason":"mailboxes_full"`.
const RESULT_NOTE_BYTES: usize = 42;

/// Where a message goes: its mention target if it names a public account, else its user id.
pub(crate) struct Target {
    /// The device the frame is queued for.
    pub user: UserId,
    /// Set when an `@mention` rerouted the message.
    pub routed: bool,
}

/// Resolves the target of `env` (docs/protocol.md §9).
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

/// A spliced frame and its share of the memory budget.
pub(crate) struct Frame {
    /// The text the device receives.
    pub text: Utf8Bytes,
    /// Paid before the frame's own allocation; given back when the frame is dropped.
    pub charge: Charge,
}

/// The spliced frame for `env` (docs/protocol.md §4), with `correlation_id` as the id to add if absent,
/// paid for as `what`; `OverBudget` when it does not fit the memory budget.
pub(crate) fn frame(
    env: &Envelope<'_>,
    correlation_id: &str,
    hub: &Hub,
    scratch: &mut Scratch,
    what: Use,
) -> Result<Frame, Undelivered> {
    scratch.frame.clear();
    envelope::write_device_frame(env, correlation_id, &mut scratch.frame);
    let charge = hub
        .budget
        .charge(heap_bytes(scratch.frame.len()), what)
        .map_err(|_| Undelivered::OverBudget)?;
    // An exact-size copy: `Bytes` adopts a full Vec as is, while spare capacity would cost it
    // a second allocation for a shared header (measured by benches/push_alloc.rs).
    let mut exact = Vec::with_capacity(scratch.frame.len());
    exact.extend_from_slice(&scratch.frame);
    // The splice only inserts JSON text around validated UTF-8, so this never fails; if it
    // ever did, sending nothing beats sending bytes the device can't parse.
    let text = String::from_utf8(exact)
        .map(Utf8Bytes::from)
        .unwrap_or_default();
    Ok(Frame { text, charge })
}

/// Queues a push's `frame` for `user` without waiting (`device`: its session, when the caller
/// looked it up already). With the mailbox on, a frame for a device that is away is kept or
/// refused there, and `ack` says which: Ok either way.
// Always inlined, like `Hub::deliver`: a call here costs every live push.
#[inline(always)]
fn deliver(
    hub: &Hub,
    user: &UserId,
    device: Option<DeviceHandle>,
    frame: Frame,
    ack: Option<Ack>,
) -> Result<(), Undelivered> {
    let item = Outbound {
        frame: frame.text,
        ack,
        charge: frame.charge,
        source: Source::Push,
    };
    routed(hub.deliver(user, device, item))
}

/// What the offline mailbox did with a frame whose device did not get it, for the answer's
/// `queued` and `reason` (docs/protocol.md §20.3): `None` with the mailbox off.
fn mailbox_note(hub: &Hub, outcome: Outcome) -> Option<Result<(), NotKept>> {
    if !hub.mailbox.is_on() {
        return None;
    }
    match outcome {
        Outcome::Delivered => None,
        Outcome::Kept => Some(Ok(())),
        Outcome::NotKept(why) => Some(Err(why)),
        Outcome::Lost => {
            hub.mailbox.count_not_kept(NotKept::InFlight);
            Some(Err(NotKept::InFlight))
        }
    }
}

/// Appends `,"queued":true` or `,"queued":false,"reason":"WHY"`.
fn write_note(json: &mut Vec<u8>, note: Result<(), NotKept>) {
    match note {
        Ok(()) => json.extend_from_slice(b",\"queued\":true"),
        Err(why) => {
            json.extend_from_slice(b",\"queued\":false,\"reason\":");
            json::write_string(json, why.code());
        }
    }
}

/// A frame for a device that is away and the mailbox on: paid for as kept, so it never makes
/// other kept messages give way; Err (and the acknowledgement resolved) when the budget has
/// no room for it.
fn frame_to_keep(
    env: &Envelope<'_>,
    correlation_id: &str,
    hub: &Hub,
    scratch: &mut Scratch,
    ack: Ack,
) -> Result<(Frame, Ack), ()> {
    match frame(env, correlation_id, hub, scratch, Use::Mailbox) {
        Ok(frame) => Ok((frame, ack)),
        Err(_) => {
            hub.mailbox.count_not_kept(NotKept::OverBudget);
            ack.not_kept(NotKept::OverBudget);
            Err(())
        }
    }
}

fn count(hub: &Hub, outcome: Result<(), Undelivered>) {
    let m = hub.metrics;
    match outcome {
        Ok(()) => m.pushes_delivered.inc(),
        Err(Undelivered::NotConnected) => m.pushes_not_connected.inc(),
        Err(Undelivered::QueueFull) => m.pushes_queue_full.inc(),
        // Counted by the budget's refusals, and by the cluster's counters.
        Err(Undelivered::OverBudget | Undelivered::ClusterUnavailable) => {}
    }
}

/// A push whose frame is queued (or found no device): it needs its request body no more.
pub(crate) struct PushInFlight {
    target: Target,
    /// Queued and waiting for its acknowledgement, or why it was not.
    queued: Result<(), Undelivered>,
    /// On its way to the device's node, when the device is on another node of the cluster.
    #[cfg(feature = "cluster")]
    remote: Option<super::remote::RemotePush>,
}

/// Starts `/sse/push`: validates `body`, routes it and queues its frame without waiting.
/// Err: the refusal to answer with.
pub(crate) fn push_start(
    body: &[u8],
    hub: &Hub,
    slot: &Arc<AckSlot>,
    scratch: &mut Scratch,
) -> Result<PushInFlight, ApiError> {
    let env = envelope::parse_envelope(body).map_err(ApiError::from)?;
    let target = target(&env, hub, scratch);
    let cid = correlation_id(&env);
    // Looked up once: the cluster, the mailbox and the delivery all go by it.
    let device = hub.devices.get(&target.user);
    #[cfg(feature = "cluster")]
    if device.is_none() {
        if let Some(remote) = super::remote::push_elsewhere(&env, &cid, &target.user, hub) {
            let (queued, remote) = match remote {
                Ok(remote) => (Err(Undelivered::NotConnected), Some(remote)),
                Err(why) => (Err(why), None),
            };
            return Ok(PushInFlight {
                target,
                queued,
                remote,
            });
        }
    }
    let Some(ack) = slot.ack(0) else {
        return Ok(PushInFlight {
            target,
            queued: Err(Undelivered::NotConnected),
            #[cfg(feature = "cluster")]
            remote: None,
        });
    };
    let queued = if hub.mailbox.is_on() {
        match device {
            Some(device) => frame(&env, &cid, hub, scratch, Use::Frame)
                .and_then(|f| deliver(hub, &target.user, Some(device), f, Some(ack))),
            None => match frame_to_keep(&env, &cid, hub, scratch, ack) {
                Ok((f, ack)) => deliver(hub, &target.user, None, f, Some(ack)),
                // Not kept: the acknowledgement says why.
                Err(()) => Ok(()),
            },
        }
    } else {
        frame(&env, &cid, hub, scratch, Use::Frame)
            .and_then(|f| deliver(hub, &target.user, device, f, Some(ack)))
    };
    Ok(PushInFlight {
        target,
        queued,
        #[cfg(feature = "cluster")]
        remote: None,
    })
}

/// Finishes `/sse/push`: waits until its frame is on the device's socket (or lost, or kept),
/// writes the answer into `out` and returns its status.
pub(crate) async fn push_finish(
    push: PushInFlight,
    hub: &Hub,
    slot: &AckSlot,
    scratch: &mut Scratch,
    out: &mut Vec<u8>,
    persist: Persist,
) -> u16 {
    let PushInFlight {
        target,
        queued,
        #[cfg(feature = "cluster")]
        remote,
    } = push;
    let (outcome, note) = match queued {
        Ok(()) => {
            slot.wait().await;
            match slot.outcome(0) {
                Outcome::Delivered => (Ok(()), None),
                other => (Err(Undelivered::NotConnected), mailbox_note(hub, other)),
            }
        }
        Err(e) => (Err(e), None),
    };
    #[cfg(feature = "cluster")]
    let (outcome, note) = match remote {
        Some(remote) => (remote.outcome().await, None),
        None => (outcome, note),
    };
    count(hub, outcome);
    let (status, message) = match outcome {
        Ok(()) => ("success", "Message delivered"),
        Err(Undelivered::NotConnected) => ("partial", Undelivered::NotConnected.text()),
        Err(Undelivered::QueueFull) => return ApiError::QueueFull.answer(out, persist),
        Err(Undelivered::OverBudget) => return ApiError::OverBudget.answer(out, persist),
        Err(Undelivered::ClusterUnavailable) => {
            return ApiError::ClusterUnavailable.answer(out, persist)
        }
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
    if let Some(note) = note {
        write_note(json, note);
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
    /// What the mailbox did with it, when on and the item was not delivered.
    note: Option<Result<(), NotKept>>,
}

/// A device the batch has items for, while some of them wait for room in its queue.
struct Waiting {
    link: Arc<DeviceLink>,
    /// The last item of this batch that entered the device's queue.
    last_queued: Option<usize>,
    /// Items that found the queue full behind this batch's own frames, in index order.
    items: VecDeque<(usize, Outbound)>,
}

impl Waiting {
    /// Moves waiting items into the queue while it has room. Returns false once nothing
    /// is left to wait for.
    fn advance(
        &mut self,
        hub: &Hub,
        user: &UserId,
        slot: &AckSlot,
        results: &mut [ItemResult],
    ) -> bool {
        while let Some((index, item)) = self.items.pop_front() {
            let why = match self.link.try_push(item) {
                Ok(()) => {
                    self.last_queued = Some(index);
                    mark(results, index, Ok(()));
                    continue;
                }
                Err((PushError::Full, item)) if self.has_frames_in_queue(slot) => {
                    // Room comes as our own frames are written: wait for it.
                    self.items.push_front((index, item));
                    return true;
                }
                Err((PushError::Ended, item)) if hub.mailbox.is_on() => {
                    // The device left: this item and those behind it go the way of any push
                    // to an away device (the mailbox), in order.
                    let rest: Vec<_> = std::iter::once((index, item))
                        .chain(self.items.drain(..))
                        .collect();
                    for (index, item) in rest {
                        mark(results, index, routed(hub.deliver(user, None, item)));
                    }
                    return false;
                }
                // The queue is full of other traffic, or the device left.
                Err((PushError::Full, _)) => Undelivered::QueueFull,
                Err((PushError::Ended, _)) => Undelivered::NotConnected,
            };
            mark(results, index, Err(why));
            for (index, _) in self.items.drain(..) {
                mark(results, index, Err(why));
            }
        }
        false
    }

    /// True while a frame this batch queued for the device is not written yet: frames leave
    /// a queue in order, so the last one tells.
    fn has_frames_in_queue(&self, slot: &AckSlot) -> bool {
        self.last_queued.is_some_and(|index| !slot.resolved(index))
    }
}

/// A batch item's outcome from what `Hub::deliver` did with it: queued or in the mailbox's
/// hands is Ok (its acknowledgement tells the rest).
fn routed(r: Routed) -> Result<(), Undelivered> {
    match r {
        Routed::Queued | Routed::Kept | Routed::NotKept => Ok(()),
        Routed::Full => Err(Undelivered::QueueFull),
        Routed::NotConnected => Err(Undelivered::NotConnected),
    }
}

fn mark(results: &mut [ItemResult], index: usize, outcome: Result<(), Undelivered>) {
    if let Some(item) = results.get_mut(index) {
        item.queued = outcome.is_ok();
        item.outcome = outcome;
    }
}

/// Starts `/sse/push/batch`: validates `body`, pays for the answer and queues every frame
/// it can without waiting. Err: the refusal to answer with.
///
/// A batch never fails against itself: an item that finds its device's queue full of this
/// batch's own earlier frames waits until they are written and then goes in, in index order;
/// `queue_full` means the queue was full of other traffic. The wait is bounded by
/// `pong_timeout_secs` without progress, the time after which a device that stopped reading
/// is dropped anyway.
pub(crate) fn batch_start(
    body: &[u8],
    hub: &Hub,
    scratch: &mut Scratch,
) -> Result<BatchInFlight, ApiError> {
    let envelopes = envelope::parse_batch(body, hub.config.max_batch).map_err(ApiError::from)?;
    // The answer lists every item, so it is paid for before anything is delivered: a batch
    // whose results would not fit the budget is refused whole, never half answered.
    let answer_bytes = ANSWER_HEAD_BYTES
        + envelopes
            .iter()
            .map(|env| {
                // A rerouted item names its account, at most as long as a user id.
                RESULT_FIXED_BYTES + 2 * json::escaped_len(&env.user_id).max(MAX_USER_ID_BYTES)
            })
            .sum::<usize>()
        + if hub.mailbox.is_on() {
            envelopes.len() * RESULT_NOTE_BYTES
        } else {
            0
        };
    let Ok(reply) = hub.budget.charge(answer_bytes, Use::Reply) else {
        return Err(ApiError::OverBudget);
    };
    scratch.reply = Some(reply);
    // Everything is queued before anything is awaited: items for one device enter its queue
    // in index order, and distinct devices drain their queues concurrently.
    let slot = AckSlot::new(envelopes.len());
    let mut results = Vec::with_capacity(envelopes.len());
    let mut waiting: Vec<(UserId, Waiting)> = Vec::new();
    let mut last_queued: Vec<(UserId, usize)> = Vec::new();
    #[cfg(feature = "cluster")]
    let mut elsewhere = super::remote::BatchElsewhere::default();
    for (index, env) in envelopes.iter().enumerate() {
        let target = target(env, hub, scratch);
        results.push(ItemResult {
            user_id: env.user_id.clone(),
            routed_to: target.routed.then(|| target.user.clone()),
            queued: false,
            outcome: Err(Undelivered::NotConnected),
            note: None,
        });
        let cid = correlation_id(env);
        let device = hub.devices.get(&target.user);
        #[cfg(feature = "cluster")]
        if device.is_none() && elsewhere.take(index, env, &cid, &target.user, hub) {
            continue;
        }
        if device.is_none() && hub.mailbox.is_on() {
            // Away: kept or refused by the mailbox; the acknowledgement tells which.
            if let Some(ack) = slot.ack(index) {
                let outcome = match frame_to_keep(env, &cid, hub, scratch, ack) {
                    Ok((f, ack)) => deliver(hub, &target.user, None, f, Some(ack)),
                    Err(()) => Ok(()),
                };
                mark(&mut results, index, outcome);
            }
            continue;
        }
        let (Some(ack), Some(device)) = (slot.ack(index), device) else {
            continue;
        };
        // Spliced only for a connected device (or one the mailbox keeps for): a frame nobody
        // takes costs no budget.
        let frame = match frame(env, &cid, hub, scratch, Use::Frame) {
            Ok(frame) => frame,
            Err(why) => {
                mark(&mut results, index, Err(why));
                continue;
            }
        };
        let item = Outbound {
            frame: frame.text,
            ack: Some(ack),
            charge: frame.charge,
            source: Source::Push,
        };
        // Once one item of a device waits, the later ones wait behind it (index order).
        if let Some((_, w)) = waiting.iter_mut().find(|(u, _)| *u == target.user) {
            w.items.push_back((index, item));
            continue;
        }
        let outcome = match device.link.try_push(item) {
            Ok(()) => Ok(()),
            Err((PushError::Full, item)) => {
                let last = last_queued
                    .iter()
                    .rev()
                    .find(|(u, _)| *u == target.user)
                    .map(|(_, i)| *i);
                let mut w = Waiting {
                    link: device.link,
                    last_queued: last,
                    items: VecDeque::from([(index, item)]),
                };
                if w.has_frames_in_queue(&slot) {
                    waiting.push((target.user, w));
                    continue;
                }
                w.items.clear();
                Err(Undelivered::QueueFull)
            }
            // Gone since the lookup: the way of any push to an away device.
            Err((PushError::Ended, item)) if hub.mailbox.is_on() => {
                routed(hub.deliver(&target.user, None, item))
            }
            Err((PushError::Ended, _)) => Err(Undelivered::NotConnected),
        };
        if outcome.is_ok() {
            last_queued.push((target.user, index));
        }
        mark(&mut results, index, outcome);
    }
    Ok(BatchInFlight {
        slot,
        results,
        waiting,
        answer_bytes,
        #[cfg(feature = "cluster")]
        remote: elsewhere.start(hub),
    })
}

/// A batch whose frames are queued, or waiting behind the batch's own: it needs its request
/// body no more.
pub(crate) struct BatchInFlight {
    slot: Arc<AckSlot>,
    results: Vec<ItemResult>,
    waiting: Vec<(UserId, Waiting)>,
    /// What its answer was paid for.
    answer_bytes: usize,
    /// Its items whose devices are on other nodes of the cluster.
    #[cfg(feature = "cluster")]
    remote: super::remote::RemoteBatch,
}

/// Finishes `/sse/push/batch`: waits until every queued frame is written (or lost), writes
/// the answer into `out` and returns its status.
pub(crate) async fn batch_finish(
    batch: BatchInFlight,
    hub: &Hub,
    out: &mut Vec<u8>,
    persist: Persist,
) -> u16 {
    let BatchInFlight {
        slot,
        mut results,
        mut waiting,
        answer_bytes,
        #[cfg(feature = "cluster")]
        remote,
    } = batch;
    let patience = secs(hub.config.pong_timeout_secs);
    while !waiting.is_empty() {
        waiting.retain_mut(|(user, w)| w.advance(hub, user, &slot, &mut results));
        if waiting.is_empty() {
            break;
        }
        if timeout(patience, slot.progressed()).await.is_err() {
            // No frame of this batch was written for that long: the devices are stuck.
            for (_, w) in waiting.drain(..) {
                for (index, _) in w.items {
                    mark(&mut results, index, Err(Undelivered::QueueFull));
                }
            }
        }
    }
    slot.wait().await;
    #[cfg(feature = "cluster")]
    for (index, outcome) in remote.outcomes().await {
        if let Some(item) = results.get_mut(index) {
            item.outcome = outcome;
        }
    }

    let mut json = Vec::with_capacity(64 + results.len() * 64);
    json.extend_from_slice(b"{\"results\":[");
    for (index, item) in results.iter_mut().enumerate() {
        if item.queued {
            match slot.outcome(index) {
                Outcome::Delivered => {}
                other => {
                    item.outcome = Err(Undelivered::NotConnected);
                    item.note = mailbox_note(hub, other);
                }
            }
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
        if let Some(note) = item.note {
            write_note(&mut json, note);
        }
        json.push(b'}');
    }
    json.extend_from_slice(b"]}");
    // Exactly what was paid for (the buffer would otherwise grow by doubling).
    out.reserve_exact(answer_bytes.saturating_sub(out.len()));
    response::write_json(out, 200, &json, persist, &[], false);
    200
}

//! Pushes, batches and sends for a device on another node of the cluster, and what the
//! device's node does with them (docs/protocol.md §21). The rules are the local ones: a push
//! is `success` once its frame is on the device's socket, `partial` when no node has the
//! device; what is new is `503 cluster_unavailable` when the other nodes cannot be asked,
//! which is never guessed into a `partial`.
//!
//! The hooks in `push.rs` and `send.rs` call the first half when the target is not connected
//! here and a cluster is configured; `net::cluster` calls the second half for requests that
//! arrive on a local device's subjects.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Duration};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::error::{ApiError, Undelivered};
use crate::hub::ack::{AckSlot, Outcome};
use crate::hub::budget::{heap_bytes, Charge, Use};
use crate::hub::cluster::{
    Pending, PushReply, Relay, Remote, SendReply, Unreachable, COUNTERS, REMOTE_SESSION,
};
use crate::hub::link::{DeviceLink, Outbound, PushError, QueueLimits, Source};
use crate::hub::streams::{Answers, OpenError};
use crate::hub::Hub;
use crate::ops::settings::secs;
use crate::wire::close::Close;
use crate::wire::cluster::{
    self, holder_yields, Claim, ClaimReply, Delivery, SendRefusal, SendRequest, FRAME_PREFIX_BYTES,
};
use crate::wire::envelope::{self, CorrelationId, Envelope, UserId};
use crate::wire::limits::MAX_EVENT_TYPE_BYTES;

/// A stream's `event_type` (the same type as `send::EventType`).
type EventType = Option<heapless::String<MAX_EVENT_TYPE_BYTES>>;

/// Appends `env`'s frame to `payload` behind a push request's length prefix. Err: the frame
/// is larger than a request can be.
fn append_frame(
    env: &Envelope<'_>,
    cid: &str,
    payload: &mut Vec<u8>,
    max_payload: usize,
) -> Result<(), Unreachable> {
    let start = payload.len();
    payload.extend_from_slice(&[0; FRAME_PREFIX_BYTES]);
    envelope::write_device_frame(env, cid, payload);
    let len = payload.len() - start - FRAME_PREFIX_BYTES;
    if payload.len() - start > max_payload {
        payload.truncate(start);
        log::warn!(
            "cluster: a frame of {len} bytes is larger than the NATS servers' max_payload ({max_payload})"
        );
        return Err(Unreachable::TooLarge);
    }
    let prefix = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    payload[start..start + FRAME_PREFIX_BYTES].copy_from_slice(&prefix);
    Ok(())
}

/// What a push answers when the cluster had no answer.
fn unreachable(why: Unreachable) -> Undelivered {
    COUNTERS.unreachable(why);
    Undelivered::ClusterUnavailable
}

fn delivered(d: Delivery) -> Result<(), Undelivered> {
    match d {
        Delivery::Delivered => Ok(()),
        Delivery::NotConnected => Err(Undelivered::NotConnected),
        Delivery::QueueFull => Err(Undelivered::QueueFull),
        Delivery::OverBudget => Err(Undelivered::OverBudget),
    }
}

/// A push whose device is on another node: the request on its way.
pub(crate) struct RemotePush {
    reply: Pending<Result<PushReply, Unreachable>>,
    /// Pays for the frame until the device's node answered.
    _charge: Charge,
}

impl RemotePush {
    /// Waits for the device's node: the push's outcome, with the local push's meanings.
    pub(crate) async fn outcome(self) -> Result<(), Undelivered> {
        match self.reply.await {
            Ok(PushReply::Nowhere) => {
                COUNTERS.no_responders.inc();
                Err(Undelivered::NotConnected)
            }
            Ok(PushReply::Delivered(outcomes)) => match outcomes.first() {
                Some(d) => delivered(*d),
                None => Err(unreachable(Unreachable::Malformed)),
            },
            Err(why) => Err(unreachable(why)),
        }
    }
}

/// Starts a push for `user`, not connected here (the caller looked), on another node when a
/// cluster is configured; `None`: deliver it here. Err: answered at once (the cluster is down, the
/// frame does not fit the budget or a request).
pub(crate) fn push_elsewhere(
    env: &Envelope<'_>,
    cid: &str,
    user: &UserId,
    hub: &Hub,
) -> Option<Result<RemotePush, Undelivered>> {
    let cluster = hub.cluster.as_ref()?;
    if !cluster.is_up() {
        return Some(Err(unreachable(Unreachable::Down)));
    }
    let mut payload = Vec::new();
    cluster.request_header(&mut payload);
    if let Err(why) = append_frame(env, cid, &mut payload, cluster.max_payload()) {
        return Some(Err(unreachable(why)));
    }
    let Ok(charge) = hub
        .budget
        .charge(heap_bytes(payload.capacity()), Use::Frame)
    else {
        return Some(Err(Undelivered::OverBudget));
    };
    COUNTERS.pushes.inc();
    Some(Ok(RemotePush {
        reply: cluster.push(user, Bytes::from(payload), 1),
        _charge: charge,
    }))
}

/// Batch items and their outcomes, by index.
type Outcomes = Vec<(usize, Result<(), Undelivered>)>;

/// One request's worth of a batch's items for one device on another node.
struct Chunk {
    user: UserId,
    /// The items, in index order.
    indices: Vec<usize>,
    payload: Vec<u8>,
    charge: Charge,
}

/// The items of a batch whose devices are on other nodes, gathered per device while the
/// batch is read: each device's items go in one request (more when they exceed the servers'
/// `max_payload`, sent one after the other), so they arrive in index order.
#[derive(Default)]
pub(crate) struct BatchElsewhere {
    chunks: Vec<Chunk>,
    /// Items answered without a request.
    settled: Outcomes,
}

impl BatchElsewhere {
    /// Takes item `index` for `user`, not connected here (the caller looked), when a cluster
    /// is configured; false: deliver it here.
    pub(crate) fn take(
        &mut self,
        index: usize,
        env: &Envelope<'_>,
        cid: &str,
        user: &UserId,
        hub: &Hub,
    ) -> bool {
        let Some(cluster) = hub.cluster.as_ref() else {
            return false;
        };
        if !cluster.is_up() {
            self.settled
                .push((index, Err(unreachable(Unreachable::Down))));
            return true;
        }
        let max = cluster.max_payload();
        let mut at = match self.chunks.iter().rposition(|c| c.user == *user) {
            Some(at) => at,
            None => {
                let mut payload = Vec::new();
                cluster.request_header(&mut payload);
                self.chunks.push(Chunk {
                    user: user.clone(),
                    indices: Vec::new(),
                    payload,
                    charge: hub.budget.empty(),
                });
                self.chunks.len() - 1
            }
        };
        let mut start = self.chunks[at].payload.len();
        if let Err(why) = append_frame(env, cid, &mut self.chunks[at].payload, max) {
            self.settled.push((index, Err(unreachable(why))));
            return true;
        }
        if self.chunks[at].payload.len() > max {
            // Over the servers' limit with this frame: it starts the device's next request.
            let tail = self.chunks[at].payload.split_off(start);
            let mut payload = Vec::with_capacity(tail.len() + 80);
            cluster.request_header(&mut payload);
            start = payload.len();
            payload.extend_from_slice(&tail);
            self.chunks.push(Chunk {
                user: user.clone(),
                indices: Vec::new(),
                payload,
                charge: hub.budget.empty(),
            });
            at = self.chunks.len() - 1;
        }
        let chunk = &mut self.chunks[at];
        let paid = heap_bytes(chunk.payload.capacity());
        if chunk.charge.grow_to(paid, Use::Frame).is_err() {
            chunk.payload.truncate(start);
            self.settled.push((index, Err(Undelivered::OverBudget)));
            return true;
        }
        chunk.indices.push(index);
        true
    }

    /// Sends every device's requests, devices at once and each device's one after the other.
    pub(crate) fn start(self, hub: &Hub) -> RemoteBatch {
        let BatchElsewhere {
            mut chunks,
            settled,
        } = self;
        chunks.retain(|c| !c.indices.is_empty());
        let (Some(cluster), false) = (hub.cluster.clone(), chunks.is_empty()) else {
            return RemoteBatch {
                task: None,
                indices: Vec::new(),
                settled,
            };
        };
        let indices: Vec<usize> = chunks.iter().flat_map(|c| c.indices.clone()).collect();
        let mut users: Vec<Vec<Chunk>> = Vec::new();
        for chunk in chunks {
            match users.iter_mut().find(|u| u[0].user == chunk.user) {
                Some(u) => u.push(chunk),
                None => users.push(vec![chunk]),
            }
        }
        let task = tokio::spawn(async move {
            let per_user = users
                .into_iter()
                .map(|chunks| push_chunks(Arc::clone(&cluster), chunks));
            futures_util::future::join_all(per_user)
                .await
                .into_iter()
                .flatten()
                .collect()
        });
        RemoteBatch {
            task: Some(task),
            indices,
            settled,
        }
    }
}

/// Sends one device's chunks in order; the outcome of each item.
async fn push_chunks(cluster: Arc<dyn Remote>, chunks: Vec<Chunk>) -> Outcomes {
    let mut out = Vec::new();
    for chunk in chunks {
        let Chunk {
            user,
            indices,
            payload,
            charge,
        } = chunk;
        COUNTERS.pushes.inc();
        let reply = cluster
            .push(&user, Bytes::from(payload), indices.len())
            .await;
        drop(charge);
        match reply {
            Ok(PushReply::Delivered(outcomes)) if outcomes.len() == indices.len() => {
                out.extend(
                    indices
                        .into_iter()
                        .zip(outcomes)
                        .map(|(i, d)| (i, delivered(d))),
                );
            }
            Ok(PushReply::Delivered(_)) => {
                let why = unreachable(Unreachable::Malformed);
                out.extend(indices.into_iter().map(|i| (i, Err(why))));
            }
            Ok(PushReply::Nowhere) => {
                COUNTERS.no_responders.inc();
                out.extend(
                    indices
                        .into_iter()
                        .map(|i| (i, Err(Undelivered::NotConnected))),
                );
            }
            Err(why) => {
                let why = unreachable(why);
                out.extend(indices.into_iter().map(|i| (i, Err(why))));
            }
        }
    }
    out
}

/// The requests of a batch's items on other nodes, on their way.
pub(crate) struct RemoteBatch {
    task: Option<JoinHandle<Outcomes>>,
    /// The items the task answers for.
    indices: Vec<usize>,
    settled: Outcomes,
}

impl RemoteBatch {
    /// Waits for the other nodes: each remote item's index and outcome.
    pub(crate) async fn outcomes(self) -> Outcomes {
        let RemoteBatch {
            task,
            indices,
            mut settled,
        } = self;
        if let Some(task) = task {
            match task.await {
                Ok(outcomes) => settled.extend(outcomes),
                // The task cannot fail short of a bug; its items then had no answer.
                Err(_) => settled.extend(
                    indices
                        .into_iter()
                        .map(|i| (i, Err(Undelivered::ClusterUnavailable))),
                ),
            }
        }
        settled
    }
}

/// A `/sse/send` whose device is on another node: the stream's entry here, and the request.
pub(crate) struct Elsewhere {
    cid: CorrelationId,
    event_type: EventType,
    answers: Answers,
    device: Arc<DeviceLink>,
    reply: Pending<Result<SendReply, Unreachable>>,
    /// Pays for the request's frame until the device's node answered.
    _charge: Charge,
}

/// Starts a `/sse/send` for `user`, not connected here (the caller looked), on another node
/// when a cluster is configured (its 409 and 503 for this node's table were checked already); `None`: serve
/// it here. Err: the refusal to answer with at once.
pub(crate) fn send_elsewhere(
    env: &Envelope<'_>,
    cid: &CorrelationId,
    user: &UserId,
    event_type: &EventType,
    hub: &Hub,
) -> Option<Result<Elsewhere, ApiError>> {
    let cluster = hub.cluster.as_ref()?;
    if !cluster.is_up() {
        COUNTERS.unreachable(Unreachable::Down);
        return Some(Err(ApiError::ClusterUnavailable));
    }
    let mut payload = Vec::new();
    cluster.request_header(&mut payload);
    cluster::encode_send(
        SendRequest::Open {
            cid: cid.as_str(),
            frame: b"",
        },
        &mut payload,
    );
    envelope::write_device_frame(env, cid, &mut payload);
    if payload.len() > cluster.max_payload() {
        COUNTERS.unreachable(Unreachable::TooLarge);
        return Some(Err(ApiError::ClusterUnavailable));
    }
    let Ok(charge) = hub
        .budget
        .charge(heap_bytes(payload.capacity()), Use::Frame)
    else {
        return Some(Err(ApiError::OverBudget));
    };
    // An entry here as for a local device, so that 409 and max_pending_sends count this
    // node's streams whatever node their devices are on.
    let rx = match hub
        .streams
        .open(cid, user, REMOTE_SESSION, hub.stream_limits())
    {
        Ok(rx) => rx,
        Err(e) => return Some(Err(ApiError::from(e))),
    };
    let answers = Answers::new(rx, cid.clone(), hub.streams);
    let Some(tx) = hub.streams.route(cid, user, REMOTE_SESSION) else {
        return Some(Err(ApiError::TooManySends));
    };
    // Stands for the device's session, which lives on the other node.
    let device = Arc::new(DeviceLink::new(QueueLimits {
        frames: 1,
        bytes: 0,
    }));
    let relay = Relay {
        tx,
        cid: cid.clone(),
        streams: hub.streams,
        budget: hub.budget,
        device: Arc::clone(&device),
    };
    COUNTERS.sends.inc();
    let reply = cluster.open_send(user, Bytes::from(payload), relay);
    Some(Ok(Elsewhere {
        cid: cid.clone(),
        event_type: event_type.clone(),
        answers,
        device,
        reply,
        _charge: charge,
    }))
}

/// What a send to another node came to.
pub(crate) enum Settled {
    /// The stream is open: its answers come on `answers`, and `device` ends when the device
    /// leaves its node.
    Opened {
        /// The request's correlation id.
        cid: CorrelationId,
        /// The request's `event_type`.
        event_type: EventType,
        /// The stream's entry here.
        answers: Answers,
        /// Stands for the device's session.
        device: Arc<DeviceLink>,
    },
    /// Refused: answered as an ordinary error.
    Refused(ApiError),
    /// No node holds the device: a stream whose only event says so.
    NotConnected {
        /// The request's correlation id.
        cid: CorrelationId,
        /// The request's `event_type`.
        event_type: EventType,
    },
}

impl Elsewhere {
    /// Waits for the device's node: the stream opens, or the request is answered as the
    /// local one would be.
    pub(crate) async fn settle(self, hub: &Hub) -> Settled {
        let Elsewhere {
            cid,
            event_type,
            answers,
            device,
            reply,
            _charge,
        } = self;
        let why = match reply.await {
            Ok(SendReply::Opened) => {
                return Settled::Opened {
                    cid,
                    event_type,
                    answers,
                    device,
                }
            }
            Ok(SendReply::Nowhere) => {
                COUNTERS.no_responders.inc();
                None
            }
            Ok(SendReply::Refused(refusal)) => match refusal {
                SendRefusal::NotConnected => None,
                SendRefusal::InUse => Some(ApiError::CorrelationInUse),
                SendRefusal::TooMany => Some(ApiError::TooManySends),
                SendRefusal::QueueFull => {
                    hub.metrics.pushes_queue_full.inc();
                    Some(ApiError::QueueFull)
                }
                SendRefusal::OverBudget => Some(ApiError::OverBudget),
            },
            Err(why) => {
                COUNTERS.unreachable(why);
                Some(ApiError::ClusterUnavailable)
            }
        };
        // The id is free before the answer, so a retry right after it is no 409.
        drop(answers);
        match why {
            Some(err) => Settled::Refused(err),
            None => Settled::NotConnected { cid, event_type },
        }
    }
}

// ---- On the device's node: requests from the other nodes. ----

/// A push request from another node: its frames queued for the device, or its answer.
pub(crate) struct ServePush {
    link: Arc<DeviceLink>,
    slot: Arc<AckSlot>,
    outcomes: Vec<Delivery>,
    /// Frames that entered the queue: their acknowledgement has the last word.
    queued: Vec<bool>,
    /// Frames that found the queue full behind this request's own, in order.
    waiting: VecDeque<(usize, Outbound)>,
    last_queued: Option<usize>,
    patience: Duration,
    /// Nothing can be answered (the request does not parse): an empty reply, which the
    /// sender reads as malformed.
    malformed: bool,
    /// Pays for the request's payload, which the frames share, until all are written.
    _charge: Charge,
}

/// Queues the frames of a push request from another node for the device behind `link`,
/// without waiting, in order. Call [`ServePush::finish`] for the reply.
pub(crate) fn serve_push(hub: &Hub, link: &Arc<DeviceLink>, payload: &Bytes) -> ServePush {
    let frames = cluster::frame_ranges(payload).and_then(|ranges| {
        ranges
            .into_iter()
            .map(|r| Utf8Bytes::try_from(payload.slice(r)).map_err(|_| cluster::Malformed))
            .collect::<Result<Vec<Utf8Bytes>, _>>()
    });
    let frames = frames.unwrap_or_default();
    let charge = hub.budget.charge(heap_bytes(payload.len()), Use::Remote);
    let mut serving = ServePush {
        link: Arc::clone(link),
        slot: AckSlot::new(frames.len()),
        outcomes: vec![Delivery::NotConnected; frames.len()],
        queued: vec![false; frames.len()],
        waiting: VecDeque::with_capacity(frames.len()),
        last_queued: None,
        patience: secs(hub.config.pong_timeout_secs),
        malformed: frames.is_empty(),
        _charge: hub.budget.empty(),
    };
    match charge {
        Ok(charge) => serving._charge = charge,
        Err(_) => {
            serving.outcomes.fill(Delivery::OverBudget);
            return serving;
        }
    }
    for (index, frame) in frames.into_iter().enumerate() {
        let item = Outbound {
            frame,
            ack: serving.slot.ack(index),
            charge: hub.budget.empty(),
            source: Source::Push,
        };
        serving.waiting.push_back((index, item));
    }
    serving.advance();
    serving
}

impl ServePush {
    /// Moves waiting frames into the queue while it has room; false once nothing waits.
    fn advance(&mut self) -> bool {
        while let Some((index, item)) = self.waiting.pop_front() {
            let why = match self.link.try_push(item) {
                Ok(()) => {
                    self.queued[index] = true;
                    self.last_queued = Some(index);
                    continue;
                }
                // Room comes as this request's own frames are written: wait for it.
                Err((PushError::Full, item))
                    if self.last_queued.is_some_and(|i| !self.slot.resolved(i)) =>
                {
                    self.waiting.push_front((index, item));
                    return true;
                }
                Err((PushError::Full, _)) => Delivery::QueueFull,
                Err((PushError::Ended, _)) => Delivery::NotConnected,
            };
            self.outcomes[index] = why;
            for (index, _) in self.waiting.drain(..) {
                self.outcomes[index] = why;
            }
        }
        false
    }

    /// Waits until every queued frame is written (or lost): the reply, one outcome per
    /// frame, and whether every frame was delivered.
    pub(crate) async fn finish(mut self) -> (Bytes, bool) {
        if self.malformed {
            return (Bytes::new(), false);
        }
        while self.advance() {
            if timeout(self.patience, self.slot.progressed())
                .await
                .is_err()
            {
                // No frame of this request was written for that long: the device is stuck.
                for (index, _) in self.waiting.drain(..) {
                    self.outcomes[index] = Delivery::QueueFull;
                }
            }
        }
        self.slot.wait().await;
        for (index, queued) in self.queued.iter().enumerate() {
            if *queued {
                // Kept by this node's mailbox, or not: not delivered, as far as the sender is
                // concerned (the remote answer has no `queued` note).
                self.outcomes[index] = match self.slot.outcome(index) {
                    Outcome::Delivered => Delivery::Delivered,
                    Outcome::Lost | Outcome::Kept | Outcome::NotKept(_) => Delivery::NotConnected,
                };
            }
        }
        let all = self.outcomes.iter().all(|d| *d == Delivery::Delivered);
        (Bytes::from(cluster::encode_deliveries(&self.outcomes)), all)
    }
}

/// Opens a stream for a send request from another node: registers `cid` for the device's
/// session `session` and queues `frame`. Err: the refusal to answer with.
pub(crate) fn serve_send(
    hub: &Hub,
    user: &UserId,
    session: u64,
    link: &DeviceLink,
    cid: &str,
    frame: Bytes,
) -> Result<Answers, SendRefusal> {
    let Ok(cid) = CorrelationId::try_from(cid) else {
        return Err(SendRefusal::NotConnected);
    };
    let Ok(frame) = Utf8Bytes::try_from(frame) else {
        return Err(SendRefusal::NotConnected);
    };
    let refusal = |e| match e {
        OpenError::InUse => SendRefusal::InUse,
        OpenError::Full => SendRefusal::TooMany,
    };
    hub.streams.check(&cid).map_err(refusal)?;
    if link.has_ended() {
        return Err(SendRefusal::NotConnected);
    }
    let Ok(charge) = hub.budget.charge(heap_bytes(frame.len()), Use::Remote) else {
        return Err(SendRefusal::OverBudget);
    };
    let rx = hub
        .streams
        .open(&cid, user, session, hub.stream_limits())
        .map_err(refusal)?;
    let answers = Answers::new(rx, cid, hub.streams);
    let item = Outbound {
        frame,
        ack: None,
        charge,
        source: Source::Send,
    };
    match link.push(item) {
        Ok(()) => Ok(answers),
        Err(PushError::Full) => Err(SendRefusal::QueueFull),
        Err(PushError::Ended) => Err(SendRefusal::NotConnected),
    }
}

/// The close a session sends when another session of its user id wins.
pub(crate) fn losing_close(hub: &Hub) -> Close {
    if hub.replace_duplicates() {
        Close::Replaced
    } else {
        Close::AlreadyConnected
    }
}

/// Answers another node's claim for the user id the session behind `link` holds (as
/// `holder`): closes the session when the claimer wins.
pub(crate) fn settle_claim(
    hub: &Hub,
    link: &DeviceLink,
    holder: &Claim,
    claim: &Claim,
) -> ClaimReply {
    if holder_yields(hub.replace_duplicates(), holder, claim) {
        lose(hub, link);
        ClaimReply::Released
    } else {
        ClaimReply::Taken
    }
}

/// Closes the session behind `link`: a session of its user id on another node won.
pub(crate) fn lose(hub: &Hub, link: &DeviceLink) {
    let why = losing_close(hub);
    if why == Close::AlreadyConnected {
        hub.metrics.devices_refused_duplicate.inc();
    }
    COUNTERS.duplicates_closed.inc();
    link.kick_with(why);
}

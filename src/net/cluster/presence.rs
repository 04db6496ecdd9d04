//! A local device's presence in the cluster (docs/protocol.md §21.2): while its session
//! lives, one subscription to its subjects. Through it the other nodes push to the device,
//! open streams with it and claim its user id; when the session ends, or this node's
//! connection to NATS drops, the subscription goes and the device is present nowhere.

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::{Message, Subject};
use bytes::Bytes;
use futures_util::future::OptionFuture;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, timeout, Instant};

use super::Cluster;
use crate::app::remote;
use crate::hub::budget::{heap_bytes, Charge, Use};
use crate::hub::cluster::{Pending, Unreachable, COUNTERS};
use crate::hub::devices::Registration;
use crate::hub::link::DeviceLink;
use crate::hub::streams::{Answers, StreamEvent};
use crate::hub::Hub;
use crate::ops::memory::PRESENCE_BYTES;
use crate::wire::close::Close;
use crate::wire::cluster::{
    decode_claim, decode_send, device_subject, encode_claim, encode_stream, parse_device_subject,
    presence_subject, split_request_header, Claim, ClaimReply, Op, SendRefusal, SendRequest, Stamp,
    StreamMsg,
};
use crate::wire::envelope::UserId;

/// Beyond `cluster_timeout_secs`, how long a new session waits for its claim to settle.
const SETTLE_SLACK: Duration = Duration::from_secs(1);
/// Pushes and sends held while a new session's claim is in flight (a round trip to NATS),
/// each paid for from the memory budget; more, or what the budget has no room for, are dropped
/// unanswered, and their senders time out with 503.
const HELD_WHILE_CLAIMING: usize = 16;

/// A device's presence; dropping it ends it (the session's end does too).
pub(crate) struct Presence(JoinHandle<()>);

impl Drop for Presence {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a claim found.
type Claimed = Result<Option<ClaimReply>, Unreachable>;

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Makes the device of the session `reg` present in the cluster and claims its user id from
/// the other nodes (docs/protocol.md §21.5): returns once the claim is settled, before the
/// session serves. When another node's session wins, or the budget has no room, the session
/// is kicked with the close it must send. `None` without a cluster.
pub(crate) async fn arrive(hub: &Arc<Hub>, user: &UserId, reg: &Registration) -> Option<Presence> {
    let remote: Arc<dyn Any + Send + Sync> = hub.cluster.clone()?;
    let cluster = remote.downcast::<Cluster>().ok()?;
    let Ok(charge) = hub.budget.charge(PRESENCE_BYTES, Use::Session) else {
        log::warn!("device {user}: refused, memory budget exhausted");
        reg.link.kick_with(Close::OverBudget);
        return None;
    };
    let me = Claim {
        established: false,
        stamp: Stamp {
            nanos: unix_nanos(),
            node: cluster.node.clone(),
            session: reg.session,
        },
    };
    let (settled_tx, settled_rx) = oneshot::channel();
    let within = cluster.timeout + SETTLE_SLACK;
    let task = tokio::spawn(present(
        cluster,
        Arc::clone(hub),
        user.clone(),
        Arc::clone(&reg.link),
        me,
        settled_tx,
        charge,
    ));
    let mut shutdown = hub.shutdown.clone();
    tokio::select! {
        _ = timeout(within, settled_rx) => {}
        // The session closes with 1001 right away; its presence ends with it.
        () = crate::hub::stopping(&mut shutdown) => {}
    }
    Some(Presence(task))
}

fn claim_request(cluster: &Cluster, user: &UserId, me: &Claim) -> Pending<Claimed> {
    let mut payload = Vec::with_capacity(64);
    cluster.header(&mut payload);
    encode_claim(me, &mut payload);
    COUNTERS.claims.inc();
    let client = cluster.client.clone();
    let subject = device_subject(user, Op::Claim);
    let request = async_nats::Request::new()
        .payload(payload.into())
        .timeout(Some(cluster.timeout));
    Box::pin(async move {
        match client.send_request(subject, request).await {
            Ok(msg) => ClaimReply::decode(&msg.payload)
                .map(Some)
                .map_err(|_| Unreachable::Malformed),
            Err(e) => super::map_request_error(e.kind()).map(|()| None),
        }
    })
}

/// The presence of one device, for the session's life.
async fn present(
    cluster: Arc<Cluster>,
    hub: Arc<Hub>,
    user: UserId,
    link: Arc<DeviceLink>,
    mut me: Claim,
    settled: oneshot::Sender<()>,
    _charge: Charge,
) {
    let mut settled = Some(settled);
    // Counted present from the settled claim to the end of the subscription.
    let mut present = None;
    let subscribed = tokio::select! {
        r = cluster.client.subscribe(presence_subject(&user)) => r,
        () = link.gone() => return,
    };
    let mut sub = match subscribed {
        Ok(sub) => sub,
        Err(e) => {
            // Only a closed client fails here; the device is then served as a local one.
            log::warn!("cluster: device {user} cannot be made present: {e}");
            return;
        }
    };
    let mut generation = cluster.generation.subscribe();
    generation.mark_unchanged();
    let mut claim: Option<Pending<Claimed>> = None;
    if cluster.is_connected() {
        let mut request = claim_request(&cluster, &user, &me);
        // Polled once here, so the claim is on its way before this presence answers anything
        // (two newcomers then each see the other's claim while their own is in flight).
        match (&mut request).now_or_never() {
            Some(claimed) => on_claimed(&hub, &user, &link, &mut me, &mut settled, claimed),
            None => claim = Some(request),
        }
    } else {
        // Settled without the cluster; claimed again once the link is up.
        me.established = true;
        settled.take().map(|s| s.send(()));
    }
    if me.established {
        present = Some(COUNTERS.present.enter());
    }
    // Pushes and sends that came while the claim was in flight: a session answers for its
    // user id only once it holds it, so the one that loses never answers at all.
    let mut held: Vec<(Message, Charge)> = Vec::new();
    loop {
        tokio::select! {
            // Requests before the claim's answer: what a peer sent first is handled first.
            biased;
            msg = sub.next() => {
                let Some(msg) = msg else { break };
                let claims = msg.subject.ends_with(Op::Claim.token());
                if me.established || claims {
                    serve(&cluster, &hub, &user, &link, &me, msg);
                } else if held.len() < HELD_WHILE_CLAIMING {
                    if let Ok(charge) = hub.budget.charge(heap_bytes(msg.payload.len()), Use::Remote) {
                        held.push((msg, charge));
                    }
                }
            }
            Some(claimed) = OptionFuture::from(claim.as_mut()), if claim.is_some() => {
                claim = None;
                on_claimed(&hub, &user, &link, &mut me, &mut settled, claimed);
                if present.is_none() {
                    present = Some(COUNTERS.present.enter());
                }
                let held = std::mem::take(&mut held);
                if !link.is_kicked() {
                    for (msg, _charge) in held {
                        serve(&cluster, &hub, &user, &link, &me, msg);
                    }
                }
            }
            changed = generation.changed() => {
                if changed.is_err() {
                    break;
                }
                // The link came back: sessions accepted while the nodes could not talk may
                // have duplicates elsewhere.
                if me.established && claim.is_none() && cluster.is_connected() {
                    claim = Some(claim_request(&cluster, &user, &me));
                }
            }
            () = link.gone() => break,
        }
    }
}

fn on_claimed(
    hub: &Hub,
    user: &UserId,
    link: &DeviceLink,
    me: &mut Claim,
    settled: &mut Option<oneshot::Sender<()>>,
    claimed: Claimed,
) {
    match claimed {
        Ok(Some(ClaimReply::Taken)) => {
            log::info!("device {user}: a session on another node keeps the user id");
            remote::lose(hub, link);
        }
        Ok(Some(ClaimReply::Released)) => {
            log::info!("device {user}: took the user id over from another node");
        }
        Ok(None) => {}
        Err(why) => log::info!("device {user}: claim unanswered ({why:?}); kept"),
    }
    me.established = true;
    if let Some(s) = settled.take() {
        let _ = s.send(());
    }
}

fn publish(cluster: &Cluster, reply: Subject, payload: Bytes) {
    let client = cluster.client.clone();
    tokio::spawn(async move {
        if let Err(e) = client.publish(reply, payload).await {
            log::debug!("cluster: reply not sent: {e}");
        }
    });
}

/// Serves one request of another node for this device. Never waits: what takes time (a
/// push's delivery, a stream) goes on in a task of its own, after the frames are queued in
/// the order the requests came.
fn serve(
    cluster: &Arc<Cluster>,
    hub: &Arc<Hub>,
    user: &UserId,
    link: &Arc<DeviceLink>,
    me: &Claim,
    msg: Message,
) {
    let Some((_, op)) = parse_device_subject(&msg.subject) else {
        return;
    };
    let Ok((header, at)) = split_request_header(&msg.payload) else {
        return;
    };
    if cluster.is_stale(&header) {
        COUNTERS.stale.inc();
        log::debug!(
            "cluster: dropped a request for {user} from {} that came after its sender gave up",
            header.node
        );
        return;
    }
    let payload = msg.payload.slice(at..);
    let session = me.stamp.session;
    match op {
        Op::Push => {
            COUNTERS.served_pushes.inc();
            let serving = remote::serve_push(hub, link, &payload);
            let Some(reply) = msg.reply else { return };
            let client = cluster.client.clone();
            let link = Arc::clone(link);
            tokio::spawn(async move {
                let (answer, all_delivered) = serving.finish().await;
                // A session that lost its user id to another one (here or on another node)
                // leaves the answer to the winner, which got the same request: frames it
                // could not write are no `partial` while the winner writes them.
                if link.is_kicked() && !all_delivered {
                    return;
                }
                if let Err(e) = client.publish(reply, answer).await {
                    log::debug!("cluster: push reply not sent: {e}");
                }
            });
        }
        Op::Send => match decode_send(&payload) {
            Ok(SendRequest::Open { cid, frame }) => {
                COUNTERS.served_sends.inc();
                let Some(reply) = msg.reply.clone() else {
                    return;
                };
                let frame = payload.slice_ref(frame);
                let opened = remote::serve_send(hub, user, session, link, cid, frame);
                tokio::spawn(forward(
                    Arc::clone(cluster),
                    reply,
                    opened,
                    Arc::clone(link),
                    cluster.send_timeout,
                ));
            }
            Ok(SendRequest::Close { cid }) => {
                hub.streams.cancel(cid, user, session);
            }
            Err(_) => {}
        },
        Op::Claim => {
            COUNTERS.served_claims.inc();
            let Ok(claim) = decode_claim(&payload) else {
                return;
            };
            let answer = remote::settle_claim(hub, link, me, &claim);
            if answer == ClaimReply::Released {
                log::info!(
                    "device {user}: a session on node {} takes the user id",
                    claim.stamp.node
                );
            }
            if let Some(reply) = msg.reply {
                publish(cluster, reply, Bytes::from_static(answer.encode()));
            }
        }
    }
}

fn stream_msg(msg: StreamMsg<'_>) -> Bytes {
    let mut out = Vec::new();
    encode_stream(msg, &mut out);
    Bytes::from(out)
}

/// Relays the device's answers of a stream opened by another node to that node, until the
/// final one, the device leaving, the stream's close from there, `send_timeout_secs`
/// without an answer, or the link going down.
async fn forward(
    cluster: Arc<Cluster>,
    reply: Subject,
    opened: Result<Answers, SendRefusal>,
    link: Arc<DeviceLink>,
    send_timeout: Duration,
) {
    let client = cluster.client.clone();
    let send = |payload: Bytes| {
        let client = client.clone();
        let reply = reply.clone();
        async move {
            if let Err(e) = client.publish(reply, payload).await {
                log::debug!("cluster: stream message not sent: {e}");
            }
        }
    };
    let mut answers = match opened {
        Ok(answers) => answers,
        Err(why) => {
            send(stream_msg(StreamMsg::Refused(why))).await;
            return;
        }
    };
    send(stream_msg(StreamMsg::Opened)).await;
    let mut connected: watch::Receiver<bool> = cluster.connected.subscribe();
    let mut deadline = Instant::now() + send_timeout;
    loop {
        tokio::select! {
            // Answers first: a final answer that came just before the device left is relayed.
            biased;
            ev = answers.rx.events.recv() => match ev {
                Some(StreamEvent::Message { text, is_final, charge }) => {
                    let payload = stream_msg(StreamMsg::Answer { text: text.as_bytes(), is_final });
                    answers.rx.buffered.taken(text.len());
                    drop(text);
                    send(payload).await;
                    drop(charge);
                    deadline = Instant::now() + send_timeout;
                    if is_final {
                        break;
                    }
                }
                Some(StreamEvent::Unreachable) => break,
                // Closed from the upstream's node (nothing to say), or overflowed here.
                None => {
                    if answers.rx.buffered.overflow().is_some() {
                        send(stream_msg(StreamMsg::Overflowed)).await;
                    }
                    break;
                }
            },
            () = link.gone() => {
                // A session that lost its user id leaves the stream to the winner.
                if !link.is_kicked() {
                    send(stream_msg(StreamMsg::Gone)).await;
                }
                break;
            }
            () = sleep_until(deadline) => break,
            () = Cluster::down(&mut connected) => break,
        }
    }
}

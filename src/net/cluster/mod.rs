//! The node's link to NATS (README "Scaling past one gateway", docs/protocol.md §21): the
//! connection and its state, the peers heard from, and the requests this node makes of the
//! others. `presence` holds each local device's subscription and serves what other nodes
//! ask of it.
//!
//! The link never holds up local work: its state is read from an atomic, a request asked while
//! the link is down is refused at once, one already sent waits at most `cluster_timeout_secs`,
//! and the watchdog's self-check never looks at it.

pub(crate) mod presence;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::client::RequestErrorKind;
use async_nats::{Client, ConnectOptions, Event, Request, StatusCode, Subscriber};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::time::{interval, timeout, Instant};

use crate::hub::cluster::{
    LinkState, Pending, PushReply, Relay, Remote, SendReply, Status, Unreachable, COUNTERS,
};
use crate::hub::streams::Overflow;
use crate::ops::settings::{secs, Config};
use crate::wire::cluster::{
    decode_deliveries, decode_heartbeat, decode_stream, device_subject, encode_heartbeat,
    encode_request_header, encode_send, Beat, Heartbeat, Op, RequestHeader, SendRequest, StreamMsg,
    NODES_SUBJECT,
};
use crate::wire::envelope::UserId;

/// How often a node says it is there.
pub(crate) const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// A peer not heard from for this long is no longer counted.
pub(crate) const PEER_TTL: Duration = Duration::from_secs(15);
/// Most peers remembered; beyond it the one heard from longest ago is forgotten.
pub(crate) const MAX_PEERS: usize = 256;
/// After the link comes back, requests wait (answered 503) until every peer known before
/// the loss has been heard from again, so that a device whose node has not resubscribed
/// yet is never answered `partial`; at most this long.
pub(crate) const RECOVERY_MAX: Duration = Duration::from_secs(10);
/// First pause before reconnecting; it doubles per attempt up to the maximum.
pub(crate) const RECONNECT_DELAY_MIN: Duration = Duration::from_millis(100);
/// Longest pause between reconnection attempts (before jitter).
pub(crate) const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(2);
/// Each pause is the backoff times a random factor from 50 % to 150 %, so that nodes cut off
/// together do not reconnect in step.
pub(crate) const RECONNECT_JITTER_PERCENT: u64 = 50;
/// Time allowed for one connection attempt.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the client pings the server: a server that vanished without closing the
/// connection is noticed within two of these.
pub(crate) const PING_INTERVAL: Duration = Duration::from_secs(10);
/// Messages the client holds for one subscription before it drops them (a device's
/// subscription is drained as messages arrive: each is queued or answered at once).
pub(crate) const SUBSCRIPTION_CAPACITY: usize = 256;
/// Commands the client queues for its connection (it holds them while reconnecting).
pub(crate) const CLIENT_CAPACITY: usize = 4096;
/// How often the monitor recomputes the state with no event or heartbeat to prompt it:
/// peers falling silent past `PEER_TTL` and recovery ending after `RECOVERY_MAX` are changes
/// of the clock alone, seen at most this late.
pub(crate) const STATE_REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// Connection events waiting for the monitor.
const EVENT_QUEUE: usize = 64;
/// Time allowed for the goodbye heartbeat on a clean stop.
const BYE_TIMEOUT: Duration = Duration::from_millis(500);

const DOWN: u8 = 0;
const RECOVERING: u8 = 1;
const UP: u8 = 2;

/// The pause before reconnection attempt `attempts` (1 = the first after a loss): doubling
/// from `RECONNECT_DELAY_MIN` to `RECONNECT_DELAY_MAX`, scaled by a factor from
/// `100 - RECONNECT_JITTER_PERCENT` to `100 + RECONNECT_JITTER_PERCENT` percent that `random`
/// picks.
pub(crate) fn reconnect_delay(attempts: usize, random: u64) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(16);
    let base = RECONNECT_DELAY_MIN
        .saturating_mul(1 << doublings)
        .min(RECONNECT_DELAY_MAX);
    let spread = 2 * RECONNECT_JITTER_PERCENT + 1;
    let percent = 100 - RECONNECT_JITTER_PERCENT + random % spread;
    base * u32::try_from(percent).unwrap_or(100) / 100
}

fn random() -> u64 {
    // A fresh SipHash key per call, seeded by the OS: enough to spread reconnections.
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

/// This node's clock, milliseconds since the Unix epoch.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The host name, for `node_name` left unset.
fn host_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let name = name.trim();
    if crate::wire::cluster::is_valid_node_name(name) {
        name.to_owned()
    } else {
        format!("wssed-{}", std::process::id())
    }
}

/// One peer heard from.
struct Peer {
    name: String,
    last_seen: Instant,
    /// This node's clock minus the peer's, from its latest heartbeat, in milliseconds
    /// (network delay included, a few milliseconds at most).
    offset_ms: i64,
}

/// What the monitor knows of the link and the peers.
struct Peers {
    list: Vec<Peer>,
    connected_at: Option<Instant>,
    lost_at: Option<Instant>,
}

impl Peers {
    fn seen(&mut self, name: &str, now: Instant, offset_ms: i64) {
        if let Some(p) = self.list.iter_mut().find(|p| p.name == name) {
            p.last_seen = now;
            p.offset_ms = offset_ms;
            return;
        }
        if self.list.len() >= MAX_PEERS {
            if let Some(oldest) = self
                .list
                .iter()
                .enumerate()
                .min_by_key(|(_, p)| p.last_seen)
                .map(|(i, _)| i)
            {
                self.list.swap_remove(oldest);
            }
        }
        self.list.push(Peer {
            name: name.to_owned(),
            last_seen: now,
            offset_ms,
        });
    }

    /// How old a request the peer `node` sent at `sent_ms` (its clock) is, by this node's
    /// clock; `None` when the peer's clock is not known yet.
    fn age_ms(&self, node: &str, sent_ms: u64, now_ms: u64) -> Option<i64> {
        let peer = self.list.iter().find(|p| p.name == node)?;
        let sent_here = i128::from(sent_ms) + i128::from(peer.offset_ms);
        i64::try_from(i128::from(now_ms) - sent_here).ok()
    }

    fn forget(&mut self, name: &str) {
        self.list.retain(|p| p.name != name);
    }

    fn expire(&mut self, now: Instant) {
        // Peers known before a loss are kept until recovery ends, to be waited for.
        let keep_since = match (self.lost_at, self.connected_at) {
            (Some(lost), Some(connected)) if now.duration_since(connected) < RECOVERY_MAX => {
                lost.checked_sub(PEER_TTL).unwrap_or(lost)
            }
            _ => now.checked_sub(PEER_TTL).unwrap_or(now),
        };
        self.list.retain(|p| p.last_seen >= keep_since);
    }

    fn live(&self, now: Instant) -> usize {
        self.list
            .iter()
            .filter(|p| now.duration_since(p.last_seen) < PEER_TTL)
            .count()
    }

    /// The link's state: up once every peer heard from shortly before the last loss has
    /// been heard from since the link came back (its subscriptions are then back too), or
    /// `RECOVERY_MAX` after it came back.
    fn state(&self, now: Instant) -> u8 {
        let Some(connected) = self.connected_at else {
            return DOWN;
        };
        let Some(lost) = self.lost_at else {
            return UP;
        };
        if now.duration_since(connected) >= RECOVERY_MAX {
            return UP;
        }
        let waiting = self.list.iter().any(|p| {
            p.last_seen < connected && lost.saturating_duration_since(p.last_seen) < PEER_TTL
        });
        if waiting {
            RECOVERING
        } else {
            UP
        }
    }
}

/// The peer table's lock, recovered if a panic poisoned it: only the monitor writes, without
/// awaiting inside, so a poisoned table is still usable.
fn lock_peer_table(peers: &Mutex<Peers>) -> MutexGuard<'_, Peers> {
    peers
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// This node's link to NATS.
pub(crate) struct Cluster {
    client: Client,
    node: String,
    /// `DOWN`, `RECOVERING` or `UP`.
    state: AtomicU8,
    /// True while connected to a server (claims need this only; requests need `UP`).
    connected: watch::Sender<bool>,
    /// True while `UP`: requests race its fall.
    up: watch::Sender<bool>,
    /// Bumped each time the link (re)connects: sessions claim their ids again.
    generation: watch::Sender<u64>,
    peers: Mutex<Peers>,
    live_peers: AtomicUsize,
    timeout: Duration,
    send_timeout: Duration,
}

impl Cluster {
    fn lock_peers(&self) -> MutexGuard<'_, Peers> {
        lock_peer_table(&self.peers)
    }

    fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    /// Recomputes the state from the peers and the clock.
    fn refresh(&self) {
        let now = Instant::now();
        let (state, live) = {
            let mut peers = self.lock_peers();
            peers.expire(now);
            (peers.state(now), peers.live(now))
        };
        self.live_peers.store(live, Ordering::Relaxed);
        // A request that sees the state up must not see the watch it races still down: going
        // up, the watch changes first; going down, the state does.
        let set_watch = |up: bool| {
            self.up
                .send_if_modified(|now| std::mem::replace(now, up) != up);
        };
        if state == UP {
            set_watch(true);
        }
        let before = self.state.swap(state, Ordering::AcqRel);
        if state != UP {
            set_watch(false);
        }
        if before != state {
            match state {
                UP => log::info!("cluster: up ({live} peers)"),
                RECOVERING => log::info!(
                    "cluster: connected, waiting for the peers seen before the loss (at most {RECOVERY_MAX:?})"
                ),
                _ => log::warn!(
                    "cluster: down; devices here keep working, pushes for other devices get 503"
                ),
            }
        }
    }

    async fn heartbeat(&self, beat: Beat) {
        let mut payload = Vec::with_capacity(1 + self.node.len());
        encode_heartbeat(
            Heartbeat {
                node: &self.node,
                beat,
                now_ms: unix_ms(),
            },
            &mut payload,
        );
        match timeout(
            HEARTBEAT_INTERVAL,
            self.client.publish(NODES_SUBJECT, payload.into()),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => log::debug!("cluster: heartbeat not sent: {e}"),
            Err(_) => log::debug!("cluster: heartbeat not sent: the client is busy"),
        }
    }

    /// Takes a peer's heartbeat; true when it asks to be answered at once.
    fn on_heartbeat(&self, payload: &[u8]) -> bool {
        let Ok(heartbeat) = decode_heartbeat(payload) else {
            return false;
        };
        if heartbeat.node == self.node {
            log::warn!(
                "cluster: another node is named {:?} too; node names must differ",
                self.node
            );
            return false;
        }
        let mut peers = self.lock_peers();
        let offset_ms =
            i64::try_from(i128::from(unix_ms()) - i128::from(heartbeat.now_ms)).unwrap_or(0);
        match heartbeat.beat {
            Beat::Alive => peers.seen(heartbeat.node, Instant::now(), offset_ms),
            Beat::Hello => {
                peers.seen(heartbeat.node, Instant::now(), offset_ms);
                return true;
            }
            Beat::Bye => peers.forget(heartbeat.node),
        }
        false
    }

    /// The header of a request this node sends now.
    fn header(&self, out: &mut Vec<u8>) {
        encode_request_header(
            RequestHeader {
                sent_ms: unix_ms(),
                node: &self.node,
            },
            out,
        );
    }

    /// True when a request reaches this node after its sender gave up waiting for it (it sat
    /// in the sender's client while its link was down, say): it is dropped unanswered, so that
    /// a push its sender answered 503 is never delivered late. A request from a node whose
    /// clock is not known yet (no heartbeat heard) counts as fresh.
    fn is_stale(&self, header: &RequestHeader<'_>) -> bool {
        let limit = i64::try_from(self.timeout.as_millis()).unwrap_or(i64::MAX);
        self.lock_peers()
            .age_ms(header.node, header.sent_ms, unix_ms())
            .is_some_and(|age| age > limit)
    }

    /// Resolves once the link is no longer up.
    async fn down(up: &mut watch::Receiver<bool>) {
        let _ = up.wait_for(|up| !up).await;
    }
}

fn map_request_error(kind: RequestErrorKind) -> Result<(), Unreachable> {
    match kind {
        RequestErrorKind::NoResponders => Ok(()),
        RequestErrorKind::TimedOut => Err(Unreachable::Timeout),
        RequestErrorKind::MaxPayloadExceeded => Err(Unreachable::TooLarge),
        RequestErrorKind::InvalidSubject | RequestErrorKind::Other => Err(Unreachable::Down),
    }
}

impl Remote for Cluster {
    fn is_up(&self) -> bool {
        self.state.load(Ordering::Acquire) == UP
    }

    fn status(&self) -> Status {
        let state = match self.state.load(Ordering::Acquire) {
            UP => LinkState::Up,
            RECOVERING => LinkState::Recovering,
            _ => LinkState::Down,
        };
        Status {
            node: self.node.clone(),
            state,
            peers: self.live_peers.load(Ordering::Relaxed),
        }
    }

    fn max_payload(&self) -> usize {
        self.client.max_payload()
    }

    fn request_header(&self, out: &mut Vec<u8>) {
        self.header(out);
    }

    fn push(
        &self,
        user: &UserId,
        payload: Bytes,
        frames: usize,
    ) -> Pending<Result<PushReply, Unreachable>> {
        let client = self.client.clone();
        let subject = device_subject(user, Op::Push);
        let within = self.timeout;
        // Checked on the client itself, the moment before the request enters its queue: a
        // request queued while the client reconnects would go out when the link is back.
        let connected = client.connection_state() == async_nats::connection::State::Connected;
        Box::pin(async move {
            if !connected {
                return Err(Unreachable::Down);
            }
            // Not raced against the link going down: a request already queued may still go
            // out when it comes back, and then its real answer is the one to give (or, after
            // `within`, 503; the device's node then drops it as stale).
            let reply = client
                .send_request(
                    subject,
                    Request::new().payload(payload).timeout(Some(within)),
                )
                .await;
            match reply {
                Ok(msg) if msg.status.is_none() => decode_deliveries(&msg.payload, frames)
                    .map(PushReply::Delivered)
                    .map_err(|_| Unreachable::Malformed),
                Ok(_) => Err(Unreachable::Malformed),
                Err(e) => map_request_error(e.kind()).map(|()| PushReply::Nowhere),
            }
        })
    }

    fn open_send(
        &self,
        user: &UserId,
        payload: Bytes,
        relay: Relay,
    ) -> Pending<Result<SendReply, Unreachable>> {
        let client = self.client.clone();
        let subject = device_subject(user, Op::Send);
        let up = self.up.subscribe();
        let within = self.timeout;
        let user = user.clone();
        let connected = client.connection_state() == async_nats::connection::State::Connected;
        let node = self.node.clone();
        Box::pin(async move {
            if !connected {
                return Err(Unreachable::Down);
            }
            let inbox = client.new_inbox();
            // As for a push: the first answer is waited for even if the link drops meanwhile.
            let opened = async {
                let mut answers = client
                    .subscribe(inbox.clone())
                    .await
                    .map_err(|_| Unreachable::Down)?;
                client
                    .publish_with_reply(subject.clone(), inbox, payload)
                    .await
                    .map_err(|_| Unreachable::Down)?;
                let first = timeout(within, answers.next())
                    .await
                    .map_err(|_| Unreachable::Timeout)?
                    .ok_or(Unreachable::Down)?;
                Ok::<_, Unreachable>((answers, first))
            };
            let (answers, first) = opened.await?;
            if first.status == Some(StatusCode::NO_RESPONDERS) {
                return Ok(SendReply::Nowhere);
            }
            match decode_stream(&first.payload) {
                Ok(StreamMsg::Opened) => {
                    let ends = Ends {
                        client,
                        subject,
                        user,
                        node,
                    };
                    tokio::spawn(relay_answers(ends, answers, relay, up));
                    Ok(SendReply::Opened)
                }
                Ok(StreamMsg::Refused(why)) => Ok(SendReply::Refused(why)),
                Ok(_) | Err(_) => Err(Unreachable::Malformed),
            }
        })
    }
}

/// Where a relayed stream's close goes: the device's `send` subject (a close that waits in the
/// client past `cluster_timeout_secs` is dropped there as stale, and the device's node frees
/// the id by its own timeout instead).
struct Ends {
    client: Client,
    subject: String,
    user: UserId,
    /// This node's name, for the close's header.
    node: String,
}

/// Feeds the answers the device's node relays into the stream here, until the stream ends
/// on either side or the link is lost.
async fn relay_answers(
    ends: Ends,
    mut answers: Subscriber,
    relay: Relay,
    mut up: watch::Receiver<bool>,
) {
    let Relay {
        tx,
        cid,
        streams,
        budget,
        device,
    } = relay;
    // Whether the device's node still relays and must hear that the stream ended here.
    let tell_them = loop {
        tokio::select! {
            biased;
            msg = answers.next() => {
                let Some(msg) = msg else {
                    tx.unreachable();
                    break false;
                };
                match decode_stream(&msg.payload) {
                    Ok(StreamMsg::Answer { text, is_final }) => {
                        let Ok(text) = std::str::from_utf8(text) else {
                            continue;
                        };
                        // The device's answer as it arrived, paid for here as any answer.
                        let text = text.to_owned().into();
                        if let Err(why) = tx.send(text, is_final, budget) {
                            streams.overflowed(&cid, &tx, why);
                            break true;
                        }
                        if is_final {
                            break false;
                        }
                    }
                    Ok(StreamMsg::Gone) => {
                        device.end();
                        break false;
                    }
                    Ok(StreamMsg::Overflowed) => {
                        streams.overflowed(&cid, &tx, Overflow::TooSlow);
                        break false;
                    }
                    Ok(StreamMsg::Opened | StreamMsg::Refused(_)) | Err(_) => {}
                }
            }
            () = tx.closed() => break true,
            () = Cluster::down(&mut up) => {
                COUNTERS.unreachable(Unreachable::Down);
                if !tx.unreachable() {
                    streams.overflowed(&cid, &tx, Overflow::TooSlow);
                }
                break false;
            }
        }
    };
    drop(tx);
    drop(answers);
    if tell_them {
        let Ends {
            client,
            subject,
            user,
            node,
        } = ends;
        let mut payload = Vec::with_capacity(32);
        encode_request_header(
            RequestHeader {
                sent_ms: unix_ms(),
                node: &node,
            },
            &mut payload,
        );
        encode_send(SendRequest::Close { cid: &cid }, &mut payload);
        if let Err(e) = client.publish(subject, payload.into()).await {
            log::debug!("cluster: stream {cid} of {user}: close not sent: {e}");
        }
    }
}

/// Connects to the NATS servers of `config` (in the background: the daemon starts and
/// serves its own devices whether or not they answer) and starts the monitor; `None`
/// without `cluster_urls`.
pub(crate) async fn start(
    config: &Config,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<Option<Arc<Cluster>>> {
    if config.cluster_urls.is_empty() {
        return Ok(None);
    }
    let node = config.node_name.clone().unwrap_or_else(host_name);
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let mut options = ConnectOptions::new()
        .name(format!("wssed {node}"))
        // A node never hears its own messages: its claims reach only the other nodes, and
        // its heartbeats count only them.
        .no_echo()
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(CONNECT_TIMEOUT)
        .ping_interval(PING_INTERVAL)
        .subscription_capacity(SUBSCRIPTION_CAPACITY)
        .client_capacity(CLIENT_CAPACITY)
        .request_timeout(Some(secs(config.cluster_timeout_secs)))
        .reconnect_delay_callback(|attempts| reconnect_delay(attempts, random()))
        .event_callback(move |event| {
            let events = events_tx.clone();
            async move {
                // The monitor reads events as they come; a burst past the queue loses only
                // repeats of what the state already says.
                let _ = events.try_send(event);
            }
        });
    if let Some(token) = &config.cluster_token {
        options = options.token(token.clone());
    }
    let urls: Vec<async_nats::ServerAddr> = config
        .cluster_urls
        .iter()
        .map(|u| u.parse())
        .collect::<Result<_, _>>()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{e}")))?;
    let client = options
        .connect(urls)
        .await
        .map_err(|e| std::io::Error::other(format!("cluster: {e}")))?;
    let heartbeats = client
        .subscribe(NODES_SUBJECT)
        .await
        .map_err(|e| std::io::Error::other(format!("cluster: {e}")))?;
    let cluster = Arc::new(Cluster {
        client,
        node,
        state: AtomicU8::new(DOWN),
        connected: watch::channel(false).0,
        up: watch::channel(false).0,
        generation: watch::channel(0).0,
        peers: Mutex::new(Peers {
            list: Vec::new(),
            connected_at: None,
            lost_at: None,
        }),
        live_peers: AtomicUsize::new(0),
        timeout: secs(config.cluster_timeout_secs),
        send_timeout: secs(config.send_timeout_secs),
    });
    log::info!(
        "cluster: node {} joining {}",
        cluster.node,
        config.cluster_urls.join(", ")
    );
    tokio::spawn(monitor(
        Arc::clone(&cluster),
        events_rx,
        heartbeats,
        shutdown,
    ));
    Ok(Some(cluster))
}

/// Follows the connection's events and the peers' heartbeats, keeps the state, and says
/// this node is there.
async fn monitor(
    cluster: Arc<Cluster>,
    mut events: mpsc::Receiver<Event>,
    mut heartbeats: Subscriber,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut beat = interval(HEARTBEAT_INTERVAL);
    let mut check = interval(STATE_REFRESH_INTERVAL);
    loop {
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { break };
                match event {
                    Event::Connected => {
                        {
                            let mut peers = cluster.lock_peers();
                            peers.connected_at = Some(Instant::now());
                        }
                        cluster.connected.send_replace(true);
                        cluster.generation.send_modify(|g| *g += 1);
                        if *cluster.generation.borrow() > 1 {
                            COUNTERS.reconnects.inc();
                        }
                        log::info!("cluster: connected to NATS");
                        cluster.refresh();
                        // After the client's own subscriptions went out again: a peer that
                        // hears this finds this node's devices present.
                        cluster.heartbeat(Beat::Hello).await;
                    }
                    Event::Disconnected => {
                        {
                            let mut peers = cluster.lock_peers();
                            peers.connected_at = None;
                            peers.lost_at = Some(Instant::now());
                        }
                        cluster.connected.send_replace(false);
                        cluster.refresh();
                    }
                    Event::Closed => {
                        cluster.connected.send_replace(false);
                        cluster.refresh();
                        break;
                    }
                    // Every failed reconnection attempt says so: the state change said it once.
                    Event::ClientError(e) => log::debug!("cluster: {e}"),
                    other => log::warn!("cluster: {other}"),
                }
            }
            msg = heartbeats.next() => {
                let Some(msg) = msg else { break };
                if cluster.on_heartbeat(&msg.payload) {
                    cluster.heartbeat(Beat::Alive).await;
                }
                cluster.refresh();
            }
            _ = beat.tick() => {
                if cluster.is_connected() {
                    cluster.heartbeat(Beat::Alive).await;
                }
            }
            _ = check.tick() => cluster.refresh(),
            () = crate::hub::stopping(&mut shutdown) => {
                if cluster.is_connected() {
                    let _ = timeout(BYE_TIMEOUT, async {
                        cluster.heartbeat(Beat::Bye).await;
                        let _ = cluster.client.flush().await;
                    })
                    .await;
                }
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delays_back_off_with_jitter_and_a_ceiling() {
        assert_eq!(reconnect_delay(1, 50), RECONNECT_DELAY_MIN);
        assert_eq!(reconnect_delay(2, 50), RECONNECT_DELAY_MIN * 2);
        assert_eq!(reconnect_delay(100, 50), RECONNECT_DELAY_MAX);
        assert_eq!(reconnect_delay(1, 0), RECONNECT_DELAY_MIN / 2);
        assert_eq!(reconnect_delay(1, 100), RECONNECT_DELAY_MIN * 3 / 2);
        for attempts in 0..200 {
            for r in [0, 1, 99, 100, 101, u64::MAX] {
                let d = reconnect_delay(attempts, r);
                assert!(d >= RECONNECT_DELAY_MIN / 2 && d <= RECONNECT_DELAY_MAX * 3 / 2);
            }
        }
        // Not every node waits the same.
        let spread: std::collections::HashSet<Duration> =
            (0..20).map(|_| reconnect_delay(5, random())).collect();
        assert!(spread.len() > 1);
    }

    fn peers() -> Peers {
        Peers {
            list: Vec::new(),
            connected_at: None,
            lost_at: None,
        }
    }

    #[test]
    fn after_a_loss_the_link_recovers_once_the_peers_are_back() {
        let t0 = Instant::now();
        let mut p = peers();
        assert_eq!(p.state(t0), DOWN);
        p.connected_at = Some(t0);
        assert_eq!(p.state(t0), UP, "the first connection waits for nobody");
        p.seen("b", t0, 0);
        p.seen("c", t0, 0);
        let lost = t0 + Duration::from_secs(3);
        p.connected_at = None;
        p.lost_at = Some(lost);
        assert_eq!(p.state(lost), DOWN);
        let back = lost + Duration::from_secs(1);
        p.connected_at = Some(back);
        assert_eq!(p.state(back), RECOVERING);
        p.seen("b", back + Duration::from_millis(10), 0);
        assert_eq!(p.state(back + Duration::from_millis(20)), RECOVERING);
        p.seen("c", back + Duration::from_millis(30), 0);
        assert_eq!(p.state(back + Duration::from_millis(40)), UP);
        // A peer that never comes back holds recovery for RECOVERY_MAX at most.
        let mut q = peers();
        q.seen("gone", t0, 0);
        q.lost_at = Some(t0 + Duration::from_secs(1));
        q.connected_at = Some(t0 + Duration::from_secs(2));
        assert_eq!(q.state(t0 + Duration::from_secs(3)), RECOVERING);
        assert_eq!(q.state(t0 + Duration::from_secs(2) + RECOVERY_MAX), UP);
        // Peers silent long before the loss are not waited for.
        let mut r = peers();
        r.seen("old", t0, 0);
        r.lost_at = Some(t0 + PEER_TTL + Duration::from_secs(1));
        r.connected_at = Some(t0 + PEER_TTL + Duration::from_secs(2));
        assert_eq!(r.state(t0 + PEER_TTL + Duration::from_secs(2)), UP);
    }

    #[test]
    fn a_requests_age_is_read_on_this_nodes_clock() {
        let t0 = Instant::now();
        let mut p = peers();
        assert_eq!(
            p.age_ms("b", 1_000, 5_000),
            None,
            "an unknown clock judges nothing"
        );
        // b's clock is 60 s behind ours: its 1,000 is our 61,000.
        p.seen("b", t0, 60_000);
        assert_eq!(p.age_ms("b", 1_000, 61_500), Some(500));
        assert_eq!(p.age_ms("b", 1_000, 80_000), Some(19_000));
        // A clock ahead of ours; an absurd stamp is no age at all (no overflow).
        p.seen("c", t0, -5_000);
        assert_eq!(p.age_ms("c", 10_000, 5_000), Some(0));
        assert_eq!(p.age_ms("c", u64::MAX, 0), None);
    }

    /// Panics unwind (Cargo.toml): a panic while the peer table is locked poisons it, and the
    /// monitor must go on counting peers and computing the state.
    #[test]
    fn a_panic_inside_the_lock_leaves_the_peer_table_usable() {
        let t0 = Instant::now();
        let table = Arc::new(Mutex::new(peers()));
        lock_peer_table(&table).seen("b", t0, 0);
        let poisoner = Arc::clone(&table);
        let died = std::thread::spawn(move || {
            let _guard = poisoner.lock();
            panic!("a bug inside a critical section");
        })
        .join();
        assert!(died.is_err());
        assert!(table.is_poisoned());
        let mut p = lock_peer_table(&table);
        p.seen("c", t0, 0);
        p.connected_at = Some(t0);
        assert_eq!(p.live(t0), 2);
        assert_eq!(p.state(t0), UP);
    }

    #[test]
    fn the_peer_table_is_bounded() {
        let t0 = Instant::now();
        let mut p = peers();
        for i in 0..MAX_PEERS + 10 {
            p.seen(&format!("n{i}"), t0 + Duration::from_millis(i as u64), 0);
        }
        assert_eq!(p.list.len(), MAX_PEERS);
        assert!(p.list.iter().all(|peer| peer.name != "n0"));
        p.forget("n300");
        assert_eq!(p.list.len(), MAX_PEERS);
        p.forget(&format!("n{}", MAX_PEERS + 9));
        assert_eq!(p.list.len(), MAX_PEERS - 1);
    }
}

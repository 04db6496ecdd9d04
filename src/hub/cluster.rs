//! The cluster as the rest of the daemon sees it (README "Scaling past one gateway",
//! docs/protocol.md §21): the requests `app` makes of other nodes, as a trait the `net` layer
//! implements over NATS, and the cluster's counters. No I/O here.

use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

use super::budget::Budget;
use super::counter::{write_families, write_json_series, Counter, Family, Gauge};
use super::link::DeviceLink;
use super::streams::{StreamTx, Streams};
use crate::wire::cluster::{Delivery, SendRefusal};
use crate::wire::envelope::{CorrelationId, UserId};

/// A request on its way to another node.
pub(crate) type Pending<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The session number of a stream whose device is on another node. Local sessions are
/// numbered from 1, so no device here can answer such a stream.
pub(crate) const REMOTE_SESSION: u64 = 0;

/// Why a request to another node got no answer; each is `503 cluster_unavailable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unreachable {
    /// The link to NATS is down (refused at once, never a guess).
    Down,
    /// No answer within `cluster_timeout_secs`.
    Timeout,
    /// The request is larger than the NATS servers take (their `max_payload`).
    TooLarge,
    /// The answer could not be read.
    Malformed,
}

/// What became of a push request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PushReply {
    /// No node has the device (NATS answered "no responders"): `partial`, at once.
    Nowhere,
    /// The device's node delivered: one outcome per frame, in order.
    Delivered(Vec<Delivery>),
}

/// What became of a send request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendReply {
    /// No node has the device.
    Nowhere,
    /// The request is queued on the device's node; its answers flow into the stream.
    Opened,
    /// The device's node refused it.
    Refused(SendRefusal),
}

/// Where a stream whose device is on another node takes its answers here.
pub(crate) struct Relay {
    /// The stream's sending half (its entry is this node's, with [`REMOTE_SESSION`]).
    pub tx: StreamTx,
    /// The stream's correlation id.
    pub cid: CorrelationId,
    /// This node's stream table.
    pub streams: &'static Streams,
    /// This node's memory budget, which pays for answers waiting for the upstream.
    pub budget: &'static Budget,
    /// Stands for the device's session: ended when its node says the device left.
    pub device: Arc<DeviceLink>,
}

/// The link's state, as `/health` and `/metrics` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkState {
    /// Not connected to a NATS server: requests for other devices get 503.
    Down,
    /// Connected again after a loss, waiting (at most a few seconds) for the peers seen
    /// before it to be back: requests for other devices still get 503.
    Recovering,
    /// Connected: requests for other devices go to their nodes.
    Up,
}

impl LinkState {
    /// The word `/health` shows.
    pub(crate) fn word(self) -> &'static str {
        match self {
            LinkState::Down => "down",
            LinkState::Recovering => "recovering",
            LinkState::Up => "up",
        }
    }
}

/// The state `/health` and `/metrics` show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Status {
    /// This node's name.
    pub node: String,
    /// The link to NATS.
    pub state: LinkState,
    /// Other nodes heard from lately.
    pub peers: usize,
}

/// The other nodes of the cluster, as `app` asks them things.
pub(crate) trait Remote: std::any::Any + Send + Sync {
    /// True while the link to NATS is up.
    fn is_up(&self) -> bool;

    /// This node's name, the link's state and the peers seen.
    fn status(&self) -> Status;

    /// The largest request the NATS servers take, in bytes.
    fn max_payload(&self) -> usize;

    /// Appends the header every request to another node starts with (who sends it, and
    /// when), wire::cluster's `RequestHeader`.
    fn request_header(&self, out: &mut Vec<u8>);

    /// Asks the node that holds `user` to deliver the frames of `payload` (`frames` of them,
    /// wire::cluster's push format) and say what became of each.
    fn push(
        &self,
        user: &UserId,
        payload: Bytes,
        frames: usize,
    ) -> Pending<Result<PushReply, Unreachable>>;

    /// Asks the node that holds `user` to open a stream (`payload`: wire::cluster's send
    /// format); once opened, its answers flow into `relay` until the stream ends.
    fn open_send(
        &self,
        user: &UserId,
        payload: Bytes,
        relay: Relay,
    ) -> Pending<Result<SendReply, Unreachable>>;
}

/// The cluster's counters.
pub(crate) struct Counters {
    /// Local devices present in the cluster: subscribed, their claim settled.
    pub present: Gauge,
    /// Push requests sent to other nodes (one per device and chunk).
    pub pushes: Counter,
    /// Send requests sent to other nodes.
    pub sends: Counter,
    /// Claims sent for sessions that arrived here.
    pub claims: Counter,
    /// Requests that found the device on no node ("no responders").
    pub no_responders: Counter,
    /// Requests refused at once because the link to NATS was down.
    pub unavailable: Counter,
    /// Requests without an answer within `cluster_timeout_secs`.
    pub timeouts: Counter,
    /// Requests too large for the servers, or answers that could not be read.
    pub malformed: Counter,
    /// Push requests from other nodes served here.
    pub served_pushes: Counter,
    /// Send requests from other nodes served here.
    pub served_sends: Counter,
    /// Claims from other nodes answered here.
    pub served_claims: Counter,
    /// Sessions here closed because a session of the same user id on another node won.
    pub duplicates_closed: Counter,
    /// Requests from other nodes dropped because they arrived after their sender gave up.
    pub stale: Counter,
    /// Times the link to NATS came back after it was lost.
    pub reconnects: Counter,
}

/// The process's cluster counters.
pub(crate) static COUNTERS: Counters = Counters::new();

impl Counters {
    /// Every counter at zero (const, for the `static`).
    pub(crate) const fn new() -> Counters {
        Counters {
            present: Gauge::new(),
            pushes: Counter::new(),
            sends: Counter::new(),
            claims: Counter::new(),
            no_responders: Counter::new(),
            unavailable: Counter::new(),
            timeouts: Counter::new(),
            malformed: Counter::new(),
            served_pushes: Counter::new(),
            served_sends: Counter::new(),
            served_claims: Counter::new(),
            duplicates_closed: Counter::new(),
            stale: Counter::new(),
            reconnects: Counter::new(),
        }
    }

    /// Counts a request that got no answer.
    pub(crate) fn unreachable(&self, why: Unreachable) {
        match why {
            Unreachable::Down => self.unavailable.inc(),
            Unreachable::Timeout => self.timeouts.inc(),
            Unreachable::TooLarge | Unreachable::Malformed => self.malformed.inc(),
        }
    }

    fn requests(&self) -> [(&'static str, &Counter); 3] {
        [
            ("push", &self.pushes),
            ("send", &self.sends),
            ("claim", &self.claims),
        ]
    }

    fn served(&self) -> [(&'static str, &Counter); 3] {
        [
            ("push", &self.served_pushes),
            ("send", &self.served_sends),
            ("claim", &self.served_claims),
        ]
    }

    fn errors(&self) -> [(&'static str, &Counter); 3] {
        [
            ("unavailable", &self.unavailable),
            ("timeout", &self.timeouts),
            ("malformed", &self.malformed),
        ]
    }
}

/// Appends `,"cluster":{"node":…,"state":"up"|"recovering"|"down","peers":N}` to `/health`.
pub(crate) fn write_health(out: &mut Vec<u8>, status: &Status) {
    out.extend_from_slice(b",\"cluster\":{\"node\":");
    // Node names are [A-Za-z0-9_.-]: nothing to escape.
    let _ = write!(
        out,
        "\"{}\",\"state\":\"{}\",\"peers\":{}}}",
        status.node,
        status.state.word(),
        status.peers
    );
}

/// Appends `,"cluster":{...}` to the `/metrics` JSON.
pub(crate) fn write_json(out: &mut Vec<u8>, status: &Status, c: &Counters) {
    let _ = write!(
        out,
        ",\"cluster\":{{\"node\":\"{}\",\"state\":\"{}\",\"peers\":{},\"present\":{}",
        status.node,
        status.state.word(),
        status.peers,
        c.present.get()
    );
    out.push(b',');
    write_json_series(
        out,
        "requests",
        c.requests().iter().map(|(l, n)| (*l, n.get())),
    );
    out.push(b',');
    write_json_series(out, "served", c.served().iter().map(|(l, n)| (*l, n.get())));
    out.push(b',');
    write_json_series(out, "errors", c.errors().iter().map(|(l, n)| (*l, n.get())));
    let _ = write!(
        out,
        ",\"no_responders\":{},\"duplicates_closed\":{},\"stale\":{},\"reconnects\":{}}}",
        c.no_responders.get(),
        c.duplicates_closed.get(),
        c.stale.get(),
        c.reconnects.get()
    );
}

/// Appends the cluster's gauges and counters in Prometheus text.
pub(crate) fn write_prometheus(out: &mut Vec<u8>, status: &Status, c: &Counters) {
    let _ = writeln!(
        out,
        "# HELP wssed_cluster_up 1 while the link to NATS is up (requests for devices on other nodes are served).\n# TYPE wssed_cluster_up gauge\nwssed_cluster_up {}",
        u8::from(status.state == LinkState::Up)
    );
    let _ = writeln!(
        out,
        "# HELP wssed_cluster_peers Other nodes heard from lately.\n# TYPE wssed_cluster_peers gauge\nwssed_cluster_peers {}",
        status.peers
    );
    let _ = writeln!(
        out,
        "# HELP wssed_cluster_present Local devices present in the cluster (subscribed, claim settled).\n# TYPE wssed_cluster_present gauge\nwssed_cluster_present {}",
        c.present.get()
    );
    let families: [Family<'_>; 7] = [
        (
            "wssed_cluster_requests_total",
            "Requests sent to other nodes, by what they asked.",
            "op",
            &c.requests(),
        ),
        (
            "wssed_cluster_served_total",
            "Requests from other nodes served here, by what they asked.",
            "op",
            &c.served(),
        ),
        (
            "wssed_cluster_errors_total",
            "Requests to other nodes without an answer, by reason (each answered 503 cluster_unavailable).",
            "reason",
            &c.errors(),
        ),
        (
            "wssed_cluster_no_responders_total",
            "Requests for a device no node has (answered partial).",
            "",
            &[("", &c.no_responders)],
        ),
        (
            "wssed_cluster_duplicates_closed_total",
            "Sessions closed here because a session of their user id on another node won.",
            "",
            &[("", &c.duplicates_closed)],
        ),
        (
            "wssed_cluster_stale_total",
            "Requests from other nodes dropped because they arrived after their sender gave up.",
            "",
            &[("", &c.stale)],
        ),
        (
            "wssed_cluster_reconnects_total",
            "Times the link to NATS came back after it was lost.",
            "",
            &[("", &c.reconnects)],
        ),
    ];
    write_families(out, &families);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> Status {
        Status {
            node: "gw-1".into(),
            state: LinkState::Up,
            peers: 2,
        }
    }

    #[test]
    fn health_and_metrics_json_parse() {
        let mut out = b"{\"status\":\"healthy\"".to_vec();
        write_health(&mut out, &status());
        out.push(b'}');
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["cluster"]["state"], "up");
        assert_eq!(v["cluster"]["peers"], 2);
        let c = Counters::new();
        c.pushes.add(3);
        c.unreachable(Unreachable::Timeout);
        let mut out = b"{\"a\":1".to_vec();
        write_json(&mut out, &status(), &c);
        out.push(b'}');
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["cluster"]["requests"]["push"], 3);
        assert_eq!(v["cluster"]["errors"]["timeout"], 1);
        let mut text = Vec::new();
        write_prometheus(&mut text, &status(), &c);
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("wssed_cluster_up 1\n"), "{text}");
        assert!(text.contains("wssed_cluster_requests_total{op=\"push\"} 3\n"));
        assert!(text.contains("wssed_cluster_errors_total{reason=\"timeout\"} 1\n"));
    }
}

//! What wssed nodes say to each other over NATS (docs/protocol.md §21), sans-IO: the subjects,
//! the payloads of pushes, sends, claims and heartbeats, and how two sessions of one user id
//! on two nodes are settled. `net::cluster` moves these bytes; nothing here does I/O.
//!
//! Every payload starts with its own tag and every length is checked, so bytes from another
//! node (or anything else that can publish on the subjects) are never trusted: a payload that
//! does not parse is `Malformed`, answered or dropped by the caller, never a panic.

use std::ops::Range;

use super::ascii::{hex_digit, hex_value};
use super::limits::{MAX_BATCH_ITEMS, MAX_CORRELATION_ID_BYTES, MAX_USER_ID_BYTES};

/// Where nodes announce themselves (heartbeats, and a goodbye on a clean stop).
pub(crate) const NODES_SUBJECT: &str = "wssed.nodes";
/// Longest node name, in bytes.
pub(crate) const MAX_NODE_NAME_BYTES: usize = 64;
/// Most frames one push request carries: a batch's items for one device.
pub(crate) const MAX_FRAMES_PER_REQUEST: usize = MAX_BATCH_ITEMS;
/// Bytes a push request adds to each frame (its length).
pub(crate) const FRAME_PREFIX_BYTES: usize = 4;

/// What a message on a device's subject asks of the node that holds the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// Deliver frames (a push, or a batch's items for the device).
    Push,
    /// Open or close a `/sse/send` stream.
    Send,
    /// Another node has a session for the same user id.
    Claim,
}

impl Op {
    /// The subject's last token.
    pub(crate) fn token(self) -> &'static str {
        match self {
            Op::Push => "push",
            Op::Send => "send",
            Op::Claim => "claim",
        }
    }

    fn from_token(token: &str) -> Option<Op> {
        match token {
            "push" => Some(Op::Push),
            "send" => Some(Op::Send),
            "claim" => Some(Op::Claim),
            _ => None,
        }
    }
}

const DEVICE_PREFIX: &str = "wssed.dev.";

/// Appends the user id as a subject token: lowercase hex of its bytes. One token whatever the
/// id holds (`.`, `*`, `>`, spaces, C1 characters are all text in a user id, and all special or
/// forbidden in a NATS subject), and two ids never share a token.
fn push_user_token(out: &mut String, user: &str) {
    for b in user.bytes() {
        out.push(char::from(hex_digit(b >> 4)));
        out.push(char::from(hex_digit(b)));
    }
}

/// The subject of `op` for `user`: `wssed.dev.<hex of the id's bytes>.<op>`.
pub(crate) fn device_subject(user: &str, op: Op) -> String {
    let mut s = String::with_capacity(DEVICE_PREFIX.len() + 2 * user.len() + 6);
    s.push_str(DEVICE_PREFIX);
    push_user_token(&mut s, user);
    s.push('.');
    s.push_str(op.token());
    s
}

/// What a node subscribes to while `user` is connected to it: every op for that user. The
/// subscription is the device's presence in the cluster.
pub(crate) fn presence_subject(user: &str) -> String {
    let mut s = String::with_capacity(DEVICE_PREFIX.len() + 2 * user.len() + 2);
    s.push_str(DEVICE_PREFIX);
    push_user_token(&mut s, user);
    s.push_str(".*");
    s
}

/// A lowercase hex digit's value: the token is written lowercase, so an uppercase one is some
/// other subject, and each user id keeps exactly one token.
fn lower_hex_value(b: u8) -> Option<u8> {
    if b.is_ascii_uppercase() {
        return None;
    }
    hex_value(b)
}

/// The user id and op a device subject names; `None` for any other subject, an odd or
/// uppercase token, or bytes that are no user id (not UTF-8, too long, empty).
pub(crate) fn parse_device_subject(subject: &str) -> Option<(String, Op)> {
    let rest = subject.strip_prefix(DEVICE_PREFIX)?;
    let (token, op) = rest.split_once('.')?;
    let op = Op::from_token(op)?;
    let hex = token.as_bytes();
    if hex.is_empty() || hex.len() % 2 != 0 || hex.len() > 2 * MAX_USER_ID_BYTES {
        return None;
    }
    let bytes = hex
        .chunks_exact(2)
        .map(|pair| Some(lower_hex_value(pair[0])? << 4 | lower_hex_value(pair[1])?))
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok().map(|user| (user, op))
}

/// True for a usable node name: 1–64 bytes of `[A-Za-z0-9_.-]` (a host name fits).
pub(crate) fn is_valid_node_name(name: &str) -> bool {
    (1..=MAX_NODE_NAME_BYTES).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// A payload that does not follow this module's formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

/// What every request to a device's subjects starts with: who sent it and when, so that the
/// device's node can drop a request that reaches it after its sender gave up on it (one that
/// waited in the sender's client while its link to NATS was down, say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RequestHeader<'a> {
    /// When it was sent, milliseconds since the Unix epoch on the sender's clock.
    pub sent_ms: u64,
    /// The sender's node name.
    pub node: &'a str,
}

/// Appends a request header: the time (8 bytes, big-endian), the node name's length (1 byte),
/// the node name.
pub(crate) fn encode_request_header(header: RequestHeader<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(&header.sent_ms.to_be_bytes());
    // Node names are at most 64 bytes.
    out.push(u8::try_from(header.node.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(header.node.as_bytes());
}

/// Splits a request into its header and the rest; the rest starts at the returned offset.
pub(crate) fn split_request_header(
    payload: &[u8],
) -> Result<(RequestHeader<'_>, usize), Malformed> {
    let time: [u8; 8] = payload
        .get(..8)
        .ok_or(Malformed)?
        .try_into()
        .map_err(|_| Malformed)?;
    let len = usize::from(*payload.get(8).ok_or(Malformed)?);
    let node = payload.get(9..9 + len).ok_or(Malformed)?;
    let node = std::str::from_utf8(node).map_err(|_| Malformed)?;
    if !is_valid_node_name(node) {
        return Err(Malformed);
    }
    Ok((
        RequestHeader {
            sent_ms: u64::from_be_bytes(time),
            node,
        },
        9 + len,
    ))
}

/// Appends one frame of a push request: its length (4 bytes, big-endian), then its bytes. The
/// tests' encoder: `app::remote` writes the same format in place, splicing the frame first.
#[cfg(test)]
pub(crate) fn encode_frame(frame: &[u8], out: &mut Vec<u8>) {
    // Frames are bounded by max_body_bytes (64 MiB at most), far under u32::MAX.
    let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(frame);
}

/// Where each frame of a push request lies in `payload`, in order.
pub(crate) fn frame_ranges(payload: &[u8]) -> Result<Vec<Range<usize>>, Malformed> {
    let mut ranges = Vec::new();
    let mut at = 0;
    while at < payload.len() {
        if ranges.len() == MAX_FRAMES_PER_REQUEST {
            return Err(Malformed);
        }
        let prefix = payload.get(at..at + FRAME_PREFIX_BYTES).ok_or(Malformed)?;
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        let start = at + FRAME_PREFIX_BYTES;
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| start.checked_add(len))
            .filter(|&end| end <= payload.len())
            .ok_or(Malformed)?;
        ranges.push(start..end);
        at = end;
    }
    if ranges.is_empty() {
        return Err(Malformed);
    }
    Ok(ranges)
}

/// What became of one frame on the node that holds its device: the same outcomes as a push
/// to a local device (docs/protocol.md §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Written to the device's socket.
    Delivered,
    /// The device left before the write (or was never there).
    NotConnected,
    /// The device's queue was full.
    QueueFull,
    /// The frame did not fit the memory budget of the device's node.
    OverBudget,
}

impl Delivery {
    fn tag(self) -> u8 {
        match self {
            Delivery::Delivered => b'D',
            Delivery::NotConnected => b'N',
            Delivery::QueueFull => b'Q',
            Delivery::OverBudget => b'B',
        }
    }

    fn from_tag(tag: u8) -> Option<Delivery> {
        match tag {
            b'D' => Some(Delivery::Delivered),
            b'N' => Some(Delivery::NotConnected),
            b'Q' => Some(Delivery::QueueFull),
            b'B' => Some(Delivery::OverBudget),
            _ => None,
        }
    }
}

/// The reply to a push request: one byte per frame, in the request's order.
pub(crate) fn encode_deliveries(outcomes: &[Delivery]) -> Vec<u8> {
    outcomes.iter().map(|d| d.tag()).collect()
}

/// The outcomes of a push request of `frames` frames.
pub(crate) fn decode_deliveries(payload: &[u8], frames: usize) -> Result<Vec<Delivery>, Malformed> {
    if payload.len() != frames {
        return Err(Malformed);
    }
    payload
        .iter()
        .map(|&tag| Delivery::from_tag(tag).ok_or(Malformed))
        .collect()
}

/// A message on a device's `send` subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendRequest<'a> {
    /// Open a stream: queue `frame` for the device and relay its answers correlated by `cid`
    /// to the message's reply subject.
    Open {
        /// The stream's correlation id.
        cid: &'a str,
        /// The frame, spliced by the node the upstream called.
        frame: &'a [u8],
    },
    /// The stream ended on the upstream's side (its caller left, its timeout, a shutdown):
    /// stop relaying and free the correlation id.
    Close {
        /// The stream's correlation id.
        cid: &'a str,
    },
}

fn push_cid(tag: u8, cid: &str, out: &mut Vec<u8>) {
    out.push(tag);
    // Correlation ids are at most 128 bytes.
    out.push(u8::try_from(cid.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(cid.as_bytes());
}

/// Appends a send request.
pub(crate) fn encode_send(request: SendRequest<'_>, out: &mut Vec<u8>) {
    match request {
        SendRequest::Open { cid, frame } => {
            push_cid(b'o', cid, out);
            out.extend_from_slice(frame);
        }
        SendRequest::Close { cid } => push_cid(b'c', cid, out),
    }
}

/// Reads a send request.
pub(crate) fn decode_send(payload: &[u8]) -> Result<SendRequest<'_>, Malformed> {
    let (&tag, rest) = payload.split_first().ok_or(Malformed)?;
    let (&len, rest) = rest.split_first().ok_or(Malformed)?;
    let len = usize::from(len);
    if len == 0 || len > MAX_CORRELATION_ID_BYTES {
        return Err(Malformed);
    }
    let cid = rest.get(..len).ok_or(Malformed)?;
    let cid = std::str::from_utf8(cid).map_err(|_| Malformed)?;
    let after = &rest[len..];
    match tag {
        b'o' if !after.is_empty() => Ok(SendRequest::Open { cid, frame: after }),
        b'c' if after.is_empty() => Ok(SendRequest::Close { cid }),
        _ => Err(Malformed),
    }
}

/// Why a stream could not be opened on the device's node (docs/protocol.md §7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendRefusal {
    /// The correlation id is waiting there already (409).
    InUse,
    /// `max_pending_sends` streams are open there (503).
    TooMany,
    /// The device left (a stream with one event).
    NotConnected,
    /// The device's queue is full (503).
    QueueFull,
    /// The frame did not fit the memory budget there (503).
    OverBudget,
}

/// What the device's node tells the node the upstream called, on the stream's reply subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamMsg<'a> {
    /// The request is queued for the device: answers follow.
    Opened,
    /// The request was refused; nothing follows.
    Refused(SendRefusal),
    /// One correlated answer, as the device sent it.
    Answer {
        /// The device's text.
        text: &'a [u8],
        /// The answer ends the stream.
        is_final: bool,
    },
    /// The device's session ended: the stream ends with `User disconnected`.
    Gone,
    /// The device's node could not hold an answer for the stream (its buffer was full, or
    /// its memory budget): the stream ends with `Upstream too slow`.
    Overflowed,
}

/// Appends a stream message.
pub(crate) fn encode_stream(msg: StreamMsg<'_>, out: &mut Vec<u8>) {
    match msg {
        StreamMsg::Opened => out.push(b'O'),
        StreamMsg::Refused(why) => out.push(match why {
            SendRefusal::InUse => b'I',
            SendRefusal::TooMany => b'F',
            SendRefusal::NotConnected => b'N',
            SendRefusal::QueueFull => b'Q',
            SendRefusal::OverBudget => b'B',
        }),
        StreamMsg::Answer { text, is_final } => {
            out.push(if is_final { b'z' } else { b'a' });
            out.extend_from_slice(text);
        }
        StreamMsg::Gone => out.push(b'G'),
        StreamMsg::Overflowed => out.push(b'S'),
    }
}

/// Reads a stream message.
pub(crate) fn decode_stream(payload: &[u8]) -> Result<StreamMsg<'_>, Malformed> {
    let (&tag, rest) = payload.split_first().ok_or(Malformed)?;
    let bare = |msg| {
        if rest.is_empty() {
            Ok(msg)
        } else {
            Err(Malformed)
        }
    };
    match tag {
        b'O' => bare(StreamMsg::Opened),
        b'I' => bare(StreamMsg::Refused(SendRefusal::InUse)),
        b'F' => bare(StreamMsg::Refused(SendRefusal::TooMany)),
        b'N' => bare(StreamMsg::Refused(SendRefusal::NotConnected)),
        b'Q' => bare(StreamMsg::Refused(SendRefusal::QueueFull)),
        b'B' => bare(StreamMsg::Refused(SendRefusal::OverBudget)),
        b'G' => bare(StreamMsg::Gone),
        b'S' => bare(StreamMsg::Overflowed),
        b'a' | b'z' if !rest.is_empty() => Ok(StreamMsg::Answer {
            text: rest,
            is_final: tag == b'z',
        }),
        _ => Err(Malformed),
    }
}

/// Identifies a device session in the cluster, and orders two sessions of one user id when
/// neither is the plain older one (see [`holder_yields`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Stamp {
    /// When the session was registered, nanoseconds since the Unix epoch on its node's clock.
    pub nanos: u64,
    /// Its node's name.
    pub node: String,
    /// Its number on that node.
    pub session: u64,
}

/// A node telling the others that it has a session for a user id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Claim {
    /// The session was settled already: this claim is made again after the node's link to
    /// NATS came back (duplicates may have been accepted while the nodes could not talk).
    pub established: bool,
    /// The claiming session.
    pub stamp: Stamp,
}

/// Appends a claim: tag, the two numbers (8 bytes each, big-endian), then the node name.
pub(crate) fn encode_claim(claim: &Claim, out: &mut Vec<u8>) {
    out.push(if claim.established { b'E' } else { b'A' });
    out.extend_from_slice(&claim.stamp.nanos.to_be_bytes());
    out.extend_from_slice(&claim.stamp.session.to_be_bytes());
    out.extend_from_slice(claim.stamp.node.as_bytes());
}

/// Reads a claim.
pub(crate) fn decode_claim(payload: &[u8]) -> Result<Claim, Malformed> {
    let (&tag, rest) = payload.split_first().ok_or(Malformed)?;
    let established = match tag {
        b'E' => true,
        b'A' => false,
        _ => return Err(Malformed),
    };
    let number = |bytes: Option<&[u8]>| -> Result<u64, Malformed> {
        let b: [u8; 8] = bytes.ok_or(Malformed)?.try_into().map_err(|_| Malformed)?;
        Ok(u64::from_be_bytes(b))
    };
    let nanos = number(rest.get(..8))?;
    let session = number(rest.get(8..16))?;
    let node = std::str::from_utf8(rest.get(16..).ok_or(Malformed)?).map_err(|_| Malformed)?;
    if !is_valid_node_name(node) {
        return Err(Malformed);
    }
    Ok(Claim {
        established,
        stamp: Stamp {
            nanos,
            node: node.to_owned(),
            session,
        },
    })
}

/// The answer of a node that holds a session for a claimed user id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClaimReply {
    /// The holder closed its session: the claimer keeps its own.
    Released,
    /// The holder keeps its session: the claimer closes its own.
    Taken,
}

impl ClaimReply {
    /// The reply's payload.
    pub(crate) fn encode(self) -> &'static [u8] {
        match self {
            ClaimReply::Released => b"released",
            ClaimReply::Taken => b"taken",
        }
    }

    /// Reads a reply.
    pub(crate) fn decode(payload: &[u8]) -> Result<ClaimReply, Malformed> {
        match payload {
            b"released" => Ok(ClaimReply::Released),
            b"taken" => Ok(ClaimReply::Taken),
            _ => Err(Malformed),
        }
    }
}

/// Whether the session that holds a user id gives way to a claim for it, under the duplicate
/// policy (`newest_wins`: `on_duplicate = "replace"`).
///
/// An established session against a newcomer is the ordinary case: `reject` keeps the
/// established one, `replace` the newcomer. Two newcomers (they connected to two nodes at the
/// same time and each sees the other's claim while its own is in flight) or two established
/// sessions (accepted while the nodes could not reach NATS) are ordered by their stamps:
/// `reject` keeps the smaller, `replace` the larger. Both sides compute the same answer from
/// the same two stamps, so exactly one session survives, whatever the clocks say.
pub(crate) fn holder_yields(newest_wins: bool, holder: &Claim, claimer: &Claim) -> bool {
    let claimer_is_newer = match (holder.established, claimer.established) {
        (true, false) => true,
        (false, true) => false,
        _ => claimer.stamp > holder.stamp,
    };
    claimer_is_newer == newest_wins
}

/// What a heartbeat says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Beat {
    /// The node is there (every few seconds).
    Alive,
    /// The node just connected: the others answer with `Alive` at once.
    Hello,
    /// The node is stopping: the others forget it at once.
    Bye,
}

/// A node's heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Heartbeat<'a> {
    /// The node's name.
    pub node: &'a str,
    /// What it says.
    pub beat: Beat,
    /// The node's clock when it said it, milliseconds since the Unix epoch: the others learn
    /// how far its clock is from theirs, to judge the age of its requests.
    pub now_ms: u64,
}

/// Appends a heartbeat: tag, clock (8 bytes, big-endian), node name.
pub(crate) fn encode_heartbeat(heartbeat: Heartbeat<'_>, out: &mut Vec<u8>) {
    out.push(match heartbeat.beat {
        Beat::Alive => b'h',
        Beat::Hello => b'n',
        Beat::Bye => b'b',
    });
    out.extend_from_slice(&heartbeat.now_ms.to_be_bytes());
    out.extend_from_slice(heartbeat.node.as_bytes());
}

/// Reads a heartbeat.
pub(crate) fn decode_heartbeat(payload: &[u8]) -> Result<Heartbeat<'_>, Malformed> {
    let (&tag, rest) = payload.split_first().ok_or(Malformed)?;
    let beat = match tag {
        b'h' => Beat::Alive,
        b'n' => Beat::Hello,
        b'b' => Beat::Bye,
        _ => return Err(Malformed),
    };
    let time: [u8; 8] = rest
        .get(..8)
        .ok_or(Malformed)?
        .try_into()
        .map_err(|_| Malformed)?;
    let node = std::str::from_utf8(rest.get(8..).ok_or(Malformed)?).map_err(|_| Malformed)?;
    if !is_valid_node_name(node) {
        return Err(Malformed);
    }
    Ok(Heartbeat {
        node,
        beat,
        now_ms: u64::from_be_bytes(time),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids that are valid user ids (1–64 bytes of UTF-8 without U+0000–U+001F, U+007F) and
    /// hostile to a subject: its separators and wildcards, spaces, C1 characters, emoji.
    const HOSTILE: &[&str] = &[
        "a",
        "dev1",
        "a.b",
        "*",
        ">",
        "a.*.>",
        " ",
        "a b",
        "\u{85}",
        "\u{9f}x",
        "ä",
        "🦀🦀",
        "_INBOX.x",
        "wssed.dev.61.push",
        "%2e",
        "\\",
        "\"",
    ];

    #[test]
    fn subjects_round_trip_for_hostile_ids_and_stay_one_token() {
        let long = "é".repeat(32); // 64 bytes
        let mut ids: Vec<String> = HOSTILE.iter().map(|s| (*s).to_owned()).collect();
        ids.push(long);
        for id in &ids {
            for op in [Op::Push, Op::Send, Op::Claim] {
                let subject = device_subject(id, op);
                assert_eq!(subject.split('.').count(), 4, "{subject}");
                assert!(
                    subject
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.'),
                    "{subject} is not subject-safe"
                );
                assert_eq!(parse_device_subject(&subject), Some((id.clone(), op)));
            }
            let presence = presence_subject(id);
            assert!(presence.ends_with(".*"));
            assert_eq!(
                presence.trim_end_matches('*'),
                device_subject(id, Op::Push).trim_end_matches("push")
            );
        }
    }

    #[test]
    fn distinct_ids_never_share_a_subject() {
        let mut seen = std::collections::HashSet::new();
        for id in HOSTILE {
            assert!(seen.insert(device_subject(id, Op::Push)), "{id:?}");
        }
        // Prefixes and concatenations stay apart (fixed-width hex per byte).
        assert_ne!(
            device_subject("ab", Op::Push),
            device_subject("a", Op::Push)
        );
        assert_ne!(presence_subject("a"), presence_subject("a."));
    }

    #[test]
    fn foreign_subjects_name_no_device() {
        for s in [
            "wssed.dev..push",
            "wssed.dev.6.push",
            "wssed.dev.6G.push",
            "wssed.dev.6A.push",
            "wssed.dev.61.pull",
            "wssed.dev.61",
            "wssed.nodes",
            "wssed.dev.ff.push",
            "other.dev.61.push",
        ] {
            assert_eq!(parse_device_subject(s), None, "{s}");
        }
        let too_long = format!("wssed.dev.{}.push", "61".repeat(65));
        assert_eq!(parse_device_subject(&too_long), None);
    }

    #[test]
    fn request_headers_round_trip_and_damage_is_malformed() {
        let header = RequestHeader {
            sent_ms: 1_700_000_000_123,
            node: "gw-1.site",
        };
        let mut out = Vec::new();
        encode_request_header(header, &mut out);
        out.extend_from_slice(b"rest");
        let (got, at) = split_request_header(&out).unwrap();
        assert_eq!(got, header);
        assert_eq!(&out[at..], b"rest");
        for cut in 0..at {
            assert_eq!(
                split_request_header(&out[..cut]),
                Err(Malformed),
                "cut {cut}"
            );
        }
        let mut bad = out.clone();
        bad[9] = b'*';
        assert_eq!(split_request_header(&bad), Err(Malformed));
    }

    #[test]
    fn frames_round_trip_and_damage_is_malformed() {
        let mut payload = Vec::new();
        for f in [&b"{\"a\":1}"[..], b"x", &[0u8; 300][..]] {
            encode_frame(f, &mut payload);
        }
        let ranges = frame_ranges(&payload).unwrap();
        let frames: Vec<&[u8]> = ranges.iter().map(|r| &payload[r.clone()]).collect();
        assert_eq!(frames[0], b"{\"a\":1}");
        assert_eq!(frames[1], b"x");
        assert_eq!(frames[2].len(), 300);
        for cut in 0..payload.len() {
            let r = frame_ranges(&payload[..cut]);
            if cut == 0 {
                assert_eq!(r, Err(Malformed), "empty");
            } else if ![11, 16].contains(&cut) {
                assert_eq!(r, Err(Malformed), "cut at {cut}");
            }
        }
        let huge = [0xffu8, 0xff, 0xff, 0xff, b'x'];
        assert_eq!(frame_ranges(&huge), Err(Malformed));
        let mut many = Vec::new();
        for _ in 0..=MAX_FRAMES_PER_REQUEST {
            encode_frame(b"x", &mut many);
        }
        assert_eq!(frame_ranges(&many), Err(Malformed));
    }

    #[test]
    fn deliveries_round_trip_and_must_match_the_request() {
        let all = [
            Delivery::Delivered,
            Delivery::NotConnected,
            Delivery::QueueFull,
            Delivery::OverBudget,
        ];
        let bytes = encode_deliveries(&all);
        assert_eq!(decode_deliveries(&bytes, 4).unwrap(), all);
        assert_eq!(decode_deliveries(&bytes, 3), Err(Malformed));
        assert_eq!(decode_deliveries(b"DX", 2), Err(Malformed));
    }

    #[test]
    fn send_requests_round_trip_and_damage_is_malformed() {
        for req in [
            SendRequest::Open {
                cid: "req_1",
                frame: b"{\"x\":1}",
            },
            SendRequest::Close { cid: "req_1" },
        ] {
            let mut out = Vec::new();
            encode_send(req, &mut out);
            assert_eq!(decode_send(&out), Ok(req));
            // NATS carries whole messages; a cut inside the head (tag, length, id) is caught.
            for cut in 0..=2 + "req_1".len() {
                if cut < out.len() {
                    assert_eq!(decode_send(&out[..cut]), Err(Malformed), "cut {cut}");
                }
            }
        }
        assert_eq!(decode_send(b"o\x00{}"), Err(Malformed));
        assert_eq!(decode_send(b"c\x01ax"), Err(Malformed));
        assert_eq!(decode_send(b"o\x01\xff{}"), Err(Malformed));
        assert_eq!(decode_send(b"x\x01a{}"), Err(Malformed));
    }

    #[test]
    fn stream_messages_round_trip() {
        let msgs = [
            StreamMsg::Opened,
            StreamMsg::Refused(SendRefusal::InUse),
            StreamMsg::Refused(SendRefusal::TooMany),
            StreamMsg::Refused(SendRefusal::NotConnected),
            StreamMsg::Refused(SendRefusal::QueueFull),
            StreamMsg::Refused(SendRefusal::OverBudget),
            StreamMsg::Answer {
                text: b"{\"a\":1}",
                is_final: false,
            },
            StreamMsg::Answer {
                text: b"{}",
                is_final: true,
            },
            StreamMsg::Gone,
            StreamMsg::Overflowed,
        ];
        for msg in msgs {
            let mut out = Vec::new();
            encode_stream(msg, &mut out);
            assert_eq!(decode_stream(&out), Ok(msg));
        }
        assert_eq!(decode_stream(b""), Err(Malformed));
        assert_eq!(decode_stream(b"a"), Err(Malformed));
        assert_eq!(decode_stream(b"Ox"), Err(Malformed));
    }

    fn claim(established: bool, nanos: u64, node: &str) -> Claim {
        Claim {
            established,
            stamp: Stamp {
                nanos,
                node: node.to_owned(),
                session: 7,
            },
        }
    }

    #[test]
    fn claims_round_trip_and_damage_is_malformed() {
        let c = claim(true, 1_700_000_000_000_000_000, "gw-1.site");
        let mut out = Vec::new();
        encode_claim(&c, &mut out);
        assert_eq!(decode_claim(&out), Ok(c));
        for cut in 0..18 {
            assert_eq!(decode_claim(&out[..cut]), Err(Malformed), "cut {cut}");
        }
        out[0] = b'X';
        assert_eq!(decode_claim(&out), Err(Malformed));
        for reply in [ClaimReply::Released, ClaimReply::Taken] {
            assert_eq!(ClaimReply::decode(reply.encode()), Ok(reply));
        }
        assert_eq!(ClaimReply::decode(b"maybe"), Err(Malformed));
    }

    #[test]
    fn an_established_session_against_a_newcomer_follows_the_policy() {
        let held = claim(true, 100, "a");
        // The newcomer's clock may be behind: the policy, not the clocks, decides.
        let newcomer = claim(false, 5, "b");
        assert!(
            !holder_yields(false, &held, &newcomer),
            "reject keeps the first"
        );
        assert!(
            holder_yields(true, &held, &newcomer),
            "replace keeps the newcomer"
        );
        // The same pair seen from the newcomer's node, when it holds and the other claims.
        let newcomer_holds = claim(false, 5, "b");
        let established_claims = claim(true, 100, "a");
        assert!(holder_yields(false, &newcomer_holds, &established_claims));
        assert!(!holder_yields(true, &newcomer_holds, &established_claims));
    }

    #[test]
    fn two_peers_settle_on_exactly_one_survivor() {
        for established in [false, true] {
            for newest_wins in [false, true] {
                let x = claim(established, 100, "a");
                let y = claim(established, 100, "b");
                // x holds and y claims, and the other way round: exactly one gives way.
                let x_yields = holder_yields(newest_wins, &x, &y);
                let y_yields = holder_yields(newest_wins, &y, &x);
                assert_ne!(x_yields, y_yields, "{established} {newest_wins}");
                // reject keeps the smaller stamp, replace the larger.
                assert_eq!(x_yields, newest_wins);
            }
        }
    }

    #[test]
    fn heartbeats_round_trip_and_node_names_are_checked() {
        for beat in [Beat::Alive, Beat::Hello, Beat::Bye] {
            let heartbeat = Heartbeat {
                node: "gw-1",
                beat,
                now_ms: 1_700_000_000_123,
            };
            let mut out = Vec::new();
            encode_heartbeat(heartbeat, &mut out);
            assert_eq!(decode_heartbeat(&out), Ok(heartbeat));
        }
        assert_eq!(decode_heartbeat(b"h"), Err(Malformed));
        assert_eq!(decode_heartbeat(b"h\0\0\0\0\0\0\0\0gw 1"), Err(Malformed));
        assert_eq!(decode_heartbeat(b"h\0\0\0gw1"), Err(Malformed));
        assert!(is_valid_node_name("raspberrypi.local"));
        assert!(!is_valid_node_name(""));
        assert!(!is_valid_node_name("a*b"));
        assert!(!is_valid_node_name(&"a".repeat(65)));
    }
}

//! Helpers shared by the fuzz targets: split points drawn from the input itself, a model of the
//! connection driver's request loop, and an independent chunked decoder used as an oracle.
//!
//! Split points come from a PRNG seeded with a hash of the input, so a fuzz input is just the
//! bytes a peer sends (seed files are real requests) and every crash replays exactly.

use wssed::wire::http::{
    check_content_length, parse_head, BodyFraming, ChunkedDecoder, HeadStatus, HttpError,
};

pub mod chunked_ref;

/// A small deterministic PRNG (xorshift64*), seeded from the fuzz input.
pub struct Rng(u64);

impl Rng {
    /// Seeds from an FNV-1a hash of `data` and a per-use `salt`.
    pub fn from_input(data: &[u8], salt: u64) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ salt;
        for &b in data {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        Rng(h | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`0` when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

/// Read sizes a socket might deliver for `len` bytes: a mix of single bytes, small and large
/// pieces, summing to `len`.
pub fn random_pieces(rng: &mut Rng, len: usize) -> Vec<usize> {
    let mut pieces = Vec::new();
    let mut left = len;
    while left > 0 {
        let size = match rng.below(4) {
            0 => 1,
            1 => 1 + rng.below(8),
            2 => 1 + rng.below(64),
            _ => 1 + rng.below(4096),
        }
        .min(left);
        pieces.push(size);
        left -= size;
    }
    pieces
}

/// What the modelled driver saw, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete head (its `Debug` form, so that it outlives the buffer) and its length.
    Head(String, usize),
    /// A complete body.
    Body(Vec<u8>),
}

/// Where the modelled driver stands after the last read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for (more of) a head.
    Head,
    /// Waiting for this many more `Content-Length` bytes.
    Length(usize),
    /// Inside a chunked body; the payload decoded so far.
    Chunked(Vec<u8>),
    /// A framing error: the connection is answered and closed.
    Failed(HttpError),
}

/// The request loop of `conn.rs` without I/O or routing: one growing buffer, `parse_head` on the
/// unconsumed bytes after each read, then the body by its framing, then the next head.
pub struct Driver {
    buf: Vec<u8>,
    /// Bytes of `buf` consumed by heads and bodies.
    start: usize,
    max_body_bytes: usize,
    decoder: Option<ChunkedDecoder>,
    /// Events so far.
    pub events: Vec<Event>,
    /// Where it stands.
    pub phase: Phase,
}

impl Driver {
    /// A driver for one connection with the given body limit.
    pub fn new(max_body_bytes: usize) -> Self {
        Driver {
            buf: Vec::new(),
            start: 0,
            max_body_bytes,
            decoder: None,
            events: Vec::new(),
            phase: Phase::Head,
        }
    }

    /// Bytes consumed so far.
    pub fn consumed(&self) -> usize {
        self.start
    }

    /// One read from the socket.
    pub fn feed(&mut self, bytes: &[u8]) {
        if matches!(self.phase, Phase::Failed(_)) {
            return;
        }
        self.buf.extend_from_slice(bytes);
        if let Err(e) = self.run() {
            self.phase = Phase::Failed(e);
        }
    }

    fn run(&mut self) -> Result<(), HttpError> {
        loop {
            let pending = self.buf.get(self.start..).unwrap_or_default();
            match &mut self.phase {
                Phase::Failed(_) => return Ok(()),
                Phase::Head => match parse_head(pending)? {
                    HeadStatus::Partial => return Ok(()),
                    HeadStatus::Complete { head, consumed } => {
                        self.events.push(Event::Head(format!("{head:?}"), consumed));
                        self.phase = match head.body {
                            BodyFraming::None => Phase::Length(0),
                            BodyFraming::Length(n) => {
                                Phase::Length(check_content_length(n, self.max_body_bytes)?)
                            }
                            BodyFraming::Chunked => {
                                self.decoder = Some(ChunkedDecoder::new(self.max_body_bytes));
                                Phase::Chunked(Vec::new())
                            }
                        };
                        self.start += consumed;
                    }
                },
                Phase::Length(n) => {
                    let n = *n;
                    let Some(body) = pending.get(..n) else {
                        return Ok(());
                    };
                    self.events.push(Event::Body(body.to_vec()));
                    self.start += n;
                    self.phase = Phase::Head;
                }
                Phase::Chunked(payload) => {
                    let Some(decoder) = self.decoder.as_mut() else {
                        return Ok(());
                    };
                    let d = decoder.decode(pending, payload)?;
                    assert!(d.consumed <= pending.len(), "consumed more than given");
                    assert!(
                        d.done || d.consumed == pending.len(),
                        "unfinished body left input unconsumed: {d:?} of {}",
                        pending.len()
                    );
                    self.start += d.consumed;
                    if !d.done {
                        return Ok(());
                    }
                    let body = std::mem::take(payload);
                    assert!(body.len() <= self.max_body_bytes, "payload over the limit");
                    self.events.push(Event::Body(body));
                    self.decoder = None;
                    self.phase = Phase::Head;
                }
            }
        }
    }
}

/// Runs a driver over `data` delivered in reads of the given sizes.
pub fn drive(data: &[u8], pieces: &[usize], max_body_bytes: usize) -> Driver {
    let mut d = Driver::new(max_body_bytes);
    let mut at = 0;
    for &n in pieces {
        let end = (at + n).min(data.len());
        d.feed(data.get(at..end).unwrap_or_default());
        at = end;
    }
    d.feed(data.get(at..).unwrap_or_default());
    d
}

/// Decodes `data` with one fresh `ChunkedDecoder`, delivered in reads of the given sizes, the way
/// the driver does: each call gets what arrived and was not consumed yet. Also checks that `done`
/// and errors are sticky.
pub fn chunked_in_pieces(
    data: &[u8],
    pieces: &[usize],
    max_body_bytes: usize,
) -> Result<(Vec<u8>, usize, bool), HttpError> {
    let mut decoder = ChunkedDecoder::new(max_body_bytes);
    let mut out = Vec::new();
    let mut consumed = 0;
    let mut arrived = 0;
    let ends = pieces
        .iter()
        .scan(0usize, |acc, &n| {
            *acc += n;
            Some(*acc)
        })
        .chain(std::iter::once(data.len()));
    for end in ends {
        arrived = arrived.max(end.min(data.len()));
        let input = data.get(consumed..arrived).unwrap_or_default();
        let d = match decoder.decode(input, &mut out) {
            Ok(d) => d,
            Err(e) => {
                let again = decoder.decode(b"0\r\n\r\n", &mut out);
                assert_eq!(again, Err(e), "errors are sticky");
                return Err(e);
            }
        };
        assert!(d.consumed <= input.len(), "consumed more than given");
        assert!(
            d.done || d.consumed == input.len(),
            "unfinished body left input unconsumed"
        );
        consumed += d.consumed;
        if d.done {
            let before = out.len();
            let again = decoder.decode(data.get(consumed..).unwrap_or_default(), &mut out);
            assert_eq!(
                again.map(|d| (d.consumed, d.done)),
                Ok((0, true)),
                "done is sticky"
            );
            assert_eq!(out.len(), before, "a finished decoder writes nothing");
            return Ok((out, consumed, true));
        }
    }
    Ok((out, consumed, false))
}

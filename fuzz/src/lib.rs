//! Helpers shared by the fuzz targets: split points drawn from the input itself, the daemon's
//! request framer driven as the connection driver drives it (`framing`), and an independent
//! chunked decoder used as an oracle.
//!
//! Split points come from a PRNG seeded with a hash of the input, so a fuzz input is just the
//! bytes a peer sends (seed files are real requests) and every crash replays exactly.

use wssed::wire::http::{ChunkedDecoder, HttpError};

pub mod chunked_ref;
pub mod framing;

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

/// Decodes `data` with one fresh `ChunkedDecoder`, delivered in reads of the given sizes, the way
/// the framer feeds it: each call gets what arrived and was not consumed yet. Also checks that
/// `done` and errors are sticky.
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

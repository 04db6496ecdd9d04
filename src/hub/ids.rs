//! Correlation ids the server generates (docs/protocol.md §4.1: UUID strings).

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::wire::ascii::hex_digit;

/// Length of a UUID string: 32 hex digits and 4 dashes.
pub(crate) const UUID_STRING_BYTES: usize = 36;

const MASK_62: u64 = (1 << 62) - 1;

struct Seed {
    /// Keyed SipHash from OS randomness: makes the ids unpredictable.
    hasher: std::hash::RandomState,
    /// Whitening key of the 62-bit counter bijection.
    key: u64,
}

static SEED: OnceLock<Seed> = OnceLock::new();
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A bijection of the 62-bit space: xor with a key, multiply by odd constants and xor-shift,
/// all modulo 2^62. Distinct counters therefore give distinct outputs.
fn mix_62(n: u64, key: u64) -> u64 {
    let mut x = (n ^ key) & MASK_62;
    x = x.wrapping_mul(0x9e37_79b9_7f4a_7c15) & MASK_62;
    x ^= x >> 29;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9) & MASK_62;
    x ^= x >> 32;
    x
}

/// A fresh UUID v4 string (lower-case hex, 36 chars), unique within the process.
///
/// The low 62 random bits are a bijection of a process-wide counter (never a repeat before
/// 2^62 calls); the high 60 are a keyed hash of it.
pub(crate) fn new_correlation_id() -> heapless::String<UUID_STRING_BYTES> {
    let seed = SEED.get_or_init(|| {
        let hasher = std::hash::RandomState::new();
        let key = hasher.hash_one(0x5eed_u64);
        Seed { hasher, key }
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let hi = (seed.hasher.hash_one(n) & !0xf000) | 0x4000; // version 4
    let lo = mix_62(n, seed.key) | (1 << 63); // variant 10
    format_uuid((u128::from(hi) << 64) | u128::from(lo))
}

fn format_uuid(v: u128) -> heapless::String<UUID_STRING_BYTES> {
    // Filled as bytes and converted once: a push per character cost ~1k instructions a push.
    let mut text = [b'-'; UUID_STRING_BYTES];
    let mut nibble_index = 0;
    for (pos, byte) in text.iter_mut().enumerate() {
        if matches!(pos, 8 | 13 | 18 | 23) {
            continue;
        }
        // The shift leaves the nibble in the low bits; hex_digit masks the rest away.
        *byte = hex_digit((v >> (124 - 4 * nibble_index)) as u8);
        nibble_index += 1;
    }
    // Only ASCII hex digits and dashes were written, and they fill the capacity exactly.
    core::str::from_utf8(&text)
        .ok()
        .and_then(|t| heapless::String::try_from(t).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn formats_the_canonical_8_4_4_4_12_groups() {
        assert_eq!(
            format_uuid(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef).as_str(),
            "01234567-89ab-cdef-0123-456789abcdef"
        );
        assert_eq!(
            format_uuid(0).as_str(),
            "00000000-0000-0000-0000-000000000000"
        );
    }

    fn is_uuid_v4(s: &str) -> bool {
        let b = s.as_bytes();
        b.len() == 36
            && b.iter().enumerate().all(|(i, &c)| match i {
                8 | 13 | 18 | 23 => c == b'-',
                _ => c.is_ascii_digit() || (b'a'..=b'f').contains(&c),
            })
            && b[14] == b'4'
            && matches!(b[19], b'8' | b'9' | b'a' | b'b')
    }

    #[test]
    fn ids_are_uuid_v4_strings() {
        for _ in 0..1000 {
            let id = new_correlation_id();
            assert!(is_uuid_v4(&id), "{id}");
        }
    }

    #[test]
    fn ids_do_not_repeat_across_threads() {
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| (0..5000).map(|_| new_correlation_id()).collect::<Vec<_>>())
            })
            .collect();
        let mut seen = HashSet::new();
        for t in threads {
            for id in t.join().unwrap() {
                assert!(seen.insert(id.clone()), "repeated {id}");
            }
        }
        assert_eq!(seen.len(), 20_000);
    }

    #[test]
    fn mixer_is_injective_on_a_sample() {
        let key = 0x1234_5678_9abc_def0;
        let mut seen = HashSet::new();
        for n in 0..100_000u64 {
            let x = mix_62(n, key);
            assert!(x <= MASK_62);
            assert!(seen.insert(x));
        }
    }

    #[test]
    fn format_places_every_nibble() {
        assert_eq!(
            format_uuid(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210).as_str(),
            "01234567-89ab-cdef-fedc-ba9876543210"
        );
    }
}

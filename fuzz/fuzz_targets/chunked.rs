//! `ChunkedDecoder` on whatever follows a `Transfer-Encoding: chunked` head.
//!
//! Invariants:
//! - fed in one call, one byte per call or random pieces, it gives the same payload, the same
//!   consumed count and done flag, or the same error; `done` and errors are sticky;
//! - it agrees (payload, end, error kind) with an independent line-oriented decoder of the same
//!   documented grammar (`wssed_fuzz::chunked_ref`);
//! - the payload never exceeds the body limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wssed_fuzz::chunked_ref::{self, Outcome};
use wssed_fuzz::{chunked_in_pieces, random_pieces, Rng};

/// Body limits to try; which one is drawn from the input.
const LIMITS: [usize; 7] = [0, 1, 5, 64, 1000, 65536, usize::MAX];

fuzz_target!(|data: &[u8]| {
    let mut rng = Rng::from_input(data, 1);
    let max = LIMITS[rng.below(LIMITS.len())];

    let whole = chunked_in_pieces(data, &[], max);
    let splits = [
        vec![1; data.len()],
        random_pieces(&mut rng, data.len()),
        random_pieces(&mut rng, data.len()),
    ];
    for pieces in &splits {
        let split = chunked_in_pieces(data, pieces, max);
        assert_eq!(split, whole, "max {max}, reads {pieces:?}");
    }

    let reference = chunked_ref::decode(data, max as u64);
    let ours = match &whole {
        Ok((payload, consumed, true)) => Outcome::Done(payload.clone(), *consumed),
        Ok((payload, consumed, false)) => {
            assert_eq!(*consumed, data.len(), "unfinished but not all consumed");
            Outcome::Incomplete(payload.clone())
        }
        Err(e) => Outcome::Error(*e),
    };
    assert_eq!(ours, reference, "max {max}");
    if let Ok((payload, _, _)) = &whole {
        assert!(payload.len() <= max);
    }
});

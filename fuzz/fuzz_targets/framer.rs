//! The daemon's request framer, `wssed::wire::http::Framer`, on arbitrary byte streams split
//! arbitrarily, each request's body read or skipped as the input draws it (driven by
//! `wssed_fuzz::framing`, the loop `src/net/conn.rs` runs, without I/O).
//!
//! Invariants:
//! - same answer for any split: the requests seen (head, body decision, payload, wire bytes of
//!   head and body), then the end state (waiting, in a body or not; the framing error; closed
//!   after a refused skip) and the bytes consumed, whether the input arrives in one read, one
//!   byte per read (small inputs) or three random read patterns, with the same skip decisions
//!   (and, fewer splits, with every decision inverted, and with every body read);
//! - a step never consumes more than it was given, an unfinished head consumes nothing and an
//!   unfinished body everything (checked at every step by `wssed_fuzz::framing`);
//! - never past a request's end: each request's head bytes parse alone to the same head; its
//!   body bytes are exactly `Content-Length` bytes, or exactly one chunked body (the reference
//!   decoder ends there, with the same payload); a framer started fresh on the bytes after any
//!   `BodyDone` gives the remaining requests and the same end, so pipelined requests come out
//!   whole and in order;
//! - skipping frames as reading does: up to the first skip refused, the requests are those of
//!   an all-read run; a skip is refused exactly when the head expects `100 Continue` and has a
//!   body, or its `Content-Length` is over the limit; `read_body` owes `100 Continue` exactly
//!   when the head expects it and has a body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wssed::wire::http::{parse_head, BodyFraming, HeadStatus, HttpError, Interim};
use wssed_fuzz::chunked_ref::{self, Outcome};
use wssed_fuzz::framing::{assert_same_answer, run, BodyChoice, Decision, End, Request, Run};
use wssed_fuzz::{random_pieces, Rng};

/// Inputs up to this size are also fed one byte per read (every prefix of a head is parsed).
const BYTEWISE_MAX_BYTES: usize = 2048;
/// Body limits to try; which one is drawn from the input.
const LIMITS: [usize; 6] = [0, 1, 16, 256, 65536, usize::MAX];
/// Restarts after a `BodyDone` tried per input.
const MAX_RESTARTS: usize = 4;

fuzz_target!(|data: &[u8]| {
    let mut rng = Rng::from_input(data, 2);
    let max = LIMITS[rng.below(LIMITS.len())];
    let skips = rng.next_u64();
    let mixed = move |i: usize| {
        if (skips >> (i % 64)) & 1 == 1 {
            BodyChoice::Skip
        } else {
            BodyChoice::Read
        }
    };
    let read = |_| BodyChoice::Read;

    let whole = run(data, &[], max, &mixed);
    check_wire(data, &whole, max);
    let mut splits = vec![
        random_pieces(&mut rng, data.len()),
        random_pieces(&mut rng, data.len()),
        random_pieces(&mut rng, data.len()),
    ];
    if data.len() <= BYTEWISE_MAX_BYTES {
        splits.push(vec![1; data.len()]);
    }
    for pieces in &splits {
        let split = run(data, pieces, max, &mixed);
        assert_same_answer(&split, &whole, pieces);
    }

    // Every request is skipped in `whole` or in `inverted_whole`, and read in `all_read`.
    let inverted = |i: usize| match mixed(i) {
        BodyChoice::Read => BodyChoice::Skip,
        BodyChoice::Skip => BodyChoice::Read,
    };
    let all_read = run(data, &[], max, &read);
    let inverted_whole = run(data, &[], max, &inverted);
    check_wire(data, &all_read, max);
    check_wire(data, &inverted_whole, max);
    if let Some(pieces) = splits.first() {
        assert_same_answer(&run(data, pieces, max, &read), &all_read, pieces);
        assert_same_answer(&run(data, pieces, max, &inverted), &inverted_whole, pieces);
    }
    check_skips(&whole, &all_read, max);
    check_skips(&inverted_whole, &all_read, max);

    // Fresh framers on the bytes after some `BodyDone`s, the choices shifted to match.
    let complete = whole.requests.iter().filter(|r| r.complete).count();
    for _ in 0..complete.min(MAX_RESTARTS) {
        let k = 1 + rng.below(complete);
        let offset: usize = whole.requests.iter().take(k).map(Request::wire_bytes).sum();
        let shifted = |i: usize| mixed(i + k);
        let rest = run(data.get(offset..).unwrap_or_default(), &[], max, &shifted);
        let expected = Run {
            requests: whole.requests.get(k..).unwrap_or_default().to_vec(),
            end: whole.end,
            consumed: whole.consumed - offset,
        };
        assert_eq!(
            rest.answer(),
            expected.answer(),
            "restarted after request {k} (at byte {offset})"
        );
    }
});

/// Each request's wire bytes, cut from the input by the run's counts, are exactly one request.
fn check_wire(data: &[u8], run: &Run, max: usize) {
    let mut offset = 0;
    for (i, r) in run.requests.iter().enumerate() {
        let head_end = offset + r.head_bytes;
        let head = data.get(offset..head_end).expect("head within the input");
        match parse_head(head) {
            Ok(HeadStatus::Complete { head, consumed }) => {
                assert_eq!(consumed, r.head_bytes, "request {i}: head alone");
                assert_eq!(format!("{head:?}"), r.head, "request {i}: head alone");
            }
            other => panic!("request {i}: head alone gives {other:?}"),
        }
        let body_end = head_end + r.body_bytes;
        let wire = data.get(head_end..body_end).expect("body within the input");
        // A body cut short by an error or a refused skip has no end to check.
        let unfinished = !r.complete && !matches!(run.end, End::Waiting { in_body: true });
        // A skipped body passes through the framer and is kept nowhere.
        if matches!(r.decision, Some(Decision::Skipped(_))) {
            assert!(r.body.is_empty(), "request {i}: a skipped body was kept");
        } else if !unfinished {
            if !r.complete {
                assert_eq!(
                    body_end,
                    data.len(),
                    "request {i}: an unfinished body took all"
                );
            }
            match r.framing {
                BodyFraming::None => {
                    assert!(r.complete, "request {i}: no body, yet not done");
                    assert_eq!((r.body_bytes, r.body.len()), (0, 0), "request {i}");
                }
                BodyFraming::Length(n) => {
                    assert_eq!(r.body, wire, "request {i}: payload is the wire bytes");
                    let len = u64::try_from(r.body_bytes).unwrap_or(u64::MAX);
                    if r.complete {
                        assert_eq!(len, n, "request {i}: Content-Length");
                    } else {
                        assert!(len < n, "request {i}: unfinished at {len} of {n}");
                    }
                }
                BodyFraming::Chunked => {
                    let limit = u64::try_from(max).unwrap_or(u64::MAX);
                    let expected = if r.complete {
                        Outcome::Done(r.body.clone(), r.body_bytes)
                    } else {
                        Outcome::Incomplete(r.body.clone())
                    };
                    assert_eq!(
                        chunked_ref::decode(wire, limit),
                        expected,
                        "request {i}: chunked body"
                    );
                }
            }
        }
        offset = body_end;
    }
    assert_eq!(offset, run.consumed, "consumed is the requests' bytes");
    if run.end == (End::Waiting { in_body: false }) {
        let rest = data.get(offset..).unwrap_or_default();
        assert_eq!(
            parse_head(rest),
            Ok(HeadStatus::Partial),
            "waiting on a head"
        );
    }
}

/// Skipping a body frames as reading it does, and is refused exactly when it must be.
fn check_skips(mixed: &Run, all_read: &Run, max: usize) {
    for (i, (m, r)) in mixed.requests.iter().zip(&all_read.requests).enumerate() {
        let has_body = m.framing != BodyFraming::None;
        let over = matches!(m.framing, BodyFraming::Length(n)
            if usize::try_from(n).map_or(true, |n| n > max));
        match m.decision {
            Some(Decision::Skipped(ok)) => {
                let refused = (m.expect_continue && has_body) || over;
                assert_eq!(!ok, refused, "request {i}: skip_body said {ok}");
                if refused {
                    // The connection closes here; the read run may go on.
                    assert_eq!(mixed.end, End::Closed, "request {i}: closed after refusal");
                    assert_eq!((&m.head, m.head_bytes), (&r.head, r.head_bytes));
                    return;
                }
            }
            Some(Decision::Read(interim)) => {
                let owed = m.expect_continue && has_body;
                assert_eq!(interim == Interim::Continue, owed, "request {i}: interim");
                assert!(!over, "request {i}: read over the limit");
            }
            None => {
                assert!(over, "request {i}: read_body failed within the limit");
                assert_eq!(mixed.end, End::Failed(HttpError::BodyTooLarge));
            }
        }
    }
    // Skipped bodies are not kept, so bodies are compared only where both runs read them.
    let skipped: Vec<bool> = mixed
        .requests
        .iter()
        .map(|r| matches!(r.decision, Some(Decision::Skipped(_))))
        .collect();
    let neutral = |run: &Run| {
        let (mut requests, end, consumed) = run.answer();
        for (i, r) in requests.iter_mut().enumerate() {
            r.decision = None;
            if skipped.get(i).copied().unwrap_or(false) {
                r.body.clear();
            }
        }
        (requests, end, consumed)
    };
    assert_eq!(neutral(mixed), neutral(all_read), "skipped vs read");
}

//! `parse_head` and the request loop around it, on whatever a peer sends.
//!
//! Invariants:
//! - the head parser's documented facts hold for the whole input (Partial only below
//!   `MAX_HEAD_BYTES`, a complete head ends in an empty line, ...);
//! - the connection's answer (heads, bodies, then waiting or a framing error) is the same when
//!   the bytes arrive in one read, one byte per read (small inputs) or in random reads.
//!
//! `WSSED_FUZZ_TOLERATE=Split/Whole,...` (e.g. `Malformed/MissingVersion`) lets a long run go on
//! past an open finding: a split read that ends in error `Split` where the whole input ends in
//! `Whole` is then not a failure. Unset (CI, regressions) everything counts.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wssed::wire::http::{parse_head, BodyFraming, HeadStatus, Method, Version};
use wssed::wire::limits::{MAX_HEAD_BYTES, MAX_TARGET_BYTES};
use wssed_fuzz::{drive, random_pieces, Phase, Rng};

/// Inputs up to this size are also fed one byte per read (every prefix is parsed).
const BYTEWISE_MAX_BYTES: usize = 2048;
/// A small body limit, so that 413 is reachable.
const MAX_BODY_BYTES: usize = 256;

fuzz_target!(|data: &[u8]| {
    check_head_facts(data);

    let whole = drive(data, &[], MAX_BODY_BYTES);
    let mut rng = Rng::from_input(data, 0);
    let mut splits = vec![
        random_pieces(&mut rng, data.len()),
        random_pieces(&mut rng, data.len()),
    ];
    if data.len() <= BYTEWISE_MAX_BYTES {
        splits.push(vec![1; data.len()]);
    }
    for pieces in splits {
        let split = drive(data, &pieces, MAX_BODY_BYTES);
        assert_eq!(
            split.events, whole.events,
            "events differ; reads {pieces:?}"
        );
        if tolerated(&split.phase, &whole.phase) {
            continue;
        }
        assert_eq!(
            split.phase, whole.phase,
            "end state differs; reads {pieces:?}"
        );
        // After a framing error nothing more is read, so bytes consumed no longer matter.
        if !matches!(whole.phase, Phase::Failed(_)) {
            assert_eq!(
                split.consumed(),
                whole.consumed(),
                "consumed differs; reads {pieces:?}"
            );
        }
    }
});

/// Whether this pair of end states is an open finding the run was told to step over.
fn tolerated(split: &Phase, whole: &Phase) -> bool {
    static PAIRS: OnceLock<Vec<String>> = OnceLock::new();
    let pairs = PAIRS.get_or_init(|| {
        std::env::var("WSSED_FUZZ_TOLERATE")
            .unwrap_or_default()
            .split(',')
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect()
    });
    match (split, whole) {
        (Phase::Failed(a), Phase::Failed(b)) => pairs.contains(&format!("{a:?}/{b:?}")),
        _ => false,
    }
}

/// The facts `parse_head`'s documentation promises, on the input as one buffer.
fn check_head_facts(data: &[u8]) {
    match parse_head(data) {
        Err(_) => {}
        Ok(HeadStatus::Partial) => {
            assert!(
                data.len() < MAX_HEAD_BYTES,
                "Partial at {} bytes",
                data.len()
            );
        }
        Ok(HeadStatus::Complete { head, consumed }) => {
            assert!(
                consumed <= data.len().min(MAX_HEAD_BYTES),
                "consumed {consumed}"
            );
            let bytes = data.get(..consumed).unwrap_or_default();
            assert!(
                bytes.ends_with(b"\n\n") || bytes.ends_with(b"\n\r\n"),
                "a head ends with an empty line"
            );
            // The head alone parses to the same head.
            assert_eq!(
                parse_head(bytes),
                Ok(HeadStatus::Complete {
                    head: head.clone(),
                    consumed
                })
            );
            assert!(head.target.len() <= MAX_TARGET_BYTES, "target too long");
            if head.path == "*" {
                assert_eq!(head.method, Method::Options);
                assert_eq!(head.target, "*");
            } else {
                assert!(head.path.starts_with('/'), "path {:?}", head.path);
            }
            if let Some(q) = head.query {
                assert!(head.target.ends_with(q) && head.target.contains('?'));
            }
            let http11 = head.version == Version::Http11;
            if head.body == BodyFraming::Chunked || head.upgrade_websocket || head.expect_continue {
                assert!(http11, "1.1-only facts on a 1.0 request");
            }
            if !http11 && head.keep_alive {
                assert!(
                    data.to_ascii_lowercase()
                        .windows(10)
                        .any(|w| w == b"keep-alive"),
                    "1.0 keep-alive without asking"
                );
            }
        }
    }
}

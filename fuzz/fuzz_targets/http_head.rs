//! `parse_head`, and the daemon's request framer around it, on whatever a peer sends.
//!
//! Invariants:
//! - the head parser's documented facts hold for the whole input (Partial only below
//!   `MAX_HEAD_BYTES`, a complete head ends in an empty line, ...);
//! - the connection's answer (heads, bodies, then waiting or a framing error), from
//!   `wssed::wire::http::Framer` driven as `src/net/conn.rs` drives it, is the same when the bytes
//!   arrive in one read, one byte per read (small inputs) or in random reads.
//!
//! `WSSED_FUZZ_TOLERATE=Split/Whole,...` (e.g. `Malformed/MissingVersion`) lets a long run go on
//! past an open finding: a split read that ends in error `Split` where the whole input ends in
//! `Whole` is then not a failure. Unset (CI, regressions) everything counts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wssed::wire::http::{parse_head, BodyFraming, HeadStatus, Method, Version};
use wssed::wire::limits::{MAX_HEAD_BYTES, MAX_TARGET_BYTES};
use wssed_fuzz::framing::{assert_same_answer, run, BodyChoice};
use wssed_fuzz::{random_pieces, Rng};

/// Inputs up to this size are also fed one byte per read (every prefix is parsed).
const BYTEWISE_MAX_BYTES: usize = 2048;
/// A small body limit, so that 413 is reachable.
const MAX_BODY_BYTES: usize = 256;

fuzz_target!(|data: &[u8]| {
    check_head_facts(data);

    let read = |_| BodyChoice::Read;
    let whole = run(data, &[], MAX_BODY_BYTES, &read);
    let mut rng = Rng::from_input(data, 0);
    let mut splits = vec![
        random_pieces(&mut rng, data.len()),
        random_pieces(&mut rng, data.len()),
    ];
    if data.len() <= BYTEWISE_MAX_BYTES {
        splits.push(vec![1; data.len()]);
    }
    for pieces in splits {
        let split = run(data, &pieces, MAX_BODY_BYTES, &read);
        assert_same_answer(&split, &whole, &pieces);
    }
});

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

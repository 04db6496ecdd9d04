//! Sans-IO HTTP/1.1 (SPEC §2, §10): request heads, body framing, response writers.
//!
//! The connection driver owns the buffers and the policy (routing, 404/405/401/411/415/...);
//! this layer reports what a request says and which framing errors it has.

pub mod body;
pub mod error;
pub mod parse;
pub mod response;

pub use body::{check_content_length, ChunkedDecoder, Decoded};
pub use error::HttpError;
pub use parse::{
    is_json_content_type, parse_head, percent_decode, query_pairs, query_param, BodyFraming,
    HeadStatus, Method, RequestHead, Version,
};
pub use response::{
    reason, write_chunk, write_error, write_head, write_json, write_last_chunk, Persist,
    CONTINUE_100,
};

#[cfg(test)]
mod tests {
    use super::*;

    /// One request as the driver sees it: path, query and body.
    type Seen = (String, Option<String>, Vec<u8>);

    /// A minimal driver: one buffer, `parse_head` on the unconsumed bytes after each read,
    /// then the body by its framing. `reads` are the pieces the socket delivers.
    fn drive(reads: &[&[u8]]) -> Result<Vec<Seen>, HttpError> {
        let mut buf: Vec<u8> = Vec::new();
        let mut seen = Vec::new();
        let mut start = 0;
        let mut body: Option<(Seen, BodyState)> = None;
        for read in reads {
            buf.extend_from_slice(read);
            loop {
                match body.take() {
                    None => match parse_head(buf.get(start..).unwrap_or_default())? {
                        HeadStatus::Partial => break,
                        HeadStatus::Complete { head, consumed } => {
                            let request = (
                                head.path.to_string(),
                                head.query.map(str::to_string),
                                Vec::new(),
                            );
                            let state = match head.body {
                                BodyFraming::None => BodyState::Length(0),
                                BodyFraming::Length(n) => {
                                    BodyState::Length(check_content_length(n, 1024)?)
                                }
                                BodyFraming::Chunked => {
                                    BodyState::Chunked(ChunkedDecoder::new(1024))
                                }
                            };
                            start += consumed;
                            body = Some((request, state));
                        }
                    },
                    Some((mut request, BodyState::Length(n))) => {
                        let available = buf.len() - start;
                        if available < n {
                            body = Some((request, BodyState::Length(n)));
                            break;
                        }
                        request
                            .2
                            .extend_from_slice(buf.get(start..start + n).unwrap_or_default());
                        start += n;
                        seen.push(request);
                    }
                    Some((mut request, BodyState::Chunked(mut decoder))) => {
                        let d =
                            decoder.decode(buf.get(start..).unwrap_or_default(), &mut request.2)?;
                        start += d.consumed;
                        if d.done {
                            seen.push(request);
                        } else {
                            body = Some((request, BodyState::Chunked(decoder)));
                            break;
                        }
                    }
                }
            }
        }
        Ok(seen)
    }

    enum BodyState {
        Length(usize),
        Chunked(ChunkedDecoder),
    }

    const PIPELINE: &[u8] = b"POST /sse/push?via=chunked HTTP/1.1\r\nHost: gw\r\n\
        Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n\
        4;ext=1\r\n{\"a\"\r\n3;q=\"x y\"\r\n:1}\r\n0\r\nX-Sum: 9\r\n\r\n\
        POST /sse/push/batch HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n\r\n[]\
        GET /health HTTP/1.1\r\nHost: gw\r\n\r\n";

    fn expected() -> Vec<Seen> {
        vec![
            (
                "/sse/push".into(),
                Some("via=chunked".into()),
                b"{\"a\":1}".to_vec(),
            ),
            ("/sse/push/batch".into(), None, b"[]".to_vec()),
            ("/health".into(), None, Vec::new()),
        ]
    }

    #[test]
    fn pipelined_requests_in_one_read() {
        assert_eq!(drive(&[PIPELINE]), Ok(expected()));
    }

    #[test]
    fn pipelined_requests_split_at_every_point() {
        for cut in 0..=PIPELINE.len() {
            let (a, b) = PIPELINE.split_at(cut);
            assert_eq!(drive(&[a, b]), Ok(expected()), "cut at {cut}");
        }
    }

    #[test]
    fn pipelined_requests_one_byte_per_read() {
        let reads: Vec<&[u8]> = PIPELINE.chunks(1).collect();
        assert_eq!(drive(&reads), Ok(expected()));
    }

    #[test]
    fn over_limit_chunked_body_is_413_whatever_the_split() {
        let req = b"POST /sse/push HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n\
            401\r\n";
        for cut in 0..=req.len() {
            let (a, b) = req.split_at(cut);
            assert_eq!(drive(&[a, b]), Err(HttpError::BodyTooLarge), "cut at {cut}");
        }
    }

    /// The answer as a client sees it: the requests served, or the error's status.
    fn outcome(reads: &[&[u8]]) -> Result<Vec<Seen>, u16> {
        drive(reads).map_err(HttpError::status)
    }

    /// Same bytes, any split: same outcome. Checked on mutants of the pipeline (bytes
    /// changed, inserted, removed) from a fixed pseudo-random sequence.
    #[test]
    fn mutants_get_the_same_answer_whole_or_in_pieces() {
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move |bound: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            usize::try_from(seed % bound.max(1) as u64).unwrap_or(0)
        };
        let interesting = b"\r\n :;0123456789aAfF/?%HTP.,-\x00\x7f\xff";
        for _ in 0..400 {
            let mut mutant = PIPELINE.to_vec();
            for _ in 0..1 + next(3) {
                let at = next(mutant.len());
                let byte = interesting
                    .get(next(interesting.len()))
                    .copied()
                    .unwrap_or(b'x');
                match next(3) {
                    0 => {
                        if let Some(b) = mutant.get_mut(at) {
                            *b = byte;
                        }
                    }
                    1 => mutant.insert(at, byte),
                    _ => {
                        mutant.remove(at);
                    }
                }
            }
            let whole = outcome(&[&mutant]);
            let bytes: Vec<&[u8]> = mutant.chunks(1).collect();
            assert_eq!(
                outcome(&bytes),
                whole,
                "byte by byte: {:?}",
                String::from_utf8_lossy(&mutant)
            );
            for _ in 0..3 {
                let (a, b) = mutant.split_at(next(mutant.len() + 1));
                assert_eq!(
                    outcome(&[a, b]),
                    whole,
                    "split: {:?}",
                    String::from_utf8_lossy(&mutant)
                );
            }
        }
    }
}

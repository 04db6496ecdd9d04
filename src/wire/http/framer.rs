//! The request framer: the one state machine that turns a connection's bytes into requests,
//! head, then body, then the next head (RFC 9112 §6).
//!
//! Sans-IO: the caller owns the read buffer. After each read it calls [`Framer::step`] on the
//! bytes not consumed yet and drops what the answer says was consumed, until the answer is
//! [`Step::NeedMore`]. After a [`Step::Head`] the caller decides what becomes of that request's
//! body ([`Framer::read_body`] or [`Framer::skip_body`]); the body then arrives through further
//! steps and ends with [`Step::BodyDone`], after which the next request's head begins. The
//! connection driver, the unit tests and the fuzz targets all drive this type, so what they
//! check is what serves.

use super::body::{check_content_length, ChunkedDecoder};
use super::error::HttpError;
use super::parse::{parse_head, BodyFraming, HeadStatus, RequestHead};

/// What one [`Framer::step`] found in the bytes it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<'b> {
    /// The bytes end inside a head or a body: read more. `consumed` body bytes were taken
    /// (always 0 inside a head, which is parsed again whole once more bytes arrived).
    NeedMore {
        /// Bytes of the input used.
        consumed: usize,
    },
    /// A complete request head of `consumed` bytes. Its body (if any) follows.
    Head {
        /// The head's facts, borrowing from the input.
        head: RequestHead<'b>,
        /// Bytes of the input the head took.
        consumed: usize,
    },
    /// The current request's body is complete; the rest of the input is the next request.
    BodyDone {
        /// Bytes of the input used.
        consumed: usize,
    },
}

/// An interim answer the caller owes before the body arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interim {
    /// Nothing: read the body.
    None,
    /// `100 Continue` first: the client waits for it before sending the body.
    Continue,
}

#[derive(Debug, Clone)]
enum Phase {
    /// Waiting for a request head.
    Head,
    /// A head was returned; its body is neither accepted nor skipped yet.
    Decide {
        framing: BodyFraming,
        expect_continue: bool,
    },
    /// A `Content-Length` body: bytes still to come.
    Length(usize),
    /// A chunked body.
    Chunked(ChunkedDecoder),
    /// A framing error: nothing on this connection can be trusted any more.
    Failed(HttpError),
}

/// Head, body, next head: the framing state of one connection.
#[derive(Debug, Clone)]
pub struct Framer {
    max_body_bytes: usize,
    phase: Phase,
    /// The current body was skipped: its bytes are consumed and dropped, never kept.
    discard: bool,
}

impl Framer {
    /// A framer for a connection whose request bodies may hold `max_body_bytes`.
    pub fn new(max_body_bytes: usize) -> Self {
        Framer {
            max_body_bytes,
            phase: Phase::Head,
            discard: false,
        }
    }

    /// Advances over `input` (the bytes not consumed yet), appending body payload to `body`.
    ///
    /// The answer does not depend on how the bytes arrived: the same bytes split into any reads
    /// give the same heads, bodies and errors. A step never consumes past the end of the
    /// current request. After an error every step returns that error. A step right after a
    /// `Head` without a decision reads the body, as [`Framer::read_body`] would.
    pub fn step<'b>(&mut self, input: &'b [u8], body: &mut Vec<u8>) -> Result<Step<'b>, HttpError> {
        if let Phase::Decide { .. } = self.phase {
            self.read_body()?;
        }
        let result = self.advance(input, body);
        if let Err(e) = result {
            self.phase = Phase::Failed(e);
        }
        result
    }

    fn advance<'b>(&mut self, input: &'b [u8], body: &mut Vec<u8>) -> Result<Step<'b>, HttpError> {
        match &mut self.phase {
            Phase::Failed(e) => Err(*e),
            Phase::Head => match parse_head(input)? {
                HeadStatus::Partial => Ok(Step::NeedMore { consumed: 0 }),
                HeadStatus::Complete { head, consumed } => {
                    self.discard = false;
                    self.phase = Phase::Decide {
                        framing: head.body,
                        expect_continue: head.expect_continue,
                    };
                    Ok(Step::Head { head, consumed })
                }
            },
            Phase::Length(remaining) => {
                let take = (*remaining).min(input.len());
                if !self.discard {
                    body.extend_from_slice(input.get(..take).unwrap_or_default());
                }
                *remaining -= take;
                if *remaining == 0 {
                    self.phase = Phase::Head;
                    Ok(Step::BodyDone { consumed: take })
                } else {
                    Ok(Step::NeedMore { consumed: take })
                }
            }
            Phase::Chunked(decoder) => {
                let kept = body.len();
                let decoded = decoder.decode(input, body);
                // Also when the decoder fails part-way: a skipped body is never kept.
                if self.discard {
                    body.truncate(kept);
                }
                let decoded = decoded?;
                if decoded.done {
                    self.phase = Phase::Head;
                    Ok(Step::BodyDone {
                        consumed: decoded.consumed,
                    })
                } else {
                    Ok(Step::NeedMore {
                        consumed: decoded.consumed,
                    })
                }
            }
            // `step` decided already; kept so that the match needs no panic.
            Phase::Decide { .. } => Ok(Step::NeedMore { consumed: 0 }),
        }
    }

    /// Accepts the body of the head just returned: later steps append it to `body`.
    /// A `Content-Length` over the limit is `BodyTooLarge` (413) here, before any of it is read.
    pub fn read_body(&mut self) -> Result<Interim, HttpError> {
        let Phase::Decide {
            framing,
            expect_continue,
        } = self.phase
        else {
            return Ok(Interim::None);
        };
        self.phase = match framing {
            BodyFraming::None => Phase::Length(0),
            BodyFraming::Length(n) => match check_content_length(n, self.max_body_bytes) {
                Ok(n) => Phase::Length(n),
                Err(e) => Phase::Failed(e),
            },
            BodyFraming::Chunked => Phase::Chunked(ChunkedDecoder::new(self.max_body_bytes)),
        };
        if let Phase::Failed(e) = self.phase {
            return Err(e);
        }
        Ok(if expect_continue && framing != BodyFraming::None {
            Interim::Continue
        } else {
            Interim::None
        })
    }

    /// Passes over the body of the head just returned, refused without reading it, so that
    /// the connection can serve the next request. False when that is impossible and the
    /// connection must close after the answer: the client waits for a `100 Continue` that
    /// will not come (so it may or may not send the body), or the body is over the limit.
    /// A skipped body still passes through `step`, which consumes it and keeps nothing.
    pub fn skip_body(&mut self) -> bool {
        self.discard = true;
        match self.phase {
            Phase::Decide {
                framing: BodyFraming::None,
                ..
            } => self.read_body().is_ok(),
            Phase::Decide {
                expect_continue: true,
                ..
            } => {
                self.phase = Phase::Failed(HttpError::Malformed);
                false
            }
            Phase::Decide { .. } => self.read_body().is_ok(),
            _ => false,
        }
    }

    /// True while a body is being read (its own deadline applies, not the head's).
    pub fn in_body(&self) -> bool {
        matches!(self.phase, Phase::Length(_) | Phase::Chunked(_))
    }

    /// The most bytes the current body may still add to the caller's `body` buffer when the
    /// next step gets `input_len` bytes: what a caller reserves room for (and pays for)
    /// before the step. Zero outside a kept body.
    pub fn body_growth(&self, input_len: usize, kept: usize) -> usize {
        if self.discard {
            return 0;
        }
        match self.phase {
            Phase::Length(remaining) => remaining.min(input_len),
            // Decoded payload is never longer than the framed bytes it came from.
            Phase::Chunked(_) => input_len.min(self.max_body_bytes.saturating_sub(kept)),
            _ => 0,
        }
    }

    /// The `Content-Length` of the head just returned, before its body is read or skipped.
    pub fn declared_length(&self) -> Option<u64> {
        match self.phase {
            Phase::Decide {
                framing: BodyFraming::Length(n),
                ..
            } => Some(n),
            _ => None,
        }
    }
}

/// One request as a driver of the framer sees it.
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    /// The head's path.
    pub path: String,
    /// The head's query.
    pub query: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

/// Drives a framer over `reads` as a connection would, reading every body; the requests
/// seen, or the framing error that ended the connection.
#[cfg(test)]
pub(crate) fn drive(reads: &[&[u8]], max_body_bytes: usize) -> Result<Vec<Seen>, HttpError> {
    let mut framer = Framer::new(max_body_bytes);
    let mut buf: Vec<u8> = Vec::new();
    let mut seen = Vec::new();
    let mut body = Vec::new();
    let mut current: Option<Seen> = None;
    for read in reads {
        buf.extend_from_slice(read);
        loop {
            let (consumed, done) = match framer.step(&buf, &mut body)? {
                Step::NeedMore { consumed } => (consumed, true),
                Step::Head { head, consumed } => {
                    current = Some(Seen {
                        path: head.path.to_string(),
                        query: head.query.map(str::to_string),
                        body: Vec::new(),
                    });
                    framer.read_body()?;
                    (consumed, false)
                }
                Step::BodyDone { consumed } => {
                    if let Some(mut request) = current.take() {
                        request.body = std::mem::take(&mut body);
                        seen.push(request);
                    }
                    (consumed, false)
                }
            };
            buf.drain(..consumed);
            if done {
                break;
            }
        }
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIPELINE: &[u8] = b"POST /sse/push?via=chunked HTTP/1.1\r\nHost: gw\r\n\
        Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n\
        4;ext=1\r\n{\"a\"\r\n3;q=\"x y\"\r\n:1}\r\n0\r\nX-Sum: 9\r\n\r\n\
        POST /sse/push/batch HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n\r\n[]\
        GET /health HTTP/1.1\r\nHost: gw\r\n\r\n";

    fn seen(path: &str, query: Option<&str>, body: &[u8]) -> Seen {
        Seen {
            path: path.into(),
            query: query.map(Into::into),
            body: body.to_vec(),
        }
    }

    fn expected() -> Vec<Seen> {
        vec![
            seen("/sse/push", Some("via=chunked"), b"{\"a\":1}"),
            seen("/sse/push/batch", None, b"[]"),
            seen("/health", None, b""),
        ]
    }

    #[test]
    fn pipelined_requests_in_one_read() {
        assert_eq!(drive(&[PIPELINE], 1024), Ok(expected()));
    }

    #[test]
    fn pipelined_requests_split_at_every_point() {
        for cut in 0..=PIPELINE.len() {
            let (a, b) = PIPELINE.split_at(cut);
            assert_eq!(drive(&[a, b], 1024), Ok(expected()), "cut at {cut}");
        }
    }

    #[test]
    fn pipelined_requests_one_byte_per_read() {
        let reads: Vec<&[u8]> = PIPELINE.chunks(1).collect();
        assert_eq!(drive(&reads, 1024), Ok(expected()));
    }

    #[test]
    fn over_limit_chunked_body_is_413_whatever_the_split() {
        let req = b"POST /sse/push HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n\
            401\r\n";
        for cut in 0..=req.len() {
            let (a, b) = req.split_at(cut);
            assert_eq!(
                drive(&[a, b], 1024),
                Err(HttpError::BodyTooLarge),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_step_never_consumes_past_the_request() {
        let mut framer = Framer::new(1024);
        let mut body = Vec::new();
        let first = b"POST /a HTTP/1.1\r\nHost: gw\r\nContent-Length: 3\r\n\r\n";
        let mut input = first.to_vec();
        input.extend_from_slice(b"abcGET /b HTTP/1.1\r\n\r\n");
        let Ok(Step::Head { consumed, .. }) = framer.step(&input, &mut body) else {
            panic!("no head")
        };
        assert_eq!(consumed, first.len());
        let rest = &input[consumed..];
        assert_eq!(
            framer.step(rest, &mut body),
            Ok(Step::BodyDone { consumed: 3 })
        );
        assert_eq!(body, b"abc");
        assert!(matches!(
            framer.step(&rest[3..], &mut body),
            Ok(Step::Head { head, .. }) if head.path == "/b"
        ));
    }

    #[test]
    fn content_length_over_the_limit_is_413_before_the_body() {
        let mut framer = Framer::new(4);
        let mut body = Vec::new();
        let req = b"POST /a HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\n\r\n";
        assert!(matches!(framer.step(req, &mut body), Ok(Step::Head { .. })));
        assert_eq!(framer.read_body(), Err(HttpError::BodyTooLarge));
        assert_eq!(framer.step(b"", &mut body), Err(HttpError::BodyTooLarge));
    }

    #[test]
    fn expect_continue_asks_for_the_interim_answer_and_cannot_be_skipped() {
        let req =
            b"POST /a HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n";
        let mut body = Vec::new();
        let mut framer = Framer::new(64);
        assert!(matches!(framer.step(req, &mut body), Ok(Step::Head { .. })));
        assert_eq!(framer.read_body(), Ok(Interim::Continue));
        let mut framer = Framer::new(64);
        assert!(matches!(framer.step(req, &mut body), Ok(Step::Head { .. })));
        assert!(!framer.skip_body());
    }

    #[test]
    fn a_skipped_body_leaves_the_connection_at_the_next_request() {
        let req =
            b"POST /a HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n\r\nxyGET /b HTTP/1.1\r\n\r\n";
        let mut body = Vec::new();
        let mut framer = Framer::new(64);
        let Ok(Step::Head { consumed, .. }) = framer.step(req, &mut body) else {
            panic!("no head")
        };
        assert!(framer.skip_body());
        assert_eq!(
            framer.body_growth(100, 0),
            0,
            "a skipped body needs no room"
        );
        let rest = &req[consumed..];
        assert_eq!(
            framer.step(rest, &mut body),
            Ok(Step::BodyDone { consumed: 2 })
        );
        assert!(body.is_empty(), "a skipped body is not kept");
        assert!(matches!(
            framer.step(&rest[2..], &mut body),
            Ok(Step::Head { head, .. }) if head.path == "/b"
        ));
    }

    #[test]
    fn a_skipped_chunked_body_is_not_kept_even_when_its_framing_fails() {
        let req = b"POST /a HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n\
            2\r\n{}\r\n0\r\n\n\r\n";
        let mut body = Vec::new();
        let mut framer = Framer::new(64);
        let Ok(Step::Head { consumed, .. }) = framer.step(req, &mut body) else {
            panic!("no head")
        };
        assert!(framer.skip_body());
        assert!(framer.step(&req[consumed..], &mut body).is_err());
        assert!(body.is_empty(), "kept {body:?}");
    }

    /// The answer as a client sees it: the requests served, or the error's status.
    fn outcome(reads: &[&[u8]]) -> Result<Vec<Seen>, u16> {
        drive(reads, 1024).map_err(HttpError::status)
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

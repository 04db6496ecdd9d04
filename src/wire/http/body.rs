//! Request bodies: the `Content-Length` limit check and an incremental chunked decoder
//! (RFC 9112 §7.1).
//!
//! The chunked framing is strict where leniency lets two parsers disagree about where a
//! request ends (request smuggling): every line ends in CRLF (a bare LF or bare CR is an
//! error), chunk sizes have 1..=`MAX_CHUNK_SIZE_DIGITS` hex digits, whitespace after the size
//! is allowed only before an extension (`BWS ;`), extensions and trailer values may hold no
//! control character but HTAB, and trailer lines must be `name:` followed by a value
//! (no obsolete folding).

use super::error::HttpError;
use crate::wire::ascii::{hex_value, is_tchar};

/// Most hex digits in a chunk size, leading zeros included (16 fill a `u64`).
pub const MAX_CHUNK_SIZE_DIGITS: usize = 16;
/// Longest extension part of one chunk-size line (after the digits, before CRLF), in bytes.
pub const MAX_CHUNK_EXT_BYTES: usize = 1024;
/// Longest trailer section (all trailer lines and the final CRLF), in bytes.
pub const MAX_TRAILER_BYTES: usize = 4096;

/// Checks a `Content-Length` against `max_body_bytes`; the length as `usize` when it fits.
pub fn check_content_length(len: u64, max_body_bytes: usize) -> Result<usize, HttpError> {
    match usize::try_from(len) {
        Ok(n) if n <= max_body_bytes => Ok(n),
        _ => Err(HttpError::BodyTooLarge),
    }
}

/// What one `ChunkedDecoder::decode` call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// Bytes of the input used; when `done`, what follows belongs to the next request.
    pub consumed: usize,
    /// The body ended (last chunk and trailers read).
    pub done: bool,
}

/// Where the decoder stands in the chunked grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex digits of a chunk size.
    Size,
    /// Whitespace after the size digits; only an extension may follow.
    SizeSpace,
    /// Inside a chunk extension, up to CR.
    Extension,
    /// CR of a chunk-size line seen, LF expected.
    SizeLf,
    /// Copying chunk data.
    Data,
    /// Chunk data done, CR expected.
    DataCr,
    /// Chunk data done, LF expected.
    DataLf,
    /// At the start of a trailer line or of the final CRLF.
    TrailerStart,
    /// Inside a trailer field name, up to `:`.
    TrailerName,
    /// Inside a trailer field value, up to CR.
    TrailerValue,
    /// CR of a trailer line seen, LF expected.
    TrailerLf,
    /// CR of the final line seen, LF expected.
    FinalLf,
    /// The body is complete.
    Done,
    /// An error was found; it is reported again on every call.
    Failed(HttpError),
}

/// Decodes a chunked body incrementally; input may be split anywhere.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    /// Largest payload accepted, in bytes.
    max_body_bytes: u64,
    /// Payload bytes announced so far by completed or current chunk-size lines.
    announced: u64,
    /// Size of the chunk whose size line is being read.
    size: u64,
    /// Digits of that size read so far.
    size_digits: usize,
    /// Bytes of that line's extension (and whitespace) read so far.
    ext_bytes: usize,
    /// Data bytes of the current chunk still to copy.
    remaining: u64,
    /// Trailer section bytes read so far.
    trailer_bytes: usize,
}

impl ChunkedDecoder {
    /// A decoder for one body of at most `max_body_bytes` payload bytes.
    pub fn new(max_body_bytes: usize) -> Self {
        Self {
            state: State::Size,
            max_body_bytes: u64::try_from(max_body_bytes).unwrap_or(u64::MAX),
            announced: 0,
            size: 0,
            size_digits: 0,
            ext_bytes: 0,
            remaining: 0,
            trailer_bytes: 0,
        }
    }

    /// Consumes from `input`, appending payload to `out`; returns how many bytes were consumed
    /// and whether the body (incl. trailers) is done.
    ///
    /// All of `input` is consumed unless the body ends inside it. A payload over
    /// `max_body_bytes` is `BodyTooLarge` as soon as a chunk-size line announces it, before
    /// its data arrives. After an error every call returns the same error.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Decoded, HttpError> {
        let mut pos = 0;
        while pos < input.len() {
            match self.state {
                State::Done => break,
                State::Failed(e) => return Err(e),
                State::Data => {
                    let available = input.len() - pos;
                    let take =
                        usize::try_from(self.remaining).map_or(available, |r| r.min(available));
                    let chunk = input.get(pos..pos + take).unwrap_or_default();
                    out.extend_from_slice(chunk);
                    pos += take;
                    self.remaining -= take as u64;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                }
                _ => {
                    let byte = input.get(pos).copied().unwrap_or_default();
                    pos += 1;
                    if let Err(e) = self.step(byte) {
                        self.state = State::Failed(e);
                        return Err(e);
                    }
                }
            }
        }
        match self.state {
            State::Failed(e) => Err(e),
            state => Ok(Decoded {
                consumed: pos,
                done: state == State::Done,
            }),
        }
    }

    /// Advances the grammar by one byte outside chunk data.
    fn step(&mut self, b: u8) -> Result<(), HttpError> {
        self.state = match self.state {
            State::Size => match (hex_value(b), b) {
                (Some(digit), _) => {
                    if self.size_digits == MAX_CHUNK_SIZE_DIGITS {
                        return Err(HttpError::BadChunkSize);
                    }
                    self.size_digits += 1;
                    // 16 digits fit in a u64; the limit check below bounds it far lower.
                    self.size = self.size << 4 | u64::from(digit);
                    // More digits only grow the size, so an excess is certain already.
                    if self.size > self.max_body_bytes.saturating_sub(self.announced) {
                        return Err(HttpError::BodyTooLarge);
                    }
                    State::Size
                }
                _ if self.size_digits == 0 => return Err(HttpError::BadChunkSize),
                (None, b'\r') => State::SizeLf,
                (None, b';') => self.extension_byte(State::Extension)?,
                (None, b' ' | b'\t') => self.extension_byte(State::SizeSpace)?,
                (None, _) => return Err(HttpError::BadChunkSize),
            },
            State::SizeSpace => match b {
                b' ' | b'\t' => self.extension_byte(State::SizeSpace)?,
                b';' => self.extension_byte(State::Extension)?,
                _ => return Err(HttpError::BadChunkSize),
            },
            State::Extension => match b {
                b'\r' => State::SizeLf,
                _ if is_control(b) => return Err(HttpError::BadChunkExtension),
                _ => self.extension_byte(State::Extension)?,
            },
            State::SizeLf => match b {
                b'\n' => self.end_of_size_line(),
                _ => return Err(HttpError::BadChunkSize),
            },
            State::DataCr => match b {
                b'\r' => State::DataLf,
                _ => return Err(HttpError::MissingChunkDelimiter),
            },
            State::DataLf => match b {
                b'\n' => State::Size,
                _ => return Err(HttpError::MissingChunkDelimiter),
            },
            State::TrailerStart => match b {
                b'\r' => self.trailer_byte(State::FinalLf)?,
                _ if is_tchar(b) => self.trailer_byte(State::TrailerName)?,
                _ => return Err(HttpError::BadTrailer),
            },
            State::TrailerName => match b {
                b':' => self.trailer_byte(State::TrailerValue)?,
                _ if is_tchar(b) => self.trailer_byte(State::TrailerName)?,
                _ => return Err(HttpError::BadTrailer),
            },
            State::TrailerValue => match b {
                b'\r' => self.trailer_byte(State::TrailerLf)?,
                _ if is_control(b) => return Err(HttpError::BadTrailer),
                _ => self.trailer_byte(State::TrailerValue)?,
            },
            State::TrailerLf => match b {
                b'\n' => self.trailer_byte(State::TrailerStart)?,
                _ => return Err(HttpError::BadTrailer),
            },
            State::FinalLf => match b {
                b'\n' => State::Done,
                _ => return Err(HttpError::BadTrailer),
            },
            // `decode` handles these without calling `step`.
            state @ (State::Data | State::Done | State::Failed(_)) => state,
        };
        Ok(())
    }

    /// Counts one byte of a chunk-size line after its digits, against `MAX_CHUNK_EXT_BYTES`.
    fn extension_byte(&mut self, next: State) -> Result<State, HttpError> {
        self.ext_bytes += 1;
        if self.ext_bytes > MAX_CHUNK_EXT_BYTES {
            return Err(HttpError::ChunkExtensionTooLong);
        }
        Ok(next)
    }

    /// Counts one byte of the trailer section, against `MAX_TRAILER_BYTES`.
    fn trailer_byte(&mut self, next: State) -> Result<State, HttpError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > MAX_TRAILER_BYTES {
            return Err(HttpError::TrailersTooLarge);
        }
        Ok(next)
    }

    /// After a chunk-size line: the chunk's data, or the trailers after the last chunk.
    fn end_of_size_line(&mut self) -> State {
        let size = self.size;
        self.announced += size;
        self.size = 0;
        self.size_digits = 0;
        self.ext_bytes = 0;
        if size == 0 {
            State::TrailerStart
        } else {
            self.remaining = size;
            State::Data
        }
    }
}

/// A control character other than HTAB (never allowed in extensions or field values).
fn is_control(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 1 << 20;

    /// Decodes `input` in one call.
    fn decode_all(input: &[u8], max: usize) -> Result<(Vec<u8>, Decoded), HttpError> {
        let mut out = Vec::new();
        let d = ChunkedDecoder::new(max).decode(input, &mut out)?;
        Ok((out, d))
    }

    fn err(input: &[u8]) -> HttpError {
        match decode_all(input, LIMIT) {
            Err(e) => e,
            Ok((_, d)) => panic!("expected an error, got {d:?} for {} bytes", input.len()),
        }
    }

    /// Feeds `input` as a connection would: each call gets what arrived and was not consumed.
    fn feed_in_pieces(
        input: &[u8],
        cuts: &[usize],
        max: usize,
    ) -> Result<(Vec<u8>, usize), HttpError> {
        let mut decoder = ChunkedDecoder::new(max);
        let mut out = Vec::new();
        let mut consumed = 0;
        let mut arrived = 0;
        for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
            arrived = arrived.max(cut);
            let d = decoder.decode(input.get(consumed..arrived).unwrap_or_default(), &mut out)?;
            consumed += d.consumed;
            if d.done {
                return Ok((out, consumed));
            }
        }
        panic!("body never finished: {input:?}");
    }

    const BODY: &[u8] = b"5;name=value;flag\r\nhello\r\n1A \t;x=\"q s\"\r\n\
        abcdefghijklmnopqrstuvwxyz\r\n000\r\nX-Checksum: abc\r\nX-Other:\r\n\r\n";

    #[test]
    fn complete_body_with_extensions_and_trailers() {
        let mut input = BODY.to_vec();
        input.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let done = Decoded {
            consumed: BODY.len(),
            done: true,
        };
        assert_eq!(
            decode_all(&input, LIMIT),
            Ok((b"helloabcdefghijklmnopqrstuvwxyz".to_vec(), done))
        );
    }

    #[test]
    fn every_split_point_gives_the_same_result() {
        let mut input = BODY.to_vec();
        input.extend_from_slice(b"NEXT");
        for cut in 0..=input.len() {
            let r = feed_in_pieces(&input, &[cut], LIMIT);
            assert_eq!(
                r,
                Ok((b"helloabcdefghijklmnopqrstuvwxyz".to_vec(), BODY.len())),
                "cut at {cut}"
            );
        }
        let every_byte: Vec<usize> = (1..input.len()).collect();
        assert_eq!(
            feed_in_pieces(&input, &every_byte, LIMIT),
            Ok((b"helloabcdefghijklmnopqrstuvwxyz".to_vec(), BODY.len()))
        );
    }

    #[test]
    fn done_decoder_consumes_nothing_more() {
        let mut decoder = ChunkedDecoder::new(LIMIT);
        let mut out = Vec::new();
        assert_eq!(
            decoder.decode(b"0\r\n\r\n", &mut out),
            Ok(Decoded {
                consumed: 5,
                done: true
            })
        );
        assert_eq!(
            decoder.decode(b"1\r\na\r\n", &mut out),
            Ok(Decoded {
                consumed: 0,
                done: true
            })
        );
        assert!(out.is_empty());
    }

    #[test]
    fn empty_input_is_not_done() {
        let mut decoder = ChunkedDecoder::new(LIMIT);
        let mut out = Vec::new();
        assert_eq!(
            decoder.decode(b"", &mut out),
            Ok(Decoded {
                consumed: 0,
                done: false
            })
        );
    }

    #[test]
    fn body_at_the_limit_passes_and_one_more_byte_is_413() {
        let at_limit = b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert!(decode_all(at_limit, 5).is_ok());
        assert_eq!(decode_all(at_limit, 4), Err(HttpError::BodyTooLarge));
    }

    #[test]
    fn over_limit_is_413_from_the_size_line_alone() {
        // Only the size digits have arrived: no CRLF, no data.
        let mut decoder = ChunkedDecoder::new(100);
        let mut out = Vec::new();
        assert_eq!(
            decoder.decode(b"65", &mut out),
            Err(HttpError::BodyTooLarge)
        );
        assert_eq!(
            decoder.decode(b"\r\n", &mut out),
            Err(HttpError::BodyTooLarge),
            "sticky"
        );

        let mut decoder = ChunkedDecoder::new(100);
        assert_eq!(
            decoder.decode(b"64\r\n", &mut out),
            Ok(Decoded {
                consumed: 4,
                done: false
            })
        );
        let mut decoder = ChunkedDecoder::new(100);
        let second = b"60\r\n".iter().chain(&[b'x'; 0x60]).chain(b"\r\n5\r\n");
        let input: Vec<u8> = second.copied().collect();
        assert_eq!(
            decoder.decode(&input, &mut out),
            Err(HttpError::BodyTooLarge)
        );
        assert_eq!(
            decode_all(b"FFFFFFFFFFFFFFFF\r\n", LIMIT),
            Err(HttpError::BodyTooLarge)
        );
    }

    #[test]
    fn malformed_chunk_sizes() {
        for bad in [
            &b"\r\n"[..],
            b"x\r\n",
            b"-1\r\n",
            b"+1\r\n",
            b"0x5\r\n",
            b" 5\r\n",
            b"5 \r\n",
            b"5\n",
            b"5\rx",
            b";ext\r\n",
            b"5 x\r\n",
            b"00000000000000001\r\n",
        ] {
            assert_eq!(err(bad), HttpError::BadChunkSize, "{bad:?}");
        }
        assert!(
            decode_all(b"0000000000000000\r\n\r\n", LIMIT).is_ok(),
            "16 digits are fine"
        );
    }

    // On 32-bit targets the body limit refuses such sizes before the digit bound does.
    #[cfg(target_pointer_width = "64")]
    #[test]
    fn digit_bound_holds_without_a_body_limit() {
        // With no body limit to stop it first, a 17th digit (a u64 overflow) is still refused.
        let unlimited = |input: &[u8]| decode_all(input, usize::MAX).map(|(_, d)| d);
        assert_eq!(
            unlimited(b"1FFFFFFFFFFFFFFFF\r\n"),
            Err(HttpError::BadChunkSize)
        );
        let d = unlimited(b"FFFFFFFFFFFFFFFF\r\nab");
        assert_eq!(
            d,
            Ok(Decoded {
                consumed: 20,
                done: false
            })
        );
    }

    #[test]
    fn missing_crlf_after_data() {
        assert_eq!(err(b"3\r\nabcd\r\n"), HttpError::MissingChunkDelimiter);
        assert_eq!(
            err(b"3\r\nabc\n0\r\n\r\n"),
            HttpError::MissingChunkDelimiter
        );
        assert_eq!(err(b"3\r\nabc\rx"), HttpError::MissingChunkDelimiter);
    }

    #[test]
    fn extension_rules() {
        assert_eq!(err(b"1;a\nb\r\n"), HttpError::BadChunkExtension);
        assert_eq!(err(b"1;a\x00\r\n"), HttpError::BadChunkExtension);
        let mut long = b"1;".to_vec();
        long.resize(1 + MAX_CHUNK_EXT_BYTES, b'a');
        long.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
        assert!(decode_all(&long, LIMIT).is_ok(), "extension at the limit");
        let mut longer = b"1;".to_vec();
        longer.resize(2 + MAX_CHUNK_EXT_BYTES, b'a');
        assert_eq!(err(&longer), HttpError::ChunkExtensionTooLong);
        let mut spaces = b"1".to_vec();
        spaces.resize(2 + MAX_CHUNK_EXT_BYTES, b' ');
        assert_eq!(err(&spaces), HttpError::ChunkExtensionTooLong);
    }

    #[test]
    fn trailer_rules() {
        for bad in [
            &b"0\r\nX: a\n\r\n"[..],
            b"0\r\n\n",
            b"0\r\n: a\r\n\r\n",
            b"0\r\nNoColon\r\n\r\n",
            b"0\r\nX: a\r\n folded\r\n\r\n",
            b"0\r\nX: a\x01\r\n\r\n",
            b"0\r\n\rx",
        ] {
            assert_eq!(err(bad), HttpError::BadTrailer, "{bad:?}");
        }
        let mut big = b"0\r\nX: ".to_vec();
        big.resize(3 + MAX_TRAILER_BYTES, b'a');
        assert!(
            decode_all(&big, LIMIT).is_ok(),
            "trailer section at the limit"
        );
        big.push(b'a');
        assert_eq!(err(&big), HttpError::TrailersTooLarge);
    }

    #[test]
    fn content_length_limit() {
        assert_eq!(check_content_length(0, 10), Ok(0));
        assert_eq!(check_content_length(10, 10), Ok(10));
        assert_eq!(check_content_length(11, 10), Err(HttpError::BodyTooLarge));
        assert_eq!(
            check_content_length(u64::MAX, 65536),
            Err(HttpError::BodyTooLarge)
        );
    }
}

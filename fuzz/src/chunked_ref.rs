//! A second, line-oriented implementation of the strict chunked grammar that `http::body`
//! documents, written without looking at its state machine: it works on the whole input at once,
//! finding each line's CR first and then judging the line's bytes in order.
//!
//! It reports the error the documented rules give at the earliest offending byte, so it must
//! agree with `ChunkedDecoder` on the kind of error too, not only on the payload.

use wssed::wire::http::body::{MAX_CHUNK_EXT_BYTES, MAX_CHUNK_SIZE_DIGITS, MAX_TRAILER_BYTES};
use wssed::wire::http::HttpError;

/// The result of decoding a whole input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The body ended; the payload and the bytes it took.
    Done(Vec<u8>, usize),
    /// No error so far, but the body has not ended; the payload so far.
    Incomplete(Vec<u8>),
    /// The first error.
    Error(HttpError),
}

fn hex(b: u8) -> Option<u64> {
    char::from(b).to_digit(16).map(u64::from)
}

fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Decodes `input` as one chunked body with at most `max` payload bytes.
pub fn decode(input: &[u8], max: u64) -> Outcome {
    use Outcome::{Done, Error, Incomplete};
    let mut payload = Vec::new();
    let mut p = 0usize;
    let mut announced = 0u64;
    let at = |i: usize| input.get(i).copied();
    loop {
        // chunk-size: 1..=16 hex digits; the body limit is judged digit by digit.
        let digits = input
            .get(p..)
            .unwrap_or_default()
            .iter()
            .take_while(|&&b| hex(b).is_some())
            .count();
        let mut size = 0u64;
        for i in 0..digits {
            if i == MAX_CHUNK_SIZE_DIGITS {
                return Error(HttpError::BadChunkSize);
            }
            size = size * 16 + at(p + i).and_then(hex).unwrap_or(0);
            if size > max - announced {
                return Error(HttpError::BodyTooLarge);
            }
        }
        p += digits;
        if p == input.len() {
            return Incomplete(payload);
        }
        if digits == 0 {
            return Error(HttpError::BadChunkSize);
        }
        // The rest of the size line: BWS, then optionally `;` and the extension, up to CR.
        let line_end = input
            .get(p..)
            .unwrap_or_default()
            .iter()
            .position(|&b| b == b'\r')
            .map_or(input.len(), |i| p + i);
        let rest = input.get(p..line_end).unwrap_or_default();
        let mut in_extension = false;
        for (i, &b) in rest.iter().enumerate() {
            if in_extension {
                if is_ctl(b) {
                    return Error(HttpError::BadChunkExtension);
                }
            } else if b == b';' {
                in_extension = true;
            } else if b != b' ' && b != b'\t' {
                return Error(HttpError::BadChunkSize);
            }
            if i + 1 > MAX_CHUNK_EXT_BYTES {
                return Error(HttpError::ChunkExtensionTooLong);
            }
        }
        if line_end == input.len() {
            return Incomplete(payload);
        }
        if !rest.is_empty() && !in_extension {
            // Whitespace after the size is only allowed before an extension.
            return Error(HttpError::BadChunkSize);
        }
        match at(line_end + 1) {
            None => return Incomplete(payload),
            Some(b'\n') => {}
            Some(_) => return Error(HttpError::BadChunkSize),
        }
        p = line_end + 2;
        announced += size;
        if size == 0 {
            break;
        }
        // chunk-data CRLF
        let available = input.len() - p;
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        if available < size {
            payload.extend_from_slice(input.get(p..).unwrap_or_default());
            return Incomplete(payload);
        }
        payload.extend_from_slice(input.get(p..p + size).unwrap_or_default());
        p += size;
        for want in *b"\r\n" {
            match at(p) {
                None => return Incomplete(payload),
                Some(b) if b == want => p += 1,
                Some(_) => return Error(HttpError::MissingChunkDelimiter),
            }
        }
    }
    // trailer-section CRLF, every byte of it counted but the final LF.
    let mut counted = 0usize;
    let mut count = || {
        counted += 1;
        counted <= MAX_TRAILER_BYTES
    };
    loop {
        let Some(first) = at(p) else {
            return Incomplete(payload);
        };
        if first == b'\r' {
            if !count() {
                return Error(HttpError::TrailersTooLarge);
            }
            return match at(p + 1) {
                None => Incomplete(payload),
                Some(b'\n') => Done(payload, p + 2),
                Some(_) => Error(HttpError::BadTrailer),
            };
        }
        let line_end = input
            .get(p..)
            .unwrap_or_default()
            .iter()
            .position(|&b| b == b'\r')
            .map_or(input.len(), |i| p + i);
        let line = input.get(p..line_end).unwrap_or_default();
        let mut in_value = false;
        for (i, &b) in line.iter().enumerate() {
            let ok = if in_value {
                !is_ctl(b)
            } else if b == b':' && i > 0 {
                in_value = true;
                true
            } else {
                is_tchar(b)
            };
            if !ok {
                return Error(HttpError::BadTrailer);
            }
            if !count() {
                return Error(HttpError::TrailersTooLarge);
            }
        }
        if line_end == input.len() {
            return Incomplete(payload);
        }
        if !in_value {
            return Error(HttpError::BadTrailer);
        }
        if !count() {
            return Error(HttpError::TrailersTooLarge);
        }
        match at(line_end + 1) {
            None => return Incomplete(payload),
            Some(b'\n') => {}
            Some(_) => return Error(HttpError::BadTrailer),
        }
        if !count() {
            return Error(HttpError::TrailersTooLarge);
        }
        p = line_end + 2;
    }
}

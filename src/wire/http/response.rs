//! Response writers into a caller-owned buffer; nothing is allocated beyond growing it.
//!
//! Responses always say `HTTP/1.1` (docs/protocol.md §1.3) and carry no `Date`. A streamed response
//! is written as a head without `Content-Length` (pass `Transfer-Encoding: chunked` in `extra` for
//! HTTP/1.1, or `Persist::Close` for a close-delimited HTTP/1.0 stream), then `write_chunk`s and
//! `write_last_chunk`.

use super::parse::Version;
use crate::wire::ascii::{push_decimal, push_hex};
use crate::wire::json;

/// The interim response to `Expect: 100-continue`.
pub const CONTINUE_100: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
/// Most bytes [`write_chunk`] adds around its data: a size of at most 16 hex digits and two CRLFs.
pub const MAX_CHUNK_FRAMING_BYTES: usize = 16 + 4;

/// What the response says about the connection after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persist {
    /// The connection stays open; nothing is written (the HTTP/1.1 default).
    KeepAlive,
    /// The connection stays open for an HTTP/1.0 client: `Connection: keep-alive`.
    KeepAliveHttp10,
    /// The server closes after this response: `Connection: close`.
    Close,
}

impl Persist {
    /// The header a response needs when the connection stays open (`keep_alive`) or not.
    pub fn new(version: Version, keep_alive: bool) -> Self {
        match (keep_alive, version) {
            (false, _) => Self::Close,
            (true, Version::Http11) => Self::KeepAlive,
            (true, Version::Http10) => Self::KeepAliveHttp10,
        }
    }

    /// Whether the connection stays open after the response.
    pub fn keeps_alive(self) -> bool {
        self != Self::Close
    }
}

/// The reason phrase of a status (RFC 9110 §15); empty for statuses the daemon never sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Writes a status line (always HTTP/1.1), `Date`-less headers, and the blank line.
///
/// `content_length: None` writes no `Content-Length` (for 101, 204, 304 and streams).
/// CR and LF in `extra` names and values are left out, so no value can split the head.
pub fn write_head(
    out: &mut Vec<u8>,
    status: u16,
    content_type: Option<&str>,
    content_length: Option<usize>,
    persist: Persist,
    extra: &[(&str, &str)],
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(ct) = content_type {
        push_field(out, "Content-Type", ct);
    }
    if let Some(len) = content_length {
        out.extend_from_slice(b"Content-Length: ");
        push_decimal(out, len as u64);
        out.extend_from_slice(b"\r\n");
    }
    match persist {
        Persist::KeepAlive => {}
        Persist::KeepAliveHttp10 => out.extend_from_slice(b"Connection: keep-alive\r\n"),
        Persist::Close => out.extend_from_slice(b"Connection: close\r\n"),
    }
    for (name, value) in extra {
        push_field(out, name, value);
    }
    out.extend_from_slice(b"\r\n");
}

/// A complete JSON response; with `head_only` the body is left out but `Content-Length`
/// stays (HEAD).
pub fn write_json(
    out: &mut Vec<u8>,
    status: u16,
    body: &[u8],
    persist: Persist,
    extra: &[(&str, &str)],
    head_only: bool,
) {
    write_head(
        out,
        status,
        Some("application/json"),
        Some(body.len()),
        persist,
        extra,
    );
    if !head_only {
        out.extend_from_slice(body);
    }
}

/// A `{"detail":"..."}` error response for `status`, with the text JSON-escaped; with
/// `head_only` (an answer to HEAD) the body is left out but `Content-Length` stays.
pub fn write_error(
    out: &mut Vec<u8>,
    status: u16,
    detail: &str,
    persist: Persist,
    extra: &[(&str, &str)],
    head_only: bool,
) {
    const OPEN: &[u8] = b"{\"detail\":\"";
    const CLOSE: &[u8] = b"\"}";
    let len = OPEN.len() + json::escaped_len(detail) + CLOSE.len();
    write_head(
        out,
        status,
        Some("application/json"),
        Some(len),
        persist,
        extra,
    );
    if !head_only {
        out.extend_from_slice(OPEN);
        json::write_string_contents(out, detail);
        out.extend_from_slice(CLOSE);
    }
}

/// Writes one chunk: hex size, CRLF, data, CRLF; empty data writes nothing (it would end the body).
pub fn write_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    push_hex(out, data.len() as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Writes the last chunk of a chunked body, without trailers.
pub fn write_last_chunk(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n\r\n");
}

/// Inserts `lines` (whole header lines, each ending in CRLF) at the end of the first response
/// head in `out`, before its blank line. Nothing happens when `out` holds no whole head.
pub fn insert_fields(out: &mut Vec<u8>, lines: &[u8]) {
    let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") else {
        return;
    };
    // Exactly what is added: an answer's buffer is paid for by its capacity.
    out.reserve_exact(lines.len());
    let at = end + 2;
    out.splice(at..at, lines.iter().copied());
}

/// `name: value` CRLF, leaving out any CR or LF.
fn push_field(out: &mut Vec<u8>, name: &str, value: &str) {
    let clean = |b: &u8| *b != b'\r' && *b != b'\n';
    out.extend(name.as_bytes().iter().filter(|b| clean(b)));
    out.extend_from_slice(b": ");
    out.extend(value.as_bytes().iter().filter(|b| clean(b)));
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(out: &[u8]) -> &str {
        std::str::from_utf8(out).unwrap_or("<not utf-8>")
    }

    #[test]
    fn json_response_layout() {
        let mut out = Vec::new();
        write_json(&mut out, 200, br#"{"a":1}"#, Persist::KeepAlive, &[], false);
        assert_eq!(
            text(&out),
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}"
        );
    }

    #[test]
    fn head_only_keeps_the_length_and_drops_the_body() {
        let mut out = Vec::new();
        write_json(
            &mut out,
            200,
            b"{\"status\":\"healthy\"}",
            Persist::KeepAlive,
            &[],
            true,
        );
        assert!(
            text(&out).ends_with("Content-Length: 20\r\n\r\n"),
            "{}",
            text(&out)
        );
        let mut out = Vec::new();
        write_error(&mut out, 404, "Not Found", Persist::KeepAlive, &[], true);
        assert!(
            text(&out).ends_with("Content-Length: 22\r\n\r\n"),
            "{}",
            text(&out)
        );
    }

    #[test]
    fn connection_headers() {
        let mut out = Vec::new();
        write_head(
            &mut out,
            204,
            None,
            None,
            Persist::Close,
            &[("Allow", "POST, OPTIONS")],
        );
        assert_eq!(
            text(&out),
            "HTTP/1.1 204 No Content\r\nConnection: close\r\nAllow: POST, OPTIONS\r\n\r\n"
        );
        let mut out = Vec::new();
        write_head(&mut out, 200, None, Some(0), Persist::KeepAliveHttp10, &[]);
        assert_eq!(
            text(&out),
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"
        );
        assert_eq!(Persist::new(Version::Http11, true), Persist::KeepAlive);
        assert_eq!(
            Persist::new(Version::Http10, true),
            Persist::KeepAliveHttp10
        );
        assert_eq!(Persist::new(Version::Http10, false), Persist::Close);
        assert_eq!(Persist::new(Version::Http11, false), Persist::Close);
        assert!(Persist::KeepAliveHttp10.keeps_alive() && !Persist::Close.keeps_alive());
    }

    #[test]
    fn extra_values_cannot_split_the_head() {
        let mut out = Vec::new();
        write_head(
            &mut out,
            200,
            None,
            None,
            Persist::KeepAlive,
            &[("X-A", "1\r\nX-Evil: 2")],
        );
        assert_eq!(text(&out), "HTTP/1.1 200 OK\r\nX-A: 1X-Evil: 2\r\n\r\n");
    }

    #[test]
    fn error_body_is_escaped_json_with_exact_length() {
        let detail = "bad \"quote\" \\ and\nnewline \u{1} tab\t é";
        let mut out = Vec::new();
        write_error(
            &mut out,
            413,
            detail,
            Persist::Close,
            &[("Retry-After", "1")],
            false,
        );
        let s = text(&out);
        assert!(s.starts_with("HTTP/1.1 413 Content Too Large\r\n"), "{s}");
        assert!(
            s.contains("Connection: close\r\nRetry-After: 1\r\n\r\n"),
            "{s}"
        );
        let (head, body) = s.split_once("\r\n\r\n").unwrap_or_default();
        let expected_len = format!("Content-Length: {}\r\n", body.len());
        assert!(head.contains(expected_len.trim_end()), "{s}");
        let parsed: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        assert_eq!(parsed["detail"], detail);
    }

    #[test]
    fn fields_go_at_the_end_of_the_first_head() {
        let mut out = Vec::new();
        write_json(&mut out, 200, b"{}", Persist::KeepAlive, &[], false);
        insert_fields(&mut out, b"Vary: Origin\r\n");
        assert_eq!(
            text(&out),
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nVary: Origin\r\n\r\n{}"
        );
        let mut partial = b"HTTP/1.1 200 OK\r\n".to_vec();
        insert_fields(&mut partial, b"Vary: Origin\r\n");
        assert_eq!(partial, b"HTTP/1.1 200 OK\r\n");
    }

    #[test]
    fn status_lines() {
        for (status, line) in [
            (100, "HTTP/1.1 100 Continue\r\n"),
            (431, "HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            (505, "HTTP/1.1 505 HTTP Version Not Supported\r\n"),
            (599, "HTTP/1.1 599 \r\n"),
        ] {
            let mut out = Vec::new();
            write_head(&mut out, status, None, None, Persist::KeepAlive, &[]);
            assert!(text(&out).starts_with(line), "{}", text(&out));
        }
        assert_eq!(CONTINUE_100, b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    #[test]
    fn chunks() {
        let mut out = Vec::new();
        write_chunk(&mut out, b"");
        assert!(out.is_empty());
        write_chunk(&mut out, b"hello");
        write_chunk(&mut out, &[b'x'; 0x1a]);
        write_last_chunk(&mut out);
        let mut expected = b"5\r\nhello\r\n1a\r\n".to_vec();
        expected.extend_from_slice(&[b'x'; 0x1a]);
        expected.extend_from_slice(b"\r\n0\r\n\r\n");
        assert_eq!(out, expected);
    }

    #[test]
    fn written_chunks_decode_back() {
        let mut out = Vec::new();
        for piece in [&b"a"[..], &[0u8; 300], b"\r\n0\r\n"] {
            write_chunk(&mut out, piece);
        }
        write_last_chunk(&mut out);
        let mut decoded = Vec::new();
        let d = super::super::body::ChunkedDecoder::new(1000).decode(&out, &mut decoded);
        assert_eq!(d.map(|d| (d.consumed, d.done)), Ok((out.len(), true)));
        let expected: Vec<u8> = [&b"a"[..], &[0u8; 300], b"\r\n0\r\n"].concat();
        assert_eq!(decoded, expected);
    }
}
